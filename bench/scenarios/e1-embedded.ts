/**
 * E1 embedded: load generator → webhook source → memory bus → trigger (input filter
 * `data.n % 2 = 0`, half pass) → HTTP sink, run by `startEmbedded` (what `ofevents run` runs) from
 * manifests in a temp folder, in a child process of its own.
 *
 * Baseline, same shape: a minimal Node HTTP server that reads the JSON body, applies the same
 * condition as a JS function and forwards the passing events with undici keep-alive as
 * binary-mode CloudEvents to the same sink, answering once the sink did.
 *
 * Throughput: closed loop (bounded concurrency), events/s = events sent / (first send → the later
 * of the last answer and the last sink arrival), so a queue cannot flatter it. Latency: open loop
 * at 1,000 events/s, source → sink, measured at the sink against the send time carried in the
 * event. CPU: /proc/<pid>/stat of the child over the closed-loop window.
 *
 * Ablation: the same pipeline, started the same way, with the expression engine swapped for the
 * JS predicate, so the JSONata filter's cost shows in place. Its share of the CPU is judged per
 * round (the two runs of a round are at most one run apart in time), median over the rounds.
 */
import { createServer } from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExpressionEngine } from "@ofevents/core";
import { freePort } from "../lib/load.js";
import {
  PIPELINE_FILTER,
  closeServer,
  createForwarder,
  describeRuns,
  listen,
  measureLatency,
  measureThroughput,
  passes,
  pipelineManifests,
  rotate,
  webhookSourceSpec,
  withLoopMonitor,
  type LatencyRun,
  type ThroughputRun,
} from "../lib/pipeline.js";
import type { ChildProc } from "../lib/proc.js";
import { startSink } from "../lib/sink.js";
import { median, ratio, sig } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

export const E1_FILTER = PIPELINE_FILTER;
const RATE = 1000;

interface Sizes {
  warmup: number;
  count: number;
  concurrency: number;
  latencyCount: number;
}

const FULL: Sizes = { warmup: 4_000, count: 20_000, concurrency: 64, latencyCount: 5_000 };
const QUICK: Sizes = { warmup: 100, count: 300, concurrency: 16, latencyCount: 200 };

function manifests(port: number, sinkUrl: string): string {
  return pipelineManifests({ name: "bench", sourceSpec: webhookSourceSpec(port), event: "orders", sinkUrl });
}

