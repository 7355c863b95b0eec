// The kafka source against a real Kafka broker (KRaft, one node): records produced with kafkajs,
// consumed through the real EventSource runtime onto the in-memory bus. Offsets are committed only
// after the bus took the event; a record the bus rejects is retried, never skipped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kafka as KafkaClient, Partitioners, logLevel, type Admin, type Message, type Producer } from "kafkajs";
import { CloudEvent as SdkCloudEvent, Kafka as CloudEventsKafka } from "cloudevents";
import {
  createInstrumentation,
  createSecretResolver,
  silentLogger,
  type CloudEvent,
  type KafkaSourceSpec,
} from "@ofevents/core";
import { createMemoryBus, type EventBus, type EventPublisher } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type SourceEvents } from "../src/index.js";
import { decodeRecord, kafkaAdapter, parseBrokers } from "../src/sources/kafka.js";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { FlakyPublisher, sourceHarness, type RunningSource } from "./support.js";

const NS = "kafka-test";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "kafka", event: EVENT });

let broker: KafkaBroker;
let client: KafkaClient;
let producer: Producer;
let admin: Admin;
let bus: EventBus;

beforeAll(async () => {
  broker = await KafkaBroker.start();
  client = new KafkaClient({ clientId: "kafka-source-test", brokers: broker.brokers, logLevel: logLevel.NOTHING });
  producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  admin = client.admin();
  await Promise.all([producer.connect(), admin.connect()]);
  bus = createMemoryBus({ logger: silentLogger() });
});

afterAll(async () => {
  await bus?.close();
  await producer?.disconnect();
  await admin?.disconnect();
  await broker?.stop();
});

