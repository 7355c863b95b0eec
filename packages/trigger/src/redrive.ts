/**
 * Redrive: the dead letters a trigger kept (`keepDeadLetters`, topic
 * `{namespace}.{name}.deadletters`) delivered again to the subscriber they failed for, and to no
 * other. The topic is read with `EventBus.read` (no consumer group, nothing acknowledged), so a
 * dead letter stays on the bus; what a redrive settled (delivered, or dead-lettered again with the
 * new reason as a new dead letter) is recorded by its bus position in a seen set
 * (`redrive-{namespace}-{name}`, durable on the durable buses) and skipped by later redrives. A
 * dead letter is recorded only after its delivery or its new dead letter was taken, so a crash in
 * the middle loses nothing: at worst the one dead letter in flight is delivered again.
 */
import {
  OfEventsError,
  ErrorCode,
  eventAttributes,
  eventContext,
  inSpan,
  namespaceOf,
  withSpanContext,
  triggerDeadLetterTopic,
  type CloudEvent,
  type ExpressionEngine,
  type Logger,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import {
  NotDelivered,
  createOutbound,
  deliveryPolicy,
  targetName,
  type SinkClient,
  type Target,
} from "@ofevents/delivery";
import { DeadLetterExtension, type EventBus } from "@ofevents/eventbus";

/** The extension attribute a redriven event carries: when it was redriven (RFC 3339). */
export const REDRIVEN_EXTENSION = "ofredriven";

/** How long a redrive remembers what it settled: longer than any bus retention we configure. */
export const SETTLED_WINDOW_MS = 366 * 24 * 3_600_000;

/** Attributes a dead letter carries that the redriven event does not. */
const DEAD_LETTER_ATTRIBUTES: readonly string[] = Object.values(DeadLetterExtension);

/** What redrive and replay need to deliver as a trigger does. */
export interface TriggerHistoryOptions {
  trigger: Trigger;
  /** The trigger's bus (it must be able to `read`). */
  bus: EventBus;
  engine: ExpressionEngine;
  logger: Logger;
  /** Needed when a subscriber has a sink. */
  sinks?: SinkClient | undefined;
  resolveSink?: ((sink: Sink, namespace: string) => string) | undefined;
}

export interface RedriveOptions extends TriggerHistoryOptions {
  /** Only the dead letters of this subscriber (its index in `spec.subscribers`). */
  subscriber?: number | undefined;
  /** Only the dead letters for which this JSONata expression is true (it sees the dead letter, reason attributes included). */
  filter?: string | undefined;
  /** At most this many dead letters (of those that match). */
  limit?: number | undefined;
  /** List what would be redriven; deliver nothing, record nothing. */
  dryRun?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

export interface RedriveResult {
  /** The trigger's dead-letter topic. */
  topic: string;
  /** Dead letters read (settled ones included). */
  read: number;
  /** Skipped: settled by an earlier redrive. */
  settled: number;
  /** Matching dead letters (those a dry run lists). */
  matched: number;
  delivered: number;
  /** Failed again: a new dead letter with the new reason was kept. */
  deadLettered: number;
  /** Dead letters of a subscriber the trigger no longer has (or without a subscriber index). */
  orphaned: number;
  /** Ids of the matching dead letters (a dry run's list), in the order read. */
  ids: string[];
}

/** The original event of a dead letter, marked as redriven. */
export function redrivenEvent(deadLetter: CloudEvent, at: Date = new Date()): CloudEvent {
  const out: Record<string, unknown> = { ...deadLetter };
  for (const a of DEAD_LETTER_ATTRIBUTES) delete out[a];
  out[REDRIVEN_EXTENSION] = at.toISOString();
  return out as CloudEvent;
}

/** Delivers dead letters again to their subscriber: what a redrive does with each one. */
interface Redriver {
  /** The subscriber's targets by index (empty for a subscriber without one). */
  targetsOf: Target[][];
  /**
   * Delivers `deadLetter` (the kept dead letter: its `ofsubscriber` names the subscriber, its
   * `oferrordest` the target that failed) to the target that failed, or every target of the
   * subscriber when it no longer has that one. A target that fails again gets a new dead letter
   * with the new reason on the trigger's dead-letter topic.
   */
  one(
    deadLetter: CloudEvent,
    index: number,
    position: string | undefined,
    signal?: AbortSignal,
  ): Promise<RedriveOutcome>;
}

/** What redriving one dead letter did. */
export interface RedriveOutcome {
  delivered: number;
  deadLettered: number;
  /** Why the last target that failed again failed. */
  reason?: string | undefined;
}

function redriver(o: TriggerHistoryOptions, log: Logger): Redriver {
  const { trigger, bus } = o;
  const namespace = namespaceOf(trigger);
  const name = trigger.metadata.name;
  const resolve = (s: Sink): string => {
    const url = o.resolveSink?.(s, namespace) ?? s.uri;
    if (url === undefined) throw new OfEventsError(ErrorCode.Config, `cannot resolve sink ${JSON.stringify(s)}`);
    return url;
  };
  const subscribers = trigger.spec.subscribers;
  const targetsOf = subscribers.map((s) => {
    const t: Target[] = [];
    if (s.sink !== undefined) t.push({ kind: "sink", url: resolve(s.sink) });
    if (s.topic !== undefined && s.topic !== "") t.push({ kind: "topic", topic: s.topic });
    return t;
  });
  const out = createOutbound({ sinks: o.sinks, bus });
  const kept: Target = { kind: "topic", topic: triggerDeadLetterTopic(namespace, name) };
  const one = async (
    event: CloudEvent,
    index: number,
    position: string | undefined,
    signal?: AbortSignal,
  ): Promise<RedriveOutcome> => {
    const r: RedriveOutcome = { delivered: 0, deadLettered: 0 };
    // The target that failed, when the subscriber still has it; else every target it has.
    const failed = event[DeadLetterExtension.Destination];
    const all = targetsOf[index]!;
    const targets = all.filter((t) => targetName(t) === failed);
    const policy = deliveryPolicy(subscribers[index]!.delivery);
    await inSpan(
      `redrive ${namespace}/${name}`,
      {
        parent: eventContext(event),
        attributes: {
          ...eventAttributes(event),
          "ofevents.subscriber": index,
          ...(position === undefined ? {} : { "ofevents.dead_letter.position": position }),
        },
      },
      async (span) => {
        const again = withSpanContext(redrivenEvent(event), span);
        for (const target of targets.length > 0 ? targets : all) {
          try {
            await out.send(again, target, policy, { signal });
            r.delivered++;
            log.info({ id: event.id, subscriber: index, target: targetName(target) }, "redriven");
          } catch (err) {
            const e = err instanceof NotDelivered ? err : new NotDelivered(target, err, 0);
            const marked: CloudEvent = {
              ...again,
              [DeadLetterExtension.Trigger]: `${namespace}/${name}`,
              [DeadLetterExtension.Subscriber]: index,
            };
            // A new dead letter, with the new reason: when the bus cannot take it, the redrive stops
            // with this one unsettled (nothing lost).
            await out.deadLetter(marked, targetName(target), e.error, e.attempts, [kept], policy, { signal });
            r.deadLettered++;
            r.reason = e.error instanceof Error ? e.error.message : String(e.error);
            log.warn({ id: event.id, subscriber: index, err: r.reason }, "redrive failed: dead-lettered again");
          }
        }
      },
    );
    return r;
  };
  return { targetsOf, one };
}

/**
 * Redrives one dead letter the caller holds (the live page of `ofevents run`, on a bus that keeps
 * no history to read): `deadLetter` carries `ofsubscriber` and `oferrordest` as a kept dead letter
 * does. Nothing is recorded as settled; the caller forgets the dead letter once it was delivered.
 */
export async function redriveOne(
  o: TriggerHistoryOptions & { deadLetter: CloudEvent; signal?: AbortSignal | undefined },
): Promise<RedriveOutcome> {
  const index = Number(o.deadLetter[DeadLetterExtension.Subscriber]);
  const t = o.trigger;
  if (!Number.isInteger(index) || index < 0 || index >= t.spec.subscribers.length)
    throw new OfEventsError(
      ErrorCode.Config,
      `trigger ${namespaceOf(t)}/${t.metadata.name} has no subscriber ${String(o.deadLetter[DeadLetterExtension.Subscriber])}`,
    );
  const log = o.logger.child({ component: "redrive", trigger: `${namespaceOf(t)}/${t.metadata.name}` });
  const r = redriver(o, log);
  if (r.targetsOf[index]!.length === 0)
    throw new OfEventsError(ErrorCode.Config, `subscriber ${index} has no sink or topic to redrive to`);
  return r.one(o.deadLetter, index, undefined, o.signal);
}

export async function redrive(o: RedriveOptions): Promise<RedriveResult> {
  const { trigger, bus } = o;
  const namespace = namespaceOf(trigger);
  const name = trigger.metadata.name;
  const topic = triggerDeadLetterTopic(namespace, name);
  const log = o.logger.child({ component: "redrive", trigger: `${namespace}/${name}` });
  if (bus.read === undefined || bus.seenSet === undefined)
    throw new OfEventsError(
      ErrorCode.Config,
      `the ${bus.driver} bus keeps no history that redrive can read: redrive runs on jetstream and kafka buses (for a dapr bus, point the manifests at the broker's own bus: --bus-driver direct)`,
    );
  const subscribers = trigger.spec.subscribers;
  if (o.subscriber !== undefined && (o.subscriber < 0 || o.subscriber >= subscribers.length))
    throw new OfEventsError(
      ErrorCode.Config,
      `trigger ${namespace}/${name} has ${subscribers.length} subscriber(s) (0..${subscribers.length - 1}), not ${o.subscriber}`,
    );
  const filter = o.filter === undefined ? undefined : o.engine.compile(o.filter);
  const { targetsOf, one } = redriver(o, log);
  const settled = o.dryRun === true ? undefined : await bus.seenSet(`redrive-${namespace}-${name}`, SETTLED_WINDOW_MS);
  const r: RedriveResult = {
    topic,
    read: 0,
    settled: 0,
    matched: 0,
    delivered: 0,
    deadLettered: 0,
    orphaned: 0,
    ids: [],
  };
  try {
    for await (const dl of bus.read(topic, { signal: o.signal })) {
      r.read++;
      if (settled !== undefined && (await settled.has(dl.position))) {
        r.settled++;
        continue;
      }
      const event = dl.event;
      const index = Number(event[DeadLetterExtension.Subscriber]);
      if (o.subscriber !== undefined && index !== o.subscriber) continue;
      if (filter !== undefined && (await filter.evaluate(event)) !== true) continue;
      const spec = Number.isInteger(index) ? subscribers[index] : undefined;
      if (spec === undefined || targetsOf[index]!.length === 0) {
        r.orphaned++;
        log.warn(
          { id: event.id, subscriber: event[DeadLetterExtension.Subscriber] },
          "dead letter of no subscriber of the trigger: left",
        );
        continue;
      }
      r.matched++;
      r.ids.push(event.id);
      if (o.dryRun !== true) {
        const done = await one(event, index, dl.position, o.signal);
        r.delivered += done.delivered;
        r.deadLettered += done.deadLettered;
        await settled!.add(dl.position);
      }
      if (o.limit !== undefined && r.matched >= o.limit) break;
    }
  } finally {
    await settled?.close();
  }
  return r;
}
