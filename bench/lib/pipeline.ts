/**
 * What the pipeline scenarios (E1 embedded, E2 JetStream, E3 Kafka, E4 Dapr) share: the event
 * every load generator sends, the filter and its JS twin, the manifests of a webhook (or other)
 * source → bus → trigger → sink pipeline, the baseline's forwarder to the sink, and the
 * closed-loop (throughput) and open-loop (latency) measurements against a child process.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Agent, request } from "undici";
import { closedLoop, openLoop, type LoadResult } from "./load.js";
import { startLoopMonitor, type LoopMonitor, type LoopStats } from "./monitor.js";
import { selfCpuSeconds, type ChildProc } from "./proc.js";
import type { SinkServer } from "./sink.js";
import { median, ratio, sig, summarize } from "./stats.js";
import type { ChildHandle } from "./types.js";

/** The trigger's input filter in every pipeline scenario: half the events pass. */
export const PIPELINE_FILTER = "data.n % 2 = 0";

/** The same condition as a JS function, for the baselines. */
export function passes(data: unknown): boolean {
  const n = (data as { n?: unknown } | null)?.n;
  return typeof n === "number" && n % 2 === 0;
}

/**
 * A body of `bytes` characters (at least the ~20 of `n` and `t`): `n` and `t` as in
 * `eventBody`, padded with a string field. For the event size sweep.
 */
export function sizedBody(bytes: number): (n: number, t: number) => string {
  const shell = JSON.stringify({ n: 0, t: 0, pad: "" }).length;
  // `n` and `t` take more digits than the shell's zeros: about 16 for a send time in ms with
  // fractions and up to 6 for the index, so the body lands within a few bytes of `bytes`.
  const pad = "x".repeat(Math.max(0, bytes - shell - 22));
  return (n, t) => JSON.stringify({ n, t, pad });
}

/** The event every request carries: `n` decides the filter, `t` is the send time. */
export function eventData(n: number, t: number) {
  return {
    n,
    t,
    order: {
      id: `o-${n}`,
      amount: (n * 37) % 500,
      currency: "EUR",
      customer: { id: `c-${n % 100}`, tier: n % 3 === 0 ? "gold" : "silver" },
    },
  };
}

/** {@link eventData} as the JSON text a producer sends. */
export function eventBody(n: number, t: number): string {
  return JSON.stringify(eventData(n, t));
}

export interface PipelineManifests {
  /** Name of the EventSource and the Trigger. */
  name: string;
  /** `spec` of an EventBus named "default" (YAML flow or block text, indented by the caller); none: memory bus. */
  busSpec?: string;
  /** The EventSource's spec lines after `eventBus: default` (e.g. a `webhook:` block), indented 2. */
  sourceSpec: string;
  /** The event name in the source spec. */
  event: string;
  sinkUrl: string;
  /** Extra Trigger subscriber lines (e.g. `delivery: {...}`), indented 6. */
  subscriberExtra?: string;
}

/** EventBus (optional) + EventSource + Trigger (input filter {@link PIPELINE_FILTER}) → sink. */
export function pipelineManifests(o: PipelineManifests): string {
  const bus =
    o.busSpec === undefined
      ? ""
      : `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata:
  name: default
spec:
${o.busSpec}
---
`;
  return `${bus}apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata:
  name: ${o.name}
spec:
  eventBus: default
${o.sourceSpec}
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata:
  name: ${o.name}
spec:
  eventBus: default
  inputs:
    order:
      eventSource: ${o.name}
      event: ${o.event}
      filter: ${JSON.stringify(PIPELINE_FILTER)}
  subscribers:
    - condition: order
      sink:
        uri: ${o.sinkUrl}
${o.subscriberExtra ?? ""}`;
}

/** The webhook EventSource block of {@link pipelineManifests}: POST /orders on 127.0.0.1:port. */
export function webhookSourceSpec(port: number): string {
  return `  webhook:
    orders:
      port: "${port}"
      endpoint: /orders
      method: POST`;
}

export async function listen(server: Server, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
}

