/**
 * E2 JetStream: load generator → webhook source → `jetstream` bus → trigger (input filter
 * `data.n % 2 = 0`, half pass) → HTTP sink, run by `startEmbedded` from manifests with a
 * jetstream EventBus, in a child process of its own; nats-server (JetStream, file storage) is
 * started by the harness on 127.0.0.1.
 *
 * Baseline, same shape: a Node HTTP server that parses the body and publishes it with the raw
 * nats client (`js.publish`, answering once the PubAck came), a raw durable pull consumer on the
 * same server (consume, the same predicate in JS, undici keep-alive to the sink, ack), in one
 * process like the framework's.
 *
 * Measured as E1: closed loop for events/s, open loop at 1,000 events/s for p50/p99 source →
 * sink, CPU of the child from /proc, median of the runs. Then the event size sweep: closed-loop
 * runs of both sides with bodies of 100 B, 10 KiB and 256 KiB (`extra.sizeSweep`).
 */
import { createServer } from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../lib/load.js";
import {
  closeServer,
  comparePipelines,
  createForwarder,
  describeRuns,
  describeSweep,
  fillFromComparison,
  listen,
  passes,
  pipelineManifests,
  sweepSizes,
  webhookSourceSpec,
  withLoopMonitor,
  type PipelineSizes,
  type SweepPoint,
  type SweepSize,
} from "../lib/pipeline.js";
import type { ChildProc } from "../lib/proc.js";
import { rawJetStream } from "../lib/raw.js";
import { startSink, type SinkServer } from "../lib/sink.js";
import { sig } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

const FULL: PipelineSizes = { warmup: 2_000, count: 20_000, concurrency: 64, latencyCount: 5_000, rate: 1000 };
const QUICK: PipelineSizes = { warmup: 100, count: 300, concurrency: 16, latencyCount: 200, rate: 1000 };
/** The event size sweep: fewer events as they grow, so each size takes seconds, not minutes. */
const SWEEP: SweepSize[] = [
  { bytes: 100, count: 10_000 },
  { bytes: 10_240, count: 4_000 },
  { bytes: 262_144, count: 600 },
];
const QUICK_SWEEP: SweepSize[] = SWEEP.map((x) => ({ bytes: x.bytes, count: 40 }));

interface Args {
  port: number;
  sinkUrl: string;
  natsUrl: string;
  tag: string;
  logLevel: string;
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const nats = await NatsServer.start({ jetstream: true });
  let sink: SinkServer | undefined;
  const children: ChildProc[] = [];
  try {
    sink = await startSink();
    const start = async (role: string) => {
      const port = await freePort();
      const args: Args = {
        port,
        sinkUrl: sink!.url,
        natsUrl: nats.url,
        tag: `${role}${Date.now().toString(36)}`,
        logLevel: ctx.logLevel,
      };
      const child = await ctx.spawn(role, args, { profile: true });
      children.push(child);
      return { child, url: `http://127.0.0.1:${port}/orders` };
    };
    const fw = await start("framework");
    const bl = await start("baseline");
    const sides = [
      { name: "framework", url: fw.url, cpu: () => fw.child.cpuSeconds(), monitored: [fw.child] },
      { name: "baseline", url: bl.url, cpu: () => bl.child.cpuSeconds(), monitored: [bl.child] },
    ];
    const c = await comparePipelines("E2", ctx, sink, sides, s);
    const sweep = await sweepSizes("E2", ctx, sink, sides, ctx.quick ? QUICK_SWEEP : SWEEP, s.concurrency);
    fillFromComparison(r, c, { framework: "framework", baseline: "baseline" });
    r.extra = {
      filter: "data.n % 2 = 0",
      natsServer: nats.version,
      logLevel: ctx.logLevel,
      sizes: s,
      rateForLatency: s.rate,
      throughputRuns: c.throughput,
      latencyRuns: c.latency,
      sizeSweep: sweep,
      peakRssMiB: { framework: sig(fw.child.memoryMiB().peak, 3), baseline: sig(bl.child.memoryMiB().peak, 3) },
    };
    const added = r.p99Ms! - r.baselineP99Ms!;
    r.goals = [
      { name: "E2 throughput ratio", target: ">= 0.6", value: r.ratio!.toFixed(2), pass: r.ratio! >= 0.6 },
      {
        name: `E2 p99 added latency at ${s.rate}/s`,
        target: "<= 2 ms",
        value: `${added.toFixed(2)} ms (${r.p99Ms!.toFixed(2)} vs ${r.baselineP99Ms!.toFixed(2)})`,
        pass: added <= 2,
      },
    ];
    const logged = fw.child.logBytes();
    if (logged > 0) r.notes.push(`the framework process logged ${logged} bytes at level ${ctx.logLevel}`);
  } finally {
    for (const c of children) await c.stop();
    await sink?.close();
    await nats.stop();
  }
  return r;
}

const scenario: Scenario = {
  id: "E2",
  title: "JetStream bus: webhook → jetstream → trigger (JSONata filter) → HTTP sink",
  run,
  describe: (r) => [
    ...describeRuns("E2", r.extra, 1000),
    ...describeSweep("E2", r.extra["sizeSweep"] as SweepPoint[] | undefined, ["framework", "baseline"]),
  ],
  children: {
    async framework(raw): Promise<ChildHandle> {
      const a = raw as Args;
      const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-e2-"));
      await writeFile(
        join(dir, "pipeline.yaml"),
        pipelineManifests({
          name: "bench",
          busSpec: `  jetstream:\n    url: "${a.natsUrl}"\n    stream: "e2${a.tag}"`,
          sourceSpec: webhookSourceSpec(a.port),
          event: "orders",
          sinkUrl: a.sinkUrl,
        }),
      );
      const { startEmbedded } = await import("@ofevents/cli");
      const { createLogger } = await import("@ofevents/core");
      const logger = createLogger({ level: a.logLevel, format: "json" });
      const embedded = await startEmbedded({ paths: [dir], logger, functionsPort: 0 });
      return withLoopMonitor({
        async stop() {
          await embedded.stop();
          await rm(dir, { recursive: true, force: true });
        },
      });
    },

    async baseline(raw): Promise<ChildHandle> {
      const a = raw as Args;
      const sink = createForwarder(a.sinkUrl);
      const js = await rawJetStream({ url: a.natsUrl, tag: a.tag });
      await js.consume(async (data) => {
        if (!passes(JSON.parse(Buffer.from(data).toString("utf8")))) return;
        const status = await sink.send(data);
        if (status < 200 || status >= 300) throw new Error(`sink answered ${status}`);
      });
      const server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          const body = Buffer.concat(chunks);
          try {
            JSON.parse(body.toString("utf8"));
          } catch {
            res.writeHead(400, { "content-length": "0" }).end();
            return;
          }
          js.publish(body).then(
            () => res.writeHead(200, { "content-length": "0" }).end(),
            () => res.writeHead(503, { "content-length": "0" }).end(),
          );
        });
      });
      await listen(server, a.port);
      return withLoopMonitor({
        async stop() {
          await closeServer(server);
          await js.close();
          await sink.close();
        },
      });
    },
  },
};

export default scenario;
