/**
 * A failure belongs to the subscriber that has it: an expression that fails on an event (a limit
 * hit included) or a transform result that is not JSON dead-letters that event for that
 * subscriber (or, for an input filter, for that input's subscribers) and nothing else.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  ErrorCode,
  ExpressionError,
  createExpressionEngine,
  newEvent,
  silentLogger,
  type CloudEvent,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, decodeHeaderValue, type SinkClient } from "@ofevents/delivery";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { waitFor } from "../../../test/helpers/wait.js";
import { startTrigger, type TriggerRuntime } from "../src/index.js";
import { assertJsonData } from "../src/runtime.js";
import { Sink } from "./support.js";

const logger = silentLogger();
// Small limits, so that a runaway expression is cut short quickly.
const engine = createExpressionEngine({ maxSequence: 1_000, timeoutMs: 100 });
const settle = () => new Promise((r) => setTimeout(r, 200));
const A = "default-src-a";

let n = 0;
const ev = (data: unknown): CloudEvent => newEvent({ id: `iso${++n}`, source: "/src", type: "t", data });

function trigger(subscribers: Trigger["spec"]["subscribers"], inputs: Trigger["spec"]["inputs"]): Trigger {
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name: "iso" },
    spec: { eventBus: "default", inputs, subscribers },
  } as Trigger;
}

describe("trigger - failure isolation", () => {
  let sinks: SinkClient;
  let bus: EventBus;
  let rt: TriggerRuntime | undefined;
  const servers: Sink[] = [];
  let redeliveries: number;
  let busDeadLetters: number;

  const sink = async (): Promise<Sink> => {
    const s = await new Sink().start();
    servers.push(s);
    return s;
  };
  const start = async (t: Trigger): Promise<TriggerRuntime> => {
    bus = createMemoryBus({ logger });
    redeliveries = 0;
    busDeadLetters = 0;
    bus.events.on("redelivery", () => redeliveries++);
    bus.events.on("dead_lettered", () => busDeadLetters++);
    rt = await startTrigger(t, { bus, logger, engine, sinks });
    return rt;
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
    await bus.close();
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  it.each([
    { name: "a transform over its sequence limit", spec: { transform: "$count([1..5000])" } },
    {
      name: "a transform over its depth limit",
      spec: { transform: "($f := function($x){ $f($x + 1) }; $f(0))" },
    },
    { name: "a subscriber filter over its sequence limit", spec: { filter: "$count([1..5000]) > 0" } },
  ])(
    "trigger - $name dead-letters the event to that subscriber's deadLetterSink only; the healthy one gets it once",
    async ({ spec }) => {
      const healthy = await sink();
      const bad = await sink();
      const dls = await sink();
      await start(
        trigger(
          [
            { condition: "a", sink: { uri: healthy.url } },
            { condition: "a", sink: { uri: bad.url }, deadLetterSink: { uri: dls.url }, ...spec },
          ],
          { a: { eventSource: "src", event: "a" } },
        ),
      );
      const e = ev({ k: 1 });
      await bus.publish(A, e);
      await waitFor(() => dls.received.length === 1 && healthy.received.length === 1, {
        timeoutMs: 5_000,
        intervalMs: 5,
        message: "dead letter",
      });
      await settle();
      expect(healthy.ids()).toEqual([e.id]);
      expect(bad.received).toHaveLength(0);
      const h = dls.received[0]!.headers;
      expect(h["ce-id"]).toBe(e.id);
      expect(h["ce-oferrorcode"]).toBe(ErrorCode.ExpressionLimit);
      expect(h["ce-oferrordest"]).toBe(bad.url);
      // Nothing was sent: a failed transform or filter is not a delivery.
      expect(h["ce-ofdeliveries"]).toBe("0");
      // Deterministic, so not retried: the bus never saw a failure.
      expect(redeliveries).toBe(0);
      expect(busDeadLetters).toBe(0);
    },
  );

  it("trigger - a correlation key over its limit dead-letters the event for that subscriber", async () => {
    const out = await sink();
    const dls = await sink();
    await start(
      trigger(
        [
          {
            condition: "a && b",
            sink: { uri: out.url },
            deadLetterSink: { uri: dls.url },
            correlation: { key: "$string($count([1..5000]))" },
          },
        ],
        { a: { eventSource: "src", event: "a" }, b: { eventSource: "src", event: "b" } },
      ),
    );
    const e = ev({});
    await bus.publish(A, e);
    await waitFor(() => dls.received.length === 1, { timeoutMs: 5_000, intervalMs: 5, message: "dead letter" });
    expect(dls.received[0]!.headers["ce-oferrorcode"]).toBe(ErrorCode.ExpressionLimit);
    expect(redeliveries).toBe(0);
  });

  it("trigger - an input filter over its limit dead-letters the event for that input's subscribers; another input on the same topic is unaffected", async () => {
    const filtered = await sink();
    const filteredDls = await sink();
    const ok = await sink();
    const okDls = await sink();
    await start(
      trigger(
        [
          { condition: "a", sink: { uri: filtered.url }, deadLetterSink: { uri: filteredDls.url } },
          { condition: "ok", sink: { uri: ok.url }, deadLetterSink: { uri: okDls.url }, transform: "data" },
        ],
        {
          a: { eventSource: "src", event: "a", filter: "$count([1..9999].($ * 2)) > 0" },
          ok: { eventSource: "src", event: "a" },
        },
      ),
    );
    const e = ev({ v: 1 });
    await bus.publish(A, e);
    await waitFor(() => ok.received.length === 1 && filteredDls.received.length === 1, {
      timeoutMs: 5_000,
      intervalMs: 5,
      message: "both outcomes",
    });
    await settle();
    expect(ok.ids()).toEqual([e.id]);
    expect(ok.received[0]!.data).toEqual({ v: 1 });
    expect(filtered.received).toHaveLength(0);
    expect(okDls.received).toHaveLength(0);
    const h = filteredDls.received[0]!.headers;
    expect(h["ce-oferrorcode"]).toBe(ErrorCode.ExpressionLimit);
    expect(h["ce-ofdeliveries"]).toBe("0");
    expect(redeliveries).toBe(0);
    expect(busDeadLetters).toBe(0);
  });

  it.each([
    {
      name: "a function",
      transform: "function($x){ $x }",
      reason: "transform result is not JSON data: it is a function",
    },
    {
      name: "a native function",
      transform: "$uppercase",
      reason: "transform result is not JSON data: it is a function",
    },
    {
      name: "an object holding a function",
      transform: '{ "ok": 1, "f": function($x){ $x } }',
      reason: "transform result is not JSON data: f is a function",
    },
  ])(
    "trigger - a transform returning $name is an EXPRESSION_TYPE error, dead-lettered once, never retried",
    async ({ transform, reason }) => {
      const out = await sink();
      const dls = await sink();
      await start(
        trigger(
          [
            {
              condition: "a",
              sink: { uri: out.url },
              deadLetterSink: { uri: dls.url },
              transform,
              delivery: { retry: 3, backoffDelay: "10ms" },
            },
          ],
          { a: { eventSource: "src", event: "a" } },
        ),
      );
      const retried: unknown[] = [];
      rt!.events.on("retried", (r) => retried.push(r));
      await bus.publish(A, ev({}));
      await waitFor(() => dls.received.length === 1, { timeoutMs: 5_000, intervalMs: 5, message: "dead letter" });
      await settle();
      const h = dls.received[0]!.headers;
      expect(h["ce-oferrorcode"]).toBe(ErrorCode.ExpressionType);
      expect(decodeHeaderValue(String(h["ce-oferrorreason"]))).toBe(reason);
      expect(h["ce-ofdeliveries"]).toBe("0");
      expect(dls.received).toHaveLength(1);
      expect(out.received).toHaveLength(0);
      expect(retried).toHaveLength(0);
      expect(redeliveries).toBe(0);
    },
  );
});

describe("trigger - transform results as JSON data", () => {
  it.each([
    { name: "an object", value: { a: [1, "x", null, { b: true }] }, expected: undefined },
    { name: "a string", value: "abc", expected: undefined },
    { name: "nothing", value: undefined, expected: undefined },
    { name: "a JS function", value: () => 1, expected: "it is a function" },
    { name: "a jsonata lambda", value: { _jsonata_lambda: true }, expected: "it is a function" },
    { name: "a nested function", value: { a: [1, { f: () => 1 }] }, expected: "a[1].f is a function" },
  ])("trigger - assertJsonData: $name", ({ value, expected }) => {
    if (expected === undefined) {
      expect(() => assertJsonData(value, "x")).not.toThrow();
      return;
    }
    let caught: unknown;
    try {
      assertJsonData(value, "x");
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ExpressionError);
    expect((caught as ExpressionError).code).toBe(ErrorCode.ExpressionType);
    expect((caught as Error).message).toContain(expected);
  });
});
