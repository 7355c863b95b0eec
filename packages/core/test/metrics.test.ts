import { readFile } from "node:fs/promises";
import { request } from "undici";
import { describe, expect, it } from "vitest";
import { Histogram, Registry } from "prom-client";
import { metricValue } from "../../../test/helpers/prometheus.js";
import { createInstrumentation, createMetrics, startMetricsServer } from "../src/index.js";
import type { BusMetricEvents, SourceMetricEvents, TriggerMetricEvents } from "../src/metrics.js";

const SRC = { namespace: "ns1", eventsource: "hooks" };
const TR = { namespace: "ns1", trigger: "orders" };

describe("metrics - event sources", () => {
  it("metrics - counts received, published, delivered and failed events per event, with in-flight and up gauges", async () => {
    const m = createMetrics();
    const events = createInstrumentation<SourceMetricEvents & { dispatched: { id: string } }>();
    m.observeSource(events, { namespace: "ns1", eventSource: "hooks" });
    events.emit("started", { event: "a" });
    events.emit("start_failed", { event: "b" });
    for (let i = 0; i < 4; i++) events.emit("dispatched", { event: "a", id: `id-${i}` });
    events.emit("published", { event: "a" });
    events.emit("published", { event: "a" });
    events.emit("failed", { event: "a" });
    events.emit("dispatched", { event: "c", id: "id-c" });
    events.emit("delivered", { event: "c" });

    const text = await m.text();
    const a = { ...SRC, event: "a" };
    expect(metricValue(text, "ofevents_eventsource_events_received_total", a)).toBe(4);
    expect(metricValue(text, "ofevents_eventsource_events_published_total", a)).toBe(2);
    expect(metricValue(text, "ofevents_eventsource_events_failed_total", a)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_dispatches_in_flight", a)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_events_delivered_total", { ...SRC, event: "c" })).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_dispatches_in_flight", { ...SRC, event: "c" })).toBe(0);
    expect(metricValue(text, "ofevents_eventsource_up", a)).toBe(1);
    expect(metricValue(text, "ofevents_eventsource_up", { ...SRC, event: "b" })).toBe(0);
    // A started event's series exist at 0 before anything happens.
    expect(metricValue(text, "ofevents_eventsource_events_delivered_total", a)).toBe(0);
    expect(metricValue(text, "ofevents_eventsource_events_received_total", { ...SRC, event: "b" })).toBeUndefined();
    // Event ids never become label values.
    expect(text).not.toContain("id-");
  });

  it("metrics - the function returned by observeSource stops counting", async () => {
    const m = createMetrics();
    const events = createInstrumentation<SourceMetricEvents>();
    const off = m.observeSource(events, { namespace: "ns1", eventSource: "hooks" });
    events.emit("dispatched", { event: "a" });
    off();
    events.emit("dispatched", { event: "a" });
    expect(metricValue(await m.text(), "ofevents_eventsource_events_received_total", { ...SRC, event: "a" })).toBe(1);
  });
});

