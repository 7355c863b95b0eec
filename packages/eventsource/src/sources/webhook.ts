/**
 * The webhook source: an HTTP endpoint per event (Argo Events' webhook fields). It accepts
 * CloudEvents in binary, structured and batch mode, keeping their attributes, and plain JSON,
 * text or bytes, which it wraps in a new CloudEvent. It answers 2xx only after the bus or sync
 * sink took every event of the request; 400 with the reason for malformed input, 401 without the
 * right bearer token or signature (a `preset` checks GitHub's, GitLab's or Stripe's own and takes
 * the event's type and id from the sender), 405 for a wrong method, 413 above the size limit,
 * 415 for an unsupported CloudEvents mode, 431 for headers above 16 KiB, 503 (with Retry-After) when the bus cannot take
 * the event now, 502/424 when a sync sink failed or refused it (without the sink's URL or answer).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import {
  CORE_ATTRIBUTES,
  EXTENSION_NAME,
  EventError,
  MAX_JSON_DEPTH,
  SourceKind,
  decodeUtf8,
  isJsonMediaType as isJsonType,
  parseJsonBody as parseJson,
  type CloudEvent,
  type ValidationIssue,
  type WebhookSpec,
  WebhookSender,
  mediaType,
} from "@ofevents/core";
import { httpMode, toEvent } from "@ofevents/delivery";
import { DEFAULT_MAX_PAYLOAD, serveIngest, type Refusal } from "../http-ingest.js";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";

export { DEFAULT_MAX_PAYLOAD };

export { MAX_JSON_DEPTH };

/** Decodes a request into dispatch inputs; throws EventError for a client's mistake. */
export function decodeRequest(
  headers: IncomingMessage["headers"],
  body: Buffer,
  spec: Pick<WebhookSpec, "metadata">,
): DispatchInit[] {
  const extensions = spec.metadata;
  if (httpMode(headers) !== undefined) {
    // The CloudEvents HTTP binding, decoded by the same code as everywhere else (delivery `toEvent`).
    const decoded = toEvent(headers, body);
    return (Array.isArray(decoded) ? decoded : [decoded]).map((e) => ({ event: addExtensions(e, extensions) }));
  }
  return [decodePlain(headers, body, extensions)];
}

/** A request that is not a CloudEvent: its body becomes the data of a new event. */
function decodePlain(
  headers: IncomingMessage["headers"],
  body: Buffer,
  extensions: Record<string, string> | undefined,
): DispatchInit {
  const type = mediaType(headers["content-type"]);
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
  // Assigned rather than spread into a literal: the spreads took V8's slow path (about 1 % of a
  // webhook → memory bus → sink pipeline's CPU).
  const init: DispatchInit = {};
  if (data !== undefined) init.data = data;
  if (datacontenttype !== undefined) init.datacontenttype = datacontenttype;
  if (ext !== undefined) init.extensions = ext;
  return init;
}

/** Default `preset.tolerance`: Stripe's own libraries accept a signature up to 5 minutes old. */
export const DEFAULT_STRIPE_TOLERANCE_S = 300;

/** A sender's event name as a CloudEvent type segment: letters, digits, `.`, `_`, `-`. */
const TYPE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
/** A sender's delivery id, used as the CloudEvent id. */
const SENDER_ID = /^[\x21-\x7e]{1,200}$/;

/** The outcome of checking a request against a preset: the event's type and id, or why it is refused. */
export type PresetCheck =
  { ok: true; type: string; id: string | undefined; data: unknown } | { ok: false; status: 400 | 401; error: string };

function header(headers: IncomingMessage["headers"], name: string): string | undefined {
  const v = headers[name];
  return typeof v === "string" ? v : undefined;
}

