import type { CloudEvent, Instrumentation } from "@ofevents/core";

/** Facts about one delivery of a message to a handler. */
export interface DeliveryInfo {
  topic: string;
  group: string;
  /** 1 on the first delivery, 2 on the first redelivery... */
  deliveryCount: number;
}

/**
 * Handles one event. Resolving acknowledges the message; throwing (or rejecting) makes the bus
 * redeliver it with backoff, until `maxDeliver` deliveries, then it goes to the dead-letter topic.
 */
export type MessageHandler = (event: CloudEvent, info: DeliveryInfo) => Promise<void>;

export interface SubscribeOptions {
  /** Durable consumer group: every group gets each event, members of a group share them. */
  group: string;
  /** Messages handed to this member and not yet resolved, at most (default 64). */
  maxInFlight?: number | undefined;
  /** Deliveries before dead-lettering (default: the bus's, 5). */
  maxDeliver?: number | undefined;
  /** Base delay of redelivery backoff in ms (default 200, exponential, capped at 30 s). */
  backoffMs?: number | undefined;
  /**
   * Where a message goes after `maxDeliver` failed deliveries (default `{topic}.deadletter`).
   * The event carries the reason as extension attributes (see DeadLetterExtension).
   */
  deadLetterTopic?: string | undefined;
  /**
   * The subscriber needs bus order across a restart (a trigger subscriber's `ordering`). JetStream:
   * when the group's consumer has messages a previous member took and did not acknowledge (a
   * crash), the subscription waits one `ackWait` before it takes anything, so that those come
   * back first (JetStream hands out due redeliveries before new messages), in stream order. Kafka
   * needs nothing (a restart resumes at the first unsettled offset of each partition).
   */
  ordered?: boolean | undefined;
}

export interface Subscription {
  readonly topics: readonly string[];
  readonly group: string;
  /** Stops taking messages, waits for in-flight handlers to settle. The group stays durable. */
  close(): Promise<void>;
}

export interface EventPublisher {
  /** Resolves only when the backend has durably taken the event; rejects with a BusError otherwise. */
  publish(topic: string, event: CloudEvent): Promise<void>;
}

export interface EventSubscriber {
  /** Resolves once the subscription is registered, so events published afterwards reach it. */
  subscribe(topics: readonly string[], handler: MessageHandler, options: SubscribeOptions): Promise<Subscription>;
}

/** Instrumentation events every driver emits. */
export interface BusEvents {
  published: { topic: string; id: string };
  redelivery: { topic: string; group: string; id: string; deliveryCount: number; error: unknown };
  dead_lettered: { topic: string; group: string; id: string; deadLetterTopic: string; error: unknown };
  /** A message the bus could not keep when it closed (the in-memory bus keeps nothing). */
  abandoned: { topic: string; group: string; id: string };
}

/**
 * Keys seen within a window (a trigger subscriber's `dedup`): a key added at time t counts as seen
 * until t + windowMs. Kept by the bus's backend where it can be, so that it survives a restart.
 */
export interface SeenSet {
  /** Where the keys are kept, for the log line: `memory`, `jetstream-kv`, `kafka-compacted-topic`. */
  readonly kind: string;
  /** Whether `key` was added less than the window ago. */
  has(key: string): Promise<boolean>;
  /** Records `key` as seen now; resolves once the backend keeps it (durably, on a durable bus). */
  add(key: string): Promise<void>;
  /** Releases what the set holds open (timers, consumers). Idempotent; the kept keys stay. */
  close(): Promise<void>;
}

/** One event a topic retains, as `EventBus.read` hands it over. */
export interface RetainedEvent {
  event: CloudEvent;
  topic: string;
  /**
   * Where the bus keeps it, unique within the bus and stable while it is retained: JetStream
   * `<stream>:<sequence>`, Kafka `<topic>:<partition>:<offset>`.
   */
  position: string;
  /** When the bus took it (JetStream: the stream's timestamp; Kafka: the record's). */
  time: Date;
}

/** An event a tail saw. */
export interface TailedEvent {
  topic: string;
  event: CloudEvent;
}

/** A running tail. */
export interface Tail {
  /** Stops watching and removes what the tail made at the broker. Idempotent. */
  close(): Promise<void>;
}

