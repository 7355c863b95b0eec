/**
 * The NATS JetStream bus (nats@2). One stream per bus topic, created on demand; one durable pull
 * consumer per (topic, group), shared by the group's members. Every contract of the memory bus
 * holds, across process and server restarts:
 *
 * - `publish` resolves on the stream's PubAck; the CloudEvent id is the `Nats-Msg-Id`, so a
 *   retried publish within the stream's duplicate window is stored once.
 * - A handler that resolves acks; one that throws naks with an exponential delay; after
 *   `maxDeliver` deliveries the event is published to the dead-letter topic first and only then
 *   terminated, so it is never both dead-lettered and lost. The consumer's own `max_deliver` is
 *   unlimited: we decide, JetStream never drops.
 * - A slow handler is kept alive with in-progress acks (`+WPI`) every third of `ackWait`.
 * - Running handlers per subscription stay within `maxInFlight`: each pull asks for no more than
 *   the free slots; what arrives beyond them (a pull repeated on reconnect) waits, kept alive.
 *
 * Names (docs/eventbus/jetstream.md): topic `t` lives in stream `<token(prefix)>-<token(t)>` on
 * subject `t`, the subject Dapr's pubsub.jetstream uses for topic `t`, so Dapr-side and direct
 * publishers and subscribers share topics; group `g` is consumer `<token(g)>` of that stream.
 * `token` keeps `[A-Za-z0-9-]`, doubles `_` and writes any other byte of the UTF-8 encoding as
 * `_XX`, which is injective and valid in stream and consumer names. The message body is the
 * structured CloudEvent (JSON) that daprd hands to its app; what daprd adds to events it
 * publishes is taken off on delivery (envelope.ts).
 */
