import { describe, expect, it } from "vitest";
import { newEvent, silentLogger, type CloudEvent } from "@ofevents/core";
import { waitFor } from "../../../test/helpers/wait.js";
import { createMemoryBus } from "../src/index.js";
import { busContract, uniq } from "./contract.js";

busContract("memory", async () => createMemoryBus({ logger: silentLogger() }), {
  // The in-memory bus holds what publish was given as JSON: a JSON object that is not an event.
  publishRaw: (bus, topic, bytes) => bus.publish(topic, JSON.parse(Buffer.from(bytes).toString()) as CloudEvent),
});

describe("memory bus - backpressure", () => {
  it("memory bus - publish waits while a group's queue is full, and resumes as it drains", async () => {
    const bus = createMemoryBus({ logger: silentLogger(), maxQueued: 5 });
    const topic = uniq("t");
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let handled = 0;
    await bus.subscribe(
      [topic],
      async () => {
        await gate;
        handled++;
      },
      { group: uniq("g"), maxInFlight: 1 },
    );
    let published = 0;
    const publishing = (async () => {
      for (let i = 0; i < 20; i++) {
        await bus.publish(topic, newEvent({ source: "/t", type: "t", data: { i } }));
        published++;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    // One in flight plus five queued: the seventh publish waits.
    expect(published).toBe(6);
    release();
    await publishing;
    await waitFor(() => handled === 20, { timeoutMs: 5000, intervalMs: 10, message: "all handled" });
    await bus.close();
  });
});

describe("memory bus - handlers never share an event", () => {
  const received = async (
    event: CloudEvent,
    groups = 2,
  ): Promise<{ bus: ReturnType<typeof createMemoryBus>; got: CloudEvent[][] }> => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const topic = uniq("t");
    const got: CloudEvent[][] = [];
    for (let i = 0; i < groups; i++) {
      const mine: CloudEvent[] = [];
      got.push(mine);
      await bus.subscribe([topic], async (e) => void mine.push(e), { group: uniq("g") });
    }
    await bus.publish(topic, event);
    await waitFor(() => got.every((g) => g.length === 1), { timeoutMs: 5000, intervalMs: 5, message: "delivered" });
    return { bus, got };
  };

  it("memory bus - each handler gets its own copy: a change one makes is not seen by another nor the sender", async () => {
    const sent = newEvent({ source: "/t", type: "t", data: { order: { id: 7, items: [{ sku: "a" }] }, note: null } });
    const { bus, got } = await received(sent);
    const [a, b] = [got[0]![0]!, got[1]![0]!];
    expect(a).not.toBe(b);
    expect(a).not.toBe(sent);
    (a.data as { order: { items: Array<{ sku: string }> } }).order.items[0]!.sku = "changed";
    expect(b.data).toEqual({ order: { id: 7, items: [{ sku: "a" }] }, note: null });
    expect(sent.data).toEqual({ order: { id: 7, items: [{ sku: "a" }] }, note: null });
    await bus.close();
  });

  it("memory bus - an event with values JSON changes is copied for each handler as JSON writes it", async () => {
    const when = new Date("2026-01-02T03:04:05.000Z");
    const sent = newEvent({ source: "/t", type: "t", data: { when, gone: undefined, inf: Infinity, list: [1, 2] } });
    const { bus, got } = await received(sent);
    const [a, b] = [got[0]![0]!, got[1]![0]!];
    expect(a).not.toBe(b);
    expect(a.data).toEqual({ when: "2026-01-02T03:04:05.000Z", inf: null, list: [1, 2] });
    (a.data as { list: number[] }).list.push(3);
    expect(b.data).toEqual({ when: "2026-01-02T03:04:05.000Z", inf: null, list: [1, 2] });
    await bus.close();
  });

  it("memory bus - a queued event is what was published: the sender changing its object later changes nothing", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const topic = uniq("t");
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const got: CloudEvent[] = [];
    await bus.subscribe(
      [topic],
      async (e) => {
        got.push(e);
        await gate;
      },
      { group: uniq("g"), maxInFlight: 1 },
    );
    const first = newEvent({ source: "/t", type: "t", data: { n: 1 } });
    const second = newEvent({ source: "/t", type: "t", data: { n: 2, tags: ["a"] } });
    await bus.publish(topic, first);
    await bus.publish(topic, second);
    // The second waits in the queue behind the first; the sender reuses its objects meanwhile.
    (second.data as { n: number; tags: string[] }).n = 99;
    (second.data as { n: number; tags: string[] }).tags.push("b");
    second.id = "reused";
    release();
    await waitFor(() => got.length === 2, { timeoutMs: 5000, intervalMs: 5, message: "delivered" });
    expect(got[1]!.data).toEqual({ n: 2, tags: ["a"] });
    expect(got[1]!.id).not.toBe("reused");
    await bus.close();
  });

  it("memory bus - publishing an event that refers to itself rejects, as JSON cannot write it", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const data: Record<string, unknown> = { a: 1 };
    data["self"] = data;
    await expect(bus.publish(uniq("t"), newEvent({ source: "/t", type: "t", data }))).rejects.toThrow(/circular/);
    await bus.close();
  });
});
