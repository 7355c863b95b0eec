/**
 * Delivery of CloudEvents to HTTP sinks (binary mode by default, structured on request), encoded
 * by ./http-binding.ts (the HTTP binding, header values percent-encoded) over undici's keep-alive
 * pool. A batch (an array of events) goes as one request in the batched content mode. Every request
 * carries `Idempotency-Key` (see {@link idempotencyKey}). 2xx is done; 429, 5xx, timeouts and
 * connection errors are retried with backoff and jitter, honouring Retry-After; other 4xx are not
 * retried. A failure is a DeliveryError whose `retriable` says which it was.
 */
import { createHash } from "node:crypto";
import {
  DeliveryError,
  ErrorCode,
  OfEventsError,
  SpanKind,
  eventAttributes,
  inSpan,
  traceHeaders,
  tracing,
  type CloudEvent,
} from "@ofevents/core";
import { Agent, EnvHttpProxyAgent, type Dispatcher } from "undici";
import { encodeBatch, encodeBinary, encodeHeaderValue, encodeStructured, type HttpMessage } from "./http-binding.js";
import { DEFAULT_DELIVERY, type DeliveryPolicy } from "./policy.js";
import { withRetry, type AttemptInfo } from "./retry.js";

export interface SinkResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One event, or a batch of events delivered in one request. */
export type Payload = CloudEvent | readonly CloudEvent[];

export interface SinkClient {
  /** One attempt. Resolves with the 2xx response; rejects with a DeliveryError. */
  send(
    url: string,
    event: Payload,
    options?: { timeoutMs?: number; format?: "binary" | "structured"; signal?: AbortSignal | undefined },
  ): Promise<SinkResponse>;
  /**
   * Attempts until success, a non-retriable error, the retry budget or `signal`. Rejects with the
   * last DeliveryError; `onRetry` is called before each wait. `signal` also cancels the attempt in
   * flight; `stopRetrying` only ends the waits between attempts and prevents new ones (an attempt
   * in flight is let finish), which is how a runtime shuts down within a bounded time.
   */
  deliver(
    url: string,
    event: Payload,
    policy: DeliveryPolicy,
    options?: {
      signal?: AbortSignal | undefined;
      stopRetrying?: AbortSignal | undefined;
      /** Awaited before each attempt (a rate limit); a rejection ends the delivery with that error. */
      gate?: (() => Promise<void>) | undefined;
      onRetry?: ((info: AttemptInfo<DeliveryError>) => void) | undefined;
    },
  ): Promise<SinkResponse>;
  close(): Promise<void>;
}

/** Encodes an event as an HTTP message (CloudEvents HTTP binding, binary or structured mode); a batch in batched mode. */
export function encodeHttp(event: Payload, format: "binary" | "structured"): HttpMessage {
  if (Array.isArray(event)) return encodeBatch(event);
  const one = event as CloudEvent;
  return format === "structured" ? encodeStructured(one) : encodeBinary(one);
}

/**
 * The `Idempotency-Key` of a delivery: for one event its `source` and `id`, each percent-encoded as
 * a `ce-` header value is, joined by one space (so the same event always has the same key, on
 * every retry and redelivery); for a batch `batch-` and the SHA-256 (hex) of its members' keys
 * joined by newlines (the same members in the same order, the same key).
 */
export function idempotencyKey(event: Payload): string {
  if (!Array.isArray(event)) {
    const one = event as CloudEvent;
    return `${encodeHeaderValue(one.source)} ${encodeHeaderValue(one.id)}`;
  }
  const h = createHash("sha256");
  (event as readonly CloudEvent[]).forEach((e, i) => h.update(`${i === 0 ? "" : "\n"}${idempotencyKey(e)}`));
  return `batch-${h.digest("hex")}`;
}

function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_CONNECT_TIMEOUT"]);

export interface SinkClientOptions {
  /** Connections per origin (default 64). */
  connections?: number;
  /**
   * Where `http_proxy` / `HTTP_PROXY`, `https_proxy` / `HTTPS_PROXY` and `no_proxy` / `NO_PROXY`
   * are read (default `process.env`). With a proxy set, sinks are reached through it (HTTP
   * CONNECT), except hosts listed in the no-proxy variable.
   */
  env?: Readonly<Record<string, string | undefined>>;
}

