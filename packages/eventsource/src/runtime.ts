/**
 * Runs one EventSource resource: starts an adapter per event, builds the CloudEvent of each
 * dispatch, and sends it to the sync sink (with retries) and/or publishes it to the bus topic
 * `{namespace}-{eventSource}-{event}` (retrying what the bus calls retriable); with both, to both.
 * An adapter acks its source only after dispatch resolved. Events start independently: one that
 * cannot connect is retried with backoff and never delays the others; a configuration error
 * (missing secret, port in use, bad value) stops the start with a message naming the event.
 */
import {
  ErrorCode,
  OfEventsError,
  hasCode,
  busTopic,
  createInstrumentation,
  namespaceOf,
  newEvent,
  SpanKind,
  eventAttributes,
  eventContext,
  inSpan,
  tracing,
  withSpanContext,
  sourceKinds,
  backoffDelay,
  sleep,
  type CloudEvent,
  type EventSource,
  type Instrumentation,
  type Logger,
  type SecretResolver,
  type SourceKind,
  type ValidationIssue,
} from "@ofevents/core";
import {
  NotDelivered,
  createOutbound,
  deliveryPolicy,
  type DeliveryPolicy,
  type SendOptions,
  type Sent,
  type SinkClient,
  type Target,
} from "@ofevents/delivery";
import type { EventPublisher } from "@ofevents/eventbus";
import { loadAdapter } from "./registry.js";
import type { Dispatch, DispatchInit, RejectReason, RunningSource } from "./types.js";
import type { WebhookServers } from "./webhook-server.js";

export interface SourceEvents {
  dispatched: { eventSource: string; event: string; id: string };
  published: { eventSource: string; event: string; id: string; topic: string };
  delivered: { eventSource: string; event: string; id: string; sink: string; status: number };
  failed: { eventSource: string; event: string; id: string; error: unknown };
  started: { eventSource: string; event: string; kind: SourceKind };
  start_failed: { eventSource: string; event: string; kind: SourceKind; error: unknown };
  /** A request refused before anything was dispatched (a webhook's missing or wrong signature). */
  rejected: { eventSource: string; event: string; reason: RejectReason };
}

export interface EventSourceRuntimeOptions {
  logger: Logger;
  /** Required when the resource has `eventBus`. */
  bus?: EventPublisher | undefined;
  /** Required when the resource has `sink`. */
  sinks?: SinkClient | undefined;
  /** Resolves `sink` (uri or ref) to a URL. */
  resolveSink?: ((sink: NonNullable<EventSource["spec"]["sink"]>, namespace: string) => string) | undefined;
  secrets: SecretResolver;
  webhooks: WebhookServers;
  instrumentation?: Instrumentation<SourceEvents> | undefined;
  /** Publish attempts for retriable bus errors (default 5). */
  publishAttempts?: number | undefined;
}

export interface EventSourceRuntime {
  readonly name: string;
  readonly events: Instrumentation<SourceEvents>;
  /**
   * The events that do not run now, each with the reason: still connecting (retried with
   * backoff until it starts) or not supported here.
   */
  notRunning(): Array<{ event: string; reason: string }>;
  /**
   * The events among {@link notRunning} that never will here (not supported, e.g. OpenFunction's
   * redis event): readiness does not wait for them.
   */
  unsupported(): string[];
  /**
   * Sends an event as if the adapter of `eventName` had produced it, through the same dispatch
   * (sink and/or bus, counted and traced like any other): the live page's test form. Rejects
   * when the EventSource has no such event, or with what the bus or sink said.
   */
  inject(eventName: string, init: DispatchInit): Promise<{ id: string }>;
  /** Stops every adapter, waiting for in-flight dispatches. */
  stop(): Promise<void>;
}

/** Validates the events of an EventSource with their adapters (beyond the schema). */
export async function validateEventSource(es: EventSource): Promise<ValidationIssue[]> {
  const issues: ValidationIssue[] = [];
  for (const kind of sourceKinds) {
    for (const [name, spec] of Object.entries(es.spec[kind] ?? {})) {
      let adapter;
      try {
        adapter = await loadAdapter(kind);
      } catch (err) {
        issues.push({ code: "unsupported", path: `spec.${kind}.${name}`, message: (err as Error).message });
        continue;
      }
      for (const i of adapter.validate(spec))
        issues.push({ ...i, path: `spec.${kind}.${name}${i.path === "" ? "" : `.${i.path}`}` });
    }
  }
  return issues;
}

/** Backoff between attempts to start an event that could not connect: 1 s doubling to 60 s. */
const START_RETRY = { policy: "exponential", delayMs: 1_000, maxDelayMs: 60_000 } as const;

/** Node's error codes of a connection that failed (DNS, refused, reset, unreachable, timed out). */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
]);

/**
 * Whether an adapter's start failure is worth retrying: it could not reach its server (a
 * SOURCE_START error, a retriable error, a network error anywhere in the cause chain). Anything
 * else (a missing secret, a port in use, a bad value) is a configuration error.
 */
