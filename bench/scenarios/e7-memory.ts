/**
 * E7 memory: RSS of a trigger whose sink has stalled (takes requests, never answers) while a
 * producer publishes 100,000 events to the memory bus it consumes, in a child process of its
 * own (so the RSS is the trigger's). RSS is sampled when 10k, 50k and 100k events have been
 * published, then every second for a few seconds with the producer held (flat or growing?).
 *
 * The memory bus makes `publish` wait while a group's queue holds 10,000 events: with the
 * default bus the producer blocks near 10k and the later samples are never reached. That is the
 * backpressure the design asks for, so the figure is bounded by design, and the output says so.
 * A second framework run lifts the bound (maxQueued 1,000,000, not reachable from manifests) to
 * show what a queued event costs.
 *
 * Baseline, same shape: a hand-written consumer holding the events encoded in an array (as the
 * bus does), with 16 requests in flight to the same stalled sink, no bound.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request } from "undici";
import type { ChildProc } from "../lib/proc.js";
import { startSink } from "../lib/sink.js";
import { ratio, sig } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

const SOURCE = "/apis/v1/namespaces/default/eventsources/bench";
const TYPE = "io.openfunction.events.webhook";
const MiB = 2 ** 20;

interface FillArgs {
  sinkUrl: string;
  logLevel: string;
  /** Memory bus bound; null: the default. */
  maxQueued: number | null;
  target: number;
  checkpoints: number[];
  /** No publish progress for this long: the producer is blocked. */
  stallMs: number;
  /** After the fill, sample this long with the producer held. */
  holdMs: number;
  timeoutMs: number;
}

interface Sample {
  phase: "fill" | "hold";
  published: number;
  queued: number;
  atMs: number;
  rssMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
}

interface FillResult {
  samples: Sample[];
  published: number;
  /** The producer waited in publish (backpressure) and never got further. */
  blocked: boolean;
  timedOut: boolean;
  idleRssMiB: number;
  /** Time to publish the first checkpoint's events. */
  firstCheckpointMs: number | null;
  fillMs: number;
}

function data(n: number): unknown {
  return {
    n,
    t: 0,
    order: {
      id: `o-${n}`,
      amount: (n * 37) % 500,
      currency: "EUR",
      customer: { id: `c-${n % 100}`, tier: n % 3 === 0 ? "gold" : "silver" },
    },
  };
}

/**
 * Publishes up to `a.target` events with `publish`, yielding to the event loop every 500 events
 * (as a source serving requests would), and samples memory. Bounded by count and time; stops
 * when publish makes no progress for `stallMs`.
 */
