// The nats source against a real nats-server with JetStream: messages published with nats.js,
// consumed through the real EventSource runtime onto the in-memory bus. Core subjects (queue groups
// share messages) and JetStream durable consumers (ack after publish, redelivery, resume).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  connect,
  headers as natsHeaders,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from "nats";
import { silentLogger, type CloudEvent, type NatsSourceSpec } from "@ofevents/core";
import { createMemoryBus, type EventBus, type EventPublisher } from "@ofevents/eventbus";
import { decodeNatsMessage, defaultDurable, natsAdapter } from "../src/sources/nats.js";
import { NatsServer } from "../../../test/helpers/nats.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { FlakyPublisher, UUID, sourceHarness, type RunningSource } from "./support.js";

const NS = "nats-test";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "nats", event: EVENT });
const enc = new TextEncoder();

let server: NatsServer;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let bus: EventBus;

beforeAll(async () => {
  server = await NatsServer.start({ jetstream: true });
  nc = await connect({ servers: server.url });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  bus = createMemoryBus({ logger: silentLogger() });
});

afterAll(async () => {
  await bus?.close();
  await nc?.close();
  await server?.stop();
});

const collect = (name: string): Promise<CloudEvent[]> => harness.collect(bus, name);

const startSource = (
  name: string,
  spec: Partial<NatsSourceSpec> & Pick<NatsSourceSpec, "subject">,
  publisher: EventPublisher = bus,
): Promise<RunningSource> => harness.start(name, { url: server.url, ...spec }, publisher);

async function newStream(): Promise<{ stream: string; subject: string }> {
  const id = randomSuffix();
  const stream = `S${id}`;
  await jsm.streams.add({ name: stream, subjects: [`js.${id}.>`] });
  return { stream, subject: `js.${id}.orders` };
}

const { sourceOf } = harness;

describe("nats source - core NATS", () => {
  it("nats source - core subject: JSON, text and bytes messages become CloudEvents, headers become extensions", async () => {
    const subject = `core.${randomSuffix()}.orders`;
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const src = await startSource(name, { subject: `${subject.split(".").slice(0, 2).join(".")}.*` });
    const h = natsHeaders();
    h.set("tenant", "acme");
    h.set("Nats-Msg-Id", "skipped");
    nc.publish(subject, enc.encode(JSON.stringify({ orderId: 1 })), { headers: h });
    nc.publish(subject, enc.encode("hello, nats"));
    nc.publish(subject, new Uint8Array([0xff, 0x00, 0xfe]));
    await nc.flush();
    await waitFor(() => got.length >= 3, { message: "three events" });
    await src.stop();

    const byType = new Map(got.map((e) => [e.datacontenttype, e]));
    const common = { specversion: "1.0", source: sourceOf(name), type: "io.openfunction.events.nats", subject };
    expect(byType.get("application/json")).toMatchObject({ ...common, data: { orderId: 1 }, tenant: "acme" });
    expect(byType.get("application/json")).not.toHaveProperty("Nats-Msg-Id");
    expect(byType.get("text/plain")).toMatchObject({ ...common, data: "hello, nats" });
    expect(byType.get("application/octet-stream")).toMatchObject({
      ...common,
      data_base64: Buffer.from([0xff, 0x00, 0xfe]).toString("base64"),
    });
    for (const e of got) {
      expect(e.id).toMatch(UUID);
      expect(Date.now() - Date.parse(e.time!)).toBeLessThan(60_000);
    }
  });

  it("nats source - two sources in the same queue group share the messages, each delivered once", async () => {
    const subject = `core.${randomSuffix()}.orders`;
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    // Two replicas of one EventSource.
    const a = await startSource(name, { subject, queueGroup: "workers" });
    const b = await startSource(name, { subject, queueGroup: "workers" });
    for (let i = 0; i < 40; i++) nc.publish(subject, enc.encode(JSON.stringify({ i })));
    await nc.flush();
    await waitFor(() => got.length >= 40, { message: "40 events" });
    await Promise.all([a.stop(), b.stop()]);
    expect(got.map((e) => (e.data as { i: number }).i).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 40 }, (_, i) => i),
    );
    expect(a.published.length + b.published.length).toBe(40);
    expect(a.published.length).toBeGreaterThan(0);
    expect(b.published.length).toBeGreaterThan(0);
  });

  it("nats source - core NATS is at-most-once: a message the bus rejects is logged and lost", async () => {
    const subject = `core.${randomSuffix()}.orders`;
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const publisher = new FlakyPublisher(bus);
    publisher.failNext = 1;
    const src = await startSource(name, { subject }, publisher);
    nc.publish(subject, enc.encode("lost"));
    await nc.flush();
    await waitFor(() => src.failed.length === 1, { message: "one rejection" });
    nc.publish(subject, enc.encode("kept"));
    await waitFor(() => got.length >= 1, { message: "the next message" });
    await src.stop();
    expect(got.map((e) => e.data)).toEqual(["kept"]);
  });
});

