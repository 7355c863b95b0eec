/**
 * E3 Kafka: N events pre-loaded into a Kafka topic (4 partitions) → kafka EventSource (startFrom
 * oldest) → `jetstream` bus → trigger (input filter `data.n % 2 = 0`, half pass) → HTTP sink,
 * run by `startEmbedded` in a child process. Kafka and nats-server are started by the harness.
 *
 * Baseline, same shape: a raw kafkajs consumer (eachMessage, 4 partitions at once, each record
 * published with the raw nats client before the next, as the source does) → a raw JetStream
 * durable pull consumer → the same predicate in JS → undici keep-alive to the sink, one process.
 *
 * Each run gets a new topic and a new pipeline (new consumer group, new stream), the events
 * produced BEFORE the pipeline starts. events/s = N / (first → last arrival at the sink): the
 * group join and stream set-up before the first event are reported apart (`startToFirstMs`).
 * Latency: an open-loop kafkajs producer at 1,000 events/s into a running pipeline on an empty
 * topic, source (before `producer.send`) → sink, so the produce round trip is in both figures.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { openLoopCalls } from "../lib/load.js";
import {
  createForwarder,
  describeRuns,
  eventBody,
  passes,
  pipelineManifests,
  rotate,
  withLoopMonitor,
  type LatencyRun,
} from "../lib/pipeline.js";
import type { ChildProc } from "../lib/proc.js";
import { rawJetStream, rawKafka, type RawJetStream, type RawKafka } from "../lib/raw.js";
import { startSink, type SinkServer } from "../lib/sink.js";
import { median, ratio, sig, summarize } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

interface Sizes {
  warmup: number;
  count: number;
  latencyCount: number;
  rate: number;
  partitions: number;
}

const FULL: Sizes = { warmup: 2_000, count: 20_000, latencyCount: 2_000, rate: 1000, partitions: 4 };
const QUICK: Sizes = { warmup: 100, count: 300, latencyCount: 200, rate: 1000, partitions: 4 };

interface ChildArgs {
  natsUrl: string;
  brokers: string[];
  sinkUrl: string;
  logLevel: string;
}

interface StartArgs {
  topic: string;
  tag: string;
}

interface DrainRun {
  eventsPerSec: number;
  cpuSecPer10k: number;
  /** From starting the pipeline (group join, stream and consumer set-up) to the first arrival. */
  startToFirstMs: number;
  complete: boolean;
  delivered: number;
  duplicates: number;
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const { KafkaBroker } = await import("../../test/helpers/kafka.js");
  const { Kafka, logLevel } = await import("kafkajs");
  ctx.log("E3 starting Kafka and nats-server");
  const started = await Promise.allSettled([KafkaBroker.start(), NatsServer.start({ jetstream: true })]);
  const kafka = started[0].status === "fulfilled" ? started[0].value : undefined;
  const nats = started[1].status === "fulfilled" ? started[1].value : undefined;
  let sink: SinkServer | undefined;
  const children: ChildProc[] = [];
  const client = new Kafka({ brokers: kafka?.brokers ?? [], clientId: "bench-e3", logLevel: logLevel.NOTHING });
  const admin = client.admin();
  const producer = client.producer({ allowAutoTopicCreation: false });
  try {
    for (const x of started) if (x.status === "rejected") throw x.reason;
    await admin.connect();
    await producer.connect();
    sink = await startSink();
    const args: ChildArgs = { natsUrl: nats!.url, brokers: kafka!.brokers, sinkUrl: sink.url, logLevel: ctx.logLevel };
    const fw = await ctx.spawn("framework", args, { profile: true });
    children.push(fw);
    const bl = await ctx.spawn("baseline", args, { profile: true });
    children.push(bl);
    const sides = [
      { name: "framework", child: fw },
      { name: "baseline", child: bl },
    ];

    let topics = 0;
    const newTopic = async (): Promise<string> => {
      const topic = `e3-${Date.now().toString(36)}-${topics++}`;
      await admin.createTopics({ topics: [{ topic, numPartitions: s.partitions }], waitForLeaders: true });
      return topic;
    };
    const preload = async (topic: string, count: number): Promise<void> => {
      for (let i = 0; i < count; i += 1000) {
        const n = Math.min(1000, count - i);
        await producer.send({
          topic,
          acks: -1,
          messages: Array.from({ length: n }, (_, j) => ({ key: String(i + j), value: eventBody(i + j, 0) })),
        });
      }
    };

    const drain = async (child: ChildProc, count: number): Promise<DrainRun> => {
      const topic = await newTopic();
      await preload(topic, count);
      sink!.reset();
      const expected = Math.ceil(count / 2);
      const t0 = performance.now();
      await child.call("start", { topic, tag: topic.replace(/-/g, "") } satisfies StartArgs);
      const first = await sink!.waitFor(1, 60_000);
      const c0 = child.cpuSeconds();
      const complete = first && (await sink!.waitFor(expected, 180_000));
      const c1 = child.cpuSeconds();
      const run: DrainRun = {
        eventsPerSec: ((complete ? count : sink!.received * 2) / (sink!.lastArrival - sink!.firstArrival)) * 1000,
        cpuSecPer10k: ((c1 - c0) / count) * 10_000,
        startToFirstMs: sink!.firstArrival - t0,
        complete,
        delivered: sink!.received,
        duplicates: sink!.received - sink!.distinct,
      };
      await child.call("stop");
      return run;
    };

    const latency = async (child: ChildProc): Promise<LatencyRun> => {
      const topic = await newTopic();
      await child.call("start", { topic, tag: topic.replace(/-/g, "") } satisfies StartArgs);
      sink!.reset();
      await child.call("loopStart");
      const c0 = child.cpuSeconds();
      const load = await openLoopCalls({
        count: s.latencyCount,
        ratePerSec: s.rate,
        maxOutstanding: 1_000,
        timeoutMs: (s.latencyCount / s.rate) * 1000 + 30_000,
        send: async (i, t) => {
          await producer.send({ topic, acks: -1, messages: [{ key: String(i), value: eventBody(i, t) }] });
        },
      });
      await sink!.waitFor(Math.ceil(s.latencyCount / 2), 30_000);
      const c1 = child.cpuSeconds();
      const loop = await child.call<LatencyRun["loop"]>("loopRead");
      await child.call("stop");
      const l = summarize(sink!.latenciesMs);
      return {
        p50: l.p50,
        p90: l.p90,
        p99: l.p99,
        max: l.max,
        samples: l.count,
        cpuSecPer10k: ((c1 - c0) / s.latencyCount) * 10_000,
        maxSendLagMs: load.maxLagMs ?? 0,
        loop,
      };
    };

    for (const side of sides) {
      ctx.log(`E3 warm-up ${side.name} (${s.warmup} events)`);
      await drain(side.child, s.warmup);
    }
    const tp: Record<string, DrainRun[]> = { framework: [], baseline: [] };
    const lat: Record<string, LatencyRun[]> = { framework: [], baseline: [] };
    for (let i = 0; i < ctx.runs; i++) {
      for (const side of rotate(sides, i)) {
        const m = await drain(side.child, s.count);
        tp[side.name]!.push(m);
        ctx.log(
          `E3 throughput ${side.name} run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k, first event after ${Math.round(m.startToFirstMs)} ms${m.complete ? "" : " (INCOMPLETE)"}`,
        );
      }
    }
    for (let i = 0; i < ctx.runs; i++) {
      for (const side of rotate(sides, i + 1)) {
        const m = await latency(side.child);
        lat[side.name]!.push(m);
        ctx.log(
          `E3 latency ${side.name} run ${i + 1} at ${s.rate}/s: p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms`,
        );
      }
    }

    const med = (xs: number[]): number => sig(median(xs), 4);
    const F = tp["framework"]!;
    const B = tp["baseline"]!;
    r.eventsPerSec = med(F.map((m) => m.eventsPerSec));
    r.baselineEventsPerSec = med(B.map((m) => m.eventsPerSec));
    r.ratio = sig(ratio(r.eventsPerSec, r.baselineEventsPerSec) ?? NaN, 3);
    r.cpuSecPer10k = med(F.map((m) => m.cpuSecPer10k));
    r.baselineCpuSecPer10k = med(B.map((m) => m.cpuSecPer10k));
    r.p50Ms = med(lat["framework"]!.map((m) => m.p50));
    r.p99Ms = med(lat["framework"]!.map((m) => m.p99));
    r.baselineP50Ms = med(lat["baseline"]!.map((m) => m.p50));
    r.baselineP99Ms = med(lat["baseline"]!.map((m) => m.p99));
    r.extra = {
      filter: "data.n % 2 = 0",
      sizes: s,
      logLevel: ctx.logLevel,
      natsServer: nats!.version,
      throughputRuns: tp,
      latencyRuns: lat,
      startToFirstMs: {
        framework: med(F.map((m) => m.startToFirstMs)),
        baseline: med(B.map((m) => m.startToFirstMs)),
      },
      peakRssMiB: { framework: sig(fw.memoryMiB().peak, 3), baseline: sig(bl.memoryMiB().peak, 3) },
    };
    if ([...F, ...B].some((m) => !m.complete))
      r.notes.push("some throughput runs did not deliver every passing event (see extra.throughputRuns)");
    if ([...F, ...B].some((m) => m.duplicates > 0)) r.notes.push("duplicates arrived at the sink");
    r.notes.push(
      `events/s over first → last arrival; starting the pipeline (group join, streams) took ${Math.round(med(F.map((m) => m.startToFirstMs)))} ms (framework) and ${Math.round(med(B.map((m) => m.startToFirstMs)))} ms (baseline) before the first event; latency includes the kafkajs produce round trip`,
    );
    r.goals = [{ name: "E3 throughput ratio", target: ">= 0.6", value: r.ratio.toFixed(2), pass: r.ratio >= 0.6 }];
  } finally {
    for (const c of children) await c.stop();
    await sink?.close();
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await Promise.allSettled([kafka?.stop(), nats?.stop()]);
  }
  return r;
}

