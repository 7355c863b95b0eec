// Smoke test of the real daprd sidecar (scripts/test-setup.sh builds it): publish through daprd's
// HTTP API into NATS JetStream and Redis streams, delivered back by daprd to a tiny local HTTP app.
// It pins the daprd behaviour a Dapr-backed EventBus driver relies on: what happens to a
// structured CloudEvent on the way through, and what the app's answers (2xx SUCCESS / RETRY /
// DROP, 500) do with each broker.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Daprd, pubsubComponent } from "./helpers/daprd.js";
import { NatsServer } from "./helpers/nats.js";
import { RedisServer, redisCommand } from "./helpers/redis.js";
import { freePort } from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  at: number;
}

interface Reply {
  status: number;
  body?: unknown;
}

/**
 * The app behind daprd: answers `GET /dapr/subscribe` with fixed subscriptions, 404 to any other
 * GET (daprd also asks `GET /dapr/config`), and records every POST; `reply` gets the delivery and
 * how many times this event id reached this path, and decides the answer.
 */
class TestApp {
  readonly deliveries: Delivery[] = [];
  subscribeCalls = 0;
  readonly #server: Server;
  #port = 0;
  #reply: (d: Delivery, n: number) => Reply = () => ({ status: 200 });

  private constructor(readonly subscriptions: readonly unknown[]) {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (req.method !== "POST") {
          if (req.url === "/dapr/subscribe") {
            this.subscribeCalls++;
            res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(this.subscriptions));
          } else {
            res.writeHead(404).end();
          }
          return;
        }
        const text = Buffer.concat(chunks).toString();
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          body = { unparsed: text };
        }
        const delivery: Delivery = { path: req.url ?? "", headers: req.headers, body, at: Date.now() };
        this.deliveries.push(delivery);
        const { status, body: out } = this.#reply(delivery, this.received(delivery.path, body["id"]).length);
        if (out === undefined) res.writeHead(status).end();
        else res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(out));
      });
    });
  }

  /** Listens on 127.0.0.1:`port` (default: a free port). */
  static async start(subscriptions: readonly unknown[], port = 0): Promise<TestApp> {
    const app = new TestApp(subscriptions);
    app.#port = await new Promise<number>((resolve, reject) => {
      app.#server.once("error", reject);
      app.#server.listen(port, "127.0.0.1", () => {
        const addr = app.#server.address();
        if (addr === null || typeof addr === "string") reject(new Error("unexpected address"));
        else resolve(addr.port);
      });
    });
    return app;
  }

  get port(): number {
    return this.#port;
  }

  /** Sets the answer to deliveries (default: 200 with an empty body, which daprd reads as SUCCESS). */
  onDelivery(reply: (d: Delivery, n: number) => Reply): void {
    this.#reply = reply;
  }

  received(path: string, id?: unknown): Delivery[] {
    return this.deliveries.filter((d) => d.path === path && (id === undefined || d.body["id"] === id));
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const s = randomSuffix();
const JS = "js"; // pubsub.jetstream, ephemeral consumers
const JSD = "jsd"; // pubsub.jetstream with a durableName (one topic: the durable is per component)
const RD = "rd"; // pubsub.redis, no resiliency policy
const RDR = "rdr"; // pubsub.redis with an inbound retry policy
const appId = `ofevents-${s}`;
const stream = `DAPR_${s}`;
/** Every topic of this file is under one subject prefix, covered by one JetStream stream. */
const topic = (name: string) => `dapr.${s}.${name}`;

/** The app's programmatic subscriptions: one route per test. */
const SUBSCRIPTIONS = [
  { pubsubname: JS, topic: topic("ce"), route: "/ce" },
  { pubsubname: JS, topic: topic("trace"), route: "/trace" },
  { pubsubname: JS, topic: topic("wrap"), route: "/wrap" },
  { pubsubname: JS, topic: topic("retry"), route: "/retry" },
  { pubsubname: JS, topic: topic("drop"), route: "/drop" },
  { pubsubname: JS, topic: topic("dedup-a"), route: "/dedup-a" },
  { pubsubname: JS, topic: topic("dedup-b"), route: "/dedup-b" },
  { pubsubname: JS, topic: topic("restart"), route: "/restart" },
  { pubsubname: JSD, topic: topic("durable"), route: "/durable" },
  { pubsubname: RD, topic: topic("redis"), route: "/redis" },
  { pubsubname: RD, topic: topic("redis-500"), route: "/redis-500" },
  { pubsubname: RDR, topic: topic("redis-retry"), route: "/redis-retry" },
];

let nats: NatsServer | undefined;
let redis: RedisServer | undefined;
let app: TestApp | undefined;
let daprd: Daprd | undefined;

function sidecar(): Daprd {
  if (!daprd) throw new Error("daprd not started");
  return daprd;
}
function testApp(): TestApp {
  if (!app) throw new Error("app not started");
  return app;
}

function cloudEvent(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    specversion: "1.0",
    id: `ev-${randomSuffix()}`,
    source: "/ofevents/test",
    type: "dev.ofevents.test",
    datacontenttype: "application/json",
    data: { n: 1, nested: { ok: true } },
    ...extra,
  };
}

