/**
 * The JetStream driver against a real nats-server with JetStream (one per file). The server is
 * restarted by one test and stopped by the last one, so the describe blocks run in order.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { AckPolicy, connect } from "nats";
import {
  BusError,
  ErrorCode,
  OfEventsError,
  createLogger,
  newEvent,
  silentLogger,
  type CloudEvent,
} from "@ofevents/core";
import { NatsServer } from "../../../test/helpers/nats.js";
import { reportFigures } from "../../../test/helpers/report.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { createJetStreamBus, jetStreamNames, natsToken, type JetStreamBusTuning } from "../src/drivers/jetstream.js";
import type { EventBus } from "../src/index.js";
import { busContract, uniq } from "./contract.js";

let server: NatsServer;

beforeAll(async () => {
  server = await NatsServer.start({ jetstream: true });
});

afterAll(async () => {
  await server?.stop();
});

/** Short waits so that tests about failures do not take production time. */
const tuning: JetStreamBusTuning = { reconnectTimeWaitMs: 100, publishTimeoutMs: 2_000, drainTimeoutMs: 2_000 };

function event(n: number): CloudEvent {
  return newEvent({ id: uniq(`ev-${n}`), source: "/jetstream/test", type: "io.ofevents.test", data: { n } });
}

/** Publishes, retrying while the bus says the failure is retriable (what a caller does). */
async function publishRetrying(bus: EventBus, topic: string, e: CloudEvent, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (let failures = 0; ; failures++) {
    try {
      await bus.publish(topic, e);
      return failures;
    } catch (err) {
      if (!(err instanceof BusError) || !err.retriable || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

busContract("jetstream", () => createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning), {
  publishRaw: async (_bus, topic, bytes) => {
    const nc = await connect({ servers: server.url });
    try {
      await nc.jetstream().publish(jetStreamNames("ofevents", topic).subject, bytes);
    } finally {
      await nc.close();
    }
  },
});

describe("jetstream bus - names", () => {
  it.each([
    { name: "a bus topic is kept", input: "default-orders-created", expected: "default-orders-created" },
    { name: "a dot is escaped", input: "orders.created", expected: "orders_2Ecreated" },
    { name: "an underscore is doubled", input: "a_b", expected: "a__b" },
    { name: "an escape-looking name stays apart", input: "a_2Eb", expected: "a__2Eb" },
    { name: "wildcards and spaces are escaped", input: "a*b >c", expected: "a_2Ab_20_3Ec" },
    { name: "UTF-8 bytes are escaped one by one", input: "héllo", expected: "h_C3_A9llo" },
  ])("jetstream bus - token: $name", ({ input, expected }) => {
    expect(natsToken(input)).toBe(expected);
  });

  it("jetstream bus - names: the subject is the topic (Dapr's); stream and consumer are valid tokens, distinct and bounded", () => {
    const long = "x".repeat(400);
    const topics = ["a.b", "a_2Eb", "a_b", "a__b", "A.B", "a/b:c", `${long}1`, `${long}2`, "ünï/cødé\\"];
    const names = topics.map((t) => jetStreamNames("ofevents", t, `group.${t}`));
    for (const [i, n] of names.entries()) {
      expect(n.stream).toMatch(/^[A-Za-z0-9_-]{1,255}$/);
      expect(n.consumer).toMatch(/^[A-Za-z0-9_-]{1,255}$/);
      expect(n.subject).toBe(topics[i]);
      expect(n.stream.length).toBeLessThanOrEqual(241);
    }
    expect(new Set(names.map((n) => n.stream)).size).toBe(topics.length);
    expect(jetStreamNames("ofevents", "default-orders-created", "default-trigger")).toEqual({
      stream: "ofevents-default-orders-created",
      subject: "default-orders-created",
      consumer: "default-trigger",
    });
  });

  it.each([
    { name: "empty", topic: "" },
    { name: "a space", topic: "a b" },
    { name: "a tab", topic: "a\tb" },
    { name: "the * wildcard", topic: "a.*" },
    { name: "the > wildcard", topic: "a.>" },
    { name: "a leading dot", topic: ".a" },
    { name: "a trailing dot", topic: "a." },
    { name: "a doubled dot", topic: "a..b" },
    { name: "a leading $", topic: "$JS.API" },
  ])("jetstream bus - names: a topic with $name is not a subject: CONFIG error", ({ topic }) => {
    let err: unknown;
    try {
      jetStreamNames("ofevents", topic);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as OfEventsError).code).toBe(ErrorCode.Config);
    expect((err as Error).message).toContain("cannot be a NATS subject");
  });
});

describe("jetstream bus - driver", () => {
  it("jetstream bus - a topic that is not a NATS subject is refused on publish and subscribe (CONFIG, not retriable)", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      for (const topic of ["with space", "st*r", "a.>", "a..b"]) {
        const errors = await Promise.all([
          bus.publish(topic, event(1)).then(
            () => undefined,
            (e: unknown) => e,
          ),
          bus
            .subscribe([topic], async () => {}, { group: uniq("g") })
            .then(
              () => undefined,
              (e: unknown) => e,
            ),
        ]);
        for (const err of errors) {
          expect(err).toBeInstanceOf(BusError);
          expect((err as BusError).code).toBe(ErrorCode.Config);
          expect((err as BusError).retriable).toBe(false);
        }
      }
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - upgrade: a stream of the previous naming gets the topic's subject; its events and groups stay", async () => {
    const topic = uniq("up");
    const group = uniq("g");
    const names = jetStreamNames("ofevents", topic, group);
    const legacy = `${natsToken("ofevents")}.${natsToken(topic)}`;
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: names.stream, subjects: [legacy] });
      const old = event(0);
      await nc.jetstream().publish(legacy, new TextEncoder().encode(JSON.stringify(old)));
      // The group existed before the upgrade, at the start of the stream.
      await jsm.consumers.add(names.stream, { durable_name: names.consumer!, ack_policy: AckPolicy.Explicit });
      const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
      try {
        const got: string[] = [];
        await bus.subscribe([topic], async (e) => void got.push(e.id), { group });
        const fresh = event(1);
        await bus.publish(topic, fresh);
        await waitFor(() => got.length === 2, {
          timeoutMs: 10_000,
          intervalMs: 10,
          message: "the old and the new event",
        });
        expect(got).toEqual([old.id, fresh.id]);
        const info = await jsm.streams.info(names.stream);
        expect(info.config.subjects).toEqual([legacy, topic]);
      } finally {
        await bus.close();
      }
    } finally {
      await nc.close();
    }
  });

  it("jetstream bus - a stream of another name that already captures the topic's subject is used, filtered to the topic", async () => {
    const topic = uniq("cap");
    const group = uniq("g");
    const other = `handmade-${randomUUID().slice(0, 8)}`;
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: other, subjects: [topic, `${topic}-other`] });
      const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
      try {
        const got: string[] = [];
        await bus.subscribe([topic], async (e) => void got.push(e.id), { group });
        await nc.jetstream().publish(`${topic}-other`, new TextEncoder().encode(JSON.stringify(event(9))));
        const e = event(1);
        await bus.publish(topic, e);
        await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "the topic's event" });
        await new Promise((r) => setTimeout(r, 300));
        expect(got).toEqual([e.id]);
        expect((await jsm.streams.info(other)).state.messages).toBe(2);
        await expect(jsm.streams.info(jetStreamNames("ofevents", topic).stream)).rejects.toThrow();
      } finally {
        await bus.close();
      }
    } finally {
      await nc.close();
    }
  });

  it("jetstream bus - topics with dots and odd characters each get their own stream, on subject = topic", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      const s = uniq("");
      const topics = [`a.b${s}`, `a_2Eb${s}`, `a/b:c${s}`, `ünïcødé${s}`, `${"y".repeat(300)}${s}`];
      const got = new Map<string, string[]>();
      for (const t of topics) {
        got.set(t, []);
        await bus.subscribe([t], async (e, info) => void got.get(info.topic)!.push(e.id), { group: `g.${s} x` });
      }
      const sent = new Map(topics.map((t, i) => [t, event(i)]));
      for (const [t, e] of sent) await bus.publish(t, e);
      await waitFor(() => [...got.values()].every((ids) => ids.length === 1), {
        timeoutMs: 10_000,
        intervalMs: 10,
        message: "one delivery per topic",
      });
      for (const [t, e] of sent) expect(got.get(t)).toEqual([e.id]);

      const nc = await connect({ servers: server.url });
      try {
        const jsm = await nc.jetstreamManager();
        for (const t of topics) {
          const { stream, subject, consumer } = jetStreamNames("ofevents", t, `g.${s} x`);
          const info = await jsm.streams.info(stream);
          expect(info.config.subjects).toEqual([subject]);
          expect(info.state.messages).toBe(1);
          const ci = await jsm.consumers.info(stream, consumer!);
          expect(ci.config.durable_name).toBe(consumer);
        }
      } finally {
        await nc.close();
      }
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - a retried publish is stored once; the same event on another topic is not a duplicate", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      const t1 = uniq("t");
      const t2 = uniq("t");
      const seen: string[] = [];
      await bus.subscribe([t1, t2], async (e, info) => void seen.push(`${info.topic}:${e.id}`), { group: uniq("g") });
      const e = event(1);
      await bus.publish(t1, e);
      await bus.publish(t1, e);
      await bus.publish(t2, e);
      await waitFor(() => seen.length >= 2, { timeoutMs: 10_000, intervalMs: 10, message: "deliveries" });
      await new Promise((r) => setTimeout(r, 300));
      expect(seen.sort()).toEqual([`${t1}:${e.id}`, `${t2}:${e.id}`].sort());
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - a topic's stream deleted after a publish is created again by the next publish, which is stored", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    const nc = await connect({ servers: server.url });
    try {
      const topic = uniq("t");
      const { stream } = jetStreamNames("ofevents", topic);
      const jsm = await nc.jetstreamManager();
      await bus.publish(topic, event(1));
      expect((await jsm.streams.info(stream)).state.messages).toBe(1);
      await jsm.streams.delete(stream);
      // The bus remembers the stream from the first publish: this one finds it gone and makes it again.
      const e = event(2);
      await bus.publish(topic, e);
      const info = await jsm.streams.info(stream);
      expect(info.state.messages).toBe(1);
      const stored = await jsm.streams.getMessage(stream, { seq: info.state.last_seq });
      expect((JSON.parse(new TextDecoder().decode(stored.data)) as CloudEvent).id).toBe(e.id);
    } finally {
      await nc.close();
      await bus.close();
    }
  });

  it("jetstream bus - two groups dead-lettering one event to one topic both arrive there", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      const topic = uniq("t");
      const dead: Array<Record<string, unknown>> = [];
      await bus.subscribe([`${topic}.deadletter`], async (e) => void dead.push(e as Record<string, unknown>), {
        group: uniq("g"),
      });
      for (const group of [uniq("g1"), uniq("g2")]) {
        await bus.subscribe(
          [topic],
          async () => {
            throw new Error(`${group} failed`);
          },
          { group, maxDeliver: 2, backoffMs: 20 },
        );
      }
      const e = event(1);
      await bus.publish(topic, e);
      await waitFor(() => dead.length === 2, { timeoutMs: 10_000, intervalMs: 10, message: "two dead letters" });
      expect(dead.map((d) => d["id"])).toEqual([e.id, e.id]);
      expect(new Set(dead.map((d) => d["oferrorreason"])).size).toBe(2);
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - credentialsSecret without a secret resolver is a CONFIG error", async () => {
    const err = await createJetStreamBus(
      { url: server.url, credentialsSecret: { name: "nats", key: "user.creds" } },
      { logger: silentLogger() },
      tuning,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as OfEventsError).code).toBe(ErrorCode.Config);
  });

  it("jetstream bus - a subscription to several topics shares one maxInFlight", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      const topics = [uniq("t"), uniq("t"), uniq("t")];
      let inFlight = 0;
      let peak = 0;
      const seen = new Set<string>();
      await bus.subscribe(
        topics,
        async (e) => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          await new Promise((r) => setTimeout(r, 30));
          inFlight--;
          seen.add(e.id);
        },
        { group: uniq("g"), maxInFlight: 2 },
      );
      const sent: string[] = [];
      for (let i = 0; i < 10; i++) {
        for (const t of topics) {
          const e = event(i);
          sent.push(e.id);
          await bus.publish(t, e);
        }
      }
      await waitFor(() => seen.size === sent.length, { timeoutMs: 15_000, intervalMs: 10, message: "30 handled" });
      expect(peak).toBeLessThanOrEqual(2);
      expect(peak).toBe(2);
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - a handler slower than ackWait is kept alive, not redelivered", async () => {
    const bus = await createJetStreamBus({ url: server.url, ackWait: "1s" }, { logger: silentLogger() }, tuning);
    try {
      const topic = uniq("t");
      let deliveries = 0;
      let done = 0;
      const redeliveries: unknown[] = [];
      bus.events.on("redelivery", (r) => redeliveries.push(r));
      await bus.subscribe(
        [topic],
        async () => {
          deliveries++;
          await new Promise((r) => setTimeout(r, 2_500));
          done++;
        },
        { group: uniq("g") },
      );
      await bus.publish(topic, event(1));
      await waitFor(() => done === 1, { timeoutMs: 10_000, intervalMs: 10, message: "slow handler done" });
      // Longer than ackWait after the ack: a redelivery would have shown by now.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(deliveries).toBe(1);
      expect(redeliveries).toEqual([]);
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - an undecodable message is terminated and logged with its sequence; the rest flows", async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "warn", write: (l) => void lines.push(l) });
    const bus = await createJetStreamBus({ url: server.url, ackWait: "1s" }, { logger }, tuning);
    const nc = await connect({ servers: server.url });
    try {
      const topic = uniq("t");
      const got: string[] = [];
      await bus.subscribe([topic], async (e) => void got.push(e.id), { group: uniq("g") });
      const { subject } = jetStreamNames("ofevents", topic);
      const ack = await nc.jetstream().publish(subject, new TextEncoder().encode("{not json"));
      const good = event(2);
      await bus.publish(topic, good);
      await waitFor(() => got.length === 1, { timeoutMs: 10_000, intervalMs: 10, message: "the good event" });
      await new Promise((r) => setTimeout(r, 1_500));
      expect(got).toEqual([good.id]);
      const errors = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r["level"] === 50);
      expect(errors).toHaveLength(1);
      expect(errors[0]!["seq"]).toBe(ack.seq);
    } finally {
      await nc.close();
      await bus.close();
    }
  });

  it("jetstream bus - a group resumes across bus instances (process restarts)", async () => {
    const topic = uniq("t");
    const group = uniq("g");
    const first = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    await first.subscribe([topic], async () => {}, { group });
    await first.close();
    const publisher = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    const missed = [event(1), event(2)];
    for (const e of missed) await publisher.publish(topic, e);
    await publisher.close();
    const second = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    try {
      const got: string[] = [];
      await second.subscribe([topic], async (e) => void got.push(e.id), { group });
      await waitFor(() => got.length === 2, { timeoutMs: 10_000, intervalMs: 10, message: "resumed deliveries" });
      expect(got.sort()).toEqual(missed.map((e) => e.id).sort());
    } finally {
      await second.close();
    }
  });

  it.each([
    { name: "deliverPolicy all", spec: { deliverPolicy: "all" as const }, expected: [1, 2, 3] },
    { name: "deliverPolicy last", spec: { deliverPolicy: "last" as const }, expected: [3] },
    {
      name: "deliverPolicy sequence",
      spec: { deliverPolicy: "sequence" as const, startSequence: 2 },
      expected: [2, 3],
    },
    { name: "deliverPolicy time (startTime)", spec: { deliverPolicy: "time" as const }, expected: [2, 3] },
    {
      name: "deliverPolicy time (startTimeDelta)",
      spec: { deliverPolicy: "time" as const, startTimeDelta: "1h" },
      expected: [1, 2, 3],
    },
    { name: "deliverPolicy new (default)", spec: {}, expected: [] },
  ])("jetstream bus - a new group starts where $name says", async ({ spec, expected }) => {
    const topic = uniq("t");
    const publisher = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    const events = [event(1), event(2), event(3)];
    let startTime: string | undefined;
    try {
      await publisher.publish(topic, events[0]!);
      await new Promise((r) => setTimeout(r, 50));
      startTime = new Date().toISOString();
      await new Promise((r) => setTimeout(r, 50));
      for (const e of events.slice(1)) await publisher.publish(topic, e);
    } finally {
      await publisher.close();
    }
    const withTime = spec.deliverPolicy === "time" && !("startTimeDelta" in spec) ? { startTime } : {};
    const bus = await createJetStreamBus({ url: server.url, ...spec, ...withTime }, { logger: silentLogger() }, tuning);
    try {
      const got: string[] = [];
      await bus.subscribe([topic], async (e) => void got.push(e.id), { group: uniq("g") });
      const marker = event(4);
      await bus.publish(topic, marker);
      await waitFor(() => got.includes(marker.id), { timeoutMs: 10_000, intervalMs: 10, message: "the marker" });
      expect(got).toEqual([...expected.map((n) => events[n - 1]!.id), marker.id]);
    } finally {
      await bus.close();
    }
  });

  it("jetstream bus - maxAckPending sets the consumer's max ack pending and caps each subscriber's in-flight", async () => {
    const topic = uniq("t");
    const group = uniq("g");
    const bus = await createJetStreamBus({ url: server.url, maxAckPending: 2 }, { logger: silentLogger() }, tuning);
    const nc = await connect({ servers: server.url });
    try {
      let running = 0;
      let most = 0;
      let done = 0;
      await bus.subscribe(
        [topic],
        async () => {
          running++;
          most = Math.max(most, running);
          await new Promise((r) => setTimeout(r, 30));
          running--;
          done++;
        },
        { group, maxInFlight: 16 },
      );
      for (let i = 0; i < 10; i++) await bus.publish(topic, event(i));
      await waitFor(() => done === 10, { timeoutMs: 10_000, intervalMs: 10, message: "ten deliveries" });
      expect(most).toBe(2);
      const names = jetStreamNames("ofevents", topic, group);
      const info = await (await nc.jetstreamManager()).consumers.info(names.stream, names.consumer!);
      expect(info.config.max_ack_pending).toBe(2);
    } finally {
      await bus.close();
      await nc.close();
    }
  });

  it("jetstream bus - durablePrefix prefixes the consumer name; subscriptionType topic gives each member every event", async () => {
    const topic = uniq("t");
    const group = uniq("g");
    const spec = { url: server.url, durablePrefix: "ImDurable", subscriptionType: "topic" as const };
    const a = await createJetStreamBus(spec, { logger: silentLogger() }, { ...tuning, memberId: "pod-a" });
    const b = await createJetStreamBus(spec, { logger: silentLogger() }, { ...tuning, memberId: "pod-b" });
    const nc = await connect({ servers: server.url });
    try {
      const gotA: string[] = [];
      const gotB: string[] = [];
      await a.subscribe([topic], async (e) => void gotA.push(e.id), { group });
      await b.subscribe([topic], async (e) => void gotB.push(e.id), { group });
      const events = [event(1), event(2), event(3)];
      for (const e of events) await a.publish(topic, e);
      await waitFor(() => gotA.length === 3 && gotB.length === 3, {
        timeoutMs: 10_000,
        intervalMs: 10,
        message: "every event at both members",
      });
      expect(gotA).toEqual(events.map((e) => e.id));
      expect(gotB).toEqual(events.map((e) => e.id));
      const names = jetStreamNames("ofevents", topic, `${group}.pod-a`, "ImDurable");
      expect(names.consumer).toBe(natsToken(`ImDurable-${group}.pod-a`));
      const info = await (await nc.jetstreamManager()).consumers.info(names.stream, names.consumer!);
      expect(info.config.durable_name).toBe(names.consumer);
    } finally {
      await a.close();
      await b.close();
      await nc.close();
    }
  });

  it("jetstream bus - subscriptionType queue (the default): the members of a group share its events", async () => {
    const topic = uniq("t");
    const group = uniq("g");
    const spec = { url: server.url, subscriptionType: "queue" as const };
    const a = await createJetStreamBus(spec, { logger: silentLogger() }, { ...tuning, memberId: "pod-a" });
    const b = await createJetStreamBus(spec, { logger: silentLogger() }, { ...tuning, memberId: "pod-b" });
    try {
      const got: string[] = [];
      await a.subscribe([topic], async (e) => void got.push(e.id), { group });
      await b.subscribe([topic], async (e) => void got.push(e.id), { group });
      const events = [event(1), event(2), event(3), event(4)];
      for (const e of events) await a.publish(topic, e);
      await waitFor(() => got.length >= 4, { timeoutMs: 10_000, intervalMs: 10, message: "four deliveries" });
      await new Promise((r) => setTimeout(r, 200));
      expect(got.sort()).toEqual(events.map((e) => e.id).sort());
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("jetstream bus - without a server, createJetStreamBus rejects with a retriable BusError", async () => {
    const err = await createJetStreamBus({ url: "nats://127.0.0.1:1" }, { logger: silentLogger() }, tuning).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).retriable).toBe(true);
  });

  it("jetstream bus - an invalid duration in the spec is a CONFIG error", async () => {
    const err = await createJetStreamBus(
      { url: server.url, ackWait: "soon" },
      { logger: silentLogger() },
      tuning,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as OfEventsError).code).toBe(ErrorCode.Config);
  });
});

