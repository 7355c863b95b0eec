/**
 * The Kafka bus (kafkajs). One Kafka topic per bus topic (`topicPrefix` + name), one consumer
 * group per subscriber group, one kafkajs consumer per subscription. Events travel as structured
 * CloudEvents (JSON value, `content-type: application/cloudevents+json`), keyed by the
 * `partitionkey` extension when set, else by the event id.
 *
 * Delivery: a fetched message is handed to the handler as soon as the subscription has a free
 * slot (`maxInFlight`, several per partition at once); the group's offset is committed only up
 * to the lowest offset not yet settled in each partition (a contiguous watermark), after the
 * handler resolved or the message reached the dead-letter topic (acked by the broker). A crash
 * therefore redelivers what was not settled, never skips it. A throwing handler is retried in
 * process with exponential backoff; a message being retried holds its slot and the watermark,
 * not the partition: later messages keep flowing.
 */
import kafkajs from "kafkajs";
import type {
  Admin,
  Consumer,
  EachBatchPayload,
  IMemberAssignment,
  KafkaConfig,
  KafkaMessage,
  Message,
  Producer,
} from "kafkajs";
import {
  BusError,
  ErrorCode,
  OfEventsError,
  createInstrumentation,
  encodeEvent,
  kafkaName,
  sleep,
  type CloudEvent,
  type KafkaBusSpec,
  type Logger,
  type SecretKeySelector,
} from "@ofevents/core";
import { ConsumerEngine, UNDECODABLE_EVENT_TYPE } from "../consumer.js";
import { decodeBusEvent } from "../envelope.js";
import { readKafka, tailKafka, type KafkaReadContext } from "./kafka-read.js";
import { openKafkaSeenSet } from "./kafka-seen.js";
import { pingWithin } from "../ping.js";
import { kafkaLogging, kafkaSasl, kafkaTls } from "../clients.js";
import type { CreateEventBusOptions } from "../factory.js";
import {
  DEFAULT_MAX_DELIVER,
  DEFAULT_MAX_IN_FLIGHT,
  type BusEvents,
  type EventBus,
  type MessageHandler,
  type ReadOptions,
  type RetainedEvent,
  type Tail,
  type TailedEvent,
  type SeenSet,
  type SubscribeOptions,
  type Subscription,
} from "../types.js";

// kafkaName lives in core (naming.ts), so the controller's KEDA scalers use the same names.
export { kafkaName, UNDECODABLE_EVENT_TYPE };

const { Kafka, KafkaJSSASLAuthenticationError, Partitioners } = kafkajs;

/** Client timings. The defaults suit production; tests shorten them. */
export interface KafkaBusTuning {
  /** Consumer session timeout (default 30 s; the broker bounds it by group.min/max.session.timeout.ms). */
  sessionTimeoutMs?: number | undefined;
  /** Time members get to rejoin during a rebalance (default 60 s). */
  rebalanceTimeoutMs?: number | undefined;
  /** Consumer heartbeat interval (default 3 s). */
  heartbeatIntervalMs?: number | undefined;
  /**
   * Longest a fetch waits for data (default 250 ms). Also how long kafkajs's fetch loop sleeps
   * when every partition of a consumer is paused (the subscription pauses while its buffer holds
   * a full in-flight budget), however soon one is resumed, and how long closing waits for the loop.
   */
  maxWaitTimeMs?: number | undefined;
  /** How long subscribe() waits to join the group (default 60 s). */
  joinTimeoutMs?: number | undefined;
  /** TCP connect timeout per broker (default 3 s). */
  connectionTimeoutMs?: number | undefined;
  /** kafkajs retries of a failed connection or request, with its exponential backoff (default 5). */
  retries?: number | undefined;
  /** How long seenSet() may take to create its topic and read it to the end (default 60 s). */
  seenSetLoadTimeoutMs?: number | undefined;
}

const CONTENT_TYPE = "application/cloudevents+json; charset=utf-8";
/** See KafkaBusTuning.maxWaitTimeMs: at 1 s a paused consumer fell behind a publisher by half (E5). */
const DEFAULT_MAX_WAIT_MS = 250;
/** Bounds of one produce request (the broker's default message.max.bytes is 1 MiB per batch). */
const MAX_BATCH_RECORDS = 500;
const MAX_BATCH_BYTES = 512 * 1024;
const RETRY_LATER_MS = 500;
const SINCE_PREFIX = "ofevents.since=";
/** Producer clocks may lag ours: a partition started by timestamp starts this much earlier. */
const CLOCK_SKEW_MS = 10_000;

