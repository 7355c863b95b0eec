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
