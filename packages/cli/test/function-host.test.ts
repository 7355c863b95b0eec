import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request, type IncomingHttpHeaders } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MODULE_ANNOTATION, silentLogger, type FunctionResource } from "@ofevents/core";
import { startFunctionHost, type FunctionHost } from "../src/index.js";

let dir = "";
let host: FunctionHost;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ofevents-fn-host-"));
  await writeFile(join(dir, "echo.mjs"), "export default (event) => ({ got: event.data, id: event.id });\n");
  const fn = {
    apiVersion: "core.openfunction.io/v1beta2",
    kind: "Function",
    metadata: { name: "echo", namespace: "default", annotations: { [MODULE_ANNOTATION]: "./echo.mjs" } },
    spec: { serving: { runtime: "knative" } },
  } as unknown as FunctionResource;
  host = await startFunctionHost({
    functions: [{ resource: fn, file: join(dir, "fn.yaml") }] as never,
    serveUnreachable: true,
    busFor: () => {
      throw new Error("no bus in this test");
    },
    logger: silentLogger(),
    host: "127.0.0.1",
    port: 0,
  });
});

afterAll(async () => {
  await host?.stop();
  await rm(dir, { recursive: true, force: true });
});

function post(
  url: string,
  headers: Record<string, string>,
  body: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

const binary = {
  "content-type": "application/json",
  "ce-specversion": "1.0",
  "ce-id": "e-1",
  "ce-source": "/test",
  "ce-type": "t",
};

describe("function host - answers", () => {
  it("function host - a sync function's result comes back as JSON with its length, not chunked", async () => {
    const r = await post(host.urlOf("default", "echo"), binary, JSON.stringify({ n: 7 }));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ got: { n: 7 }, id: "e-1" });
    expect(r.headers["content-length"]).toBe(String(Buffer.byteLength(r.body)));
    expect(r.headers["transfer-encoding"]).toBeUndefined();
  });

  it("function host - a request that is not a CloudEvent (400) and an unknown function (404) carry their length", async () => {
    const bad = await post(host.urlOf("default", "echo"), { "content-type": "application/json" }, "{}");
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toMatch(/not a CloudEvent/);
    const none = await post(host.urlOf("default", "other"), binary, "{}");
    expect(none.status).toBe(404);
    for (const r of [bad, none]) {
      expect(r.headers["content-length"]).toBe(String(Buffer.byteLength(r.body)));
      expect(r.headers["transfer-encoding"]).toBeUndefined();
    }
  });
});
