/**
 * Runs one Trigger: a durable group per trigger on each input's topic; per-input `filter`;
 * per-subscriber `condition` (see correlator.ts), `filter` and `transform`; delivery to `sink`
 * (HTTP, retries per `delivery`, then `deadLetterSink`) and to `topic` (publish, then
 * `deadLetterTopic`). A bus message is acknowledged only after every subscriber released it:
 * delivered, dead-lettered, filtered out, consumed by a firing, or expired from a window.
 *
 * A failure belongs to the subscriber that has it: an expression that fails on an event (also one
 * that hits its time, depth or sequence limit, which is deterministic, so never retried) or a
 * transform result that is not JSON sends that event to that subscriber's dead-letter target; the
 * bus message is redelivered only when a dead-letter target itself cannot take the event, or when
 * the trigger stops before the event was delivered.
 */
import { Cron } from "croner";
import {
  DeliveryError,
  ErrorCode,
  ExpressionError,
  OfEventsError,
  busTopic,
  conditionInputs,
  createInstrumentation,
  durationMs,
  namespaceOf,
  parseCondition,
  type CloudEvent,
  type CompiledExpression,
  type ConditionAst,
  type ExpressionEngine,
  type Instrumentation,
  type Logger,
  type Sink,
  type Subscriber,
  type Trigger,
  triggerDeadLetterTopic,
  triggerGroup,
  SpanKind,
  eventAttributes,
  eventContext,
  inSpan,
  markSpan,
  tracing,
} from "@ofevents/core";
import {
  NotDelivered,
  createOutbound,
  deliveryPolicy,
  targetName,
  type AttemptInfo,
  type DeliveryPolicy,
  type Outbound,
  type SinkClient,
  type Target,
} from "@ofevents/delivery";
import { DeadLetterExtension, MemorySeenSet, type EventBus, type SeenSet, type Subscription } from "@ofevents/eventbus";
import { Correlator, type PendingEntry } from "./correlator.js";
import { KeyedQueue, Sequencer, type Ticket } from "./keyed.js";
import { TokenBucket } from "./rate-limit.js";
import { Semaphore } from "./semaphore.js";
import { Batcher, Dedup, Debouncer, type Claim, type Held } from "./shaping.js";
import { JOINED_EXTENSION, type TriggerEvents } from "./types.js";

export const DEFAULT_WINDOW = "5m";
export const DEFAULT_MAX_PENDING = 100;
export const DEFAULT_CONCURRENCY = 16;
/** The bus drivers on which a trigger keeps its dead letters unless `keepDeadLetters` says otherwise. */
export const KEEPS_DEAD_LETTERS: ReadonlySet<string> = new Set(["jetstream", "kafka"]);
/** How long `stop()` lets delivery attempts in flight finish before it cancels them. */
export const DEFAULT_STOP_GRACE_MS = 10_000;
/** Most event ids the shutdown report lists in its log line. */
const MAX_REPORTED_IDS = 100;

export interface TriggerRuntimeOptions {
  /** Where the inputs come from (and the dedup seen sets live). */
  bus: EventBus;
  /**
   * Where `topic` deliveries and kept dead letters go (default `bus`). A replay reads inputs from
   * an in-process bus it feeds and delivers to the real one.
   */
  publishTo?: EventBus | undefined;
  logger: Logger;
  engine: ExpressionEngine;
  /** Needed when a subscriber has a sink. */
  sinks?: SinkClient | undefined;
  resolveSink?: ((sink: Sink, namespace: string) => string) | undefined;
  instrumentation?: Instrumentation<TriggerEvents> | undefined;
  /** Bus consumer group (default `trigger-{namespace}-{name}`). */
  group?: string | undefined;
  /**
   * How long `stop()` waits for HTTP attempts in flight before it cancels them, ms (default
   * DEFAULT_STOP_GRACE_MS, 10 s: within Kubernetes' default 30 s termination grace). A publish in
   * flight is bounded by the bus's own publish timeout.
   */
  stopGraceMs?: number | undefined;
}

export interface TriggerRuntime {
  readonly name: string;
  readonly events: Instrumentation<TriggerEvents>;
  /** Events held in correlation windows, waiting for a join (their bus messages stay unacked). */
  pending(): number;
  /**
   * Stops taking events and returns what is not done to the bus: pending join events at once,
   * events waiting for a retry at once (waits cut short, no new attempt), attempts in flight
   * after they finish or, past `stopGraceMs`, after they are cancelled. Then closes the
   * subscriptions and logs, at warn, how many events went back to the bus, with their ids.
   */
  stop(): Promise<void>;
}

interface InputPlan {
  name: string;
  topic: string;
  filter: string | undefined;
}

class ShutdownError extends Error {}

/** Signals a stopping trigger gives its deliveries, and what it returns to the bus. */
interface Shutdown {
  /** Aborted when `stop()` starts: no new attempt, waits between attempts end. */
  readonly retries: AbortSignal;
  /** Aborted when the stop grace period is over: attempts in flight are cancelled. */
  readonly attempts: AbortSignal;
  /** Ids of the events handed back to the bus because the trigger stopped. */
  readonly returned: Set<string>;
}