import {
  AckPolicy,
  DeliverPolicy,
  ErrorCode as NatsErrorCode,
  NatsError,
  connect,
  nanos,
  type Consumer,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
} from "nats";
import { hostname } from "node:os";
import {
  BusError,
  DEFAULT_JETSTREAM_STREAM_PREFIX,
  ErrorCode,
  OfEventsError,
  backoffDelay,
  jetStreamNames,
  natsToken,
  createInstrumentation,
  durationMs,
  encodeEvent,
  sleep,
  type CloudEvent,
  type JetStreamBusSpec,
  type JetStreamNames,
  type Logger,
  within,
  withoutCredentials,
} from "@ofevents/core";
import { ConsumerEngine, type InboundMessage } from "../consumer.js";
import { decodeBusEvent } from "../envelope.js";
import { logNatsStatus, natsOptions } from "../clients.js";
import { openJetStreamSeenSet } from "./jetstream-seen.js";
import { readJetStream, tailJetStream, type JetStreamReadContext } from "./jetstream-read.js";
import { DEFAULT_MAX_AGE, JsErr, ensureTopicStream, jsErrCode, type StreamEntry } from "./jetstream-streams.js";
import { JetStreamPublisher } from "./jetstream-publish.js";
import { pingWithin } from "../ping.js";
import type { CreateEventBusOptions } from "../factory.js";
import {
  DEFAULT_MAX_DELIVER,
  RESUBSCRIBE_BACKOFF,
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

// The names live in core (naming.ts), so the controller's KEDA scalers use the same ones.
export { jetStreamNames, natsToken };
export type { JetStreamNames };

export const DEFAULT_STREAM_PREFIX = DEFAULT_JETSTREAM_STREAM_PREFIX;
export const DEFAULT_ACK_WAIT = "30s";
export { DEFAULT_MAX_AGE };
const PREFIX_MAX = 40;
/** Unacknowledged messages a consumer may have out (members, nak-delayed retries) at least. */
const MIN_MAX_ACK_PENDING = 1024;
/** Beyond the ack wait, how long an ordered subscription gives the server to queue due redeliveries. */
const ORDERED_START_MARGIN_MS = 500;
/** How long a `subscriptionType: topic` member's consumer is kept unused before the server removes it. */
const TOPIC_MEMBER_IDLE_MS = 24 * 3_600_000;

/** Knobs that are not part of the EventBus spec (defaults suit production; tests shorten them). */
export interface JetStreamBusTuning {
  /** How long publish waits for the PubAck (and stream look-ups for their answer), ms (5000). */
  publishTimeoutMs?: number | undefined;
  /** Pause between reconnect attempts, ms (1000, plus up to 200 jitter). */
  reconnectTimeWaitMs?: number | undefined;
  /** Lifetime of one pull request, ms (10,000; JetStream's minimum is 1000). */
  fetchExpiresMs?: number | undefined;
  /** How long close() lets the connection drain before it closes it, ms (5000). */
  drainTimeoutMs?: number | undefined;
  /** Timeout of the first connect, ms (5000). */
  connectTimeoutMs?: number | undefined;
  /** This process's name among a group's members, for `subscriptionType: topic` (the host name). */
  memberId?: string | undefined;
}

function isNoResponders(err: unknown): boolean {
  return err instanceof NatsError && err.code === NatsErrorCode.NoResponders;
}

class JetStreamBus implements EventBus {
  readonly driver = "jetstream";
  readonly events = createInstrumentation<BusEvents>();
  readonly log: Logger;
  readonly maxDeliver: number;
  readonly ackWaitMs: number;
  readonly fetchExpiresMs: number;
  private readonly prefix: string;
  private readonly spec: JetStreamBusSpec;
  /** The group of a subscription as a consumer: per member with `subscriptionType: topic`. */
  private readonly memberId: string;
  private readonly publishTimeoutMs: number;
  private readonly drainTimeoutMs: number;
  private readonly streams = new Map<string, Promise<StreamEntry>>();
  /** The entries of `streams` that resolved: publish uses them without waiting (or a timer). */
  private readonly knownStreams = new Map<string, StreamEntry>();
  private readonly subs = new Set<JetStreamSubscription>();
  private readonly publishing = new Set<Promise<unknown>>();
  /** Publishes and their PubAcks, on one inbox subscription (jetstream-publish.ts). */
  private readonly publisher: JetStreamPublisher;
  private closing: Promise<void> | undefined;

  constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    spec: JetStreamBusSpec,
    log: Logger,
    tuning: JetStreamBusTuning,
  ) {
    this.log = log;
    this.prefix = spec.stream ?? DEFAULT_STREAM_PREFIX;
    this.spec = spec;
    this.memberId = tuning.memberId ?? hostname();
    this.maxDeliver = spec.maxDeliver ?? DEFAULT_MAX_DELIVER;
    this.ackWaitMs = durationMs(spec.ackWait ?? DEFAULT_ACK_WAIT);
    this.publishTimeoutMs = tuning.publishTimeoutMs ?? 5_000;
    this.drainTimeoutMs = tuning.drainTimeoutMs ?? 5_000;
    this.fetchExpiresMs = Math.max(1_000, tuning.fetchExpiresMs ?? 10_000);
    this.publisher = new JetStreamPublisher(nc);
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  names(topic: string, group?: string): JetStreamNames {
    return jetStreamNames(this.prefix, topic, group, this.spec.durablePrefix);
  }

  /** The consumer group a subscription of `group` reads through (per member for "topic"). */
  consumerGroup(group: string): string {
    return this.spec.subscriptionType === "topic" ? `${group}.${this.memberId}` : group;
  }

  /** Each subscriber's in-flight, within the consumer's max ack pending when the spec sets one. */
  inFlightLimit(requested: number): number {
    return this.spec.maxAckPending === undefined ? requested : Math.min(requested, this.spec.maxAckPending);
  }

  /** Where a new consumer starts (the spec's deliverPolicy; "new" by default). */
  private deliverFrom(): Partial<ConsumerConfig> {
    const j = this.spec;
    switch (j.deliverPolicy) {
      case "all":
        return { deliver_policy: DeliverPolicy.All };
      case "last":
        return { deliver_policy: DeliverPolicy.Last };
      case "sequence":
        return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: j.startSequence! };
      case "time": {
        const at =
          j.startTime !== undefined ? new Date(j.startTime) : new Date(Date.now() - durationMs(j.startTimeDelta!));
        return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: at.toISOString() };
      }
      default:
        return { deliver_policy: DeliverPolicy.New };
    }
  }

  /** Creates the topic's stream unless it exists (idempotent, cached); rejects with a BusError. */
  ensureStream(topic: string): Promise<StreamEntry> {
    const cached = this.streams.get(topic);
    if (cached !== undefined) return cached;
    const created = this.createStream(topic);
    this.streams.set(topic, created);
    created.then(
      (entry) => {
        if (this.streams.get(topic) === created) this.knownStreams.set(topic, entry);
      },
      // A failed look-up is not cached: the next call tries again.
      () => {
        if (this.streams.get(topic) === created) this.streams.delete(topic);
      },
    );
    return created;
  }

  forgetStream(topic: string): void {
    this.streams.delete(topic);
    this.knownStreams.delete(topic);
  }

  private createStream(topic: string): Promise<StreamEntry> {
    return ensureTopicStream(this.jsm, this.spec, topic, this.log, (what, err) =>
      this.busError(ErrorCode.BusPublish, what, err, topic),
    );
  }

  /**
   * Creates the group's durable consumer on the topic's stream, or adjusts an existing one
   * (ack wait, max ack pending) without resetting where it is.
   */
  async ensureConsumer(topic: string, group: string, maxInFlight: number): Promise<Consumer> {
    const { stream, subject } = await this.ensureStream(topic).catch((err: unknown) => {
      // The stream look-up is shared with publish; report it as a subscribe failure here.
      if (err instanceof BusError && err.code === ErrorCode.BusPublish) {
        throw new BusError(ErrorCode.BusSubscribe, err.message, { cause: err.cause, retriable: err.retriable, topic });
      }
      throw err;
    });
    const name = this.names(topic, group).consumer!;
    // The spec's maxAckPending exactly (natsStreaming's maxInFlight), else room for the members.
    const exact = this.spec.maxAckPending;
    const maxAckPending = exact ?? Math.max(MIN_MAX_ACK_PENDING, maxInFlight * 4);
    const ackWait = nanos(this.ackWaitMs);
    for (let attempt = 0; ; attempt++) {
      try {
        const info = await this.jsm.consumers.info(stream, name);
        const c = info.config;
        const pending = c.max_ack_pending ?? 0;
        if (c.ack_wait !== ackWait || (exact !== undefined ? pending !== exact : pending < maxAckPending)) {
          await this.jsm.consumers.update(stream, name, {
            ack_wait: ackWait,
            max_ack_pending: exact ?? Math.max(maxAckPending, pending),
          });
          this.log.info({ topic, stream, consumer: name }, "updated consumer ack wait / max ack pending");
        }
        return await this.js.consumers.get(stream, name);
      } catch (err) {
        if (jsErrCode(err) !== JsErr.ConsumerNotFound || attempt > 0) {
          if (jsErrCode(err) === JsErr.StreamNotFound) this.forgetStream(topic);
          throw this.busError(ErrorCode.BusSubscribe, `getting consumer ${name} of stream ${stream}`, err, topic);
        }
      }
      const config: Partial<ConsumerConfig> = {
        durable_name: name,
        description: `ofevents group ${group} on topic ${topic}`,
        // In another stream that captures the topic (found by subject), only the topic's messages.
        ...(stream === this.names(topic).stream ? {} : { filter_subject: subject }),
        ack_policy: AckPolicy.Explicit,
        ack_wait: ackWait,
        // A new group starts where the spec says (default: what is published from now on); an
        // existing one resumes (never reset).
        ...this.deliverFrom(),
        max_deliver: -1,
        max_ack_pending: maxAckPending,
        // A member's own consumer ("topic") outlives a restart, not the member: a day unused, it goes.
        ...(this.spec.subscriptionType === "topic" ? { inactive_threshold: nanos(TOPIC_MEMBER_IDLE_MS) } : {}),
      };
      try {
        await this.jsm.consumers.add(stream, config);
        this.log.info({ topic, stream, consumer: name }, "created durable consumer");
        return await this.js.consumers.get(stream, name);
      } catch (err) {
        const code = jsErrCode(err);
        // Another member created it meanwhile: look it up again.
        if (code === JsErr.ConsumerAlreadyExists || code === JsErr.ConsumerNameExists) continue;
        throw this.busError(ErrorCode.BusSubscribe, `creating consumer ${name} on stream ${stream}`, err, topic);
      }
    }
  }

  busError(code: ErrorCode, what: string, err: unknown, topic?: string): BusError {
    if (err instanceof BusError) return err;
    const ne = err instanceof NatsError ? err : undefined;
    const closed = this.nc.isClosed() || ne?.code === NatsErrorCode.ConnectionClosed;
    if (closed)
      return new BusError(ErrorCode.BusClosed, `${what}: the NATS connection is closed`, {
        cause: err,
        ...(topic === undefined ? {} : { topic }),
      });
    const permanent =
      ne !== undefined &&
      (ne.code === NatsErrorCode.MaxPayloadExceeded ||
        ne.code === NatsErrorCode.BadPayload ||
        ne.isPermissionError() ||
        // A request JetStream refuses as invalid (e.g. subjects overlapping another stream's).
        ne.api_error?.code === 400);
    const reason =
      ne?.code === NatsErrorCode.Timeout
        ? "no answer from NATS in time"
        : err instanceof Error
          ? err.message
          : String(err);
    return new BusError(code, `${what}: ${reason}`, {
      cause: err,
      retriable: !permanent,
      ...(topic === undefined ? {} : { topic }),
    });
  }

  async publish(topic: string, event: CloudEvent): Promise<void> {
    await this.publishWithId(topic, event, event.id);
  }

  /** Publishes with `msgId` as Nats-Msg-Id (dead letters use one per group). */
  async publishWithId(topic: string, event: CloudEvent, msgId: string): Promise<void> {
    if (this.closed) throw BusError.closed(topic);
    const p = this.doPublish(topic, encodeEvent(event), msgId);
    this.publishing.add(p);
    try {
      await p;
    } finally {
      this.publishing.delete(p);
    }
    this.events.emit("published", { topic, id: event.id });
  }

  private async doPublish(topic: string, data: Uint8Array, msgId: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const { subject } =
        this.knownStreams.get(topic) ??
        (await within(
          this.ensureStream(topic),
          this.publishTimeoutMs,
          () =>
            new BusError(ErrorCode.BusPublish, `looking up the stream of ${topic}: no answer from NATS in time`, {
              topic,
            }),
        ));
      try {
        const ack = await this.publisher.publish(subject, data, msgId, this.publishTimeoutMs);
        if (ack.duplicate)
          this.log.debug({ topic, id: msgId, seq: ack.seq }, "duplicate publish ignored by the stream");
        return;
      } catch (err) {
        // No stream answers the subject: it was deleted since we cached it. Create it again, once.
        if (isNoResponders(err) && attempt === 0) {
          this.forgetStream(topic);
          continue;
        }
        throw this.busError(ErrorCode.BusPublish, `publishing to ${topic}`, err, topic);
      }
    }
  }

  async subscribe(
    topics: readonly string[],
    handler: MessageHandler,
    options: SubscribeOptions,
  ): Promise<Subscription> {
    if (this.closed) throw BusError.closed();
    const sub = new JetStreamSubscription(this, [...topics], handler, options);
    this.subs.add(sub);
    try {
      await sub.start();
    } catch (err) {
      await sub.close();
      throw err instanceof BusError ? err : this.busError(ErrorCode.BusSubscribe, `subscribing ${options.group}`, err);
    }
    return sub;
  }

  forget(sub: JetStreamSubscription): void {
    this.subs.delete(sub);
  }

  /** A KV bucket per name (jetstream-seen.ts); rejects with a BusError. */
  async seenSet(name: string, windowMs: number): Promise<SeenSet> {
    if (this.closed) throw BusError.closed();
    return openJetStreamSeenSet(
      {
        js: this.js,
        jsm: this.jsm,
        prefix: this.prefix,
        replicas: this.spec.replicas ?? 1,
        log: this.log,
        closed: () => this.closed,
        busError: (code, what, err) => this.busError(code, what, err),
      },
      name,
      windowMs,
    );
  }

  /** What `read` and `tail` need (jetstream-read.ts); errors name `topic` when given. */
  private readContext(topic?: string): JetStreamReadContext {
    return {
      js: this.js,
      jsm: this.jsm,
      log: this.log,
      ensureStream: (t) => this.ensureStream(t),
      busError: (code, what, err) => this.busError(code, what, err, topic),
    };
  }

  tail(topics: readonly string[], onEvent: (e: TailedEvent) => void): Promise<Tail> {
    if (this.closed) throw BusError.closed();
    return tailJetStream(this.readContext(), topics, onEvent);
  }

  read(topic: string, options?: ReadOptions): AsyncIterable<RetainedEvent> {
    if (this.closed) throw BusError.closed();
    return readJetStream(this.readContext(topic), topic, options);
  }

  ping(timeoutMs: number): Promise<void> {
    if (this.closed || this.nc.isClosed()) return Promise.reject(BusError.closed());
    // A JetStream API request, not just a NATS PING: the server must also have JetStream up.
    return pingWithin(`JetStream at ${this.nc.getServer()}`, () => this.jsm.getAccountInfo(), timeoutMs);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.subs].map((s) => s.close()));
    await Promise.allSettled([...this.publishing]);
    if (this.nc.isClosed()) return;
    try {
      await within(this.nc.drain(), this.drainTimeoutMs, () => new Error("drain timed out"));
    } catch (err) {
      this.log.warn({ err }, "connection did not drain in time; closing it");
    } finally {
      if (!this.nc.isClosed()) await this.nc.close();
    }
  }
}

