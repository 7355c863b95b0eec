import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import {
  API_VERSION,
  createLogger,
  createSecretResolver,
  silentLogger,
  type CloudEvent,
  type EventSource,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type EventSourceRuntime, type WebhookServers } from "../src/index.js";

const logger = silentLogger();

function source(port: number, target: { eventBus: string } | { sink: { uri: string } }): EventSource {
  return {
    apiVersion: API_VERSION,
    kind: "EventSource",
    metadata: { name: "hooks", namespace: "ns1" },
    spec: { ...target, webhook: { orders: { port: String(port), endpoint: "/orders", method: "POST" } } },
  } as EventSource;
}

async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await request(url, { method: "POST", body, headers });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

/** Sends raw bytes and returns what the server answered before closing. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 5 s: ${answer}`));
    }, 5000);
    socket.on("data", (c: Buffer) => (answer += c.toString("latin1")));
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    socket.on("error", () => undefined);
    socket.write(bytes);
  });
}

/** A free port for the webhook: a probe route on port 0, kept so the listener stays. */
async function freePort(webhooks: WebhookServers): Promise<number> {
  return webhooks.register(0, { method: "GET", endpoint: "/probe", handle: async (_q, s) => void s.end() });
}

describe("webhook edge cases - bus mode", () => {
  let bus: EventBus;
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let port: number;
  let url: string;
  const got: CloudEvent[] = [];

  beforeAll(async () => {
    bus = createMemoryBus({ logger });
    await bus.subscribe(["ns1-hooks-orders"], async (e) => void got.push(e), { group: "test" });
    webhooks = createWebhookServers({ logger });
    port = await freePort(webhooks);
    runtime = await startEventSource(source(port, { eventBus: "default" }), {
      logger,
      bus,
      secrets: createSecretResolver(),
      webhooks,
    });
    url = `http://127.0.0.1:${port}/orders`;
  });
  afterAll(async () => {
    await runtime.stop();
    await webhooks.close();
    await bus.close();
  });

  async function nth(n: number): Promise<Record<string, unknown>> {
    for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    expect(got.length).toBe(n);
    return got[n - 1] as unknown as Record<string, unknown>;
  }

  it("webhook edge - headers above 16 KiB get 431 with the reason, and the port keeps serving", async () => {
    const answer = await raw(
      port,
      `POST /orders HTTP/1.1\r\nHost: x\r\nX-Big: ${"h".repeat(20_000)}\r\nContent-Length: 2\r\n\r\n{}`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({
      error: "request headers larger than 16384 bytes",
    });
    expect((await post(url, "{}", { "content-type": "application/json" })).status).toBe(200);
    await nth(1);
  });

  it("webhook edge - a ce- header that does not percent-decode to UTF-8 is a 400 naming the header", async () => {
    const before = got.length;
    const res = await post(url, "{}", {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": "x",
      "ce-source": "/s",
      "ce-type": "t",
      "ce-foo": "%FF%FE",
    });
    expect(res.status).toBe(400);
    const error = (JSON.parse(res.body) as { error: string }).error;
    expect(error).toMatch(/^invalid CloudEvent: header ce-foo: /);
    expect(error).toContain("not UTF-8");
    await new Promise((r) => setTimeout(r, 20));
    expect(got.length).toBe(before);
  });

  it.each([
    { name: "an empty JSON body", body: "", headers: { "content-type": "application/json" } },
    { name: "a JSON null body", body: "null", headers: { "content-type": "application/json" } },
    { name: "an empty body without a content type", body: "", headers: {} },
  ])("webhook edge - $name is an event without data or content type", async ({ body, headers }) => {
    const before = got.length;
    expect((await post(url, body, headers)).status).toBe(200);
    const ev = await nth(before + 1);
    expect(ev["type"]).toBe("io.openfunction.events.webhook");
    expect("data" in ev).toBe(false);
    expect("data_base64" in ev).toBe(false);
    expect("datacontenttype" in ev).toBe(false);
  });
});

describe("webhook edge cases - sink mode", () => {
  let sinkServer: Server;
  let sinkUrl: string;
  let status = 200;
  const received: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let sinks: SinkClient;
  let url: string;
  const lines: string[] = [];

  beforeAll(async () => {
    sinkServer = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        received.push({ headers: req.headers, body });
        res.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "" : "internal-detail-42");
      });
    });
    await new Promise<void>((r) => sinkServer.listen(0, "127.0.0.1", r));
    sinkUrl = `http://127.0.0.1:${(sinkServer.address() as AddressInfo).port}/private-sink`;
    webhooks = createWebhookServers({ logger });
    const port = await freePort(webhooks);
    sinks = createSinkClient();
    runtime = await startEventSource(source(port, { sink: { uri: sinkUrl } }), {
      logger: createLogger({ level: "warn", write: (l) => void lines.push(l) }),
      sinks,
      secrets: createSecretResolver(),
      webhooks,
    });
    url = `http://127.0.0.1:${port}/orders`;
  });
  afterAll(async () => {
    await runtime.stop();
    await webhooks.close();
    await sinks.close();
    await new Promise<void>((r) => sinkServer.close(() => r()));
  });

  it("webhook edge - an empty body reaches the sink with no body and no content type", async () => {
    status = 200;
    received.length = 0;
    expect((await post(url, "", { "content-type": "application/json" })).status).toBe(200);
    expect(received).toHaveLength(1);
    expect(received[0]!.body).toBe("");
    expect(received[0]!.headers["content-type"]).toBeUndefined();
    expect(received[0]!.headers["ce-type"]).toBe("io.openfunction.events.webhook");
  });

  it.each([
    { sinkStatus: 400, answer: 424, error: "the sink refused the event (status 400)" },
    { sinkStatus: 503, answer: 502, error: "the sink failed to take the event; nothing was acknowledged, send again" },
  ])(
    "webhook edge - a sink answering $sinkStatus gives the caller $answer without the sink's URL or answer (logged instead)",
    async ({ sinkStatus, answer, error }) => {
      status = sinkStatus;
      lines.length = 0;
      const res = await post(url, '{"a":1}', { "content-type": "application/json" });
      expect(res.status).toBe(answer);
      expect(res.body).not.toContain("private-sink");
      expect(res.body).not.toContain("127.0.0.1");
      expect(res.body).not.toContain("internal-detail-42");
      expect((JSON.parse(res.body) as { error: string }).error).toBe(error);
      const log = lines.join("");
      expect(log).toContain(sinkUrl);
      expect(log).toContain("internal-detail-42");
    },
  );
});
