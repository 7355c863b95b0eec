/** Shared set-up of the tests of a subscriber's batch, debounce, rate limit, ordering and dedup. */
import {
  API_VERSION,
  createExpressionEngine,
  newEvent,
  silentLogger,
  type CloudEvent,
  type Subscriber,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { startTrigger, type TriggerEvents, type TriggerRuntime } from "../src/index.js";
import { Sink } from "./support.js";

export const logger = silentLogger();
export const engine = createExpressionEngine();
/** The bus topic of input `a` (event `a` of EventSource `src` in namespace default). */
export const A = "default-src-a";

export function trigger(subscriber: Omit<Subscriber, "condition">, name = "t"): Trigger {
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name },
    spec: {
      eventBus: "default",
      inputs: { a: { eventSource: "src", event: "a" } },
      subscribers: [{ condition: "a", ...subscriber } as Subscriber],
    },
  } as Trigger;
}

let n = 0;
export function ev(data: unknown, id = `e${++n}-${Date.now()}`): CloudEvent {
  return newEvent({ id, source: "/src", type: "t", data });
}

/** A memory bus, a sink client, a sink and a dead-letter sink; `start` runs a trigger on them. */
export class Rig {
  bus!: EventBus;
  sinks!: SinkClient;
  sink!: Sink;
  dls!: Sink;
  rt: TriggerRuntime | undefined;
  /** Every instrumentation event of the running trigger, by type. */
  seen: { [K in keyof TriggerEvents]?: Array<TriggerEvents[K]> } = {};

  async open(): Promise<this> {
    this.seen = {};
    this.bus = createMemoryBus({ logger });
    this.sinks = createSinkClient();
    this.sink = await new Sink().start();
    this.dls = await new Sink().start();
    return this;
  }

  async start(t: Trigger): Promise<TriggerRuntime> {
    this.rt = await startTrigger(t, { bus: this.bus, logger, engine, sinks: this.sinks });
    for (const type of [
      "batched",
      "debounced",
      "deduplicated",
      "throttled",
      "delivered",
      "dead_lettered",
      "reset",
    ] as const)
      this.rt.events.on(type, (p) => void (this.seen[type] ??= [] as never[]).push(p as never));
    return this.rt;
  }

  count(type: keyof TriggerEvents): number {
    return this.seen[type]?.length ?? 0;
  }

  async close(): Promise<void> {
    await this.rt?.stop();
    await this.bus.close();
    await this.sinks.close();
    await this.sink.stop();
    await this.dls.stop();
  }
}