export async function closeServer(server: Server): Promise<void> {
  server.closeIdleConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** The baselines' way to the sink: undici keep-alive, a binary-mode CloudEvent per event. */
export interface Forwarder {
  /** Resolves with the sink's status, or 0 on a transport failure; never rejects. */
  send(body: string | Uint8Array): Promise<number>;
  close(): Promise<void>;
}

export function createForwarder(sinkUrl: string, connections = 64): Forwarder {
  const agent = new Agent({ connections, keepAliveTimeout: 10_000 });
  return {
    send(body) {
      return request(sinkUrl, {
        method: "POST",
        dispatcher: agent,
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-id": randomUUID(),
          "ce-source": "/bench/baseline",
          "ce-type": "io.openfunction.events.webhook",
          "ce-time": new Date().toISOString(),
        },
        body,
      }).then(
        async (res) => {
          await res.body.dump().catch(() => undefined);
          return res.statusCode;
        },
        () => 0,
      );
    },
    close: () => agent.close(),
  };
}

/** Adds the handlers that watch the child's event loop during a latency run. */
export function withLoopMonitor(handle: ChildHandle): ChildHandle {
  let monitor: LoopMonitor | undefined;
  return {
    ...handle,
    handlers: {
      ...handle.handlers,
      loopStart: async () => {
        monitor?.stop();
        monitor = startLoopMonitor();
      },
      loopRead: async () => {
        const s = monitor?.read();
        monitor?.stop();
        monitor = undefined;
        return s;
      },
    },
  };
}

export interface SingleChildOptions {
  kind: "EventSource" | "Trigger";
  /** The manifests, written to a temp folder for the run. */
  manifests: string;
  logLevel: string;
  busDriver: "direct" | "dapr";
  pubsubName?: string;
}

/**
 * One framework entrypoint (`ofevents eventsource` or `ofevents trigger`: `startSingle`, as a pod
 * runs it) as a bench child, its event loop monitored.
 */
export async function singleChild(o: SingleChildOptions): Promise<ChildHandle> {
  const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-single-"));
  await writeFile(join(dir, "pipeline.yaml"), o.manifests);
  const { startSingle } = await import("@ofevents/cli");
  const { createLogger } = await import("@ofevents/core");
  const single = await startSingle({
    kind: o.kind,
    paths: [dir],
    logger: createLogger({ level: o.logLevel, format: "json" }),
    host: "127.0.0.1",
    healthHost: "127.0.0.1",
    healthPort: 0,
    busDriver: o.busDriver,
    ...(o.pubsubName === undefined ? {} : { pubsubName: o.pubsubName }),
  });
  return withLoopMonitor({
    async stop() {
      await single.stop();
      await rm(dir, { recursive: true, force: true });
    },
  });
}

/** Rotates `xs` by `k` places: each run starts with another target. */
export function rotate<T>(xs: readonly T[], k: number): T[] {
  const n = k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

/** The processes whose CPU counts for one side (the framework may be several, daprd sidecars apart). */
export type CpuReader = () => number;

export function cpuOf(children: readonly ChildProc[]): CpuReader {
  return () => children.reduce((sum, c) => sum + c.cpuSeconds(), 0);
}

export interface ThroughputRun {
  eventsPerSec: number;
  cpuSecPer10k: number;
  /** CPU of the harness process (load generator + sink) over wall time: near 1 means harness-bound. */
  harnessCpuShare: number;
  complete: boolean;
  delivered: number;
  duplicates: number;
  failed: number;
  /** CPU s/10k of other processes watched alongside (daprd sidecars), by name. */
  otherCpuSecPer10k?: Record<string, number>;
}

export interface ThroughputOptions {
  url: string;
  count: number;
  concurrency: number;
  cpu: CpuReader;
  /** Further processes whose CPU is reported apart (not in cpuSecPer10k). */
  others?: Record<string, CpuReader>;
  /** How long to wait for the sink after the last answer (default 60 s). */
  drainTimeoutMs?: number;
  /** The request body (default `eventBody`). */
  body?: (n: number, t: number) => string;
}

/** Reads every reader of `others` now. */
function readAll(others: Record<string, CpuReader> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, f] of Object.entries(others ?? {})) out[k] = f();
  return out;
}

/**
 * Closed loop through the webhook at `url`; events/s = events sent / (first send → the later of
 * the last answer and the last sink arrival of the passing half).
 */