/** Marks of a function value in a jsonata result (a lambda, a partial application, a native function). */
const JSONATA_FUNCTION_MARKS = ["_jsonata_lambda", "_jsonata_function", "_jsonata_partial"] as const;

function isFunctionValue(v: object): boolean {
  if (typeof v === "function") return true;
  const o = v as Record<string, unknown>;
  return JSONATA_FUNCTION_MARKS.some((m) => o[m] === true);
}

/**
 * Checks that a transform result can be an event's JSON data: no function anywhere in it (a
 * jsonata function value is not JSON, and JSON.stringify would fail on its circular environment or
 * silently drop it). Iterative, so any depth is safe. Throws ExpressionError EXPRESSION_TYPE.
 */
export function assertJsonData(value: unknown, expression: string): void {
  const stack: Array<[unknown, string]> = [[value, ""]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, path] = top;
    if ((typeof v !== "object" && typeof v !== "function") || v === null) continue;
    if (isFunctionValue(v)) {
      throw new ExpressionError(
        ErrorCode.ExpressionType,
        `transform result is not JSON data: ${path === "" ? "it is" : `${path} is`} a function`,
        expression,
      );
    }
    if (Array.isArray(v)) for (let i = 0; i < v.length; i++) stack.push([v[i], `${path}[${i}]`]);
    else for (const [k, item] of Object.entries(v)) stack.push([item, path === "" ? k : `${path}.${k}`]);
  }
}

/** An error as one line of text, for a one-line-per-event log. */
function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const line = text.split("\n", 1)[0]!;
  return line.length < text.length ? `${line} …` : line;
}

function codeOf(err: unknown): string | undefined {
  return err instanceof OfEventsError ? err.code : undefined;
}

/** An event on its way to delivery, after filter and transform. */
interface Outgoing {
  /** The event as delivered (joined, transformed). */
  out: CloudEvent;
  receivedAt: number;
  /** The key of its `ordering`, when the subscriber has one. */
  order: string | undefined;
  /** Its `dedup` claim: report whether it was delivered. */
  claim: Claim | undefined;
}

/** Events a debounce may hold at once beyond the deliveries in flight (bus messages left unacked). */
const DEBOUNCE_ROOM = 256;

const noop = (): void => undefined;

class SubscriberRunner {
  readonly inputs: Set<string>;
  /** Hands out arrival tickets when the subscriber has `ordering` (the bus handler takes them). */
  readonly sequencer: Sequencer | undefined;
  private readonly simple: boolean;
  private readonly correlator: Correlator | undefined;
  private readonly filter: string | undefined;
  private readonly transform: CompiledExpression | undefined;
  private readonly key: CompiledExpression | undefined;
  private readonly orderKey: CompiledExpression | undefined;
  private readonly queue: KeyedQueue | undefined;
  private readonly batchKey: CompiledExpression | undefined;
  private readonly batcher: Batcher<Outgoing> | undefined;
  private readonly debounceKey: CompiledExpression | undefined;
  private readonly debouncer: Debouncer<Outgoing> | undefined;
  private readonly dedupKey: CompiledExpression | undefined;
  private dedup: Dedup | undefined;
  private readonly bucket: TokenBucket | undefined;
  private cron: Cron | undefined;
  private readonly policy: DeliveryPolicy;
  private readonly slots: Semaphore;
  /** Where each fired event goes: the sink, then the topic. */
  private readonly targets: Target[] = [];
  /** Where what a target does not take goes, in order: the dead-letter sink, then the dead-letter topic. */
  private readonly deadLetters: Target[] = [];
  private readonly log: Logger;