const ANSWER_KEPT = 64 * 1024;

/** Whatever can be aborted: a request in flight. */
interface Abortable {
  abort(reason: Error): void;
}

/**
 * One abort listener per signal, whatever the number of requests sharing it (a trigger's
 * deliveries share one): a listener added and removed per request costs a walk of the
 * EventTarget's list each time.
 */
const inFlightBySignal = new WeakMap<AbortSignal, Set<Abortable>>();

function onAbort(signal: AbortSignal, request: Abortable): () => void {
  let set = inFlightBySignal.get(signal);
  if (set === undefined) {
    const members = new Set<Abortable>();
    set = members;
    inFlightBySignal.set(signal, members);
    signal.addEventListener(
      "abort",
      () => {
        for (const r of members) r.abort(signal.reason);
        members.clear();
      },
      { once: true },
    );
  }
  set.add(request);
  const members = set;
  return () => members.delete(request);
}

/** Where a URL's requests go: undici's origin and path (pathname and query), parsed once per URL. */
interface Target {
  origin: string;
  path: string;
}
const targets = new Map<string, Target>();
const TARGETS_KEPT = 1024;

function target(url: string): Target {
  let t = targets.get(url);
  if (t === undefined) {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`${url} is not an http or https URL`);
    t = { origin: u.origin, path: `${u.pathname}${u.search}` };
    if (targets.size >= TARGETS_KEPT) targets.clear();
    targets.set(url, t);
  }
  return t;
}

/** Why a POST failed: before an answer came (`connect`: refused, timed out, aborted) or while reading it. */
class PostError extends Error {
  constructor(
    readonly stage: "connect" | "read",
    readonly error: unknown,
  ) {
    super((error as Error)?.message ?? String(error));
  }
}

/**
 * POSTs through `agent` with undici's dispatch handler: the answer's first 64 KiB are kept and the
 * rest drained. undici's `request()` builds a body stream and an async resource per request; the
 * sink client's CPU per request is about two thirds of `request()`'s (bench/parts.ts, the sink part).
 */
function post(
  agent: Dispatcher,
  url: string,
  headers: Record<string, string>,
  body: string | Uint8Array,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<SinkResponse> {
  return new Promise<SinkResponse>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new PostError("connect", signal.reason));
      return;
    }
    let where: Target;
    try {
      where = target(url);
    } catch (err) {
      reject(new PostError("connect", err));
      return;
    }
    let controller: Dispatcher.DispatchController | undefined;
    let abortedWith: { reason: Error } | undefined;
    let status = 0;
    let answerHeaders: SinkResponse["headers"] = {};
    let chunks: Buffer[] | undefined;
    let first: Buffer | undefined;
    let size = 0;
    const done =
      signal === undefined
        ? undefined
        : onAbort(signal, {
            abort(reason) {
              abortedWith = { reason };
              controller?.abort(reason);
            },
          });
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (abortedWith !== undefined) c.abort(abortedWith.reason);
      },
      onResponseStart(_c, statusCode, h) {
        status = statusCode;
        answerHeaders = h;
      },
      onResponseData(_c, chunk) {
        if (size < ANSWER_KEPT) {
          if (first === undefined) first = chunk;
          else (chunks ??= [first]).push(chunk);
        }
        size += chunk.length;
      },
      onResponseEnd() {
        done?.();
        const data = chunks !== undefined ? Buffer.concat(chunks) : (first ?? Buffer.alloc(0));
        resolve({ status, headers: answerHeaders, body: data });
      },
      onResponseError(_c, err) {
        done?.();
        reject(new PostError(status === 0 ? "connect" : "read", err));
      },
    };
    const options: Dispatcher.DispatchOptions = {
      origin: where.origin,
      path: where.path,
      method: "POST",
      headers,
      body,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    };
    try {
      agent.dispatch(options, handler);
    } catch (err) {
      done?.();
      reject(new PostError("connect", err));
    }
  });
}

