/**
 * The webhook source: an HTTP endpoint per event (Argo Events' webhook fields). It accepts
 * CloudEvents in binary, structured and batch mode, keeping their attributes, and plain JSON,
 * text or bytes, which it wraps in a new CloudEvent. It answers 2xx only after the bus or sync
 * sink took every event of the request; 400 with the reason for malformed input, 401 without the
 * right bearer token, 405 for a wrong method, 413 above the size limit, 415 for an unsupported
 * CloudEvents mode, 431 for headers above 16 KiB, 503 (with Retry-After) when the bus cannot take
 * the event now, 502/424 when a sync sink failed or refused it (without the sink's URL or answer).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  CORE_ATTRIBUTES,
  EXTENSION_NAME,
  BusError,
  decodeHeaderValue,
  DeliveryError,
  EventError,
  OfEventsError,
  SourceKind,
  assertCloudEvent,
  type CloudEvent,
  type ValidationIssue,
  type WebhookSpec,
} from "@ofevents/core";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";

export const DEFAULT_MAX_PAYLOAD = 1_048_576;

class PayloadTooLarge extends Error {}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(new PayloadTooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(new PayloadTooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

/**
 * Deepest JSON nesting accepted in a request body. Parsing is iterative, but encoding the event
 * for the bus (JSON.stringify) recurses, so deeper data would fail there, after the 2xx decision.
 */
export const MAX_JSON_DEPTH = 512;

const CE_JSON = "application/cloudevents+json";
const CE_BATCH = "application/cloudevents-batch+json";
// Fatal: bytes that are not UTF-8 are never silently replaced; the BOM is kept as a character.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function decodeUtf8(body: Buffer): string | undefined {
  try {
    return utf8.decode(body);
  } catch {
    return undefined;
  }
}