  constructor(
    readonly index: number,
    private readonly spec: Subscriber,
    ast: ConditionAst,
    private readonly t: {
      namespace: string;
      /** `namespace/name` of the trigger, as dead letters carry it. */
      trigger: string;
      /** The trigger's dead-letter topic when it keeps dead letters (`keepDeadLetters`). */
      keptDeadLetters: Target | undefined;
      out: Outbound;
      hasSinks: boolean;
      engine: ExpressionEngine;
      events: Instrumentation<TriggerEvents>;
      resolveSink: (s: Sink) => string;
      log: Logger;
      stopping: () => boolean;
      shutdown: Shutdown;
    },
  ) {
    this.inputs = new Set(conditionInputs(ast));
    this.simple = ast.type === "input";
    this.log = t.log.child({ subscriber: index });
    if (spec.filter !== undefined) t.engine.compile(spec.filter);
    this.filter = spec.filter;
    const compile = (e: string | undefined) => (e === undefined ? undefined : t.engine.compile(e));
    this.transform = compile(spec.transform);
    this.key = compile(spec.correlation?.key);
    this.policy = deliveryPolicy(spec.delivery);
    this.slots = new Semaphore(spec.delivery?.concurrency ?? DEFAULT_CONCURRENCY);
    if (spec.ordering !== undefined) {
      this.orderKey = t.engine.compile(spec.ordering.key);
      this.sequencer = new Sequencer();
      this.queue = new KeyedQueue();
    }
    if (spec.batch !== undefined) {
      this.batchKey = compile(spec.batch.key);
      this.batcher = new Batcher(spec.batch.maxEvents, durationMs(spec.batch.maxWait), (members) => {
        void this.deliverBatch(members);
      });
    }
    if (spec.debounce !== undefined) {
      this.debounceKey = compile(spec.debounce.key);
      if ((spec.debounce.edge ?? "trailing") === "trailing") {
        this.debouncer = new Debouncer<Outgoing>(
          durationMs(spec.debounce.window),
          (entry) =>
            void this.ordered(entry.item.order, () => this.deliver(entry.item)).then(entry.resolve, entry.reject),
          (entry) => void this.skipped(entry.item).then(entry.resolve, entry.reject),
        );
      } else {
        this.debouncer = new Debouncer<Outgoing>(durationMs(spec.debounce.window), noop, noop);
      }
    }
    this.dedupKey = compile(spec.dedup?.key);
    const limit = spec.delivery?.rateLimit;
    if (limit !== undefined) this.bucket = new TokenBucket(limit.perSecond, limit.burst);
    if (spec.sink !== undefined) this.targets.push({ kind: "sink", url: t.resolveSink(spec.sink) });
    if (spec.topic !== undefined && spec.topic !== "") this.targets.push({ kind: "topic", topic: spec.topic });
    if (spec.deadLetterSink !== undefined)
      this.deadLetters.push({ kind: "sink", url: t.resolveSink(spec.deadLetterSink) });
    if (spec.deadLetterTopic !== undefined && spec.deadLetterTopic !== "")
      this.deadLetters.push({ kind: "topic", topic: spec.deadLetterTopic });
    if ([...this.targets, ...this.deadLetters].some((x) => x.kind === "sink") && !t.hasSinks) {
      throw new Error("a sink client is needed for subscribers with a sink");
    }
    if (!this.simple) {
      const release = (type: "expired" | "evicted" | "reset", e: PendingEntry): void => {
        t.events.emit(type, { subscriber: index, input: e.input, id: e.event.id });
        e.release();
      };
      const reset = spec.correlation?.reset;
      this.correlator = new Correlator({
        ast,
        windowMs: durationMs(spec.correlation?.window ?? DEFAULT_WINDOW),
        maxPending: spec.correlation?.maxPending ?? DEFAULT_MAX_PENDING,
        onExpire: (e) => {
          this.log.debug({ input: e.input, id: e.event.id }, "pending event expired unjoined");
          release("expired", e);
        },
        onEvict: (e) => {
          this.log.warn({ input: e.input, id: e.event.id }, "pending event released: more than maxPending waiting");
          release("evicted", e);
        },
        resetAfterMs: reset?.after === undefined ? undefined : durationMs(reset.after),
        onReset: (e) => {
          this.log.info({ input: e.input, id: e.event.id }, "pending event released unjoined by correlation.reset");
          release("reset", e);
        },
      });
    }
  }

  /**
   * What needs the bus or a clock: the dedup seen set (the bus's own where it has one, else in
   * memory) and the `correlation.reset` cron schedule.
   */
  async start(bus: EventBus, name: string): Promise<void> {
    const dedup = this.spec.dedup;
    if (dedup !== undefined) {
      const windowMs = durationMs(dedup.window);
      let seen: SeenSet | undefined = await bus.seenSet?.(name, windowMs);
      if (seen === undefined) {
        seen = new MemorySeenSet(windowMs);
        this.log.warn(
          { bus: bus.driver },
          "dedup keeps its seen keys in memory: this bus has no place for them, so a restart forgets them",
        );
      }
      this.dedup = new Dedup(seen, (key, err) =>
        this.log.warn(
          { key, err: errorText(err) },
          "dedup could not record a delivered key; a repeat may be delivered",
        ),
      );
      this.log.info({ seenSet: seen.kind, windowMs }, "dedup on");
    }
    const cron = this.spec.correlation?.reset?.cron;
    if (cron !== undefined && this.correlator !== undefined) {
      const correlator = this.correlator;
      this.cron = new Cron(cron, { timezone: this.spec.correlation?.reset?.timezone ?? "UTC" }, () => {
        const n = correlator.resetAll();
        if (n > 0) this.log.info({ released: n }, "correlation.reset: pending events released");
      });
    }
  }

  get maxPending(): number {
    return this.correlator === undefined ? 0 : (this.spec.correlation?.maxPending ?? DEFAULT_MAX_PENDING);
  }

  get concurrency(): number {
    return this.spec.delivery?.concurrency ?? DEFAULT_CONCURRENCY;
  }

  /** Bus messages this subscriber may hold beyond its deliveries: open batches, debounced bursts. */
  get held(): number {
    return (
      (this.spec.batch === undefined ? 0 : this.spec.batch.maxEvents * 2) +
      (this.spec.debounce === undefined ? 0 : DEBOUNCE_ROOM)
    );
  }

  /**
   * Resolves when this subscriber is done with the event; rejects to have the bus redeliver it.
   * `ticket`: its place in arrival order (subscribers with `ordering`), taken when the bus handed
   * the event over.
   */
  async offer(input: string, event: CloudEvent, receivedAt: number, ticket?: Ticket): Promise<void> {
    let admitted: Promise<void>;
    try {
      if (this.t.stopping()) throw this.returned(event);
      let order: string | undefined;
      let key = "";
      try {
        if (this.orderKey !== undefined) order = (await this.keyOf(this.orderKey, event, "ordering key")) ?? "";
        if (this.correlator !== undefined && this.key !== undefined) {
          const k = await this.keyOf(this.key, event, "correlation key");
          if (k === undefined) {
            this.t.events.emit("uncorrelated", { subscriber: this.index, input, id: event.id });
            return;
          }
          key = k;
        }
      } catch (err) {
        // A limit hit is deterministic: poison for this subscriber only.
        admitted = this.rejectEvent(event, err);
        return await admitted;
      }
      if (ticket !== undefined) await ticket.turn;
      // From here to the queueing, nothing awaits: events join their key in ticket order.
      admitted = this.admit(input, event, receivedAt, key, order);
    } finally {
      ticket?.done();
    }
    return admitted;
  }