/** Constant-time equality of two strings of any lengths (their digests are compared). */
function sameText(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * Checks a request from a known sender (docs/eventsources/webhook.md, "Presets"): the signature
 * over the body exactly as received, in constant time; then the event's type and id from the
 * sender's headers (GitHub, GitLab) or JSON body (Stripe). `nowS` is the current Unix time.
 */
export function checkPreset(
  preset: { sender: WebhookSender; tolerance?: number | undefined },
  secret: string,
  headers: IncomingMessage["headers"],
  body: Buffer,
  nowS: number,
): PresetCheck {
  switch (preset.sender) {
    case WebhookSender.GitHub: {
      const given = header(headers, "x-hub-signature-256");
      const expected = `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
      if (given === undefined || !sameText(given, expected))
        return { ok: false, status: 401, error: "missing or wrong X-Hub-Signature-256 signature" };
      const event = header(headers, "x-github-event");
      if (event === undefined || !TYPE_SEGMENT.test(event))
        return { ok: false, status: 400, error: "missing or invalid X-GitHub-Event header" };
      const id = header(headers, "x-github-delivery");
      return { ok: true, type: `com.github.${event}`, id: validId(id), data: undefined };
    }
    case WebhookSender.GitLab: {
      const given = header(headers, "x-gitlab-token");
      if (given === undefined || !sameText(given, secret))
        return { ok: false, status: 401, error: "missing or wrong X-Gitlab-Token" };
      const event = header(headers, "x-gitlab-event");
      // "Push Hook", "Merge Request Hook" -> push, merge_request.
      const name = event
        ?.trim()
        .replace(/\s+hook$/i, "")
        .toLowerCase()
        .replace(/\s+/g, "_");
      if (name === undefined || !TYPE_SEGMENT.test(name))
        return { ok: false, status: 400, error: "missing or invalid X-Gitlab-Event header" };
      return {
        ok: true,
        type: `com.gitlab.${name}`,
        id: validId(header(headers, "x-gitlab-event-uuid")),
        data: undefined,
      };
    }
    case WebhookSender.Stripe: {
      const sig = header(headers, "stripe-signature");
      if (sig === undefined) return { ok: false, status: 401, error: "missing Stripe-Signature" };
      let t: string | undefined;
      const v1: string[] = [];
      for (const part of sig.split(",")) {
        const eq = part.indexOf("=");
        if (eq < 0) continue;
        const k = part.slice(0, eq).trim();
        const v = part.slice(eq + 1).trim();
        if (k === "t") t = v;
        else if (k === "v1") v1.push(v);
      }
      if (t === undefined || !/^\d{1,12}$/.test(t) || v1.length === 0)
        return { ok: false, status: 401, error: "Stripe-Signature has no timestamp or no v1 signature" };
      const expected = createHmac("sha256", secret)
        .update(Buffer.concat([Buffer.from(`${t}.`), body]))
        .digest("hex");
      // Every v1 is compared (Stripe sends several while a secret is rolled), each in constant time.
      let match = false;
      for (const v of v1) if (sameText(v, expected)) match = true;
      if (!match) return { ok: false, status: 401, error: "no Stripe-Signature v1 signature matches" };
      const tolerance = preset.tolerance ?? DEFAULT_STRIPE_TOLERANCE_S;
      if (Math.abs(nowS - Number(t)) > tolerance)
        return { ok: false, status: 401, error: `Stripe-Signature timestamp is more than ${tolerance}s from now` };
      let data: unknown;
      try {
        data = parseJson(body, "body");
      } catch (err) {
        if (err instanceof EventError) return { ok: false, status: 400, error: err.message };
        throw err;
      }
      const o =
        data !== null && typeof data === "object" && !Array.isArray(data) ? (data as Record<string, unknown>) : {};
      if (typeof o["type"] !== "string" || !TYPE_SEGMENT.test(o["type"]))
        return { ok: false, status: 400, error: 'the body has no valid "type"' };
      return {
        ok: true,
        type: `com.stripe.${o["type"]}`,
        id: typeof o["id"] === "string" ? validId(o["id"]) : undefined,
        data,
      };
    }
  }
}

function validId(id: string | undefined): string | undefined {
  return id !== undefined && SENDER_ID.test(id) ? id : undefined;
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
    if (spec.preset !== undefined && (spec.hmac !== undefined || spec.authSecret !== undefined))
      issues.push({
        code: "invalid_value",
        path: "preset",
        message: "preset checks the sender's own signature: leave out hmac and authSecret",
      });
    return issues;
  },

  async start(ctx: SourceContext, spec: WebhookSpec, dispatch: Dispatch): Promise<RunningSource> {
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
    const preset =
      spec.preset === undefined
        ? undefined
        : { ...spec.preset, key: ctx.secrets.resolve(spec.preset.secret, ctx.namespace) };

    return serveIngest(
      ctx,
      {
        port: Number(spec.port),
        endpoint: spec.endpoint,
        method: spec.method ?? "POST",
        limit: spec.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD,
        what: "webhook",
        admit(req) {
          if (token === undefined) return undefined;
          const auth = req.headers.authorization ?? "";
          const given = auth.startsWith("Bearer ") ? auth.slice(7) : "";
          if (timingSafeEqual(digest(given), token)) return undefined;
          return {
            status: 401,
            body: { error: "missing or wrong bearer token" },
            headers: { "www-authenticate": "Bearer" },
            reason: "unauthorized",
          };
        },
        decode(req, body): DispatchInit[] | Refusal {
          if (hmac !== undefined) {
            const given = req.headers[hmac.header];
            const expected = `${hmac.prefix}${createHmac(hmac.algorithm, hmac.key).update(body).digest("hex")}`;
            // Digests of both sides have one length, so the comparison is constant-time.
            if (typeof given !== "string" || !timingSafeEqual(digest(given), digest(expected)))
              return {
                status: 401,
                body: { error: `missing or wrong ${hmac.header} signature` },
                reason: "unauthorized",
              };
          }
          if (preset === undefined) return decodeRequest(req.headers, body, spec);
          const check = checkPreset(preset, preset.key, req.headers, body, Math.floor(Date.now() / 1000));
          if (!check.ok)
            return {
              status: check.status,
              body: { error: check.error },
              reason: check.status === 401 ? "unauthorized" : undefined,
            };
          // The sender's request is never read as a CloudEvent: its body is the data.
          const plain = decodePlain(req.headers, body, spec.metadata);
          return [
            {
              ...plain,
              ...(check.data === undefined ? {} : { data: check.data, datacontenttype: "application/json" }),
              type: check.type,
              id: check.id,
            },
          ];
        },
      },
      dispatch,
    );
  },
};
