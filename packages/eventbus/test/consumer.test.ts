/**
 * The consumer engine on its own, against a fake broker: every decision the drivers delegate to
 * it (ack, redeliver with a growing delay, dead-letter after maxDeliver, a failed dead-letter
 * publish, an undecodable message). The real brokers run the same engine in the driver suites.
 */
import { describe, expect, it } from "vitest";
import {
  BusError,
  ErrorCode,
  createInstrumentation,
  decodeEvent,
  newEvent,
  silentLogger,
  type CloudEvent,
} from "@ofevents/core";
import { ConsumerEngine, UNDECODABLE_EVENT_TYPE, type InboundMessage } from "../src/consumer.js";
import {
  DeadLetterExtension,
  MAX_BACKOFF_MS,
  type BusEvents,
  type MessageHandler,
  type SubscribeOptions,
} from "../src/index.js";

type Settled = { kind: "ack" } | { kind: "term" } | { kind: "redeliver"; delayMs: number };

/** A broker holding one message: records how the engine settled each delivery. */
function fakeBroker(
  bytes: string,
  handler: MessageHandler,
  options: Partial<SubscribeOptions> = {},
  countIsLazy?: boolean,
) {
  const events = createInstrumentation<BusEvents>();
  const log: string[] = [];
  for (const name of ["redelivery", "dead_lettered"] as const) events.on(name, () => void log.push(name));
  const published: Array<{ topic: string; event: CloudEvent }> = [];
  let failPublish: Error | undefined;
  const engine = new ConsumerEngine({
    group: "g",
    options: { group: "g", backoffMs: 100, ...options },
    maxDeliver: 3,
    handler,
    events,
    log: silentLogger(),
    publishDeadLetter: async (topic, event) => {
      if (failPublish !== undefined) throw failPublish;
      published.push({ topic, event });
      log.push(`published ${topic}`);
    },
  });
  const settled: Settled[] = [];
  let deliveries = 0;
  let countReads = 0;
  const deliverOnce = async (): Promise<Settled> => {
    const deliveryCount = ++deliveries;
    const msg: InboundMessage = {
      topic: "orders",
      countIsLazy,
      get deliveryCount() {
        countReads++;
        return deliveryCount;
      },
      decode: () => decodeEvent(bytes),
      raw: () => new TextEncoder().encode(bytes),
      position: () => ({ id: "orders-7", source: "/ofevents/bus/fake/orders", fields: { seq: 7 } }),
      ack: () => void settled.push({ kind: "ack" }),
      term: () => void settled.push({ kind: "term" }),
      redeliver: (delayMs) => void settled.push({ kind: "redeliver", delayMs }),
    };
    const before = settled.length;
    await engine.deliver(msg);
    expect(settled.length).toBe(before + 1);
    return settled[before]!;
  };
  return {
    events,
    log,
    published,
    settled,
    deliverOnce,
    /** How often the engine (or the handler) read a delivery's count. */
    countReads: () => countReads,
    failPublishWith: (err: Error | undefined) => void (failPublish = err),
  };
}

const sent = newEvent({ id: "ev-1", source: "/test", type: "io.ofevents.test", data: { n: 1 } });
const bytes = JSON.stringify(sent);