  /**
   * A key expression's value as a string (JSON for a non-string), or undefined when it has none or
   * failed (logged); throws an expression's limit error (deterministic: the caller dead-letters).
   */
  private async keyOf(expr: CompiledExpression, event: CloudEvent, what: string): Promise<string | undefined> {
    let k: unknown;
    try {
      k = await expr.evaluate(event);
    } catch (err) {
      if (err instanceof ExpressionError && err.code === ErrorCode.ExpressionLimit) throw err;
      this.log.warn({ id: event.id, err: errorText(err) }, `${what} failed; the event has no key`);
      return undefined;
    }
    if (k === undefined || k === null) return undefined;
    return typeof k === "string" ? k : JSON.stringify(k);
  }

  /** Joins the event to its correlation state and its key's queue (synchronously, before it returns). */
  private admit(input: string, event: CloudEvent, receivedAt: number, key: string, order?: string): Promise<void> {
    if (this.correlator === undefined)
      return this.ordered(order, (leave) => this.fire(event, { [input]: event }, [], receivedAt, order, leave));
    return new Promise<void>((resolve, reject) => {
      const entry: PendingEntry = {
        input,
        event,
        arrived: Date.now(),
        timer: undefined,
        release: resolve,
        fail: reject,
      };
      const outcome = this.correlator!.offer(key, entry);
      if (outcome.type === "pending") {
        this.t.events.emit("pending", { subscriber: this.index, input, id: event.id, key });
        return;
      }
      const inputs: Record<string, CloudEvent> = {};
      for (const e of outcome.consumed) inputs[e.input] = e.event;
      const joined = outcome.consumed.slice(1).map((e) => e.event.id);
      for (const e of outcome.consumed.slice(1))
        this.t.events.emit("consumed", { subscriber: this.index, input: e.input, id: e.event.id });
      this.ordered(order, (leave) => this.fire(event, inputs, joined, receivedAt, order, leave)).then(
        () => outcome.consumed.forEach((e) => e.release()),
        (err: unknown) => outcome.consumed.forEach((e) => e.fail(err)),
      );
    });
  }

  /** Runs `work` in the queue of ordering key `order`; at once when the subscriber has no ordering. */
  private ordered(order: string | undefined, work: (leave: () => void) => Promise<void>): Promise<void> {
    return this.queue === undefined || order === undefined ? work(noop) : this.queue.run(order, work);
  }

  private async fire(
    event: CloudEvent,
    inputs: Record<string, CloudEvent>,
    joined: string[],
    receivedAt: number,
    order: string | undefined,
    leave: () => void,
  ): Promise<void> {
    const bindings = { inputs };
    if (tracing.enabled)
      markSpan(`condition ${this.spec.condition}`, {
        attributes: {
          ...eventAttributes(event),
          "ofevents.subscriber": this.index,
          "ofevents.condition": this.spec.condition,
          "ofevents.condition.verdict": "fired",
          ...(joined.length > 0 ? { "ofevents.joined": joined.join(",") } : {}),
        },
      });
    if (this.filter !== undefined) {
      let pass = false;
      try {
        pass = await this.t.engine.evaluateBoolean(this.filter, event, bindings);
      } catch (err) {
        if (err instanceof ExpressionError && err.code === ErrorCode.ExpressionLimit)
          return this.rejectEvent(event, err);
        this.log.warn({ id: event.id, err: errorText(err) }, "subscriber filter failed; event not delivered");
        this.t.events.emit("filtered", { subscriber: this.index, id: event.id, reason: "error" });
        return;
      }
      if (tracing.enabled)
        markSpan(`filter subscriber ${this.index}`, {
          attributes: { ...eventAttributes(event), "ofevents.filter": this.filter, "ofevents.filter.verdict": pass },
        });
      if (!pass) {
        this.t.events.emit("filtered", { subscriber: this.index, id: event.id, reason: "filter" });
        return;
      }
    }
    let out: CloudEvent = event;
    if (joined.length > 0) out = { ...out, [JOINED_EXTENSION]: joined.join(",") } as CloudEvent;
    if (this.transform !== undefined) {
      let data: unknown;
      try {
        data = await this.transform.evaluate(event, bindings);
        assertJsonData(data, this.transform.source);
      } catch (err) {
        // Whatever the cause (also a limit: deterministic), the event goes to this subscriber's
        // dead-letter target, with 0 deliveries: nothing was sent.
        return this.rejectEvent(out, err);
      }
      if (tracing.enabled)
        markSpan("transform", {
          attributes: { ...eventAttributes(event), "ofevents.transform": this.transform.source },
        });
      const o = { ...out, data, datacontenttype: "application/json" } as Record<string, unknown>;
      delete o["data_base64"];
      out = o as CloudEvent;
    }
    this.t.events.emit("fired", { subscriber: this.index, id: event.id, joined });
    try {
      if (this.batcher === undefined && this.debouncer === undefined && this.dedup === undefined)
        return await this.deliver({ out, receivedAt, order, claim: undefined });
      return await this.shape(event, { out, receivedAt, order, claim: undefined }, leave);
    } finally {
      this.t.events.emit("settled", { subscriber: this.index, id: event.id });
    }
  }

