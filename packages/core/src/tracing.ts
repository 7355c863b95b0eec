/**
 * The journey of an event as OpenTelemetry spans, over the API only: the SDK and its exporter are
 * set up by the command (cli `startTracing`, from the standard OTEL_* variables) and nowhere else.
 * Until then `tracing.enabled` is false and every helper here costs one branch per event.
 *
 * An event carries its trace context in the CloudEvents distributed-tracing extension
 * (`traceparent`, `tracestate`): each hop starts its span as a child of the context the event
 * carries and hands the event on with its own span's context, so one event is one trace from the
 * source to the sink, across processes and buses. Every span has the CloudEvent's id, source and
 * type (`cloudevents.event_*`, OpenTelemetry's semantic conventions for CloudEvents).
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { CloudEvent } from "./cloudevent.js";

export { SpanKind, SpanStatusCode, context as otelContext, type Span, type Context as SpanContext };

/** Whether spans are recorded (set once the command set up the SDK). */
export const tracing = { enabled: false };

const propagator = new W3CTraceContextPropagator();

const eventGetter: TextMapGetter<Record<string, unknown>> = {
  keys: (c) => Object.keys(c),
  get: (c, k) => (typeof c[k] === "string" ? (c[k] as string) : undefined),
};
const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (c, k, v) => {
    c[k] = v;
  },
};

export function tracer() {
  return trace.getTracer("ofevents");
}

/** The trace context an event carries (its `traceparent` / `tracestate`), over `base`. */
export function eventContext(event: CloudEvent, base: Context = ROOT_CONTEXT): Context {
  return propagator.extract(base, event as unknown as Record<string, unknown>, eventGetter);
}

/** W3C trace context headers (`traceparent`, `tracestate`) of a span. */
export function traceHeaders(span: Span): Record<string, string> {
  const out: Record<string, string> = {};
  propagator.inject(trace.setSpan(ROOT_CONTEXT, span), out, recordSetter);
  return out;
}

/** `event` carrying `span`'s trace context, so the next hop continues this trace. */
export function withSpanContext(event: CloudEvent, span: Span | undefined): CloudEvent {
  if (span === undefined || !span.isRecording()) return event;
  const h = traceHeaders(span);
  const out: Record<string, unknown> = { ...event, traceparent: h["traceparent"] };
  if (h["tracestate"] !== undefined) out["tracestate"] = h["tracestate"];
  else delete out["tracestate"];
  return out as CloudEvent;
}

/** The semantic-convention attributes of a CloudEvent. */
export function eventAttributes(event: CloudEvent): Attributes {
  const a: Attributes = {
    "cloudevents.event_id": event.id,
    "cloudevents.event_source": event.source,
    "cloudevents.event_type": event.type,
    "cloudevents.event_spec_version": event.specversion,
  };
  if (event.subject !== undefined) a["cloudevents.event_subject"] = event.subject;
  return a;
}

export interface SpanOptions {
  kind?: SpanKind;
  /** The parent: default the active context (the span around the caller). */
  parent?: Context | undefined;
  attributes?: Attributes;
}

/**
 * Runs `fn` inside a new span (the active one while `fn` runs, so spans started within are its
 * children); ends it when `fn` settles, recording a rejection as the span's error. With tracing
 * off, runs `fn(undefined)` and nothing else.
 */
export function inSpan<T>(name: string, o: SpanOptions, fn: (span: Span | undefined) => Promise<T>): Promise<T> {
  if (!tracing.enabled) return fn(undefined);
  const span = tracer().startSpan(
    name,
    { kind: o.kind ?? SpanKind.INTERNAL, attributes: o.attributes ?? {} },
    o.parent,
  );
  return context.with(trace.setSpan(o.parent ?? context.active(), span), () =>
    fn(span).then(
      (v) => {
        span.end();
        return v;
      },
      (err: unknown) => {
        span.recordException(err instanceof Error ? err : String(err));
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
        span.end();
        throw err;
      },
    ),
  );
}

/** A span that only records that something happened (a verdict, a join): started and ended at once. */
export function markSpan(name: string, o: SpanOptions): void {
  if (!tracing.enabled) return;
  tracer()
    .startSpan(name, { kind: o.kind ?? SpanKind.INTERNAL, attributes: o.attributes ?? {} }, o.parent)
    .end();
}
