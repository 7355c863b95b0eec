/**
 * P1 Argo Events, side by side with E2's framework pipeline, in the same run, on the same
 * nats-server, with the same load generator and sink:
 *
 *   Argo:      load → webhook EventSource (`argo-events eventsource-service`) → JetStream →
 *              Sensor (`argo-events sensor-service`: one dependency, an `exprs` filter
 *              `n % 2 == 0` on `body.n`, an HTTP trigger posting the original body) → sink
 *   framework: E2's framework child (startEmbedded: webhook → jetstream bus → trigger with the
 *              input filter `data.n % 2 = 0` → sink)
 *
 * Argo Events v1.9.11 is the pruned build of scripts/test-setup.sh (`$CACHE/bin/argo-events`), run
 * off-cluster as two plain processes configured from environment variables, the way its
 * controller configures the pods: EVENTSOURCE_OBJECT / SENSOR_OBJECT (base64 JSON), EVENTBUS_CONFIG,
 * EVENTBUS_SUBJECT, POD_NAME, and for the sensor a kubeconfig nothing dials (it builds Kubernetes
 * clients at start). Argo's JetStream client always asks for TLS (skipping verification), so the
 * nats-server of this scenario offers TLS (a self-signed certificate made with openssl) with
 * `allow_non_tls`. nats.js upgrades to TLS whenever a server offers it, so the framework's
 * connections are TLS too, the certificate trusted through NODE_EXTRA_CA_CERTS: both sides pay
 * for TLS on the bus (E2 runs without). The sensor's consumer is DeliverNew: it is started first
 * and the eventsource only once the consumer is pulling.
 *
 * Measured like E2: closed loop for events/s, open loop at 1,000 events/s for p50/p99 source →
 * sink (Argo takes about twice that in the closed loop), CPU from /proc (Argo: the eventsource and
 * sensor processes; framework: its process), peak RSS, median of the runs; ratio = framework /
 * Argo. The sides run one at a time, so nats-server's CPU in a side's closed-loop window is that
 * side's use of the broker (extra.natsServerCpuSecPer10k).
 *
 * Fault runs (after the timed runs): an open loop of a bounded count of events at a rate both
 * sides take; once a quarter of the passing events reached the sink, the process that delivers is
 * killed with SIGKILL and started again at once: Argo's sensor (with the trigger's default
 * `atLeastOnce: false`, then with `atLeastOnce: true`) and, for the framework, the E2 flow run as
 * two processes (`ofevents eventsource` and `ofevents trigger`, `--bus-driver direct`), the
 * trigger. Counted by `n`: events accepted by the webhook (2xx), passing the filter, never at the
 * sink (lost), and arrivals beyond the first (duplicates). Both sides keep JetStream's 30 s ack
 * wait (Argo's is not configurable, the framework's default is the same), so a full run waits 35 s
 * after the kill for redeliveries before it counts.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Pool } from "undici";
import { freePort, openLoopCalls } from "../lib/load.js";
import {
  comparePipelines,
  describeRuns,
  eventBody,
  fillFromComparison,
  passes,
  pipelineManifests,
  webhookSourceSpec,
  type PipelineSizes,
  type ThroughputRun,
} from "../lib/pipeline.js";
import { procCpuSeconds, procMemoryMiB, type ChildProc } from "../lib/proc.js";
import { startSink, type SinkServer } from "../lib/sink.js";
import { median, sig } from "../lib/stats.js";
import { emptyResult, type Scenario, type ScenarioContext } from "../lib/types.js";
import e2 from "./e2-jetstream.js";

/** Sizes of the timed runs; `rate` is chosen from Argo's throughput (see RATES). */
const FULL: PipelineSizes = { warmup: 2_000, count: 20_000, concurrency: 64, latencyCount: 5_000, rate: 1000 };
const QUICK: PipelineSizes = { warmup: 100, count: 300, concurrency: 16, latencyCount: 200, rate: 1000 };

