/** The run's journal: what it records per event, and its bounds. */
import { describe, expect, it } from "vitest";
import { API_VERSION, createInstrumentation, newEvent, type Trigger } from "@ofevents/core";
import type { TriggerEvents } from "@ofevents/trigger";
import { Journal } from "../src/journal.js";

const trigger = {
  apiVersion: API_VERSION,
  kind: "Trigger",
  metadata: { name: "orders", namespace: "shop" },
  spec: {
    eventBus: "default",
    inputs: { order: { eventSource: "web", event: "created", filter: "data.amount >= 100" } },
    subscribers: [{ condition: "order", sink: { uri: "http://127.0.0.1:1/" } }],
  },
} as Trigger;

describe("journal - what happened to an event", () => {
  it("journal - names the expression that filtered an event out, and the reason of a dead letter", () => {
    const j = new Journal();
    const ev = createInstrumentation<TriggerEvents>();
    j.observeTrigger(trigger, ev);
    ev.emit("received", { input: "order", id: "e1" });
    ev.emit("filtered", { input: "order", id: "e1", reason: "filter" });
    ev.emit("received", { input: "order", id: "e2" });
    ev.emit("fired", { subscriber: 0, id: "e2", joined: [] });
    ev.emit("retried", { subscriber: 0, id: "e2", target: "http://s/", attempt: 1, error: new Error("answered 503") });
    ev.emit("dead_lettered", {
      subscriber: 0,
      id: "e2",
      target: "http://s/",
      deadLetter: "dl",
      error: new Error("answered 503"),
      event: newEvent({ id: "e2", source: "/s", type: "t" }),
    });
    expect(j.get("e1")!.steps.map((s) => [s.where, s.step, s.detail])).toEqual([
      ["trigger shop/orders", "received", { input: "order" }],
      ["trigger shop/orders", "filtered out", { input: "order", filter: "data.amount >= 100" }],
    ]);
    expect(j.get("e2")!.steps.map((s) => s.step)).toEqual(["received", "fired", "retried", "dead-lettered"]);
    expect(j.get("e2")!.steps[3]!.detail).toMatchObject({
      subscriber: 0,
      condition: "order",
      reason: "answered 503",
      to: "dl",
    });
  });

  it("journal - keeps the latest maxEvents events and maxSteps steps each, counting what it left out", () => {
    const j = new Journal(3, 2);
    for (const id of ["a", "b", "c", "d"]) j.record(id, "here", "received");
    expect(j.size).toBe(3);
    expect(j.get("a")).toBeUndefined();
    expect(j.recent(10).map((r) => r.id)).toEqual(["d", "c", "b"]);
    for (let i = 0; i < 5; i++) j.record("d", "here", `step ${i}`);
    expect(j.get("d")!.steps).toHaveLength(2);
    // "received" and "step 0" kept; steps 1 to 4 counted.
    expect(j.get("d")!.steps.map((s) => s.step)).toEqual(["received", "step 0"]);
    expect(j.get("d")!.omitted).toBe(4);
  });
});