/** Publishes `ev` and waits until the app got it `count` times at `path`. */
async function roundTrip(pubsub: string, name: string, ev: Record<string, unknown>, count = 1): Promise<Delivery[]> {
  const res = await sidecar().publish(pubsub, topic(name), ev);
  expect(res.status, await res.text()).toBe(204);
  return delivered(`/${name}`, ev["id"], count);
}

/** Waits until the app got `count` deliveries at `path` (of event `id`, when given). */
function delivered(path: string, id?: unknown, count = 1): Promise<Delivery[]> {
  return waitFor(
    () => {
      const got = testApp().received(path, id);
      return got.length >= count ? got : undefined;
    },
    { timeoutMs: 15_000, message: `${count} deliveries of ${String(id ?? "any event")} to ${path}` },
  );
}

/** Messages delivered to the consumer group but not yet XACKed (XPENDING summary). */
async function redisPending(stream: string, group: string): Promise<number> {
  const reply = await redisCommand(redis!.port, ["XPENDING", stream, group]);
  if (!Array.isArray(reply) || typeof reply[0] !== "number") throw new Error(`XPENDING: ${String(reply)}`);
  return reply[0];
}

beforeAll(async () => {
  [nats, redis] = await Promise.all([NatsServer.start({ jetstream: true }), RedisServer.start()]);
  // pubsub.jetstream never creates streams: one stream must cover every topic.
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`dapr.${s}.>`] });
  } finally {
    await nc.close();
  }
  app = await TestApp.start(SUBSCRIPTIONS);
  daprd = await Daprd.start({
    appId,
    appPort: app.port,
    logLevel: "debug",
    resources: [
      `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: ${JS}
spec:
  type: pubsub.jetstream
  version: v1
  metadata:
  - name: natsURL
    value: "${nats.url}"
  - name: streamName
    value: "${stream}"
`,
      pubsubComponent(JSD, "pubsub.jetstream", { natsURL: nats.url, streamName: stream, durableName: `d-${s}` }),
      pubsubComponent(RD, "pubsub.redis", { redisHost: `127.0.0.1:${redis.port}`, redeliverInterval: "1s" }),
      pubsubComponent(RDR, "pubsub.redis", { redisHost: `127.0.0.1:${redis.port}`, redeliverInterval: "1s" }),
      `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: ofevents-test
spec:
  policies:
    retries:
      quick:
        policy: constant
        duration: 200ms
        maxRetries: 5
  targets:
    components:
      ${RDR}:
        inbound:
          retry: quick
`,
    ],
  });
}, 120_000);

afterAll(async () => {
  await daprd?.stop();
  await app?.stop();
  await Promise.all([nats?.stop(), redis?.stop()]);
});