interface FaultSizes {
  /** Events sent in one fault run (half of them pass the filter). */
  count: number;
  /** Open-loop rate of the fault runs, events/s. */
  rate: number;
  /** The kill comes once this share of the passing events reached the sink. */
  killAtShare: number;
  /** After the kill, wait at least this long (redeliveries come after JetStream's ack wait). */
  minSettleMs: number;
  /** And at most this long after the load ended for the missing events. */
  maxSettleMs: number;
}
const FAULT_FULL: FaultSizes = {
  count: 2_000,
  rate: 1_000,
  killAtShare: 0.25,
  minSettleMs: 35_000,
  maxSettleMs: 45_000,
};
const FAULT_QUICK: FaultSizes = { count: 200, rate: 200, killAtShare: 0.25, minSettleMs: 0, maxSettleMs: 5_000 };

/** Argo's JetStream stream settings (`EventBus.spec.jetstream.streamConfig`): the controller's defaults, one replica. */
const STREAM_CONFIG =
  "maxMsgs: 50000\nmaxAge: 168h\nmaxBytes: -1\nreplicas: 1\nduplicates: 300s\nretention: 0\ndiscard: 0\n";
const NAMESPACE = "bench";
/** The sensor builds Kubernetes clients at start; nothing dials this address. */
const KUBECONFIG = `apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`;

type ServerProcessT = Awaited<ReturnType<typeof import("../../test/helpers/server.js").ServerProcess.launch>>;

/** Argo's LOG_LEVEL (debug|info|warn|error) for the harness's --log-level. */
function argoLogLevel(level: string): string {
  if (level === "trace" || level === "debug") return "debug";
  if (level === "info") return "info";
  if (level === "warn") return "warn";
  return "error";
}

function b64(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString("base64");
}

interface ArgoOptions {
  bin: string;
  natsUrl: string;
  natsMonitorUrl: string;
  sinkUrl: string;
  /** Names the EventSource (and, suffixed, the Sensor): a new one gets a new DeliverNew consumer. */
  name: string;
  atLeastOnce: boolean;
  logLevel: string;
}

/** Argo's eventsource and sensor processes for one EventSource / Sensor pair. */
class ArgoPipeline {
  private constructor(
    readonly eventsource: ServerProcessT,
    readonly sensor: ServerProcessT,
    readonly webhookUrl: string,
    readonly objects: { eventSource: unknown; sensor: unknown },
  ) {}

  static async start(o: ArgoOptions): Promise<ArgoPipeline> {
    const { ServerProcess } = await import("../../test/helpers/server.js");
    const bus = b64({ jetstream: { url: o.natsUrl, streamConfig: STREAM_CONFIG } });
    const sensorName = `${o.name}-sensor`;
    const subject = `default.${o.name}.orders`;
    const sensorObject = {
      apiVersion: "argoproj.io/v1alpha1",
      kind: "Sensor",
      metadata: { name: sensorName, namespace: NAMESPACE },
      spec: {
        dependencies: [
          {
            name: "order",
            eventSourceName: o.name,
            eventName: "orders",
            // E2's `data.n % 2 = 0`: the webhook puts the POSTed JSON under `body`.
            filters: { exprs: [{ expr: "n % 2 == 0", fields: [{ name: "n", path: "body.n" }] }] },
          },
        ],
        triggers: [
          {
            template: {
              name: "to-sink",
              http: {
                url: o.sinkUrl,
                method: "POST",
                headers: { "Content-Type": "application/json" },
                // dest "": the whole request body is the POSTed JSON (n and t for the sink).
                payload: [{ src: { dependencyName: "order", dataKey: "body" }, dest: "" }],
              },
            },
            atLeastOnce: o.atLeastOnce,
          },
        ],
      },
    };
    const env = (extra: Record<string, string>): NodeJS.ProcessEnv => ({
      PATH: process.env["PATH"],
      HOME: process.env["HOME"],
      EVENTBUS_CONFIG: bus,
      EVENTBUS_SUBJECT: `eventbus-${NAMESPACE}`,
      LOG_LEVEL: argoLogLevel(o.logLevel),
      ...extra,
    });
    // The sensor first: its consumer is DeliverNew, so it must be pulling before events come.
    const sensor = await ServerProcess.launch({
      name: "argo-sensor",
      portCount: 1,
      startTimeoutMs: 60_000,
      stopGraceMs: 5_000,
      configure: async ({ ports, dir }) => {
        await writeFile(join(dir, "kubeconfig"), KUBECONFIG);
        return {
          command: o.bin,
          args: ["sensor-service"],
          env: env({
            SENSOR_OBJECT: b64(sensorObject),
            POD_NAME: `${sensorName}-local`,
            KUBECONFIG: join(dir, "kubeconfig"),
            ARGO_EVENTS_METRICS_ADDR: `127.0.0.1:${ports[0]}`,
          }),
          probe: (signal) => consumerPulling(o.natsMonitorUrl, subject, signal),
        };
      },
    });
    const eventSourceObject = {
      apiVersion: "argoproj.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: o.name, namespace: NAMESPACE },
      spec: { webhook: { orders: { port: "0", endpoint: "/orders", method: "POST" } } },
    };
    let webhookUrl = "";
    let eventsource: ServerProcessT;
    try {
      eventsource = await ServerProcess.launch({
        name: "argo-eventsource",
        portCount: 2,
        startTimeoutMs: 60_000,
        stopGraceMs: 5_000,
        configure: ({ ports }) => {
          webhookUrl = `http://127.0.0.1:${ports[0]}/orders`;
          const object = {
            ...eventSourceObject,
            spec: { webhook: { orders: { ...eventSourceObject.spec.webhook.orders, port: String(ports[0]) } } },
          };
          return {
            command: o.bin,
            args: ["eventsource-service"],
            env: env({
              EVENTSOURCE_OBJECT: b64(object),
              POD_NAME: `${o.name}-eventsource-local`,
              ARGO_EVENTS_METRICS_ADDR: `127.0.0.1:${ports[1]}`,
              ARGO_EVENTS_WEBHOOK_HOST: "127.0.0.1",
            }),
            probe: (signal) => routeActive(webhookUrl, signal),
          };
        },
      });
    } catch (err) {
      await sensor.stop();
      throw err;
    }
    return new ArgoPipeline(eventsource, sensor, webhookUrl, { eventSource: eventSourceObject, sensor: sensorObject });
  }

