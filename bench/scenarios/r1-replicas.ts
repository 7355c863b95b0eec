/**
 * R1 replicas: how throughput and cost grow with the number of trigger replicas. The platform
 * runs a Trigger as N pods of `ofevents trigger` on one consumer of the bus; here they are N
 * processes started by `startSingle` (the pod entrypoint, `direct` bus driver) from the same
 * manifests, so they share one JetStream durable consumer or one Kafka consumer group (topics of
 * 4 partitions, records keyed by event id), beside one `ofevents eventsource` process for the
 * webhook. For each bus and 1, 2 and 4 replicas: a fresh stream or topic prefix (so a fresh
 * consumer or group), warm-up, then closed-loop runs through E2's pipeline (filter
 * `data.n % 2 = 0`, HTTP sink).
 *
 * Reported: events/s and CPU s/10k (source + every replica) per replica count, the source's and
 * the replicas' share of that CPU, and whether every passing event arrived exactly once.
 * Table row: 4 replicas against 1 on JetStream (the ratio is the scaling, not a comparison with a
 * baseline).
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
/** Partitions of the Kafka bus topics: one per replica at the most replicas. */
const PARTITIONS = 4;

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

type Bus = "jetstream" | "kafka";

/** The EventBus spec of one replica count: a fresh stream or a fresh topic prefix (so a fresh group) each time. */
function busSpec(bus: Bus, where: string, n: number): string {
  const tag = `r1x${n}${Date.now().toString(36)}`;
  return bus === "jetstream"
    ? `  jetstream:\n    url: "${where}"\n    stream: "${tag}"`
    : `  kafka:\n    brokers: "${where}"\n    partitions: ${PARTITIONS}\n    topicPrefix: "${tag}-"`;
}

/** 1, 2 and 4 trigger replicas on one consumer of `bus` (a JetStream durable, a Kafka group). */
async function measureReplicas(ctx: ScenarioContext, s: Sizes, sink: SinkServer, bus: Bus, where: string) {
  const points: ReplicaPoint[] = [];
  for (const n of REPLICAS) {
    const port = await freePort();
    const manifests = pipelineManifests({
      name: "bench",
      busSpec: busSpec(bus, where, n),
      sourceSpec: webhookSourceSpec(port),
      event: "orders",
      sinkUrl: sink.url,
    });
    const children: ChildProc[] = [];
    try {
      const triggers: ChildProc[] = [];
      // One after the other: the first creates the consumer (or group) the others join.
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
      // The warm-up also lets a Kafka group settle its assignment after the last member joined.
      ctx.log(`R1 ${bus} ${n} replica(s): warm-up (${s.warmup} events)`);
      await measureThroughput(sink, opts(s.warmup));
      const runs: ThroughputRun[] = [];
      const before = triggers.map((t) => t.cpuSeconds());
      for (let i = 0; i < ctx.runs; i++) {
        const m = await measureThroughput(sink, opts(s.count));
        runs.push(m);
        ctx.log(
          `R1 ${bus} ${n} replica(s) run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k` +
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
  return points;
}

function exactlyOnce(bus: Bus, points: readonly ReplicaPoint[]) {
  const all = points.flatMap((p) => p.runs);
  const once = all.every((m) => m.complete && m.duplicates === 0);
  return {
    name: `R1 ${bus}: every passing event arrives exactly once at ${REPLICAS.join(", ")} replicas`,
    target: "all runs complete, 0 duplicates",
    value: once
      ? "yes"
      : `${all.filter((m) => !m.complete).length} incomplete, ${all.reduce((a, m) => a + m.duplicates, 0)} duplicates`,
    pass: once,
  };
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const { KafkaBroker } = await import("../../test/helpers/kafka.js");
  const started = await Promise.allSettled([NatsServer.start({ jetstream: true }), KafkaBroker.start()]);
  const nats = started[0].status === "fulfilled" ? started[0].value : undefined;
  const kafka = started[1].status === "fulfilled" ? started[1].value : undefined;
  let sink: SinkServer | undefined;
  try {
    for (const x of started) if (x.status === "rejected") throw x.reason;
    sink = await startSink();
    const points = await measureReplicas(ctx, s, sink, "jetstream", nats!.url);
    const kafkaPoints = await measureReplicas(ctx, s, sink, "kafka", kafka!.brokers.join(","));
    const one = points[0]!;
    const most = points[points.length - 1]!;
    r.eventsPerSec = most.eventsPerSec;
    r.baselineEventsPerSec = one.eventsPerSec;
    r.ratio = sig(most.eventsPerSec / one.eventsPerSec, 3);
    r.cpuSecPer10k = most.cpuSecPer10k;
    r.baselineCpuSecPer10k = one.cpuSecPer10k;
    r.extra = {
      filter: "data.n % 2 = 0",
      natsServer: nats!.version,
      kafkaPartitions: PARTITIONS,
      sizes: s,
      replicas: points,
      kafkaReplicas: kafkaPoints,
    };
    r.notes.push(
      `row: ${most.replicas} trigger replicas against 1 on JetStream (ratio = scaling); extra.replicas (JetStream) and extra.kafkaReplicas have each count`,
    );
    r.goals = [exactlyOnce("jetstream", points), exactlyOnce("kafka", kafkaPoints)];
  } finally {
    await sink?.close();
    await Promise.allSettled([nats?.stop(), kafka?.stop()]);
  }
  return r;
}

const scenario: Scenario = {
  id: "R1",
  title:
    "Replicas: webhook eventsource → JetStream or Kafka → 1, 2, 4 trigger processes on one consumer or group → HTTP sink",
  run,
  describe(r) {
    const lines = [
      "",
      "R1 trigger replicas (closed loop, median of runs; CPU s/10k of all processes = source + replicas):",
    ];
    const buses: Array<[string, ReplicaPoint[] | undefined]> = [
      ["jetstream", r.extra["replicas"] as ReplicaPoint[] | undefined],
      ["kafka", r.extra["kafkaReplicas"] as ReplicaPoint[] | undefined],
    ];
    for (const [bus, points] of buses) {
      for (const p of points ?? []) {
        lines.push(
          `  ${bus.padEnd(9)} ${String(p.replicas).padStart(2)} replica(s)  ${Math.round(p.eventsPerSec)} ev/s  ${p.cpuSecPer10k.toFixed(2)} CPU s/10k` +
            ` (source ${p.sourceCpuSecPer10k.toFixed(2)}, replicas ${p.triggersCpuSecPer10k.toFixed(2)},` +
            ` shares ${p.replicaCpuShares.map((x) => x.toFixed(2)).join("/")})` +
            `  runs ${p.runs.map((m) => Math.round(m.eventsPerSec)).join(", ")}`,
        );
      }
    }
    return lines;
  },
  children: {
    framework: (raw) => singleChild({ ...(raw as Args), busDriver: "direct" }),
  },
};

export default scenario;
