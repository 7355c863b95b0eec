/**
 * Replay's own logic on a memory bus given a history (a fake `read` over an array, for the unit
 * test only; test/replay-{jetstream,kafka}.test.ts run it on real brokers): topics merged by the
 * time the bus took each event, `--filter`, joins among replayed events, the ofreplayed mark.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { API_VERSION, type CloudEvent, type Trigger } from "@ofevents/core";
import type { EventBus, ReadOptions, RetainedEvent } from "@ofevents/eventbus";
import { replay, REPLAYED_EXTENSION } from "../src/index.js";
import { Rig, engine, ev, logger } from "./shaping-support.js";

const A = "default-src-a";
const B = "default-src-b";

/** The rig's memory bus, with `read` answering from `history`. */
function withHistory(bus: EventBus, history: RetainedEvent[]): EventBus {
  return Object.assign(Object.create(bus) as EventBus, {
    async *read(topic: string, o: ReadOptions = {}): AsyncGenerator<RetainedEvent> {
      for (const h of history)
        if (h.topic === topic && (o.from === undefined || h.time >= o.from) && (o.to === undefined || h.time <= o.to))
          yield h;
    },
  });
}

function retained(topic: string, event: CloudEvent, second: number): RetainedEvent {
  return { event, topic, position: `${topic}:${second}`, time: new Date(Date.UTC(2026, 11, 5, 10, 0, second)) };
}

function joinTrigger(sinkUrl: string): Trigger {
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name: "t" },
    spec: {
      eventBus: "default",
      inputs: { a: { eventSource: "src", event: "a" }, b: { eventSource: "src", event: "b" } },
      subscribers: [
        { condition: "a", sink: { uri: sinkUrl } },
        { condition: "a && b", sink: { uri: sinkUrl }, correlation: { window: "10m" } },
      ],
    },
  } as Trigger;
}

describe("replay - on a bus with history", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("replay - events of both inputs in the range, in the bus's time order, marked ofreplayed; a and b join among themselves", async () => {
    const history = [
      retained(A, ev({ n: 1 }, "a1"), 1),
      retained(B, ev({ n: 2 }, "b1"), 2),
      retained(A, ev({ n: 3 }, "a2"), 3),
      retained(B, ev({ n: 4 }, "b2"), 4),
      retained(A, ev({ n: 5 }, "a3"), 9),
    ];
    const r = await replay({
      trigger: joinTrigger(rig.sink.url),
      bus: withHistory(rig.bus, history),
      engine,
      logger,
      sinks: rig.sinks,
      from: new Date(Date.UTC(2026, 11, 5, 10, 0, 1)),
      to: new Date(Date.UTC(2026, 11, 5, 10, 0, 5)),
    });
    expect(r).toMatchObject({ read: 4, replayed: 4, inputs: { a: 2, b: 2 }, complete: true });
    expect(r.ids).toEqual(["a1", "b1", "a2", "b2"]);
    // Subscriber 0: a1, a2; subscriber 1 (a && b): b1 joined with a1, b2 with a2.
    const ids = rig.sink.ids();
    expect(ids.filter((id) => id.startsWith("a")).sort()).toEqual(["a1", "a2"]);
    expect(ids.filter((id) => id.startsWith("b")).sort()).toEqual(["b1", "b2"]);
    expect(r.delivered).toBe(4);
    for (const req of rig.sink.received) expect(req.headers[`ce-${REPLAYED_EXTENSION}`]).toMatch(/^\d{4}-/);
  });

  it("replay - --filter chooses events; a dry run lists them and delivers nothing", async () => {
    const history = [1, 2, 3, 4].map((n) => retained(A, ev({ n }, `a${n}`), n));
    const bus = withHistory(rig.bus, history);
    const t = joinTrigger(rig.sink.url);
    const dry = await replay({
      trigger: t,
      bus,
      engine,
      logger,
      sinks: rig.sinks,
      from: new Date(0),
      filter: "data.n > 2",
      dryRun: true,
    });
    expect(dry.ids).toEqual(["a3", "a4"]);
    expect(rig.sink.received).toEqual([]);
    const r = await replay({
      trigger: t,
      bus,
      engine,
      logger,
      sinks: rig.sinks,
      from: new Date(0),
      filter: "data.n > 2",
    });
    expect(r).toMatchObject({ read: 4, replayed: 2, delivered: 2 });
    expect(rig.sink.ids().sort()).toEqual(["a3", "a4"]);
  });

  it("replay - refuses a bus that keeps no history it can read", async () => {
    await expect(
      replay({ trigger: joinTrigger(rig.sink.url), bus: rig.bus, engine, logger, from: new Date(0) }),
    ).rejects.toThrow(/memory bus keeps no history that replay can read/);
  });
});
