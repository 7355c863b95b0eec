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
  DeliveryError,
  EventError,
  MAX_JSON_DEPTH,
  OfEventsError,
  SourceKind,
  decodeUtf8,
  isJsonMediaType as isJsonType,
  parseJsonBody as parseJson,
  type CloudEvent,
  type ValidationIssue,
  type WebhookSpec,
  mediaType,
} from "@ofevents/core";
import { httpMode, toEvent } from "@ofevents/delivery";
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

export { MAX_JSON_DEPTH };

/** Decodes a request into dispatch inputs; throws EventError for a client's mistake. */
export function decodeRequest(
  headers: IncomingMessage["headers"],
  body: Buffer,
  spec: Pick<WebhookSpec, "metadata">,
): DispatchInit[] {
  const type = mediaType(headers["content-type"]);
  const extensions = spec.metadata;
  if (httpMode(headers) !== undefined) {
    // The CloudEvents HTTP binding, decoded by the same code as everywhere else (delivery `toEvent`).
    const decoded = toEvent(headers, body);
    return (Array.isArray(decoded) ? decoded : [decoded]).map((e) => ({ event: addExtensions(e, extensions) }));
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
