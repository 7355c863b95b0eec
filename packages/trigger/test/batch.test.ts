import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DeadLetterExtension } from "@ofevents/eventbus";
import { waitFor } from "../../../test/helpers/wait.js";
import { Batcher } from "../src/shaping.js";
import { A, Rig, ev, trigger } from "./shaping-support.js";

describe("batch - Batcher", () => {
  it("batch - hands a batch on at maxEvents, and a partial one after maxWait, per key", async () => {
    const flushed: string[][] = [];
    const b = new Batcher<string>(3, 100, (members) => {
      flushed.push(members.map((m) => m.item));
      members.forEach((m) => m.resolve());
    });
    const done = ["a1", "a2", "a3", "a4"].map((x) => b.add("a", x));
    const b1 = b.add("b", "b1");
    await Promise.all(done.slice(0, 3));
    expect(flushed).toEqual([["a1", "a2", "a3"]]);
    await Promise.all([...done, b1]);
    expect(flushed.slice(1).sort()).toEqual([["a4"], ["b1"]]);
  });
});

describe("batch - a subscriber with batch", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("batch - delivers up to maxEvents in one batched-mode request, a partial batch after maxWait, every event once", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, batch: { maxEvents: 3, maxWait: "300ms" } }));
    const events = Array.from({ length: 7 }, (_, i) => ev({ i }));
    for (const e of events) await rig.bus.publish(A, e);
    await waitFor(() => rig.count("batched") === 3, { timeoutMs: 10_000 });
    const bodies = rig.sink.received.map((r) => r.data as Array<{ id: string; data: unknown }>);
    for (const r of rig.sink.received)
      expect(r.headers["content-type"]).toBe("application/cloudevents-batch+json; charset=utf-8");
    expect(bodies.map((b) => b.length)).toEqual([3, 3, 1]);
    expect(bodies.flat().map((e) => e.id)).toEqual(events.map((e) => e.id));
    expect(bodies[0]![0]!.data).toEqual({ i: 0 });
    expect(rig.sink.received.length).toBe(3);
    expect(rig.count("delivered")).toBe(7);
    expect(rig.sink.received[0]!.headers["idempotency-key"]).toMatch(/^batch-[0-9a-f]{64}$/);
  });

  it("batch - with a key, each batch holds one key value's events", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, batch: { maxEvents: 2, maxWait: "200ms", key: "data.k" } }));
    for (const k of ["x", "y", "x", "y", "x"]) await rig.bus.publish(A, ev({ k }));
    await waitFor(() => rig.sink.received.reduce((n, r) => n + (r.data as unknown[]).length, 0) === 5, {
      timeoutMs: 10_000,
    });
    for (const r of rig.sink.received) {
      const keys = new Set((r.data as Array<{ data: { k: string } }>).map((e) => e.data.k));
      expect(keys.size).toBe(1);
    }
    expect(rig.sink.received.length).toBe(3);
  });

  it("batch - a failed batch is retried whole, then each member is dead-lettered with the reason, and acknowledged", async () => {
    rig.sink.status = () => 503;
    await rig.start(
      trigger({
        sink: { uri: rig.sink.url },
        deadLetterSink: { uri: rig.dls.url },
        batch: { maxEvents: 2, maxWait: "5s" },
        delivery: { retry: 2, backoffDelay: "10ms" },
      }),
    );
    const events = [ev({ i: 1 }), ev({ i: 2 })];
    for (const e of events) await rig.bus.publish(A, e);
    // The dead-letter sink counts a request on arrival, the trigger once it answered: wait for both.
    await waitFor(() => rig.dls.received.length === 2 && rig.count("dead_lettered") === 2, { timeoutMs: 10_000 });
    // 1 attempt + 2 retries, each with both members.
    expect(rig.sink.received.length).toBe(3);
    for (const r of rig.sink.received) expect((r.data as unknown[]).length).toBe(2);
    expect(rig.dls.ids().sort()).toEqual(events.map((e) => e.id).sort());
    for (const r of rig.dls.received) {
      expect(r.headers[`ce-${DeadLetterExtension.Reason}`]).toContain("503");
      expect(r.headers[`ce-${DeadLetterExtension.Deliveries}`]).toBe("3");
    }
    expect(rig.count("dead_lettered")).toBe(2);
    // Acknowledged: the bus has nothing left to hand out.
    expect(await rig.bus.drain!({ timeoutMs: 2_000 })).toBe(true);
  });

  it("batch - to a topic, members are published one by one, in batch order", async () => {
    const got: string[] = [];
    await rig.bus.subscribe(["out"], async (e) => void got.push(e.id), { group: "reader" });
    await rig.start(trigger({ topic: "out", batch: { maxEvents: 3, maxWait: "200ms" } }));
    const events = Array.from({ length: 4 }, (_, i) => ev({ i }));
    for (const e of events) await rig.bus.publish(A, e);
    await waitFor(() => got.length === 4, { timeoutMs: 10_000 });
    expect(got).toEqual(events.map((e) => e.id));
    expect(rig.count("batched")).toBe(2);
  });
});