  /** dedup, then debounce, then batch or delivery. Keys are computed on the event as received. */
  private async shape(event: CloudEvent, item: Outgoing, leave: () => void): Promise<void> {
    try {
      if (this.dedup !== undefined) {
        const key =
          (this.dedupKey === undefined ? undefined : await this.keyOf(this.dedupKey, event, "dedup key")) ??
          JSON.stringify([event.source, event.id]);
        item.claim = await this.dedup.claim(key);
        if (item.claim === undefined) {
          this.t.events.emit("deduplicated", { subscriber: this.index, id: event.id, key });
          this.log.debug({ id: event.id, key }, "duplicate: delivered within the dedup window; acknowledged");
          return;
        }
      }
      if (this.debouncer !== undefined) {
        const key =
          (this.debounceKey === undefined ? "" : await this.keyOf(this.debounceKey, event, "debounce key")) ?? "";
        if (this.spec.debounce?.edge === "leading") {
          if (!this.debouncer.lead(key)) return await this.skipped(item);
        } else {
          // Held outside its ordering key's queue: the next event of the key may supersede it.
          leave();
          return await this.debouncer.hold(key, item);
        }
      }
      if (this.batcher !== undefined) {
        const key = (this.batchKey === undefined ? "" : await this.keyOf(this.batchKey, event, "batch key")) ?? "";
        return await this.batcher.add(key, item);
      }
    } catch (err) {
      await item.claim?.(false);
      if (err instanceof ExpressionError && err.code === ErrorCode.ExpressionLimit) return this.rejectEvent(event, err);
      throw err;
    }
    return this.deliver(item);
  }

  /** A debounced event that goes no further: acknowledged and counted. */
  private async skipped(item: Outgoing): Promise<void> {
    this.t.events.emit("debounced", { subscriber: this.index, id: item.out.id });
    await item.claim?.(false);
  }

  /** Delivers one event to every target (in a delivery slot); reports its dedup claim. */
  private async deliver(item: Outgoing): Promise<void> {
    const { out, receivedAt } = item;
    // A free slot is taken without a wait; one target without a Promise.allSettled: per event, each
    // await is a promise and a turn of the microtask queue.
    const release = this.slots.tryAcquire() ?? (await this.slots.acquire());
    let delivered = false;
    try {
      if (this.t.stopping()) throw this.returned(out);
      if (this.targets.length === 1) {
        delivered = await this.to(out, this.targets[0]!, receivedAt);
      } else {
        const work: Promise<boolean>[] = [];
        for (const target of this.targets) work.push(this.to(out, target, receivedAt));
        const results = await Promise.allSettled(work);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
        delivered = results.every((r) => r.status === "fulfilled" && r.value);
      }
    } finally {
      release();
      if (item.claim !== undefined) await item.claim(delivered);
    }
  }

  /**
   * Delivers a batch: to a sink as one request (retried whole, then each member dead-lettered with
   * the reason), to a topic member by member. Each member settles when the batch is done.
   */
  private async deliverBatch(members: Held<Outgoing>[]): Promise<void> {
    const events = members.map((m) => m.item.out);
    const receivedAt = Math.min(...members.map((m) => m.item.receivedAt));
    const release = await this.slots.acquire();
    let delivered: boolean[] = members.map(() => false);
    try {
      if (this.t.stopping()) throw new ShutdownError("trigger stopped before the batch was delivered");
      const work: Promise<boolean[]>[] = [];
      for (const target of this.targets)
        work.push(
          target.kind === "sink"
            ? this.toBatch(events, target, receivedAt)
            : (async () => {
                const took: boolean[] = [];
                for (const m of members) took.push(await this.to(m.item.out, target, m.item.receivedAt));
                return took;
              })(),
        );
      const results = await Promise.allSettled(work);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      delivered = members.map((_, i) => results.every((r) => r.status === "fulfilled" && r.value[i] === true));
      this.t.events.emit("batched", { subscriber: this.index, size: members.length, ids: events.map((e) => e.id) });
    } catch (err) {
      if (err instanceof ShutdownError) for (const e of events) this.t.shutdown.returned.add(e.id);
      release();
      await Promise.all(members.map((m, i) => m.item.claim?.(delivered[i]!)));
      members.forEach((m) => m.reject(err));
      return;
    }
    release();
    await Promise.all(members.map((m, i) => m.item.claim?.(delivered[i]!)));
    members.forEach((m) => m.resolve());
  }