/** Parses JSON text (which must be UTF-8, RFC 8259 §8.1) no deeper than MAX_JSON_DEPTH. */
function parseJson(body: Buffer, what: string): unknown {
  const text = decodeUtf8(body);
  if (text === undefined) throw new EventError(`${what} is not valid JSON: not UTF-8`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new EventError(`${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (nestedDeeperThan(value, MAX_JSON_DEPTH)) {
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

function isJsonType(type: string): boolean {
  return type === "application/json" || type.endsWith("+json");
}

/** The data of a request body: parsed JSON, text, or bytes (as base64) when it is neither. */
function decodeData(type: string, body: Buffer): { data: unknown } | { data_base64: string } {
  if (isJsonType(type)) return { data: parseJson(body, "body") };
  if (type.startsWith("text/") || type === "application/x-www-form-urlencoded") {
    const text = decodeUtf8(body);
    if (text !== undefined) return { data: text };
  }
  return { data_base64: body.toString("base64") };
}

// RFC 3339 date-time (CloudEvents' Timestamp type).
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const INT32 = 2 ** 31;

/**
 * `assertCloudEvent` plus the types the CloudEvents spec gives the optional attributes and the
 * extensions, so a malformed event is refused here (400) instead of reaching a consumer.
 */
function assertIncomingEvent(value: unknown): asserts value is CloudEvent {
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

/** A binary-mode CloudEvent (CloudEvents HTTP binding §3.1): attributes in ce-* headers, data in the body. */
function decodeBinary(headers: IncomingMessage["headers"], body: Buffer, type: string): Record<string, unknown> {
  // Built on a null prototype: a header named ce-__proto__ must be refused, not swallowed.
  const ev: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [header, value] of Object.entries(headers)) {
    if (!header.startsWith("ce-") || value === undefined) continue;
    const name = header.slice(3);
    if (name === "data" || name === "data_base64" || name === "datacontenttype") {
      throw new EventError(`header ${header} is not allowed in binary mode; the body is the data`);
    }
    // Percent-decoded (CloudEvents HTTP binding §3.1.3.2); invalid UTF-8 is an EventError (400).
    try {
      ev[name] = decodeHeaderValue(Array.isArray(value) ? value.join(", ") : value);
    } catch (err) {
      throw new EventError(`invalid CloudEvent: header ${header}: ${(err as Error).message}`, { cause: err });
    }
  }
  const contentType = headers["content-type"];
  if (contentType !== undefined) ev["datacontenttype"] = contentType;
  // Without a content type the body stays bytes.
  if (body.length > 0) Object.assign(ev, decodeData(type === "" ? "application/octet-stream" : type, body));
  return { ...ev };
}

/** Decodes a request into dispatch inputs; throws EventError for a client's mistake. */
export function decodeRequest(
  headers: IncomingMessage["headers"],
  body: Buffer,
  spec: Pick<WebhookSpec, "metadata">,
): DispatchInit[] {
  const type = mediaType(headers["content-type"]);
  const extensions = spec.metadata;
  if (type === CE_JSON) {
    const event = parseJson(body, "CloudEvent");
    assertIncomingEvent(event);
    return [{ event: addExtensions(event, extensions) }];
  }
  if (type === CE_BATCH) {
    const parsed = parseJson(body, "batch");
    if (!Array.isArray(parsed)) throw new EventError("a CloudEvents batch must be a JSON array");
    return parsed.map((e: unknown, i) => {
      try {
        assertIncomingEvent(e);
      } catch (err) {
        throw new EventError(`batch item ${i}: ${(err as Error).message}`);
      }
      return { event: addExtensions(e, extensions) };
    });
  }
  if (headers["ce-specversion"] !== undefined) {
    const event = decodeBinary(headers, body, type);
    try {
      assertIncomingEvent(event);
    } catch (err) {
      throw new EventError(`invalid CloudEvent: ${(err as Error).message}`, { cause: err });
    }
    return [{ event: addExtensions(event, extensions) }];
  }
  let data: unknown;
  let datacontenttype: string | undefined;
  if (body.length === 0 && (type === "" || isJsonType(type))) {
    // An empty JSON (or untyped) body is an event without data: no data, no content type.
    data = undefined;
    datacontenttype = undefined;
  } else if (isJsonType(type) || (type === "" && looksLikeJson(body))) {
    data = parseJson(body, "body");
    // JSON null is no data too, rather than a body "null" or an empty JSON body downstream.
    datacontenttype = data === null ? undefined : "application/json";
    if (data === null) data = undefined;
  } else {
    const text =
      type.startsWith("text/") || type === "application/x-www-form-urlencoded" || type === ""
        ? decodeUtf8(body)
        : undefined;
    if (text !== undefined) {
      data = text;
      datacontenttype = type === "" ? "text/plain" : type;
    } else {
      // Bytes (also text that is not UTF-8, kept intact rather than replaced).
      data = new Uint8Array(body);
      datacontenttype = type === "" ? "application/octet-stream" : type;
    }
  }
  const trace = traceContext(headers);
  const ext = trace === undefined ? extensions : { ...extensions, ...trace };
  return [
    {
      ...(data === undefined ? {} : { data }),
      ...(datacontenttype === undefined ? {} : { datacontenttype }),
      ...(ext === undefined ? {} : { extensions: ext }),
    },
  ];
}

// W3C Trace Context: version-traceid-parentid-flags, lowercase hex; ff and all-zero ids are invalid.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The W3C `traceparent` (and `tracestate`) of a plain request, as the CloudEvents distributed
 * tracing extension: so a trace started by the HTTP client continues through the event.
 */
function traceContext(headers: IncomingMessage["headers"]): Record<string, string> | undefined {
  const raw = headers["traceparent"];
  const tp = typeof raw === "string" ? raw.trim() : "";
  const m = TRACEPARENT.exec(tp);
  if (m === null) return undefined;
  const [, version, traceId, parentId, , rest] = m;
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId!) || /^0+$/.test(parentId!)) return undefined;
  const out: Record<string, string> = { traceparent: tp };
  const ts = headers["tracestate"];
  if (typeof ts === "string" && ts.trim() !== "" && ts.length <= 512) out["tracestate"] = ts.trim();
  return out;
}

function looksLikeJson(body: Buffer): boolean {
  const c = body.toString("utf8", 0, 1);
  return c === "{" || c === "[";
}

function addExtensions(ev: CloudEvent, ext: Record<string, string> | undefined): CloudEvent {
  if (ext === undefined) return ev;
  const out: Record<string, unknown> = { ...ev };
  for (const [k, v] of Object.entries(ext)) if (out[k.toLowerCase()] === undefined) out[k.toLowerCase()] = v;
  return out as CloudEvent;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

export const webhookAdapter: SourceAdapter<WebhookSpec> = {
  kind: SourceKind.Webhook,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    const port = Number(spec.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      issues.push({ code: "invalid_value", path: "port", message: `port ${String(spec.port)} is out of range` });
    }
    // Each key becomes an extension attribute of every event: a bad name would fail every request.
    for (const key of Object.keys(spec.metadata ?? {})) {
      const n = key.toLowerCase();
      if (!EXTENSION_NAME.test(n) || CORE_ATTRIBUTES.has(n))
        issues.push({
          code: "invalid_value",
          path: `metadata.${key}`,
          message: `"${key}" is not a valid CloudEvents extension name (a-z, 0-9, at most 20, not a core attribute such as id)`,
        });
    }
    return issues;
  },

  async start(ctx: SourceContext, spec: WebhookSpec, dispatch: Dispatch): Promise<RunningSource> {
    const limit = spec.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD;
    const token =
      spec.authSecret === undefined ? undefined : digest(ctx.secrets.resolve(spec.authSecret, ctx.namespace));
    const hmac =
      spec.hmac === undefined
        ? undefined
        : {
            key: ctx.secrets.resolve(spec.hmac.secret, ctx.namespace),
            header: (spec.hmac.header ?? "X-Hub-Signature-256").toLowerCase(),
            algorithm: spec.hmac.algorithm ?? "sha256",
            prefix: spec.hmac.prefix ?? `${spec.hmac.algorithm ?? "sha256"}=`,
          };
    const method = spec.method ?? "POST";
    let inFlight = 0;
    let stopping = false;
    let idle: (() => void) | undefined;
    const log = ctx.logger;

    const route = {
      method,
      endpoint: spec.endpoint,
      async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
        if (stopping) {
          req.resume();
          return send(res, 503, { error: "shutting down" }, { "retry-after": "1", connection: "close" });
        }
        if (token !== undefined) {
          const auth = req.headers.authorization ?? "";
          const given = auth.startsWith("Bearer ") ? auth.slice(7) : "";
          if (!timingSafeEqual(digest(given), token)) {
            req.resume();
            return send(res, 401, { error: "missing or wrong bearer token" }, { "www-authenticate": "Bearer" });
          }
        }
        inFlight++;
        try {
          let body: Buffer;
          try {
            body = await readBody(req, limit);
          } catch (err) {
            if (err instanceof PayloadTooLarge)
              return send(res, 413, { error: `payload larger than ${limit} bytes` }, { connection: "close" });
            throw err;
          }
          if (hmac !== undefined) {
            const given = req.headers[hmac.header];
            const expected = `${hmac.prefix}${createHmac(hmac.algorithm, hmac.key).update(body).digest("hex")}`;
            // Digests of both sides have one length, so the comparison is constant-time.
            if (typeof given !== "string" || !timingSafeEqual(digest(given), digest(expected))) {
              return send(res, 401, { error: `missing or wrong ${hmac.header} signature` });
            }
          }
          let inits: DispatchInit[];
          try {
            inits = decodeRequest(req.headers, body, spec);
          } catch (err) {
            if (err instanceof EventError) {
              log.debug({ err: err.message }, "rejected malformed webhook request");
              return send(res, 400, { error: err.message });
            }
            throw err;
          }
          const ids: string[] = [];
          try {
            for (const init of inits) {
              ids.push((await dispatch(init)).id);
            }
          } catch (err) {
            if (err instanceof EventError) return send(res, 400, { error: err.message });
            if (err instanceof BusError) return send(res, 503, { error: err.message }, { "retry-after": "1" });
            if (err instanceof DeliveryError) {
              // The sink's URL and answer are internal: the runtime logs them ("event not taken"),
              // the caller gets the status only.
              return send(
                res,
                err.retriable ? 502 : 424,
                err.retriable
                  ? { error: "the sink failed to take the event; nothing was acknowledged, send again", code: err.code }
                  : {
                      error: `the sink refused the event${err.status === undefined ? "" : ` (status ${err.status})`}`,
                      code: err.code,
                    },
              );
            }
            if (err instanceof OfEventsError) return send(res, 500, { error: err.message, code: err.code });
            throw err;
          }
          return send(res, 200, { accepted: inits.length, ids });
        } finally {
          inFlight--;
          if (inFlight === 0) idle?.();
        }
      },
    };
    const port = await ctx.webhooks.register(Number(spec.port), route);
    log.info({ url: `http://127.0.0.1:${port}${spec.endpoint}`, method }, "webhook listening");
    return {
      async stop() {
        stopping = true;
        if (inFlight > 0) await new Promise<void>((r) => (idle = r));
        await ctx.webhooks.unregister(Number(spec.port), route);
      },
    };
  },
};
