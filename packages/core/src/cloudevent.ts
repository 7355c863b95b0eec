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

/** Builds a CloudEvent 1.0; `id` defaults to a random UUID and `time` to now. */
export function newEvent(init: NewEventInit): CloudEvent {
  const ev: Record<string, unknown> = {
    specversion: "1.0",
    id: init.id ?? randomUUID(),
    source: init.source,
    type: init.type,
    time: init.time ?? new Date().toISOString(),
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

/** The data of an event, decoding `data_base64` to a Buffer. */
export function eventData(ev: CloudEvent): unknown {
  const b64 = (ev as Record<string, unknown>)["data_base64"];
  if (typeof b64 === "string") return Buffer.from(b64, "base64");
  return ev.data;
}