export async function measureThroughput(sink: SinkServer, o: ThroughputOptions): Promise<ThroughputRun> {
  sink.reset();
  const expected = Math.ceil(o.count / 2);
  const c0 = o.cpu();
  const x0 = readAll(o.others);
  const h0 = selfCpuSeconds();
  const t0 = performance.now();
  const load = await closedLoop({
    url: o.url,
    count: o.count,
    concurrency: o.concurrency,
    timeoutMs: 180_000,
    body: o.body ?? eventBody,
  });
  const loadEnd = performance.now();
  const complete = (await sink.waitFor(expected, o.drainTimeoutMs ?? 60_000)) && load.ok === o.count;
  const t1 = Math.max(loadEnd, sink.lastArrival);
  const c1 = o.cpu();
  const x1 = readAll(o.others);
  const h1 = selfCpuSeconds();
  const wallS = (t1 - t0) / 1000;
  const run: ThroughputRun = {
    eventsPerSec: (complete ? o.count : sink.received * 2) / wallS,
    cpuSecPer10k: ((c1 - c0) / o.count) * 10_000,
    harnessCpuShare: (h1 - h0) / ((performance.now() - t0) / 1000),
    complete,
    delivered: sink.received,
    duplicates: sink.received - sink.distinct,
    failed: load.failed,
  };
  if (o.others !== undefined) {
    run.otherCpuSecPer10k = Object.fromEntries(
      Object.keys(x0).map((k) => [k, Number(((((x1[k] ?? 0) - (x0[k] ?? 0)) / o.count) * 10_000).toFixed(3))]),
    );
  }
  return run;
}

export interface LatencyRun {
  p50: number;
  p99: number;
  p90: number;
  max: number;
  samples: number;
  cpuSecPer10k: number;
  maxSendLagMs: number;
  /** Event-loop delay and GC pauses inside the measured process(es) during the run. */
  loop: LoopStats | null;
}

export interface LatencyOptions {
  url: string;
  count: number;
  ratePerSec: number;
  cpu: CpuReader;
  /** Children answering loopStart / loopRead (withLoopMonitor); the first one's figures are kept. */
  monitored: readonly ChildProc[];
}

/** Open loop at a fixed rate; source → sink latency of the passing half, measured at the sink. */
export async function measureLatency(sink: SinkServer, o: LatencyOptions): Promise<LatencyRun> {
  sink.reset();
  for (const c of o.monitored) await c.call("loopStart");
  const c0 = o.cpu();
  const load: LoadResult = await openLoop({
    url: o.url,
    count: o.count,
    ratePerSec: o.ratePerSec,
    maxOutstanding: 1_000,
    timeoutMs: (o.count / o.ratePerSec) * 1000 + 30_000,
    body: eventBody,
  });
  await sink.waitFor(Math.ceil(o.count / 2), 10_000);
  const c1 = o.cpu();
  let loop: LoopStats | null = null;
  for (const [i, c] of o.monitored.entries()) {
    const s = await c.call<LoopStats>("loopRead");
    if (i === 0) loop = s;
  }
  const l = summarize(sink.latenciesMs);
  return {
    p50: l.p50,
    p90: l.p90,
    p99: l.p99,
    max: l.max,
    samples: l.count,
    cpuSecPer10k: ((c1 - c0) / o.count) * 10_000,
    maxSendLagMs: load.maxLagMs ?? 0,
    loop,
  };
}

/** Lines listing each side's throughput and latency runs (the `describe` of a pipeline scenario). */
export function describeRuns(id: string, extra: Record<string, unknown>, rate: number): string[] {
  const runs = extra["throughputRuns"] as Record<string, ThroughputRun[]> | undefined;
  if (runs === undefined) return [];
  const lines = ["", `${id} throughput runs (events/s @ CPU s/10k):`];
  for (const [name, ms] of Object.entries(runs)) {
    lines.push(
      `  ${name.padEnd(18)} ${ms.map((m) => `${Math.round(m.eventsPerSec)} @ ${m.cpuSecPer10k.toFixed(2)}${m.complete ? "" : " (incomplete)"}`).join(", ")}`,
    );
  }
  const lat = extra["latencyRuns"] as Record<string, LatencyRun[]> | undefined;
  if (lat !== undefined) {
    lines.push(
      `${id} latency runs at ${rate}/s (p50/p99 ms; in the process: event-loop delay p99/max ms, GC total/max ms):`,
    );
    const loop = (m: LatencyRun): string =>
      m.loop === null
        ? ""
        : ` (loop ${m.loop.delayP99Ms.toFixed(1)}/${m.loop.delayMaxMs.toFixed(1)}, gc ${m.loop.gcTotalMs.toFixed(0)}/${m.loop.gcMaxMs.toFixed(1)})`;
    for (const [name, ms] of Object.entries(lat)) {
      lines.push(
        `  ${name.padEnd(18)} ${ms.map((m) => `${m.p50.toFixed(2)}/${m.p99.toFixed(2)}${loop(m)}`).join(", ")}`,
      );
    }
  }
  return lines;
}

