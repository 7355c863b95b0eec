/**
 * The cost of a subscriber's shaping (E8 `ordering`, E9 `batch`): the E2 pipeline (webhook →
 * `jetstream` bus → trigger, input filter → HTTP sink, `startEmbedded`) run twice in the same run,
 * once with the feature on the subscriber and once without. The plain pipeline is the baseline,
 * so the ratio is what the feature costs (or saves) in events/s, and the latency columns show what
 * it adds source → sink at 1,000 events/s. Both sides are the framework, in child processes of
 * their own, on one nats-server.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./load.js";
import {
  comparePipelines,
  describeRuns,
  fillFromComparison,
  pipelineManifests,
  webhookSourceSpec,
  withLoopMonitor,
  type PipelineSizes,
} from "./pipeline.js";
import type { ChildProc } from "./proc.js";
import { startSink, type SinkServer } from "./sink.js";
import { sig } from "./stats.js";
import {
  emptyResult,
  type ChildHandle,
  type Goal,
  type Scenario,
  type ScenarioContext,
  type ScenarioResult,
} from "./types.js";

const FULL: PipelineSizes = { warmup: 2_000, count: 20_000, concurrency: 64, latencyCount: 5_000, rate: 1000 };
const QUICK: PipelineSizes = { warmup: 100, count: 300, concurrency: 16, latencyCount: 200, rate: 1000 };

interface Args {
  port: number;
  sinkUrl: string;
  natsUrl: string;
  tag: string;
  logLevel: string;
  /** EventSource and Trigger name of this side. */
  name: string;
  /** Trigger subscriber lines added to the plain pipeline (indented 6); empty: the plain one. */
  subscriberExtra: string;
}

export interface ShapedScenario {
  id: string;
  title: string;
  /** The feature, as Trigger subscriber lines (indented 6), e.g. `      ordering: { key: ... }`. */
  feature: string;
  /** Goals judged on the result (ratio = with / without the feature). */
  goals(r: ScenarioResult, s: PipelineSizes): Goal[];
}

async function framework(raw: unknown): Promise<ChildHandle> {
  const a = raw as Args;
  const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-shaped-"));
  await writeFile(
    join(dir, "pipeline.yaml"),
    pipelineManifests({
      // Each side its own EventSource and Trigger name, so its own topic and consumer group on the
      // shared nats-server (with one name the two triggers would share one durable consumer).
      name: a.name,
      busSpec: `  jetstream:\n    url: "${a.natsUrl}"\n    stream: "s${a.tag}"`,
      sourceSpec: webhookSourceSpec(a.port),
      event: "orders",
      sinkUrl: a.sinkUrl,
      subscriberExtra: a.subscriberExtra,
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
}

export function shapedScenario(o: ShapedScenario): Scenario {
  const scenario: Scenario = {
    id: o.id,
    title: o.title,
    describe: (r) => describeRuns(o.id, r.extra, 1000),
    children: { framework, plain: framework },
    async run(ctx: ScenarioContext) {
      const r = emptyResult(o.id, o.title);
      const s = ctx.quick ? QUICK : FULL;
      const { NatsServer } = await import("../../test/helpers/nats.js");
      const nats = await NatsServer.start({ jetstream: true });
      let sink: SinkServer | undefined;
      const children: ChildProc[] = [];
      try {
        sink = await startSink();
        const start = async (role: "framework" | "plain") => {
          const port = await freePort();
          const args: Args = {
            port,
            sinkUrl: sink!.url,
            natsUrl: nats.url,
            tag: `${o.id.toLowerCase()}${role}${Date.now().toString(36)}`,
            name: `bench-${role}`,
            logLevel: ctx.logLevel,
            subscriberExtra: role === "framework" ? `${o.feature}\n` : "",
          };
          const child = await ctx.spawn(role, args, { profile: true });
          children.push(child);
          return { child, url: `http://127.0.0.1:${port}/orders` };
        };
        const fw = await start("framework");
        const plain = await start("plain");
        const c = await comparePipelines(
          o.id,
          ctx,
          sink,
          [
            { name: "with feature", url: fw.url, cpu: () => fw.child.cpuSeconds(), monitored: [fw.child] },
            { name: "without (E2)", url: plain.url, cpu: () => plain.child.cpuSeconds(), monitored: [plain.child] },
          ],
          s,
        );
        fillFromComparison(r, c, { framework: "with feature", baseline: "without (E2)" });
        r.extra = {
          feature: o.feature.trim(),
          baseline: "the same pipeline without the feature (E2's framework side)",
          natsServer: nats.version,
          logLevel: ctx.logLevel,
          sizes: s,
          rateForLatency: s.rate,
          throughputRuns: c.throughput,
          latencyRuns: c.latency,
          peakRssMiB: {
            framework: sig(fw.child.memoryMiB().peak, 3),
            baseline: sig(plain.child.memoryMiB().peak, 3),
          },
        };
        r.goals = o.goals(r, s);
      } finally {
        for (const c of children) await c.stop();
        await sink?.close();
        await nats.stop();
      }
      return r;
    },
  };
  return scenario;
}
