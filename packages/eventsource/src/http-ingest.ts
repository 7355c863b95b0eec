/**
 * One HTTP endpoint on the shared webhook listeners that turns requests into dispatches, with the
 * webhook source's guarantee: 2xx only after the bus or sync sink took every event of the
 * request; 413 above the size limit, 400 for a malformed request, 503 (with Retry-After) while the
 * bus cannot take the event or the source is stopping, 502/424 when a sync sink failed or refused
 * it (without the sink's URL or answer). Used by the webhook and generic sources.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { BusError, DeliveryError, EventError, OfEventsError, sendJson } from "@ofevents/core";
import type { Dispatch, DispatchInit, RejectReason, RunningSource, SourceContext } from "./types.js";

/** The default largest body, in bytes. */
export const DEFAULT_MAX_PAYLOAD = 1_048_576;

/** An answer that refuses a request before anything is dispatched. */
export interface Refusal {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string> | undefined;
  /** Counted as a rejected request (metrics) when set. */
  reason?: RejectReason | undefined;
}

export interface IngestOptions {
  port: number;
  endpoint: string;
  method: string;
  /** Largest body in bytes; more is answered 413. */
  limit: number;
  /** What the log calls the endpoint ("webhook", "generic source"). */
  what: string;
  /** Checked before the body is read (a bearer token): a refusal, or undefined to go on. */
  admit?: ((req: IncomingMessage) => Refusal | undefined) | undefined;
  /** The request's events, or a refusal. Throws an EventError for a malformed request (400). */
  decode(req: IncomingMessage, body: Buffer): DispatchInit[] | Refusal;
  /** More fields for the "listening" log line. */
  logFields?: Record<string, unknown> | undefined;
}

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

function isRefusal(r: DispatchInit[] | Refusal): r is Refusal {
  return !Array.isArray(r);
}

/**
 * Registers the endpoint on `ctx.webhooks` and serves it. Resolves once it listens; `stop()`
 * answers 503 to new requests, waits for those in flight and unregisters the route.
 */
export async function serveIngest(ctx: SourceContext, o: IngestOptions, dispatch: Dispatch): Promise<RunningSource> {
  let inFlight = 0;
  let stopping = false;
  let idle: (() => void) | undefined;
  const log = ctx.logger;
  const refuse = (res: ServerResponse, r: Refusal): void => {
    if (r.reason !== undefined) ctx.rejected(r.reason);
    sendJson(res, r.status, r.body, r.headers);
  };

  const route = {
    method: o.method,
    endpoint: o.endpoint,
    async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      if (stopping) {
        req.resume();
        return sendJson(res, 503, { error: "shutting down" }, { "retry-after": "1", connection: "close" });
      }
      const early = o.admit?.(req);
      if (early !== undefined) {
        req.resume();
        return refuse(res, early);
      }
      inFlight++;
      try {
        let body: Buffer;
        try {
          body = await readBody(req, o.limit);
        } catch (err) {
          if (err instanceof PayloadTooLarge)
            return sendJson(res, 413, { error: `payload larger than ${o.limit} bytes` }, { connection: "close" });
          throw err;
        }
        let inits: DispatchInit[];
        try {
          const decoded = o.decode(req, body);
          if (isRefusal(decoded)) {
            log.debug({ status: decoded.status, err: decoded.body["error"] }, `rejected ${o.what} request`);
            return refuse(res, decoded);
          }
          inits = decoded;
        } catch (err) {
          if (err instanceof EventError) {
            log.debug({ err: err.message }, `rejected malformed ${o.what} request`);
            return sendJson(res, 400, { error: err.message });
          }
          throw err;
        }
        const ids: string[] = [];
        try {
          for (const init of inits) {
            ids.push((await dispatch(init)).id);
          }
        } catch (err) {
          if (err instanceof EventError) return sendJson(res, 400, { error: err.message });
          if (err instanceof BusError) return sendJson(res, 503, { error: err.message }, { "retry-after": "1" });
          if (err instanceof DeliveryError) {
            // The sink's URL and answer are internal: the runtime logs them ("event not taken"),
            // the caller gets the status only.
            return sendJson(
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
          if (err instanceof OfEventsError) return sendJson(res, 500, { error: err.message, code: err.code });
          throw err;
        }
        return sendJson(res, 200, { accepted: inits.length, ids });
      } finally {
        inFlight--;
        if (inFlight === 0) idle?.();
      }
    },
  };
  const port = await ctx.webhooks.register(o.port, route);
  log.info({ url: `http://127.0.0.1:${port}${o.endpoint}`, method: o.method, ...o.logFields }, `${o.what} listening`);
  return {
    async stop() {
      stopping = true;
      if (inFlight > 0) await new Promise<void>((r) => (idle = r));
      await ctx.webhooks.unregister(o.port, route);
    },
  };
}
