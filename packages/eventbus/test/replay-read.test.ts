/**
 * `EventBus.read`, what replay and redrive stand on, on the JetStream and Kafka buses against a
 * real nats-server with JetStream and a real Kafka broker: a topic's retained events in order,
 * from a time, up to the end the topic had when the read began, and no subscriber affected.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { newEvent, silentLogger, type CloudEvent } from "@ofevents/core";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { NatsServer } from "../../../test/helpers/nats.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { createJetStreamBus } from "../src/drivers/jetstream.js";
import { createKafkaBus } from "../src/drivers/kafka.js";
import type { EventBus, RetainedEvent } from "../src/index.js";
import { uniq } from "./contract.js";

function events(n: number, tag: string): CloudEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    ...newEvent({ id: `${tag}-${i}`, source: "/read", type: "t", data: { i } }),
    partitionkey: `k${i % 3}`,
  }));
}

async function all(it: AsyncIterable<RetainedEvent>): Promise<RetainedEvent[]> {
  const out: RetainedEvent[] = [];
  for await (const r of it) out.push(r);
  return out;
}

/** Ids in order within each partition key (Kafka orders per partition, JetStream in full). */
function byKey(rs: readonly RetainedEvent[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of rs) (out[String(r.event["partitionkey"])] ??= []).push(r.event.id);
  return out;
}

function readContract(name: string, open: () => Promise<EventBus>): void {
  describe(`${name} read`, () => {
    const buses: EventBus[] = [];
    const bus = async (): Promise<EventBus> => {
      const b = await open();
      buses.push(b);
      return b;
    };
    afterEach(async () => {
      await Promise.allSettled(buses.splice(0).map((b) => b.close()));
    });

    it(`${name} read - every retained event of the topic in order, each with a distinct position and its time`, async () => {
      const b = await bus();
      const topic = uniq("read");
      const sent = events(30, topic);
      const before = Date.now();
      for (const e of sent) await b.publish(topic, e);
      const got = await all(b.read!(topic));
      expect(got.map((r) => r.event.id).sort()).toEqual(sent.map((e) => e.id).sort());
      expect(byKey(got)).toEqual(byKey(sent.map((event) => ({ event, topic, position: "", time: new Date() }))));
      expect(new Set(got.map((r) => r.position)).size).toBe(30);
      for (const r of got) {
        expect(r.topic).toBe(topic);
        expect(r.time.getTime()).toBeGreaterThanOrEqual(before - 1_000);
        expect(r.time.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
      }
      expect(got.find((r) => r.event.id === sent[7]!.id)!.event).toMatchObject({ data: { i: 7 }, source: "/read" });
    });

    it(`${name} read - from a time: only what the bus took after it; to a time: nothing taken after it`, async () => {
      const b = await bus();
      const topic = uniq("read");
      const first = events(10, `${topic}-a`);
      const second = events(10, `${topic}-b`);
      for (const e of first) await b.publish(topic, e);
      await new Promise((r) => setTimeout(r, 1_100));
      const middle = new Date();
      await new Promise((r) => setTimeout(r, 1_100));
      for (const e of second) await b.publish(topic, e);
      const later = await all(b.read!(topic, { from: middle }));
      expect(later.map((r) => r.event.id).sort()).toEqual(second.map((e) => e.id).sort());
      const earlier = await all(b.read!(topic, { to: middle }));
      expect(earlier.map((r) => r.event.id).sort()).toEqual(first.map((e) => e.id).sort());
    });

    it(`${name} read - ends at the end the topic had when it began: events published during the read are not read`, async () => {
      const b = await bus();
      const topic = uniq("read");
      const sent = events(20, topic);
      for (const e of sent) await b.publish(topic, e);
      const seen: string[] = [];
      let n = 0;
      for await (const r of b.read!(topic)) {
        seen.push(r.event.id);
        // Published while the read runs: past the end it began with.
        if (n++ < 5) await b.publish(topic, newEvent({ id: `${topic}-late-${n}`, source: "/read", type: "t" }));
      }
      expect(seen.sort()).toEqual(sent.map((e) => e.id).sort());
    });

    it(`${name} read - an empty topic reads nothing; breaking out early stops the read`, async () => {
      const b = await bus();
      expect(await all(b.read!(uniq("read")))).toEqual([]);
      const topic = uniq("read");
      for (const e of events(10, topic)) await b.publish(topic, e);
      let n = 0;
      for await (const r of b.read!(topic)) {
        expect(r.event.id).toMatch(new RegExp(`^${topic}-`));
        if (++n === 3) break;
      }
      expect(n).toBe(3);
    });

    it(`${name} read - a subscribed group is not affected: it still gets every event, and the read gets them all too`, async () => {
      const b = await bus();
      const topic = uniq("read");
      const got: string[] = [];
      await b.subscribe(
        [topic],
        async (e) => {
          got.push(e.id);
        },
        { group: uniq("g") },
      );
      const sent = events(15, topic);
      for (const e of sent) await b.publish(topic, e);
      await waitFor(() => got.length >= 15, { timeoutMs: 20_000, message: "the group got every event" });
      const read = await all(b.read!(topic));
      expect(read.map((r) => r.event.id).sort()).toEqual(sent.map((e) => e.id).sort());
      await new Promise((r) => setTimeout(r, 300));
      expect(got.sort()).toEqual(sent.map((e) => e.id).sort());
    });
  });
}

describe("replay read - jetstream bus", () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true });
  });
  afterAll(async () => {
    await server?.stop();
  });
  readContract("jetstream", () =>
    createJetStreamBus(
      { url: server.url },
      { logger: silentLogger() },
      { publishTimeoutMs: 2_000, drainTimeoutMs: 2_000 },
    ),
  );
});

describe("replay read - kafka bus", () => {
  let broker: KafkaBroker;
  beforeAll(async () => {
    broker = await KafkaBroker.start();
  }, 120_000);
  afterAll(async () => {
    await broker?.stop();
  });
  readContract("kafka", () =>
    createKafkaBus(
      { brokers: broker.brokers.join(","), partitions: 3 },
      { logger: silentLogger() },
      { maxWaitTimeMs: 100 },
    ),
  );
});
