/**
 * Load generators over undici keep-alive connections, bounded in count AND time: both stop by
 * themselves. Traffic goes only to 127.0.0.1 (the URL is checked).
 *
 * - `closedLoop`: `concurrency` requests in flight, each sent when the previous one of its slot
 *   answered: the throughput of the system.
 * - `openLoop`: requests sent at a fixed rate whatever the answers (up to `maxOutstanding` in
 *   flight): latency at a given load. The body is built at the moment of sending, so it can carry
 *   the send time.
 */
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Pool } from "undici";

export interface LoadOptions {
  url: string;
  /** Requests to send. */
  count: number;
  /** Stop sending after this long, and stop waiting for answers shortly after. */
  timeoutMs: number;
  /** Body of request `i`, built when it is sent (`sentAt` is `performance.now()`). */
  body: (i: number, sentAt: number) => string;
  headers?: Record<string, string>;
}

export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  /** Answers by status ("error" for a transport failure). */
  statuses: Record<string, number>;
  elapsedMs: number;
  /** The time bound ended the loop before `count` was sent or answered. */
  timedOut: boolean;
  /** Open loop: how late the latest send was against its schedule, in ms. */
  maxLagMs?: number;
  /** Open loop: sends that waited because `maxOutstanding` requests were in flight. */
  throttled?: number;
}

function localTarget(url: string): { origin: string; path: string } {
  const u = new URL(url);
  if (u.hostname !== "127.0.0.1") throw new Error(`load generator: only 127.0.0.1 is allowed, got ${u.hostname}`);
  return { origin: u.origin, path: `${u.pathname}${u.search}` };
}

function tally(r: LoadResult, status: number | "error"): void {
  r.statuses[status] = (r.statuses[status] ?? 0) + 1;
  if (typeof status === "number" && status >= 200 && status < 300) r.ok++;
  else r.failed++;
}

export async function closedLoop(o: LoadOptions & { concurrency: number }): Promise<LoadResult> {
  const { origin, path } = localTarget(o.url);
  const requestTimeout = Math.min(o.timeoutMs, 30_000);
  const pool = new Pool(origin, {
    connections: o.concurrency,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: requestTimeout,
    bodyTimeout: requestTimeout,
  });
  const headers = { "content-type": "application/json", ...o.headers };
  const r: LoadResult = { sent: 0, ok: 0, failed: 0, statuses: {}, elapsedMs: 0, timedOut: false };
  const t0 = performance.now();
  const deadline = t0 + o.timeoutMs;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (next >= o.count) return;
      if (performance.now() > deadline) {
        r.timedOut = true;
        return;
      }
      const i = next++;
      r.sent++;
      try {
        const res = await pool.request({ path, method: "POST", headers, body: o.body(i, performance.now()) });
        await res.body.dump();
        tally(r, res.statusCode);
      } catch {
        tally(r, "error");
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, worker));
  } finally {
    r.elapsedMs = performance.now() - t0;
    await pool.destroy();
  }
  return r;
}

export async function openLoop(o: LoadOptions & { ratePerSec: number; maxOutstanding: number }): Promise<LoadResult> {
  const { origin, path } = localTarget(o.url);
  const requestTimeout = Math.min(o.timeoutMs, 30_000);
  const pool = new Pool(origin, {
    connections: Math.min(o.maxOutstanding, 64),
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: requestTimeout,
    bodyTimeout: requestTimeout,
  });
  const headers = { "content-type": "application/json", ...o.headers };
  const r: LoadResult = {
    sent: 0,
    ok: 0,
    failed: 0,
    statuses: {},
    elapsedMs: 0,
    timedOut: false,
    maxLagMs: 0,
    throttled: 0,
  };
  const interval = 1000 / o.ratePerSec;
  const t0 = performance.now();
  const deadline = t0 + o.timeoutMs;
  let outstanding = 0;
  let drained: (() => void) | undefined;
  const send = (i: number): void => {
    outstanding++;
    r.sent++;
    pool
      .request({ path, method: "POST", headers, body: o.body(i, performance.now()) })
      .then(
        async (res) => {
          await res.body.dump();
          tally(r, res.statusCode);
        },
        () => tally(r, "error"),
      )
      .catch(() => tally(r, "error"))
      .finally(() => {
        outstanding--;
        drained?.();
      });
  };
  try {
    let i = 0;
    while (i < o.count) {
      const now = performance.now();
      if (now > deadline) {
        r.timedOut = true;
        break;
      }
      // Send everything that is due; timers fire at best every millisecond.
      while (i < o.count && t0 + i * interval <= now) {
        if (outstanding >= o.maxOutstanding) {
          r.throttled!++;
          break;
        }
        r.maxLagMs = Math.max(r.maxLagMs!, now - (t0 + i * interval));
        send(i++);
      }
      const due = t0 + i * interval - performance.now();
      await sleep(Math.max(1, Math.min(due, 50)));
    }
    // Wait for the answers, bounded.
    const answerDeadline = Math.max(deadline, performance.now()) + 5_000;
    while (outstanding > 0 && performance.now() < answerDeadline) {
      await Promise.race([new Promise<void>((resolve) => (drained = resolve)), sleep(50)]);
    }
    if (outstanding > 0) r.timedOut = true;
  } finally {
    r.elapsedMs = performance.now() - t0;
    await pool.destroy();
  }
  return r;
}

// Ports below the ephemeral range (see test/helpers/ports.ts, copied beside bench/ for the children).
export { freePort } from "../../test/helpers/ports.js";

/**
 * Open loop over any client: calls `send(i, sentAt)` at a fixed rate whatever the answers (up to
 * `maxOutstanding` pending), bounded by `count` and `timeoutMs`. For sources that are not HTTP
 * (a Kafka producer).
 */
export async function openLoopCalls(o: {
  count: number;
  ratePerSec: number;
  maxOutstanding: number;
  timeoutMs: number;
  send: (i: number, sentAt: number) => Promise<void>;
}): Promise<LoadResult> {
  const r: LoadResult = {
    sent: 0,
    ok: 0,
    failed: 0,
    statuses: {},
    elapsedMs: 0,
    timedOut: false,
    maxLagMs: 0,
    throttled: 0,
  };
  const interval = 1000 / o.ratePerSec;
  const t0 = performance.now();
  const deadline = t0 + o.timeoutMs;
  let outstanding = 0;
  const settle = (status: number | "error"): void => {
    outstanding--;
    tally(r, status);
  };
  let i = 0;
  while (i < o.count) {
    const now = performance.now();
    if (now > deadline) {
      r.timedOut = true;
      break;
    }
    while (i < o.count && t0 + i * interval <= now) {
      if (outstanding >= o.maxOutstanding) {
        r.throttled!++;
        break;
      }
      r.maxLagMs = Math.max(r.maxLagMs!, now - (t0 + i * interval));
      outstanding++;
      r.sent++;
      o.send(i++, performance.now()).then(
        () => settle(200),
        () => settle("error"),
      );
    }
    await sleep(Math.max(1, Math.min(t0 + i * interval - performance.now(), 50)));
  }
  const answerDeadline = Math.max(deadline, performance.now()) + 5_000;
  while (outstanding > 0 && performance.now() < answerDeadline) await sleep(10);
  if (outstanding > 0) r.timedOut = true;
  r.elapsedMs = performance.now() - t0;
  return r;
}