  /** Options of one send: the stop signals, the rate limit, and what a retry reports. */
  private sendOptions(id: string, target: Target, name: string) {
    const bucket = this.bucket;
    return {
      signal: this.t.shutdown.attempts,
      stopRetrying: this.t.shutdown.retries,
      gate: bucket === undefined ? undefined : () => this.throttle(bucket, id),
      onRetry: (r: AttemptInfo) => {
        this.t.events.emit("retried", {
          subscriber: this.index,
          id,
          target: name,
          attempt: r.attempt,
          error: r.error,
        });
        const asked = r.error instanceof DeliveryError ? r.error.retryAfterMs : undefined;
        // A sink's Retry-After pauses the whole rate-limited subscriber, not only this event.
        if (bucket !== undefined && asked !== undefined) bucket.pause(Math.min(asked, this.policy.retryAfterMaxMs));
        this.log.warn(
          { id, [target.kind]: name, attempt: r.attempt, delayMs: r.delayMs, err: errorText(r.error) },
          target.kind === "sink" ? "retrying delivery" : "retrying publish",
        );
      },
    };
  }

  /** Waits for the rate limit's token before an attempt; a stopping trigger ends the wait. */
  private async throttle(bucket: TokenBucket, id: string): Promise<void> {
    const ms = await bucket.take(this.t.shutdown.retries).catch(() => {
      throw new ShutdownError("trigger stopped while the attempt waited for the rate limit");
    });
    if (ms > 1) this.t.events.emit("throttled", { subscriber: this.index, id, ms });
  }

  /**
   * One target of this subscriber: resolves true when delivered, false when dead-lettered or
   * dropped; rejects to return the event to the bus (stopping, or no dead-letter target took it).
   */
  private async to(event: CloudEvent, target: Target, receivedAt: number): Promise<boolean> {
    const name = targetName(target);
    try {
      const sent = await this.t.out.send(event, target, this.policy, this.sendOptions(event.id, target, name));
      // Plain literals (no spread, no computed key): this runs once per event and target.
      const status = sent.status;
      this.t.events.emit(
        "delivered",
        status === undefined
          ? {
              subscriber: this.index,
              id: event.id,
              target: name,
              kind: target.kind,
              durationMs: performance.now() - receivedAt,
            }
          : {
              subscriber: this.index,
              id: event.id,
              target: name,
              kind: target.kind,
              status,
              durationMs: performance.now() - receivedAt,
            },
      );
      if (this.log.isLevelEnabled("info")) {
        this.log.info(
          target.kind === "sink"
            ? { id: event.id, type: event.type, sink: name, status }
            : { id: event.id, type: event.type, topic: name },
          "delivered",
        );
      }
      return true;
    } catch (err) {
      const failed = err as NotDelivered;
      // Stopped while the event could still have been delivered: back to the bus, not dead-lettered.
      if (this.t.stopping() && (failed.retriable || failed.error instanceof ShutdownError)) throw this.returned(event);
      await this.deadLetter(event, name, failed.error, failed.attempts);
      return false;
    }
  }

  /** A batch to a sink, as one request; per member: delivered (true) or dead-lettered (false). */
  private async toBatch(events: CloudEvent[], target: Target, receivedAt: number): Promise<boolean[]> {
    const name = targetName(target);
    try {
      const sent = await this.t.out.send(events, target, this.policy, this.sendOptions(events[0]!.id, target, name));
      const durationMs = performance.now() - receivedAt;
      for (const e of events)
        this.t.events.emit("delivered", {
          subscriber: this.index,
          id: e.id,
          target: name,
          kind: target.kind,
          ...(sent.status === undefined ? {} : { status: sent.status }),
          durationMs,
        });
      this.log.info({ ids: events.map((e) => e.id), sink: name, status: sent.status }, "delivered a batch");
      return events.map(() => true);
    } catch (err) {
      const failed = err as NotDelivered;
      if (this.t.stopping() && (failed.retriable || failed.error instanceof ShutdownError))
        throw new ShutdownError("trigger stopped before the batch was delivered");
      for (const e of events) await this.deadLetter(e, name, failed.error, failed.attempts);
      return events.map(() => false);
    }
  }

  /**
   * Sends what could not be delivered to the dead-letter sink, else the dead-letter topic, with the
   * reason attached. Rejects (so the bus redelivers the message) only when no dead-letter target
   * takes it; with no dead-letter target configured, logs an error and counts it.
   */
  private async deadLetter(event: CloudEvent, target: string, error: unknown, attempts: number): Promise<void> {
    let to: Target | undefined;
    const marked: CloudEvent = {
      ...event,
      [DeadLetterExtension.Trigger]: this.t.trigger,
      [DeadLetterExtension.Subscriber]: this.index,
    };
    try {
      to = await this.t.out.deadLetter(marked, target, error, attempts, this.deadLetters, this.policy, {
        signal: this.t.shutdown.attempts,
        stopRetrying: this.t.shutdown.retries,
        onFallback: (from, err) =>
          this.log.error(
            { id: event.id, deadLetterSink: targetName(from), err: errorText(err) },
            "dead-letter sink failed; trying dead-letter topic",
          ),
      });
    } catch (err) {
      throw err instanceof NotDelivered ? err.error : err;
    }
    const kept = this.t.keptDeadLetters;
    if (kept !== undefined) {
      // The copy redrive reads; when the bus cannot take it, the bus message is redelivered.
      try {
        await this.t.out.deadLetter(marked, target, error, attempts, [kept], this.policy, {
          signal: this.t.shutdown.attempts,
          stopRetrying: this.t.shutdown.retries,
        });
      } catch (err) {
        throw err instanceof NotDelivered ? err.error : err;
      }
      return this.report(
        event,
        target,
        to === undefined ? targetName(kept) : `${targetName(to)}, ${targetName(kept)}`,
        error,
      );
    }
    if (to !== undefined) return this.report(event, target, targetName(to), error);
    this.t.events.emit("dropped", { subscriber: this.index, id: event.id, target, error });
    this.log.error(
      { id: event.id, target, err: errorText(error), code: codeOf(error) },
      "NOT DELIVERED and no deadLetterSink/deadLetterTopic configured: event dropped",
    );
  }

