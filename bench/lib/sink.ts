/**
 * The HTTP sink every scenario delivers to, in the harness process, so that the send time a load
 * generator puts in an event (`t`, from `performance.now()`) and the arrival time are read on the
 * same clock. It counts the events that arrive (each member of a batch request too), the distinct
 * `n` values (duplicates show), and the source → sink latency of each event. Mode `stall` takes requests and never answers (until
 * closed): a sink that hangs.
 */
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";

export interface SinkServer {
  readonly url: string;
  /** Events received since the last reset (a request each, or each member of a batch request). */
  readonly received: number;
  /** Distinct `n` values received since the last reset. */
  readonly distinct: number;
  /** Whether an event with this `n` arrived since the last reset (the fault runs count losses by `n`). */
  has(n: number): boolean;
  /** `performance.now()` of the latest arrival. */
  readonly lastArrival: number;
  /** `performance.now()` of the first arrival since the last reset (0: none yet). */
  readonly firstArrival: number;
  /** Source → sink latencies (ms) since the last reset, for events that carried `t`. */
  readonly latenciesMs: readonly number[];
  reset(): void;
  /** Resolves true once `count` events arrived since the last reset, false after `timeoutMs`. */
  waitFor(count: number, timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export async function startSink(options: { mode?: "ok" | "stall" } = {}): Promise<SinkServer> {
  const stall = options.mode === "stall";
  let received = 0;
  let lastArrival = 0;
  let firstArrival = 0;
  let latencies: number[] = [];
  let seen = new Set<number>();
  let waiter: { count: number; resolve: (ok: boolean) => void } | undefined;
  const held = new Set<ServerResponse>();
  const sockets = new Set<Socket>();

  const onBody = (res: ServerResponse, body: Buffer): void => {
    const now = performance.now();
    lastArrival = now;
    if (firstArrival === 0) firstArrival = now;
    const count = (data: { n?: unknown; t?: unknown } | null | undefined): void => {
      if (typeof data?.n === "number") seen.add(data.n);
      if (typeof data?.t === "number") latencies.push(now - data.t);
    };
    // Binary-mode CloudEvents carry the data as the body: { n, t, ... }. A batch
    // (application/cloudevents-batch+json) is an array of structured events: each member counts.
    let events = 1;
    if (body.length > 0 && (body[0] === 0x7b || body[0] === 0x5b)) {
      try {
        const parsed = JSON.parse(body.toString("utf8")) as unknown;
        if (Array.isArray(parsed)) {
          events = parsed.length;
          for (const e of parsed) count((e as { data?: { n?: unknown; t?: unknown } }).data);
        } else count(parsed as { n?: unknown; t?: unknown });
      } catch {
        // Not ours to judge: count it and answer.
      }
    }
    received += events;
    if (waiter !== undefined && received >= waiter.count) {
      const w = waiter;
      waiter = undefined;
      w.resolve(true);
    }
    if (stall) {
      held.add(res);
      res.on("close", () => held.delete(res));
      return;
    }
    res.writeHead(200, { "content-length": "0" }).end();
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => onBody(res, Buffer.concat(chunks)));
  });
  server.keepAliveTimeout = 30_000;
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/sink`,
    get received() {
      return received;
    },
    get distinct() {
      return seen.size;
    },
    has(n) {
      return seen.has(n);
    },
    get lastArrival() {
      return lastArrival;
    },
    get firstArrival() {
      return firstArrival;
    },
    get latenciesMs() {
      return latencies;
    },
    reset() {
      received = 0;
      lastArrival = 0;
      firstArrival = 0;
      latencies = [];
      seen = new Set();
    },
    waitFor(count, timeoutMs) {
      if (received >= count) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          resolve(false);
        }, timeoutMs);
        waiter = {
          count,
          resolve: (ok) => {
            clearTimeout(timer);
            resolve(ok);
          },
        };
      });
    },
    async close() {
      waiter?.resolve(false);
      for (const res of held) res.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