/** An engine that runs `expr` as the JS function `pred` and everything else through `real`. */
function jsFilterEngine(real: ExpressionEngine, expr: string, pred: (input: unknown) => boolean): ExpressionEngine {
  return {
    compile: (e) => (e === expr ? { source: e, evaluate: async (input) => pred(input) } : real.compile(e)),
    evaluate: async (e, input, b) => (e === expr ? pred(input) : real.evaluate(e, input, b)),
    evaluateBoolean: async (e, input, b) => (e === expr ? pred(input) : real.evaluateBoolean(e, input, b)),
    validateFilter: (e) => real.validateFilter(e),
    validateTransform: (e) => real.validateTransform(e),
  };
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const sink = await startSink();
  const children: ChildProc[] = [];
  try {
    const start = async (name: string, role: string, extra: Record<string, unknown> = {}) => {
      const port = await freePort();
      const child = await ctx.spawn(
        role,
        { port, sinkUrl: sink.url, logLevel: ctx.logLevel, ...extra },
        { profile: true },
      );
      children.push(child);
      return { name, child, url: `http://127.0.0.1:${port}/orders` };
    };
    const fw = await start("framework", "framework");
    const bl = await start("baseline", "baseline");
    // Ablation: the same pipeline with the expression engine swapped for the JS predicate.
    const ab = await start("framework, JS filter", "frameworkJsFilter");
    const all = [fw, bl, ab];
    const tpOpts = (t: { child: ChildProc; url: string }, count: number) => ({
      url: t.url,
      count,
      concurrency: s.concurrency,
      cpu: () => t.child.cpuSeconds(),
    });

    for (const t of all) {
      ctx.log(`E1 warm-up ${t.name} (${s.warmup} events)`);
      await measureThroughput(sink, tpOpts(t, s.warmup));
    }
    const tp = new Map<string, ThroughputRun[]>(all.map((t) => [t.name, []]));
    for (let i = 0; i < ctx.runs; i++) {
      // Rotate the order so drift on a shared machine hits every side alike.
      for (const t of rotate(all, i)) {
        const m = await measureThroughput(sink, tpOpts(t, s.count));
        tp.get(t.name)!.push(m);
        ctx.log(
          `E1 throughput ${t.name} run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k${m.complete ? "" : " (INCOMPLETE)"}`,
        );
      }
    }
    const lat = new Map<string, LatencyRun[]>(all.map((t) => [t.name, []]));
    for (let i = 0; i < ctx.runs; i++) {
      for (const t of rotate([bl, fw, ab], i)) {
        const m = await measureLatency(sink, {
          url: t.url,
          count: s.latencyCount,
          ratePerSec: RATE,
          cpu: () => t.child.cpuSeconds(),
          monitored: [t.child],
        });
        lat.get(t.name)!.push(m);
        ctx.log(
          `E1 latency ${t.name} run ${i + 1} at ${RATE}/s: p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms`,
        );
      }
    }

    const med = (xs: number[]): number => sig(median(xs), 4);
    const F = tp.get(fw.name)!;
    const B = tp.get(bl.name)!;
    const A = tp.get(ab.name)!;
    const LF = lat.get(fw.name)!;
    const LB = lat.get(bl.name)!;
    const LA = lat.get(ab.name)!;
    r.eventsPerSec = med(F.map((m) => m.eventsPerSec));
    r.baselineEventsPerSec = med(B.map((m) => m.eventsPerSec));
    r.ratio = sig(ratio(r.eventsPerSec, r.baselineEventsPerSec) ?? NaN, 3);
    r.cpuSecPer10k = med(F.map((m) => m.cpuSecPer10k));
    r.baselineCpuSecPer10k = med(B.map((m) => m.cpuSecPer10k));
    r.p50Ms = med(LF.map((m) => m.p50));
    r.p99Ms = med(LF.map((m) => m.p99));
    r.baselineP50Ms = med(LB.map((m) => m.p50));
    r.baselineP99Ms = med(LB.map((m) => m.p99));
    const jsCpu = med(A.map((m) => m.cpuSecPer10k));
    // Paired by round: drift on a shared machine moves both runs of a round alike.
    const shares = F.map((m, i) => (m.cpuSecPer10k - A[i]!.cpuSecPer10k) / m.cpuSecPer10k);
    r.extra = {
      filter: E1_FILTER,
      logLevel: ctx.logLevel,
      sizes: s,
      rateForLatency: RATE,
      throughputRuns: { framework: F, baseline: B, frameworkJsFilter: A },
      latencyRuns: { framework: LF, baseline: LB, frameworkJsFilter: LA },
      cpuSecPer10kAt1000PerSec: {
        framework: med(LF.map((m) => m.cpuSecPer10k)),
        baseline: med(LB.map((m) => m.cpuSecPer10k)),
      },
      ablationJsFilter: {
        what: "the same pipeline, started as the framework's, with the expression engine replaced by the JS predicate",
        eventsPerSec: med(A.map((m) => m.eventsPerSec)),
        cpuSecPer10k: jsCpu,
        p50Ms: med(LA.map((m) => m.p50)),
        p99Ms: med(LA.map((m) => m.p99)),
        /** (framework CPU - ablation CPU) / framework CPU of each round: the filter's share measured in place. */
        filterShareOfCpuPerRound: shares.map((x) => sig(x, 3)),
        /** The median of the rounds' shares. */
        filterShareOfCpu: sig(median(shares), 3),
      },
      peakRssMiB: { framework: sig(fw.child.memoryMiB().peak, 3), baseline: sig(bl.child.memoryMiB().peak, 3) },
    };
    const logged = fw.child.logBytes();
    if (logged > 0) {
      r.notes.push(
        `the framework process logged ${logged} bytes at level ${ctx.logLevel}; last lines: ${fw.child.outputTail().slice(-300)}`,
      );
    }
    if ([...F, ...B, ...A].some((m) => !m.complete))
      r.notes.push("some throughput runs did not deliver every passing event (see extra.throughputRuns)");
    if ([...F, ...B, ...A].some((m) => m.duplicates > 0)) r.notes.push("duplicates arrived at the sink");
    const harness = median(B.map((m) => m.harnessCpuShare));
    if (harness > 0.85) {
      r.notes.push(
        `baseline runs kept the harness process ${Math.round(harness * 100)}% busy: the baseline figure may be harness-bound (ratio then flatters the framework)`,
      );
    }
    const added = r.p99Ms - r.baselineP99Ms;
    r.goals = [
      { name: "E1 throughput ratio", target: ">= 0.7", value: r.ratio.toFixed(2), pass: r.ratio >= 0.7 },
      {
        name: `E1 p99 added latency at ${RATE}/s`,
        target: "<= 2 ms",
        value: `${added.toFixed(2)} ms (${r.p99Ms.toFixed(2)} vs ${r.baselineP99Ms.toFixed(2)})`,
        pass: added <= 2,
      },
    ];
  } finally {
    for (const c of children) await c.stop();
    await sink.close();
  }
  return r;
}

