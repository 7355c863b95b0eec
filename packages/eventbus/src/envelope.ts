/**
 * The bus envelope, one for every driver and for Dapr's pub/sub components: a structured
 * CloudEvent as JSON (the message body on JetStream, the record value on Kafka), which daprd
 * hands to its app as the event and which every driver decodes. What daprd adds to an event it
 * publishes (`topic`, `pubsubname`, the trace attributes, `time`) is taken off on decoding:
 * exactly, when our dapr driver published it (the `ofdapr` marker lists it); otherwise `topic`
 * and `pubsubname` (when both are there: daprd writes both) and empty trace attributes.
 */
import { EventError, assertCloudEvent, type CloudEvent } from "@ofevents/core";

/** The extension attribute that lists what daprd adds to a published event (see fromDapr). */
export const DAPR_MARKER = "ofdapr";
/** Attributes daprd sets on a structured CloudEvent it passes through (pubsub/envelope.go FromCloudEvent). */
const DAPR_ADDED = ["time", "traceid", "traceparent", "tracestate", "topic", "pubsubname"] as const;
/** daprd overwrites these whatever the event had. */
const DAPR_OVERWRITTEN = ["topic", "pubsubname"] as const;

interface Marker {
  /** Attributes to delete on delivery (daprd added them). */
  d: string[];
  /** Attributes to restore on delivery (daprd overwrote them). */
  s?: Record<string, unknown>;
}

/**
 * The body to publish for `event`: the event itself plus the `ofdapr` marker naming what daprd
 * will add or overwrite. A `traceparent` without `traceid` gets `traceid` = `traceparent`, as
 * daprd otherwise replaces both with the publish request's trace context (empty when none).
 */
export function toDapr(event: CloudEvent): Record<string, unknown> {
  const ev = event as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { ...ev };
  const has = (k: string) => ev[k] !== undefined;
  const marker: Marker = { d: DAPR_ADDED.filter((k) => !has(k)) };
  const saved: Record<string, unknown> = {};
  for (const k of [...DAPR_OVERWRITTEN, DAPR_MARKER]) if (has(k)) saved[k] = ev[k];
  if (Object.keys(saved).length > 0) marker.s = saved;
  if (has("traceparent") && !has("traceid")) out["traceid"] = ev["traceparent"];
  out[DAPR_MARKER] = JSON.stringify(marker);
  return out;
}

/**
 * The event as published, from what the broker holds: takes off what daprd added and puts back
 * what it overwrote. An event another Dapr client published through daprd (no marker, `topic`
 * and `pubsubname` set) loses those two and empty trace attributes. Throws EventError when it
 * is not a CloudEvent.
 */
export function fromDapr(bytes: Uint8Array): CloudEvent {
  return decodeBusEvent(bytes);
}

/**
 * Decodes a bus message (JetStream body, Kafka record value, Dapr raw payload) into the event as
 * published, whoever wrote it: a driver of this package (directly or through daprd) or another
 * Dapr client through daprd. Throws EventError when it is not a JSON CloudEvent.
 */
export function decodeBusEvent(bytes: Uint8Array): CloudEvent {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch (err) {
    throw new EventError("the message is not JSON", { cause: err });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new EventError("a CloudEvent must be a JSON object");
  const ev = value as Record<string, unknown>;
  const raw = ev[DAPR_MARKER];
  let marker: Marker | undefined;
  if (typeof raw === "string") {
    try {
      const m = JSON.parse(raw) as Marker;
      if (Array.isArray(m.d)) marker = m;
    } catch {
      marker = undefined;
    }
  }
  if (marker !== undefined) {
    delete ev[DAPR_MARKER];
    for (const k of marker.d) delete ev[k];
    for (const [k, v] of Object.entries(marker.s ?? {})) ev[k] = v;
  } else if (typeof ev["topic"] === "string" && typeof ev["pubsubname"] === "string") {
    // Written by daprd for another Dapr client: daprd sets both, and empty trace attributes
    // when the publish request had no trace context.
    for (const k of DAPR_OVERWRITTEN) delete ev[k];
    for (const k of ["traceid", "traceparent", "tracestate"]) if (ev[k] === "") delete ev[k];
  }
  assertCloudEvent(ev);
  return ev;
}