describe("bus consumer engine", () => {
  it("bus consumer engine - a handler that resolves acks the message, with the delivery facts", async () => {
    const infos: unknown[] = [];
    const b = fakeBroker(bytes, async (e, info) => void infos.push({ id: e.id, ...info }));
    expect(await b.deliverOnce()).toEqual({ kind: "ack" });
    expect(infos).toEqual([{ id: "ev-1", topic: "orders", group: "g", deliveryCount: 1 }]);
    expect(b.log).toEqual([]);
  });

  it("bus consumer engine - a lazy count is read only if the handler asks; any other is a plain value", async () => {
    // JetStream parses the count out of the reply subject: a handled message should not pay for it.
    const quiet = fakeBroker(bytes, async () => undefined, {}, true);
    expect(await quiet.deliverOnce()).toEqual({ kind: "ack" });
    expect(quiet.countReads()).toBe(0);
    // A handler that asks gets it.
    const counts: number[] = [];
    const asking = fakeBroker(bytes, async (_e, info) => void counts.push(info.deliveryCount), {}, true);
    expect(await asking.deliverOnce()).toEqual({ kind: "ack" });
    expect({ reads: asking.countReads(), counts }).toEqual({ reads: 1, counts: [1] });
    // A driver that holds the count as a field: the handler gets a value, not a getter.
    const descriptors: Array<PropertyDescriptor | undefined> = [];
    const plain = fakeBroker(bytes, async (_e, info) => {
      descriptors.push(Object.getOwnPropertyDescriptor(info, "deliveryCount"));
      expect(JSON.parse(JSON.stringify(info))).toEqual({ topic: "orders", group: "g", deliveryCount: 1 });
    });
    expect(await plain.deliverOnce()).toEqual({ kind: "ack" });
    expect(descriptors).toEqual([{ value: 1, writable: true, enumerable: true, configurable: true }]);
  });

  it("bus consumer engine - each handler gets its own copy of the event", async () => {
    const seen: CloudEvent[] = [];
    const b = fakeBroker(bytes, async (e) => {
      if (seen.length === 0) (e as Record<string, unknown>)["mutated"] = true;
      seen.push(e);
      throw new Error("again");
    });
    await b.deliverOnce();
    await b.deliverOnce();
    expect(seen[1]).not.toBe(seen[0]);
    expect((seen[1] as Record<string, unknown>)["mutated"]).toBeUndefined();
  });

  it("bus consumer engine - a throwing handler is redelivered with a growing delay, capped", async () => {
    const b = fakeBroker(
      bytes,
      async () => {
        throw new Error("down");
      },
      { maxDeliver: 30, backoffMs: 1_000 },
    );
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      const s = await b.deliverOnce();
      expect(s.kind).toBe("redeliver");
      delays.push((s as { delayMs: number }).delayMs);
    }
    // Exponential from backoffMs (±20 % jitter): 1 s, 2 s, 4 s... up to the cap.
    delays.forEach((d, i) => {
      const base = Math.min(1_000 * 2 ** i, MAX_BACKOFF_MS);
      expect(d).toBeGreaterThanOrEqual(base * 0.8);
      expect(d).toBeLessThanOrEqual(base * 1.2);
    });
    expect(Math.max(...delays)).toBeLessThanOrEqual(MAX_BACKOFF_MS * 1.2);
    expect(b.log).toEqual(Array(8).fill("redelivery"));
  });

  it("bus consumer engine - after maxDeliver failures the event is dead-lettered with the reason and the attempt count, then terminated", async () => {
    const err = new BusError(ErrorCode.BusPublish, "sink is down");
    const b = fakeBroker(bytes, async () => {
      throw err;
    });
    expect((await b.deliverOnce()).kind).toBe("redeliver");
    expect((await b.deliverOnce()).kind).toBe("redeliver");
    expect(await b.deliverOnce()).toEqual({ kind: "term" });
    expect(b.published).toHaveLength(1);
    const { topic, event } = b.published[0]!;
    expect(topic).toBe("orders.deadletter");
    const d = event as Record<string, unknown>;
    expect(d["id"]).toBe("ev-1");
    expect(d["data"]).toEqual({ n: 1 });
    expect(d[DeadLetterExtension.Reason]).toBe("sink is down");
    expect(d[DeadLetterExtension.Code]).toBe(ErrorCode.BusPublish);
    expect(d[DeadLetterExtension.Destination]).toBe("orders");
    expect(d[DeadLetterExtension.Deliveries]).toBe(3);
    // dead_lettered only once the dead letter is on the bus.
    expect(b.log).toEqual(["redelivery", "redelivery", "published orders.deadletter", "dead_lettered"]);
  });

  it("bus consumer engine - the subscription's deadLetterTopic and maxDeliver win over the defaults", async () => {
    const b = fakeBroker(
      bytes,
      async () => {
        throw new Error("no");
      },
      { maxDeliver: 1, deadLetterTopic: "elsewhere" },
    );
    expect(await b.deliverOnce()).toEqual({ kind: "term" });
    expect(b.published.map((p) => p.topic)).toEqual(["elsewhere"]);
  });

  it("bus consumer engine - a failing dead-letter publish leaves the message on its topic: redelivered, not lost, no dead_lettered", async () => {
    let calls = 0;
    const b = fakeBroker(
      bytes,
      async () => {
        calls++;
        throw new Error("still down");
      },
      { maxDeliver: 1 },
    );
    const dead: Array<BusEvents["dead_lettered"]> = [];
    b.events.on("dead_lettered", (p) => void dead.push(p));
    b.failPublishWith(new BusError(ErrorCode.BusPublish, "dead-letter topic unavailable"));
    const first = await b.deliverOnce();
    expect(first.kind).toBe("redeliver");
    expect((first as { delayMs: number }).delayMs).toBeGreaterThan(0);
    expect(dead).toEqual([]);
    expect(b.log).toEqual(["redelivery"]);
    // The next delivery gets the handler again, and dead-letters once the topic takes it.
    b.failPublishWith(undefined);
    expect(await b.deliverOnce()).toEqual({ kind: "term" });
    expect(calls).toBe(2);
    expect(dead.map((d) => d.id)).toEqual(["ev-1"]);
    expect(b.published[0]!.event[DeadLetterExtension.Deliveries as keyof CloudEvent]).toBe(2);
  });

  it("bus consumer engine - an undecodable message is dead-lettered at once, wrapped with its bytes; the handler never sees it", async () => {
    let calls = 0;
    const b = fakeBroker("{not json", async () => void calls++);
    expect(await b.deliverOnce()).toEqual({ kind: "term" });
    expect(calls).toBe(0);
    const { topic, event } = b.published[0]!;
    expect(topic).toBe("orders.deadletter");
    expect(event.type).toBe(UNDECODABLE_EVENT_TYPE);
    expect(event.id).toBe("orders-7");
    expect(event.source).toBe("/ofevents/bus/fake/orders");
    expect(Buffer.from(String(event.data_base64), "base64").toString()).toBe("{not json");
    const d = event as Record<string, unknown>;
    expect(d[DeadLetterExtension.Reason]).toMatch(/JSON/);
    expect(d[DeadLetterExtension.Deliveries]).toBe(1);
    expect(b.log).toEqual(["published orders.deadletter", "dead_lettered"]);
  });

  it("bus consumer engine - an undecodable message whose dead letter fails is redelivered, not dropped", async () => {
    const b = fakeBroker(JSON.stringify({ not: "an event" }), async () => {});
    b.failPublishWith(new Error("unavailable"));
    expect((await b.deliverOnce()).kind).toBe("redeliver");
    b.failPublishWith(undefined);
    expect(await b.deliverOnce()).toEqual({ kind: "term" });
    expect(b.published[0]!.event.type).toBe(UNDECODABLE_EVENT_TYPE);
  });

  it("bus consumer engine - without a term primitive a dead-lettered message is acked", async () => {
    const events = createInstrumentation<BusEvents>();
    const engine = new ConsumerEngine({
      group: "g",
      options: { group: "g", maxDeliver: 1 },
      maxDeliver: 5,
      handler: async () => {
        throw new Error("no");
      },
      events,
      log: silentLogger(),
      publishDeadLetter: async () => {},
    });
    const done: string[] = [];
    await engine.deliver({
      topic: "t",
      deliveryCount: 1,
      decode: () => decodeEvent(bytes),
      raw: () => new Uint8Array(),
      position: () => ({ id: "t-1", source: "/s" }),
      ack: () => void done.push("ack"),
      redeliver: () => void done.push("redeliver"),
    });
    expect(done).toEqual(["ack"]);
  });
});
