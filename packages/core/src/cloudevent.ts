/**
 * CloudEvents as plain objects (the cloudevents SDK's `CloudEventV1` shape). Events cross the bus as
 * JSON in structured form; binary data travels as `data_base64`.
 */
import { randomUUID } from "node:crypto";
import type { CloudEventV1 } from "cloudevents";
import { EventError } from "./errors.js";

export type CloudEvent = CloudEventV1<unknown>;

/** The attributes the CloudEvents spec defines (everything else is an extension). */
export const CORE_ATTRIBUTES: ReadonlySet<string> = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64",
]);
/** Valid extension attribute names: lowercase a-z and 0-9, at most 20 characters. */
export const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;

export interface NewEventInit {
  id?: string | undefined;
  source: string;
  type: string;
  subject?: string | undefined;
  time?: string | undefined;
  datacontenttype?: string | undefined;
  dataschema?: string | undefined;
  data?: unknown;
  extensions?: Record<string, string | number | boolean> | undefined;
}

let lastMs = Number.NaN;
let lastIso = "";

/**
 * `new Date(ms).toISOString()`, remembered for the last millisecond asked: formatting costs
 * ~0.6 µs, and events made in one millisecond (a busy source, a fetched batch) share the time.
 */
export function isoTime(ms: number): string {
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString();
    lastMs = ms;
  }
  return lastIso;
}

/** Builds a CloudEvent 1.0; `id` defaults to a random UUID and `time` to now. */
export function newEvent(init: NewEventInit): CloudEvent {
  const ev: Record<string, unknown> = {
    specversion: "1.0",
    id: init.id ?? randomUUID(),
    source: init.source,
    type: init.type,
    time: init.time ?? isoTime(Date.now()),
  };
  if (init.subject !== undefined) ev["subject"] = init.subject;
  if (init.dataschema !== undefined) ev["dataschema"] = init.dataschema;
  if (init.extensions !== undefined)
    for (const [k, v] of Object.entries(init.extensions)) setExtension(ev as CloudEvent, k, v);
  if (init.data !== undefined) {
    if (init.data instanceof Uint8Array) {
      ev["data_base64"] = Buffer.from(init.data).toString("base64");
      ev["datacontenttype"] = init.datacontenttype ?? "application/octet-stream";
    } else {
      ev["data"] = init.data;
      ev["datacontenttype"] =
        init.datacontenttype ?? (typeof init.data === "string" ? "text/plain" : "application/json");
    }
  } else if (init.datacontenttype !== undefined) ev["datacontenttype"] = init.datacontenttype;
  return ev as unknown as CloudEvent;
}

/** Sets an extension attribute, lower-casing and checking its name (CloudEvents naming rules). */
export function setExtension(ev: CloudEvent, name: string, value: string | number | boolean): void {
  const n = name.toLowerCase();
  if (!EXTENSION_NAME.test(n) || CORE_ATTRIBUTES.has(n)) {
    throw new EventError(`"${name}" is not a valid CloudEvents extension name (a-z, 0-9, at most 20)`);
  }
  (ev as Record<string, unknown>)[n] = value;
}

/** Checks the required attributes of a decoded event; throws EventError naming what is wrong. */
export function assertCloudEvent(value: unknown): asserts value is CloudEvent {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new EventError("a CloudEvent must be a JSON object");
  }
  const ev = value as Record<string, unknown>;
  if (ev["specversion"] !== "1.0")
    throw new EventError(`unsupported specversion ${JSON.stringify(ev["specversion"])} (expected "1.0")`);
  for (const a of ["id", "source", "type"]) {
    if (typeof ev[a] !== "string" || ev[a] === "") throw new EventError(`CloudEvent attribute "${a}" is required`);
  }
  for (const k of Object.keys(ev)) {
    if (!CORE_ATTRIBUTES.has(k) && !EXTENSION_NAME.test(k))
      throw new EventError(`invalid CloudEvent attribute name "${k}"`);
  }
}

/** Serialises an event for a bus (structured JSON). */
export function encodeEvent(ev: CloudEvent): Buffer {
  return Buffer.from(JSON.stringify(ev));
}

/** Parses an event from a bus; throws EventError when it is not a CloudEvent. */
export function decodeEvent(bytes: Uint8Array | string): CloudEvent {
  let value: unknown;
  try {
    // A view on the bytes, not a copy (Buffer.from(Uint8Array) would copy them).
    const text =
      typeof bytes === "string"
        ? bytes
        : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
    value = JSON.parse(text);
  } catch (err) {
    throw new EventError("event is not valid JSON", { cause: err });
  }
  assertCloudEvent(value);
  return value;
}

/** Thrown inside {@link copyJson}'s walk when a value needs JSON's own rules. */
const NOT_PLAIN: unique symbol = Symbol("not plain");
/** Nesting past which the walk leaves the copy to JSON (whose own limit is the stack). */
const COPY_DEPTH = 1000;

function copyPlain(v: unknown, depth: number): unknown {
  switch (typeof v) {
    case "string":
    case "boolean":
      return v;
    case "number":
      // JSON writes NaN and the infinities as null and -0 as 0.
      if (!Number.isFinite(v)) throw NOT_PLAIN;
      return v === 0 ? 0 : v;
    case "object": {
      if (v === null) return null;
      if (depth >= COPY_DEPTH) throw NOT_PLAIN;
      if (Array.isArray(v)) {
        const out: unknown[] = new Array<unknown>(v.length);
        // A hole or an undefined item is null in JSON: left to JSON.
        for (let i = 0; i < v.length; i++) {
          const x: unknown = v[i];
          if (x === undefined) throw NOT_PLAIN;
          out[i] = copyPlain(x, depth + 1);
        }
        return out;
      }
      // Dates, Buffers, class instances (toJSON, own rules) and prototype-less objects: left to JSON.
      if (Object.getPrototypeOf(v) !== Object.prototype) throw NOT_PLAIN;
      const out: Record<string, unknown> = {};
      for (const k in v) {
        const x = (v as Record<string, unknown>)[k];
        if (x === undefined) continue;
        // Assigning "__proto__" would set the prototype, where JSON.parse makes an own property.
        if (k === "__proto__") throw NOT_PLAIN;
        out[k] = copyPlain(x, depth + 1);
      }
      return out;
    }
    default:
      // undefined, functions, symbols, bigints: JSON's rules (dropped, null, or a TypeError).
      throw NOT_PLAIN;
  }
}

/**
 * A deep copy equal to `JSON.parse(JSON.stringify(value))`, the copy an event gets by crossing a
 * bus, without the text in between: plain objects, arrays, strings, finite numbers, booleans and
 * null are copied directly; anything else (a Date, a Buffer, undefined in an array, a cycle...)
 * goes through JSON itself, so the result and the errors are JSON's.
 */
export function copyJson<T>(value: T): T {
  try {
    return copyPlain(value, 0) as T;
  } catch (err) {
    if (err !== NOT_PLAIN) throw err;
  }
  const text = JSON.stringify(value) as string | undefined;
  return (text === undefined ? undefined : JSON.parse(text)) as T;
}

/** The data of an event, decoding `data_base64` to a Buffer. */
export function eventData(ev: CloudEvent): unknown {
  const b64 = (ev as Record<string, unknown>)["data_base64"];
  if (typeof b64 === "string") return Buffer.from(b64, "base64");
  return ev.data;
}
