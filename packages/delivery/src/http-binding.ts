/**
 * The CloudEvents HTTP protocol binding, written out instead of going through the cloudevents
 * SDK's `HTTP.binary` / `HTTP.structured`: the SDK builds a validated `CloudEvent` object per
 * message (about 12 µs per event, against about 1 µs here), rewrites `time` through `Date` (losing
 * sub-millisecond digits and offsets) and does not percent-encode header values, so an attribute
 * with a space or a non-ASCII character either arrives altered or makes the request invalid.
 *
 * Header values follow the binding's §3.1.3.2: space, `"`, `%` and everything outside
 * U+0021..U+007E are percent-encoded as UTF-8 bytes; decoding unquotes an RFC 7230 quoted string,
 * then percent-decodes once and refuses byte sequences that are not UTF-8.
 *
 * `toEvent` is the one decoder of CloudEvents over HTTP (binary, structured and batch mode): the
 * webhook source and the local function host both call it, so an event reaches a local function
 * exactly as it reaches an external sink. Data is kept as the bus carries it: JSON as its value,
 * UTF-8 text as a string, anything else as `data_base64`.
 */
import {
  EventError,
  assertIncomingEvent,
  decodeUtf8,
  isJsonMediaType,
  mediaType,
  parseJsonBody,
  type CloudEvent,
} from "@ofevents/core";

export interface HttpMessage {
  headers: Record<string, string>;
  body: string | Uint8Array | undefined;
}

export const CE_JSON_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8";
const CE_JSON = "application/cloudevents+json";
const CE_BATCH = "application/cloudevents-batch+json";

/** Whether data with this `datacontenttype` is JSON; no content type means JSON (CloudEvents JSON format §3.1). */
function isJsonContentType(contentType: unknown): boolean {
  const type = mediaType(contentType);
  return type === "" || isJsonMediaType(type);
}

