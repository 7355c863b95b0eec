import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendBody, sendJson } from "../src/index.js";

/** A real server answering each path with one of the helpers. */
let server: Server;
let port = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    switch (req.url) {
      case "/json":
        return sendJson(res, 201, { ok: true, text: "héllo" }, { "x-extra": "1" });
      case "/json-none":
        return sendJson(res, 200, undefined);
      case "/text":
        return sendBody(res, 503, "not ready", { "content-type": "text/plain" });
      case "/bytes":
        return sendBody(res, 200, Buffer.from([1, 2, 3, 4]), { "content-type": "application/octet-stream" });
      case "/empty":
        return sendBody(res, 405, undefined, { allow: "GET" });
      case "/no-content":
        return sendBody(res, 204);
      default:
        return sendJson(res, 404, { error: "none" });
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

function call(path: string, method = "GET"): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("http answers - every answer carries its length, none is chunked", () => {
  it("http answers - JSON: the body, its byte length (not its character count) and the extra headers", async () => {
    const r = await call("/json");
    expect(r.status).toBe(201);
    expect(r.headers["transfer-encoding"]).toBeUndefined();
    expect(r.headers["content-type"]).toBe("application/json");
    expect(r.headers["x-extra"]).toBe("1");
    expect(Number(r.headers["content-length"])).toBe(r.body.length);
    expect(JSON.parse(r.body.toString("utf8"))).toEqual({ ok: true, text: "héllo" });
  });

  it("http answers - an undefined JSON body is an empty answer of length 0", async () => {
    const r = await call("/json-none");
    expect(r.headers["transfer-encoding"]).toBeUndefined();
    expect(r.headers["content-length"]).toBe("0");
    expect(r.body.length).toBe(0);
  });

  it("http answers - text, bytes and no body", async () => {
    const text = await call("/text");
    expect([text.status, text.headers["content-length"], text.body.toString()]).toEqual([503, "9", "not ready"]);
    const bytes = await call("/bytes");
    expect([bytes.headers["content-length"], [...bytes.body]]).toEqual(["4", [1, 2, 3, 4]]);
    const empty = await call("/empty");
    expect([empty.status, empty.headers["content-length"], empty.headers["allow"]]).toEqual([405, "0", "GET"]);
    for (const r of [text, bytes, empty]) expect(r.headers["transfer-encoding"]).toBeUndefined();
  });

  it("http answers - a 204 carries neither a length nor a chunked body", async () => {
    const r = await call("/no-content");
    expect(r.status).toBe(204);
    expect(r.headers["content-length"]).toBeUndefined();
    expect(r.headers["transfer-encoding"]).toBeUndefined();
  });

  it("http answers - HEAD gets the GET answer's length and no body", async () => {
    const r = await call("/json", "HEAD");
    const get = await call("/json");
    expect(r.headers["content-length"]).toBe(String(get.body.length));
    expect(r.body.length).toBe(0);
  });
});