async function fill(a: FillArgs, publish: (n: number) => Promise<void>, consumed: () => number): Promise<FillResult> {
  const mem = (phase: Sample["phase"], published: number, t0: number): Sample => {
    const m = process.memoryUsage();
    return {
      phase,
      published,
      queued: published - consumed(),
      atMs: Math.round(performance.now() - t0),
      rssMiB: sig(m.rss / MiB, 4),
      heapUsedMiB: sig(m.heapUsed / MiB, 4),
      externalMiB: sig((m.external + m.arrayBuffers) / MiB, 4),
    };
  };
  const idleRssMiB = sig(process.memoryUsage().rss / MiB, 4);
  const samples: Sample[] = [];
  const t0 = performance.now();
  let published = 0;
  let progressAt = performance.now();
  let stalled = false;
  let timedOut = false;
  let firstCheckpointMs: number | null = null;
  const producer = (async () => {
    for (let n = 0; n < a.target && !stalled; n++) {
      if (performance.now() - t0 > a.timeoutMs) {
        timedOut = true;
        return;
      }
      await publish(n);
      published++;
      progressAt = performance.now();
      if (a.checkpoints.includes(published)) {
        samples.push(mem("fill", published, t0));
        firstCheckpointMs ??= performance.now() - t0;
      }
      if (published % 500 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  // Watch for a producer stuck in publish; bounded by the overall timeout.
  let done = false;
  void producer.finally(() => (done = true)).catch(() => undefined);
  while (!done) {
    await Promise.race([producer.catch(() => undefined), sleep(Math.min(100, a.stallMs))]);
    if (done) break;
    if (performance.now() - progressAt >= a.stallMs || performance.now() - t0 > a.timeoutMs + a.stallMs) {
      stalled = true;
      break;
    }
  }
  const fillMs = (stalled ? progressAt : performance.now()) - t0;
  for (let left = a.holdMs; left > 0; left -= 1000) {
    await sleep(Math.min(1000, left));
    samples.push(mem("hold", published, t0));
  }
  return { samples, published, blocked: stalled, timedOut, idleRssMiB, firstCheckpointMs, fillMs: Math.round(fillMs) };
}

interface VariantResult extends FillResult {
  name: string;
  peakRssMiB: number;
  cpuSecPer10k: number;
}

async function runVariant(ctx: ScenarioContext, name: string, role: string, args: FillArgs): Promise<VariantResult> {
  const child: ChildProc = await ctx.spawn(role, args, { profile: role === "framework" });
  try {
    const c0 = child.cpuSeconds();
    const r = await child.call<FillResult>("fill", null, args.timeoutMs + args.stallMs + args.holdMs + 30_000);
    const cpu = child.cpuSeconds() - c0;
    const peak = child.memoryMiB().peak;
    ctx.log(
      `E7 ${name}: published ${r.published}${r.blocked ? " (publish blocked)" : ""}, peak RSS ${peak.toFixed(1)} MiB`,
    );
    return { name, ...r, peakRssMiB: sig(peak, 4), cpuSecPer10k: sig((cpu / Math.max(1, r.published)) * 10_000, 4) };
  } finally {
    await child.stop();
  }
}

function flatness(v: VariantResult): { flat: boolean; growthMiB: number } {
  // From the first checkpoint on, RSS may not grow by more than max(16 MiB, 10%).
  const first = v.samples[0];
  if (first === undefined) return { flat: false, growthMiB: NaN };
  const max = Math.max(...v.samples.map((s) => s.rssMiB));
  const growth = max - first.rssMiB;
  return { flat: growth <= Math.max(16, first.rssMiB * 0.1), growthMiB: sig(growth, 3) };
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const sink = await startSink({ mode: "stall" });
  const base = ctx.quick
    ? { target: 2_000, checkpoints: [500, 1_000, 2_000], stallMs: 500, holdMs: 1_000, timeoutMs: 10_000 }
    : { target: 100_000, checkpoints: [10_000, 50_000, 100_000], stallMs: 1_500, holdMs: 5_000, timeoutMs: 25_000 };
  const common = { ...base, sinkUrl: sink.url, logLevel: ctx.logLevel };
  let variants: VariantResult[];
  try {
    const fw = await runVariant(ctx, "framework (default bus)", "framework", { ...common, maxQueued: null });
    sink.reset();
    const unbounded = await runVariant(ctx, "framework (bus bound lifted)", "framework", {
      ...common,
      maxQueued: 1_000_000,
    });
    sink.reset();
    const bl = await runVariant(ctx, "baseline", "baseline", { ...common, maxQueued: null });
    variants = [fw, unbounded, bl];
  } finally {
    await sink.close();
  }
  const [fw, unbounded, bl] = variants as [VariantResult, VariantResult, VariantResult];
  // Fill rate up to the first checkpoint, the span both sides reach.
  const fillRate = (v: VariantResult): number | null =>
    v.firstCheckpointMs === null ? null : base.checkpoints[0]! / (v.firstCheckpointMs / 1000);
  r.eventsPerSec = sig(fillRate(fw) ?? NaN, 4);
  r.baselineEventsPerSec = sig(fillRate(bl) ?? NaN, 4);
  r.ratio = sig(ratio(r.eventsPerSec, r.baselineEventsPerSec) ?? NaN, 3);
  r.cpuSecPer10k = fw.cpuSecPer10k;
  r.baselineCpuSecPer10k = bl.cpuSecPer10k;
  const at = (v: VariantResult, n: number): number | null =>
    v.samples.find((s) => s.phase === "fill" && s.published === n)?.rssMiB ?? null;
  const summary = (v: VariantResult) => ({
    ...Object.fromEntries(base.checkpoints.map((n) => [`rssAt${n}`, at(v, n)])),
    idleRssMiB: v.idleRssMiB,
    peakRssMiB: v.peakRssMiB,
    published: v.published,
    blocked: v.blocked,
    ...flatness(v),
    samples: v.samples,
    fillMs: v.fillMs,
    cpuSecPer10k: v.cpuSecPer10k,
  });
  r.extra = {
    unit: "events/s: publish rate up to the first checkpoint; RSS in MiB",
    checkpoints: base.checkpoints,
    framework: summary(fw),
    frameworkUnbounded: summary(unbounded),
    baseline: summary(bl),
  };
  if (fw.blocked) {
    r.notes.push(
      `the producer blocked after ${fw.published} events: the memory bus makes publish wait while a group holds 10,000 queued events (backpressure by design), so the ${base.checkpoints.slice(1).join(" and ")} samples are never reached and the peak is bounded by that design`,
    );
  }
  if (fw.timedOut || unbounded.timedOut || bl.timedOut) r.notes.push("a fill hit its time bound before the target");
  const flat = flatness(fw);
  r.goals = [
    {
      name: "E7 trigger RSS with a stalled sink",
      target: "<= 256 MiB and flat",
      value: `peak ${fw.peakRssMiB.toFixed(1)} MiB, ${flat.flat ? "flat" : "growing"} (+${flat.growthMiB} MiB after the first sample)${fw.blocked ? `, bounded by backpressure at ${fw.published} events` : ""}`,
      pass: fw.peakRssMiB <= 256 && flat.flat,
    },
  ];
  return r;
}

function trigger(sinkUrl: string): unknown {
  return {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "Trigger",
    metadata: { name: "bench" },
    spec: {
      eventBus: "default",
      inputs: { order: { eventSource: "bench", event: "orders" } },
      subscribers: [{ condition: "order", sink: { uri: sinkUrl } }],
    },
  };
}

const scenario: Scenario = {
  id: "E7",
  title: "memory: trigger with a stalled sink while events queue on the memory bus",
  run,
  describe(r) {
    const lines = ["", "E7 RSS (MiB) by events published:"];
    for (const key of ["framework", "frameworkUnbounded", "baseline"]) {
      const v = r.extra[key] as
        { samples: Sample[]; peakRssMiB: number; idleRssMiB: number; blocked: boolean; published: number } | undefined;
      if (v === undefined) continue;
      const pts = v.samples
        .map((s) => `${s.phase === "hold" ? "held " : ""}${s.published}: ${s.rssMiB.toFixed(0)}`)
        .join(", ");
      lines.push(
        `  ${key.padEnd(18)} idle ${v.idleRssMiB.toFixed(0)}, ${pts}; peak ${v.peakRssMiB.toFixed(0)}${v.blocked ? ` (publish blocked at ${v.published})` : ""}`,
      );
    }
    return lines;
  },
  children: {
    async framework(raw): Promise<ChildHandle> {
      const a = raw as FillArgs;
      const core = await import("@ofevents/core");
      const { createSinkClient } = await import("@ofevents/delivery");
      const { createMemoryBus } = await import("@ofevents/eventbus");
      const { startTrigger } = await import("@ofevents/trigger");
      const logger = core.createLogger({ level: a.logLevel, format: "json" });
      const bus = createMemoryBus({ logger, ...(a.maxQueued === null ? {} : { maxQueued: a.maxQueued }) });
      const t = await startTrigger(core.triggerSchema.parse(trigger(a.sinkUrl)), {
        bus,
        logger,
        engine: core.createExpressionEngine(),
        sinks: createSinkClient(),
      });
      let received = 0;
      t.events.on("received", () => received++);
      const topic = core.busTopic("default", "bench", "orders");
      return {
        handlers: {
          fill: () =>
            fill(
              a,
              (n) =>
                bus.publish(
                  topic,
                  core.newEvent({
                    source: SOURCE,
                    type: TYPE,
                    subject: "orders",
                    datacontenttype: "application/json",
                    data: data(n),
                  }),
                ),
              () => received,
            ),
        },
        // Deliveries hang on the stalled sink: a graceful stop would wait for their timeouts.
        async stop() {},
      };
    },

    async baseline(raw): Promise<ChildHandle> {
      const a = raw as FillArgs;
      const agent = new Agent({ connections: 64, keepAliveTimeout: 10_000 });
      const queue: Buffer[] = [];
      let head = 0;
      let inFlight = 0;
      let taken = 0;
      const pump = (): void => {
        while (inFlight < 16 && head < queue.length) {
          const bytes = queue[head]!;
          queue[head++] = undefined as unknown as Buffer;
          taken++;
          inFlight++;
          const ev = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
          request(a.sinkUrl, {
            method: "POST",
            dispatcher: agent,
            headers: {
              "content-type": "application/json",
              "ce-specversion": "1.0",
              "ce-id": String(ev["id"]),
              "ce-source": String(ev["source"]),
              "ce-type": String(ev["type"]),
            },
            body: JSON.stringify(ev["data"]),
          })
            .then((res) => res.body.dump())
            .catch(() => undefined)
            .finally(() => {
              inFlight--;
              pump();
            });
        }
      };
      const publish = async (n: number): Promise<void> => {
        const ev = {
          specversion: "1.0",
          id: randomUUID(),
          source: SOURCE,
          type: TYPE,
          subject: "orders",
          time: new Date().toISOString(),
          datacontenttype: "application/json",
          data: data(n),
        };
        queue.push(Buffer.from(JSON.stringify(ev)));
        pump();
      };
      return {
        handlers: { fill: () => fill(a, publish, () => taken) },
        async stop() {},
      };
    },
  },
};

export default scenario;