/** The record key: the CloudEvents `partitionkey` extension (Kafka binding), else the event id. */
function recordKey(event: CloudEvent): string {
  const pk = (event as Record<string, unknown>)["partitionkey"];
  return pk === undefined || pk === null || pk === "" ? event.id : String(pk);
}

function parseSince(metadata: string | null | undefined): number | undefined {
  if (metadata === null || metadata === undefined || !metadata.startsWith(SINCE_PREFIX)) return undefined;
  const n = Number(metadata.slice(SINCE_PREFIX.length));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isRetriable(err: unknown): boolean {
  if (err instanceof OfEventsError) return err.retriable;
  const r = (err as { retriable?: unknown } | null)?.retriable;
  return typeof r === "boolean" ? r : true;
}

function clientConfig(
  spec: KafkaBusSpec,
  options: CreateEventBusOptions,
  log: Logger,
  tuning: KafkaBusTuning,
): KafkaConfig {
  const brokers = spec.brokers
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "");
  if (brokers.length === 0) throw new OfEventsError(ErrorCode.Config, "kafka bus: brokers lists no host:port");
  const namespace = options.namespace ?? "default";
  const secret = (ref: SecretKeySelector): string => {
    if (options.secrets === undefined) {
      throw new OfEventsError(
        ErrorCode.Config,
        `kafka bus: secret ${namespace}/${ref.name} is referenced but no secret resolver was given`,
      );
    }
    return options.secrets.resolve(ref, namespace);
  };
  const ssl = kafkaTls(spec.tls, secret);
  const config: KafkaConfig = {
    clientId: spec.clientId ?? "ofevents",
    brokers,
    connectionTimeout: tuning.connectionTimeoutMs ?? 3_000,
    ...(tuning.retries !== undefined ? { retry: { retries: tuning.retries } } : {}),
    ...kafkaLogging(log),
    ...(ssl === false ? {} : { ssl }),
    ...(spec.sasl === undefined
      ? {}
      : {
          sasl: kafkaSasl(spec.sasl.mechanism, secret(spec.sasl.usernameSecret), secret(spec.sasl.passwordSecret)),
        }),
  };
  return config;
}

interface Queued {
  topic: string;
  message: Message;
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

class KafkaBus implements EventBus {
  readonly driver = "kafka";
  readonly events = createInstrumentation<BusEvents>();
  readonly log: Logger;
  readonly kafka: InstanceType<typeof Kafka>;
  readonly admin: Admin;
  private readonly producer: Producer;
  private readonly topics = new Map<string, Promise<void>>();
  private readonly subs = new Set<KafkaSubscription>();
  private readonly queue: Queued[] = [];
  private sending = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    readonly spec: KafkaBusSpec,
    options: CreateEventBusOptions,
    readonly tuning: KafkaBusTuning,
  ) {
    this.log = options.logger.child({ component: "bus.kafka" });
    this.kafka = new Kafka(clientConfig(spec, options, this.log, tuning));
    this.admin = this.kafka.admin();
    this.producer = this.kafka.producer({
      // Exactly one copy per publish even when kafkajs retries a produce request.
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // Murmur2, as the Java client: the same key lands on the same partition from any client.
      createPartitioner: Partitioners.DefaultPartitioner,
      // An idempotent producer needs at least one retry.
      ...(tuning.retries !== undefined ? { retry: { retries: Math.max(1, tuning.retries) } } : {}),
    });
  }

  get maxDeliver(): number {
    return this.spec.maxDeliver ?? DEFAULT_MAX_DELIVER;
  }

  async connect(): Promise<void> {
    try {
      await Promise.all([this.producer.connect(), this.admin.connect()]);
    } catch (err) {
      await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
      throw new BusError(
        ErrorCode.BusPublish,
        `kafka bus: cannot connect to ${this.spec.brokers}: ${errorMessage(err)}`,
        // An unreachable broker is worth retrying (kafkajs gives up with a non-retriable "retries
        // exceeded" then); wrong credentials are not.
        { cause: err, retriable: !(err instanceof KafkaJSSASLAuthenticationError) },
      );
    }
  }