/** One system under test in a pipeline comparison. */
export interface Side {
  name: string;
  /** The webhook the load generator posts to. */
  url: string;
  /** CPU seconds of the process(es) doing the work. */
  cpu: CpuReader;
  /** Children answering loopStart / loopRead during latency runs (may be empty). */
  monitored: readonly ChildProc[];
  /** Further processes (daprd) whose CPU is reported apart. */
  others?: Record<string, CpuReader>;
}

export interface PipelineSizes {
  warmup: number;
  count: number;
  concurrency: number;
  latencyCount: number;
  /** Open-loop rate of the latency runs, events/s. */
  rate: number;
}

export interface Comparison {
  throughput: Record<string, ThroughputRun[]>;
  latency: Record<string, LatencyRun[]>;
}

/**
 * Warm-up, then `runs` closed-loop runs and `runs` open-loop runs of every side, the order
 * rotated from run to run so that drift on a shared machine hits every side alike.
 */
export async function comparePipelines(
  id: string,
  ctx: { runs: number; log(line: string): void },
  sink: SinkServer,
  sides: readonly Side[],
  s: PipelineSizes,
): Promise<Comparison> {
  const tp = (side: Side, count: number): ThroughputOptions => ({
    url: side.url,
    count,
    concurrency: s.concurrency,
    cpu: side.cpu,
    ...(side.others === undefined ? {} : { others: side.others }),
  });
  for (const side of sides) {
    ctx.log(`${id} warm-up ${side.name} (${s.warmup} events)`);
    await measureThroughput(sink, tp(side, s.warmup));
  }
  const out: Comparison = {
    throughput: Object.fromEntries(sides.map((x) => [x.name, []])),
    latency: Object.fromEntries(sides.map((x) => [x.name, []])),
  };
  for (let i = 0; i < ctx.runs; i++) {
    for (const side of rotate(sides, i)) {
      const m = await measureThroughput(sink, tp(side, s.count));
      out.throughput[side.name]!.push(m);
      ctx.log(
        `${id} throughput ${side.name} run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k${m.complete ? "" : " (INCOMPLETE)"}`,
      );
    }
  }
  for (let i = 0; i < ctx.runs; i++) {
    for (const side of rotate(sides, i + 1)) {
      const m = await measureLatency(sink, {
        url: side.url,
        count: s.latencyCount,
        ratePerSec: s.rate,
        cpu: side.cpu,
        monitored: side.monitored,
      });
      out.latency[side.name]!.push(m);
      ctx.log(
        `${id} latency ${side.name} run ${i + 1} at ${s.rate}/s: p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms`,
      );
    }
  }
  return out;
}

export interface SweepSize {
  /** Request body size in bytes. */
  bytes: number;
  /** Events per closed-loop run at this size. */
  count: number;
}

export interface SweepPoint {
  bytes: number;
  count: number;
  /** Closed-loop runs by side name. */
  runs: Record<string, ThroughputRun[]>;
}

/**
 * The event size sweep: at each size, `runs` closed-loop runs of every side (order rotated as in
 * `comparePipelines`), on sides that are already warm.
 */
export async function sweepSizes(
  id: string,
  ctx: { runs: number; log(line: string): void },
  sink: SinkServer,
  sides: readonly Side[],
  sizes: readonly SweepSize[],
  concurrency: number,
): Promise<SweepPoint[]> {
  const out: SweepPoint[] = [];
  for (const size of sizes) {
    const body = sizedBody(size.bytes);
    const point: SweepPoint = { ...size, runs: Object.fromEntries(sides.map((x) => [x.name, []])) };
    for (let i = 0; i < ctx.runs; i++) {
      for (const side of rotate(sides, i)) {
        const m = await measureThroughput(sink, { url: side.url, count: size.count, concurrency, cpu: side.cpu, body });
        point.runs[side.name]!.push(m);
        ctx.log(
          `${id} size ${size.bytes} B ${side.name} run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k${m.complete ? "" : " (INCOMPLETE)"}`,
        );
      }
    }
    out.push(point);
  }
  return out;
}

