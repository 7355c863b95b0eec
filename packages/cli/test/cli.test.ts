import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
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
      expect(lines[0]).toMatch(/bad\.yaml#0 Trigger\/t: spec\.subscribers\.0\.condition: .*"b"/);
      expect(lines[1]).toMatch(/bad\.yaml#1 EventSource\/s: spec\.cron\.e\.schedule: /);
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