export function isStartRetriable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof OfEventsError) {
      if (e.code === ErrorCode.SourceUnsupported) return false;
      if (e.retriable || e.code === ErrorCode.SourceStart || e.code === ErrorCode.BusUnreachable) return true;
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined && NETWORK_CODES.has(code)) return true;
  }
  return false;
}

export async function startEventSource(es: EventSource, o: EventSourceRuntimeOptions): Promise<EventSourceRuntime> {
  const namespace = namespaceOf(es);
  const name = es.metadata.name;
  const events = o.instrumentation ?? createInstrumentation<SourceEvents>();
  const log = o.logger.child({ component: "eventsource", eventSource: `${namespace}/${name}` });
  const abort = new AbortController();
  const running: RunningSource[] = [];
  const sink = es.spec.sink;
  const sinkUrl = sink === undefined ? undefined : (o.resolveSink?.(sink, namespace) ?? sink.uri);
  if (sink !== undefined && (sinkUrl === undefined || o.sinks === undefined)) {
    throw new Error(`EventSource ${namespace}/${name}: cannot resolve its sink`);
  }
  // With both a sink and an eventBus, every event goes to both (OpenFunction's behaviour).
  const bus = es.spec.eventBus === undefined ? undefined : o.bus;
  if (es.spec.eventBus !== undefined && bus === undefined)
    throw new Error(`EventSource ${namespace}/${name}: no bus to publish to`);
  if (sink === undefined && bus === undefined)
    throw new Error(`EventSource ${namespace}/${name}: give it an eventBus, a sink, or both`);
  const policy = deliveryPolicy();
  // A source's publish: the sink policy's backoff, 100 ms base, `publishAttempts` in all.
  const publishPolicy = { ...policy, retry: (o.publishAttempts ?? 5) - 1, backoffDelayMs: 100 };
  const out = createOutbound({ sinks: o.sinks, bus });

  /** Sends to one target; rejects with what the target said, so adapters see the bus's or sink's error. */
  async function send(ev: CloudEvent, target: Target, p: DeliveryPolicy, so: SendOptions): Promise<Sent> {
    try {
      return await out.send(ev, target, p, so);
    } catch (err) {
      throw err instanceof NotDelivered ? err.error : err;
    }
  }

  function makeDispatch(kind: SourceKind, eventName: string): Dispatch {
    const topic = busTopic(namespace, name, eventName);
    const source = `/apis/v1/namespaces/${namespace}/eventsources/${name}`;

    async function toSink(ev: CloudEvent): Promise<void> {
      const res = await send(ev, { kind: "sink", url: sinkUrl! }, policy, {
        signal: abort.signal,
        onRetry: (r) =>
          log.warn(
            {
              id: ev.id,
              sink: sinkUrl,
              attempt: r.attempt,
              err: r.error instanceof Error ? r.error.message : String(r.error),
            },
            "sink delivery retried",
          ),
      });
      events.emit("delivered", { eventSource: name, event: eventName, id: ev.id, sink: sinkUrl!, status: res.status! });
      log.info({ event: eventName, id: ev.id, sink: sinkUrl }, "delivered");
    }

    async function toBus(ev: CloudEvent): Promise<void> {
      await send(ev, { kind: "topic", topic }, publishPolicy, { stopRetrying: abort.signal });
      events.emit("published", { eventSource: name, event: eventName, id: ev.id, topic });
      if (log.isLevelEnabled("debug")) log.debug({ event: eventName, id: ev.id, topic }, "published");
    }

    const dispatch = async (ev: CloudEvent): Promise<{ id: string }> => {
      events.emit("dispatched", { eventSource: name, event: eventName, id: ev.id });
      try {
        if (sinkUrl !== undefined && bus !== undefined) {
          // Both must take it before the source is acknowledged; the first failure is reported.
          const [toS, toB] = await Promise.allSettled([toSink(ev), toBus(ev)]);
          if (toS.status === "rejected") throw toS.reason;
          if (toB.status === "rejected") throw toB.reason;
        } else if (sinkUrl !== undefined) await toSink(ev);
        else await toBus(ev);
      } catch (err) {
        events.emit("failed", { eventSource: name, event: eventName, id: ev.id, error: err });
        log.warn({ event: eventName, id: ev.id, err }, "event not taken; the source is not acknowledged");
        throw err;
      }
      return { id: ev.id };
    };

    // Not async: the event's own promise is returned as it is, without another around it; a
    // throw before it exists is a rejection all the same.
    return (init: DispatchInit) => {
      try {
        const ev =
          init.event ??
          newEvent({
            id: init.id,
            source,
            type: init.type ?? `io.openfunction.events.${kind}`,
            subject: init.subject ?? eventName,
            time: init.time,
            datacontenttype: init.datacontenttype,
            data: init.data,
            extensions: init.extensions,
          });
        if (!tracing.enabled) return dispatch(ev);
        // The journey starts here: a child of the trace context the event came with, if any.
        return inSpan(
          `receive ${namespace}/${name}/${eventName}`,
          {
            kind: SpanKind.CONSUMER,
            parent: eventContext(ev),
            attributes: {
              ...eventAttributes(ev),
              "ofevents.eventsource": `${namespace}/${name}`,
              "ofevents.source_kind": kind,
            },
          },
          (span) => dispatch(withSpanContext(ev, span)),
        );
      } catch (err) {
        return Promise.reject(err as Error);
      }
    };
  }

  /** Why each event is not running, while it is not. */
  const waiting = new Map<string, string>();
  const configErrors: string[] = [];
  const retries: Promise<void>[] = [];

  async function attempt(kind: SourceKind, eventName: string, spec: unknown): Promise<unknown> {
    try {
      const adapter = await loadAdapter(kind);
      const problems = adapter.validate(spec);
      if (problems.length > 0)
        throw new OfEventsError(ErrorCode.Config, problems.map((p) => `${p.path}: ${p.message}`).join("; "));
      running.push(
        await adapter.start(
          {
            namespace,
            eventSource: name,
            eventName,
            logger: log.child({ event: eventName, kind }),
            secrets: o.secrets,
            webhooks: o.webhooks,
            signal: abort.signal,
            rejected: (reason) => events.emit("rejected", { eventSource: name, event: eventName, reason }),
          },
          spec,
          dispatcherOf(kind, eventName),
        ),
      );
      waiting.delete(eventName);
      events.emit("started", { eventSource: name, event: eventName, kind });
      return undefined;
    } catch (err) {
      events.emit("start_failed", { eventSource: name, event: eventName, kind, error: err });
      return err;
    }
  }

  /** Retries an event that could not connect, with backoff, until it starts or the source stops. */
  async function retry(kind: SourceKind, eventName: string, spec: unknown): Promise<void> {
    for (let n = 1; !abort.signal.aborted; n++) {
      const delayMs = backoffDelay(n, START_RETRY);
      log.warn(
        { event: eventName, kind, attempt: n, retryInMs: delayMs, err: waiting.get(eventName) },
        "event source cannot start yet; retrying",
      );
      try {
        await sleep(delayMs, abort.signal);
      } catch {
        return;
      }
      if (abort.signal.aborted) return;
      const err = await attempt(kind, eventName, spec);
      if (err === undefined) {
        log.info({ event: eventName, kind, attempts: n + 1 }, "event source started");
        return;
      }
      waiting.set(eventName, (err as Error).message);
    }
  }

  const dispatchers = new Map<string, Dispatch>();
  const dispatcherOf = (kind: SourceKind, eventName: string): Dispatch => {
    let d = dispatchers.get(eventName);
    if (d === undefined) dispatchers.set(eventName, (d = makeDispatch(kind, eventName)));
    return d;
  };
  // Every event starts on its own: one that cannot connect never delays the others.
  const firsts: Promise<void>[] = [];
  const unsupported = new Set<string>();
  for (const kind of sourceKinds) {
    for (const [eventName, spec] of Object.entries(es.spec[kind] ?? {})) {
      waiting.set(eventName, "starting");
      firsts.push(
        attempt(kind, eventName, spec).then((err) => {
          if (err === undefined) return;
          const message = (err as Error).message;
          waiting.set(eventName, message);
          if (isStartRetriable(err)) retries.push(retry(kind, eventName, spec));
          else if (hasCode(err, ErrorCode.SourceUnsupported)) {
            unsupported.add(eventName);
            log.error({ event: eventName, kind, err: message }, "event not started: not supported here");
          } else configErrors.push(`event ${eventName} (${kind}): ${message}`);
        }),
      );
    }
  }
  await Promise.all(firsts);

  const stop = async (): Promise<void> => {
    abort.abort();
    await Promise.allSettled(retries);
    await Promise.allSettled(running.map((r) => r.stop()));
  };
  if (configErrors.length > 0) {
    await stop();
    throw new OfEventsError(
      ErrorCode.Config,
      `EventSource ${namespace}/${name} cannot start: ${configErrors.join("; ")}`,
    );
  }
  return {
    name,
    events,
    notRunning: () => [...waiting].map(([event, reason]) => ({ event, reason })),
    unsupported: () => [...unsupported],
    inject: async (eventName, init) => {
      const kind = sourceKinds.find((k) => es.spec[k]?.[eventName] !== undefined);
      if (kind === undefined)
        throw new OfEventsError(ErrorCode.Config, `EventSource ${namespace}/${name} has no event "${eventName}"`);
      if (abort.signal.aborted) throw new OfEventsError(ErrorCode.Config, `EventSource ${namespace}/${name} stopped`);
      return dispatcherOf(kind, eventName)(init);
    },
    stop,
  };
}