describe("metrics - triggers", () => {
  function trigger() {
    const m = createMetrics();
    const events = createInstrumentation<TriggerMetricEvents>();
    m.observeTrigger(events, { namespace: "ns1", trigger: "orders" });
    return { m, events };
  }

  it("metrics - counts received and filtered events by input, subscriber and reason", async () => {
    const { m, events } = trigger();
    for (let i = 0; i < 5; i++) events.emit("received", { input: "order" });
    events.emit("received", { input: "tick" });
    events.emit("filtered", { input: "order", reason: "filter" });
    events.emit("filtered", { input: "order", reason: "filter" });
    events.emit("filtered", { input: "order", reason: "error" });
    events.emit("filtered", { subscriber: 1, reason: "filter" });

    const text = await m.text();
    expect(metricValue(text, "ofevents_trigger_events_received_total", { ...TR, input: "order" })).toBe(5);
    expect(metricValue(text, "ofevents_trigger_events_received_total", { ...TR, input: "tick" })).toBe(1);
    const filtered = "ofevents_trigger_events_filtered_total";
    expect(metricValue(text, filtered, { ...TR, input: "order", subscriber: "", reason: "filter" })).toBe(2);
    expect(metricValue(text, filtered, { ...TR, input: "order", subscriber: "", reason: "error" })).toBe(1);
    expect(metricValue(text, filtered, { ...TR, input: "", subscriber: "1", reason: "filter" })).toBe(1);
  });

  it("metrics - the pending gauge rises with pending events and falls when they are consumed, expire or are evicted", async () => {
    const { m, events } = trigger();
    const p = { subscriber: 0, input: "order" };
    for (let i = 0; i < 5; i++) events.emit("pending", p);
    events.emit("consumed", p);
    events.emit("expired", p);
    events.emit("evicted", p);
    events.emit("uncorrelated", p);

    const text = await m.text();
    const l = { ...TR, subscriber: "0", input: "order" };
    expect(metricValue(text, "ofevents_trigger_events_pending", l)).toBe(2);
    expect(metricValue(text, "ofevents_trigger_events_expired_total", l)).toBe(1);
    expect(metricValue(text, "ofevents_trigger_events_evicted_total", l)).toBe(1);
    expect(metricValue(text, "ofevents_trigger_events_uncorrelated_total", l)).toBe(1);
  });

  it("metrics - firings, in-flight deliveries, outcomes by target, and the delivery latency histogram", async () => {
    const { m, events } = trigger();
    const sink = "http://fn.ns1.svc:8080/hook";
    for (let i = 0; i < 3; i++) events.emit("fired", { subscriber: 0 });
    events.emit("settled", { subscriber: 0 });
    events.emit("delivered", { subscriber: 0, target: sink, kind: "sink", durationMs: 3 });
    events.emit("delivered", { subscriber: 0, target: sink, kind: "sink", durationMs: 40 });
    events.emit("delivered", { subscriber: 0, target: "out-topic", kind: "topic", durationMs: 2_000 });
    events.emit("delivered", { subscriber: 0, target: sink, kind: "sink" }); // no duration: counted only
    events.emit("retried", { subscriber: 0, target: sink });
    events.emit("retried", { subscriber: 0, target: sink });
    events.emit("dead_lettered", { subscriber: 0, target: sink });
    events.emit("dropped", { subscriber: 1, target: "out-topic" });

    const text = await m.text();
    const s0 = { ...TR, subscriber: "0" };
    expect(metricValue(text, "ofevents_trigger_firings_total", s0)).toBe(3);
    expect(metricValue(text, "ofevents_trigger_deliveries_in_flight", s0)).toBe(2);
    expect(metricValue(text, "ofevents_trigger_events_delivered_total", { ...s0, kind: "sink", target: sink })).toBe(3);
    expect(
      metricValue(text, "ofevents_trigger_events_delivered_total", { ...s0, kind: "topic", target: "out-topic" }),
    ).toBe(1);
    expect(metricValue(text, "ofevents_trigger_delivery_retries_total", { ...s0, target: sink })).toBe(2);
    expect(metricValue(text, "ofevents_trigger_events_dead_lettered_total", { ...s0, target: sink })).toBe(1);
    expect(
      metricValue(text, "ofevents_trigger_events_dropped_total", { ...TR, subscriber: "1", target: "out-topic" }),
    ).toBe(1);

    const h = "ofevents_trigger_delivery_duration_seconds";
    const sinkH = { ...s0, kind: "sink" };
    expect(metricValue(text, `${h}_count`, sinkH)).toBe(2);
    expect(metricValue(text, `${h}_sum`, sinkH)).toBeCloseTo(0.043, 6);
    expect(metricValue(text, `${h}_bucket`, { ...sinkH, le: "0.0025" })).toBe(0);
    expect(metricValue(text, `${h}_bucket`, { ...sinkH, le: "0.005" })).toBe(1);
    expect(metricValue(text, `${h}_bucket`, { ...sinkH, le: "0.05" })).toBe(2);
    expect(metricValue(text, `${h}_bucket`, { ...sinkH, le: "+Inf" })).toBe(2);
    expect(metricValue(text, `${h}_bucket`, { ...s0, kind: "topic", le: "1" })).toBe(0);
    expect(metricValue(text, `${h}_bucket`, { ...s0, kind: "topic", le: "2.5" })).toBe(1);
  });

  it("metrics - the latency histogram prints exactly what a prom-client Histogram prints for the same observations", async () => {
    const { m, events } = trigger();
    const reference = new Registry();
    const h = new Histogram({
      name: "ofevents_trigger_delivery_duration_seconds",
      help: "Time from the trigger's receipt of an event (the last joined one) to its delivery, retries included.",
      labelNames: ["namespace", "trigger", "subscriber", "kind"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [reference],
    });
    // Bucket edges (1 ms, 2.5 ms: a value on a bound is in that bucket), between bounds, above
    // the last one (+Inf only), two subscribers and both kinds.
    const seen: Array<[number, number, "sink" | "topic"]> = [
      [0.5, 0, "sink"],
      [1, 0, "sink"],
      [2.5, 0, "sink"],
      [40, 0, "sink"],
      [2_000, 1, "topic"],
      [1_000_000, 1, "topic"],
      [7, 1, "sink"],
    ];
    for (const [ms, subscriber, kind] of seen) {
      events.emit("delivered", { subscriber, target: "http://fn/", kind, durationMs: ms });
      h.observe({ ...TR, subscriber: String(subscriber), kind }, ms / 1000);
    }
    const block = (text: string): string =>
      text
        .split("\n\n")
        .find((b) => b.startsWith("# HELP ofevents_trigger_delivery_duration_seconds "))!
        .trim();
    expect(block(await m.text())).toBe(block(await reference.metrics()));
    expect(
      metricValue(await m.text(), "ofevents_trigger_delivery_duration_seconds_bucket", {
        ...TR,
        subscriber: "0",
        kind: "sink",
        le: "0.001",
      }),
    ).toBe(2);
  });

  it("metrics - a sink URL label keeps scheme, host and path, never credentials or query", async () => {
    const { m, events } = trigger();
    events.emit("delivered", {
      subscriber: 0,
      target: "https://user:secret@sink.example:8443/in?token=abc#x",
      kind: "sink",
    });
    const text = await m.text();
    expect(
      metricValue(text, "ofevents_trigger_events_delivered_total", {
        ...TR,
        subscriber: "0",
        kind: "sink",
        target: "https://sink.example:8443/in",
      }),
    ).toBe(1);
    expect(text).not.toContain("secret");
    expect(text).not.toContain("token");
  });
});

describe("metrics - buses and registries", () => {
  it("metrics - counts bus publishes, redeliveries and dead letters per topic and group", async () => {
    const m = createMetrics();
    const events = createInstrumentation<BusMetricEvents>();
    m.observeBus(events, { bus: "memory:default", driver: "memory" });
    events.emit("published", { topic: "t1" });
    events.emit("published", { topic: "t1" });
    events.emit("redelivery", { topic: "t1", group: "g" });
    events.emit("dead_lettered", { topic: "t1", group: "g" });
    const text = await m.text();
    const l = { bus: "memory:default", driver: "memory", topic: "t1" };
    expect(metricValue(text, "ofevents_bus_events_published_total", l)).toBe(2);
    expect(metricValue(text, "ofevents_bus_redeliveries_total", { ...l, group: "g" })).toBe(1);
    expect(metricValue(text, "ofevents_bus_events_dead_lettered_total", { ...l, group: "g" })).toBe(1);
  });

  it("metrics - uses the registry given, with process metrics only on request", async () => {
    const registry = new Registry();
    const m = createMetrics(registry, { processMetrics: true });
    expect(m.registry).toBe(registry);
    const text = await registry.metrics();
    expect(text).toContain("# TYPE ofevents_trigger_events_received_total counter");
    expect(text).toContain("ofevents_process_cpu_seconds_total");
    expect(await createMetrics().text()).not.toContain("process_cpu");
    // Two sets of the same metrics in one registry would collide.
    expect(() => createMetrics(registry)).toThrow();
  });

  it("metrics - the metrics server answers GET /metrics in the Prometheus text format, 405 and 404 otherwise", async () => {
    const m = createMetrics();
    const events = createInstrumentation<BusMetricEvents>();
    m.observeBus(events, { bus: "b", driver: "memory" });
    events.emit("published", { topic: "t" });
    const server = await startMetricsServer(m, { port: 0 });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      const res = await request(`${base}/metrics`);
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
      const text = await res.body.text();
      expect(metricValue(text, "ofevents_bus_events_published_total", { bus: "b", topic: "t" })).toBe(1);
      const post = await request(`${base}/metrics`, { method: "POST", body: "" });
      expect(post.statusCode).toBe(405);
      await post.body.dump();
      const other = await request(`${base}/other`);
      expect(other.statusCode).toBe(404);
      await other.body.dump();
    } finally {
      await server.close();
    }
  });
});

describe("metrics - documentation", () => {
  it("metrics - every metric is documented in docs/metrics.md", async () => {
    const doc = await readFile(new URL("../../../docs/metrics.md", import.meta.url), "utf8");
    const names = createMetrics()
      .registry.getMetricsAsArray()
      .map((m) => m.name);
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((n) => !doc.includes(`\`${n}\``))).toEqual([]);
  });
});
