/**
 * W3C trace context through the pipeline: webhook → bus → trigger → HTTP sink. A CloudEvent's
 * `traceparent`/`tracestate` extension (CloudEvents distributed tracing) reaches the sink
 * unchanged; a plain request's W3C `traceparent` header becomes that extension, so a trace started
 * by an HTTP client continues through the event.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@ofevents/core";
import { startEmbedded, type Embedded } from "@ofevents/cli";
import { freePorts } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

const W3C = /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/;

function traceparent(): string {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

describe("tracing - traceparent from webhook to sink", () => {
  let dir: string;
  let embedded: Embedded;
  let sink: Server;
  let webhook: string;
  const received = new Map<string, IncomingHttpHeaders>();

  /** Posts, and returns the headers the sink got for the (single) event of the request. */
  async function through(body: string, headers: Record<string, string>): Promise<IncomingHttpHeaders> {
    const res = await request(webhook, { method: "POST", body, headers });
    const answer = (await res.body.json()) as { ids: string[] };
    expect(res.statusCode).toBe(200);
    const id = answer.ids[0]!;
    return waitFor(() => received.get(id), { timeoutMs: 10_000, message: `event ${id} at the sink` });
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-tracing-"));
    sink = createServer((req, res) => {
      received.set(String(req.headers["ce-id"]), req.headers);
      req.resume();
      req.on("end", () => res.writeHead(200).end());
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
    const [port] = await freePorts(1);
    webhook = `http://127.0.0.1:${port}/in`;
    await writeFile(
      join(dir, "all.yaml"),
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: hooks }
spec:
  eventBus: default
  webhook: { in: { port: "${port}", endpoint: /in } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: fwd }
spec:
  eventBus: default
  inputs: { i: { eventSource: hooks, event: in } }
  subscribers: [{ condition: i, sink: { uri: "${sinkUrl}" } }]
`,
    );
    embedded = await startEmbedded({ paths: [dir], logger: silentLogger(), functionsPort: 0 });
  });
  afterAll(async () => {
    await embedded?.stop();
    await new Promise((r) => sink?.close(r));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("tracing - a binary-mode CloudEvent's ce-traceparent and ce-tracestate reach the sink unchanged", async () => {
    const tp = traceparent();
    const got = await through(JSON.stringify({ n: 1 }), {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": `bin-${randomBytes(4).toString("hex")}`,
      "ce-source": "/client",
      "ce-type": "com.example.t",
      "ce-traceparent": tp,
      "ce-tracestate": "vendor=abc",
      // The transport hop's own context does not replace the event's.
      traceparent: traceparent(),
    });
    expect(got["ce-traceparent"]).toMatch(W3C);
    expect(got["ce-traceparent"]).toBe(tp);
    expect(got["ce-tracestate"]).toBe("vendor=abc");
  });

  it("tracing - a structured-mode CloudEvent's traceparent attribute reaches the sink", async () => {
    const tp = traceparent();
    const got = await through(
      JSON.stringify({
        specversion: "1.0",
        id: `str-${randomBytes(4).toString("hex")}`,
        source: "/client",
        type: "com.example.t",
        traceparent: tp,
        data: { n: 2 },
      }),
      { "content-type": "application/cloudevents+json" },
    );
    expect(got["ce-traceparent"]).toBe(tp);
  });

  it("tracing - a plain JSON post's W3C traceparent and tracestate headers become the event's extension", async () => {
    const tp = traceparent();
    const got = await through(JSON.stringify({ n: 3 }), {
      "content-type": "application/json",
      traceparent: tp,
      tracestate: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    });
    expect(got["ce-traceparent"]).toMatch(W3C);
    expect(got["ce-traceparent"]).toBe(tp);
    expect(got["ce-tracestate"]).toBe("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  });

  it.each([
    { name: "all-zero trace id", value: `00-${"0".repeat(32)}-${"a".repeat(16)}-01` },
    { name: "all-zero parent id", value: `00-${"a".repeat(32)}-${"0".repeat(16)}-01` },
    { name: "version ff", value: `ff-${"a".repeat(32)}-${"b".repeat(16)}-01` },
    { name: "uppercase hex", value: `00-${"A".repeat(32)}-${"b".repeat(16)}-01` },
    { name: "version 00 with extra fields", value: `00-${"a".repeat(32)}-${"b".repeat(16)}-01-xyz` },
    { name: "garbage", value: "not-a-trace" },
  ])("tracing - a plain post with an invalid traceparent ($name) carries no trace extension", async ({ value }) => {
    const got = await through(JSON.stringify({ n: 4 }), {
      "content-type": "application/json",
      traceparent: value,
      tracestate: "vendor=x",
    });
    expect(got["ce-traceparent"]).toBeUndefined();
    expect(got["ce-tracestate"]).toBeUndefined();
  });

  it("tracing - a plain post without traceparent carries no trace extension", async () => {
    const got = await through("hello", { "content-type": "text/plain" });
    expect(got["ce-traceparent"]).toBeUndefined();
  });
});
