import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import {
  API_VERSION,
  BusError,
  ErrorCode,
  createSecretResolver,
  silentLogger,
  type CloudEvent,
  type EventSource,
} from "@ofevents/core";
import { createMemoryBus, type EventBus, type EventPublisher } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type EventSourceRuntime, type WebhookServers } from "../src/index.js";

const logger = silentLogger();

function webhookSource(port: number, extra: Record<string, unknown> = {}): EventSource {
  return {
    apiVersion: API_VERSION,
    kind: "EventSource",
    metadata: { name: "hooks", namespace: "ns1" },
    spec: {
      eventBus: "default",
      webhook: {
        orders: { port: String(port), endpoint: "/orders", method: "POST", maxPayloadSize: 1024, ...extra },
      },
    },
  } as EventSource;
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}, method = "POST") {
  const res = await request(url, { method: method as "POST", body, headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text };
}

describe("webhook source - answers and events", () => {
  let bus: EventBus;
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let url: string;
  const got: CloudEvent[] = [];

  beforeAll(async () => {
    bus = createMemoryBus({ logger });
    await bus.subscribe(["ns1-hooks-orders"], async (e) => void got.push(e), { group: "test" });
    webhooks = createWebhookServers({ logger });
    // Port 0 picks a free port; the runtime logs it, and the webhook pool tells it.
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    runtime = await startEventSource(webhookSource(port), { logger, bus, secrets: createSecretResolver(), webhooks });
    url = `http://127.0.0.1:${port}/orders`;
  });
  afterAll(async () => {
    await runtime.stop();
    await webhooks.close();
    await bus.close();
  });

  const last = async (n: number): Promise<CloudEvent> => {
    for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    expect(got.length).toBe(n);
    return got[n - 1]!;
  };

  it("webhook source - plain JSON is wrapped in a new CloudEvent, 200 only after the bus took it", async () => {
    const res = await post(url, '{"id":"o-1","amount":3}', { "content-type": "application/json" });
    expect(res.status).toBe(200);
    const ids = (JSON.parse(res.body) as { ids: string[] }).ids;
    const ev = await last(1);
    expect(ev).toMatchObject({
      specversion: "1.0",
      id: ids[0],
      source: "/apis/v1/namespaces/ns1/eventsources/hooks",
      type: "io.openfunction.events.webhook",
      subject: "orders",
      datacontenttype: "application/json",
      data: { id: "o-1", amount: 3 },
    });
    expect(Date.parse(ev.time!)).toBeGreaterThan(Date.now() - 10_000);
  });

  it("webhook source - a binary-mode CloudEvent keeps its attributes", async () => {
    const res = await post(url, '{"x":1}', {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": "upstream-42",
      "ce-source": "/upstream",
      "ce-type": "com.example.order",
      "ce-subject": "order/42",
      "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    });
    expect(res.status).toBe(200);
    const ev = (await last(2)) as Record<string, unknown>;
    expect(ev).toMatchObject({
      id: "upstream-42",
      source: "/upstream",
      type: "com.example.order",
      subject: "order/42",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      data: { x: 1 },
    });
  });

  it("webhook source - a structured CloudEvent keeps its attributes", async () => {
    const ce = { specversion: "1.0", id: "s-1", source: "/s", type: "t.s", myext: "v", data: { y: 2 } };
    const res = await post(url, JSON.stringify(ce), { "content-type": "application/cloudevents+json" });
    expect(res.status).toBe(200);
    expect(await last(3)).toMatchObject(ce);
  });

  it("webhook source - a batch dispatches every event", async () => {
    const batch = [1, 2].map((i) => ({ specversion: "1.0", id: `b-${i}`, source: "/b", type: "t.b", data: i }));
    const res = await post(url, JSON.stringify(batch), { "content-type": "application/cloudevents-batch+json" });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ accepted: 2, ids: ["b-1", "b-2"] });
    expect((await last(5)).id).toBe("b-2");
  });

  it("webhook source - text stays text and unknown types stay bytes", async () => {
    await post(url, "hello", { "content-type": "text/plain" });
    expect(await last(6)).toMatchObject({ data: "hello", datacontenttype: "text/plain" });
    await post(url, Buffer.from([0, 1, 2, 255]), { "content-type": "application/octet-stream" });
    const ev = (await last(7)) as Record<string, unknown>;
    expect(ev["data_base64"]).toBe(Buffer.from([0, 1, 2, 255]).toString("base64"));
    expect(ev["datacontenttype"]).toBe("application/octet-stream");
  });

  it.each([
    {
      name: "invalid JSON",
      body: "{nope",
      headers: { "content-type": "application/json" },
      status: 400,
      match: "not valid JSON",
    },
    {
      name: "a binary CloudEvent without ce-type",
      body: "{}",
      headers: { "content-type": "application/json", "ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s" },
      status: 400,
      match: 'attribute "type" is required',
    },
    {
      name: "a structured CloudEvent with a bad specversion",
      body: JSON.stringify({ specversion: "0.1", id: "x", source: "/s", type: "t" }),
      headers: { "content-type": "application/cloudevents+json" },
      status: 400,
      match: "",
    },
    {
      name: "a batch that is not an array",
      body: "{}",
      headers: { "content-type": "application/cloudevents-batch+json" },
      status: 400,
      match: "array",
    },
    {
      name: "a body above maxPayloadSize",
      body: "x".repeat(2000),
      headers: { "content-type": "text/plain" },
      status: 413,
      match: "1024",
    },
  ])("webhook source - $name gets $status", async ({ body, headers, status, match }) => {
    const before = got.length;
    const res = await post(url, body, headers);
    expect(res.status).toBe(status);
    expect((JSON.parse(res.body) as { error: string }).error).toContain(match);
    await new Promise((r) => setTimeout(r, 20));
    expect(got.length).toBe(before);
  });

  it("webhook source - a wrong method gets 405 with Allow, an unknown path 404, /health 200", async () => {
    const r405 = await post(url, "", {}, "PUT");
    expect(r405.status).toBe(405);
    expect(r405.headers["allow"]).toBe("POST");
    expect((await post(url.replace("/orders", "/nothing"), "")).status).toBe(404);
    const health = await request(url.replace("/orders", "/health"));
    expect(health.statusCode).toBe(200);
    await health.body.text();
  });

  it("webhook source - the process keeps serving after malformed input", async () => {
    const before = got.length;
    const res = await post(url, '{"ok":true}', { "content-type": "application/json" });
    expect(res.status).toBe(200);
    await last(before + 1);
  });

  it("webhook source - answers carry their length, not a chunked body", async () => {
    // An accepted request, a malformed one (nothing dispatched), an unknown path, a wrong method.
    const ok = await post(url, '{"n":1}', { "content-type": "application/json" });
    const bad = await post(url, "{", { "content-type": "application/json" });
    const missing = await post(url.replace("/orders", "/nothing"), "");
    const wrongMethod = await post(url, "", {}, "PUT");
    expect([ok.status, bad.status, missing.status, wrongMethod.status]).toEqual([200, 400, 404, 405]);
    for (const res of [ok, bad, missing, wrongMethod]) {
      expect(res.headers["transfer-encoding"]).toBeUndefined();
      expect(res.headers["content-length"]).toBe(String(Buffer.byteLength(res.body)));
    }
  });
});

describe("webhook source - failures and auth", () => {
  it("webhook source - an HMAC signature of the body is required when hmac is set", async () => {
    const webhooks = createWebhookServers({ logger });
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    const bus = createMemoryBus({ logger });
    const secrets = createSecretResolver([], { HOOK_KEY: "k3y" });
    const rt = await startEventSource(webhookSource(port, { hmac: { secret: { name: "hook", key: "key" } } }), {
      logger,
      bus,
      secrets,
      webhooks,
    });
    const u = `http://127.0.0.1:${port}/orders`;
    const body = '{"a":1}';
    const sig = `sha256=${createHmac("sha256", "k3y").update(body).digest("hex")}`;
    const json = { "content-type": "application/json" };
    expect((await post(u, body, json)).status).toBe(401);
    expect((await post(u, body, { ...json, "x-hub-signature-256": "sha256=00" })).status).toBe(401);
    expect((await post(u, '{"a":2}', { ...json, "x-hub-signature-256": sig })).status).toBe(401);
    expect((await post(u, body, { ...json, "x-hub-signature-256": sig })).status).toBe(200);
    await rt.stop();
    await webhooks.close();
    await bus.close();
  });

  it("webhook source - 503 with Retry-After while the bus cannot take the event; nothing acknowledged", async () => {
    const webhooks = createWebhookServers({ logger });
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    let calls = 0;
    const failing: EventPublisher = {
      publish: async () => {
        calls++;
        throw new BusError(ErrorCode.BusPublish, "bus down", { retriable: true });
      },
    };
    const rt = await startEventSource(webhookSource(port), {
      logger,
      bus: failing,
      secrets: createSecretResolver(),
      webhooks,
      publishAttempts: 2,
    });
    const res = await post(`http://127.0.0.1:${port}/orders`, "{}", { "content-type": "application/json" });
    expect(res.status).toBe(503);
    expect(res.headers["retry-after"]).toBe("1");
    expect(calls).toBe(2);
    await rt.stop();
    await webhooks.close();
  });

  it("webhook source - a bearer token from a Secret is required when authSecret is set", async () => {
    const webhooks = createWebhookServers({ logger });
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    const bus = createMemoryBus({ logger });
    const secrets = createSecretResolver([
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "hook", namespace: "ns1" },
        stringData: { token: "s3cret" },
      },
    ]);
    const rt = await startEventSource(webhookSource(port, { authSecret: { name: "hook", key: "token" } }), {
      logger,
      bus,
      secrets,
      webhooks,
    });
    const u = `http://127.0.0.1:${port}/orders`;
    expect((await post(u, "{}", { "content-type": "application/json" })).status).toBe(401);
    expect((await post(u, "{}", { "content-type": "application/json", authorization: "Bearer wrong" })).status).toBe(
      401,
    );
    expect((await post(u, "{}", { "content-type": "application/json", authorization: "Bearer s3cret" })).status).toBe(
      200,
    );
    await rt.stop();
    await webhooks.close();
    await bus.close();
  });
});