describe("nats source - JetStream", () => {
  it("nats source - JetStream: ids are stream/sequence, time is the stored time; a rejected message is nak'd and redelivered, acked after publish", async () => {
    const { stream, subject } = await newStream();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const publisher = new FlakyPublisher(bus);
    publisher.failNext = 3;
    const src = await startSource(name, { subject, jetstream: { stream, deliverPolicy: "all" } }, publisher);
    const durable = defaultDurable({ namespace: NS, eventSource: name, eventName: EVENT });
    await js.publish(subject, enc.encode(JSON.stringify({ orderId: 7 })));

    await waitFor(() => src.failed.length >= 1, { message: "a rejection" });
    const during = await jsm.consumers.info(stream, durable);
    expect(during.ack_floor.stream_seq).toBe(0);
    expect(got).toEqual([]);

    await waitFor(() => got.length >= 1, { message: "the event on the bus" });
    await waitFor(async () => (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq === 1, {
      message: "acked",
    });
    await src.stop();
    const stored = await jsm.streams.getMessage(stream, { seq: 1 });
    expect(got).toEqual([
      {
        specversion: "1.0",
        id: `${stream}/1`,
        source: sourceOf(name),
        type: "io.openfunction.events.nats",
        subject,
        time: expect.any(String),
        datacontenttype: "application/json",
        data: { orderId: 7 },
      },
    ]);
    // The time the stream stored the message (ms precision), not the time of the (re)delivery.
    expect(Math.abs(Date.parse(got[0]!.time!) - stored.time.getTime())).toBeLessThanOrEqual(1);
    expect(src.failed).toEqual(Array(3).fill(`${stream}/1`));
    const info = await jsm.consumers.info(stream, durable);
    expect(info.delivered.consumer_seq).toBe(4); // one delivery and three redeliveries
    expect(info.num_ack_pending).toBe(0);
  });

  it("nats source - JetStream durable: a restart resumes after the acked messages and gets the one in flight again", async () => {
    const { stream, subject } = await newStream();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const publisher = new FlakyPublisher(bus);
    const spec = { subject, jetstream: { stream, durable: `d-${randomSuffix()}`, deliverPolicy: "all" as const } };
    const first = await startSource(name, spec, publisher);
    await js.publish(subject, enc.encode("m1"));
    await js.publish(subject, enc.encode("m2"));
    await waitFor(() => got.length >= 2, { message: "m1, m2" });

    publisher.down = true;
    await js.publish(subject, enc.encode("m3"));
    await waitFor(() => first.failed.includes(`${stream}/3`), { message: "m3 rejected" });
    await first.stop();
    await js.publish(subject, enc.encode("m4")); // while the source is down

    publisher.down = false;
    const second = await startSource(name, spec, publisher);
    await waitFor(() => got.length >= 4, { message: "m3 and m4 after the restart", timeoutMs: 15_000 });
    await second.stop();
    // m1 and m2 were acked: not again. m3 was nak'd with a backoff delay, so m4 may overtake it.
    expect(got.map((e) => e.data)).toHaveLength(4);
    expect(got.slice(0, 2).map((e) => e.data)).toEqual(["m1", "m2"]);
    expect(got.map((e) => e.id).sort()).toEqual([1, 2, 3, 4].map((s) => `${stream}/${s}`));
  });

  it("nats source - JetStream: a dispatch slower than ackWait keeps the message in progress (no redelivery)", async () => {
    const { stream, subject } = await newStream();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const slow = new FlakyPublisher(bus, { delayMs: 2_500 });
    const src = await startSource(name, { subject, jetstream: { stream, ackWait: "1s", deliverPolicy: "all" } }, slow);
    await js.publish(subject, enc.encode("slow"));
    await waitFor(() => got.length >= 1, { message: "the event", timeoutMs: 10_000 });
    const durable = defaultDurable({ namespace: NS, eventSource: name, eventName: EVENT });
    await waitFor(async () => (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq === 1, {
      message: "acked",
    });
    await src.stop();
    expect(src.published).toEqual([`${stream}/1`]);
    expect((await jsm.consumers.info(stream, durable)).delivered.consumer_seq).toBe(1); // never redelivered
  });

  it("nats source - CloudEvents pass through: binary mode (ce- headers), structured mode, and a malformed one is terminated", async () => {
    const { stream, subject } = await newStream();
    const name = `es-${randomSuffix()}`;
    const got = await collect(name);
    const src = await startSource(name, { subject, jetstream: { stream, deliverPolicy: "all" } });
    const binary = natsHeaders();
    for (const [k, v] of Object.entries({
      "ce-specversion": "1.0",
      "ce-id": "ce-1",
      "ce-source": "/producer",
      "ce-type": "com.example.order.created",
      "ce-time": "2024-01-02T03:04:05.000Z",
      "ce-tenant": "acme",
      "content-type": "application/json",
    })) {
      binary.set(k, v);
    }
    await js.publish(subject, enc.encode(JSON.stringify({ n: 1 })), { headers: binary });
    const structured = natsHeaders();
    structured.set("content-type", "application/cloudevents+json; charset=utf-8");
    await js.publish(subject, enc.encode("{broken"), { headers: structured });
    const ce2 = { specversion: "1.0", id: "ce-2", source: "/producer", type: "com.example.order.paid", data: { n: 2 } };
    await js.publish(subject, enc.encode(JSON.stringify(ce2)), { headers: structured });
    await waitFor(() => got.length >= 2, { message: "two events" });
    const durable = defaultDurable({ namespace: NS, eventSource: name, eventName: EVENT });
    await waitFor(async () => (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq === 3, {
      message: "all three settled",
    });
    await src.stop();
    expect(got).toEqual([
      {
        specversion: "1.0",
        id: "ce-1",
        source: "/producer",
        type: "com.example.order.created",
        time: "2024-01-02T03:04:05.000Z",
        tenant: "acme",
        datacontenttype: "application/json",
        data: { n: 1 },
      },
      ce2,
    ]);
  });
});

describe("nats source - validate", () => {
  const base: NatsSourceSpec = { url: "nats://127.0.0.1:4222", subject: "orders.>" };
  const ref = { name: "nats", key: "k" };
  it.each<{ name: string; spec: Partial<NatsSourceSpec>; expected: string[] }>([
    { name: "a valid core spec", spec: {}, expected: [] },
    { name: "several servers, with and without scheme", spec: { url: "nats://a:4222, b:4223,tls://c" }, expected: [] },
    { name: "a wrong scheme", spec: { url: "http://a:4222" }, expected: ["url"] },
    { name: "an empty token in the subject", spec: { subject: "orders..created" }, expected: ["subject"] },
    { name: "> not last", spec: { subject: "orders.>.created" }, expected: ["subject"] },
    { name: "a partial wildcard", spec: { subject: "orders.cre*" }, expected: ["subject"] },
    {
      name: "both token and credentials",
      spec: { tokenSecret: ref, credentialsSecret: ref },
      expected: ["tokenSecret"],
    },
    {
      name: "a valid JetStream spec",
      spec: { jetstream: { stream: "ORDERS", durable: "orders-src", deliverPolicy: "all", ackWait: "30s" } },
      expected: [],
    },
    {
      name: "a queue group with JetStream",
      spec: { queueGroup: "q", jetstream: { stream: "ORDERS" } },
      expected: ["queueGroup"],
    },
    { name: "a stream name with a dot", spec: { jetstream: { stream: "ORD.ERS" } }, expected: ["jetstream.stream"] },
    {
      name: "a durable with a wildcard",
      spec: { jetstream: { stream: "ORDERS", durable: "a*" } },
      expected: ["jetstream.durable"],
    },
    {
      name: "an ackWait below 1s",
      spec: { jetstream: { stream: "ORDERS", ackWait: "200ms" } },
      expected: ["jetstream.ackWait"],
    },
  ])("nats source - validate: $name", ({ spec, expected }) => {
    expect(natsAdapter.validate({ ...base, ...spec }).map((i) => i.path)).toEqual(expected);
  });

  it("nats source - a missing stream fails the start with the server's reason", async () => {
    await expect(
      startSource(`es-${randomSuffix()}`, { subject: "x.y", jetstream: { stream: `NOPE${randomSuffix()}` } }),
    ).rejects.toThrow(/stream not found/);
  });

  it("nats source - decodeNatsMessage: a header-less JSON CloudEvent passes through (NATS binding 1.0.0)", () => {
    const ce = { specversion: "1.0", id: "x", source: "/s", type: "t", data: 1 };
    expect(decodeNatsMessage({ subject: "a", data: enc.encode(JSON.stringify(ce)) })).toEqual([{ event: ce }]);
    expect(decodeNatsMessage({ subject: "a", data: new Uint8Array() }, { id: "S/1" })).toEqual([
      { id: "S/1", time: undefined, subject: "a" },
    ]);
  });
});