  /** CPU seconds of the eventsource and the sensor. */
  cpuSeconds(): number {
    return [this.eventsource.pid, this.sensor.pid].reduce<number>(
      (s, pid) => s + (pid === undefined ? 0 : procCpuSeconds(pid)),
      0,
    );
  }

  memoryMiB(): { eventsource: number; sensor: number } {
    const peak = (pid: number | undefined): number => (pid === undefined ? NaN : procMemoryMiB(pid).peak);
    return { eventsource: peak(this.eventsource.pid), sensor: peak(this.sensor.pid) };
  }

  /** SIGKILL the sensor (by its pid), then start it again with the same objects; resolves once it pulls. */
  async killAndRestartSensor(): Promise<void> {
    const pid = this.sensor.pid;
    if (pid === undefined) throw new Error("the Argo sensor is not running");
    process.kill(pid, "SIGKILL");
    await this.sensor.restart();
  }

  async stop(): Promise<void> {
    await Promise.allSettled([this.eventsource.stop()]);
    await Promise.allSettled([this.sensor.stop()]);
  }

  output(): string {
    return `--- argo sensor ---\n${this.sensor.log.toString().slice(-3000)}\n--- argo eventsource ---\n${this.eventsource.log.toString().slice(-3000)}`;
  }
}

/** True once the stream `default` has a consumer on `subject` with a pull request waiting. */
async function consumerPulling(monitorUrl: string, subject: string, signal: AbortSignal): Promise<boolean> {
  const res = await fetch(`${monitorUrl}/jsz?consumers=true&config=true`, { signal });
  const j = (await res.json()) as {
    account_details?: Array<{
      stream_detail?: Array<{
        name: string;
        consumer_detail?: Array<{ config?: { filter_subject?: string }; num_waiting?: number }>;
      }>;
    }>;
  };
  for (const a of j.account_details ?? [])
    for (const s of a.stream_detail ?? [])
      if (s.name === "default")
        for (const c of s.consumer_detail ?? [])
          if (c.config?.filter_subject === subject && (c.num_waiting ?? 0) > 0) return true;
  return false;
}

/** True once the webhook route is active: a GET is refused for its method, not for an inactive route. */
async function routeActive(url: string, signal: AbortSignal): Promise<boolean> {
  const res = await fetch(url, { signal });
  const text = await res.text();
  return /method does not match/.test(text);
}

