import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../../../test/helpers/wait.js";
import { KeyedQueue, Sequencer } from "../src/keyed.js";
import { A, Rig, ev, trigger } from "./shaping-support.js";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ordering - Sequencer and KeyedQueue", () => {
  it("ordering - work of one key runs one at a time in queue order; keys run in parallel", async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    let running = 0;
    let peak = 0;
    const job = (k: string, i: number, ms: number) =>
      q.run(k, async () => {
        running++;
        peak = Math.max(peak, running);
        log.push(`${k}${i}+`);
        await pause(ms);
        log.push(`${k}${i}-`);
        running--;
      });
    await Promise.all([job("a", 1, 30), job("a", 2, 1), job("b", 1, 10), job("a", 3, 1)]);
    const a = log.filter((x) => x.startsWith("a"));
    expect(a).toEqual(["a1+", "a1-", "a2+", "a2-", "a3+", "a3-"]);
    expect(peak).toBe(2);
    expect(q.size).toBe(0);
  });

  it("ordering - a failing job does not stop its key; leave() lets the next start early", async () => {
    const q = new KeyedQueue();
    const log: number[] = [];
    await expect(q.run("k", () => Promise.reject(new Error("x")))).rejects.toThrow("x");
    let release!: () => void;
    const held = q.run("k", (leave) => {
      leave();
      return new Promise<void>((r) => (release = r));
    });
    await q.run("k", async () => void log.push(2));
    expect(log).toEqual([2]);
    release();
    await held;
  });

  it("ordering - tickets pass their turns in the order they were taken, whatever order the holders finish", async () => {
    const s = new Sequencer();
    const order: number[] = [];
    const holders = [30, 0, 10].map(async (ms, i) => {
      const t = s.ticket();
      await pause(ms);
      await t.turn;
      order.push(i);
      t.done();
    });
    await Promise.all(holders);
    expect(order).toEqual([0, 1, 2]);
  });
});

describe("ordering - a subscriber with ordering", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("ordering - with a sink of random latency, each key's events arrive one at a time in bus order; keys go in parallel", async () => {
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 20;
    rig.sink.delayFor = () => random();
    await rig.start(
      trigger({ sink: { uri: rig.sink.url }, ordering: { key: "data.k" }, delivery: { concurrency: 8 } }),
    );
    const keys = ["a", "b", "c", "d"];
    const events = Array.from({ length: 120 }, (_, i) => ev({ k: keys[i % 4], i }));
    for (const e of events) await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 120, { timeoutMs: 30_000 });
    for (const k of keys) {
      const sent = events.filter((e) => (e.data as { k: string }).k === k).map((e) => e.id);
      const got = rig.sink.received
        .filter((r) => (r.data as { k: string }).k === k)
        .map((r) => String(r.headers["ce-id"]));
      expect(got).toEqual(sent);
    }
    expect(rig.sink.peak).toBeGreaterThan(1);
    expect(rig.sink.peak).toBeLessThanOrEqual(4);
  });

  it("ordering - a retried event holds its key's later events back; other keys go on", async () => {
    // The first request for a's second event fails twice.
    let failures = 0;
    rig.sink.status = (n) => {
      const r = rig.sink.received[n]!;
      const d = r.data as { k: string; i: number };
      if (d.k === "a" && d.i === 1 && failures < 2) {
        failures++;
        return 503;
      }
      return 200;
    };
    await rig.start(
      trigger({
        sink: { uri: rig.sink.url },
        ordering: { key: "data.k" },
        delivery: { backoffDelay: "100ms", backoffPolicy: "linear" },
      }),
    );
    const a = [0, 1, 2, 3].map((i) => ev({ k: "a", i }));
    const b = [0, 1, 2].map((i) => ev({ k: "b", i }));
    for (let i = 0; i < 4; i++) {
      await rig.bus.publish(A, a[i]!);
      if (b[i] !== undefined) await rig.bus.publish(A, b[i]!);
    }
    await waitFor(() => rig.sink.received.filter((r) => r.headers["ce-id"] === a[3]!.id).length === 1, {
      timeoutMs: 10_000,
    });
    const ids = rig.sink.ids();
    // a's deliveries: a0, a1 (failed), a1 (failed), a1, a2, a3, nothing of a2 before a1 succeeded.
    expect(ids.filter((id) => a.some((e) => e.id === id))).toEqual([
      a[0]!.id,
      a[1]!.id,
      a[1]!.id,
      a[1]!.id,
      a[2]!.id,
      a[3]!.id,
    ]);
    // b did not wait for a's retries: all of b arrived before a2.
    const a2 = ids.indexOf(a[2]!.id);
    for (const e of b) expect(ids.indexOf(e.id)).toBeLessThan(a2);
  });
});
