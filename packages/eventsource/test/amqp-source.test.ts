// The amqp source against a real RabbitMQ (Debian's rabbitmq-server, test/helpers/rabbitmq.ts):
// queue and exchange consumption, the message → CloudEvent mapping, ack only after the bus took
// the event, redelivery after a stop, the prefetch bound, credentials by reference and reconnects,
// run through the real EventSource runtime onto the in-memory bus.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type ChannelModel, type ConfirmChannel, type Options } from "amqplib";
import { readFile } from "node:fs/promises";
import {
  ErrorCode,
  SourceError,
  createInstrumentation,
  createMetrics,
  createSecretResolver,
  loadManifests,
  envNameFor,
  silentLogger,
  type AmqpSourceSpec,
  type CloudEvent,
  type SecretResolver,
} from "@ofevents/core";
import { createEventBus, createMemoryBus, type EventPublisher } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type SourceEvents } from "../src/index.js";
import { amqpAdapter } from "../src/sources/amqp.js";
import { metricValue } from "../../../test/helpers/prometheus.js";
import { NatsServer } from "../../../test/helpers/nats.js";
import { RabbitMqServer } from "../../../test/helpers/rabbitmq.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { FlakyPublisher, sourceHarness, type RunningSource } from "./support.js";

const NS = "amqp-test";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "amqp", event: EVENT });
const { collect } = harness;

const USER = "ofevents";
const PASSWORD = `pw-${randomSuffix(8)}`;
const USERNAME_REF = { name: "rabbit", key: "username" };
const PASSWORD_REF = { name: "rabbit", key: "password" };
const WRONG_REF = { name: "rabbit", key: "wrong" };
const URL_REF = { name: "rabbit", key: "url" };
const CA_REF = { name: "rabbit", key: "ca.crt" };
const BAD_URL_REF = { name: "rabbit", key: "bad-url" };
/** `{queue}/{32 hex digits}`: the id of a message without a message-id. */
/** The id of a message without a message-id: a random UUID. */
const RANDOM_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let server: RabbitMqServer;
let publisher: ChannelModel;
let channel: ConfirmChannel;
let secrets: SecretResolver;

async function openPublisher(): Promise<void> {
  publisher = await connect(server.url);
  channel = await publisher.createConfirmChannel();
}

beforeAll(async () => {
  server = await RabbitMqServer.start({ user: { name: USER, password: PASSWORD }, tls: true });
  await openPublisher();
  secrets = createSecretResolver([], {
    [envNameFor(USERNAME_REF)]: USER,
    [envNameFor(PASSWORD_REF)]: PASSWORD,
    [envNameFor(WRONG_REF)]: "not-the-password",
    [envNameFor(URL_REF)]: server.url,
    [envNameFor(CA_REF)]: server.caPem,
    [envNameFor(BAD_URL_REF)]: `http://${USER}:${PASSWORD}@127.0.0.1:1`,
  });
}, 90_000);

afterAll(async () => {
  await publisher?.close().catch(() => {});
  await server?.stop();
});

/** Publishes to the default exchange (routing key = the queue) and waits for the broker's confirm. */
async function toQueue(queue: string, body: string | Buffer, options: Options.Publish = {}): Promise<void> {
  channel.sendToQueue(queue, Buffer.from(body), options);
  await channel.waitForConfirms();
}

async function toExchange(exchange: string, key: string, body: string, options: Options.Publish = {}): Promise<void> {
  channel.publish(exchange, key, Buffer.from(body), options);
  await channel.waitForConfirms();
}

/** Messages ready in `queue` (not counting those handed out and unacknowledged). */
async function ready(queue: string): Promise<number> {
  return (await channel.checkQueue(queue)).messageCount;
}

const startSource = (spec: Partial<AmqpSourceSpec>, bus: EventPublisher, name: string): Promise<RunningSource> =>
  harness.start(name, { url: server.url, ...spec }, bus, secrets);