/** One member of a group: a pull loop per topic, sharing one in-flight budget. */
class JetStreamSubscription implements Subscription {
  readonly group: string;
  /** The group as a consumer (per member with `subscriptionType: topic`). */
  private readonly consumerGroup: string;
  private readonly maxInFlight: number;
  private readonly ordered: boolean;
  private readonly engine: ConsumerEngine;
  private readonly log: Logger;
  private readonly inFlight = new Set<JsMsg>();
  /** Messages received beyond the budget (a pull re-issued on reconnect): handled next. */
  private readonly overflow: Array<{ msg: JsMsg; topic: string }> = [];
  private readonly fetches = new Set<ConsumerMessages>();
  /** Messages asked for by each topic's open pull and not yet received. */
  private readonly requested = new Map<string, number>();
  private readonly loops: Array<Promise<void>> = [];
  private readonly stop = new AbortController();
  private wakers: Array<() => void> = [];
  private ticker: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly bus: JetStreamBus,
    readonly topics: readonly string[],
    handler: MessageHandler,
    options: SubscribeOptions,
  ) {
    this.group = options.group;
    this.consumerGroup = bus.consumerGroup(options.group);
    this.maxInFlight = Math.max(1, bus.inFlightLimit(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT));
    this.ordered = options.ordered === true;
    this.log = bus.log.child({ group: options.group });
    this.engine = new ConsumerEngine({
      group: options.group,
      options,
      maxDeliver: bus.maxDeliver,
      handler,
      events: bus.events,
      log: this.log,
      // One msg id per group, so two groups dead-lettering the same event to one topic are not
      // taken for duplicates.
      publishDeadLetter: (topic, event) => bus.publishWithId(topic, event, `${event.id}/dead-letter/${options.group}`),
    });
  }

  /** Resolves once every topic's consumer exists, so events published afterwards reach it. */
  async start(): Promise<void> {
    const consumers: Array<[string, Consumer]> = [];
    for (const topic of new Set(this.topics)) {
      consumers.push([topic, await this.bus.ensureConsumer(topic, this.consumerGroup, this.maxInFlight)]);
    }
    if (this.stop.signal.aborted) return;
    if (this.ordered) await this.awaitEarlierMembers(consumers);
    if (this.stop.signal.aborted) return;
    // In-progress acks keep a slow handler's message (and an overflowed one) from redelivery.
    const every = Math.max(100, Math.floor(this.bus.ackWaitMs / 3));
    this.ticker = setInterval(() => {
      for (const m of this.inFlight) m.working();
      for (const o of this.overflow) o.msg.working();
    }, every);
    this.ticker.unref();
    for (const [topic, consumer] of consumers) this.loops.push(this.pull(topic, consumer));
  }

  /**
   * For an ordered subscription: when a consumer has messages out that no member acknowledged
   * (taken by a member that crashed), waits one ack wait (and a margin for the server's check) so
   * that they are due for redelivery, and so come before newer messages, when the pull starts.
   */
  private async awaitEarlierMembers(consumers: ReadonlyArray<[string, Consumer]>): Promise<void> {
    let unacked = 0;
    for (const [topic, consumer] of consumers) {
      const info = await consumer.info(false).catch((err: unknown) => {
        throw this.bus.busError(ErrorCode.BusSubscribe, "reading consumer info", err, topic);
      });
      unacked += info.num_ack_pending;
    }
    if (unacked === 0) return;
    const waitMs = this.bus.ackWaitMs + ORDERED_START_MARGIN_MS;
    this.log.info(
      { unacked, waitMs },
      "ordered subscription: waiting for the messages an earlier member did not acknowledge to come back first",
    );
    await sleep(waitMs, this.stop.signal);
  }

  /** Slots neither running a handler nor holding an overflowed message. */
  private get free(): number {
    return this.maxInFlight - this.inFlight.size - this.overflow.length;
  }

  /** Free slots not promised to another topic's open pull (each pull may still ask for one). */
  private unreserved(topic: string): number {
    let others = 0;
    for (const [t, n] of this.requested) if (t !== topic) others += n;
    return Math.max(1, this.free - others);
  }

  /** Resolves when at least `n` slots are free, or on close. */
  private async capacity(n: number): Promise<void> {
    while (!this.stop.signal.aborted && this.free < n) {
      await new Promise<void>((r) => this.wakers.push(r));
    }
  }

  private wake(): void {
    for (const w of this.wakers.splice(0)) w();
  }

  private async pull(topic: string, initial: Consumer): Promise<void> {
    let consumer: Consumer | undefined = initial;
    let failures = 0;
    // Pull again once a quarter of the budget is free, not for every single slot.
    const threshold = Math.max(1, Math.ceil(this.maxInFlight / 4));
    while (!this.stop.signal.aborted) {
      try {
        consumer ??= await this.bus.ensureConsumer(topic, this.consumerGroup, this.maxInFlight);
        await this.capacity(threshold);
        if (this.stop.signal.aborted) break;
        const batch = this.unreserved(topic);
        const started = Date.now();
        let received = 0;
        this.requested.set(topic, batch);
        const iter = await consumer.fetch({ max_messages: batch, expires: this.bus.fetchExpiresMs });
        this.fetches.add(iter);
        if (this.stop.signal.aborted) iter.stop();
        try {
          for await (const m of iter) {
            failures = 0;
            received++;
            this.requested.set(topic, Math.max(0, batch - received));
            this.accept(topic, m);
          }
        } finally {
          this.fetches.delete(iter);
          this.requested.delete(topic);
        }
        // A pull that ends at once with nothing (server answering with a status): do not spin.
        if (received === 0 && Date.now() - started < 100) await sleep(100, this.stop.signal);
      } catch (err) {
        if (this.stop.signal.aborted) break;
        failures++;
        const code = jsErrCode(err);
        // The consumer or its stream was deleted under us: create them again.
        if (code === JsErr.ConsumerNotFound || code === JsErr.StreamNotFound || failures > 3) consumer = undefined;
        if (code === JsErr.StreamNotFound) this.bus.forgetStream(topic);
        const pause = backoffDelay(failures, RESUBSCRIBE_BACKOFF);
        this.log.warn({ err, topic, failures, pauseMs: pause }, "pulling failed; retrying");
        await sleep(pause, this.stop.signal);
      }
    }
  }

  private accept(topic: string, msg: JsMsg): void {
    if (this.stop.signal.aborted) {
      // Received after close: give it back at once rather than after ackWait.
      msg.nak();
      return;
    }
    if (this.inFlight.size >= this.maxInFlight) {
      this.overflow.push({ msg, topic });
      return;
    }
    this.run(topic, msg);
  }

  private run(topic: string, msg: JsMsg): void {
    this.inFlight.add(msg);
    void this.handle(topic, msg)
      .catch((err: unknown) => this.log.error({ err, topic, seq: msg.seq }, "settling a message failed"))
      .finally(() => {
        this.inFlight.delete(msg);
        const next = this.stop.signal.aborted ? undefined : this.overflow.shift();
        if (next !== undefined) this.run(next.topic, next.msg);
        this.wake();
      });
  }

  /** The consumer's `max_deliver` is unlimited: the engine decides, JetStream never drops. */
  private handle(topic: string, msg: JsMsg): Promise<void> {
    return this.engine.deliver(new JetStreamInbound(topic, msg));
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.stop.abort();
    this.wake();
    for (const f of this.fetches) f.stop();
    await Promise.allSettled(this.loops);
    for (const o of this.overflow.splice(0)) o.msg.nak();
    while (this.inFlight.size > 0) await new Promise<void>((r) => this.wakers.push(r));
    clearInterval(this.ticker);
    this.bus.forget(this);
  }
}

