/**
 * The Dapr driver against a real daprd (v1.18, built by `npm run test:setup`) carrying three
 * brokers: NATS JetStream, Kafka and Redis streams. Each block starts its broker and one daprd
 * with the Component and Resiliency that renderDaprComponents makes for the bus, runs the bus
 * contract, then the tests of the traps the driver works around. Blocks run in order; each stops
 * what it started.
 */
import { connect, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { CommunicationProtocolEnum, DaprClient, HTTPClient, LogLevel } from "@dapr/dapr";
import {
  API_VERSION,
  BusError,
  kafkaBusNames,
  ErrorCode,
  EventError,
  eventBusSchema,
  newEvent,
  renderDaprComponents,
  silentLogger,
  type CloudEvent,
  type EventBusSpec,
} from "@ofevents/core";
import { Daprd } from "../../../test/helpers/daprd.js";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { NatsServer } from "../../../test/helpers/nats.js";
import { RedisServer, redisCommand } from "../../../test/helpers/redis.js";
import { reportFigures } from "../../../test/helpers/report.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { createDaprBus, daprTopicOf, fromDapr, toDapr, type CreateDaprBusOptions } from "../src/drivers/dapr.js";
import { createJetStreamBus } from "../src/drivers/jetstream.js";
import { createEventBus, type DeliveryInfo, type EventBus } from "../src/index.js";
import { busContract, uniq } from "./contract.js";

const PUBSUB = "bus";
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/** The Component and Resiliency the controller would apply for this bus spec. */
function resources(spec: EventBusSpec): Array<Record<string, unknown>> {
  const bus = eventBusSchema.parse({ apiVersion: API_VERSION, kind: "EventBus", metadata: { name: PUBSUB }, spec });
  // Quick retries: tests do not wait for production back-offs.
  return renderDaprComponents(bus, {
    inboundRetries: 3,
    inboundMaxInterval: "1s",
    outboundRetries: 1,
  }) as unknown as Array<Record<string, unknown>>;
}

function startDaprd(spec: EventBusSpec): Promise<Daprd> {
  return Daprd.start({ appId: uniq("ofevents-dapr"), resources: resources(spec) });
}

function daprOptions(daprd: Daprd, extra: Partial<CreateDaprBusOptions> = {}): CreateDaprBusOptions {
  return { logger: silentLogger(), pubsubName: PUBSUB, httpPort: daprd.httpPort, grpcPort: daprd.grpcPort, ...extra };
}

function event(n: number, extra: Record<string, unknown> = {}): CloudEvent {
  return {
    ...newEvent({ id: uniq(`ev-${n}`), source: "/dapr/test", type: "io.ofevents.test", data: { n } }),
    ...extra,
  } as CloudEvent;
}

/** Subscribes `group` to `topic`, collecting what arrives. */
async function collect(
  bus: EventBus,
  topic: string,
  handler: (e: CloudEvent, info: DeliveryInfo) => Promise<void> = async () => {},
): Promise<CloudEvent[]> {
  const got: CloudEvent[] = [];
  await bus.subscribe(
    [topic],
    async (e, info) => {
      await handler(e, info);
      got.push(e);
    },
    { group: uniq("g"), backoffMs: 50 },
  );
  return got;
}

describe("dapr bus - event mapping (pure)", () => {
  it("dapr bus - toDapr marks what daprd adds; fromDapr gives back exactly the published event", () => {
    const sent = event(1, { traceparent: TRACEPARENT, topic: "mine", customext: "x" });
    const body = toDapr(sent);
    expect(body["traceid"]).toBe(TRACEPARENT);
    // What daprd's FromCloudEvent does to a structured event it passes through.
    const stored = { ...body, topic: "t", pubsubname: PUBSUB, tracestate: "" };
    expect(fromDapr(Buffer.from(JSON.stringify(stored)))).toEqual(sent);
  });

  it("dapr bus - an event from another publisher loses daprd's topic, pubsubname and empty trace attributes", () => {
    const foreign = {
      specversion: "1.0",
      id: "x",
      source: "s",
      type: "t",
      topic: "t",
      pubsubname: PUBSUB,
      traceid: "",
      traceparent: "",
      tracestate: "",
    };
    expect(fromDapr(Buffer.from(JSON.stringify(foreign)))).toEqual({
      specversion: "1.0",
      id: "x",
      source: "s",
      type: "t",
    });
  });

  it("dapr bus - an event without daprd's pair topic + pubsubname (a direct driver wrote it) keeps its attributes", () => {
    const direct = { specversion: "1.0", id: "x", source: "s", type: "t", topic: "mine", traceparent: "" };
    expect(fromDapr(Buffer.from(JSON.stringify(direct)))).toEqual(direct);
  });

  it.each([
    {
      name: "kafka: prefix + topic",
      topic: "default-a-b",
      spec: { kafka: { brokers: "k:9092", topicPrefix: "prod." } },
      expected: "prod.default-a-b",
    },
    {
      name: "kafka: sanitised as the direct driver does",
      topic: "a b",
      spec: { kafka: { brokers: "k:9092" } },
      expected: kafkaBusNames(undefined, "a b").topic,
    },
    {
      name: "pubsub.kafka: sanitised",
      topic: "a:b",
      spec: { dapr: { type: "pubsub.kafka" } },
      expected: kafkaBusNames(undefined, "a:b").topic,
    },
    {
      name: "jetstream: the topic (the subject)",
      topic: "orders.eu",
      spec: { jetstream: { url: "nats://n:4222" } },
      expected: "orders.eu",
    },
    { name: "another broker: the topic", topic: "a:b", spec: { dapr: { type: "pubsub.redis" } }, expected: "a:b" },
  ])("dapr bus - the Dapr topic is the direct driver's: $name", ({ topic, spec, expected }) => {
    expect(daprTopicOf(topic, spec as EventBusSpec)).toBe(expected);
  });

  it.each([
    { name: "jetstream", spec: { jetstream: { url: "nats://n:4222" } } },
    { name: "pubsub.jetstream", spec: { dapr: { type: "pubsub.jetstream" } } },
  ])("dapr bus - a topic that is not a NATS subject is a CONFIG error on a $name bus", ({ spec }) => {
    let err: unknown;
    try {
      daprTopicOf("a.*", spec as EventBusSpec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).code).toBe(ErrorCode.Config);
    expect((err as BusError).retriable).toBe(false);
  });

  it("dapr bus - a message that is not a CloudEvent is an EventError", () => {
    expect(() => fromDapr(Buffer.from("not json"))).toThrow(EventError);
    expect(() => fromDapr(Buffer.from(JSON.stringify({ hello: "world" })))).toThrow(EventError);
  });
});

describe("dapr bus - factory", () => {
  it("dapr bus - createEventBus without options.dapr for a spec.dapr bus is a CONFIG error", async () => {
    const err = await createEventBus({ dapr: { type: "pubsub.redis" } }, { logger: silentLogger() }).catch(
      (e: unknown) => e,
    );
    expect((err as BusError).code).toBe(ErrorCode.Config);
  });

  it("dapr bus - a sidecar that does not answer rejects creation with a retriable BusError in bounded time", async () => {
    const start = Date.now();
    const err = await createDaprBus({
      logger: silentLogger(),
      pubsubName: PUBSUB,
      httpPort: 1,
      grpcPort: 2,
      sidecarTimeoutMs: 1_000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).retriable).toBe(true);
    expect(Date.now() - start).toBeLessThan(5_000);
  });
});

// ---------------------------------------------------------------------------------------------
describe("dapr bus - NATS JetStream", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let daprd: Daprd;
  /** pubsub.jetstream never creates streams: one per topic, whose only subject is the topic. */
  const prepareTopic = async (topic: string): Promise<void> => {
    const name = `T-${Buffer.from(topic).toString("hex")}`;
    await jsm.streams.add({ name, subjects: [topic] }).catch(async (err: unknown) => {
      await jsm.streams.info(name).catch(() => {
        throw err;
      });
    });
  };
  const open = (extra: Partial<CreateDaprBusOptions> = {}) =>
    createDaprBus(daprOptions(daprd, { prepareTopic, ...extra }));

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: true });
    nc = await connect({ servers: nats.url });
    jsm = await nc.jetstreamManager();
    daprd = await startDaprd({ jetstream: { url: nats.url } });
  });

  afterAll(async () => {
    await daprd?.stop();
    await nc?.close();
    await nats?.stop();
  });

  busContract("dapr (JetStream)", () => open(), { oneAtATime: true });

  /** What JetStream holds for `topic` (the bytes daprd published), by stream sequence. */
  async function stored(topic: string, seq = 1): Promise<Record<string, unknown>> {
    const m = await jsm.streams.getMessage(`T-${Buffer.from(topic).toString("hex")}`, { seq });
    return JSON.parse(Buffer.from(m.data).toString("utf8")) as Record<string, unknown>;
  }

  async function streamCount(topic: string): Promise<number> {
    const info = await jsm.streams.info(`T-${Buffer.from(topic).toString("hex")}`);
    return info.state.messages;
  }

  describe("dapr bus - JetStream: trace context and attributes", () => {
    it("dapr bus - a traceparent is delivered as published and continues the trace in daprd (no traceid added for the handler)", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        const sent = event(1, { traceparent: TRACEPARENT });
        await bus.publish(topic, sent);
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "delivery" });
        expect(got[0]).toEqual(sent);
        // daprd kept the publisher's trace context instead of replacing it with the (empty)
        // trace context of the publish request.
        const raw = await stored(topic);
        expect(raw["traceparent"]).toBe(TRACEPARENT);
        expect(raw["traceid"]).toBe(TRACEPARENT);
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - traceid, tracestate, topic and pubsubname set by the publisher come back unchanged", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        const sent = event(2, {
          traceparent: TRACEPARENT,
          traceid: "00-11111111111111111111111111111111-2222222222222222-01",
          tracestate: "vendor=1",
          topic: "the publisher's own",
          pubsubname: "also mine",
          ofdapr: "a clash with the marker",
        });
        await bus.publish(topic, sent);
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "delivery" });
        expect(got[0]).toEqual(sent);
        const raw = await stored(topic);
        expect(raw["topic"]).toBe(topic); // daprd always overwrites these two on the wire
        expect(raw["pubsubname"]).toBe(PUBSUB);
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - what daprd adds to an event without time or trace context is taken off again", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        const sent = {
          specversion: "1.0",
          id: uniq("bare"),
          source: "/dapr/test",
          type: "io.ofevents.test",
        } as CloudEvent;
        await bus.publish(topic, sent);
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "delivery" });
        expect(got[0]).toEqual(sent);
        const raw = await stored(topic);
        expect(raw).toMatchObject({ traceid: "", traceparent: "", tracestate: "", topic, pubsubname: PUBSUB });
        expect(typeof raw["time"]).toBe("string");
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - binary data, an unusual content type and exact large numbers pass through", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        const binary = newEvent({ source: "/dapr/test", type: "bin", data: Buffer.from([0, 1, 2, 250, 255]) });
        const xml = newEvent({
          source: "/dapr/test",
          type: "xml",
          datacontenttype: "application/vnd.acme+xml",
          data: "<a>é</a>",
        });
        const numbers = newEvent({
          source: "/dapr/test",
          type: "num",
          data: { big: 9007199254740991, small: 1.5e-7, neg: -0.25 },
        });
        for (const e of [binary, xml, numbers]) await bus.publish(topic, e);
        await waitFor(() => got.length === 3, { timeoutMs: 10_000, intervalMs: 10, message: "3 deliveries" });
        expect([...got].sort((a, b) => a.type.localeCompare(b.type))).toEqual([binary, numbers, xml]);
      } finally {
        await bus.close();
      }
    });
  });

  describe("dapr bus - JetStream: traps", () => {
    it("dapr bus - trap: the SDK's HTTP publish returns its error instead of throwing; publish rejects with a BusError", async () => {
      // Unknown component: daprd answers 404, which retrying cannot fix.
      const wrong = await open({ pubsubName: "missing" });
      try {
        const err = await wrong.publish(uniq("t"), event(1)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BusError);
        expect(err).toMatchObject({ code: ErrorCode.BusPublish, retriable: false });
        expect((err as BusError).message).toContain("ERR_PUBSUB_NOT_FOUND");
      } finally {
        await wrong.close();
      }
      // The broker refuses (no stream has the subject): daprd answers 500, worth retrying.
      const noStreams = await open({ prepareTopic: undefined });
      try {
        const err = await noStreams.publish(uniq("nostream"), event(2)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BusError);
        expect(err).toMatchObject({ code: ErrorCode.BusPublish, retriable: true });
      } finally {
        await noStreams.close();
      }
    });

    it("dapr bus - trap: the SDK's publishBulk reports broker failures as success; concurrent publishes (sent in bulk) each reject", async () => {
      const topic = uniq("nostream");
      const sdk = new DaprClient({
        daprHost: "127.0.0.1",
        daprPort: String(daprd.httpPort),
        communicationProtocol: CommunicationProtocolEnum.HTTP,
        logger: { level: LogLevel.Error, service: { error() {}, warn() {}, info() {}, verbose() {}, debug() {} } },
      });
      const res = await sdk.pubsub.publishBulk(PUBSUB, topic, [toDapr(event(1)), toDapr(event(2))]);
      expect(res.failedMessages).toEqual([]); // wrong: nothing was stored
      const bus = await open({ prepareTopic: undefined });
      try {
        const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => bus.publish(topic, event(i))));
        expect(results.map((r) => r.status)).toEqual(Array(20).fill("rejected"));
        for (const r of results)
          expect((r as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.BusPublish, retriable: true });
      } finally {
        await bus.close();
      }
      await prepareTopic(topic);
      expect(await streamCount(topic)).toBe(0);
    });

    it('dapr bus - trap: subscription metadata goes to daprd as plain strings (rawPayload "true", not JSON "\\"true\\"")', async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        const subs = (await daprd.metadata())["subscriptions"] as Array<{
          topic: string;
          metadata?: Record<string, string>;
          type?: string;
        }>;
        const mine = subs.find((x) => x.topic === topic);
        expect(mine?.metadata).toEqual({ rawPayload: "true" });
        const sent = event(1);
        await bus.publish(topic, sent);
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "delivery" });
        expect(got[0]).toEqual(sent);
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - a subscription to a component daprd does not have rejects with a BusError", async () => {
      const wrong = await open({ pubsubName: "missing" });
      try {
        const err = await wrong.subscribe([uniq("t")], async () => {}, { group: uniq("g") }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BusError);
        expect(err).toMatchObject({ code: ErrorCode.BusSubscribe, retriable: false });
        expect((err as BusError).message).toContain("missing");
      } finally {
        await wrong.close();
      }
    });

    it("dapr bus - trap: daprd adds no id, so an event without one is refused before it reaches daprd", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        await prepareTopic(topic);
        const noId = { specversion: "1.0", source: "/dapr/test", type: "io.ofevents.test" } as unknown as CloudEvent;
        const err = await bus.publish(topic, noId).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EventError);
        expect(await streamCount(topic)).toBe(0);
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - trap: JetStream de-duplicates by id within a stream, so each topic (and dead-letter topic) has its own", async () => {
      const bus = await open();
      try {
        const a = uniq("t");
        const b = uniq("t");
        const gotA = await collect(bus, a);
        const gotB = await collect(bus, b);
        const first = event(1);
        await bus.publish(a, first);
        // Same id again on the same topic: JetStream drops it, and daprd still answers 204.
        await bus.publish(a, { ...first, data: { n: 2 } } as CloudEvent);
        // Same id on another topic: another stream, delivered.
        await bus.publish(b, first);
        await waitFor(() => gotA.length === 1 && gotB.length === 1, {
          timeoutMs: 10_000,
          intervalMs: 10,
          message: "deliveries",
        });
        await new Promise((r) => setTimeout(r, 300));
        expect(gotA).toEqual([first]);
        expect(gotB).toEqual([first]);
        expect(await streamCount(a)).toBe(1);
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - a message that is not a CloudEvent is answered DROP: daprd moves it to the dead-letter topic, the topic goes on", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const calls: string[] = [];
        await bus.subscribe([topic], async (e) => void calls.push(e.id), { group: uniq("g") });
        const res = await daprd.publish(PUBSUB, topic, "garbage", {
          contentType: "text/plain",
          metadata: { rawPayload: "true" },
        });
        expect(res.status).toBe(204);
        const after = event(1);
        await bus.publish(topic, after);
        await waitFor(() => calls.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "the next event" });
        const dlt = `${topic}.deadletter`;
        await waitFor(async () => (await streamCount(dlt)) === 1, { timeoutMs: 15_000, message: "the dead letter" });
        expect(
          Buffer.from(
            (await jsm.streams.getMessage(`T-${Buffer.from(dlt).toString("hex")}`, { seq: 1 })).data,
          ).toString(),
        ).toBe("garbage");
        expect(calls).toEqual([after.id]);
      } finally {
        await bus.close();
      }
    });
  });

  describe("dapr bus - JetStream: sidecar and throughput", () => {
    it("dapr bus - createEventBus with via: dapr carries a jetstream spec through the sidecar", async () => {
      const bus = await createEventBus(
        { jetstream: { url: nats.url } },
        {
          logger: silentLogger(),
          via: "dapr",
          dapr: { pubsubName: PUBSUB, httpPort: daprd.httpPort, grpcPort: daprd.grpcPort, prepareTopic },
        },
      );
      try {
        expect(bus.driver).toBe("dapr");
        const topic = uniq("t");
        const got = await collect(bus, topic);
        await bus.publish(topic, event(1));
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "delivery" });
      } finally {
        await bus.close();
      }
    });

    it("dapr bus - a subscription survives a sidecar restart (the durable consumer resumes)", async () => {
      const bus = await open();
      try {
        const topic = uniq("t");
        const got = await collect(bus, topic);
        await bus.publish(topic, event(1));
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "first delivery" });
        await daprd.restart();
        const after = event(2);
        await bus.publish(topic, after);
        await waitFor(() => got.some((e) => e.id === after.id), {
          timeoutMs: 20_000,
          intervalMs: 10,
          message: "delivery after the restart",
        });
      } finally {
        await bus.close();
      }
    }, 60_000);

    it("dapr bus - concurrent publishes go in bulk; figures through daprd and direct", async () => {
      const N = 400;
      const measure = async (bus: EventBus, label: string): Promise<string> => {
        const topic = uniq("perf");
        const got = new Set<string>();
        await bus.subscribe([topic], async (e) => void got.add(e.id), { group: uniq("g"), maxInFlight: 256 });
        const events = Array.from({ length: N }, (_, i) => event(i));
        let t = Date.now();
        for (const e of events.slice(0, N / 2)) await bus.publish(topic, e);
        const sequential = (N / 2 / (Date.now() - t)) * 1000;
        t = Date.now();
        await Promise.all(events.slice(N / 2).map((e) => bus.publish(topic, e)));
        const concurrent = (N / 2 / (Date.now() - t)) * 1000;
        await waitFor(() => got.size === N, { timeoutMs: 30_000, intervalMs: 10, message: `${N} deliveries` });
        const total = (N / (Date.now() - t0)) * 1000;
        return `${label}: publish sequential=${sequential.toFixed(0)}/s concurrent=${concurrent.toFixed(0)}/s, publish+deliver ${N} events=${total.toFixed(0)}/s`;
      };
      let t0 = Date.now();
      const viaDapr = await open();
      const bulk = vi.spyOn(HTTPClient.prototype, "executeWithApiVersion");
      let daprLine: string;
      try {
        t0 = Date.now();
        daprLine = await measure(viaDapr, "dapr(jetstream)");
        expect(bulk.mock.calls.some((c) => String(c[1]).startsWith("/publish/bulk/"))).toBe(true);
      } finally {
        bulk.mockRestore();
        await viaDapr.close();
      }
      const direct = await createJetStreamBus({ url: nats.url, stream: uniq("perf") }, { logger: silentLogger() });
      try {
        t0 = Date.now();
        reportFigures(`${daprLine}; ${await measure(direct, "direct jetstream")}`);
      } finally {
        await direct.close();
      }
    }, 120_000);
  });
});

