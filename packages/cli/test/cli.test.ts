import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";

async function cli(args: string[], stdin?: string): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, {
    out: (s) => (out += s),
    err: (s) => (err += s),
    ...(stdin === undefined ? {} : { stdin: Readable.from([stdin]) }),
  });
  return { code, out, err };
}

describe("cli - validate", () => {
  it("cli - validate prints every problem with its location and exits 1", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ofevents-cli-"));
    try {
      await writeFile(
        join(dir, "bad.yaml"),
        `apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { a: { eventSource: s, event: e } }
  subscribers:
    - condition: a && b
      topic: x
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: s }
spec:
  eventBus: default
  cron: { e: { schedule: "every minute" } }
`,
      );
      const r = await cli(["validate", "-f", dir]);
      expect(r.code).toBe(1);
      const lines = r.err.trim().split("\n");
      // file:line (of the field, else of the document's start) instead of the 0-based #docIndex.
      expect(lines[0]).toMatch(/bad\.yaml:8 Trigger\/t: spec\.subscribers\.0\.condition: .*"b"/);
      expect(lines[1]).toMatch(/bad\.yaml:11 EventSource\/s: spec\.cron\.e\.schedule: /);
      expect(lines[2]).toBe("2 problems found");
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it("cli - validate accepts the quickstart", async () => {
    const r = await cli(["validate", "-f", "examples/quickstart"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("3 resources valid (4 functions");
  });

  it("cli - validate -f . skips node_modules, package.json, tsconfig.json and symlink loops in a project folder", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ofevents-cli-"));
    const cwd = process.cwd();
    try {
      await cp("examples/quickstart", dir, { recursive: true });
      await writeFile(join(dir, "functions", "package.json"), '{ "type": "module" }\n');
      await writeFile(join(dir, "tsconfig.json"), '{\n  // JSONC\n  "compilerOptions": { "strict": true }\n}\n');
      await mkdir(join(dir, "node_modules", "dep"), { recursive: true });
      await writeFile(join(dir, "node_modules", "dep", "package.json"), '{ "name": "dep" }\n');
      await writeFile(join(dir, "node_modules", "dep", "x.yaml"), "kind: Something\n");
      await symlink("..", join(dir, "functions", "loop"));
      process.chdir(dir);
      const r = await cli(["validate", "-f", "."]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toBe(
        "3 resources valid (4 functions, 0 documents of other kinds skipped, 3 files that are not manifests skipped)\n",
      );
      // Named explicitly, a file must be a manifest; the location is the path as given, with a line.
      const named = await cli(["validate", "-f", "functions/package.json"]);
      expect(named.code).toBe(1);
      expect(named.err).toContain("functions/package.json:1: apiVersion: every manifest needs apiVersion and kind\n");
    } finally {
      process.chdir(cwd);
      await rm(dir, { recursive: true });
    }
  });

  it("cli - an unknown command exits 2 with the usage", async () => {
    const r = await cli(["frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("Usage:");
  });
});

describe("cli - publish", () => {
  it("cli - publish sends one binary-mode CloudEvent with data from stdin and extensions", async () => {
    const got: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        got.push({ headers: req.headers, body });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/in`;
    try {
      const r = await cli(
        [
          "publish",
          "--url",
          url,
          "--type",
          "com.example.t",
          "--source",
          "/me",
          "--id",
          "id-1",
          "--data-file",
          "-",
          "--ext",
          "team=a",
        ],
        '{"hello":"world"}',
      );
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out.trim()).toBe("202 id-1");
      expect(got).toHaveLength(1);
      expect(got[0]!.headers).toMatchObject({
        "ce-id": "id-1",
        "ce-type": "com.example.t",
        "ce-source": "/me",
        "ce-team": "a",
      });
      expect(JSON.parse(got[0]!.body)).toEqual({ hello: "world" });
      const bad = await cli(["publish", "--url", url, "--type", "t", "--data", "{nope"]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain("not valid JSON");
    } finally {
      server.close();
    }
  });
});

describe("cli - help, version and options", () => {
  const commands = ["run", "eventsource", "trigger", "validate", "publish", "controller", "crds", "docs"];

  it.each(commands)("cli - %s --help and -h print the command's help and exit 0", async (command) => {
    for (const flag of ["--help", "-h"]) {
      const r = await cli([command, flag]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`^Usage: ofevents ${command} `));
      expect(r.out).toContain("-h, --help");
    }
    // Also after other options, and as "ofevents help <command>".
    expect((await cli([command, "-f", "x.yaml", "--help"])).out).toMatch(/^Usage: /);
    expect((await cli(["help", command])).out).toMatch(new RegExp(`^Usage: ofevents ${command} `));
  });

  it("cli - every option a command takes is in its help", async () => {
    const src = await readFile(new URL("../src/main.ts", import.meta.url), "utf8");
    for (const command of commands) {
      const help = (await cli([command, "--help"])).out;
      // The options of each parser, read from the source: a new option without help fails here.
      const fn = command === "eventsource" || command === "trigger" ? "single" : command;
      const body = src.slice(src.indexOf(`async function ${fn}(`));
      const options = body.slice(body.indexOf("options: {"), body.indexOf("\n  });"));
      const names = [...options.matchAll(/"?([a-z-]+)"?: \{ type:/g)].map((m) => m[1]!);
      expect(names.length, command).toBeGreaterThan(0);
      for (const name of names) expect(help, command).toContain(`--${name}`);
    }
  });

  it("cli - --version prints the version of the cli package", async () => {
    const pkg = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    const r = await cli(["--version"]);
    expect(r).toEqual({ code: 0, out: `ofevents ${pkg.version}\n`, err: "" });
  });

  it("cli - an unknown option is one line naming it and the command's help, exit 2", async () => {
    const r = await cli(["run", "--bogus"]);
    expect(r).toEqual({ code: 2, out: "", err: "error: unknown option --bogus; see: ofevents run --help\n" });
    const missing = await cli(["validate", "-f"]);
    expect(missing.code).toBe(2);
    expect(missing.err).toBe("error: Option '-f, --file <value>' argument missing; see: ofevents validate --help\n");
  });
});

describe("cli - publish options", () => {
  async function recorder(delayMs = 0) {
    const got: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        got.push({ headers: req.headers, body });
        setTimeout(() => res.writeHead(202).end(), delayMs);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/in`;
    return { got, url, close: () => new Promise<void>((r) => server.close(() => r())) };
  }

  it("cli - publish without data sends no body and no content type, with the default source", async () => {
    const rec = await recorder();
    try {
      const r = await cli(["publish", "--url", rec.url, "--type", "t", "--id", "e-1"]);
      expect(r.err).toBe("");
      expect(r.out).toBe("202 e-1\n");
      expect(rec.got[0]!.body).toBe("");
      expect(rec.got[0]!.headers["content-type"]).toBeUndefined();
      expect(rec.got[0]!.headers["ce-source"]).toBe("/ofevents/cli");
    } finally {
      await rec.close();
    }
  });

  it("cli - publish --timeout takes durations and milliseconds", async () => {
    const rec = await recorder(1000);
    try {
      const slow = await cli(["publish", "--url", rec.url, "--type", "t", "--timeout", "200ms"]);
      expect(slow.code).toBe(1);
      expect(slow.err).toContain("within 200 ms");
      const ms = await cli(["publish", "--url", rec.url, "--type", "t", "--timeout", "150"]);
      expect(ms.err).toContain("within 150 ms");
      const ok = await cli(["publish", "--url", rec.url, "--type", "t", "--id", "e-2", "--timeout", "5s"]);
      expect(ok).toEqual({ code: 0, out: "202 e-2\n", err: "" });
      const bad = await cli(["publish", "--url", rec.url, "--type", "t", "--timeout", "soon"]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain('--timeout "soon" is not a duration');
    } finally {
      await rec.close();
    }
  });

  it.each([
    {
      name: "a URL that is not one",
      args: ["--url", "notaurl", "--type", "t"],
      match: '--url "notaurl" is not a valid URL',
    },
    { name: "no URL", args: ["--type", "t"], match: "--url <url> is required" },
    {
      name: "--data with --data-file",
      args: ["--url", "http://127.0.0.1:9/x", "--type", "t", "--data", "{}", "--data-file", "x.json"],
      match: "use either --data or --data-file, not both",
    },
  ])("cli - publish refuses $name", async ({ args, match }) => {
    const r = await cli(["publish", ...args]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`error: ${match}${match.endsWith("URL") ? " (use e.g. http://127.0.0.1:12000/orders)" : ""}\n`);
  });
});

describe("cli - crds and docs", () => {
  it("cli - the checked-in CRDs and README reference are up to date", async () => {
    expect((await cli(["crds", "--check"])).code).toBe(0);
    expect((await cli(["docs", "--check"])).code).toBe(0);
  });

  it("cli - crds --check says missing for a missing folder or file, out of date for a changed one, with the --out given", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ofevents-crds-"));
    try {
      const out = join(dir, "deploy", "crds");
      const gone = await cli(["crds", "--check", "--out", out]);
      expect(gone).toEqual({ code: 1, out: "", err: `${out}: missing; run: ofevents crds --out ${out}\n` });
      expect((await cli(["crds", "--out", out])).code).toBe(0);
      expect(await cli(["crds", "--check", "--out", out])).toEqual({ code: 0, out: "", err: "" });
      await rm(join(out, "events.openfunction.io_triggers.yaml"));
      await writeFile(join(out, "events.openfunction.io_eventsources.yaml"), "# edited\n");
      const stale = await cli(["crds", "--check", "--out", out]);
      expect(stale.code).toBe(1);
      expect(stale.err.split("\n").sort()).toEqual(
        [
          "",
          `${join(out, "events.openfunction.io_eventsources.yaml")} is out of date; run: ofevents crds --out ${out}`,
          `${join(out, "events.openfunction.io_triggers.yaml")} is missing; run: ofevents crds --out ${out}`,
        ].sort(),
      );
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});
