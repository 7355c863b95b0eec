/**
 * E4 Dapr: the E2 flow through Dapr sidecars: load → webhook EventSource (`startSingle`, the
 * `ofevents eventsource` entrypoint, `dapr` bus driver) → its daprd → NATS JetStream → the
 * trigger's daprd → Trigger (`startSingle`, input filter `data.n % 2 = 0`) → HTTP sink. Each
 * framework process has its own daprd (1.18, `pubsub.jetstream` Component and Resiliency as
 * renderDaprComponents renders them for the EventBus: concurrency single).
 *
 * Baseline, same daprd set-up (the same Component file, two sidecars): a Node HTTP server that
 * publishes each body with the bare @dapr/dapr DaprClient (HTTP) and answers once daprd did; a
 * bare @dapr/dapr DaprServer subscriber (app port, daprd calls it) that applies the predicate in
 * JS and forwards to the sink with undici.
 *
 * Second peer (a third side, `daprRules`): what a team builds with Dapr alone, with its filter
 * declared instead of coded: the same publisher and daprd pair, and a plain HTTP app (no SDK) whose
 * daprd has a declarative Subscription (dapr.io/v2alpha1) with the filter as a routing rule (CEL),
 * passing events to /even (forwarded to the sink) and the rest to /other (answered, dropped).
 *
 * Through daprd's JetStream component one message at a time is handed to each app per topic, so
 * both sides run far below E2's rate; latency is measured at 200 events/s (not 1,000: neither
 * side can take that). CPU s/10k is of the two app processes per side; the daprds' CPU is in
 * `extra` (it is the same kind of work for both).
 */
import { createServer } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../lib/load.js";
import {
  closeServer,
  comparePipelines,
  cpuOf,
  createForwarder,
  describeRuns,
  fillFromComparison,
  listen,
  passes,
  pipelineManifests,
  webhookSourceSpec,
  singleChild,
  withLoopMonitor,
  type PipelineSizes,
  type ThroughputRun,
} from "../lib/pipeline.js";
import { procCpuSeconds, type ChildProc } from "../lib/proc.js";
import { startSink, type SinkServer } from "../lib/sink.js";
import { median, sig } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

const FULL: PipelineSizes = { warmup: 500, count: 3_000, concurrency: 32, latencyCount: 1_000, rate: 200 };
const QUICK: PipelineSizes = { warmup: 20, count: 100, concurrency: 8, latencyCount: 50, rate: 100 };
const PUBSUB = "default";
const BASELINE_TOPIC = "e4-baseline";
const PEER_TOPIC = "e4-rules";
/**
 * The second peer's filter, as a Dapr routing rule (CEL). JSON numbers reach CEL as doubles, and
 * CEL's `%` takes integers, hence `int()`; the load's `n` is an integer, so E2's half passes.
 */
const PEER_MATCH = "int(event.data.n) % 2 == 0";

interface FwArgs {
  kind: "EventSource" | "Trigger";
  manifests: string;
  daprHttpPort: number;
  daprGrpcPort: number;
  logLevel: string;
}

interface PublisherArgs {
  port: number;
  daprHttpPort: number;
  topic: string;
}

interface RulesSubscriberArgs {
  appPort: number;
  sinkUrl: string;
}