export interface ReadOptions {
  /** The first event taken after this time (default: the oldest the topic retains). */
  from?: Date | undefined;
  /** Events taken after this time end the read (default: the end the topic had when the read began). */
  to?: Date | undefined;
  /** Ends the read early; the iterator then rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

export interface EventBus extends EventPublisher, EventSubscriber {
  /** Driver name: memory, jetstream, kafka, dapr. */
  readonly driver: string;
  readonly events: Instrumentation<BusEvents>;
  /**
   * Asks the backend for a round trip now (NATS server, Kafka cluster, Dapr sidecar). Resolves when
   * it answered within `timeoutMs`; rejects with a BusError saying why not. Readiness probes use it.
   */
  ping(timeoutMs: number): Promise<void>;
  /**
   * Only where the bus cannot keep unfinished messages across a restart (the in-memory bus):
   * resolves true once every message taken was handled (nothing queued, waiting for redelivery
   * or in flight beyond `held()`, the messages deliberately held open such as pending joins),
   * false when `timeoutMs` passed first.
   */
  drain?(options: { timeoutMs: number; held?: () => number }): Promise<boolean>;
  /**
   * A set of keys seen within `windowMs`, named `name` (unique per trigger subscriber, e.g.
   * `dedup-{namespace}-{trigger}-{index}`): the same name after a restart sees the same keys on a
   * durable bus. Absent on a bus that has no place to keep one (the caller keeps it in memory).
   */
  seenSet?(name: string, windowMs: number): Promise<SeenSet>;
  /**
   * Reads what `topic` retains, oldest first (in order per Kafka partition), from `options.from`
   * up to the end the topic had when the read began (events published during the read are not
   * included) or `options.to`, without a consumer group: nothing is acknowledged or committed, no
   * subscriber is affected. Replay and redrive use it. Absent on a bus that keeps no history it
   * can read (memory, dapr). Messages that are not CloudEvents are skipped with a warning.
   */
  read?(topic: string, options?: ReadOptions): AsyncIterable<RetainedEvent>;
  /**
   * Watches `topics` from now on without taking part in any consumer group (`ofevents tail`, the
   * live page): `onEvent` sees each event published after the tail began, once, in bus order per
   * topic. No group of anyone else is touched (memory: a tap on publish; JetStream: an ephemeral
   * ordered consumer; Kafka: a throwaway group deleted on close; Dapr: a streaming subscription
   * through the tail's own sidecar, whose group at the broker is that sidecar's app id). Best
   * effort: nothing is redelivered to a tail.
   */
  tail?(topics: readonly string[], onEvent: (event: TailedEvent) => void): Promise<Tail>;
  /**
   * Stops every subscription (waiting for in-flight handlers), then disconnects. Idempotent. A bus
   * that cannot keep unfinished messages reports each one (`abandoned`, and a warning with the ids).
   */
  close(): Promise<void>;
}

/** Extension attributes set on dead-lettered events. */
export const DeadLetterExtension = {
  /** Why the event was dead-lettered (the last error's message). */
  Reason: "oferrorreason",
  /** The stable error code of the last error, where there is one. */
  Code: "oferrorcode",
  /** The topic or sink that could not take the event. */
  Destination: "oferrordest",
  /** How many deliveries were tried. */
  Deliveries: "ofdeliveries",
  /** The trigger (`namespace/name`) whose subscriber dead-lettered it (trigger dead letters only). */
  Trigger: "oftrigger",
  /** That subscriber's index in the trigger's `subscribers` (trigger dead letters only). */
  Subscriber: "ofsubscriber",
} as const;

export const DEFAULT_MAX_IN_FLIGHT = 64;
export const DEFAULT_MAX_DELIVER = 5;
export const DEFAULT_BACKOFF_MS = 200;
/** Cap of one redelivery delay (the backoff doubles from `backoffMs` up to this). */
export const MAX_BACKOFF_MS = 30_000;
/** Pauses between attempts to get a broken subscription going again (pull, stream). */
export const RESUBSCRIBE_BACKOFF = { policy: "exponential", delayMs: 250, maxDelayMs: 5_000 } as const;

export function deadLetterTopicFor(topic: string, options: SubscribeOptions): string {
  return options.deadLetterTopic ?? `${topic}.deadletter`;
}
