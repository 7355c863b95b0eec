import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  createExpressionEngine,
  newEvent,
  silentLogger,
  type CloudEvent,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { waitFor } from "../../../test/helpers/wait.js";
import { JOINED_EXTENSION, startTrigger, type TriggerRuntime } from "../src/index.js";
import { Sink } from "./support.js";

const logger = silentLogger();
const engine = createExpressionEngine();

const settle = () => new Promise((r) => setTimeout(r, 150));

function trigger(subscribers: Trigger["spec"]["subscribers"], inputs?: Trigger["spec"]["inputs"]): Trigger {
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name: "t" },
    spec: {
      eventBus: "default",
      inputs: inputs ?? { a: { eventSource: "src", event: "a" }, b: { eventSource: "src", event: "b" } },
      subscribers,
    },
  } as Trigger;
}

let n = 0;
const ev = (data: unknown): CloudEvent => newEvent({ id: `e${++n}`, source: "/src", type: "t", data });
const A = "default-src-a";
const B = "default-src-b";

describe("trigger - conditions, filters and delivery", () => {
  let sinks: SinkClient;
  let bus: EventBus;
  let sink: Sink;
  let dls: Sink;
  let rt: TriggerRuntime | undefined;

  beforeAll(async () => {
    sinks = createSinkClient();
  });
  afterAll(async () => {
    await sinks.close();
  });
  const start = async (t: Trigger): Promise<TriggerRuntime> => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    return rt;
  };
  afterEach(async () => {
    await rt?.stop();
    await bus.close();
    await sink.stop();
    await dls.stop();
    rt = undefined;
  });

  it("trigger - a one-input condition delivers every event that passes the input filter, unchanged", async () => {
    const t = trigger([{ condition: "a", sink: { uri: "" } }], {
      a: { eventSource: "src", event: "a", filter: "data.amount >= 100" },
    });
    t.spec.subscribers[0]!.sink = { uri: "http://placeholder" };
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    t.spec.subscribers[0]!.sink = { uri: sink.url };
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    const big = ev({ amount: 150 });
    await bus.publish(A, ev({ amount: 5 }));
    await bus.publish(A, big);
    await bus.publish(A, ev({ amount: 100 }));
    await waitFor(() => sink.received.length === 2, { timeoutMs: 15_000, intervalMs: 5 });
    await settle();
    expect(sink.received.map((r) => r.data)).toEqual([{ amount: 150 }, { amount: 100 }]);
    expect(sink.received[0]!.headers["ce-id"]).toBe(big.id);
    expect(sink.received[0]!.headers["ce-source"]).toBe("/src");
  });

  it("trigger - an input filter that fails at run time skips that event and the trigger lives on", async () => {
    await start(
      trigger([{ condition: "a", sink: { uri: "http://x" } }], {
        a: { eventSource: "src", event: "a", filter: "$number(data.v) > 1" },
      }),
    );
    await rt!.stop();
    const t = trigger([{ condition: "a", sink: { uri: sink.url } }], {
      a: { eventSource: "src", event: "a", filter: "$number(data.v) > 1" },
    });
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    await bus.publish(A, ev({ v: "not a number" }));
    await bus.publish(A, ev({ v: 5 }));
    await waitFor(() => sink.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    await settle();
    expect(sink.received.map((r) => r.data)).toEqual([{ v: 5 }]);
  });

  it("trigger - a transform that returns a string reaches the sink as JSON text (application/json)", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([{ condition: "a", sink: { uri: sink.url }, transform: '"hello " & data.name' }], {
        a: { eventSource: "src", event: "a" },
      }),
      { bus, logger, engine, sinks },
    );
    await bus.publish(A, ev({ name: "bob" }));
    await waitFor(() => sink.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received[0]!.headers["content-type"]).toBe("application/json");
    expect(sink.received[0]!.body.toString("utf8")).toBe('"hello bob"');
  });

  it("trigger - a && b fires once per pair, carries the joined id, and a transform sees $inputs", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([
        {
          condition: "a && b",
          sink: { uri: sink.url },
          transform: '{ "a": $inputs.a.data.x, "b": $inputs.b.data.y }',
        },
      ]),
      { bus, logger, engine, sinks },
    );
    const a1 = ev({ x: 1 });
    const a2 = ev({ x: 2 });
    const b1 = ev({ y: 10 });
    await bus.publish(A, a1);
    await bus.publish(A, a2);
    await settle();
    expect(sink.received).toHaveLength(0);
    await bus.publish(B, b1);
    await waitFor(() => sink.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    await settle();
    expect(sink.received).toHaveLength(1);
    expect(sink.received[0]!.data).toEqual({ a: 1, b: 10 });
    expect(sink.received[0]!.headers["ce-id"]).toBe(b1.id);
    expect(sink.received[0]!.headers[`ce-${JOINED_EXTENSION}`]).toBe(a1.id);
    // a2 is still pending: the next b pairs with it.
    await bus.publish(B, ev({ y: 20 }));
    await waitFor(() => sink.received.length === 2, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received[1]!.data).toEqual({ a: 2, b: 20 });
    await bus.publish(B, ev({ y: 30 }));
    await settle();
    expect(sink.received).toHaveLength(2);
  });

  it("trigger - subscribers with the same condition keep separate state", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([
        { condition: "a && b", sink: { uri: sink.url } },
        { condition: "a && b", sink: { uri: dls.url } },
      ]),
      { bus, logger, engine, sinks },
    );
    await bus.publish(A, ev({}));
    await bus.publish(B, ev({}));
    await waitFor(() => sink.received.length === 1 && dls.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
  });

  it("trigger - pending events expire from the window, are released and counted", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([{ condition: "a && b", sink: { uri: sink.url }, correlation: { window: "100ms" } }]),
      {
        bus,
        logger,
        engine,
        sinks,
      },
    );
    const expired: string[] = [];
    rt.events.on("expired", (e) => expired.push(e.id));
    const a1 = ev({});
    await bus.publish(A, a1);
    await waitFor(() => expired.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(expired).toEqual([a1.id]);
    await bus.publish(B, ev({}));
    await settle();
    expect(sink.received).toHaveLength(0);
  });

  it("trigger - a || b fires on each event; a && !b waits while b is pending", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([
        { condition: "a || b", sink: { uri: sink.url } },
        { condition: "a && !b", sink: { uri: dls.url }, correlation: { window: "300ms" } },
      ]),
      { bus, logger, engine, sinks },
    );
    await bus.publish(A, ev({ i: 1 }));
    await waitFor(() => dls.received.length === 1, {
      timeoutMs: 5000,
      intervalMs: 5,
      message: "a && !b fires with no b",
    });
    await bus.publish(B, ev({ i: 2 }));
    await bus.publish(A, ev({ i: 3 }));
    await waitFor(() => sink.received.length === 3, { timeoutMs: 5000, intervalMs: 5, message: "a || b fires thrice" });
    await settle();
    expect(dls.received).toHaveLength(1);
  });

  it("trigger - a correlation key joins only events with the same key", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([{ condition: "a && b", sink: { uri: sink.url }, correlation: { key: "data.order" } }]),
      { bus, logger, engine, sinks },
    );
    const a1 = ev({ order: 1 });
    const a2 = ev({ order: 2 });
    await bus.publish(A, a1);
    await bus.publish(A, a2);
    const b2 = ev({ order: 2 });
    await bus.publish(B, b2);
    await waitFor(() => sink.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received[0]!.headers[`ce-${JOINED_EXTENSION}`]).toBe(a2.id);
    await bus.publish(B, ev({ order: 3 }));
    await settle();
    expect(sink.received).toHaveLength(1);
  });

  it("trigger - beyond maxPending the oldest pending event is released and counted", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    rt = await startTrigger(
      trigger([{ condition: "a && b", sink: { uri: sink.url }, correlation: { maxPending: 2 } }]),
      {
        bus,
        logger,
        engine,
        sinks,
      },
    );
    const evicted: string[] = [];
    rt.events.on("evicted", (e) => evicted.push(e.id));
    const as = [ev({}), ev({}), ev({})];
    for (const e of as) await bus.publish(A, e);
    await waitFor(() => evicted.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(evicted).toEqual([as[0]!.id]);
    await bus.publish(B, ev({}));
    await waitFor(() => sink.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received[0]!.headers[`ce-${JOINED_EXTENSION}`]).toBe(as[1]!.id);
  });

  it("trigger - a failing sink is retried per delivery, then the dead-letter sink gets the event with the reason", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    sink.status = () => 503;
    rt = await startTrigger(
      trigger([
        {
          condition: "a",
          sink: { uri: sink.url },
          deadLetterSink: { uri: dls.url },
          delivery: { retry: 2, backoffDelay: "10ms" },
        },
      ]),
      { bus, logger, engine, sinks },
    );
    const e = ev({ k: 1 });
    await bus.publish(A, e);
    await waitFor(() => dls.received.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received).toHaveLength(3);
    const h = dls.received[0]!.headers;
    expect(h["ce-id"]).toBe(e.id);
    expect(h["ce-oferrorreason"]).toContain("503");
    expect(h["ce-oferrorcode"]).toBe("DELIVERY_FAILED");
    expect(h["ce-oferrordest"]).toBe(sink.url);
    expect(h["ce-ofdeliveries"]).toBe("3");
    expect(dls.received[0]!.data).toEqual({ k: 1 });
  });

  it("trigger - a 4xx is not retried and goes to the dead-letter topic when there is no dead-letter sink", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    sink.status = () => 400;
    const dead: CloudEvent[] = [];
    await bus.subscribe(["dead"], async (e) => void dead.push(e), { group: "dl" });
    rt = await startTrigger(
      trigger([
        {
          condition: "a",
          sink: { uri: sink.url },
          deadLetterTopic: "dead",
          delivery: { retry: 5, backoffDelay: "10ms" },
        },
      ]),
      { bus, logger, engine, sinks },
    );
    await bus.publish(A, ev({}));
    await waitFor(() => dead.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.received).toHaveLength(1);
    expect((dead[0] as Record<string, unknown>)["oferrorcode"]).toBe("DELIVERY_REJECTED");
  });

  it("trigger - topic subscribers publish to the bus for async functions", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    const got: CloudEvent[] = [];
    await bus.subscribe(["out"], async (e) => void got.push(e), { group: "fn" });
    rt = await startTrigger(trigger([{ condition: "a", topic: "out", filter: "data.keep = true" }]), {
      bus,
      logger,
      engine,
      sinks,
    });
    const keep = ev({ keep: true });
    await bus.publish(A, ev({ keep: false }));
    await bus.publish(A, keep);
    await waitFor(() => got.length === 1, { timeoutMs: 15_000, intervalMs: 5 });
    await settle();
    expect(got.map((e) => e.id)).toEqual([keep.id]);
  });

  it("trigger - a slow sink holds at most `concurrency` deliveries in flight", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    sink.delayMs = 50;
    rt = await startTrigger(trigger([{ condition: "a", sink: { uri: sink.url }, delivery: { concurrency: 2 } }]), {
      bus,
      logger,
      engine,
      sinks,
    });
    for (let i = 0; i < 10; i++) await bus.publish(A, ev({ i }));
    await waitFor(() => sink.received.length === 10, { timeoutMs: 15_000, intervalMs: 5 });
    expect(sink.peak).toBe(2);
  });

  it("trigger - on stop, pending events go back to the bus and a restarted trigger joins them", async () => {
    bus = createMemoryBus({ logger });
    sink = await new Sink().start();
    dls = await new Sink().start();
    const t = trigger([{ condition: "a && b", sink: { uri: sink.url } }]);
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    const a1 = ev({});
    await bus.publish(A, a1);
    await settle();
    await rt.stop();
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    const b1 = ev({});
    await bus.publish(B, b1);
    await waitFor(() => sink.received.length === 1, { timeoutMs: 5000, intervalMs: 5, message: "join after restart" });
    // a1 comes back by redelivery (before or after b1): the pair is joined either way.
    const h = sink.received[0]!.headers;
    expect([h["ce-id"], h[`ce-${JOINED_EXTENSION}`]].sort()).toEqual([a1.id, b1.id].sort());
  });
});
