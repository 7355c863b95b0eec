/**
 * Stopping a trigger takes a bounded time: retries are cut short, attempts in flight get a grace
 * period, and what was not delivered goes back to the bus (redelivered by a durable one) and is
 * reported.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  createExpressionEngine,
  createLogger,
  newEvent,
  silentLogger,
  type CloudEvent,
  type Logger,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import { createEventBus, createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { NatsServer } from "../../../test/helpers/nats.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { startTrigger, type TriggerRuntime } from "../src/index.js";
import { Sink } from "./support.js";

const engine = createExpressionEngine();

/** A logger that keeps its JSON lines, to assert what a stop reports. */
function recordingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: "info",
    write: (l) => void lines.push(JSON.parse(l) as Record<string, unknown>),
  });
  return { logger, lines };
}

function trigger(topic: string, subscriber: Trigger["spec"]["subscribers"][number]): Trigger {
  const [, eventSource, event] = /^default-([^-]+)-(.+)$/.exec(topic)!;
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name: `stop${randomSuffix()}` },
    spec: {
      eventBus: "default",
      inputs: { a: { eventSource: eventSource!, event: event! } },
      subscribers: [subscriber],
    },
  } as Trigger;
}

const ev = (): CloudEvent => newEvent({ id: `stop-${randomSuffix()}`, source: "/src", type: "t", data: { k: 1 } });

