/**
 * Runs one EventSource resource: starts an adapter per event, builds the CloudEvent of each
 * dispatch, and sends it to the sync sink (with retries) or publishes it to the bus topic
 * `{namespace}-{eventSource}-{event}` (retrying what the bus calls retriable). An adapter acks its
 * source only after dispatch resolved. One failing event source never stops the others.
 */
import {
  BusError,
  busTopic,
  createInstrumentation,
  deliveryPolicy,
  namespaceOf,
  newEvent,
  sourceKinds,
  backoffDelay,
  sleep,
  type CloudEvent,
  type EventSource,
  type Instrumentation,
  type Logger,
  type SecretResolver,
  type SinkClient,
  type SourceKind,
  type ValidationIssue,
} from "@ofevents/core";
import type { EventPublisher } from "@ofevents/eventbus";
import { loadAdapter } from "./registry.js";
import type { Dispatch, DispatchInit, RunningSource } from "./types.js";
import type { WebhookServers } from "./webhook-server.js";

export interface SourceEvents {
  dispatched: { eventSource: string; event: string; id: string };
  published: { eventSource: string; event: string; id: string; topic: string };
  delivered: { eventSource: string; event: string; id: string; sink: string; status: number };
  failed: { eventSource: string; event: string; id: string; error: unknown };
  started: { eventSource: string; event: string; kind: SourceKind };
  start_failed: { eventSource: string; event: string; kind: SourceKind; error: unknown };
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
  if (sink === undefined && o.bus === undefined)
    throw new Error(`EventSource ${namespace}/${name}: no bus to publish to`);
  const policy = deliveryPolicy();
  const attempts = o.publishAttempts ?? 5;

  async function publish(topic: string, ev: CloudEvent): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await o.bus!.publish(topic, ev);
        return;
      } catch (err) {
        if (!(err instanceof BusError) || !err.retriable || attempt >= attempts || abort.signal.aborted) throw err;
        await sleep(backoffDelay(attempt, { policy: "exponential", delayMs: 100 }), abort.signal);
      }
    }
  }

  function makeDispatch(kind: SourceKind, eventName: string): Dispatch {
    const topic = busTopic(namespace, name, eventName);
    const source = `/apis/v1/namespaces/${namespace}/eventsources/${name}`;
    return async (init: DispatchInit) => {
      const ev =
        init.event ??
        newEvent({
          id: init.id,
          source,
          type: `io.openfunction.events.${kind}`,
          subject: init.subject ?? eventName,
          time: init.time,
          datacontenttype: init.datacontenttype,
          data: init.data,
          extensions: init.extensions,
        });
      events.emit("dispatched", { eventSource: name, event: eventName, id: ev.id });
      try {
        if (sinkUrl !== undefined) {
          const res = await o.sinks!.deliver(sinkUrl, ev, policy, {
            signal: abort.signal,
            onRetry: (r) =>
              log.warn({ id: ev.id, sink: sinkUrl, attempt: r.attempt, err: r.error.message }, "sink delivery retried"),
          });
          events.emit("delivered", {
            eventSource: name,
            event: eventName,
            id: ev.id,
            sink: sinkUrl,
            status: res.status,
          });
          log.info({ event: eventName, id: ev.id, sink: sinkUrl }, "delivered");
        } else {
          await publish(topic, ev);
          events.emit("published", { eventSource: name, event: eventName, id: ev.id, topic });
          log.debug({ event: eventName, id: ev.id, topic }, "published");
        }
      } catch (err) {
        events.emit("failed", { eventSource: name, event: eventName, id: ev.id, error: err });
        log.warn({ event: eventName, id: ev.id, err }, "event not taken; the source is not acknowledged");
        throw err;
      }
      return { id: ev.id };
    };
  }

  for (const kind of sourceKinds) {
    for (const [eventName, spec] of Object.entries(es.spec[kind] ?? {})) {
      const elog = log.child({ event: eventName, kind });
      try {
        const adapter = await loadAdapter(kind);
        const problems = adapter.validate(spec);
        if (problems.length > 0) throw new Error(problems.map((p) => `${p.path}: ${p.message}`).join("; "));
        running.push(
          await adapter.start(
            {
              namespace,
              eventSource: name,
              eventName,
              logger: elog,
              secrets: o.secrets,
              webhooks: o.webhooks,
              signal: abort.signal,
            },
            spec,
            makeDispatch(kind, eventName),
          ),
        );
        events.emit("started", { eventSource: name, event: eventName, kind });
      } catch (err) {
        // One failing event never stops the others.
        elog.error({ err }, "event source failed to start");
        events.emit("start_failed", { eventSource: name, event: eventName, kind, error: err });
      }
    }
  }

  return {
    name,
    events,
    async stop() {
      abort.abort();
      await Promise.allSettled(running.map((r) => r.stop()));
    },
  };
}