  /** The Kafka topic of a bus topic. */
  kafkaTopic(topic: string): string {
    return kafkaName(`${this.spec.topicPrefix ?? ""}${topic}`);
  }

  /** The Kafka group id of a subscriber group (prefixed like topics, so installations stay apart). */
  kafkaGroup(group: string): string {
    return kafkaName(`${this.spec.topicPrefix ?? ""}${group}`);
  }

  /**
   * Creates the topic unless it exists (the broker's auto-creation may be off). Cached; a failed
   * attempt is forgotten so the next call tries again.
   */
  ensureTopic(topic: string, busTopic: string): Promise<void> {
    let p = this.topics.get(topic);
    if (p === undefined) {
      p = this.admin
        .createTopics({ topics: [{ topic, numPartitions: this.spec.partitions ?? 1 }], waitForLeaders: true })
        .then((created) => {
          if (created) this.log.debug({ topic, partitions: this.spec.partitions ?? 1 }, "created topic");
        })
        .catch((err: unknown) => {
          this.topics.delete(topic);
          throw new BusError(ErrorCode.BusPublish, `kafka bus: cannot create topic ${topic}: ${errorMessage(err)}`, {
            topic: busTopic,
            cause: err,
            retriable: isRetriable(err),
          });
        });
      this.topics.set(topic, p);
    }
    return p;
  }

  async publish(topic: string, event: CloudEvent): Promise<void> {
    if (this.closed) throw BusError.closed(topic);
    await this.produce(topic, event);
  }

  /** Publishes without the closed check: dead letters still go out while subscriptions drain. */
  async produce(topic: string, event: CloudEvent): Promise<void> {
    const value = encodeEvent(event);
    const kt = this.kafkaTopic(topic);
    await this.ensureTopic(kt, topic);
    try {
      await this.send(kt, { key: recordKey(event), value, headers: { "content-type": CONTENT_TYPE } });
    } catch (err) {
      throw new BusError(ErrorCode.BusPublish, `kafka bus: publish to ${kt} failed: ${errorMessage(err)}`, {
        topic,
        cause: err,
        retriable: isRetriable(err),
      });
    }
    this.events.emit("published", { topic, id: event.id });
  }

