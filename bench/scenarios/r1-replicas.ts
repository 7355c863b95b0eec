/**
 * R1 replicas: how throughput and cost grow with the number of trigger replicas. The platform
 * runs a Trigger as N pods of `ofevents trigger` on one consumer of the bus; here they are N
 * processes started by `startSingle` (the pod entrypoint, `direct` bus driver) from the same
 * manifests, so they share one JetStream durable consumer, beside one `ofevents eventsource`
 * process for the webhook. For 1, 2 and 4 replicas: a fresh stream, warm-up, then closed-loop
 * runs through E2's pipeline (filter `data.n % 2 = 0`, HTTP sink).
 *
 * Reported: events/s and CPU s/10k (source + every replica) per replica count, the source's and
 * the replicas' share of that CPU, and whether every passing event arrived exactly once.
 * Table row: 4 replicas against 1 (the ratio is the scaling, not a comparison with a baseline).
 */
import { freePort } from "../lib/load.js";
import {
  cpuOf,
  measureThroughput,
  pipelineManifests,
  webhookSourceSpec,
  singleChild,
  type ThroughputRun,
} from "../lib/pipeline.js";
import type { ChildProc } from "../lib/proc.js";
import { startSink, type SinkServer } from "../lib/sink.js";
import { median, sig } from "../lib/stats.js";
import { emptyResult, type Scenario, type ScenarioContext } from "../lib/types.js";

interface Sizes {
  warmup: number;
  count: number;
  concurrency: number;
}
const FULL: Sizes = { warmup: 1_000, count: 10_000, concurrency: 64 };
const QUICK: Sizes = { warmup: 50, count: 200, concurrency: 16 };
const REPLICAS = [1, 2, 4] as const;

interface Args {
  kind: "EventSource" | "Trigger";
  manifests: string;
  logLevel: string;
}

export interface ReplicaPoint {
  replicas: number;
  eventsPerSec: number;
  cpuSecPer10k: number;
  /** CPU s/10k of the eventsource process and of all replicas together (medians). */
  sourceCpuSecPer10k: number;
  triggersCpuSecPer10k: number;
  /** Each replica's share of the replicas' CPU over the timed runs: near 1/N when they share the work. */
  replicaCpuShares: number[];
  runs: ThroughputRun[];
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const nats = await NatsServer.start({ jetstream: true });
  let sink: SinkServer | undefined;
  const points: ReplicaPoint[] = [];
  try {
    sink = await startSink();
    for (const n of REPLICAS) {
      const port = await freePort();
      const manifests = pipelineManifests({
        name: "bench",
        busSpec: `  jetstream:\n    url: "${nats.url}"\n    stream: "r1x${n}${Date.now().toString(36)}"`,
        sourceSpec: webhookSourceSpec(port),
        event: "orders",
        sinkUrl: sink.url,
      });
      const children: ChildProc[] = [];
      try {
        const triggers: ChildProc[] = [];
        // One after the other: the first creates the consumer the others join.
        for (let i = 0; i < n; i++) {
          const t = await ctx.spawn("framework", { kind: "Trigger", manifests, logLevel: ctx.logLevel } satisfies Args);
          children.push(t);
          triggers.push(t);
        }
        const source = await ctx.spawn("framework", {
          kind: "EventSource",
          manifests,
          logLevel: ctx.logLevel,
        } satisfies Args);
        children.push(source);
        const url = `http://127.0.0.1:${port}/orders`;
        const opts = (count: number) => ({
          url,
          count,
          concurrency: s.concurrency,
          cpu: cpuOf(children),
          others: { source: () => source.cpuSeconds(), triggers: cpuOf(triggers) },
        });
        ctx.log(`R1 ${n} replica(s): warm-up (${s.warmup} events)`);
        await measureThroughput(sink, opts(s.warmup));
        const runs: ThroughputRun[] = [];
        const before = triggers.map((t) => t.cpuSeconds());
        for (let i = 0; i < ctx.runs; i++) {
          const m = await measureThroughput(sink, opts(s.count));
          runs.push(m);
          ctx.log(
            `R1 ${n} replica(s) run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k` +
              `${m.complete ? "" : " (INCOMPLETE)"}${m.duplicates > 0 ? ` (${m.duplicates} duplicates)` : ""}`,
          );
        }
        const used = triggers.map((t, i) => t.cpuSeconds() - before[i]!);
        const total = used.reduce((a, b) => a + b, 0);
        const med = (f: (m: ThroughputRun) => number): number => sig(median(runs.map(f)), 4);
        points.push({
          replicas: n,
          eventsPerSec: med((m) => m.eventsPerSec),
          cpuSecPer10k: med((m) => m.cpuSecPer10k),
          sourceCpuSecPer10k: med((m) => m.otherCpuSecPer10k?.["source"] ?? NaN),
          triggersCpuSecPer10k: med((m) => m.otherCpuSecPer10k?.["triggers"] ?? NaN),
          replicaCpuShares: used.map((u) => sig(total > 0 ? u / total : 0, 2)),
          runs,
        });
      } finally {
        for (const c of children) await c.stop();
      }
    }
    const one = points[0]!;
    const most = points[points.length - 1]!;
    r.eventsPerSec = most.eventsPerSec;
    r.baselineEventsPerSec = one.eventsPerSec;
    r.ratio = sig(most.eventsPerSec / one.eventsPerSec, 3);
    r.cpuSecPer10k = most.cpuSecPer10k;
    r.baselineCpuSecPer10k = one.cpuSecPer10k;
    r.extra = { filter: "data.n % 2 = 0", natsServer: nats.version, sizes: s, replicas: points };
    const all = points.flatMap((p) => p.runs);
    const once = all.every((m) => m.complete && m.duplicates === 0);
    r.notes.push(`row: ${most.replicas} trigger replicas against 1 (ratio = scaling); extra.replicas has each count`);
    r.goals = [
      {
        name: `R1 every passing event arrives exactly once at ${REPLICAS.join(", ")} replicas`,
        target: "all runs complete, 0 duplicates",
        value: once
          ? "yes"
          : `${all.filter((m) => !m.complete).length} incomplete, ${all.reduce((a, m) => a + m.duplicates, 0)} duplicates`,
        pass: once,
      },
    ];
  } finally {
    await sink?.close();
    await nats.stop();
  }
  return r;
}

const scenario: Scenario = {
  id: "R1",
  title: "Replicas: webhook eventsource → jetstream → 1, 2, 4 trigger processes on one consumer → HTTP sink",
  run,
  describe(r) {
    const points = r.extra["replicas"] as ReplicaPoint[] | undefined;
    if (points === undefined) return [];
    const lines = [
      "",
      "R1 trigger replicas (closed loop, median of runs; CPU s/10k of all processes = source + replicas):",
    ];
    for (const p of points) {
      lines.push(
        `  ${String(p.replicas).padStart(2)} replica(s)  ${Math.round(p.eventsPerSec)} ev/s  ${p.cpuSecPer10k.toFixed(2)} CPU s/10k` +
          ` (source ${p.sourceCpuSecPer10k.toFixed(2)}, replicas ${p.triggersCpuSecPer10k.toFixed(2)},` +
          ` shares ${p.replicaCpuShares.map((x) => x.toFixed(2)).join("/")})` +
          `  runs ${p.runs.map((m) => Math.round(m.eventsPerSec)).join(", ")}`,
      );
    }
    return lines;
  },
  children: {
    framework: (raw) => singleChild({ ...(raw as Args), busDriver: "direct" }),
  },
};

export default scenario;