describe("trigger - shutdown", () => {
  let sinks: SinkClient;
  let bus: EventBus | undefined;
  let rt: TriggerRuntime | undefined;
  const servers: Sink[] = [];
  const sink = async (): Promise<Sink> => {
    const s = await new Sink().start();
    servers.push(s);
    return s;
  };

  beforeAll(() => {
    sinks = createSinkClient();
  });
  afterAll(async () => {
    await sinks.close();
  });
  afterEach(async () => {
    await rt?.stop();
    rt = undefined;
    await bus?.close();
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  it("trigger - stop cuts a slow retry schedule short and reports the events returned to the in-memory bus", async () => {
    const { logger, lines } = recordingLogger();
    bus = createMemoryBus({ logger: silentLogger() });
    const out = await sink();
    const dls = await sink();
    out.status = () => 503;
    const topic = `default-src${randomSuffix()}-a`;
    rt = await startTrigger(
      trigger(topic, {
        condition: "a",
        sink: { uri: out.url },
        deadLetterSink: { uri: dls.url },
        delivery: { retry: 5, backoffDelay: "2s" },
      }),
      { bus, logger, engine, sinks },
    );
    const retried = new Set<string>();
    rt.events.on("retried", (r) => retried.add(r.id));
    const events = [ev(), ev(), ev()];
    for (const e of events) await bus.publish(topic, e);
    await waitFor(() => retried.size === 3, { timeoutMs: 5_000, intervalMs: 5, message: "first attempts" });
    const t0 = Date.now();
    await rt.stop();
    const took = Date.now() - t0;
    rt = undefined;
    // Without the cut, the schedule would run 2+4+8+16+32 s per event.
    expect(took).toBeLessThan(1_500);
    expect(out.received).toHaveLength(3);
    // Not a failure of the event: not dead-lettered.
    expect(dls.received).toHaveLength(0);
    const report = lines.find((l) => String(l["msg"]).startsWith("stopped: 3 events not yet delivered"));
    expect(report, JSON.stringify(lines.map((l) => l["msg"]))).toBeDefined();
    expect(report!["level"]).toBe(40);
    expect(report!["count"]).toBe(3);
    expect(String(report!["msg"])).toContain("in-memory bus");
    expect([...(report!["ids"] as string[])].sort()).toEqual(events.map((e) => e.id).sort());
    expect(lines.some((l) => l["msg"] === "retrying delivery" && (l["attempt"] as number) > 1)).toBe(false);
  });

  it("trigger - stop cancels an attempt in flight after the grace period", async () => {
    const { logger, lines } = recordingLogger();
    bus = createMemoryBus({ logger: silentLogger() });
    const out = await sink();
    out.delayMs = 30_000;
    const topic = `default-src${randomSuffix()}-a`;
    rt = await startTrigger(
      trigger(topic, { condition: "a", sink: { uri: out.url }, delivery: { retry: 5, backoffDelay: "2s" } }),
      { bus, logger, engine, sinks, stopGraceMs: 400 },
    );
    const e = ev();
    await bus.publish(topic, e);
    await waitFor(() => out.received.length === 1, { timeoutMs: 5_000, intervalMs: 5, message: "attempt in flight" });
    const t0 = Date.now();
    await rt.stop();
    const took = Date.now() - t0;
    rt = undefined;
    expect(took).toBeGreaterThanOrEqual(390);
    expect(took).toBeLessThan(2_000);
    expect(lines.some((l) => String(l["msg"]).startsWith("stop grace period over"))).toBe(true);
    const report = lines.find((l) => String(l["msg"]).startsWith("stopped: 1 events"));
    expect(report?.["ids"]).toEqual([e.id]);
  });

  it("trigger - an attempt in flight that finishes within the grace period counts as delivered", async () => {
    const { logger, lines } = recordingLogger();
    bus = createMemoryBus({ logger: silentLogger() });
    const out = await sink();
    out.delayMs = 300;
    const topic = `default-src${randomSuffix()}-a`;
    rt = await startTrigger(trigger(topic, { condition: "a", sink: { uri: out.url } }), {
      bus,
      logger,
      engine,
      sinks,
      stopGraceMs: 5_000,
    });
    const delivered: string[] = [];
    rt.events.on("delivered", (d) => delivered.push(d.id));
    const e = ev();
    await bus.publish(topic, e);
    await waitFor(() => out.received.length === 1, { timeoutMs: 5_000, intervalMs: 5, message: "attempt in flight" });
    await rt.stop();
    rt = undefined;
    expect(delivered).toEqual([e.id]);
    expect(lines.some((l) => String(l["msg"]).startsWith("stopped:"))).toBe(false);
  });
});

describe("trigger - shutdown on JetStream", () => {
  let server: NatsServer;
  let sinks: SinkClient;
  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true });
    sinks = createSinkClient();
  });
  afterAll(async () => {
    await sinks.close();
    await server?.stop();
  });

  it("trigger - an event whose retries a stop cut short is redelivered by JetStream to the restarted trigger", async () => {
    const logger = silentLogger();
    const out = await new Sink().start();
    try {
      out.status = () => 503;
      const topic = `default-src${randomSuffix()}-a`;
      const t = trigger(topic, { condition: "a", sink: { uri: out.url }, delivery: { retry: 5, backoffDelay: "2s" } });
      const spec = { jetstream: { url: server.url } };
      const bus1 = await createEventBus(spec, { logger });
      // Created before the first publish, so the stream and the trigger's consumer exist.
      let rt = await startTrigger(t, { bus: bus1, logger, engine, sinks });
      const retried: string[] = [];
      rt.events.on("retried", (r) => retried.push(r.id));
      const e = ev();
      await bus1.publish(topic, e);
      await waitFor(() => retried.length === 1, { timeoutMs: 10_000, intervalMs: 5, message: "first attempt" });
      const t0 = Date.now();
      await rt.stop();
      expect(Date.now() - t0).toBeLessThan(2_000);
      await bus1.close();
      expect(out.ids()).toEqual([e.id]);

      out.status = () => 200;
      const bus2 = await createEventBus(spec, { logger });
      rt = await startTrigger(t, { bus: bus2, logger, engine, sinks });
      try {
        await waitFor(() => out.received.length === 2, {
          timeoutMs: 20_000,
          intervalMs: 5,
          message: "redelivery after restart",
        });
        expect(out.ids()).toEqual([e.id, e.id]);
      } finally {
        await rt.stop();
        await bus2.close();
      }
    } finally {
      await out.stop();
    }
  });
});
