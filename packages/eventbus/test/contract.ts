/**
 * The EventBus contract suite (DESIGN.md, "Contracts"). Every driver runs it against its real
 * backend: `busContract("jetstream", () => createJetStreamBus(...))`. Each test owns its topics
 * and groups (random suffix), so one backend serves the whole run.
 */
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { BusError, ErrorCode, newEvent, type CloudEvent } from "@ofevents/core";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import {
  DeadLetterExtension,
  UNDECODABLE_EVENT_TYPE,
  type BusEvents,
  type DeliveryInfo,
  type EventBus,
} from "../src/index.js";

export interface ContractOptions {
  /** Time allowed for a message to arrive (default 10 s). */
  timeoutMs?: number;
  /** Backoff base for redelivery tests (ms, default 50). */
  backoffMs?: number;
  /**
   * The backend hands a subscription one message at a time whatever maxInFlight says (Dapr's
   * JetStream component, which must run `concurrency: single` to ack after delivery).
   */
  oneAtATime?: boolean;
  /**
   * Puts `bytes` on `topic` as a message, bypassing the driver's encoder: runs the undecodable
   * case. Dapr leaves it out: daprd dead-letters such a message as it is (dapr-bus.test.ts).
   */
  publishRaw?: (bus: EventBus, topic: string, bytes: Uint8Array) => Promise<void>;
}

export function uniq(prefix: string): string {
  return `${prefix}-${randomSuffix()}`;
}

function sample(n: number, extra: Record<string, unknown> = {}): CloudEvent {
  return newEvent({
    id: `ev-${n}-${randomUUID().slice(0, 6)}`,
    source: "/contract/test",
    type: "io.ofevents.test",
    subject: `subject-${n}`,
    data: { n, nested: { list: [1, 2, 3], text: "héllo" } },
    extensions: {
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      customext: "x",
      ...extra,
    } as Record<string, string>,
  });
}

