/**
 * Replay: a trigger's subscribers fed again with the events its inputs' topics retain in a time
 * range. The topics are read with `EventBus.read` (no consumer group: the live trigger's consumer
 * is not touched), merged in the order the bus took them, marked `ofreplayed`, and handed to a
 * second runtime of the same trigger that takes its inputs from an in-process bus and delivers
 * like the live one (its sinks; its topics and kept dead letters on the real bus). So the inputs'
 * filters, the conditions, the transforms and every subscriber's shaping apply as they do live.
 *
 * Joins: a replay joins replayed events with each other only (never with live ones), in the order
 * read, and a correlation window counts from when the replay hands an event over, not from when
 * the event first happened: events that were further apart than the window can join in a replay
 * (a replay of a long range runs in seconds). Pending events still unjoined at the end of the
 * range are released. Dedup runs in memory for the replay alone (not against the live seen set:
 * a replay is meant to deliver again).
 */
import {
  SpanKind,
  busTopic,
  createInstrumentation,
  eventAttributes,
  eventContext,
  inSpan,
  namespaceOf,
  withSpanContext,
  type CloudEvent,
} from "@ofevents/core";
import { createMemoryBus, type RetainedEvent } from "@ofevents/eventbus";
import type { TriggerHistoryOptions } from "./redrive.js";
import { startTrigger } from "./runtime.js";
import type { TriggerEvents } from "./types.js";

/** The extension attribute a replayed event carries: when the replay began (RFC 3339). */
export const REPLAYED_EXTENSION = "ofreplayed";

/** How long a replay waits, after the last event was handed over, for the subscribers to finish. */
export const REPLAY_DRAIN_TIMEOUT_MS = 120_000;

export interface ReplayOptions extends TriggerHistoryOptions {
  /** Events the bus took at or after this time. */
  from: Date;
  /** Events the bus took up to this time (default: the end each topic had when the replay began). */
  to?: Date | undefined;
  /** Only the events for which this JSONata expression is true (before the inputs' own filters). */
  filter?: string | undefined;
  /** List what would be replayed; deliver nothing. */
  dryRun?: boolean | undefined;
  drainTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface ReplayResult {
  /** Events read from the inputs' topics in the range. */
  read: number;
  /** Of those, handed to the trigger (the `--filter` passed). */
  replayed: number;
  /** Per input name: events read. */
  inputs: Record<string, number>;
  delivered: number;
  deadLettered: number;
  /** Events an input filter or a subscriber filter left out. */
  filtered: number;
  /** Pending join events released unjoined at the end. */
  released: number;
  /** Whether every handed-over event was finished within the drain time. */
  complete: boolean;
  /** Ids handed over (a dry run: that would be), in order. */
  ids: string[];
}

/** Merges per-topic reads by the time the bus took each event (ties: topic order). */
async function* merged(reads: Array<AsyncIterator<RetainedEvent>>): AsyncGenerator<RetainedEvent> {
  const heads: Array<RetainedEvent | undefined> = [];
  for (const r of reads) heads.push((await r.next()).value as RetainedEvent | undefined);
  for (;;) {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i];
      if (h !== undefined && (best < 0 || h.time < heads[best]!.time)) best = i;
    }
    if (best < 0) return;
    yield heads[best]!;
    const next = await reads[best]!.next();
    heads[best] = next.done === true ? undefined : next.value;
  }
}

export async function replay(o: ReplayOptions): Promise<ReplayResult> {
  const { trigger, bus } = o;
  const namespace = namespaceOf(trigger);
  const name = trigger.metadata.name;
  const log = o.logger.child({ component: "replay", trigger: `${namespace}/${name}` });
  if (bus.read === undefined)
    throw new Error(
      `the ${bus.driver} bus keeps no history that replay can read: replay runs on jetstream and kafka buses`,
    );
  const filter = o.filter === undefined ? undefined : o.engine.compile(o.filter);
  const topics = new Map<string, string[]>();
  for (const [input, i] of Object.entries(trigger.spec.inputs)) {
    const topic = busTopic(i.namespace ?? namespace, i.eventSource, i.event);
    topics.set(topic, [...(topics.get(topic) ?? []), input]);
  }
  const r: ReplayResult = {
    read: 0,
    replayed: 0,
    inputs: {},
    delivered: 0,
    deadLettered: 0,
    filtered: 0,
    released: 0,
    complete: true,
    ids: [],
  };
  const startedAt = new Date().toISOString();
  const local = createMemoryBus({ logger: o.logger });
  const events = createInstrumentation<TriggerEvents>();
  events.on("delivered", () => r.delivered++);
  events.on("dead_lettered", () => r.deadLettered++);
  events.on("filtered", () => r.filtered++);
  const rt =
    o.dryRun === true
      ? undefined
      : await startTrigger(trigger, {
          bus: local,
          publishTo: bus,
          logger: o.logger,
          engine: o.engine,
          sinks: o.sinks,
          resolveSink: o.resolveSink,
          instrumentation: events,
          group: `replay-${namespace}-${name}`,
        });
  const iterators = [...topics.keys()].map((t) =>
    bus.read!(t, { from: o.from, to: o.to, signal: o.signal })[Symbol.asyncIterator](),
  );
  try {
    for await (const e of merged(iterators)) {
      r.read++;
      for (const input of topics.get(e.topic) ?? []) r.inputs[input] = (r.inputs[input] ?? 0) + 1;
      if (filter !== undefined && (await filter.evaluate(e.event)) !== true) continue;
      r.replayed++;
      r.ids.push(e.event.id);
      if (rt === undefined) continue;
      const marked: CloudEvent = { ...e.event, [REPLAYED_EXTENSION]: startedAt };
      // The in-process bus waits while the trigger holds its bound of events: backpressure.
      await inSpan(
        `replay ${namespace}/${name}`,
        {
          kind: SpanKind.PRODUCER,
          parent: eventContext(e.event),
          attributes: {
            ...eventAttributes(e.event),
            "messaging.destination.name": e.topic,
            "ofevents.position": e.position,
          },
        },
        (span) => local.publish(e.topic, withSpanContext(marked, span)),
      );
    }
    if (rt !== undefined) {
      r.complete = await local.drain!({
        timeoutMs: o.drainTimeoutMs ?? REPLAY_DRAIN_TIMEOUT_MS,
        held: () => rt.pending(),
      });
      r.released = rt.pending();
      if (!r.complete)
        log.warn(
          { timeoutMs: o.drainTimeoutMs ?? REPLAY_DRAIN_TIMEOUT_MS },
          "replay: not every event finished in time",
        );
    }
  } finally {
    await Promise.allSettled(iterators.map((it) => it.return?.()));
    await rt?.stop();
    await local.close();
  }
  log.info({ read: r.read, replayed: r.replayed, delivered: r.delivered }, "replay done");
  return r;
}
