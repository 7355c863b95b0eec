import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import {
  API_VERSION,
  createInstrumentation,
  createMetrics,
  createSecretResolver,
  loadManifests,
  silentLogger,
  type CloudEvent,
  type EventSource,
} from "@ofevents/core";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import {
  createWebhookServers,
  startEventSource,
  validateEventSource,
  type EventSourceRuntime,
  type SourceEvents,
  type WebhookServers,
} from "../src/index.js";

const logger = silentLogger();
const SECRET = "It's a Secret to Everybody";
const STRIPE_SECRET = "whsec_test_0123456789";

function presetSource(): EventSource {
  const secret = (key: string) => ({ name: "hooks", key });
  return {
    apiVersion: API_VERSION,
    kind: "EventSource",
    metadata: { name: "presets", namespace: "ns1" },
    spec: {
      eventBus: "default",
      webhook: {
        github: { port: "0", endpoint: "/github", method: "POST", preset: { sender: "github", secret: secret("gh") } },
        gitlab: { port: "0", endpoint: "/gitlab", method: "POST", preset: { sender: "gitlab", secret: secret("gl") } },
        stripe: {
          port: "0",
          endpoint: "/stripe",
          method: "POST",
          preset: { sender: "stripe", secret: secret("stripe"), tolerance: 60 },
          metadata: { team: "billing" },
        },
      },
    },
  } as EventSource;
}

async function post(url: string, body: string | Buffer, headers: Record<string, string>) {
  const res = await request(url, { method: "POST", body, headers });
  return { status: res.statusCode, body: await res.body.text() };
}

const hex = (key: string, data: string | Buffer) => createHmac("sha256", key).update(data).digest("hex");
const now = () => Math.floor(Date.now() / 1000);
const stripeSig = (body: string, t = now(), secret = STRIPE_SECRET) => `t=${t},v1=${hex(secret, `${t}.${body}`)}`;

