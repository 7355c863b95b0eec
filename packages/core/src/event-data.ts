/**
 * The rules for an event's data and attributes wherever an event enters, whatever the protocol:
 * media types, UTF-8 text, JSON no deeper than MAX_JSON_DEPTH, and the types the CloudEvents spec
 * gives each attribute. The HTTP binding (packages/delivery) and the sources' payload decoders use
 * them, so an event is judged the same way by every door.
 */
import { assertCloudEvent, type CloudEvent } from "./cloudevent.js";
import { EventError } from "./errors.js";

/** The media type of a content-type value, lower-cased, without parameters. */
export function mediaType(contentType: unknown): string {
  return typeof contentType === "string" ? contentType.split(";")[0]!.trim().toLowerCase() : "";
}

/** `application/json` or a `+json` type (RFC 6839). */
export function isJsonMediaType(type: string): boolean {
  return type === "application/json" || type.endsWith("+json");
}

/**
 * Deepest JSON nesting accepted in a body. Parsing is iterative, but encoding the event for the bus
 * (JSON.stringify) recurses, so deeper data would fail later, after the message was accepted.
 */
export const MAX_JSON_DEPTH = 512;

// Fatal: bytes that are not UTF-8 are never silently replaced; the BOM is kept as a character.
const UTF8_BODY = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The body as UTF-8 text, or undefined when it is not UTF-8. */
export function decodeUtf8(body: Uint8Array): string | undefined {
  try {
    return UTF8_BODY.decode(body);
  } catch {
    return undefined;
  }
}

/** Parses JSON (which must be UTF-8, RFC 8259 §8.1) no deeper than MAX_JSON_DEPTH; EventError otherwise. */
export function parseJsonBody(body: Uint8Array | string, what: string): unknown {
  const text = typeof body === "string" ? body : decodeUtf8(body);
  if (text === undefined) throw new EventError(`${what} is not valid JSON: not UTF-8`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new EventError(`${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  // Nesting deeper than MAX_JSON_DEPTH takes more than that many opening and as many closing
  // brackets, so a shorter text cannot: the walk is skipped for most bodies.
  if (text.length > 2 * MAX_JSON_DEPTH && nestedDeeperThan(value, MAX_JSON_DEPTH)) {
    throw new EventError(`${what} nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`);
  }
  return value;
}

/** Iterative, so that the check itself cannot overflow the stack. */
function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (typeof v !== "object" || v === null) continue;
    if (depth >= max) return true;
    for (const item of Object.values(v)) stack.push([item, depth + 1]);
  }
  return false;
}

// RFC 3339 date-time (CloudEvents' Timestamp type).
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const INT32 = 2 ** 31;

/**
 * `assertCloudEvent` plus the types the CloudEvents spec gives the optional attributes and the
 * extensions, so a malformed event is refused where it enters instead of failing a consumer.
 */
export function assertIncomingEvent(value: unknown): asserts value is CloudEvent {
  assertCloudEvent(value);
  const ev = value as Record<string, unknown>;
  for (const [name, v] of Object.entries(ev)) {
    switch (name) {
      case "specversion":
      case "id":
      case "source":
      case "type":
      case "data":
        break;
      case "subject":
      case "datacontenttype":
      case "dataschema":
        if (typeof v !== "string" || v === "")
          throw new EventError(`CloudEvent attribute "${name}" must be a non-empty string`);
        break;
      case "time":
        if (typeof v !== "string" || !RFC3339.test(v) || Number.isNaN(Date.parse(v)))
          throw new EventError(`CloudEvent attribute "time" must be an RFC 3339 timestamp`);
        break;
      case "data_base64":
        if (typeof v !== "string" || !BASE64.test(v))
          throw new EventError(`CloudEvent attribute "data_base64" must be a base64 string`);
        if ("data" in ev) throw new EventError(`a CloudEvent has either "data" or "data_base64", not both`);
        break;
      default:
        if (
          typeof v !== "string" &&
          typeof v !== "boolean" &&
          !(typeof v === "number" && Number.isInteger(v) && v >= -INT32 && v < INT32)
        )
          throw new EventError(`CloudEvent extension "${name}" must be a string, a boolean or a 32-bit integer`);
    }
  }
}