interface SubscriberArgs {
  appPort: number;
  daprHttpPort: number;
  sinkUrl: string;
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const s = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const { Daprd } = await import("../../test/helpers/daprd.js");
  const core = await import("@ofevents/core");
  const { connect } = await import("nats");
  type DaprdT = Awaited<ReturnType<typeof Daprd.start>>;
  const nats = await NatsServer.start({ jetstream: true });
  const daprds: DaprdT[] = [];
  let sink: SinkServer | undefined;
  const children: ChildProc[] = [];
  try {
    sink = await startSink();
    const busSpec = { jetstream: { url: nats.url } };
    const resources = core.renderDaprComponents(
      core.eventBusSchema.parse({
        apiVersion: core.API_VERSION,
        kind: "EventBus",
        metadata: { name: PUBSUB },
        spec: busSpec,
      }),
    ) as unknown as Array<Record<string, unknown>>;
    // pubsub.jetstream never creates streams: the baseline's, as the framework's preparer does.
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: core.daprJetStreamStreamName(BASELINE_TOPIC), subjects: [BASELINE_TOPIC] });
    await jsm.streams.add({ name: core.daprJetStreamStreamName(PEER_TOPIC), subjects: [PEER_TOPIC] });
    await nc.close();

    ctx.log("E4 starting nats-server and 6 daprd sidecars");
    const blAppPort = await freePort();
    const peerAppPort = await freePort();
    const tag = Date.now().toString(36);
    // The second peer: a Dapr-only app whose filter is a routing rule of a declarative
    // Subscription; daprd sends the passing events to /even and the rest to /other.
    const subscription = {
      apiVersion: "dapr.io/v2alpha1",
      kind: "Subscription",
      metadata: { name: "e4-rules" },
      spec: {
        pubsubname: PUBSUB,
        topic: PEER_TOPIC,
        routes: { rules: [{ match: PEER_MATCH, path: "/even" }], default: "/other" },
      },
    };
    const [esD, trD, pubD, subD, peerPubD, peerSubD] = await Promise.all([
      Daprd.start({ appId: `e4-es-${tag}`, resources, logLevel: "warn" }),
      Daprd.start({ appId: `e4-tr-${tag}`, resources, logLevel: "warn" }),
      Daprd.start({ appId: `e4-pub-${tag}`, resources, logLevel: "warn" }),
      // The subscriber's app is not up yet: wait for the components only, then for /healthz below.
      Daprd.start({ appId: `e4-sub-${tag}`, resources, logLevel: "warn", appPort: blAppPort, readiness: "outbound" }),
      Daprd.start({ appId: `e4-rpub-${tag}`, resources, logLevel: "warn" }),
      Daprd.start({
        appId: `e4-rsub-${tag}`,
        resources: [...resources, subscription],
        logLevel: "warn",
        appPort: peerAppPort,
        readiness: "outbound",
      }),
    ]);
    daprds.push(esD, trD, pubD, subD, peerPubD, peerSubD);

    const webhookPort = await freePort();
    const manifests = pipelineManifests({
      name: "bench",
      busSpec: `  jetstream:\n    url: "${nats.url}"`,
      sourceSpec: webhookSourceSpec(webhookPort),
      event: "orders",
      sinkUrl: sink.url,
    });
    const fwArgs = (kind: FwArgs["kind"], d: DaprdT): FwArgs => ({
      kind,
      manifests,
      daprHttpPort: d.httpPort,
      daprGrpcPort: d.grpcPort,
      logLevel: ctx.logLevel,
    });
    // The trigger first: its subscription must exist before the source publishes.
    const fwTrigger = await ctx.spawn("framework", fwArgs("Trigger", trD), { profile: true });
    children.push(fwTrigger);
    const fwSource = await ctx.spawn("framework", fwArgs("EventSource", esD), { profile: true });
    children.push(fwSource);

    const blSub = await ctx.spawn(
      "subscriber",
      { appPort: blAppPort, daprHttpPort: subD.httpPort, sinkUrl: sink.url } satisfies SubscriberArgs,
      { profile: true },
    );
    children.push(blSub);
    const peerSub = await ctx.spawn(
      "rulesSubscriber",
      { appPort: peerAppPort, sinkUrl: sink.url } satisfies RulesSubscriberArgs,
      { profile: true },
    );
    children.push(peerSub);
    // daprd reports healthy once it read the app's subscriptions and started them.
    for (const [what, d] of [
      ["baseline", subD],
      ["second peer", peerSubD],
    ] as const) {
      for (let i = 0; ; i++) {
        const res = await fetch(`${d.httpUrl}/v1.0/healthz`).catch(() => undefined);
        if (res?.status === 204) break;
        if (i > 600)
          throw new Error(`the ${what} subscriber's daprd is not healthy:\n${d.log.toString().slice(-3000)}`);
        await sleep(100);
      }
    }
    const blPort = await freePort();
    const blPub = await ctx.spawn(
      "publisher",
      { port: blPort, daprHttpPort: pubD.httpPort, topic: BASELINE_TOPIC } satisfies PublisherArgs,
      { profile: true },
    );
    children.push(blPub);
    const peerPort = await freePort();
    const peerPub = await ctx.spawn(
      "publisher",
      { port: peerPort, daprHttpPort: peerPubD.httpPort, topic: PEER_TOPIC } satisfies PublisherArgs,
      { profile: true },
    );
    children.push(peerPub);

    const daprCpu = (ds: DaprdT[]) => () =>
      ds.reduce((sum, d) => sum + (d.pid === undefined ? 0 : procCpuSeconds(d.pid)), 0);
    const c = await comparePipelines(
      "E4",
      ctx,
      sink,
      [
        {
          name: "framework",
          url: `http://127.0.0.1:${webhookPort}/orders`,
          cpu: cpuOf([fwSource, fwTrigger]),
          monitored: [fwSource, fwTrigger],
          others: { daprd: daprCpu([esD, trD]) },
        },
        {
          name: "baseline",
          url: `http://127.0.0.1:${blPort}/orders`,
          cpu: cpuOf([blPub, blSub]),
          monitored: [blPub, blSub],
          others: { daprd: daprCpu([pubD, subD]) },
        },
        {
          name: "daprRules",
          url: `http://127.0.0.1:${peerPort}/orders`,
          cpu: cpuOf([peerPub, peerSub]),
          monitored: [peerPub, peerSub],
          others: { daprd: daprCpu([peerPubD, peerSubD]) },
        },
      ],
      s,
    );
    fillFromComparison(r, c, { framework: "framework", baseline: "baseline" });
    const daprdCpu = (runs: ThroughputRun[] | undefined): number =>
      sig(median((runs ?? []).map((m) => m.otherCpuSecPer10k?.["daprd"] ?? NaN)), 3);
    r.extra = {
      filter: "data.n % 2 = 0",
      daprd: esD.version,
      natsServer: nats.version,
      component: "pubsub.jetstream, rendered by renderDaprComponents (concurrency single)",
      logLevel: ctx.logLevel,
      sizes: s,
      rateForLatency: s.rate,
      throughputRuns: c.throughput,
      latencyRuns: c.latency,
      daprdCpuSecPer10k: {
        framework: daprdCpu(c.throughput["framework"]),
        baseline: daprdCpu(c.throughput["baseline"]),
        daprRules: daprdCpu(c.throughput["daprRules"]),
      },
      secondPeer: peerFigures(c.throughput["daprRules"], c.latency["daprRules"], r.eventsPerSec!),
      peakRssMiB: {
        framework: sig(fwSource.memoryMiB().peak + fwTrigger.memoryMiB().peak, 3),
        baseline: sig(blPub.memoryMiB().peak + blSub.memoryMiB().peak, 3),
        daprRules: sig(peerPub.memoryMiB().peak + peerSub.memoryMiB().peak, 3),
      },
    };
    r.notes.push(
      `latency at ${s.rate}/s (daprd's JetStream component hands one message at a time per topic to each app); CPU is of the two app processes per side, the daprds' in extra.daprdCpuSecPer10k`,
    );
    r.goals = [{ name: "E4 throughput ratio", target: ">= 0.8", value: r.ratio!.toFixed(2), pass: r.ratio! >= 0.8 }];
  } finally {
    for (const c of children) await c.stop();
    await sink?.close();
    await Promise.allSettled(daprds.map((d) => d.stop()));
    await nats.stop();
  }
  return r;
}