async function newTopic(partitions = 1): Promise<string> {
  const topic = `src-${randomSuffix()}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
  return topic;
}

const collect = (name: string): Promise<CloudEvent[]> => harness.collect(bus, name);

const startSource = (
  name: string,
  spec: Partial<KafkaSourceSpec>,
  publisher: EventPublisher = bus,
): Promise<RunningSource> =>
  harness.start(name, { brokers: broker.brokers.join(","), authRequired: false, ...spec }, publisher);

/** The committed offset of the group on partition 0 (-1: none). */
async function committed(group: string, topic: string, partition = 0): Promise<number> {
  const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  return Number(t?.partitions.find((p) => p.partition === partition)?.offset ?? -1);
}

const groupOf = (name: string): string => `ofevents-${NS}-${name}-${EVENT}`;
const { sourceOf } = harness;

describe("kafka source - records to CloudEvents", () => {
  it("kafka source - JSON, text and bytes records become CloudEvents with the record's position, time and headers", async () => {
    const topic = await newTopic();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const src = await startSource(name, { topic, startFrom: "oldest" });
    const ts = Date.UTC(2024, 0, 2, 3, 4, 5, 678);
    await producer.send({
      topic,
      messages: [
        {
          key: "order-1",
          value: JSON.stringify({ orderId: 1, total: 9.5 }),
          timestamp: String(ts),
          headers: {
            tenant: "acme",
            region: Buffer.from("eu"),
            "X-Trace-Id": "skipped",
            type: "skipped",
            toolongforanextension1: "skipped",
          },
        },
        { value: "hello, kafka", timestamp: String(ts + 1) },
        { value: Buffer.from([0xff, 0x00, 0xfe, 0x80]), timestamp: String(ts + 2) },
      ],
    });
    await waitFor(() => got.length >= 3, { message: "three events on the bus" });
    await src.stop();

    const common = { specversion: "1.0", source: sourceOf(name), type: "io.openfunction.events.kafka", subject: topic };
    expect(got).toEqual([
      {
        ...common,
        id: `${topic}/0/0`,
        time: new Date(ts).toISOString(),
        datacontenttype: "application/json",
        data: { orderId: 1, total: 9.5 },
        tenant: "acme",
        region: "eu",
        partitionkey: "order-1",
      },
      {
        ...common,
        id: `${topic}/0/1`,
        time: new Date(ts + 1).toISOString(),
        datacontenttype: "text/plain",
        data: "hello, kafka",
      },
      {
        ...common,
        id: `${topic}/0/2`,
        time: new Date(ts + 2).toISOString(),
        datacontenttype: "application/octet-stream",
        data_base64: Buffer.from([0xff, 0x00, 0xfe, 0x80]).toString("base64"),
      },
    ]);
    await waitFor(async () => (await committed(groupOf(name), topic)) === 3, { message: "offset 3 committed" });
  });

  it("kafka source - CloudEvent records (structured and binary mode) pass through; a malformed one is skipped", async () => {
    const topic = await newTopic();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const src = await startSource(name, { topic, startFrom: "oldest" });
    const structured = CloudEventsKafka.structured(
      new SdkCloudEvent({
        id: "ce-1",
        source: "/producer",
        type: "com.example.order.created",
        subject: "order-1",
        time: "2024-01-02T03:04:05.000Z",
        datacontenttype: "application/json",
        data: { n: 1 },
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      }),
    );
    const binary = CloudEventsKafka.binary(
      new SdkCloudEvent({
        id: "ce-2",
        source: "/producer",
        type: "com.example.order.paid",
        time: "2024-01-02T03:04:06.000Z",
        datacontenttype: "application/json",
        data: { n: 2 },
        tenant: "acme",
      }),
    );
    const definedHeaders = (h: Record<string, unknown>): Record<string, string> =>
      Object.fromEntries(Object.entries(h).filter((e): e is [string, string] => typeof e[1] === "string"));
    const messages: Message[] = [
      { value: String(structured.value), headers: definedHeaders(structured.headers) },
      { value: "{not json", headers: { "content-type": "application/cloudevents+json" } },
      { value: JSON.stringify(binary.value), headers: definedHeaders(binary.headers) },
    ];
    await producer.send({ topic, messages });
    await waitFor(() => got.length >= 2, { message: "two events on the bus" });
    await waitFor(async () => (await committed(groupOf(name), topic)) === 3, {
      message: "offset 3 committed (the bad record too)",
    });
    await src.stop();

    expect(got).toEqual([
      {
        specversion: "1.0",
        id: "ce-1",
        source: "/producer",
        type: "com.example.order.created",
        subject: "order-1",
        time: "2024-01-02T03:04:05.000Z",
        datacontenttype: "application/json",
        data: { n: 1 },
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      },
      {
        specversion: "1.0",
        id: "ce-2",
        source: "/producer",
        type: "com.example.order.paid",
        time: "2024-01-02T03:04:06.000Z",
        datacontenttype: "application/json",
        data: { n: 2 },
        tenant: "acme",
      },
    ]);
  });

  it("kafka source - partitions are consumed concurrently, each one in offset order", async () => {
    const topic = await newTopic(3);
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const src = await startSource(name, { topic, startFrom: "oldest" });
    await producer.send({
      topic,
      messages: Array.from({ length: 60 }, (_, i) => ({ key: `k${i % 7}`, value: JSON.stringify({ i }) })),
    });
    await waitFor(() => got.length >= 60, { message: "60 events" });
    await src.stop();
    expect(new Set(got.map((e) => e.id)).size).toBe(60);
    const byPartition = new Map<string, number[]>();
    for (const e of got) {
      const [, partition, offset] = e.id.split("/");
      byPartition.set(partition!, [...(byPartition.get(partition!) ?? []), Number(offset)]);
    }
    expect(byPartition.size).toBeGreaterThan(1);
    for (const offsets of byPartition.values()) expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
  });
});

describe("kafka source - commits only after publish", () => {
  it("kafka source - a record the bus rejects is retried and not skipped; its offset is committed only after publish", async () => {
    const topic = await newTopic();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const publisher = new FlakyPublisher(bus);
    publisher.failNext = 4;
    const src = await startSource(name, { topic, startFrom: "oldest" }, publisher);
    await producer.send({ topic, messages: [{ value: "first" }, { value: "second" }] });

    await waitFor(() => src.failed.length >= 2, { message: "two rejections" });
    // Rejected so far: nothing committed, nothing published.
    expect(await committed(groupOf(name), topic)).toBe(-1);
    expect(got).toEqual([]);

    await waitFor(() => got.length >= 2, { message: "both records published" });
    await waitFor(async () => (await committed(groupOf(name), topic)) === 2, { message: "offset 2 committed" });
    await src.stop();
    expect(got.map((e) => [e.id, e.data])).toEqual([
      [`${topic}/0/0`, "first"],
      [`${topic}/0/1`, "second"],
    ]);
    // Every rejection was the first record, retried in place: the second waited behind it.
    expect(src.failed).toEqual(Array(4).fill(`${topic}/0/0`));
    expect(publisher.rejected).toBe(4);
  });

  it("kafka source - stopped with a record in flight, a restart with the same group delivers it again and not the acked ones", async () => {
    const topic = await newTopic();
    const name = `es-${randomSuffix()}`;
    const group = `grp-${randomSuffix()}`;
    const got = await collect(name);
    const publisher = new FlakyPublisher(bus);
    const first = await startSource(name, { topic, consumerGroup: group, startFrom: "oldest" }, publisher);
    await producer.send({ topic, messages: [{ value: "r0" }, { value: "r1" }] });
    await waitFor(() => got.length >= 2, { message: "r0 and r1 published" });
    await waitFor(async () => (await committed(group, topic)) === 2, { message: "offset 2 committed" });

    publisher.down = true;
    await producer.send({ topic, messages: [{ value: "r2" }] });
    await waitFor(() => first.failed.includes(`${topic}/0/2`), { message: "r2 rejected" });
    await first.stop();
    expect(await committed(group, topic)).toBe(2);

    publisher.down = false;
    const second = await startSource(name, { topic, consumerGroup: group, startFrom: "oldest" }, publisher);
    await waitFor(() => got.length >= 3, { message: "r2 delivered again" });
    await producer.send({ topic, messages: [{ value: "r3" }] });
    await waitFor(() => got.length >= 4, { message: "r3 delivered" });
    await waitFor(async () => (await committed(group, topic)) === 4, { message: "offset 4 committed" });
    await second.stop();
    expect(got.map((e) => e.data)).toEqual(["r0", "r1", "r2", "r3"]);
    expect(got.map((e) => e.id)).toEqual([0, 1, 2, 3].map((o) => `${topic}/0/${o}`));
  });
});

describe("kafka source - start position", () => {
  it("kafka source - a new group with startFrom oldest reads what the topic holds; with newest only what comes after start", async () => {
    const topic = await newTopic();
    await producer.send({ topic, messages: [{ value: "before" }] });
    const oldestName = `es-${randomSuffix()}`;
    const newestName = `es-${randomSuffix()}`;
    const oldest = await collect(oldestName);
    const newest = await collect(newestName);

    const a = await startSource(oldestName, { topic, startFrom: "oldest" });
    const b = await startSource(newestName, { topic }); // newest is the default
    // The new group's start position is committed at start: stopped before any record, it is not
    // lost, so what is produced while the source is down is still delivered after a restart.
    expect(await committed(groupOf(newestName), topic)).toBe(1);
    await b.stop();
    await producer.send({ topic, messages: [{ value: "while-down" }] });
    const b2 = await startSource(newestName, { topic, startFrom: "oldest" }); // a known group ignores startFrom
    await producer.send({ topic, messages: [{ value: "after" }] });

    await waitFor(() => oldest.length >= 3 && newest.length >= 2, { message: "events of both sources" });
    await Promise.all([a.stop(), b2.stop()]);
    expect(oldest.map((e) => e.data)).toEqual(["before", "while-down", "after"]);
    expect(newest.map((e) => e.data)).toEqual(["while-down", "after"]);
  });
});

describe("kafka source - validate", () => {
  const base: KafkaSourceSpec = { brokers: "127.0.0.1:9092", authRequired: false, topic: "orders" };
  const ref = { name: "kafka", key: "k" };
  it.each<{ name: string; spec: Partial<KafkaSourceSpec>; expected: string[] }>([
    { name: "a valid spec", spec: {}, expected: [] },
    {
      name: "several brokers with spaces",
      spec: { brokers: "a.example:9092, b.example:9093,[::1]:9094" },
      expected: [],
    },
    { name: "a broker without port", spec: { brokers: "kafka:9092,kafka2" }, expected: ["brokers"] },
    { name: "a port out of range", spec: { brokers: "kafka:99999" }, expected: ["brokers"] },
    { name: "no broker", spec: { brokers: " , " }, expected: ["brokers"] },
    { name: "no topic", spec: { topic: undefined }, expected: ["topic"] },
    { name: "an invalid topic", spec: { topic: "a topic" }, expected: ["topic"] },
    { name: "authRequired without credentials", spec: { authRequired: true }, expected: ["authRequired"] },
    {
      name: "authRequired with a username only",
      spec: { authRequired: true, saslUsername: "u" },
      expected: ["authRequired"],
    },
    {
      name: "authRequired with inline credentials",
      spec: { authRequired: true, saslUsername: "u", saslPassword: "p" },
      expected: [],
    },
    {
      name: "authRequired with sasl by reference",
      spec: { authRequired: true, sasl: { mechanism: "scram-sha-512", usernameSecret: ref, passwordSecret: ref } },
      expected: [],
    },
    {
      name: "both kinds of credentials",
      spec: {
        authRequired: true,
        saslUsername: "u",
        saslPassword: "p",
        sasl: { mechanism: "plain", usernameSecret: ref, passwordSecret: ref },
      },
      expected: ["sasl"],
    },
    {
      name: "sasl without authRequired",
      spec: { sasl: { mechanism: "plain", usernameSecret: ref, passwordSecret: ref } },
      expected: ["sasl"],
    },
    { name: "maxMessageBytes 0", spec: { maxMessageBytes: 0 }, expected: ["maxMessageBytes"] },
    { name: "an empty consumerGroup", spec: { consumerGroup: "" }, expected: ["consumerGroup"] },
    { name: "a certificate without key", spec: { tls: { certSecret: ref } }, expected: ["tls"] },
  ])("kafka source - validate: $name", ({ spec, expected }) => {
    const issues = kafkaAdapter.validate({ ...base, ...spec } as KafkaSourceSpec);
    expect(issues.map((i) => i.path)).toEqual(expected);
  });

  it("kafka source - validate: the runtime refuses to start an invalid spec and names the field", async () => {
    const instrumentation = createInstrumentation<SourceEvents>();
    const errors: unknown[] = [];
    instrumentation.on("start_failed", (e) => errors.push(e.error));
    const es = harness.manifest("bad", { brokers: "127.0.0.1", authRequired: false });
    // A configuration error stops the start (it is not retried), naming the event and the fields.
    const refused = await startEventSource(es, {
      logger: silentLogger(),
      bus,
      secrets: createSecretResolver([], {}),
      webhooks: createWebhookServers({ logger: silentLogger() }),
      instrumentation,
    }).catch((e: unknown) => e);
    expect(String(refused)).toMatch(/cannot start: event orders \(kafka\): brokers: .*topic: a topic is required/);
    expect(String(errors[0])).toMatch(/brokers: .*topic: a topic is required/);
  });

  it("kafka source - parseBrokers keeps valid entries and reports the rest", () => {
    expect(parseBrokers("a:1, b:2 ,c")).toEqual({ brokers: ["a:1", "b:2"], invalid: ["c"] });
  });

  it("kafka source - decodeRecord: a JSON record that is a CloudEvent passes through; a null value has no data", () => {
    const ce = { specversion: "1.0", id: "x", source: "/s", type: "t" };
    const base = { key: null, headers: {}, timestamp: "1700000000000", offset: "7" };
    expect(decodeRecord("t1", 2, { ...base, value: Buffer.from(JSON.stringify(ce)) })).toEqual([{ event: ce }]);
    expect(decodeRecord("t1", 2, { ...base, value: null })).toEqual([
      { id: "t1/2/7", subject: "t1", time: new Date(1700000000000).toISOString() },
    ]);
  });
});