  /**
   * This subscriber cannot handle `event` (an expression failed on it, or a transform result is not
   * JSON): the event goes to this subscriber's dead-letter target with the reason and 0
   * deliveries, and no other subscriber is affected.
   */
  async rejectEvent(event: CloudEvent, error: unknown): Promise<void> {
    this.log.warn({ id: event.id, err: errorText(error), code: codeOf(error) }, "expression failed on the event");
    const first = this.targets[0];
    await this.deadLetter(event, first === undefined ? "" : targetName(first), error, 0);
  }

  /** Records `event` as handed back to the bus by a stopping trigger; the error to reject with. */
  private returned(event: CloudEvent): ShutdownError {
    this.t.shutdown.returned.add(event.id);
    return new ShutdownError("trigger stopped before the event was delivered");
  }

  private report(event: CloudEvent, target: string, deadLetter: string, error: unknown): void {
    this.t.events.emit("dead_lettered", { subscriber: this.index, id: event.id, target, deadLetter, error, event });
    this.log.warn({ id: event.id, target, deadLetter, err: errorText(error), code: codeOf(error) }, "dead-lettered");
  }

  /** Stops the reset schedule; removes and returns every event held pending, debounced or batched (shutdown). */
  drain(): Array<{ event: CloudEvent; fail: (err: unknown) => void }> {
    this.cron?.stop();
    const held = [...(this.debouncer?.drain() ?? []), ...(this.batcher?.drain() ?? [])].map((h) => ({
      event: h.item.out,
      fail: (err: unknown) => void (h.item.claim?.(false) ?? Promise.resolve()).then(() => h.reject(err)),
    }));
    return [...(this.correlator?.drain() ?? []), ...held];
  }

  pending(): number {
    return this.correlator?.pendingCount() ?? 0;
  }
}