  /**
   * Queues one record. One produce request is in flight at a time (the idempotent producer
   * needs that); records queued meanwhile go together in the next request, so concurrent
   * publishers share round trips. Resolves when the broker acked the request holding it.
   */
  private send(topic: string, message: Message): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({
        topic,
        message,
        bytes: message.value instanceof Buffer ? message.value.length : 0,
        resolve,
        reject,
      });
      if (!this.sending) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0) {
      let n = 0;
      let bytes = 0;
      while (
        n < this.queue.length &&
        n < MAX_BATCH_RECORDS &&
        (n === 0 || bytes + this.queue[n]!.bytes <= MAX_BATCH_BYTES)
      ) {
        bytes += this.queue[n]!.bytes;
        n++;
      }
      const batch = this.queue.splice(0, n);
      const byTopic = new Map<string, Message[]>();
      for (const q of batch) {
        let list = byTopic.get(q.topic);
        if (list === undefined) byTopic.set(q.topic, (list = []));
        list.push(q.message);
      }
      try {
        await this.producer.sendBatch({
          acks: -1,
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        });
        for (const q of batch) q.resolve();
      } catch (err) {
        for (const q of batch) q.reject(err);
      }
    }
    this.sending = false;
  }

  async subscribe(
    topics: readonly string[],
    handler: MessageHandler,
    options: SubscribeOptions,
  ): Promise<Subscription> {
    if (this.closed) throw BusError.closed();
    const busTopics = [...new Set(topics)];
    if (busTopics.length === 0)
      throw new BusError(ErrorCode.BusSubscribe, "kafka bus: subscribe needs at least one topic");
    const byKafkaTopic = new Map(busTopics.map((t) => [this.kafkaTopic(t), t] as const));
    await Promise.all([...byKafkaTopic].map(([kt, t]) => this.ensureTopic(kt, t)));
    if (this.closed) throw BusError.closed();
    const sub = new KafkaSubscription(this, busTopics, byKafkaTopic, handler, options);
    this.subs.add(sub);
    try {
      await sub.start();
    } catch (err) {
      this.subs.delete(sub);
      await sub.close();
      if (this.closed) throw BusError.closed();
      throw err instanceof BusError
        ? err
        : new BusError(
            ErrorCode.BusSubscribe,
            `kafka bus: subscribing group ${options.group} failed: ${errorMessage(err)}`,
            {
              cause: err,
              retriable: isRetriable(err),
            },
          );
    }
    return sub;
  }

  forget(sub: KafkaSubscription): void {
    this.subs.delete(sub);
  }

  /**
   * What the topic readers and seen sets share of this bus: its clients, its naming, and how it
   * turns a kafkajs failure into a BusError.
   */
  private sideContext() {
    return {
      kafka: this.kafka,
      admin: this.admin,
      topicPrefix: this.spec.topicPrefix ?? "",
      log: this.log,
      maxWaitTimeMs: this.tuning.maxWaitTimeMs ?? DEFAULT_MAX_WAIT_MS,
      busError: (code: ErrorCode, what: string, err: unknown): BusError =>
        err instanceof BusError
          ? err
          : new BusError(code, `kafka bus: ${what} failed: ${errorMessage(err)}`, {
              cause: err,
              retriable: isRetriable(err),
            }),
    };
  }

  /** What `read` and `tail` need (kafka-read.ts): the side clients and topic creation. */
  private readContext(): KafkaReadContext {
    return {
      ...this.sideContext(),
      ensureTopic: async (t) => {
        const kt = this.kafkaTopic(t);
        await this.ensureTopic(kt, t);
        return kt;
      },
    };
  }

  /** Watches topics from now on in a throwaway group (kafka-read.ts). */
  tail(topics: readonly string[], onEvent: (e: TailedEvent) => void): Promise<Tail> {
    if (this.closed) throw BusError.closed();
    return tailKafka(this.readContext(), topics, onEvent);
  }

  /** Reads a topic's retained records (kafka-read.ts). */
  read(topic: string, options?: ReadOptions): AsyncIterable<RetainedEvent> {
    if (this.closed) throw BusError.closed();
    return readKafka(this.readContext(), topic, options);
  }

  /** A compacted topic per name (kafka-seen.ts); rejects with a BusError. */
  async seenSet(name: string, windowMs: number): Promise<SeenSet> {
    if (this.closed) throw BusError.closed();
    return openKafkaSeenSet(
      {
        ...this.sideContext(),
        loadTimeoutMs: this.tuning.seenSetLoadTimeoutMs ?? 60_000,
        closed: () => this.closed,
        send: (topic, message) => this.send(topic, message),
      },
      name,
      windowMs,
    );
  }

  ping(timeoutMs: number): Promise<void> {
    if (this.closed) return Promise.reject(BusError.closed());
    return pingWithin(`the Kafka cluster at ${this.spec.brokers}`, () => this.admin.describeCluster(), timeoutMs);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await Promise.allSettled([...this.subs].map((s) => s.close()));
      const results = await Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
      for (const r of results) if (r.status === "rejected") this.log.warn({ err: r.reason }, "disconnect failed");
    })();
    return this.closing;
  }
}

/** What this member knows about one partition it was assigned. */
interface PartState {
  readonly topic: string;
  readonly partition: number;
  readonly key: string;
  /** False once revoked (or the subscription closed): its work no longer commits. */
  owned: boolean;
  /** The group's starting offset is settled (a new group's is set to the end first). */
  ready: boolean;
  /** Fetching is paused for this partition (as last told to kafkajs). */
  paused: boolean;
  /** Offset after the last message taken; fetched messages below it are repeats after a rejoin. */
  next: bigint | undefined;
  /** Offsets taken and not settled, in ascending order (insertion order of the Set). */
  readonly pending: Set<bigint>;
  /** Last offset committed by this member in this generation. */
  committed: bigint | undefined;
  /** Aborted on revocation and close: cancels backoff waits. */
  readonly abort: AbortController;
}

interface Taken {
  part: PartState;
  offset: bigint;
  message: KafkaMessage;
}

function partKey(topic: string, partition: number): string {
  return `${topic}|${partition}`;
}

