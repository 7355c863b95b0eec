/**
 * Runs one case of `ofevents test`: the trigger's real runtime (@ofevents/trigger startTrigger) on
 * an in-memory bus, on a virtual clock (@sinonjs/fake-timers: Date, performance, setTimeout and
 * setInterval are fake; setImmediate, nextTick and microtasks stay real, so promises settle between
 * two virtual instants). Inputs are published on their bus topics at their virtual times; sinks are
 * answered in process (see CaseSinks) and what each subscriber delivered or dead-lettered is
 * recorded. Nothing leaves the process.
 */
import FakeTimers from "@sinonjs/fake-timers";
import {
  DeliveryError,
  ErrorCode,
  OfEventsError,
  createExpressionEngine,
  durationMs,
  namespaceOf,
  parseCondition,
  sleep,
  type CloudEvent,
  type Logger,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import {
  deliveryPolicy,
  encodeHttp,
  idempotencyKey,
  toEvent,
  withRetry,
  type DeliveryPolicy,
  type Payload,
  type SinkClient,
  type SinkResponse,
} from "@ofevents/delivery";
import {
  DEFAULT_BACKOFF_MS,
  DEFAULT_MAX_DELIVER,
  DeadLetterExtension,
  MAX_BACKOFF_MS,
  createMemoryBus,
  type EventBus,
} from "@ofevents/eventbus";
import { DEFAULT_WINDOW, startTrigger, type TriggerEvents } from "@ofevents/trigger";
import type { SinkAnswer, TestCase } from "./test-cases.js";

/** What the clock fakes. setImmediate, nextTick and queueMicrotask stay real: they let work settle. */
const FAKED = ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"] as const;

/** Where a subscriber's event ended up. */
export type Delivered = { to: "sink" | "topic"; event: CloudEvent } | { to: "sink"; batch: CloudEvent[] };

export interface DeadLettered {
  id: string;
  /** Where the dead letter went; `none` when the subscriber has no dead-letter target (dropped). */
  to: "deadLetterSink" | "deadLetterTopic" | "none";
  reason: string;
  code: string | undefined;
  /** Delivery attempts made before it was dead-lettered (`ofdeliveries`). */
  attempts: number | undefined;
  /** The dead letter as its target got it (absent when dropped). */
  event: CloudEvent | undefined;
}

export interface SubscriberOutcome {
  deliveries: Delivered[];
  deadLetters: DeadLettered[];
  /** Instrumentation counts: fired, filtered, expired, retried, debounced, deduplicated... */
  counts: Record<string, number>;
}

export interface CaseRun {
  subscribers: SubscriberOutcome[];
  /** Counts of events the inputs' filters left out, per input. */
  inputFiltered: Record<string, number>;
  /** Virtual ms from the case's start to when everything had settled (or the clock stopped). */
  endedAtMs: number;
  /** False when the clock reached `runFor` with work still scheduled (a cron reset, or a bound too short). */
  settled: boolean;
  /** Events the trigger still held when it was stopped (returned to the bus). */
  returned: number;
}

/** A sink of the trigger as this run addresses it: one URL per subscriber and role. */
interface SinkSlot {
  subscriber: number;
  role: "sink" | "deadLetterSink";
  /** The URL the trigger would call (`sink.uri`, else the in-cluster Service address of `sink.ref`). */
  url: string;
  answers: SinkAnswer[];
}

/**
 * The in-process sink client: answers each attempt as the case says (by default 200) and records
 * what a 2xx took, as the sink would have decoded it (the event goes through the HTTP binding both
 * ways). Errors are those of the real client (status, retriable, message), so the retry policy,
 * dead-lettering and reasons are the trigger's own.
 */
class CaseSinks implements SinkClient {
  /** Attempts per sink URL and event (or batch), by Idempotency-Key. */
  private readonly attempts = new Map<string, number>();

  constructor(
    private readonly slots: ReadonlyMap<string, SinkSlot>,
    private readonly took: (slot: SinkSlot, received: CloudEvent | CloudEvent[]) => void,
  ) {}

  async send(address: string, payload: Payload, o: Parameters<SinkClient["send"]>[2] = {}): Promise<SinkResponse> {
    const slot = this.slots.get(address);
    if (slot === undefined) throw new Error(`no sink at ${address} in this case`);
    const url = slot.url;
    const key = `${address}\n${idempotencyKey(payload)}`;
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    const answer = slot.answers[Math.min(n, slot.answers.length) - 1] ?? 200;
    if (answer === "unreachable")
      throw new DeliveryError(ErrorCode.DeliveryFailed, `cannot reach ${url}: connect ECONNREFUSED`, url, {
        retriable: true,
      });
    if (answer === "timeout") {
      const timeoutMs = o.timeoutMs ?? 30_000;
      await sleep(timeoutMs, o.signal);
      throw new DeliveryError(ErrorCode.DeliveryTimeout, `no answer from ${url} within ${timeoutMs} ms`, url, {
        retriable: true,
      });
    }
    let received: CloudEvent | CloudEvent[];
    try {
      const message = encodeHttp(payload, o.format ?? "binary");
      received = toEvent(message.headers, message.body);
    } catch (err) {
      throw new DeliveryError(ErrorCode.DeliveryFailed, (err as Error).message, url, {
        retriable: !(err instanceof OfEventsError),
        cause: err,
      });
    }
    if (answer >= 200 && answer < 300) {
      this.took(slot, received);
      return { status: answer, headers: {}, body: Buffer.alloc(0) };
    }
    const retriable = answer === 429 || answer >= 500 || answer === 408;
    throw new DeliveryError(
      retriable ? ErrorCode.DeliveryFailed : ErrorCode.DeliveryRejected,
      `${url} answered ${answer}`,
      url,
      { retriable, status: answer },
    );
  }

  deliver(
    url: string,
    event: Payload,
    policy: DeliveryPolicy,
    o: Parameters<SinkClient["deliver"]>[3] = {},
  ): Promise<SinkResponse> {
    const options = { timeoutMs: policy.timeoutMs, format: policy.format, signal: o.signal };
    const gate = o.gate;
    return withRetry<SinkResponse, DeliveryError>(
      () => (gate === undefined ? this.send(url, event, options) : gate().then(() => this.send(url, event, options))),
      policy,
      { stopRetrying: [o.signal, o.stopRetrying], onRetry: o.onRetry },
    );
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Off a cluster a ref is addressed as the trigger entrypoint addresses it: its in-cluster Service (uri wins). */
export function sinkUrl(sink: Sink, namespace: string): string {
  if (sink.uri !== undefined) return sink.uri;
  const ref = sink.ref!;
  return `http://${ref.name}.${ref.namespace ?? namespace}.svc.cluster.local`;
}

/**
 * How long the clock may run after the last event before the run is declared over even if timers
 * are still scheduled: twice the longest a subscriber can keep an event (its window, reset, batch
 * wait or debounce, then every attempt of its delivery chain with the longest backoff, timeouts
 * included, redelivered by the bus up to its maxDeliver), plus a minute. The run normally ends
 * earlier, as soon as nothing is scheduled.
 */
export function settleBound(trigger: Trigger): number {
  let longest = 0;
  for (const s of trigger.spec.subscribers) {
    let held = 0;
    if (parseCondition(s.condition, Object.keys(trigger.spec.inputs)).type !== "input")
      held = Math.max(held, durationMs(s.correlation?.window ?? DEFAULT_WINDOW));
    if (s.correlation?.reset?.after !== undefined) held = Math.max(held, durationMs(s.correlation.reset.after));
    if (s.batch !== undefined) held = Math.max(held, durationMs(s.batch.maxWait));
    if (s.debounce !== undefined) held = Math.max(held, durationMs(s.debounce.window));
    const p = deliveryPolicy(s.delivery);
    let chain = 0;
    for (let n = 0; n <= Math.min(p.retry, 100); n++)
      chain += p.timeoutMs + (n === 0 ? 0 : 1.2 * Math.min(p.backoffDelayMs * 2 ** (n - 1), p.maxDelayMs ?? 60_000));
    const hops = 3; // the target, the dead-letter sink, the dead-letter topic
    const redelivery = Math.min(DEFAULT_BACKOFF_MS * 2 ** DEFAULT_MAX_DELIVER, MAX_BACKOFF_MS);
    longest = Math.max(longest, held + DEFAULT_MAX_DELIVER * (chain * hops + redelivery));
  }
  return 2 * longest + 60_000;
}

/** Turns of the real event loop with no progress before the runtime counts as idle. */
const IDLE_TURNS = 3;
/** Most turns waited for the runtime to become idle at one virtual instant. */
const MAX_TURNS = 10_000;

/** Runs `c` against `trigger`; installs the virtual clock for the duration of the run. */
export async function runCase(trigger: Trigger, c: TestCase, o: { logger: Logger }): Promise<CaseRun> {
  const namespace = namespaceOf(trigger);
  const triggerName = `${namespace}/${trigger.metadata.name}`;
  const specs = trigger.spec.subscribers;
  const outcome: SubscriberOutcome[] = specs.map(() => ({ deliveries: [], deadLetters: [], counts: {} }));
  const inputFiltered: Record<string, number> = {};
  let progress = 0;

  // One URL per subscriber and role, so a sink shared by two subscribers still tells them apart;
  // the fragment never reaches a real server, and reasons and destinations show the real URL.
  const slots = new Map<string, SinkSlot>();
  const slotOf = new Map<Sink, string>();
  const real = new Map<string, string>();
  const answersFor = (sink: Sink, url: string): SinkAnswer[] => {
    const names = [url, sink.uri, sink.ref?.name, sink.ref && `${sink.ref.namespace ?? namespace}/${sink.ref.name}`];
    for (const n of names) if (n !== undefined && c.sinks[n] !== undefined) return c.sinks[n];
    return [200];
  };
  specs.forEach((s, i) => {
    for (const [role, sink] of [
      ["sink", s.sink],
      ["deadLetterSink", s.deadLetterSink],
    ] as const) {
      if (sink === undefined) continue;
      const url = sinkUrl(sink, namespace);
      const address = `${url}#ofevents-test-subscriber-${i}-${role}`;
      slots.set(address, { subscriber: i, role, url, answers: answersFor(sink, url) });
      slotOf.set(sink, address);
      real.set(address, url);
    }
  });
  const unaddress = (text: string): string => {
    let t = text;
    for (const [address, url] of real) t = t.split(address).join(url);
    return t;
  };
  const deadLetter = (event: CloudEvent, to: DeadLettered["to"]): DeadLettered => {
    const e = event as Record<string, unknown>;
    const code = e[DeadLetterExtension.Code];
    const attempts = e[DeadLetterExtension.Deliveries];
    const fixed = { ...e } as Record<string, unknown>;
    for (const k of [DeadLetterExtension.Reason, DeadLetterExtension.Destination])
      if (typeof fixed[k] === "string") fixed[k] = unaddress(fixed[k]);
    return {
      id: event.id,
      to,
      reason: String(fixed[DeadLetterExtension.Reason] ?? ""),
      code: code === undefined ? undefined : String(code),
      attempts: attempts === undefined ? undefined : Number(attempts),
      event: fixed as unknown as CloudEvent,
    };
  };

  const sinks = new CaseSinks(slots, (slot, received) => {
    progress++;
    const out = outcome[slot.subscriber]!;
    if (slot.role === "deadLetterSink") {
      for (const e of Array.isArray(received) ? received : [received])
        out.deadLetters.push(deadLetter(e, "deadLetterSink"));
    } else if (Array.isArray(received)) out.deliveries.push({ to: "sink", batch: received });
    else out.deliveries.push({ to: "sink", event: received });
  });

  const clock = FakeTimers.install({
    now: c.startMs,
    toFake: [...FAKED],
    shouldClearNativeTimers: true,
    loopLimit: 1_000_000,
  });
  try {
    const bus = createMemoryBus({ logger: o.logger });
    // Published events (topic deliveries) wait here until the trigger reports which subscriber
    // delivered them; dead letters say their subscriber themselves.
    const published: Array<{ topic: string; event: CloudEvent }> = [];
    const publishTo: EventBus = {
      driver: bus.driver,
      events: bus.events,
      ping: (ms) => bus.ping(ms),
      subscribe: (topics, handler, options) => bus.subscribe(topics, handler, options),
      close: () => bus.close(),
      async publish(topic, event) {
        progress++;
        const e = event as Record<string, unknown>;
        const sub = Number(e[DeadLetterExtension.Subscriber]);
        const isDeadLetter =
          e[DeadLetterExtension.Trigger] === triggerName && typeof e[DeadLetterExtension.Reason] === "string";
        if (isDeadLetter && specs[sub]?.deadLetterTopic === topic)
          outcome[sub]!.deadLetters.push(deadLetter(event, "deadLetterTopic"));
        else if (!isDeadLetter) published.push({ topic, event });
        return bus.publish(topic, event);
      },
    };
    const rt = await startTrigger(trigger, {
      bus,
      publishTo,
      logger: o.logger,
      engine: createExpressionEngine(),
      sinks,
      resolveSink: (sink) => {
        const address = slotOf.get(sink);
        if (address === undefined) throw new Error(`sink ${JSON.stringify(sink)} is not one of the trigger's`);
        return address;
      },
    });
    const count = (subscriber: number | undefined, what: string): void => {
      progress++;
      if (subscriber === undefined) return;
      const counts = outcome[subscriber]?.counts;
      if (counts !== undefined) counts[what] = (counts[what] ?? 0) + 1;
    };
    const on = <K extends keyof TriggerEvents>(type: K, f?: (p: TriggerEvents[K]) => void): void => {
      rt.events.on(type, (p) => {
        count((p as { subscriber?: number }).subscriber, type);
        f?.(p);
      });
    };
    on("delivered", (p) => {
      if (p.kind !== "topic") return;
      const i = published.findIndex((x) => x.topic === p.target && x.event.id === p.id);
      if (i >= 0) outcome[p.subscriber]!.deliveries.push({ to: "topic", event: published.splice(i, 1)[0]!.event });
    });
    on("dropped", (p) =>
      outcome[p.subscriber]!.deadLetters.push({
        id: p.id,
        to: "none",
        reason: unaddress(p.error instanceof Error ? p.error.message : String(p.error)),
        code: p.error instanceof OfEventsError ? p.error.code : undefined,
        attempts: undefined,
        event: undefined,
      }),
    );
    on("filtered", (p) => {
      if (p.input !== undefined) inputFiltered[p.input] = (inputFiltered[p.input] ?? 0) + 1;
    });
    for (const type of [
      "fired",
      "pending",
      "consumed",
      "retried",
      "dead_lettered",
      "expired",
      "evicted",
      "uncorrelated",
      "reset",
      "batched",
      "debounced",
      "deduplicated",
      "throttled",
    ] as const)
      on(type);

    /** Lets the runtime work at this virtual instant until it makes no more progress. */
    const idle = async (): Promise<void> => {
      let still = 0;
      for (let turn = 0; turn < MAX_TURNS && still < IDLE_TURNS; turn++) {
        const before = progress;
        await new Promise<void>((r) => setImmediate(r));
        still = progress === before ? still + 1 : 0;
      }
    };

    await idle();
    for (const e of c.events) {
      const wait = c.startMs + e.atMs - clock.now;
      if (wait > 0) await clock.tickAsync(wait);
      const event = e.timeGiven ? e.event : { ...e.event, time: new Date(clock.now).toISOString() };
      progress++;
      await bus.publish(e.topic, event);
      await idle();
    }

    // Then run the clock, timer by timer, until nothing is scheduled or the bound is reached.
    const runFor = c.runForMs ?? settleBound(trigger);
    // A correlation.reset cron schedule always keeps one timer: it alone does not keep the run going.
    const inputNames = Object.keys(trigger.spec.inputs);
    const recurring = specs.filter(
      (s) => s.correlation?.reset?.cron !== undefined && parseCondition(s.condition, inputNames).type !== "input",
    ).length;
    let bounded = false;
    const sentinel = clock.setTimeout(() => (bounded = true), runFor);
    let settled = false;
    for (;;) {
      await idle();
      if (clock.countTimers() - (bounded ? 0 : 1) - recurring <= 0) {
        settled = true;
        break;
      }
      if (bounded) break;
      await clock.nextAsync();
    }
    const endedAtMs = clock.now - c.startMs;
    if (!bounded) clock.clearTimeout(sentinel);

    const returned = rt.pending();
    let stopped = false;
    const stopping = rt.stop().finally(() => (stopped = true));
    // stop() may wait on the clock (its grace period, returned events' redelivery timers).
    for (let i = 0; !stopped && i < 1_000; i++) await clock.tickAsync(1_000);
    await stopping;
    await bus.close();
    return { subscribers: outcome, inputFiltered, endedAtMs, settled, returned };
  } finally {
    clock.uninstall();
  }
}
