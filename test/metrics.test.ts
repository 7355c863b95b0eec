/**
 * Prometheus metrics of the runners: `startEmbedded` (what `ofevents run --metrics-port` runs) with
 * a webhook, a filtering trigger and a local sync Function, and a single-resource entrypoint
 * serving /metrics next to /healthz. Counts are asserted exactly, from GET /metrics.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  createExpressionEngine,
  createInstrumentation,
  createMetrics,
  newEvent,
  silentLogger,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient } from "@ofevents/delivery";
import { main, startEmbedded, startSingle, type Embedded } from "@ofevents/cli";
import { createMemoryBus } from "@ofevents/eventbus";
import { startTrigger, type TriggerEvents } from "@ofevents/trigger";
import { metricValue } from "./helpers/prometheus.js";
import { freePorts } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

async function scrape(port: number): Promise<{ status: number; contentType: string; text: string }> {
  const res = await request(`http://127.0.0.1:${port}/metrics`);
  return { status: res.statusCode, contentType: String(res.headers["content-type"]), text: await res.body.text() };
}

async function post(url: string, data: unknown): Promise<number> {
  const res = await request(url, {
    method: "POST",
    body: JSON.stringify(data),
    headers: { "content-type": "application/json" },
  });
  await res.body.dump();
  return res.statusCode;
}

describe("metrics - ofevents run (embedded) serves /metrics", () => {
  let dir: string;
  let embedded: Embedded;
  let webhook: string;
  let metricsPort: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-metrics-"));
    const [port] = await freePorts(1);
    webhook = `http://127.0.0.1:${port}/orders`;
    await writeFile(join(dir, "fn.mjs"), `export default async (event) => ({ ok: event.id });\n`);
    await writeFile(
      join(dir, "all.yaml"),
      `apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata:
  name: orders-fn
  annotations: { ofevents.io/module: ./fn.mjs }
spec: { version: v1.0.0, image: example/orders-fn:latest, serving: { runtime: knative } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: shop }
spec:
  eventBus: default
  webhook: { orders: { port: "${port}", endpoint: /orders, method: POST } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: big }
spec:
  eventBus: default
  inputs:
    order: { eventSource: shop, event: orders, filter: "data.amount >= 100" }
  subscribers:
    - condition: order
      sink: { ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: orders-fn } }
    - condition: order
      filter: "data.amount > 200"
      sink: { ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: orders-fn } }
`,
    );
    embedded = await startEmbedded({ paths: [dir], logger: silentLogger(), functionsPort: 0, metricsPort: 0 });
    metricsPort = embedded.metricsPort!;
  });
  afterAll(async () => {
    await embedded?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("metrics - counts received, filtered, fired and delivered events exactly, with the latency histogram", async () => {
    const amounts = [250, 5, 120, 1, 100];
    for (const amount of amounts) expect(await post(webhook, { amount })).toBe(200);

    const tr = { namespace: "default", trigger: "big" };
    const s0 = { ...tr, subscriber: "0" };
    const s1 = { ...tr, subscriber: "1" };
    // Deliveries happen after the webhook answered: wait until both subscribers settled them all.
    const text = await waitFor(
      async () => {
        const { text } = await scrape(metricsPort);
        const delivered = metricValue(text, "ofevents_trigger_events_delivered_total", tr);
        const inFlight = metricValue(text, "ofevents_trigger_deliveries_in_flight", tr);
        return delivered === 4 && inFlight === 0 ? text : undefined;
      },
      { timeoutMs: 10_000, message: "4 deliveries settled" },
    );

    const src = { namespace: "default", eventsource: "shop", event: "orders" };
    expect(metricValue(text, "ofevents_eventsource_events_received_total", src)).toBe(5);
    expect(metricValue(text, "ofevents_eventsource_events_published_total", src)).toBe(5);
    expect(metricValue(text, "ofevents_eventsource_events_failed_total", src)).toBe(0);
    expect(metricValue(text, "ofevents_eventsource_up", src)).toBe(1);
    expect(
      metricValue(text, "ofevents_bus_events_published_total", { driver: "memory", topic: "default-shop-orders" }),
    ).toBe(5);

    expect(metricValue(text, "ofevents_trigger_events_received_total", { ...tr, input: "order" })).toBe(5);
    // The input filter let 3 of 5 through; subscriber 1's own filter kept 1 of those 3.
    expect(
      metricValue(text, "ofevents_trigger_events_filtered_total", {
        ...tr,
        input: "order",
        subscriber: "",
        reason: "filter",
      }),
    ).toBe(2);
    expect(
      metricValue(text, "ofevents_trigger_events_filtered_total", {
        ...tr,
        input: "",
        subscriber: "1",
        reason: "filter",
      }),
    ).toBe(2);
    expect(metricValue(text, "ofevents_trigger_firings_total", s0)).toBe(3);
    expect(metricValue(text, "ofevents_trigger_firings_total", s1)).toBe(1);
    expect(metricValue(text, "ofevents_trigger_events_delivered_total", { ...s0, kind: "sink" })).toBe(3);
    expect(metricValue(text, "ofevents_trigger_events_delivered_total", { ...s1, kind: "sink" })).toBe(1);
    expect(metricValue(text, "ofevents_trigger_delivery_duration_seconds_count", { ...s0, kind: "sink" })).toBe(3);
    expect(metricValue(text, "ofevents_trigger_delivery_duration_seconds_count", { ...s1, kind: "sink" })).toBe(1);
    const sum = metricValue(text, "ofevents_trigger_delivery_duration_seconds_sum", tr)!;
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(10);
    for (const name of ["dropped", "dead_lettered"])
      expect(metricValue(text, `ofevents_trigger_events_${name}_total`, tr)).toBeUndefined();
    // Process metrics come along when the runner serves metrics.
    expect(metricValue(text, "ofevents_process_cpu_seconds_total")).toBeGreaterThan(0);
  });

  it("metrics - GET /metrics answers in the Prometheus text format; other paths 404", async () => {
    const r = await scrape(metricsPort);
    expect(r.status).toBe(200);
    expect(r.contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(r.text).toContain("# TYPE ofevents_trigger_delivery_duration_seconds histogram");
    const other = await request(`http://127.0.0.1:${metricsPort}/healthz`);
    await other.body.dump();
    expect(other.statusCode).toBe(404);
  });

  it("metrics - ofevents run rejects a --metrics-port that is not a port number", async () => {
    let err = "";
    const code = await main(["run", "-f", dir, "--metrics-port", "nope"], { out: () => {}, err: (s) => (err += s) });
    expect(code).toBe(1);
    expect(err).toContain("--metrics-port must be a port number");
  });
});

describe("metrics - the single-resource entrypoint serves /metrics on its health port", () => {
  let dir: string;
  let sink: Server;
  let sinkUrl: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-metrics-single-"));
    sink = createServer((req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(200).end());
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    await new Promise((r) => sink?.close(r));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("metrics - an EventSource with a sync sink counts its deliveries; /healthz still answers", async () => {
    const [webhookPort, healthPort] = await freePorts(2);
    const file = join(dir, "es.yaml");
    await writeFile(
      file,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: direct, namespace: ns1 }
spec:
  sink: { uri: "${sinkUrl}" }
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
`,
    );
    const single = await startSingle({
      kind: "EventSource",
      paths: [file],
      logger: silentLogger(),
      host: "127.0.0.1",
      healthHost: "127.0.0.1",
      healthPort,
    });
    try {
      for (let i = 0; i < 2; i++) expect(await post(`http://127.0.0.1:${webhookPort}/in`, { i })).toBe(200);
      const r = await scrape(single.healthPort);
      expect(r.status).toBe(200);
      const l = { namespace: "ns1", eventsource: "direct", event: "in" };
      // The webhook answers only after the sync sink did: the counts are final.
      expect(metricValue(r.text, "ofevents_eventsource_events_received_total", l)).toBe(2);
      expect(metricValue(r.text, "ofevents_eventsource_events_delivered_total", l)).toBe(2);
      expect(metricValue(r.text, "ofevents_eventsource_dispatches_in_flight", l)).toBe(0);
      expect(metricValue(r.text, "ofevents_nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
      const h = await request(`http://127.0.0.1:${healthPort}/healthz`);
      expect(await h.body.text()).toBe("ok");
    } finally {
      await single.stop();
    }
  });
});

describe("metrics - a trigger's gauges stay exact through joins, evictions and failed deliveries", () => {
  let sink: Server;
  let sinkUrl: string;
  let status = 200;

  beforeAll(async () => {
    sink = createServer((req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(status).end());
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    await new Promise((r) => sink?.close(r));
  });

  it("metrics - pending rises and falls with joins and evictions; in-flight returns to 0 after a dropped delivery", async () => {
    const logger = silentLogger();
    const bus = createMemoryBus({ logger });
    const sinks = createSinkClient();
    const metrics = createMetrics();
    const instrumentation = createInstrumentation<TriggerEvents>();
    metrics.observeTrigger(instrumentation, { namespace: "ns1", trigger: "join" });
    const trigger = {
      apiVersion: API_VERSION,
      kind: "Trigger",
      metadata: { name: "join", namespace: "ns1" },
      spec: {
        eventBus: "default",
        inputs: { a: { eventSource: "src", event: "a" }, b: { eventSource: "src", event: "b" } },
        subscribers: [
          {
            condition: "a && b",
            sink: { uri: sinkUrl },
            correlation: { window: "1m", maxPending: 1 },
            delivery: { retry: 0 },
          },
        ],
      },
    } as Trigger;
    const rt = await startTrigger(trigger, {
      bus,
      logger,
      engine: createExpressionEngine(),
      sinks,
      instrumentation,
    });
    const l = { namespace: "ns1", trigger: "join", subscriber: "0" };
    const read = async (name: string, labels: Record<string, string> = {}) =>
      metricValue(await metrics.text(), name, { ...l, ...labels });
    const publish = (event: "a" | "b") =>
      bus.publish(`ns1-src-${event}`, newEvent({ source: "/t", type: "t", data: { event } }));
    try {
      await publish("a");
      await waitFor(async () => (await read("ofevents_trigger_events_pending", { input: "a" })) === 1);
      // maxPending 1: a second `a` evicts the first.
      await publish("a");
      await waitFor(async () => (await read("ofevents_trigger_events_evicted_total", { input: "a" })) === 1);
      expect(await read("ofevents_trigger_events_pending", { input: "a" })).toBe(1);
      // `b` joins the pending `a`: it is consumed and the pair delivered.
      await publish("b");
      await waitFor(
        async () =>
          (await read("ofevents_trigger_deliveries_in_flight")) === 0 &&
          (await read("ofevents_trigger_firings_total")) === 1,
      );
      expect(await read("ofevents_trigger_events_pending", { input: "a" })).toBe(0);
      expect(await read("ofevents_trigger_events_delivered_total", { kind: "sink" })).toBe(1);
      expect(await read("ofevents_trigger_delivery_duration_seconds_count", { kind: "sink" })).toBe(1);

      // A 400 is not retried; with no dead-letter target the event is dropped and counted.
      status = 400;
      await publish("a");
      await publish("b");
      await waitFor(async () => (await read("ofevents_trigger_events_dropped_total")) === 1);
      await waitFor(async () => (await read("ofevents_trigger_deliveries_in_flight")) === 0);
      expect(await read("ofevents_trigger_firings_total")).toBe(2);
      expect(await read("ofevents_trigger_events_delivered_total")).toBe(1);
      expect(await read("ofevents_trigger_events_pending")).toBe(0);
    } finally {
      status = 200;
      await rt.stop();
      await bus.close();
      await sinks.close();
    }
  });
});