/** The offset to commit: the lowest unsettled one, or the one after the last taken. */
function watermark(part: PartState): bigint | undefined {
  for (const o of part.pending) return o;
  return part.next;
}

class KafkaSubscription implements Subscription {
  readonly group: string;
  private readonly groupId: string;
  private readonly log: Logger;
  private readonly consumer: Consumer;
  private readonly maxInFlight: number;
  private readonly engine: ConsumerEngine;
  private readonly parts = new Map<string, PartState>();
  /** Per Kafka topic: since when (ms) this group reads it, from offset commit metadata. */
  private readonly since = new Map<string, number>();
  /** Fetched messages waiting for a slot, from `head` on. */
  private buffer: Taken[] = [];
  private head = 0;
  private inFlight = 0;
  private readonly idle: Array<() => void> = [];
  private generation = 0;
  /** In a generation, between GROUP_JOIN and the next rebalance, crash or stop. */
  private joined = false;
  private closing = false;
  private closed: Promise<void> | undefined;
  private joinWork: Promise<void> = Promise.resolve();
  private commitWanted = false;
  private committing: Promise<void> | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly offListeners: Array<() => void> = [];
  private lastCrash: unknown;
  private ready!: { resolve: () => void; reject: (err: unknown) => void; settled: boolean };
  private readonly readyPromise: Promise<void>;