describe("webhook presets - GitHub, GitLab and Stripe signatures over real HTTP", () => {
  let bus: EventBus;
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let base: string;
  const got = new Map<string, CloudEvent[]>([
    ["github", []],
    ["gitlab", []],
    ["stripe", []],
  ]);
  const rejected: Array<{ event: string; reason: string }> = [];
  const metrics = createMetrics();

  beforeAll(async () => {
    bus = createMemoryBus({ logger });
    for (const [event, list] of got)
      await bus.subscribe([`ns1-presets-${event}`], async (e) => void list.push(e), { group: "test" });
    webhooks = createWebhookServers({ logger });
    // Port 0 opens a listener on a free port; the preset events then join it by that port.
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    const es = presetSource();
    for (const spec of Object.values(es.spec.webhook!)) spec.port = String(port);
    const instrumentation = createInstrumentation<SourceEvents>();
    instrumentation.on("rejected", (e) => rejected.push({ event: e.event, reason: e.reason }));
    metrics.observeSource(instrumentation, { namespace: "ns1", eventSource: "presets" });
    runtime = await startEventSource(es, {
      logger,
      bus,
      webhooks,
      instrumentation,
      secrets: createSecretResolver([], { HOOKS_GH: SECRET, HOOKS_GL: "gl-token", HOOKS_STRIPE: STRIPE_SECRET }),
    });
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await runtime.stop();
    await webhooks.close();
    await bus.close();
  });

  const arrived = async (event: string, n: number): Promise<CloudEvent> => {
    const list = got.get(event)!;
    for (let i = 0; i < 200 && list.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    expect(list.length).toBe(n);
    return list[n - 1]!;
  };

  it("webhook presets - github: a valid X-Hub-Signature-256 is accepted; type and id from GitHub's headers", async () => {
    // Whitespace and key order as GitHub sent them: the signature covers these exact bytes.
    const body = '{ "zen":"Keep it logically awesome.",  "hook_id": 1, "ü": "é" }\n';
    const res = await post(`${base}/github`, body, {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
      "x-hub-signature-256": `sha256=${hex(SECRET, body)}`,
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ accepted: 1, ids: ["72d3162e-cc78-11e3-81ab-4c9367dc0958"] });
    const ev = await arrived("github", 1);
    expect(ev).toMatchObject({
      id: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
      type: "com.github.push",
      source: "/apis/v1/namespaces/ns1/eventsources/presets",
      subject: "github",
      datacontenttype: "application/json",
    });
    expect(ev.data).toEqual(JSON.parse(body));
  });

  it("webhook presets - github: a form-encoded payload is signed and kept as the exact text", async () => {
    const body = "payload=%7B%22a%22%3A1%7D";
    const res = await post(`${base}/github`, body, {
      "content-type": "application/x-www-form-urlencoded",
      "x-github-event": "ping",
      "x-github-delivery": "d-2",
      "x-hub-signature-256": `sha256=${hex(SECRET, body)}`,
    });
    expect(res.status).toBe(200);
    expect(await arrived("github", 2)).toMatchObject({ id: "d-2", type: "com.github.ping", data: body });
  });

  it("webhook presets - github: a missing, wrong or other-body signature is 401, counted, nothing dispatched", async () => {
    const body = '{"a":1}';
    const h = { "content-type": "application/json", "x-github-event": "push", "x-github-delivery": "bad" };
    const before = rejected.length;
    expect((await post(`${base}/github`, body, h)).status).toBe(401);
    expect(
      (await post(`${base}/github`, body, { ...h, "x-hub-signature-256": `sha256=${hex("other", body)}` })).status,
    ).toBe(401);
    expect(
      (await post(`${base}/github`, body, { ...h, "x-hub-signature-256": `sha256=${hex(SECRET, '{"a":2}')}` })).status,
    ).toBe(401);
    // The sha1 header GitHub also sends is not accepted in place of the sha256 one.
    const sha1 = createHmac("sha1", SECRET).update(body).digest("hex");
    expect((await post(`${base}/github`, body, { ...h, "x-hub-signature": `sha1=${sha1}` })).status).toBe(401);
    expect(rejected.slice(before)).toEqual(Array(4).fill({ event: "github", reason: "unauthorized" }));
    // A valid signature without X-GitHub-Event has no type: 400, not dispatched either.
    const { "x-github-event": _, ...noEvent } = h;
    expect(
      (await post(`${base}/github`, body, { ...noEvent, "x-hub-signature-256": `sha256=${hex(SECRET, body)}` })).status,
    ).toBe(400);
    await new Promise((r) => setTimeout(r, 50));
    expect(got.get("github")!.map((e) => e.id)).not.toContain("bad");
    expect(await metrics.text()).toMatch(
      /ofevents_eventsource_requests_rejected_total\{namespace="ns1",eventsource="presets",event="github",reason="unauthorized"\} 4/,
    );
  });

  it("webhook presets - gitlab: X-Gitlab-Token must equal the secret; type from X-Gitlab-Event, id from its UUID", async () => {
    const body = '{"object_kind":"merge_request","object_attributes":{"iid":7}}';
    const h = { "content-type": "application/json", "x-gitlab-event": "Merge Request Hook" };
    expect((await post(`${base}/gitlab`, body, h)).status).toBe(401);
    expect((await post(`${base}/gitlab`, body, { ...h, "x-gitlab-token": "gl-token-" })).status).toBe(401);
    expect((await post(`${base}/gitlab`, body, { ...h, "x-gitlab-token": "gl-toke" })).status).toBe(401);
    const ok = await post(`${base}/gitlab`, body, {
      ...h,
      "x-gitlab-token": "gl-token",
      "x-gitlab-event-uuid": "13792a34-cac6-4fda-95a8-c58e00a3954e",
    });
    expect(ok.status).toBe(200);
    const ev = await arrived("gitlab", 1);
    expect(ev).toMatchObject({
      id: "13792a34-cac6-4fda-95a8-c58e00a3954e",
      type: "com.gitlab.merge_request",
      data: JSON.parse(body),
    });
    // Without X-Gitlab-Event-UUID (older GitLab) the event gets a new id.
    const noUuid = await post(`${base}/gitlab`, body, {
      ...h,
      "x-gitlab-event": "Push Hook",
      "x-gitlab-token": "gl-token",
    });
    expect(noUuid.status).toBe(200);
    const ev2 = await arrived("gitlab", 2);
    expect(ev2.type).toBe("com.gitlab.push");
    expect(ev2.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(got.get("gitlab")).toHaveLength(2);
    expect(rejected.filter((r) => r.event === "gitlab")).toHaveLength(3);
  });

  it("webhook presets - stripe: a valid Stripe-Signature is accepted; type and id from the body, several v1 allowed", async () => {
    const body = JSON.stringify({
      id: "evt_1NG8Du2eZvKYlo2C",
      type: "payment_intent.succeeded",
      data: { object: { amount: 2000 } },
    });
    const t = now();
    const sig = `t=${t},v1=${hex("whsec_old", `${t}.${body}`)},v1=${hex(STRIPE_SECRET, `${t}.${body}`)},v0=abc`;
    const res = await post(`${base}/stripe`, body, {
      "content-type": "application/json; charset=utf-8",
      "stripe-signature": sig,
    });
    expect(res.status).toBe(200);
    const ev = (await arrived("stripe", 1)) as Record<string, unknown>;
    expect(ev).toMatchObject({
      id: "evt_1NG8Du2eZvKYlo2C",
      type: "com.stripe.payment_intent.succeeded",
      datacontenttype: "application/json",
      team: "billing",
      data: JSON.parse(body),
    });
  });

  it("webhook presets - stripe: missing, wrong, expired or future signatures are 401; nothing dispatched", async () => {
    const body = JSON.stringify({ id: "evt_bad", type: "charge.failed" });
    const h = { "content-type": "application/json" };
    const cases = [
      {},
      { "stripe-signature": "garbage" },
      { "stripe-signature": `t=${now()}` },
      { "stripe-signature": stripeSig(body, now(), "whsec_other") },
      { "stripe-signature": stripeSig(body.replace("failed", "succeeded")) },
      { "stripe-signature": stripeSig(body, now() - 120) }, // older than the 60 s tolerance
      { "stripe-signature": stripeSig(body, now() + 120) },
    ];
    for (const c of cases) expect((await post(`${base}/stripe`, body, { ...h, ...c })).status).toBe(401);
    // Within the tolerance it is accepted.
    expect((await post(`${base}/stripe`, body, { ...h, "stripe-signature": stripeSig(body, now() - 30) })).status).toBe(
      200,
    );
    const ev = await arrived("stripe", 2);
    expect(ev).toMatchObject({ id: "evt_bad", type: "com.stripe.charge.failed" });
    expect(rejected.filter((r) => r.event === "stripe")).toHaveLength(cases.length);
    // A correctly signed body without a type is 400.
    const noType = '{"id":"evt_x"}';
    expect((await post(`${base}/stripe`, noType, { ...h, "stripe-signature": stripeSig(noType) })).status).toBe(400);
    expect(got.get("stripe")).toHaveLength(2);
  });

  it("webhook presets - a CloudEvent header does not bypass the preset: the body is still the sender's", async () => {
    const body = '{"a":1}';
    const res = await post(`${base}/github`, body, {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": "forged",
      "ce-source": "/x",
      "ce-type": "forged.type",
    });
    expect(res.status).toBe(401);
  });
});

describe("webhook presets - validation and the example", () => {
  it("webhook presets - preset together with hmac or authSecret is refused", async () => {
    const es = presetSource();
    es.spec.webhook!["github"]!.hmac = { secret: { name: "x", key: "y" } };
    const issues = await validateEventSource(es);
    expect(issues.map((i) => i.path)).toEqual(["spec.webhook.github.preset"]);
  });

  it("webhook presets - examples/eventsources/webhook-presets.yaml loads and validates", async () => {
    const file = fileURLToPath(new URL("../../../examples/eventsources/webhook-presets.yaml", import.meta.url));
    expect(await readFile(file, "utf8")).toContain("preset:");
    const m = await loadManifests([file]);
    expect(m.issues).toEqual([]);
    expect(m.eventSources).toHaveLength(1);
    const es = m.eventSources[0]!.resource;
    expect(Object.values(es.spec.webhook!).map((w) => w.preset?.sender)).toEqual(["github", "gitlab", "stripe"]);
    expect(await validateEventSource(es)).toEqual([]);
  });
});