/** The sweep as lines: per size, the median events/s and CPU s/10k of each side and the ratio. */
export function describeSweep(
  id: string,
  points: readonly SweepPoint[] | undefined,
  names: [string, string],
): string[] {
  if (points === undefined || points.length === 0) return [];
  const med = (ms: ThroughputRun[] | undefined, f: (m: ThroughputRun) => number): number =>
    ms === undefined || ms.length === 0 ? NaN : median(ms.map(f));
  const lines = ["", `${id} event size sweep (closed loop, median of runs: events/s @ CPU s/10k, MiB/s of bodies in):`];
  for (const p of points) {
    const [a, b] = names.map((n) => p.runs[n]);
    const ea = med(a, (m) => m.eventsPerSec);
    const eb = med(b, (m) => m.eventsPerSec);
    const mib = (e: number): string => ((e * p.bytes) / 1_048_576).toFixed(1);
    const incomplete = [...(a ?? []), ...(b ?? [])].some((m) => !m.complete) ? "  (some runs incomplete)" : "";
    lines.push(
      `  ${`${p.bytes} B`.padEnd(9)} ${names[0]} ${Math.round(ea)} @ ${med(a, (m) => m.cpuSecPer10k).toFixed(2)} (${mib(ea)} MiB/s), ` +
        `${names[1]} ${Math.round(eb)} @ ${med(b, (m) => m.cpuSecPer10k).toFixed(2)} (${mib(eb)} MiB/s), ratio ${(ea / eb).toFixed(2)}${incomplete}`,
    );
  }
  return lines;
}

/**
 * Fills the figures of `r` from a two-sided comparison (`framework` and `baseline` by name):
 * medians of the runs, ratio, and the notes every pipeline scenario gives.
 */
export function fillFromComparison(
  r: {
    eventsPerSec: number | null;
    baselineEventsPerSec: number | null;
    ratio: number | null;
    cpuSecPer10k: number | null;
    baselineCpuSecPer10k: number | null;
    p50Ms: number | null;
    p99Ms: number | null;
    baselineP50Ms: number | null;
    baselineP99Ms: number | null;
    notes: string[];
  },
  c: Comparison,
  names: { framework: string; baseline: string },
): void {
  const med = (xs: number[]): number => sig(median(xs), 4);
  const F = c.throughput[names.framework] ?? [];
  const B = c.throughput[names.baseline] ?? [];
  const LF = c.latency[names.framework] ?? [];
  const LB = c.latency[names.baseline] ?? [];
  r.eventsPerSec = med(F.map((m) => m.eventsPerSec));
  r.baselineEventsPerSec = med(B.map((m) => m.eventsPerSec));
  r.ratio = sig(ratio(r.eventsPerSec, r.baselineEventsPerSec) ?? NaN, 3);
  r.cpuSecPer10k = med(F.map((m) => m.cpuSecPer10k));
  r.baselineCpuSecPer10k = med(B.map((m) => m.cpuSecPer10k));
  if (LF.length > 0 && LB.length > 0) {
    r.p50Ms = med(LF.map((m) => m.p50));
    r.p99Ms = med(LF.map((m) => m.p99));
    r.baselineP50Ms = med(LB.map((m) => m.p50));
    r.baselineP99Ms = med(LB.map((m) => m.p99));
  }
  const all = [...F, ...B];
  if (all.some((m) => !m.complete))
    r.notes.push("some throughput runs did not deliver every passing event (see extra.throughputRuns)");
  if (all.some((m) => m.duplicates > 0)) r.notes.push("duplicates arrived at the sink");
  const harness = median(B.map((m) => m.harnessCpuShare));
  if (harness > 0.85) {
    r.notes.push(
      `baseline runs kept the harness process ${Math.round(harness * 100)}% busy: the baseline figure may be harness-bound (ratio then flatters the framework)`,
    );
  }
}