/** A nats-server with JetStream offering TLS (self-signed) beside plain connections. */
async function startTlsNats(dir: string) {
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const cert = join(dir, "nats-cert.pem");
  const key = join(dir, "nats-key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  const server = await NatsServer.start({
    jetstream: true,
    config: `tls {\n  cert_file: "${cert}"\n  key_file: "${key}"\n}\nallow_non_tls: true\n`,
  });
  return Object.assign(server, { caFile: cert });
}

export interface FaultRun {
  side: string;
  sent: number;
  /** Answered 2xx by the webhook. */
  accepted: number;
  /** Accepted and passing the filter: what the sink must get. */
  passing: number;
  delivered: number;
  lost: number;
  duplicates: number;
  /** Passing events at the sink when the kill came. */
  atKill: number;
  /** From SIGKILL to the restarted process ready (ms). */
  downMs: number;
  /** From the kill to the count (ms). */
  settledMs: number;
}

/**
 * Sends `f.count` events at `f.rate` to `url`; once `f.killAtShare` of the passing events are at
 * the sink, `killAndRestart()`; then waits (bounded) and counts by `n`.
 */
async function faultRun(
  side: string,
  sink: SinkServer,
  url: string,
  f: FaultSizes,
  killAndRestart: () => Promise<void>,
): Promise<FaultRun> {
  sink.reset();
  const u = new URL(url);
  if (u.hostname !== "127.0.0.1") throw new Error(`fault run: only 127.0.0.1 is allowed, got ${u.hostname}`);
  const pool = new Pool(u.origin, { connections: 32, keepAliveTimeout: 30_000 });
  const accepted = new Set<number>();
  const passingTotal = Math.ceil(f.count / 2);
  let killedAt = 0;
  let downMs = 0;
  let atKill = 0;
  const killer = (async () => {
    const killAt = Math.max(1, Math.floor(passingTotal * f.killAtShare));
    const until = performance.now() + (f.count / f.rate) * 1000 + 30_000;
    while (sink.received < killAt && performance.now() < until) await sleep(5);
    if (sink.received < killAt) throw new Error(`${side}: only ${sink.received} events at the sink, no kill`);
    atKill = sink.received;
    killedAt = performance.now();
    await killAndRestart();
    downMs = performance.now() - killedAt;
  })();
  killer.catch(() => undefined); // awaited below, after the load
  try {
    await openLoopCalls({
      count: f.count,
      ratePerSec: f.rate,
      maxOutstanding: 256,
      timeoutMs: (f.count / f.rate) * 1000 + 60_000,
      send: async (i, sentAt) => {
        const res = await pool.request({
          path: u.pathname,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: eventBody(i, sentAt),
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) accepted.add(i);
        else throw new Error(`status ${res.statusCode}`);
      },
    });
    await killer;
  } finally {
    await killer.catch(() => undefined);
    await pool.close();
  }
  const passing = [...accepted].filter((n) => passes({ n }));
  const missing = (): number => passing.filter((n) => !sink.has(n)).length;
  const loadEnd = performance.now();
  while (performance.now() - killedAt < f.minSettleMs || (missing() > 0 && performance.now() - loadEnd < f.maxSettleMs))
    await sleep(100);
  const lost = missing();
  return {
    side,
    sent: f.count,
    accepted: accepted.size,
    passing: passing.length,
    delivered: passing.length - lost,
    lost,
    duplicates: sink.received - sink.distinct,
    atKill,
    downMs: Math.round(downMs),
    settledMs: Math.round(performance.now() - killedAt),
  };
}

/** Median CPU s/10k of nats-server over a side's closed-loop runs. */
function natsCpuOf(runs: readonly ThroughputRun[] | undefined): number {
  return sig(median((runs ?? []).map((m) => m.otherCpuSecPer10k?.["natsServer"] ?? NaN)), 3);
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = { ...(ctx.quick ? QUICK : FULL) };
  const f = ctx.quick ? FAULT_QUICK : FAULT_FULL;
  const { requireExecutable } = await import("../../test/helpers/server.js");
  // Not found: a MissingBinaryError naming `npm run test:setup` (never a skip).
  const bin = requireExecutable("argo-events");
  const argoVersion = execFileSync(bin, ["version"], { encoding: "utf8" }).trim();
  const dir = await mkdtemp(join(tmpdir(), "ofevents-bench-p1-"));
  const nats = await startTlsNats(dir);
  const tag = Date.now().toString(36);
  let sink: SinkServer | undefined;
  const children: ChildProc[] = [];
  const argos: ArgoPipeline[] = [];
  const stopLater: Array<{ stop(): Promise<unknown> }> = [];
  try {
    sink = await startSink();
    const argoOptions = (name: string, atLeastOnce: boolean): ArgoOptions => ({
      bin,
      natsUrl: nats.url,
      natsMonitorUrl: nats.monitorUrl,
      sinkUrl: sink!.url,
      name,
      atLeastOnce,
      logLevel: ctx.logLevel,
    });

    // ---- timed runs: E2's framework child beside Argo's two processes
    const fwPort = await freePort();
    const fw = await ctx.spawn(
      "framework",
      { port: fwPort, sinkUrl: sink.url, natsUrl: nats.url, tag: `p1${tag}`, logLevel: ctx.logLevel },
      { profile: true, env: { NODE_EXTRA_CA_CERTS: nats.caFile } },
    );
    children.push(fw);
    ctx.log(`P1 starting Argo Events ${argoVersion} (sensor, then eventsource)`);
    const argo = await ArgoPipeline.start(argoOptions(`p1-${tag}`, false));
    // The sides run one at a time, so the broker's CPU in a side's window is that side's use of it.
    const natsCpu = (): number => (nats.pid === undefined ? NaN : procCpuSeconds(nats.pid));
    argos.push(argo);
    const c = await comparePipelines(
      "P1",
      ctx,
      sink,
      [
        {
          name: "framework",
          url: `http://127.0.0.1:${fwPort}/orders`,
          cpu: () => fw.cpuSeconds(),
          monitored: [fw],
          others: { natsServer: natsCpu },
        },
        {
          name: "argo",
          url: argo.webhookUrl,
          cpu: () => argo.cpuSeconds(),
          monitored: [],
          others: { natsServer: natsCpu },
        },
      ],
      s,
    );
    fillFromComparison(r, c, { framework: "framework", baseline: "argo" });
    const argoMem = argo.memoryMiB();
    const fwPeak = fw.memoryMiB().peak;
    await fw.stop();
    await argo.stop();

    // ---- fault runs
    ctx.log(`P1 fault runs: ${f.count} events at ${f.rate}/s, SIGKILL + restart of the delivering process`);
    const faults: FaultRun[] = [];
    for (const atLeastOnce of [false, true]) {
      const a = await ArgoPipeline.start(argoOptions(`p1f-${tag}-${atLeastOnce ? "alo" : "amo"}`, atLeastOnce));
      argos.push(a);
      try {
        const fr = await faultRun(`argo atLeastOnce ${atLeastOnce}`, sink, a.webhookUrl, f, () =>
          a.killAndRestartSensor(),
        );
        faults.push(fr);
        ctx.log(`P1 fault ${fr.side}: ${JSON.stringify(fr)}`);
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${a.output()}`, { cause: err });
      } finally {
        await a.stop();
      }
    }
    {
      const { OfeventsProcess } = await import("../../test/helpers/ofevents.js");
      const manifests = join(dir, "framework-fault.yaml");
      const port = await freePort();
      await writeFile(
        manifests,
        pipelineManifests({
          name: "bench",
          busSpec: `  jetstream:\n    url: "${nats.url}"\n    stream: "p1f${tag}"`,
          sourceSpec: webhookSourceSpec(port),
          event: "orders",
          sinkUrl: sink.url,
        }),
      );
      const start = (command: "eventsource" | "trigger", name: string) =>
        OfeventsProcess.start({
          command,
          files: [manifests],
          name,
          logLevel: ctx.logLevel,
          args: ["--bus-driver", "direct"],
          env: { NODE_EXTRA_CA_CERTS: nats.caFile },
        });
      // The trigger first, as for Argo: its group must exist before the source publishes.
      let trigger = await start("trigger", "trigger");
      stopLater.push({ stop: () => trigger.stop() });
      const source = await start("eventsource", "eventsource");
      stopLater.push(source);
      const fr = await faultRun("framework", sink, `http://127.0.0.1:${port}/orders`, f, async () => {
        await trigger.kill("SIGKILL");
        trigger = await start("trigger", "trigger (restarted)");
      });
      faults.push(fr);
      ctx.log(`P1 fault ${fr.side}: ${JSON.stringify(fr)}`);
    }

    const fwFault = faults.find((x) => x.side === "framework")!;
    r.extra = {
      argoEvents: argoVersion,
      argoFilter: 'filters.exprs: [{expr: "n % 2 == 0", fields: [{name: n, path: body.n}]}]',
      filter: "data.n % 2 = 0",
      natsServer: nats.version,
      natsTls: "TLS offered (self-signed) with allow_non_tls; both sides connect with TLS",
      logLevel: ctx.logLevel,
      argoLogLevel: argoLogLevel(ctx.logLevel),
      sizes: s,
      rateForLatency: s.rate,
      throughputRuns: c.throughput,
      latencyRuns: c.latency,
      peakRssMiB: {
        framework: sig(fwPeak, 3),
        argo: sig(argoMem.eventsource + argoMem.sensor, 3),
        argoEventsource: sig(argoMem.eventsource, 3),
        argoSensor: sig(argoMem.sensor, 3),
      },
      natsServerCpuSecPer10k: {
        framework: natsCpuOf(c.throughput["framework"]),
        argo: natsCpuOf(c.throughput["argo"]),
      },
      fault: { sizes: f, runs: faults },
    };
    r.notes.push(
      "baseline columns are Argo Events (eventsource + sensor processes); ratio = framework / Argo",
      "both sides reach nats-server over TLS (Argo's client always asks for it; nats.js takes it when offered): E2 runs without",
    );
    if (ctx.quick)
      r.notes.push(
        "quick run: the fault runs do not wait out JetStream's 30 s ack wait, so redeliveries may be missing",
      );
    r.goals = [
      {
        name: "P1 throughput ratio (framework / Argo Events)",
        target: ">= 1.0",
        value: r.ratio!.toFixed(2),
        pass: r.ratio! >= 1,
      },
      {
        name: "P1 framework trigger SIGKILL",
        target: "lost = 0",
        value: `lost ${fwFault.lost} of ${fwFault.passing}, ${fwFault.duplicates} duplicates`,
        pass: ctx.quick ? null : fwFault.lost === 0,
      },
    ];
  } finally {
    for (const c of children) await c.stop();
    for (const x of stopLater.reverse()) await x.stop().catch(() => undefined);
    for (const a of argos) await a.stop();
    await sink?.close();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return r;
}

const scenario: Scenario = {
  id: "P1",
  title: "Peer: Argo Events (webhook → JetStream → sensor, exprs filter → HTTP trigger) beside E2's pipeline",
  run,
  describe(r) {
    const lines = describeRuns("P1", r.extra, (r.extra["rateForLatency"] as number | undefined) ?? 1000);
    const n = r.extra["natsServerCpuSecPer10k"] as { framework: number; argo: number } | undefined;
    if (n !== undefined)
      lines.push(
        `P1 CPU s/10k of nats-server during each side's closed-loop runs: framework ${n.framework}, Argo ${n.argo}`,
      );
    const rss = r.extra["peakRssMiB"] as Record<string, number> | undefined;
    if (rss !== undefined)
      lines.push(
        `P1 peak RSS MiB: framework ${rss["framework"]}, Argo ${rss["argo"]} (eventsource ${rss["argoEventsource"]}, sensor ${rss["argoSensor"]})`,
      );
    const fault = r.extra["fault"] as { sizes: FaultSizes; runs: FaultRun[] } | undefined;
    if (fault !== undefined) {
      lines.push(
        `P1 fault runs (${fault.sizes.count} events at ${fault.sizes.rate}/s, SIGKILL + restart of the delivering process):`,
      );
      for (const x of fault.runs)
        lines.push(
          `  ${x.side.padEnd(26)} accepted ${x.accepted}, passing ${x.passing}, delivered ${x.delivered}, lost ${x.lost}, duplicates ${x.duplicates} (kill at ${x.atKill}, down ${x.downMs} ms)`,
        );
    }
    return lines;
  },
  children: {
    framework: e2.children!["framework"]!,
  },
};

export default scenario;
