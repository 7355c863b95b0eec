/** The live page's model: the graph built from manifests, and the counters fed by instrumentation. */
import { describe, expect, it } from "vitest";
import {
  API_VERSION,
  createInstrumentation,
  newEvent,
  type EventSource,
  type Manifests,
  type Trigger,
} from "@ofevents/core";
import type { SourceEvents } from "@ofevents/eventsource";
import type { TriggerEvents } from "@ofevents/trigger";
import { FlowStats, buildGraph } from "../src/flow.js";

const located = <T>(resource: T) => ({ resource, file: "m.yaml", docIndex: 0, line: 1 });

const es = {
  apiVersion: API_VERSION,
  kind: "EventSource" as const,
  metadata: { name: "shop", namespace: "prod" },
  spec: {
    eventBus: "bus",
    webhook: { order: { port: "1", endpoint: "/o" } },
    cron: { tick: { schedule: "@every 1s" } },
  },
};
const trigger = {
  apiVersion: API_VERSION,
  kind: "Trigger" as const,
  metadata: { name: "t", namespace: "prod" },
  spec: {
    eventBus: "bus",
    inputs: {
      o: { eventSource: "shop", event: "order", filter: "data.n > 1" },
      k: { eventSource: "shop", event: "tick" },
    },
    subscribers: [
      { condition: "o", sink: { uri: "http://s/" }, deadLetterTopic: "dl" },
      {
        condition: "o && k",
        topic: "out",
        correlation: { window: "10s" },
        deadLetterSink: { ref: { apiVersion: "core.openfunction.io/v1beta1", kind: "Function", name: "dead" } },
      },
    ],
  },
};

function manifests(): Manifests {
  return {
    eventSources: [located(es)],
    triggers: [located(trigger)],
    eventBuses: [],
    clusterEventBuses: [],
    functions: [],
    secrets: [],
    skipped: [],
    ignoredFiles: [],
  } as unknown as Manifests;
}

describe("flow page model", () => {
  // Events in the order of the source kinds (cron before webhook), each followed by its topic.
  it("draws sources, topics on their bus, the trigger's inputs, subscribers, targets and dead-letter targets", () => {
    const g = buildGraph(manifests(), (name, ns) => `EventBus:${ns}/${name}`);
    const ids = g.nodes.map((n) => `${n.column} ${n.id}`);
    expect(ids).toEqual([
      "0 source:prod/shop/tick",
      "1 topic:EventBus:prod/bus/prod-shop-tick",
      "0 source:prod/shop/order",
      "1 topic:EventBus:prod/bus/prod-shop-order",
      "2 trigger:prod/t",
      "3 subscriber:prod/t/0",
      "4 sink:http://s/",
      "1 topic:EventBus:prod/bus/dl",
      "3 subscriber:prod/t/1",
      "4 topic:EventBus:prod/bus/out",
      "4 function:prod/dead",
    ]);
    const edges = Object.fromEntries(g.edges.map((e) => [e.id, [e.kind, e.counters?.of]]));
    expect(edges).toMatchObject({
      "topic:EventBus:prod/bus/prod-shop-order -> trigger:prod/t#o": ["input", "trigger:prod/t#o"],
      "trigger:prod/t -> subscriber:prod/t/1": ["subscribe", "subscriber:prod/t/1"],
      "subscriber:prod/t/0 -> topic:EventBus:prod/bus/dl": ["dead-letter", "subscriber:prod/t/0"],
      "subscriber:prod/t/1 -> function:prod/dead": ["dead-letter", "subscriber:prod/t/1"],
    });
    expect(g.nodes.find((n) => n.id === "subscriber:prod/t/1")!.detail).toEqual({ condition: "o && k", window: "10s" });
  });

  it("counts per node, keeps gauges for joins and deliveries in flight, and keeps dead letters to redrive", () => {
    const stats = new FlowStats();
    const src = createInstrumentation<SourceEvents>();
    const tr = createInstrumentation<TriggerEvents>();
    stats.observeSource(es as unknown as EventSource, src);
    stats.observeTrigger(trigger as unknown as Trigger, tr);
    src.emit("dispatched", { eventSource: "shop", event: "order", id: "a" });
    src.emit("published", { eventSource: "shop", event: "order", id: "a", topic: "prod-shop-order" });
    tr.emit("received", { input: "o", id: "a" });
    tr.emit("filtered", { input: "o", id: "b", reason: "filter" });
    tr.emit("pending", { subscriber: 1, input: "o", id: "a", key: "" });
    tr.emit("pending", { subscriber: 1, input: "o", id: "c", key: "" });
    tr.emit("expired", { subscriber: 1, input: "o", id: "c" });
    tr.emit("fired", { subscriber: 0, id: "a", joined: [] });
    tr.emit("retried", { subscriber: 0, id: "a", target: "http://s/", attempt: 1, error: new Error("503") });
    const event = newEvent({ id: "a", source: "/s", type: "t" });
    tr.emit("dead_lettered", {
      subscriber: 0,
      id: "a",
      target: "http://s/",
      deadLetter: "dl",
      error: new Error("503"),
      event,
    });
    const before = stats.version;
    tr.emit("settled", { subscriber: 0, id: "a" });
    expect(stats.version).toBeGreaterThan(before);
    expect(stats.snapshot()).toEqual({
      "source:prod/shop/order": { received: 1, published: 1 },
      "trigger:prod/t": { received: 1, filteredOut: 1 },
      "trigger:prod/t#o": { received: 1, filteredOut: 1 },
      "subscriber:prod/t/1": { waiting: 1, expired: 1 },
      "subscriber:prod/t/0": { fired: 1, inFlight: 0, retried: 1, deadLettered: 1 },
    });
    expect(stats.latestOf("subscriber:prod/t/0")).toEqual(["a"]);
    expect(stats.deadLetter("subscriber:prod/t/0", "a")).toMatchObject({ target: "http://s/", reason: "503", event });
    stats.forget("subscriber:prod/t/0", "a");
    expect(stats.deadLettersOf("subscriber:prod/t/0")).toEqual([]);
    expect(stats.snapshot()["subscriber:prod/t/0"]!["redriven"]).toBe(1);
  });
});