const scenario: Scenario = {
  id: "E1",
  title: "embedded: webhook → memory bus → trigger (JSONata filter) → HTTP sink",
  run,
  describe(r) {
    const lines = describeRuns("E1", r.extra, RATE);
    const ab = r.extra["ablationJsFilter"] as
      | { eventsPerSec: number; cpuSecPer10k: number; filterShareOfCpu: number; p50Ms: number; p99Ms: number }
      | undefined;
    if (ab !== undefined) {
      lines.push(
        `E1 ablation, filter as a JS function instead of JSONata: ${Math.round(ab.eventsPerSec)} events/s, ${ab.cpuSecPer10k} CPU s/10k: p50/p99 ${ab.p50Ms.toFixed(2)}/${ab.p99Ms.toFixed(2)} ms at ${RATE}/s: the JSONata filter is ${(ab.filterShareOfCpu * 100).toFixed(1)}% of the pipeline's CPU in place`,
      );
    }
    return lines;
  },
  children: {
    async framework(raw): Promise<ChildHandle> {
      const a = raw as { port: number; sinkUrl: string; logLevel: string };
      const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-e1-"));
      await writeFile(join(dir, "pipeline.yaml"), manifests(a.port, a.sinkUrl));
      const { startEmbedded } = await import("@ofevents/cli");
      const { createLogger } = await import("@ofevents/core");
      // Logs go to stdout, which the harness points at a file, as a deployment would.
      const logger = createLogger({ level: a.logLevel, format: "json" });
      const embedded = await startEmbedded({ paths: [dir], logger, functionsPort: 0 });
      return withLoopMonitor({
        async stop() {
          await embedded.stop();
          await rm(dir, { recursive: true, force: true });
        },
      });
    },

    /** The E1 pipeline as `framework` runs it, with the filter run as a JS function. */
    async frameworkJsFilter(raw): Promise<ChildHandle> {
      const a = raw as { port: number; sinkUrl: string; logLevel: string };
      const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-e1-"));
      await writeFile(join(dir, "pipeline.yaml"), manifests(a.port, a.sinkUrl));
      const { startEmbedded } = await import("@ofevents/cli");
      const { createExpressionEngine, createLogger } = await import("@ofevents/core");
      const logger = createLogger({ level: a.logLevel, format: "json" });
      const engine = jsFilterEngine(createExpressionEngine(), E1_FILTER, (input) =>
        passes((input as { data?: unknown }).data),
      );
      const embedded = await startEmbedded({ paths: [dir], logger, functionsPort: 0, engine });
      return withLoopMonitor({
        async stop() {
          await embedded.stop();
          await rm(dir, { recursive: true, force: true });
        },
      });
    },

    async baseline(raw): Promise<ChildHandle> {
      const a = raw as { port: number; sinkUrl: string };
      const sink = createForwarder(a.sinkUrl);
      const server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          const body = Buffer.concat(chunks);
          let data: unknown;
          try {
            data = JSON.parse(body.toString("utf8"));
          } catch {
            res.writeHead(400, { "content-length": "0" }).end();
            return;
          }
          if (!passes(data)) {
            res.writeHead(200, { "content-length": "0" }).end();
            return;
          }
          void sink.send(body).then((status) => {
            res.writeHead(status >= 200 && status < 300 ? 200 : 502, { "content-length": "0" }).end();
          });
        });
      });
      await listen(server, a.port);
      return withLoopMonitor({
        async stop() {
          await closeServer(server);
          await sink.close();
        },
      });
    },
  },
};

export default scenario;
