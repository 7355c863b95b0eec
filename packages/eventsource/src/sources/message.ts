/**
 * What the broker sources (Kafka, NATS) share: turning a message's bytes and headers into dispatch
 * inputs. A message that already is a CloudEvent (binary mode headers, structured mode, or a JSON
 * object with the CloudEvents attributes) passes through with its attributes; anything else
 * becomes data (JSON, text or bytes) with header extensions, and the runtime wraps it.
 */
import { isUtf8 } from "node:buffer";
import {
  CORE_ATTRIBUTES,
  EXTENSION_NAME,
  EventError,
  assertCloudEvent,
  type CloudEvent,
  mediaType,
} from "@ofevents/core";

/** Structured mode (a JSON CloudEvent) and batch mode (a JSON array of them). */
export const CE_STRUCTURED = "application/cloudevents+json";
export const CE_BATCH = "application/cloudevents-batch+json";

/** A header as name and text value(s). */
export type HeaderEntry = readonly [name: string, value: string];

function isJsonType(type: string): boolean {
  return type === "application/json" || type === "text/json" || type.endsWith("+json");
}

export interface DecodedData {
  data: unknown;
  datacontenttype: string;
}

/**
 * Decodes a broker payload (Kafka, NATS, MQTT, Redis: one rule for all). Without a content type:
 * JSON when it parses (`application/json`), else text when it is valid UTF-8 (`text/plain`), else
 * bytes (`application/octet-stream`). A declared JSON
 * type is parsed (text or bytes if it does not parse); a declared `text/*` is text when valid
 * UTF-8; any other declared type stays bytes with that type.
 */
export function decodeData(bytes: Uint8Array, contentType?: string): DecodedData {
  const type = mediaType(contentType);
  const utf8 = isUtf8(bytes);
  const text = utf8 ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8") : "";
  if (utf8 && (type === "" || isJsonType(type)) && text.trim() !== "") {
    try {
      return {
        data: JSON.parse(text) as unknown,
        datacontenttype: type === "" ? "application/json" : contentType!.trim(),
      };
    } catch {
      // Not JSON after all: text or bytes below.
    }
  }
  if (utf8 && (type === "" || isJsonType(type) || type.startsWith("text/"))) {
    return { data: text, datacontenttype: type.startsWith("text/") ? contentType!.trim() : "text/plain" };
  }
  return {
    data: new Uint8Array(bytes),
    datacontenttype: type === "" || isJsonType(type) ? "application/octet-stream" : contentType!.trim(),
  };
}

/**
 * Extension attributes from headers: only headers whose name is already a valid CloudEvents
 * extension name (a-z, 0-9, at most 20) and not a core attribute; values as text. The rest is
 * skipped (never an error: a header is not the producer's promise of an attribute).
 */
export function headerExtensions(headers: Iterable<HeaderEntry>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of headers) {
    if (EXTENSION_NAME.test(name) && !CORE_ATTRIBUTES.has(name)) out[name] = value;
  }
  return out;
}

/** The first header named `name` (case-insensitive). */
export function headerValue(headers: Iterable<HeaderEntry>, name: string): string | undefined {
  const n = name.toLowerCase();
  for (const [k, v] of headers) if (k.toLowerCase() === n) return v;
  return undefined;
}

/** True when the headers carry a binary-mode CloudEvent (`{prefix}specversion` or `{prefix}id`). */
export function isBinaryEvent(headers: Iterable<HeaderEntry>, prefix: string): boolean {
  const names = new Set([`${prefix}specversion`, `${prefix}id`]);
  for (const [k] of headers) if (names.has(k.toLowerCase())) return true;
  return false;
}

/**
 * Builds a binary-mode CloudEvent: `{prefix}{attribute}` headers (case-insensitive) are the
 * attributes, `content-type` is `datacontenttype`, the payload is the data. Throws EventError when
 * the result is not a valid CloudEvent.
 */
export function binaryEvent(headers: Iterable<HeaderEntry>, prefix: string, body: Uint8Array | null): CloudEvent {
  const ev: Record<string, unknown> = {};
  let contentType: string | undefined;
  for (const [k, v] of headers) {
    const name = k.toLowerCase();
    if (name === "content-type") contentType ??= v;
    else if (name.startsWith(prefix) && name.length > prefix.length) {
      const attr = name.slice(prefix.length);
      if (attr === "data" || attr === "data_base64") continue;
      ev[attr] ??= v;
    }
  }
  contentType ??= typeof ev["datacontenttype"] === "string" ? ev["datacontenttype"] : undefined;
  delete ev["datacontenttype"];
  if (body !== null && body.length > 0) {
    const d = decodeData(body, contentType);
    ev["datacontenttype"] = d.datacontenttype;
    setData(ev, d.data);
  } else if (contentType !== undefined) ev["datacontenttype"] = contentType;
  assertCloudEvent(ev);
  return ev;
}

/** Parses a structured-mode CloudEvent, or a batch of them; throws EventError when invalid. */
export function structuredEvents(body: Uint8Array | null, batch: boolean): CloudEvent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body ?? new Uint8Array()).toString("utf8"));
  } catch (err) {
    throw new EventError(`a ${batch ? "CloudEvents batch" : "structured CloudEvent"} must be JSON`, { cause: err });
  }
  const items = batch ? parsed : [parsed];
  if (!Array.isArray(items)) throw new EventError("a CloudEvents batch must be a JSON array");
  return items.map((item: unknown, i) => {
    try {
      assertCloudEvent(item);
    } catch (err) {
      throw batch ? new EventError(`batch item ${i}: ${(err as Error).message}`, { cause: err }) : err;
    }
    return item;
  });
}

/**
 * A JSON value that is a CloudEvent (`specversion`, `id`, `source`, `type`...), as sent by
 * producers that write structured events without a content type (the NATS binding 1.0.0 has no
 * headers at all); undefined when it is not one.
 */
export function asCloudEvent(value: unknown): CloudEvent | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value) || !("specversion" in value))
    return undefined;
  try {
    assertCloudEvent(value);
    return value;
  } catch {
    return undefined;
  }
}

function setData(ev: Record<string, unknown>, data: unknown): void {
  if (data instanceof Uint8Array) ev["data_base64"] = Buffer.from(data).toString("base64");
  else ev["data"] = data;
}