export function busContract(name: string, factory: () => Promise<EventBus>, options: ContractOptions = {}): void {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const backoffMs = options.backoffMs ?? 50;

  describe(`${name} bus - contract`, () => {
    const buses: EventBus[] = [];
    const open = async (): Promise<EventBus> => {
      const b = await factory();
      buses.push(b);
      return b;
    };
    afterEach(async () => {
      await Promise.allSettled(buses.splice(0).map((b) => b.close()));
    });

    it(`${name} bus - delivers the event with every attribute intact`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const got: CloudEvent[] = [];
      await bus.subscribe([topic], async (e) => void got.push(e), { group: uniq("g") });
      const sent = sample(1);
      await bus.publish(topic, sent);
      await waitFor(() => got.length === 1, { timeoutMs, intervalMs: 10, message: "delivery" });
      expect(got[0]).toEqual(sent);
    });

    it(`${name} bus - an acked message is not delivered again`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const seen: string[] = [];
      await bus.subscribe([topic], async (e) => void seen.push(e.id), { group: uniq("g"), backoffMs });
      const events = [sample(1), sample(2), sample(3)];
      for (const e of events) await bus.publish(topic, e);
      await waitFor(() => seen.length >= 3, { timeoutMs, intervalMs: 10, message: "3 deliveries" });
      await new Promise((r) => setTimeout(r, backoffMs * 10));
      expect(seen.sort()).toEqual(events.map((e) => e.id).sort());
    });

    it(`${name} bus - a throwing handler gets the message again, with a growing delivery count`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const infos: DeliveryInfo[] = [];
      await bus.subscribe(
        [topic],
        async (_e, info) => {
          infos.push(info);
          if (info.deliveryCount < 3) throw new Error("not yet");
        },
        { group: uniq("g"), backoffMs, maxDeliver: 5 },
      );
      await bus.publish(topic, sample(1));
      await waitFor(() => infos.length === 3, { timeoutMs, intervalMs: 10, message: "3 deliveries" });
      expect(infos.map((i) => i.deliveryCount)).toEqual([1, 2, 3]);
      await new Promise((r) => setTimeout(r, backoffMs * 10));
      expect(infos).toHaveLength(3);
    });

    it(`${name} bus - after maxDeliver failures the event goes to the dead-letter topic with the reason`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const dlt = uniq("dlt");
      let attempts = 0;
      const dead: CloudEvent[] = [];
      await bus.subscribe([dlt], async (e) => void dead.push(e), { group: uniq("g") });
      await bus.subscribe(
        [topic],
        async () => {
          attempts++;
          throw new Error("sink is down");
        },
        { group: uniq("g"), backoffMs, maxDeliver: 3, deadLetterTopic: dlt },
      );
      const sent = sample(7);
      await bus.publish(topic, sent);
      await waitFor(() => dead.length === 1, { timeoutMs, intervalMs: 10, message: "dead letter" });
      expect(attempts).toBe(3);
      const d = dead[0] as Record<string, unknown>;
      expect(d["id"]).toBe(sent.id);
      expect(d["data"]).toEqual(sent.data);
      expect(d[DeadLetterExtension.Reason]).toBe("sink is down");
      expect(Number(d[DeadLetterExtension.Deliveries])).toBe(3);
      expect(d[DeadLetterExtension.Destination]).toBe(topic);
    });

    it(`${name} bus - dead_lettered fires only after the dead letter is on the bus`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const dlt = `${topic}.deadletter`;
      const order: string[] = [];
      bus.events.on("published", (p) => {
        if (p.topic === dlt) order.push("published");
      });
      const dead: Array<BusEvents["dead_lettered"]> = [];
      bus.events.on("dead_lettered", (p) => {
        order.push("dead_lettered");
        dead.push(p);
      });
      const arrived: string[] = [];
      await bus.subscribe([dlt], async (e) => void arrived.push(e.id), { group: uniq("g") });
      const group = uniq("g");
      await bus.subscribe(
        [topic],
        async () => {
          throw new Error("refused");
        },
        { group, backoffMs, maxDeliver: 2 },
      );
      const sent = sample(3);
      await bus.publish(topic, sent);
      await waitFor(() => arrived.length === 1 && dead.length === 1, {
        timeoutMs,
        intervalMs: 10,
        message: "dead letter",
      });
      expect(order).toEqual(["published", "dead_lettered"]);
      expect(dead[0]).toMatchObject({ topic, group, id: sent.id, deadLetterTopic: dlt });
      expect((dead[0]!.error as Error).message).toBe("refused");
      expect(arrived).toEqual([sent.id]);
    });

    if (options.publishRaw !== undefined) {
      const publishRaw = options.publishRaw;
      it(`${name} bus - a message that is not a CloudEvent is dead-lettered wrapped, with its bytes; the rest flows`, async () => {
        const bus = await open();
        const topic = uniq("t");
        const dead: CloudEvent[] = [];
        const fired: Array<BusEvents["dead_lettered"]> = [];
        bus.events.on("dead_lettered", (p) => void fired.push(p));
        await bus.subscribe([`${topic}.deadletter`], async (e) => void dead.push(e), { group: uniq("g") });
        const got: string[] = [];
        await bus.subscribe([topic], async (e) => void got.push(e.id), { group: uniq("g"), backoffMs });
        const bytes = new TextEncoder().encode('{"not":"a CloudEvent"}');
        await publishRaw(bus, topic, bytes);
        const after = sample(2);
        await bus.publish(topic, after);
        // `dead_lettered` fires once the broker acked the dead letter, which a subscriber of the
        // dead-letter topic can receive first: wait for both.
        await waitFor(() => dead.length === 1 && got.length === 1 && fired.length === 1, {
          timeoutMs,
          intervalMs: 10,
          message: "dead letter, its dead_lettered event and the next event",
        });
        expect(got).toEqual([after.id]);
        const d = dead[0]! as Record<string, unknown>;
        expect(d["type"]).toBe(UNDECODABLE_EVENT_TYPE);
        expect(Buffer.from(String(d["data_base64"]), "base64").toString()).toBe('{"not":"a CloudEvent"}');
        expect(d[DeadLetterExtension.Destination]).toBe(topic);
        expect(typeof d[DeadLetterExtension.Reason]).toBe("string");
        expect(fired.map((f) => f.id)).toEqual([d["id"]]);
      });
    }

    it(`${name} bus - every group gets each event; members of a group share them`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const g1 = uniq("g1");
      const g2 = uniq("g2");
      const a: string[] = [];
      const b: string[] = [];
      const c: string[] = [];
      await bus.subscribe([topic], async (e) => void a.push(e.id), { group: g1, maxInFlight: 1 });
      await bus.subscribe([topic], async (e) => void b.push(e.id), { group: g1, maxInFlight: 1 });
      await bus.subscribe([topic], async (e) => void c.push(e.id), { group: g2 });
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) {
        const e = sample(i);
        ids.push(e.id);
        await bus.publish(topic, e);
      }
      await waitFor(() => a.length + b.length === 40 && c.length === 40, {
        timeoutMs,
        intervalMs: 10,
        message: "all deliveries",
      });
      expect([...a, ...b].sort()).toEqual([...ids].sort());
      expect(new Set([...a, ...b]).size).toBe(40);
      expect([...c].sort()).toEqual([...ids].sort());
      expect(a.length).toBeGreaterThan(0);
      expect(b.length).toBeGreaterThan(0);
    });

    it(`${name} bus - in-flight messages per subscription never exceed maxInFlight`, async () => {
      const bus = await open();
      const topic = uniq("t");
      let inFlight = 0;
      let peak = 0;
      let done = 0;
      await bus.subscribe(
        [topic],
        async () => {
          inFlight++;
          peak = Math.max(peak, inFlight);
          await new Promise((r) => setTimeout(r, 20));
          inFlight--;
          done++;
        },
        { group: uniq("g"), maxInFlight: 3 },
      );
      for (let i = 0; i < 20; i++) await bus.publish(topic, sample(i));
      await waitFor(() => done === 20, { timeoutMs, intervalMs: 10, message: "20 handled" });
      expect(peak).toBeLessThanOrEqual(3);
      if (options.oneAtATime === true) expect(peak).toBe(1);
      else expect(peak).toBeGreaterThan(1);
    });

    it(`${name} bus - a durable group resumes where it left off`, async () => {
      const bus = await open();
      const topic = uniq("t");
      const group = uniq("g");
      const first: string[] = [];
      const sub = await bus.subscribe([topic], async (e) => void first.push(e.id), { group });
      const before = [sample(1), sample(2)];
      for (const e of before) await bus.publish(topic, e);
      await waitFor(() => first.length === 2, { timeoutMs, intervalMs: 10, message: "first deliveries" });
      await sub.close();
      const after = [sample(3), sample(4)];
      for (const e of after) await bus.publish(topic, e);
      const second: string[] = [];
      await bus.subscribe([topic], async (e) => void second.push(e.id), { group });
      await waitFor(() => second.length === 2, { timeoutMs, intervalMs: 10, message: "resumed deliveries" });
      await new Promise((r) => setTimeout(r, 200));
      expect(second.sort()).toEqual(after.map((e) => e.id).sort());
    });

    it(`${name} bus - closing a subscription waits for its in-flight handler`, async () => {
      const bus = await open();
      const topic = uniq("t");
      let finished = false;
      let started = false;
      const sub = await bus.subscribe(
        [topic],
        async () => {
          started = true;
          await new Promise((r) => setTimeout(r, 300));
          finished = true;
        },
        { group: uniq("g") },
      );
      await bus.publish(topic, sample(1));
      await waitFor(() => started, { timeoutMs, intervalMs: 10, message: "handler start" });
      await sub.close();
      expect(finished).toBe(true);
    });

    it(`${name} bus - ping answers while the bus is open and rejects once it is closed`, async () => {
      const bus = await open();
      await expect(bus.ping(timeoutMs)).resolves.toBeUndefined();
      await bus.close();
      const err = await bus.ping(timeoutMs).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusClosed);
    });

    it(`${name} bus - publish after close rejects with a BusError`, async () => {
      const bus = await open();
      await bus.close();
      const err = await bus.publish(uniq("t"), sample(1)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusClosed);
    });
  });
}