describe("amqp source - events", () => {
  it("amqp source - queue messages become CloudEvents: data, message-id or a random id, timestamp, header extensions", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource({ queue: { name: queue } }, bus, name);
    await toQueue(queue, JSON.stringify({ total: 12.5 }), {
      messageId: "order-1",
      timestamp: 1_780_000_000,
      headers: { tenant: "acme", "X-Trace": "skipped", attempt: 2 },
    });
    await toQueue(queue, "plain text");
    await toQueue(queue, Buffer.from([0xff, 0x00, 0xfe]), { contentType: "application/x-raw" });
    await waitFor(() => got.length === 3, { message: "three events" });
    await src.stop();
    await bus.close();

    const byData = (pred: (e: CloudEvent) => boolean) => got.find(pred)!;
    const json = byData((e) => e.id === "order-1");
    expect(json).toMatchObject({
      specversion: "1.0",
      source: harness.sourceOf(name),
      type: "io.openfunction.events.amqp",
      subject: queue,
      time: new Date(1_780_000_000 * 1000).toISOString(),
      datacontenttype: "application/json",
      data: { total: 12.5 },
      tenant: "acme",
      attempt: "2",
    });
    expect(json).not.toHaveProperty("X-Trace");
    expect(json).not.toHaveProperty("amqpexchange"); // the default exchange
    expect(json).not.toHaveProperty("amqpredelivered");
    const text = byData((e) => e.data === "plain text");
    expect(text).toMatchObject({ datacontenttype: "text/plain", subject: queue });
    expect(text.id).toMatch(RANDOM_ID);
    const bytes = byData((e) => e.datacontenttype === "application/x-raw");
    expect(bytes.data_base64).toBe(Buffer.from([0xff, 0x00, 0xfe]).toString("base64"));
    expect(new Set(got.map((e) => e.id)).size).toBe(3);
    expect(await ready(queue)).toBe(0);
  });

  it("amqp source - an exchange and binding key: only matching routing keys arrive, subject = routing key", async () => {
    const exchange = `ex-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource(
      { exchange: { name: exchange, type: "topic", durable: false }, routingKey: "orders.*.created" },
      bus,
      name,
    );
    await toExchange(exchange, "orders.eu.created", JSON.stringify({ n: 1 }));
    await toExchange(exchange, "orders.eu.deleted", JSON.stringify({ n: 2 }));
    await toExchange(exchange, "orders.us.created", JSON.stringify({ n: 3 }));
    // Identical messages without a message-id get the same (digest) id: documented.
    await toExchange(exchange, "orders.us.created", JSON.stringify({ n: 3 }));
    await waitFor(() => got.length === 3, { message: "three matching events" });
    await src.stop();
    await bus.close();
    expect(got.map((e) => e.data).sort((a, b) => (a as { n: number }).n - (b as { n: number }).n)).toEqual([
      { n: 1 },
      { n: 3 },
      { n: 3 },
    ]);
    for (const e of got)
      expect(e).toMatchObject({ amqpexchange: exchange, subject: expect.stringMatching(/created$/) });
    // The default queue name, bound to the exchange.
    const queue = `ofevents-${NS}-${name}-${EVENT}`;
    expect(got[0]!.id).toMatch(RANDOM_ID);
    // Two identical messages are two events, with an id each.
    const us = got.filter((e) => e.subject === "orders.us.created");
    expect(us[0]!.id).not.toBe(us[1]!.id);
    expect(await ready(queue)).toBe(0);
  });

  it("amqp source - keeps the attributes of a CloudEvent: binary mode (cloudEvents_ headers) and structured mode", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource({ queue: { name: queue } }, bus, name);
    await toQueue(queue, JSON.stringify({ sku: "a1" }), {
      contentType: "application/json",
      headers: {
        cloudEvents_specversion: "1.0",
        cloudEvents_id: "ce-1",
        cloudEvents_source: "/shop",
        cloudEvents_type: "shop.order.created",
      },
    });
    await toQueue(
      queue,
      JSON.stringify({ specversion: "1.0", id: "ce-2", source: "/shop", type: "shop.order.paid", data: { ok: true } }),
      { contentType: "application/cloudevents+json" },
    );
    await waitFor(() => got.length === 2, { message: "two events" });
    await src.stop();
    await bus.close();
    const byId = new Map(got.map((e) => [e.id, e]));
    expect(byId.get("ce-1")).toMatchObject({
      source: "/shop",
      type: "shop.order.created",
      datacontenttype: "application/json",
      data: { sku: "a1" },
    });
    expect(byId.get("ce-2")).toMatchObject({ source: "/shop", type: "shop.order.paid", data: { ok: true } });
  });

  it("amqp source - a malformed CloudEvent message is acknowledged and skipped; the next one arrives", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource({ queue: { name: queue }, prefetch: 1 }, bus, name);
    await toQueue(queue, "{not json", { contentType: "application/cloudevents+json" });
    await toQueue(queue, "after");
    await waitFor(() => got.length === 1, { message: "the good message" });
    await src.stop();
    await bus.close();
    expect(got[0]!.data).toBe("after");
    expect(await ready(queue)).toBe(0);
  });
});

describe("amqp source - ids", () => {
  it("amqp source - two identical messages without a message-id both reach the sink through the JetStream bus", async () => {
    // The JetStream bus stores each event under its id as Nats-Msg-Id and drops a second one with
    // the same id within its duplicate window: identical messages need ids of their own.
    const nats = await NatsServer.start({ jetstream: true });
    const bus = await createEventBus({ jetstream: { url: nats.url } }, { logger: silentLogger() });
    try {
      const queue = `q-${randomSuffix()}`;
      const name = `es-${randomSuffix()}`;
      const got = await collect(bus, name);
      const src = await startSource({ queue: { name: queue } }, bus, name);
      await toQueue(queue, JSON.stringify({ door: "open" }));
      await toQueue(queue, JSON.stringify({ door: "open" }));
      await toQueue(queue, JSON.stringify({ door: "closed" }));
      await waitFor(() => got.length === 3, { timeoutMs: 15_000, message: () => `3 events, got ${got.length}` });
      await src.stop();
      // Up to `prefetch` dispatches run at once: the order on the bus may differ from the queue's.
      expect(got.map((e) => (e.data as { door: string }).door).sort()).toEqual(["closed", "open", "open"]);
      expect(new Set(got.map((e) => e.id)).size).toBe(3);
      for (const e of got) expect(e.id).toMatch(RANDOM_ID);
      expect(await ready(queue)).toBe(0);
    } finally {
      await bus.close();
      await nats.stop();
    }
  });
});

describe("amqp source - acknowledgement", () => {
  it.each([
    { type: "classic", queueArguments: undefined },
    { type: "quorum", queueArguments: { "x-queue-type": "quorum" } },
  ])(
    "amqp source - a message the bus does not take stays unacknowledged; after a stop it is redelivered (amqpredelivered) and not lost: $type queue",
    async ({ queueArguments }) => {
      const queue = `q-${randomSuffix()}`;
      const name = `es-${randomSuffix()}`;
      const down = new FlakyPublisher(createMemoryBus({ logger: silentLogger() }), {
        failNext: Number.MAX_SAFE_INTEGER,
      });
      const first = await startSource(
        { queue: { name: queue, ...(queueArguments === undefined ? {} : { arguments: queueArguments }) } },
        down,
        name,
      );
      // With a message-id, the id survives the redelivery (quorum queues add x-delivery-count).
      await toQueue(queue, JSON.stringify({ level: "high" }), { messageId: "alert-7" });
      await waitFor(() => down.calls >= 2, { message: "publish retried" });
      // Handed out, not acknowledged: nothing ready, and the retries go on.
      expect(await ready(queue)).toBe(0);
      await first.stop();
      expect(await ready(queue)).toBe(1);

      const bus = createMemoryBus({ logger: silentLogger() });
      const got = await collect(bus, name);
      const second = await startSource(
        { queue: { name: queue, ...(queueArguments === undefined ? {} : { arguments: queueArguments }) } },
        bus,
        name,
      );
      await waitFor(() => got.length === 1, { message: "redelivered message" });
      await second.stop();
      await bus.close();
      expect(got[0]).toMatchObject({ data: { level: "high" }, amqpredelivered: true });
      // The same id as the attempts before the stop, so downstream can tell it is a redelivery.
      expect(first.failed[0]).toBe("alert-7");
      expect(got[0]!.id).toBe("alert-7");
      expect(await ready(queue)).toBe(0);
    },
  );

  it("amqp source - acknowledges once a retried publish succeeded, so nothing is left in the queue", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const flaky = new FlakyPublisher(bus, { failNext: 2 });
    const src = await startSource({ queue: { name: queue } }, flaky, name);
    await toQueue(queue, "first");
    await waitFor(() => got.length === 1, { message: "published after two failures" });
    await src.stop();
    await bus.close();
    expect(flaky.calls).toBe(3);
    expect(got[0]).not.toHaveProperty("amqpredelivered");
    // Had it stayed unacknowledged, the stop would have put it back.
    expect(await ready(queue)).toBe(0);
  });

  it("amqp source - prefetch bounds the messages handed out while the bus is down; the rest wait in the queue", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const down = new FlakyPublisher(bus);
    down.down = true;
    const src = await startSource({ queue: { name: queue }, prefetch: 3 }, down, name);
    for (let i = 0; i < 10; i++) await toQueue(queue, String(i), { messageId: `m-${i}` });
    await waitFor(() => new Set(src.failed).size >= 3 && down.calls >= 6, { message: "three messages retried" });
    expect(new Set(src.failed).size).toBe(3);
    expect(await ready(queue)).toBe(7);
    down.down = false;
    await waitFor(() => got.length === 10, { timeoutMs: 20_000, message: "all ten after the bus is back" });
    await src.stop();
    await bus.close();
    expect(new Set(got.map((e) => e.id))).toEqual(new Set(Array.from({ length: 10 }, (_, i) => `m-${i}`)));
    expect(await ready(queue)).toBe(0);
  });
});

describe("amqp source - metrics", () => {
  it("amqp source - the runtime counts received, failed and published events of an amqp event", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const instrumentation = createInstrumentation<SourceEvents>();
    const metrics = createMetrics();
    metrics.observeSource(instrumentation, { namespace: NS, eventSource: name });
    const runtime = await startEventSource(harness.manifest(name, { url: server.url, queue: { name: queue } }), {
      logger: silentLogger(),
      bus: new FlakyPublisher(bus, { failNext: 1 }),
      secrets,
      webhooks: createWebhookServers({ logger: silentLogger() }),
      instrumentation,
      publishAttempts: 1,
    });
    await toQueue(queue, "counted", { messageId: "c-1" });
    await waitFor(() => got.length === 1, { message: "published after one failure" });
    await runtime.stop();
    await bus.close();
    const text = await metrics.text();
    const labels = { namespace: NS, eventsource: name, event: EVENT };
    expect(metricValue(text, "ofevents_eventsource_up", labels)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_events_received_total", labels)).toBe(2);
    expect(metricValue(text, "ofevents_eventsource_events_failed_total", labels)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_events_published_total", labels)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_dispatches_in_flight", labels)).toBe(0);
  });
});

describe("amqp source - example", () => {
  it("amqp source - examples/eventsources/amqp.yaml loads and each of its events passes validate", async () => {
    const file = new URL("../../../examples/eventsources/amqp.yaml", import.meta.url);
    const m = await loadManifests([file.pathname]);
    expect(m.issues).toEqual([]);
    const events = m.eventSources[0]!.resource.spec.amqp!;
    expect(Object.keys(events).sort()).toEqual(["invoices", "orders"]);
    for (const spec of Object.values(events)) expect(amqpAdapter.validate(spec)).toEqual([]);
    // The docs page shows the same fields.
    const doc = await readFile(new URL("../../../docs/eventsources/amqp.md", import.meta.url), "utf8");
    expect(doc).toContain("examples/eventsources/amqp.yaml");
  });
});

describe("amqp source - credentials", () => {
  it("amqp source - user name and password by secret reference", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await harness.start(
      name,
      {
        url: server.bareUrl,
        queue: { name: queue },
        auth: { usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
      },
      bus,
      secrets,
    );
    await toQueue(queue, "with auth");
    await waitFor(() => got.length === 1, { message: "one event" });
    await src.stop();
    await bus.close();
    expect(got[0]!.data).toBe("with auth");
  });

  it("amqp source - the URL by secret reference", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await harness.start(name, { urlSecret: URL_REF, queue: { name: queue } }, bus, secrets);
    await toQueue(queue, "via url secret");
    await waitFor(() => got.length === 1, { message: "one event" });
    await src.stop();
    await bus.close();
    expect(got[0]!.data).toBe("via url secret");
  });

  it("amqp source - an unusable URL in urlSecret fails start() without showing the URL", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const err: unknown = await harness
      .start(`es-${randomSuffix()}`, { urlSecret: BAD_URL_REF, queue: { name: "q" } }, bus, secrets)
      .then(
        async (src) => {
          await src.stop();
          return undefined;
        },
        (e: unknown) => e,
      );
    await bus.close();
    expect(err).toBeInstanceOf(SourceError);
    expect((err as SourceError).message).toMatch(/URL in urlSecret is unusable: scheme "http:\/\/"/);
    expect((err as SourceError).message).not.toContain(PASSWORD);
  });

  it("amqp source - a wrong password fails start() with SOURCE_START, without the password in the error", async () => {
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const err: unknown = await harness
      .start(
        name,
        {
          url: server.bareUrl,
          queue: { name: `q-${randomSuffix()}` },
          auth: { usernameSecret: USERNAME_REF, passwordSecret: WRONG_REF },
        },
        bus,
        secrets,
      )
      .then(
        async (src) => {
          await src.stop();
          return undefined;
        },
        (e: unknown) => e,
      );
    await bus.close();
    expect(err).toBeInstanceOf(SourceError);
    expect((err as SourceError).code).toBe(ErrorCode.SourceStart);
    expect((err as SourceError).message).toContain(`EventSource ${NS}/${name} event ${EVENT}`);
    expect((err as SourceError).message).toMatch(/ACCESS_REFUSED|refused|403/i);
    expect((err as SourceError).message).not.toContain("not-the-password");
  });
});

describe("amqp source - TLS", () => {
  it("amqp source - amqps:// with the CA by secret reference consumes", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource({ url: server.tlsUrl, tls: { caSecret: CA_REF }, queue: { name: queue } }, bus, name);
    await toQueue(queue, "over tls");
    await waitFor(() => got.length === 1, { message: "one event" });
    await src.stop();
    await bus.close();
    expect(got[0]!.data).toBe("over tls");
  });

  it("amqp source - amqps:// without the CA fails start(): the certificate is verified", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const err: unknown = await startSource(
      { url: server.tlsUrl, queue: { name: `q-${randomSuffix()}` } },
      bus,
      `es-${randomSuffix()}`,
    ).then(
      async (src) => {
        await src.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    await bus.close();
    expect(err).toBeInstanceOf(SourceError);
    expect((err as SourceError).message).toMatch(/certificate/i);
    expect((err as SourceError).message).not.toContain(PASSWORD);
  });
});

describe("amqp source - validate", () => {
  const base = { url: "amqp://broker:5672", queue: { name: "orders" } };
  it.each([
    { name: "no url", spec: { url: undefined }, path: "url", message: /url or urlSecret/ },
    { name: "url and urlSecret", spec: { urlSecret: URL_REF }, path: "url", message: /either/ },
    { name: "an http URL", spec: { url: "http://broker" }, path: "url", message: /amqp:\/\/ or amqps:\/\// },
    { name: "a non-URL", spec: { url: "broker:5672 x" }, path: "url", message: /./ },
    { name: "neither queue nor exchange", spec: { queue: undefined }, path: "queue", message: /queue.name/ },
    { name: "a binding key without exchange", spec: { routingKey: "a.b" }, path: "routingKey", message: /exchange/ },
    {
      name: "a direct exchange without binding key",
      spec: { exchange: { name: "ex", type: "direct" } },
      path: "routingKey",
      message: /direct/,
    },
    { name: "a reserved queue name", spec: { queue: { name: "amq.mine" } }, path: "queue.name", message: /reserved/ },
    {
      name: "TLS with an amqp:// URL",
      spec: { tls: { caSecret: { name: "s", key: "ca" } } },
      path: "tls",
      message: /amqps/,
    },
    {
      name: "a client certificate without key",
      spec: { url: "amqps://broker", tls: { certSecret: { name: "s", key: "crt" } } },
      path: "tls",
      message: /keySecret/,
    },
  ])("amqp source - validate rejects $name", ({ spec, path, message }) => {
    const issues = amqpAdapter.validate({ ...base, ...spec } as AmqpSourceSpec);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe(path);
    expect(issues[0]!.message).toMatch(message);
  });

  it.each([
    { name: "an existing queue", spec: { queue: { name: "orders", declare: false } } },
    { name: "a topic exchange with the default key", spec: { queue: undefined, exchange: { name: "events" } } },
    {
      name: "amqps with TLS and auth by reference",
      spec: {
        url: "amqps://broker/vhost",
        tls: { caSecret: { name: "s", key: "ca" } },
        auth: { usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
      },
    },
    { name: "the URL by reference", spec: { url: undefined, urlSecret: URL_REF, prefetch: 64 } },
  ])("amqp source - validate accepts $name", ({ spec }) => {
    expect(amqpAdapter.validate({ ...base, ...spec } as AmqpSourceSpec)).toEqual([]);
  });

  it("amqp source - the runtime refuses an invalid event before connecting", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    await expect(harness.start(`es-${randomSuffix()}`, { url: server.url }, bus, secrets)).rejects.toThrow(/queue/);
    await bus.close();
  });
});

describe("amqp source - resilience", () => {
  it("amqp source - reconnects with backoff after the broker restarts and consumes again", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await startSource({ queue: { name: queue } }, bus, name);
    await toQueue(queue, "before", { persistent: true });
    await waitFor(() => got.length === 1, { message: "message before the restart" });
    await publisher.close().catch(() => {});
    await server.restart();
    await openPublisher();
    await toQueue(queue, "after", { persistent: true });
    await waitFor(() => got.length === 2, { timeoutMs: 30_000, intervalMs: 250, message: "message after the restart" });
    await src.stop();
    await bus.close();
    expect(got.map((e) => e.data)).toEqual(["before", "after"]);
  }, 90_000);

  it("amqp source - a message whose dispatch is failing when the broker goes away is redelivered after the reconnect, not lost", async () => {
    const queue = `q-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const flaky = new FlakyPublisher(bus);
    flaky.down = true;
    const src = await startSource({ queue: { name: queue } }, flaky, name);
    await toQueue(queue, JSON.stringify({ keep: true }), { persistent: true, messageId: "survivor" });
    await waitFor(() => flaky.calls >= 2, { message: "publish retried" });
    await publisher.close().catch(() => {});
    await server.restart();
    await openPublisher();
    flaky.down = false;
    await waitFor(() => got.length >= 1, {
      timeoutMs: 30_000,
      intervalMs: 250,
      message: "the message after the restart",
    });
    await src.stop();
    await bus.close();
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ id: "survivor", data: { keep: true }, amqpredelivered: true });
    expect(await ready(queue)).toBe(0);
  }, 90_000);
});
