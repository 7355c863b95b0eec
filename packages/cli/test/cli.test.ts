import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
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
        "3 resources valid (4 functions, 0 documents of other kinds skipped, 2 files that are not manifests skipped)\n",
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

describe("cli - crds and docs", () => {
  it("cli - the checked-in CRDs and README reference are up to date", async () => {
    expect((await cli(["crds", "--check"])).code).toBe(0);
    expect((await cli(["docs", "--check"])).code).toBe(0);
  });
});