interface PeerFigures {
  eventsPerSec: number;
  cpuSecPer10k: number;
  p50Ms: number;
  p99Ms: number;
  /** framework events/s / the peer's. */
  frameworkRatio: number;
}

function peerFigures(
  tp: ThroughputRun[] | undefined,
  lat: Array<{ p50: number; p99: number }> | undefined,
  framework: number,
): PeerFigures {
  const med = (xs: number[]): number => sig(median(xs), 4);
  const eventsPerSec = med((tp ?? []).map((m) => m.eventsPerSec));
  return {
    eventsPerSec,
    cpuSecPer10k: med((tp ?? []).map((m) => m.cpuSecPer10k)),
    p50Ms: med((lat ?? []).map((m) => m.p50)),
    p99Ms: med((lat ?? []).map((m) => m.p99)),
    frameworkRatio: sig(framework / eventsPerSec, 3),
  };
}

const scenario: Scenario = {
  id: "E4",
  title: "Dapr: webhook → daprd → JetStream → daprd → trigger (JSONata filter) → HTTP sink",
  run,
  describe(r) {
    const lines = describeRuns("E4", r.extra, (r.extra["rateForLatency"] as number | undefined) ?? 200);
    const d = r.extra["daprdCpuSecPer10k"] as { framework: number; baseline: number; daprRules?: number } | undefined;
    if (d !== undefined)
      lines.push(
        `E4 CPU s/10k of the two daprd sidecars: framework side ${d.framework}, baseline side ${d.baseline}` +
          (d.daprRules === undefined ? "" : `, second peer ${d.daprRules}`),
      );
    const p = r.extra["secondPeer"] as PeerFigures | undefined;
    if (p !== undefined)
      lines.push(
        `E4 second peer (Dapr-only app, declarative Subscription, filter as the routing rule \`${PEER_MATCH}\`): ` +
          `${Math.round(p.eventsPerSec)} events/s, ${p.cpuSecPer10k} CPU s/10k, p50/p99 ${p.p50Ms}/${p.p99Ms} ms; framework / peer ${p.frameworkRatio}`,
      );
    return lines;
  },
  children: {
    /** One framework entrypoint (`ofevents eventsource` or `ofevents trigger`) next to its daprd. */
    async framework(raw): Promise<ChildHandle> {
      const a = raw as FwArgs;
      // What the sidecar injector sets; the dapr driver reads them.
      process.env["DAPR_HTTP_PORT"] = String(a.daprHttpPort);
      process.env["DAPR_GRPC_PORT"] = String(a.daprGrpcPort);
      return singleChild({
        kind: a.kind,
        manifests: a.manifests,
        logLevel: a.logLevel,
        busDriver: "dapr",
        pubsubName: PUBSUB,
      });
    },

    async publisher(raw): Promise<ChildHandle> {
      const a = raw as PublisherArgs;
      const { CommunicationProtocolEnum, DaprClient, LogLevel } = await import("@dapr/dapr");
      const client = new DaprClient({
        daprHost: "127.0.0.1",
        daprPort: String(a.daprHttpPort),
        communicationProtocol: CommunicationProtocolEnum.HTTP,
        logger: { level: LogLevel.Error },
      });
      await client.start();
      const server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          let data: object;
          try {
            data = JSON.parse(Buffer.concat(chunks).toString("utf8")) as object;
          } catch {
            res.writeHead(400, { "content-length": "0" }).end();
            return;
          }
          client.pubsub.publish(PUBSUB, a.topic, data).then(
            (out) => res.writeHead(out.error === undefined ? 200 : 503, { "content-length": "0" }).end(),
            () => res.writeHead(503, { "content-length": "0" }).end(),
          );
        });
      });
      await listen(server, a.port);
      return withLoopMonitor({
        async stop() {
          await closeServer(server);
          await client.stop();
        },
      });
    },

    /** The second peer's app: plain HTTP, no SDK; daprd's routing rule decides which path an event takes. */
    async rulesSubscriber(raw): Promise<ChildHandle> {
      const a = raw as RulesSubscriberArgs;
      const sink = createForwarder(a.sinkUrl);
      const server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          if (req.method === "GET") {
            // No programmatic subscriptions: the declarative Subscription holds the routes.
            res.writeHead(req.url === "/dapr/subscribe" ? 200 : 404, { "content-type": "application/json" }).end("[]");
            return;
          }
          if (req.url !== "/even") {
            res.writeHead(200, { "content-length": "0" }).end();
            return;
          }
          let envelope: { data?: unknown };
          try {
            envelope = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { data?: unknown };
          } catch {
            res.writeHead(400, { "content-length": "0" }).end();
            return;
          }
          sink.send(JSON.stringify(envelope.data)).then(
            // Anything but 2xx makes daprd redeliver.
            (status) => res.writeHead(status >= 200 && status < 300 ? 200 : 500, { "content-length": "0" }).end(),
            () => res.writeHead(500, { "content-length": "0" }).end(),
          );
        });
      });
      await listen(server, a.appPort);
      return withLoopMonitor({
        async stop() {
          await closeServer(server);
          await sink.close();
        },
      });
    },

    async subscriber(raw): Promise<ChildHandle> {
      const a = raw as SubscriberArgs;
      const { DaprServer, LogLevel } = await import("@dapr/dapr");
      const sink = createForwarder(a.sinkUrl);
      const server = new DaprServer({
        serverHost: "127.0.0.1",
        serverPort: String(a.appPort),
        clientOptions: { daprHost: "127.0.0.1", daprPort: String(a.daprHttpPort) },
        logger: { level: LogLevel.Error },
      });
      await server.pubsub.subscribe(PUBSUB, BASELINE_TOPIC, async (data: unknown) => {
        if (!passes(data)) return;
        const status = await sink.send(JSON.stringify(data));
        if (status < 200 || status >= 300) throw new Error(`sink answered ${status}`);
      });
      await server.start();
      return withLoopMonitor({
        async stop() {
          await server.stop();
          await sink.close();
        },
      });
    },
  },
};

export default scenario;