const scenario: Scenario = {
  id: "E3",
  title: "Kafka source (pre-loaded topic) → jetstream → trigger (JSONata filter) → HTTP sink",
  run,
  describe(r) {
    const lines = describeRuns("E3", r.extra, 1000);
    const first = r.extra["startToFirstMs"] as { framework: number; baseline: number } | undefined;
    if (first !== undefined)
      lines.push(
        `E3 pipeline start → first event at the sink (median): framework ${Math.round(first.framework)} ms, baseline ${Math.round(first.baseline)} ms`,
      );
    return lines;
  },
  children: {
    async framework(raw): Promise<ChildHandle> {
      const a = raw as ChildArgs;
      const { startEmbedded } = await import("@ofevents/cli");
      const { createLogger } = await import("@ofevents/core");
      const logger = createLogger({ level: a.logLevel, format: "json" });
      let running: { stop(): Promise<void> } | undefined;
      let dir: string | undefined;
      return withLoopMonitor({
        handlers: {
          start: async (payload) => {
            const p = payload as StartArgs;
            dir = await mkdtemp(join(tmpdir(), "ofevents-bench-e3-"));
            await writeFile(
              join(dir, "pipeline.yaml"),
              pipelineManifests({
                name: `b${p.tag}`,
                busSpec: `  jetstream:\n    url: "${a.natsUrl}"\n    stream: "${p.tag}"`,
                sourceSpec: `  kafka:
    orders:
      brokers: "${a.brokers.join(",")}"
      topic: ${p.topic}
      authRequired: false
      startFrom: oldest`,
                event: "orders",
                sinkUrl: a.sinkUrl,
              }),
            );
            running = await startEmbedded({ paths: [dir], logger, functionsPort: 0 });
          },
          stop: async () => {
            await running?.stop();
            running = undefined;
            if (dir !== undefined) await rm(dir, { recursive: true, force: true });
          },
        },
        async stop() {
          await running?.stop();
          if (dir !== undefined) await rm(dir, { recursive: true, force: true });
        },
      });
    },

    async baseline(raw): Promise<ChildHandle> {
      const a = raw as ChildArgs;
      const sink = createForwarder(a.sinkUrl);
      let running: { kafka: RawKafka; js: RawJetStream } | undefined;
      const stopRunning = async (): Promise<void> => {
        const x = running;
        running = undefined;
        await x?.kafka.close();
        await x?.js.close();
      };
      return withLoopMonitor({
        handlers: {
          start: async (payload) => {
            const p = payload as StartArgs;
            const js = await rawJetStream({ url: a.natsUrl, tag: p.tag });
            await js.consume(async (data) => {
              if (!passes(JSON.parse(Buffer.from(data).toString("utf8")))) return;
              const status = await sink.send(data);
              if (status < 200 || status >= 300) throw new Error(`sink answered ${status}`);
            });
            const kafka = await rawKafka(a.brokers);
            running = { kafka, js };
            await kafka.consume(p.topic, `raw-${p.tag}`, (value) => js.publish(value), 4);
          },
          stop: stopRunning,
        },
        stop: stopRunning,
      });
    },
  },
};

export default scenario;