describe("jetstream bus - server restart", () => {
  it("jetstream bus - a server restart mid-flow loses nothing", { timeout: 90_000 }, async () => {
    const bus = await createJetStreamBus({ url: server.url, ackWait: "2s" }, { logger: silentLogger() }, tuning);
    try {
      const topic = uniq("t");
      const counts = new Map<string, number>();
      await bus.subscribe(
        [topic],
        async (e) => {
          counts.set(e.id, (counts.get(e.id) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 20));
        },
        { group: uniq("g"), maxInFlight: 4 },
      );
      // 100 events take ~500 ms to handle: the restart hits handlers in flight and a backlog.
      const before = Array.from({ length: 100 }, (_, i) => event(i));
      const after = Array.from({ length: 100 }, (_, i) => event(1000 + i));
      for (const e of before) await bus.publish(topic, e);
      const handledAtRestart = counts.size;
      // Publish the rest while the server goes down and comes back, retrying as callers do.
      const restarting = server.restart();
      let publishFailures = 0;
      for (const e of after) publishFailures += await publishRetrying(bus, topic, e);
      await restarting;
      const all = [...before, ...after].map((e) => e.id);
      await waitFor(() => all.every((id) => counts.has(id)), {
        timeoutMs: 45_000,
        intervalMs: 10,
        message: "every event delivered after the restart",
      });
      await new Promise((r) => setTimeout(r, 2_500));
      const duplicates = [...counts.values()].reduce((n, c) => n + c - 1, 0);
      expect(handledAtRestart).toBeLessThan(before.length);
      expect(counts.size).toBe(all.length);
      // Duplicates are allowed (acks lost with the server); only handlers in flight can repeat.
      expect(duplicates).toBeLessThanOrEqual(20);
      reportFigures(
        `jetstream restart: events=${all.length} handledAtRestart=${handledAtRestart} duplicates=${duplicates} publishRetries=${publishFailures} lost=${all.length - counts.size}`,
      );
    } finally {
      await bus.close();
    }
  });
});

// Stops the shared server for good: keep this block last.
describe("jetstream bus - server down", () => {
  it("jetstream bus - publish while the server is down rejects with a retriable BusError in bounded time", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, tuning);
    const known = uniq("t");
    await bus.publish(known, event(1));
    await bus.subscribe([known], async () => {}, { group: uniq("g") });
    await bus.ping(5_000);
    await server.stop();
    const pinged = Date.now();
    const unreachable = await bus.ping(500).catch((e: unknown) => e);
    expect(Date.now() - pinged).toBeLessThan(1_500);
    expect(unreachable).toBeInstanceOf(BusError);
    expect((unreachable as BusError).code).toBe(ErrorCode.BusUnreachable);
    for (const topic of [known, uniq("t")]) {
      const started = Date.now();
      const err = await bus.publish(topic, event(2)).catch((e: unknown) => e);
      const took = Date.now() - started;
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusPublish);
      expect((err as BusError).retriable).toBe(true);
      expect(took).toBeLessThan(tuning.publishTimeoutMs! + 1_000);
    }
    const started = Date.now();
    await bus.close();
    expect(Date.now() - started).toBeLessThan(tuning.drainTimeoutMs! + 1_000);
  });
});