export function createSinkClient(options: SinkClientOptions = {}): SinkClient {
  const env = options.env ?? process.env;
  const pool = { connections: options.connections ?? 64, keepAliveTimeout: 10_000 };
  const httpProxy = env["http_proxy"] || env["HTTP_PROXY"] || "";
  const httpsProxy = env["https_proxy"] || env["HTTPS_PROXY"] || "";
  const agent: Dispatcher =
    httpProxy || httpsProxy
      ? new EnvHttpProxyAgent({ ...pool, httpProxy, httpsProxy, noProxy: env["no_proxy"] ?? env["NO_PROXY"] ?? "" })
      : new Agent(pool);

  /** One attempt; with tracing, a `POST` span whose context the request carries as `traceparent`. */
  const send: SinkClient["send"] = (url, event, o = {}) => {
    if (!tracing.enabled) return attempt(url, event, o);
    return inSpan(
      "POST",
      {
        kind: SpanKind.CLIENT,
        attributes: {
          ...(Array.isArray(event) ? { "ofevents.batch_size": event.length } : eventAttributes(event as CloudEvent)),
          "http.request.method": "POST",
          "url.full": url,
        },
      },
      async (span) => {
        try {
          const res = await attempt(url, event, o, span === undefined ? undefined : traceHeaders(span));
          span?.setAttribute("http.response.status_code", res.status);
          return res;
        } catch (err) {
          if (err instanceof DeliveryError && err.status !== undefined)
            span?.setAttribute("http.response.status_code", err.status);
          throw err;
        }
      },
    );
  };

  const attempt = async (
    url: string,
    event: Payload,
    o: Parameters<SinkClient["send"]>[2] = {},
    trace?: Record<string, string>,
  ): Promise<SinkResponse> => {
    const timeoutMs = o.timeoutMs ?? DEFAULT_DELIVERY.timeoutMs;
    let message: HttpMessage;
    try {
      message = encodeHttp(event, o.format ?? "binary");
    } catch (err) {
      throw new DeliveryError(ErrorCode.DeliveryFailed, (err as Error).message, url, {
        retriable: !(err instanceof OfEventsError),
        cause: err,
      });
    }
    const { headers, body } = message;
    headers["idempotency-key"] = idempotencyKey(event);
    if (trace !== undefined) Object.assign(headers, trace);
    let res: SinkResponse;
    try {
      res = await post(agent, url, headers, body === undefined ? "" : body, timeoutMs, o.signal);
    } catch (e) {
      const err = e instanceof PostError ? e.error : e;
      if (e instanceof PostError && e.stage === "read")
        throw new DeliveryError(ErrorCode.DeliveryFailed, `reading the answer of ${url} failed`, url, {
          retriable: true,
          cause: err,
        });
      const code = (err as { code?: string }).code ?? "";
      const timeout = TIMEOUT_CODES.has(code);
      throw new DeliveryError(
        timeout ? ErrorCode.DeliveryTimeout : ErrorCode.DeliveryFailed,
        timeout ? `no answer from ${url} within ${timeoutMs} ms` : `cannot reach ${url}: ${(err as Error).message}`,
        url,
        { retriable: true, cause: err },
      );
    }
    if (res.status >= 200 && res.status < 300) return res;
    const retriable = res.status === 429 || res.status >= 500 || res.status === 408;
    const retryAfterMs = parseRetryAfter(res.headers["retry-after"]);
    const snippet = res.body.toString("utf8", 0, Math.min(res.body.length, 200)).trim();
    throw new DeliveryError(
      retriable ? ErrorCode.DeliveryFailed : ErrorCode.DeliveryRejected,
      `${url} answered ${res.status}${snippet === "" ? "" : `: ${snippet}`}`,
      url,
      { retriable, status: res.status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) },
    );
  };

  return {
    send,
    deliver(url, event, policy, o = {}) {
      // send() rejects with DeliveryError only, so attempts need no wrapping.
      const options = { timeoutMs: policy.timeoutMs, format: policy.format, signal: o.signal };
      const gate = o.gate;
      const attempt =
        gate === undefined ? () => send(url, event, options) : () => gate().then(() => send(url, event, options));
      return withRetry<SinkResponse, DeliveryError>(attempt, policy, {
        stopRetrying: [o.signal, o.stopRetrying],
        onRetry: o.onRetry,
      });
    },
    async close() {
      await agent.close();
    },
  };
}