  constructor(
    private readonly bus: KafkaBus,
    readonly topics: readonly string[],
    private readonly byKafkaTopic: ReadonlyMap<string, string>,
    handler: MessageHandler,
    options: SubscribeOptions,
  ) {
    this.group = options.group;
    this.groupId = bus.kafkaGroup(options.group);
    this.log = bus.log.child({ group: options.group });
    this.maxInFlight = Math.max(1, options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.engine = new ConsumerEngine({
      group: options.group,
      options,
      maxDeliver: bus.maxDeliver,
      handler,
      events: bus.events,
      log: this.log,
      // Not publish(): dead letters still go out while subscriptions drain.
      publishDeadLetter: (topic, event) => bus.produce(topic, event),
    });
    this.readyPromise = new Promise<void>((resolve, reject) => {
      this.ready = { resolve, reject, settled: false };
    });
    this.readyPromise.catch(() => {});
    const t = bus.tuning;
    this.consumer = bus.kafka.consumer({
      groupId: this.groupId,
      sessionTimeout: t.sessionTimeoutMs ?? 30_000,
      rebalanceTimeout: t.rebalanceTimeoutMs ?? 60_000,
      heartbeatInterval: t.heartbeatIntervalMs ?? 3_000,
      maxWaitTimeInMs: t.maxWaitTimeMs ?? DEFAULT_MAX_WAIT_MS,
      allowAutoTopicCreation: false,
    });
  }

  /** Connects, joins the group and settles the starting offsets; resolves once events published from now on will reach the group. */
  async start(): Promise<void> {
    const c = this.consumer;
    this.offListeners.push(
      c.on(c.events.GROUP_JOIN, (e) => this.onJoin(e.payload.memberAssignment)),
      c.on(c.events.REBALANCING, () => {
        this.joined = false;
      }),
      c.on(c.events.STOP, () => {
        this.joined = false;
      }),
      c.on(c.events.CRASH, (e) => {
        this.joined = false;
        const { error, restart } = e.payload;
        if (this.closing) return;
        // A retriable crash (e.g. the coordinator still loading on a fresh broker) is restarted
        // by kafkajs, also during subscribe (bounded by joinTimeoutMs).
        this.lastCrash = error;
        if (restart) this.log.warn({ err: error }, "consumer crashed, kafkajs restarts it");
        else if (!this.ready.settled) this.settleReady(error);
        else this.log.error({ err: error }, "consumer crashed and stopped: this subscription receives nothing more");
      }),
    );
    await c.connect();
    // fromBeginning applies only where the group has no offset: partitions the group has never
    // seen (new partitions of a topic it reads). A new group starts at the end, see initialize().
    await c.subscribe({ topics: [...this.byKafkaTopic.keys()], fromBeginning: true });
    await c.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.onBatch(payload),
    });
    const joinTimeoutMs = this.bus.tuning.joinTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BusError(
              ErrorCode.BusSubscribe,
              `kafka bus: group ${this.group} not joined within ${joinTimeoutMs} ms` +
                (this.lastCrash === undefined ? "" : `: ${errorMessage(this.lastCrash)}`),
              { cause: this.lastCrash },
            ),
          ),
        joinTimeoutMs,
      );
    });
    try {
      await Promise.race([this.readyPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private settleReady(err?: unknown): void {
    if (this.ready.settled) return;
    this.ready.settled = true;
    if (err === undefined) this.ready.resolve();
    else this.ready.reject(err);
  }

  /**
   * A new generation (kafkajs emits this synchronously, before it fetches): forget revoked
   * partitions, pause the ones whose starting offset is not settled, then settle them.
   */
  private onJoin(assignment: IMemberAssignment): void {
    if (this.closing) return;
    const gen = ++this.generation;
    this.joined = true;
    const assigned = new Set<string>();
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) {
        const key = partKey(topic, partition);
        assigned.add(key);
        const known = this.parts.get(key);
        if (known === undefined) {
          this.parts.set(key, {
            topic,
            partition,
            key,
            owned: true,
            ready: false,
            paused: false,
            next: undefined,
            pending: new Set(),
            committed: undefined,
            abort: new AbortController(),
          });
        } else {
          // Kept: commit its watermark again in this generation (a commit may have been lost).
          known.committed = undefined;
        }
      }
    }
    for (const part of [...this.parts.values()]) if (!assigned.has(part.key)) this.revoke(part);
    this.applyPause(true);
    this.log.debug({ assignment, generation: gen }, "joined the group");
    const pending = [...this.parts.values()].filter((p) => !p.ready);
    this.joinWork = this.joinWork.then(() => this.initialize(gen, pending));
    this.later(0, () => this.scheduleCommit());
  }

  /** Revoked: its buffered messages are dropped and its retries stop; the new owner redelivers. */
  private revoke(part: PartState): void {
    part.owned = false;
    part.abort.abort();
    this.parts.delete(part.key);
    this.buffer = this.buffer.slice(this.head).filter((t) => t.part !== part);
    this.head = 0;
    if (part.pending.size > 0) {
      this.log.debug(
        { topic: part.topic, partition: part.partition, unsettled: part.pending.size },
        "partition revoked with unsettled messages",
      );
    }
  }

  /**
   * Settles where the group starts in partitions it has no offset for, commits that in this
   * generation, and only then lets them be fetched. kafkajs alone would resolve "latest" lazily
   * at its first fetch (after subscribe resolved) and again after any rebalance that comes before
   * a commit, skipping what was published in between.
   *
   * - A topic the group has no offset on at all (a new group, or a topic new to it) starts at the
   *   end, now; "now" is remembered in the metadata of every offset commit (`ofevents.since=`).
   * - A partition without offset on a topic the group already reads (a partition added later,
   *   or one a concurrently starting member has not initialised yet) starts at the first record
   *   published since then (by record timestamp, less a clock-skew margin), so nothing published
   *   after a member's subscribe resolved is skipped, and no older history is replayed.
   * - Offsets committed without that metadata (by another client): kafkajs's fromBeginning.
   */
  private async initialize(gen: number, pending: PartState[]): Promise<void> {
    const stale = (): boolean => gen !== this.generation || this.closing;
    if (stale()) return;
    const todo = pending.filter((p) => p.owned && !p.ready);
    try {
      if (todo.length > 0) {
        const admin = this.bus.admin;
        const topics = [...new Set(todo.map((p) => p.topic))];
        const seeks: Array<{ topic: string; partition: number; offset: string; metadata: string | null }> = [];
        for (const { topic, partitions } of await admin.fetchOffsets({ groupId: this.groupId, topics })) {
          const withOffset = partitions.filter((p) => BigInt(p.offset) >= 0n);
          for (const p of withOffset) {
            const since = parseSince(p.metadata);
            if (since !== undefined) {
              this.since.set(topic, since);
              break;
            }
          }
          const missing = todo.filter((p) => p.topic === topic && !withOffset.some((w) => w.partition === p.partition));
          if (missing.length === 0) continue;
          let starts: Array<{ partition: number; offset: string }>;
          if (withOffset.length === 0) {
            this.since.set(topic, Date.now());
            starts = (await admin.fetchTopicOffsets(topic)).map((o) => ({ partition: o.partition, offset: o.high }));
          } else {
            const since = this.since.get(topic);
            if (since === undefined) continue;
            starts = await admin.fetchTopicOffsetsByTimestamp(topic, since - CLOCK_SKEW_MS);
          }
          for (const part of missing) {
            const start = starts.find((o) => o.partition === part.partition);
            if (start !== undefined)
              seeks.push({ topic, partition: part.partition, offset: start.offset, metadata: this.metadata(topic) });
          }
        }
        if (stale()) return;
        if (seeks.length > 0) {
          await this.consumer.commitOffsets(seeks);
          // kafkajs drops a commit silently when its runner is not running: check it landed.
          const check = await admin.fetchOffsets({
            groupId: this.groupId,
            topics: [...new Set(seeks.map((s) => s.topic))],
          });
          const landed = seeks.every((s) =>
            check.some(
              (t) =>
                t.topic === s.topic && t.partitions.some((p) => p.partition === s.partition && p.offset === s.offset),
            ),
          );
          if (!landed) throw new BusError(ErrorCode.BusSubscribe, "starting offsets not committed yet");
          if (stale()) return;
          for (const { topic, partition, offset } of seeks) this.consumer.seek({ topic, partition, offset });
          this.log.debug({ offsets: seeks }, "starting offsets set");
        }
      }
      for (const part of todo) if (part.owned) part.ready = true;
      this.applyPause();
      this.settleReady();
    } catch (err) {
      if (stale()) return;
      this.log.debug({ err }, "settling starting offsets failed, retrying");
      this.later(RETRY_LATER_MS, () => {
        this.joinWork = this.joinWork.then(() => this.initialize(gen, todo));
      });
    }
  }

  /** Offset commit metadata: since when the group reads the topic. */
  private metadata(topic: string): string | null {
    const since = this.since.get(topic);
    return since === undefined ? null : `${SINCE_PREFIX}${since}`;
  }

  /** Takes a fetched batch into the buffer; the handlers run outside kafkajs's fetch loop. */
  private async onBatch({ batch, resolveOffset, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const part = this.parts.get(partKey(batch.topic, batch.partition));
    if (part === undefined || !part.ready || this.closing) return;
    for (const message of batch.messages) {
      if (!isRunning() || isStale() || this.closing) break;
      const offset = BigInt(message.offset);
      if (part.next === undefined || offset >= part.next) {
        part.next = offset + 1n;
        part.pending.add(offset);
        this.buffer.push({ part, offset, message });
      }
      resolveOffset(message.offset);
    }
    this.pump();
  }

  /** Starts buffered messages while there are free slots, then pauses or resumes fetching. */
  private pump(): void {
    while (!this.closing && this.inFlight < this.maxInFlight && this.head < this.buffer.length) {
      const taken = this.buffer[this.head]!;
      this.buffer[this.head++] = undefined as unknown as Taken;
      if (this.head === this.buffer.length) {
        this.buffer = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.buffer.length) {
        this.buffer = this.buffer.slice(this.head);
        this.head = 0;
      }
      if (!taken.part.owned) continue;
      this.inFlight++;
      void this.run(taken);
    }
    this.applyPause();
  }

  /**
   * Pauses fetching while a full slot's worth of messages waits in the buffer (the buffer is
   * bounded by maxInFlight plus one fetch), or while a partition's start is not settled.
   */
  private applyPause(force = false): void {
    const full = this.closing || this.buffer.length - this.head >= this.maxInFlight;
    const pause = new Map<string, number[]>();
    const resume = new Map<string, number[]>();
    for (const part of this.parts.values()) {
      const want = full || !part.ready;
      if (!force && want === part.paused) continue;
      part.paused = want;
      const m = want ? pause : resume;
      let list = m.get(part.topic);
      if (list === undefined) m.set(part.topic, (list = []));
      list.push(part.partition);
    }
    try {
      if (pause.size > 0) this.consumer.pause([...pause].map(([topic, partitions]) => ({ topic, partitions })));
      if (resume.size > 0) this.consumer.resume([...resume].map(([topic, partitions]) => ({ topic, partitions })));
    } catch (err) {
      // Not running (stopped or crashed): the next join applies the state again.
      this.log.debug({ err }, "pause/resume skipped");
    }
  }

  /**
   * Delivers one message until it is acked, dead-lettered or abandoned (close, revocation). A
   * redelivery is a timer in process: the message holds its slot and the watermark, not the
   * partition.
   */
  private async run({ part, offset, message }: Taken): Promise<void> {
    const topic = this.byKafkaTopic.get(part.topic) ?? part.topic;
    const value = message.value ?? Buffer.alloc(0);
    let settled = false;
    try {
      for (let deliveries = 1; ; deliveries++) {
        let retryInMs: number | undefined;
        await this.engine.deliver({
          topic,
          deliveryCount: deliveries,
          decode: () => decodeBusEvent(value),
          raw: () => new Uint8Array(value),
          position: () => ({
            id: `${part.topic}-${part.partition}-${offset}`,
            source: `/ofevents/bus/kafka/${part.topic}`,
            fields: { partition: part.partition, offset: offset.toString() },
          }),
          ack: () => {
            settled = true;
          },
          redeliver: (delayMs) => {
            retryInMs = delayMs;
          },
        });
        if (retryInMs === undefined || this.closing || !part.owned) return;
        await sleep(retryInMs, part.abort.signal);
        if (this.closing || !part.owned) return;
      }
    } finally {
      this.inFlight--;
      if (settled) {
        part.pending.delete(offset);
        if (part.owned) this.scheduleCommit();
      }
      if (this.inFlight === 0) for (const r of this.idle.splice(0)) r();
      this.pump();
    }
  }

  /** Commits watermarks; one commit at a time, later settlements coalesce into the next. */
  private scheduleCommit(): void {
    this.commitWanted = true;
    this.committing ??= this.commitLoop().finally(() => {
      this.committing = undefined;
    });
  }

  private async commitLoop(): Promise<void> {
    while (this.commitWanted) {
      this.commitWanted = false;
      // Between a rebalance and the next join the offsets would be stale: GROUP_JOIN commits again.
      if (!this.joined) return;
      const batch: Array<{ part: PartState; offset: bigint }> = [];
      for (const part of this.parts.values()) {
        if (!part.owned || !part.ready) continue;
        const w = watermark(part);
        if (w !== undefined && (part.committed === undefined || w > part.committed)) batch.push({ part, offset: w });
      }
      if (batch.length === 0) continue;
      try {
        await this.consumer.commitOffsets(
          batch.map(({ part, offset }) => ({
            topic: part.topic,
            partition: part.partition,
            offset: offset.toString(),
            metadata: this.metadata(part.topic),
          })),
        );
        for (const { part, offset } of batch)
          if (part.committed === undefined || offset > part.committed) part.committed = offset;
      } catch (err) {
        // Rebalancing (the next join commits again) or the coordinator moved: try again shortly.
        this.log.debug({ err }, "offset commit failed");
        if (!this.closing) this.later(RETRY_LATER_MS, () => this.scheduleCommit());
        return;
      }
    }
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /**
   * Stops taking messages, abandons those waiting in the buffer or for a retry (they are not
   * committed, so the group gets them again), waits for running handlers, commits, leaves the group.
   */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      this.settleReady(BusError.closed());
      this.buffer = [];
      this.head = 0;
      for (const part of this.parts.values()) part.abort.abort();
      this.applyPause();
      if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
      await this.joinWork;
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      await this.committing;
      this.scheduleCommit();
      await this.committing;
      for (const off of this.offListeners.splice(0)) off();
      for (const part of this.parts.values()) part.owned = false;
      try {
        await this.consumer.disconnect();
      } catch (err) {
        this.log.warn({ err }, "consumer disconnect failed");
      }
      this.bus.forget(this);
    })();
    return this.closed;
  }
}

/**
 * Creates the Kafka bus and connects its producer and admin client. Resolves once connected;
 * rejects with a BusError when the brokers cannot be reached, or an OfEventsError (CONFIG) when
 * a referenced secret is missing. `publish` resolves after every in-sync replica acked.
 */
export async function createKafkaBus(
  spec: KafkaBusSpec,
  options: CreateEventBusOptions,
  tuning: KafkaBusTuning = {},
): Promise<EventBus> {
  const bus = new KafkaBus(spec, options, tuning);
  await bus.connect();
  return bus;
}