/** Characters that travel as they are: U+0021..U+007E without `"` (0x22) and `%` (0x25). */
const PLAIN = /^[\x21\x23\x24\x26-\x7e]*$/;
const HEX = Array.from({ length: 256 }, (_, b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`);

/** Percent-encodes an attribute value for a `ce-` header. */
export function encodeHeaderValue(value: string): string {
  if (PLAIN.test(value)) return value;
  let out = "";
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x21 && c <= 0x7e && c !== 0x22 && c !== 0x25) out += ch;
    else for (const b of Buffer.from(ch, "utf8")) out += HEX[b];
  }
  return out;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const HEX_PAIR = /^[0-9a-fA-F]{2}$/;

/**
 * Decodes a `ce-` header value: unquotes a quoted string (older senders), then one round of
 * percent-decoding. A `%` not followed by two hex digits is kept as it is (senders that never
 * encoded); decoded bytes that are not UTF-8 are an EventError.
 */
export function decodeHeaderValue(value: string): string {
  let v = value;
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, "$1");
  if (!v.includes("%")) return v;
  const bytes: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const pair = v.slice(i + 1, i + 3);
    if (v[i] === "%" && HEX_PAIR.test(pair)) {
      bytes.push(parseInt(pair, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(v[i]!, "latin1")) bytes.push(b);
    }
  }
  try {
    return UTF8.decode(Uint8Array.from(bytes));
  } catch (err) {
    throw new EventError(`header value ${JSON.stringify(value)} percent-decodes to bytes that are not UTF-8`, {
      cause: err,
    });
  }
}

function attributeText(v: unknown): string {
  return typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
}

/**
 * The header names of the spec's attributes, as constants: a name built per event (`ce-${name}`)
 * is a new string that V8 must look up in its string table to use as a property key.
 */
const CE_HEADER: Readonly<Record<string, string>> = Object.assign(Object.create(null) as Record<string, string>, {
  specversion: "ce-specversion",
  id: "ce-id",
  source: "ce-source",
  type: "ce-type",
  subject: "ce-subject",
  time: "ce-time",
  dataschema: "ce-dataschema",
  traceparent: "ce-traceparent",
  tracestate: "ce-tracestate",
});

/** Binary mode: attributes in `ce-` headers, the data as the body with its content type. */
export function encodeBinary(event: CloudEvent): HttpMessage {
  const ev = event as unknown as Record<string, unknown>;
  const headers: Record<string, string> = {};
  let body: string | Uint8Array | undefined;
  for (const name of Object.keys(ev)) {
    const v = ev[name];
    if (v === undefined || v === null) continue;
    if (name === "data") {
      // A string is the body itself unless the data is JSON: then it is the JSON text of the string.
      body =
        v instanceof Uint8Array || (typeof v === "string" && !isJsonContentType(ev["datacontenttype"]))
          ? v
          : JSON.stringify(v);
    } else if (name === "data_base64") {
      body = Buffer.from(String(v), "base64");
    } else if (name !== "datacontenttype") {
      headers[CE_HEADER[name] ?? `ce-${name}`] = encodeHeaderValue(attributeText(v));
    }
  }
  const type = ev["datacontenttype"];
  // No data and no datacontenttype: no content type either, rather than JSON with an empty body.
  if (body !== undefined || (typeof type === "string" && type !== ""))
    headers["content-type"] =
      typeof type === "string" && type !== ""
        ? type
        : ev["data_base64"] !== undefined
          ? "application/octet-stream"
          : "application/json";
  return { headers, body };
}

/** Structured mode: the whole event as one JSON document. */
export function encodeStructured(event: CloudEvent): HttpMessage {
  return { headers: { "content-type": CE_JSON_CONTENT_TYPE }, body: JSON.stringify(event) };
}

/** The content type of a batch (§3.3), as {@link encodeBatch} writes it. */
export const CE_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8";

/** Batched mode (§3.3): the events as one JSON array of structured events; toEvent decodes it back. */
export function encodeBatch(events: readonly CloudEvent[]): HttpMessage {
  return { headers: { "content-type": CE_BATCH_CONTENT_TYPE }, body: JSON.stringify(events) };
}

/** HTTP headers as Node gives them (`IncomingMessage.headers`); names are matched case-insensitively. */
export type HttpHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/** The CloudEvents mode of an HTTP message, or undefined when it carries no CloudEvent. */
export type HttpMode = "binary" | "structured" | "batch";

function lowerHeaders(headers: HttpHeaders): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    out.set(k.toLowerCase(), typeof v === "string" ? v : v.join(", "));
  }
  return out;
}

/**
 * Which CloudEvents mode a message is in: structured and batch by content type, binary when it has
 * a `ce-specversion` header; undefined for anything else (a plain request).
 */
export function httpMode(headers: HttpHeaders): HttpMode | undefined {
  const type = mediaType(headerText(headers, "content-type"));
  if (type === CE_JSON) return "structured";
  if (type === CE_BATCH) return "batch";
  return headerText(headers, "ce-specversion") !== undefined ? "binary" : undefined;
}

/**
 * One header's value (several joined by ", "), its name matched case-insensitively: no copy of
 * the headers (Node gives them lower-cased, so the first look-up finds them).
 */
function headerText(headers: HttpHeaders, lowerName: string): string | undefined {
  let v = headers[lowerName];
  if (v === undefined) {
    for (const k in headers) {
      if (k.length === lowerName.length && k.toLowerCase() === lowerName && headers[k] !== undefined) {
        v = headers[k];
        break;
      }
    }
  }
  return v === undefined ? undefined : typeof v === "string" ? v : v.join(", ");
}

/** The data of a binary-mode body: parsed JSON, UTF-8 text, or bytes (as base64) when it is neither. */
function decodeData(type: string, body: Uint8Array): { data: unknown } | { data_base64: string } {
  if (isJsonMediaType(type)) return { data: parseJsonBody(body, "body") };
  if (type.startsWith("text/") || type === "application/x-www-form-urlencoded") {
    const text = decodeUtf8(body);
    if (text !== undefined) return { data: text };
  }
  return { data_base64: Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("base64") };
}

function bytesOf(body: Uint8Array | string | undefined): Uint8Array {
  if (body === undefined) return new Uint8Array(0);
  return typeof body === "string" ? Buffer.from(body, "utf8") : body;
}

/** Binary mode (§3.1): attributes in `ce-` headers, percent-decoded (§3.1.3.2); the body is the data. */
function decodeBinary(h: Map<string, string>, body: Uint8Array): CloudEvent {
  // Built on a null prototype: a header named ce-__proto__ must be refused, not swallowed.
  const ev: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [header, value] of h) {
    if (!header.startsWith("ce-")) continue;
    const name = header.slice(3);
    if (name === "data" || name === "data_base64" || name === "datacontenttype") {
      throw new EventError(`header ${header} is not allowed in binary mode; the body is the data`);
    }
    try {
      ev[name] = decodeHeaderValue(value);
    } catch (err) {
      throw new EventError(`header ${header}: ${(err as Error).message}`, { cause: err });
    }
  }
  const contentType = h.get("content-type");
  if (contentType !== undefined) ev["datacontenttype"] = contentType;
  // Without a content type the body stays bytes.
  if (body.length > 0) Object.assign(ev, decodeData(mediaType(contentType) || "application/octet-stream", body));
  const out = { ...ev };
  assertIncomingEvent(out);
  return out;
}

/**
 * Decodes an HTTP message into CloudEvents (CloudEvents HTTP protocol binding 1.0.2): one event in
 * binary or structured mode, an array in batch mode. Attribute values are kept as sent (`time`
 * keeps its digits and offset; an absent `time` stays absent), `ce-` header values are
 * percent-decoded, and the data is JSON's value for a JSON content type, text for UTF-8 `text/*`,
 * `data_base64` for anything else. Throws an EventError naming the problem when the message is not
 * a valid CloudEvent, including a message with no CloudEvents mode at all (see `httpMode`).
 */
export function toEvent(headers: HttpHeaders, body: Uint8Array | string | undefined): CloudEvent | CloudEvent[] {
  const mode = httpMode(headers);
  switch (mode) {
    case "structured": {
      const event = parseJsonBody(bytesOf(body), "CloudEvent");
      assertIncomingEvent(event);
      return event;
    }
    case "batch": {
      const parsed = parseJsonBody(bytesOf(body), "batch");
      if (!Array.isArray(parsed)) throw new EventError("a CloudEvents batch must be a JSON array");
      return parsed.map((e: unknown, i) => {
        try {
          assertIncomingEvent(e);
        } catch (err) {
          throw new EventError(`batch item ${i}: ${(err as Error).message}`, { cause: err });
        }
        return e;
      });
    }
    case "binary":
      try {
        return decodeBinary(lowerHeaders(headers), bytesOf(body));
      } catch (err) {
        if (err instanceof EventError) throw new EventError(`invalid CloudEvent: ${err.message}`, { cause: err });
        throw err;
      }
    default:
      throw new EventError("not a CloudEvent: no ce-specversion header and not a CloudEvents content type");
  }
}