/** Starts a trigger. Throws for an invalid condition or expression (validate manifests first). */
export async function startTrigger(trigger: Trigger, o: TriggerRuntimeOptions): Promise<TriggerRuntime> {
  const namespace = namespaceOf(trigger);
  const name = trigger.metadata.name;
  const events = o.instrumentation ?? createInstrumentation<TriggerEvents>();
  const log = o.logger.child({ component: "trigger", trigger: `${namespace}/${name}` });
  const group = o.group ?? triggerGroup(namespace, name);
  let stopping = false;
  const retries = new AbortController();
  const attempts = new AbortController();
  const shutdown: Shutdown = { retries: retries.signal, attempts: attempts.signal, returned: new Set() };
  const stopGraceMs = o.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  const resolveSink = (s: Sink): string => {
    const url = o.resolveSink?.(s, namespace) ?? s.uri;
    if (url === undefined) throw new Error(`cannot resolve sink ${JSON.stringify(s)}`);
    return url;
  };

  const inputNames = Object.keys(trigger.spec.inputs);
  const plans: InputPlan[] = Object.entries(trigger.spec.inputs).map(([n, i]) => ({
    name: n,
    topic: busTopic(i.namespace ?? namespace, i.eventSource, i.event),
    filter: i.filter === undefined ? undefined : (o.engine.compile(i.filter), i.filter),
  }));
  const publishTo = o.publishTo ?? o.bus;
  const out = createOutbound({ sinks: o.sinks, bus: publishTo });
  const keep = trigger.spec.keepDeadLetters ?? KEEPS_DEAD_LETTERS.has(publishTo.driver);
  const keptDeadLetters: Target | undefined = keep
    ? { kind: "topic", topic: triggerDeadLetterTopic(namespace, name) }
    : undefined;
  if (keptDeadLetters !== undefined) log.debug({ topic: keptDeadLetters.topic }, "dead letters kept");
  const subscribers = trigger.spec.subscribers.map(
    (s, i) =>
      new SubscriberRunner(i, s, parseCondition(s.condition, inputNames), {
        namespace,
        trigger: `${namespace}/${name}`,
        keptDeadLetters,
        out,
        hasSinks: o.sinks !== undefined,
        engine: o.engine,
        events,
        resolveSink,
        log,
        stopping: () => stopping,
        shutdown,
      }),
  );

  for (const s of subscribers) await s.start(o.bus, `dedup-${namespace}-${name}-${s.index}`);

  const byTopic = new Map<string, InputPlan[]>();
  for (const p of plans) byTopic.set(p.topic, [...(byTopic.get(p.topic) ?? []), p]);

  const subs: Subscription[] = [];
  try {
    for (const [topic, inputs] of byTopic) {
      const interested = subscribers.filter((s) => inputs.some((i) => s.inputs.has(i.name)));
      if (interested.length === 0) {
        log.warn({ topic, inputs: inputs.map((i) => i.name) }, "input named by no condition; not subscribed");
        continue;
      }
      // Room for every event a subscriber may hold (pending joins, batches, debounced bursts) plus
      // its deliveries in flight.
      const maxInFlight =
        Math.max(...interested.map((s) => s.maxPending)) +
        Math.max(...interested.map((s) => s.held)) +
        Math.max(...interested.map((s) => s.concurrency)) * 2;
      const ordered = inputs.flatMap((i) =>
        interested.filter((s) => s.sequencer !== undefined && s.inputs.has(i.name)).map((s) => ({ input: i.name, s })),
      );
      const handle = async (event: CloudEvent): Promise<void> => {
        const receivedAt = performance.now();
        // Places in arrival order, taken before anything awaits (subscribers with ordering).
        const tickets =
          ordered.length === 0
            ? undefined
            : new Map(ordered.map((x) => [`${x.input}\0${x.s.index}`, x.s.sequencer!.ticket()]));
        const work: Promise<void>[] = [];
        for (const input of inputs) {
          events.emit("received", { input: input.name, id: event.id });
          if (input.filter !== undefined) {
            let pass: boolean;
            try {
              pass = await o.engine.evaluateBoolean(input.filter, event);
            } catch (err) {
              if (err instanceof ExpressionError && err.code === ErrorCode.ExpressionLimit) {
                // A limit hit is deterministic (the same event hits it again), so it is not
                // retried: the event goes to the dead-letter target of each subscriber whose
                // condition names this input; other inputs and subscribers go on.
                log.warn(
                  { input: input.name, id: event.id, err: errorText(err) },
                  "input filter hit its limit; event dead-lettered for this input's subscribers",
                );
                for (const s of subscribers) if (s.inputs.has(input.name)) work.push(s.rejectEvent(event, err));
                continue;
              }
              if (!(err instanceof ExpressionError)) throw err;
              log.warn({ input: input.name, id: event.id, err: errorText(err) }, "input filter failed; event skipped");
              events.emit("filtered", { input: input.name, id: event.id, reason: "error" });
              continue;
            }
            if (tracing.enabled)
              markSpan(`filter ${input.name}`, {
                attributes: {
                  ...eventAttributes(event),
                  "ofevents.input": input.name,
                  "ofevents.filter": input.filter,
                  "ofevents.filter.verdict": pass,
                },
              });
            if (!pass) {
              events.emit("filtered", { input: input.name, id: event.id, reason: "filter" });
              continue;
            }
          }
          for (const s of subscribers)
            if (s.inputs.has(input.name))
              work.push(s.offer(input.name, event, receivedAt, tickets?.get(`${input.name}\0${s.index}`)));
        }
        // Tickets of inputs that filtered the event out pass their turn on (done is idempotent).
        tickets?.forEach((t) => t.done());
        if (work.length === 1) {
          await work[0];
          return;
        }
        const results = await Promise.allSettled(work);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
      };
      subs.push(
        await o.bus.subscribe(
          [topic],
          (event) =>
            tracing.enabled
              ? inSpan(
                  `process ${topic}`,
                  {
                    kind: SpanKind.CONSUMER,
                    parent: eventContext(event),
                    attributes: {
                      ...eventAttributes(event),
                      "messaging.destination.name": topic,
                      "ofevents.trigger": `${namespace}/${name}`,
                    },
                  },
                  () => handle(event),
                )
              : handle(event),
          { group, maxInFlight, ordered: ordered.length > 0 },
        ),
      );
    }
  } catch (err) {
    await Promise.allSettled(subs.map((s) => s.close()));
    throw err;
  }
  log.info({ inputs: plans.map((p) => `${p.name}<-${p.topic}`), subscribers: subscribers.length }, "trigger started");

  return {
    name,
    events,
    pending: () => subscribers.reduce((n, s) => n + s.pending(), 0),
    async stop() {
      if (stopping) return;
      stopping = true;
      log.info(
        { graceMs: stopGraceMs },
        "stopping: pending events and retries go back to the bus; delivery attempts in flight get up to %d s",
        stopGraceMs / 1000,
      );
      const err = new ShutdownError("trigger stopped before the event was joined or delivered");
      for (const s of subscribers)
        for (const e of s.drain()) {
          shutdown.returned.add(e.event.id);
          e.fail(err);
        }
      retries.abort();
      const grace = setTimeout(() => {
        log.warn({ graceMs: stopGraceMs }, "stop grace period over: cancelling delivery attempts in flight");
        attempts.abort();
      }, stopGraceMs);
      try {
        await Promise.allSettled(subs.map((s) => s.close()));
      } finally {
        clearTimeout(grace);
      }
      const ids = [...shutdown.returned];
      if (ids.length > 0) {
        const durable = o.bus.driver !== "memory";
        log.warn(
          { count: ids.length, ids: ids.slice(0, MAX_REPORTED_IDS), bus: o.bus.driver },
          durable
            ? "stopped: %d events not yet delivered were returned to the bus, which redelivers them"
            : "stopped: %d events not yet delivered were returned to the in-memory bus, which does not keep them after this process exits",
          ids.length,
        );
      }
    },
  };
}