/**
 * Connects to NATS and returns the JetStream bus. Rejects with a retriable BusError when the
 * server cannot be reached, and with a CONFIG error when it has no JetStream or the spec is
 * invalid. Once connected, the client reconnects forever; publish fails with a retriable BusError
 * after `publishTimeoutMs` while the server is away, and subscriptions resume by themselves.
 */
export async function createJetStreamBus(
  spec: JetStreamBusSpec,
  options: CreateEventBusOptions,
  tuning: JetStreamBusTuning = {},
): Promise<EventBus> {
  const log = options.logger.child({ component: "bus.jetstream" });
  const prefix = spec.stream ?? DEFAULT_STREAM_PREFIX;
  if (natsToken(prefix).length > PREFIX_MAX) {
    throw new OfEventsError(
      ErrorCode.Config,
      `jetstream.stream prefix "${prefix}" is too long (at most ${PREFIX_MAX} characters)`,
    );
  }
  for (const [field, value] of [
    ["ackWait", spec.ackWait],
    ["maxAge", spec.maxAge],
  ] as const) {
    if (value !== undefined) {
      try {
        durationMs(value);
      } catch (err) {
        throw new OfEventsError(ErrorCode.Config, `jetstream.${field}: ${(err as Error).message}`, { cause: err });
      }
    }
  }
  const servers = spec.url
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  let creds: string | undefined;
  if (spec.credentialsSecret !== undefined) {
    if (options.secrets === undefined) {
      throw new OfEventsError(ErrorCode.Config, "jetstream.credentialsSecret is set but no secret resolver was given");
    }
    creds = options.secrets.resolve(spec.credentialsSecret, options.namespace ?? "default");
  }
  let nc: NatsConnection;
  try {
    nc = await connect(
      natsOptions(
        servers,
        "ofevents-bus",
        { creds },
        {
          reconnectTimeWait: tuning.reconnectTimeWaitMs ?? 1_000,
          reconnectJitter: 200,
          timeout: tuning.connectTimeoutMs ?? 5_000,
          pingInterval: 20_000,
          maxPingOut: 3,
        },
      ),
    );
  } catch (err) {
    const auth = err instanceof NatsError && (err.isAuthError() || err.code === NatsErrorCode.BadCreds);
    throw new BusError(
      ErrorCode.BusSubscribe,
      `cannot connect to NATS at ${withoutCredentials(spec.url)}: ${(err as Error).message}`,
      {
        cause: err,
        retriable: !auth,
      },
    );
  }
  let jsm: JetStreamManager;
  try {
    jsm = await nc.jetstreamManager({ timeout: tuning.publishTimeoutMs ?? 5_000 });
  } catch (err) {
    await nc.close();
    if (isNoResponders(err)) {
      throw new OfEventsError(
        ErrorCode.Config,
        `JetStream is not enabled on the NATS server at ${withoutCredentials(spec.url)}`,
        {
          cause: err,
        },
      );
    }
    throw new BusError(
      ErrorCode.BusSubscribe,
      `JetStream at ${withoutCredentials(spec.url)} did not answer: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const js = nc.jetstream({ timeout: tuning.publishTimeoutMs ?? 5_000 });
  const bus = new JetStreamBus(nc, js, jsm, spec, log, tuning);
  logNatsStatus(nc, log);
  void nc.closed().then((err) => {
    if (err !== undefined) log.error({ err }, "NATS connection closed with an error");
    else if (!bus.closed) log.error("NATS connection closed");
  });
  log.info({ servers: servers.map(withoutCredentials), prefix }, "connected to NATS JetStream");
  return bus;
}

/**
 * One JetStream delivery for the consumer engine. The delivery count and the stream come from the
 * message's reply subject, which nats.js parses on first use (a split and six numbers, a few µs):
 * only a failed or undecodable delivery, or a handler that asks for the count, needs them.
 */
class JetStreamInbound implements InboundMessage {
  /** The count is in the reply subject, parsed by nats.js on first read: the handler reads it if it needs it. */
  readonly countIsLazy = true;

  constructor(
    readonly topic: string,
    private readonly msg: JsMsg,
  ) {}

  get deliveryCount(): number {
    return this.msg.info.deliveryCount;
  }

  decode(): CloudEvent {
    return decodeBusEvent(this.msg.data);
  }

  raw(): Uint8Array {
    return this.msg.data;
  }

  /** Inspect it by its stream sequence: the message stays in the stream. */
  position(): { id: string; source: string; fields: Record<string, unknown> } {
    const { stream, streamSequence: seq } = this.msg.info;
    return { id: `${stream}-${seq}`, source: `/ofevents/bus/jetstream/${stream}`, fields: { stream, seq } };
  }

  ack(): void {
    this.msg.ack();
  }

  term(): void {
    this.msg.term();
  }

  redeliver(delayMs: number): void {
    this.msg.nak(delayMs);
  }
}