// ---------------------------------------------------------------------------------------------
describe("dapr bus - Kafka", () => {
  let kafka: KafkaBroker;
  let daprd: Daprd;
  const open = (extra: Partial<CreateDaprBusOptions> = {}) => createDaprBus(daprOptions(daprd, extra));

  beforeAll(async () => {
    // Dapr's Kafka consumer hands a partition's messages to the app one at a time: partitions
    // are the parallelism. Topics are created by the broker on first use.
    kafka = await KafkaBroker.start({ properties: { "num.partitions": 4 } });
    daprd = await startDaprd({ kafka: { brokers: kafka.brokers.join(",") } });
  });

  afterAll(async () => {
    await daprd?.stop();
    await kafka?.stop();
  });

  busContract("dapr (Kafka)", () => open(), { timeoutMs: 30_000 });

  it("dapr bus - kafka: a new group starts at the oldest offset, so what is published before it joined still reaches it", async () => {
    const bus = await open();
    try {
      const topic = uniq("t");
      const before = event(1);
      await bus.publish(topic, before);
      const got = await collect(bus, topic);
      const after = event(2);
      await bus.publish(topic, after);
      await waitFor(() => got.length === 2, { timeoutMs: 30_000, intervalMs: 10, message: "both events" });
      expect(got.map((e) => e.id).sort()).toEqual([before.id, after.id].sort());
    } finally {
      await bus.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe("dapr bus - Redis streams", () => {
  let redis: RedisServer;
  let daprd: Daprd;
  const open = (extra: Partial<CreateDaprBusOptions> = {}) => createDaprBus(daprOptions(daprd, extra));
  /** Entries of `topic`'s stream delivered to the app's consumer group and not yet acked. */
  const pending = async (topic: string): Promise<number> => {
    const reply = await redisCommand(redis.port, ["XPENDING", topic, daprd.appId]);
    if (!Array.isArray(reply) || typeof reply[0] !== "number") throw new Error(`XPENDING: ${String(reply)}`);
    return reply[0];
  };

  beforeAll(async () => {
    redis = await RedisServer.start();
    daprd = await startDaprd({
      dapr: {
        type: "pubsub.redis",
        metadata: [
          { name: "redisHost", value: `127.0.0.1:${redis.port}` },
          // A closing subscription's last blocking XREADGROUP may take entries published just
          // after it; they come back once pending longer than processingTimeout (60 s by default).
          { name: "processingTimeout", value: "3s" },
          { name: "redeliverInterval", value: "1s" },
        ],
      },
    });
  });

  afterAll(async () => {
    await daprd?.stop();
    await redis?.stop();
  });

  busContract("dapr (Redis)", () => open());

  it("dapr bus - trap: a throwing handler is never answered SUCCESS: the entry stays pending in Redis until the handler succeeds", async () => {
    const bus = await open();
    try {
      const topic = uniq("t");
      const infos: DeliveryInfo[] = [];
      await bus.subscribe(
        [topic],
        async (_e, info) => {
          infos.push(info);
          if (info.deliveryCount === 1) throw new Error("sink is down");
        },
        { group: uniq("g"), backoffMs: 1_000 },
      );
      await bus.publish(topic, event(1));
      await waitFor(() => infos.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "first delivery" });
      // Between the failure and the retry the entry is neither acked nor lost.
      expect(await pending(topic)).toBe(1);
      await waitFor(() => infos.length === 2, { timeoutMs: 10_000, intervalMs: 10, message: "the retry" });
      await waitFor(async () => (await pending(topic)) === 0, { timeoutMs: 15_000, message: "XACK" });
      expect(infos.map((i) => i.deliveryCount)).toEqual([1, 2]);
    } finally {
      await bus.close();
    }
  });
});