describe("daprd", () => {
  it("daprd - loads the pub/sub components and registers the app's subscriptions", async () => {
    expect(testApp().subscribeCalls).toBe(1);
    const meta = await sidecar().metadata();
    expect(meta["id"]).toBe(appId);
    const components = (meta["components"] as { name: string; type: string }[]).map((c) => `${c.name}:${c.type}`);
    expect(components).toEqual(
      expect.arrayContaining([
        `${JS}:pubsub.jetstream`,
        `${JSD}:pubsub.jetstream`,
        `${RD}:pubsub.redis`,
        `${RDR}:pubsub.redis`,
      ]),
    );
    const subs = (meta["subscriptions"] as { pubsubname: string; topic: string }[]).map((x) => x.topic);
    expect(subs.sort()).toEqual(SUBSCRIPTIONS.map((x) => x.topic).sort());
  });

  it("daprd - healthz/outbound is ready before the app listens; healthz waits for the app", async () => {
    const port = await freePort();
    const early = await Daprd.start({
      appId: `${appId}-early`,
      appPort: port,
      readiness: "outbound",
      resources: [pubsubComponent("mem", "pubsub.in-memory", {})],
    });
    let late: TestApp | undefined;
    try {
      const healthz = () => fetch(`${early.httpUrl}/v1.0/healthz`, { signal: AbortSignal.timeout(5_000) });
      expect((await healthz()).status).toBe(500);
      expect((await early.publish("mem", "t", cloudEvent())).status).toBe(204); // publishing works already
      late = await TestApp.start([{ pubsubname: "mem", topic: "t", route: "/t" }], port);
      await waitFor(async () => (await healthz()).status === 204, { timeoutMs: 15_000 });
      expect(late.subscribeCalls).toBe(1);
      const ev = cloudEvent();
      expect((await early.publish("mem", "t", ev)).status).toBe(204);
      await waitFor(() => late!.received("/t", ev["id"]).length === 1);
    } finally {
      await early.stop();
      await late?.stop();
    }
  });

  it("jetstream - a structured CloudEvent passes through with its attributes and extensions", async () => {
    const ev = cloudEvent({
      subject: "order-1",
      time: "2026-01-02T03:04:05.678Z",
      dataschema: "https://example.com/schema",
      ofeventsext: "custom",
      ofeventsnum: 42,
    });
    const [got] = await roundTrip(JS, "ce", ev);
    // Everything the publisher set comes back unchanged; daprd adds topic, pubsubname and the
    // trace attributes (empty strings when the publish request carried no trace context).
    expect(got!.body).toEqual({
      ...ev,
      topic: topic("ce"),
      pubsubname: JS,
      traceid: "",
      traceparent: "",
      tracestate: "",
    });
    expect(got!.headers["content-type"]).toBe("application/cloudevents+json");
    expect(got!.headers["pubsubname"]).toBe(JS);
    expect(got!.headers["topic"]).toBe(topic("ce")); // JetStream's message metadata, as a header
  });

  it("jetstream - daprd adds time only when absent; trace attributes come from the request unless traceid is set", async () => {
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const other = "00-11111111111111111111111111111111-2222222222222222-01";

    // No time, no datacontenttype, a traceparent attribute but no traceid: daprd overwrites
    // traceparent/traceid from the request's trace context, here the traceparent header.
    const bare = cloudEvent({ traceparent });
    delete bare["time"];
    delete bare["datacontenttype"];
    const res = await sidecar().publish(JS, topic("trace"), bare, { headers: { traceparent: other } });
    expect(res.status).toBe(204);
    const [b] = await delivered("/trace", bare["id"]);
    expect(b!.body["time"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(b!.body).not.toHaveProperty("datacontenttype");
    expect(b!.body["traceparent"]).toBe(other);
    expect(b!.body["traceid"]).toBe(other);
    expect(b!.headers["traceparent"]).toBe(other);

    // With a traceid attribute, daprd leaves traceid and traceparent alone.
    const kept = cloudEvent({ traceparent, traceid: traceparent, tracestate: "k=v" });
    const [k] = await roundTrip(JS, "trace", kept);
    expect(k!.body["traceparent"]).toBe(traceparent);
    expect(k!.body["traceid"]).toBe(traceparent);
    expect(k!.body["tracestate"]).toBe("k=v");
    expect(k!.headers["traceparent"]).toBe(traceparent);
  });

  it("jetstream - a non-CloudEvent JSON body is wrapped in a CloudEvent made by daprd", async () => {
    const res = await sidecar().publish(JS, topic("wrap"), JSON.stringify({ hello: "world" }), {
      contentType: "application/json",
    });
    expect(res.status).toBe(204);
    const [got] = await delivered("/wrap");
    expect(got!.body).toMatchObject({
      specversion: "1.0",
      source: appId,
      type: "com.dapr.event.sent",
      datacontenttype: "application/json",
      data: { hello: "world" },
      topic: topic("wrap"),
      pubsubname: JS,
    });
    expect(got!.body["id"]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it("jetstream - a 500 and a 2xx RETRY are redelivered at once; SUCCESS ends it", async () => {
    testApp().onDelivery((d, n) => {
      if (d.path !== "/retry") return { status: 200 };
      if (n === 1) return { status: 500, body: { error: "boom" } };
      if (n === 2) return { status: 200, body: { status: "RETRY" } };
      return { status: 200, body: { status: "SUCCESS" } };
    });
    const ev = cloudEvent();
    const got = await roundTrip(JS, "retry", ev, 3);
    expect(got.map((d) => d.body)).toEqual([got[0]!.body, got[0]!.body, got[0]!.body]);
    await delay(1_000);
    expect(testApp().received("/retry", ev["id"])).toHaveLength(3);
  });

  it("jetstream - a 2xx DROP is acked and not redelivered", async () => {
    testApp().onDelivery((d) =>
      d.path === "/drop" && d.body["subject"] === "drop" ? { status: 200, body: { status: "DROP" } } : { status: 200 },
    );
    const dropped = cloudEvent({ subject: "drop" });
    const marker = cloudEvent({ subject: "marker" });
    await roundTrip(JS, "drop", dropped);
    await roundTrip(JS, "drop", marker);
    await delay(1_500);
    expect(testApp().received("/drop", dropped["id"])).toHaveLength(1);
  });

  it("jetstream - the CloudEvent id is the Nats-Msg-Id: a repeated id is dropped stream-wide, yet publish answers 204", async () => {
    const ev = cloudEvent();
    await roundTrip(JS, "dedup-a", ev);
    const again = await sidecar().publish(JS, topic("dedup-a"), { ...ev, data: { n: 2 } });
    expect(again.status).toBe(204);
    const otherTopic = await sidecar().publish(JS, topic("dedup-b"), ev);
    expect(otherTopic.status).toBe(204);
    const marker = cloudEvent();
    await roundTrip(JS, "dedup-b", marker);
    await delay(500);
    expect(testApp().received("/dedup-a")).toHaveLength(1);
    expect(
      testApp()
        .received("/dedup-b")
        .map((d) => d.body["id"]),
    ).toEqual([marker["id"]]);
  });

  it("redis - one publish is delivered once with the CloudEvent intact", async () => {
    const ev = cloudEvent({ subject: "s1", ofeventsext: "x" });
    const [got] = await roundTrip(RD, "redis", ev);
    expect(got!.body).toMatchObject(ev);
    expect(got!.headers["pubsubname"]).toBe(RD);
    await waitFor(async () => (await redisPending(topic("redis"), appId)) === 0);
  });

  it("redis - without a resiliency policy a 500 is XACKed anyway and never redelivered", async () => {
    testApp().onDelivery((d) => (d.path === "/redis-500" ? { status: 500 } : { status: 200 }));
    const ev = cloudEvent();
    await roundTrip(RD, "redis-500", ev);
    await waitFor(async () => (await redisPending(topic("redis-500"), appId)) === 0);
    await delay(2_000); // > redeliverInterval (1s)
    expect(testApp().received("/redis-500", ev["id"])).toHaveLength(1);
  });

  it("redis - with an inbound resiliency retry policy daprd retries a 500 itself", async () => {
    testApp().onDelivery((d, n) => (d.path === "/redis-retry" && n === 1 ? { status: 500 } : { status: 200 }));
    const ev = cloudEvent();
    const got = await roundTrip(RDR, "redis-retry", ev, 2);
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(150); // the policy's 200ms constant backoff
    await waitFor(async () => (await redisPending(topic("redis-retry"), appId)) === 0);
  });

  it("daprd - restart() keeps its ports and re-subscribes; only a durable JetStream consumer resumes", async () => {
    testApp().onDelivery(() => ({ status: 200 }));
    // One event per topic: both topics share a stream, and JetStream de-duplicates by CE id.
    const before = cloudEvent();
    const beforeDurable = cloudEvent();
    await roundTrip(JS, "restart", before);
    await roundTrip(JSD, "durable", beforeDurable);
    const port = sidecar().httpPort;
    const calls = testApp().subscribeCalls;
    await sidecar().restart();
    expect(sidecar().httpPort).toBe(port);
    expect(testApp().subscribeCalls).toBe(calls + 1);
    await roundTrip(JS, "restart", cloudEvent());
    const afterDurable = cloudEvent();
    await roundTrip(JSD, "durable", afterDurable);
    // Without durableName the component makes a new ephemeral consumer (deliver policy "all"),
    // which replays the whole stream: the acked event comes again. The durable one resumes.
    await delivered("/restart", before["id"], 2);
    await delay(500);
    expect(testApp().received("/durable", beforeDurable["id"])).toHaveLength(1);
    expect(testApp().received("/durable", afterDurable["id"])).toHaveLength(1);
  });
});
