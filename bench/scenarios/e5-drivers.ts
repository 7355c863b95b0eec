/**
 * E5 bus drivers alone: N events published (64 publishes in flight, each resolving on the
 * broker's acknowledgement) and received by a subscription that acknowledges each one, in one
 * process, through each of our drivers (jetstream, kafka, dapr) against the raw client doing the
 * same in a process of its own:
 *
 * - jetstream: `createEventBus({ jetstream })` vs nats@2 `js.publish` + a durable pull consumer
 *   (`consume`, ack after the handler, max_ack_pending 64 like the bus's 64 in flight).
 * - kafka: `createEventBus({ kafka })` (1 partition) vs kafkajs `producer.send` per event (acks
 *   all) + a consumer (`eachMessage`, auto-commit) on a 1-partition topic.
 * - dapr (daprd 1.18, pubsub.jetstream rendered by renderDaprComponents): `createEventBus(...,
 *   { via: "dapr" })` vs @dapr/dapr `DaprClient.pubsub.publish` + a `DaprServer` subscriber (app
 *   port), each side with its own daprd.
 *
 * One row in the table: the driver with the lowest ratio (the one that decides); every driver's
 * figures are in `extra.drivers` and each has its own goal (ratio ≥ 0.8). Each run uses a new
 * topic (and stream / group), except the raw Dapr subscriber, whose subscription daprd reads once
 * at start: it keeps one topic and counts from a reset. events/s = N / (first publish → last
 * receipt); CPU is the child's own (process.cpuUsage) over that window. Latency does not apply.
 * Both JetStream sides connect with nats.js `noAsyncTraces` (our driver does); the raw client is also
 * run without it (`extra.jetstreamRawAsyncTraces`): the same code capturing a stack per request.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../lib/load.js";
import { eventBody, eventData, rotate } from "../lib/pipeline.js";
import { selfCpuSeconds, type ChildProc } from "../lib/proc.js";
import { rawJetStream, rawKafka } from "../lib/raw.js";
import { median, ratio, sig } from "../lib/stats.js";
import { emptyResult, type ChildHandle, type Scenario, type ScenarioContext } from "../lib/types.js";

type Driver = "jetstream" | "kafka" | "dapr";
const DRIVERS: readonly Driver[] = ["jetstream", "kafka", "dapr"];
const CONCURRENCY = 64;
const PUBSUB = "default";
const RAW_DAPR_TOPIC = "e5-raw";
const GOAL = 0.8;

const FULL: Record<Driver, number> = { jetstream: 20_000, kafka: 10_000, dapr: 2_000 };
const QUICK: Record<Driver, number> = { jetstream: 200, kafka: 200, dapr: 50 };

interface ChildArgs {
  driver: Driver;
  natsUrl: string;
  brokers: string[];
  daprHttpPort?: number;
  daprGrpcPort?: number;
  /** Raw dapr: where DaprServer listens (daprd's app port). */
  appPort?: number;
  noAsyncTraces?: boolean;
  logLevel: string;
}

interface RunArgs {
  count: number;
  /** New topic / stream / group per run. */
  tag: string;
}

interface Run {
  eventsPerSec: number;
  cpuSecPer10k: number;
  received: number;
  complete: boolean;
}

/** Calls `publish(i)` for i < count with `CONCURRENCY` in flight; rejects on the first failure. */
async function publishAll(count: number, publish: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await publish(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/** Counts receipts; `until(n)` resolves true once n arrived since the last reset, false after 120 s. */
function counter() {
  let got = 0;
  let waiter: { n: number; resolve: (ok: boolean) => void } | undefined;
  return {
    get value() {
      return got;
    },
    reset() {
      got = 0;
    },
    hit() {
      got++;
      if (waiter !== undefined && got >= waiter.n) waiter.resolve(true);
    },
    until(n: number): Promise<boolean> {
      if (got >= n) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 120_000);
        waiter = {
          n,
          resolve: (ok) => {
            clearTimeout(t);
            waiter = undefined;
            resolve(ok);
          },
        };
      });
    },
  };
}

/** Times publishing `count` events and receiving them all; CPU from this process. */
async function timed(count: number, received: ReturnType<typeof counter>, publish: (i: number) => Promise<void>) {
  const c0 = selfCpuSeconds();
  const t0 = performance.now();
  await publishAll(count, publish);
  const complete = await received.until(count);
  const ms = performance.now() - t0;
  const c1 = selfCpuSeconds();
  return {
    eventsPerSec: ((complete ? count : received.value) / ms) * 1000,
    cpuSecPer10k: ((c1 - c0) / count) * 10_000,
    received: received.value,
    complete,
  } satisfies Run;
}

async function run(ctx: ScenarioContext) {
  const r = emptyResult(scenario.id, scenario.title);
  const sizes = ctx.quick ? QUICK : FULL;
  const { NatsServer } = await import("../../test/helpers/nats.js");
  const { KafkaBroker } = await import("../../test/helpers/kafka.js");
  const { Daprd } = await import("../../test/helpers/daprd.js");
  const core = await import("@ofevents/core");
  const { connect } = await import("nats");
  type DaprdT = Awaited<ReturnType<typeof Daprd.start>>;
  ctx.log("E5 starting Kafka, nats-server and 2 daprd sidecars");
  const started = await Promise.allSettled([KafkaBroker.start(), NatsServer.start({ jetstream: true })]);
  const kafka = started[0].status === "fulfilled" ? started[0].value : undefined;
  const nats = started[1].status === "fulfilled" ? started[1].value : undefined;
  const daprds: DaprdT[] = [];
  const children: ChildProc[] = [];
  try {
    for (const x of started) if (x.status === "rejected") throw x.reason;
    const resources = core.renderDaprComponents(
      core.eventBusSchema.parse({
        apiVersion: core.API_VERSION,
        kind: "EventBus",
        metadata: { name: PUBSUB },
        spec: { jetstream: { url: nats!.url } },
      }),
    ) as unknown as Array<Record<string, unknown>>;
    const nc = await connect({ servers: nats!.url });
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: core.daprJetStreamStreamName(RAW_DAPR_TOPIC), subjects: [RAW_DAPR_TOPIC] });
    await nc.close();
    const tag = Date.now().toString(36);
    const rawAppPort = await freePort();
    const [fwD, rawD] = await Promise.all([
      Daprd.start({ appId: `e5-fw-${tag}`, resources, logLevel: "warn" }),
      Daprd.start({ appId: `e5-raw-${tag}`, resources, logLevel: "warn", appPort: rawAppPort, readiness: "outbound" }),
    ]);
    daprds.push(fwD, rawD);

    const base = { natsUrl: nats!.url, brokers: kafka!.brokers, logLevel: ctx.logLevel };
    const spawn = async (role: string, args: ChildArgs): Promise<ChildProc> => {
      const c = await ctx.spawn(role, args, { profile: true });
      children.push(c);
      return c;
    };
    const fw: Record<Driver, ChildProc> = {
      jetstream: await spawn("bus", { ...base, driver: "jetstream" }),
      kafka: await spawn("bus", { ...base, driver: "kafka" }),
      dapr: await spawn("bus", { ...base, driver: "dapr", daprHttpPort: fwD.httpPort, daprGrpcPort: fwD.grpcPort }),
    };
    const raw: Record<Driver, ChildProc> = {
      jetstream: await spawn("raw", { ...base, driver: "jetstream" }),
      kafka: await spawn("raw", { ...base, driver: "kafka" }),
      dapr: await spawn("raw", { ...base, driver: "dapr", daprHttpPort: rawD.httpPort, appPort: rawAppPort }),
    };
    const rawNat = await spawn("raw", { ...base, driver: "jetstream", noAsyncTraces: false });
    for (let i = 0; ; i++) {
      const res = await fetch(`${rawD.httpUrl}/v1.0/healthz`).catch(() => undefined);
      if (res?.status === 204) break;
      if (i > 600) throw new Error(`the raw subscriber's daprd is not healthy:\n${rawD.log.toString().slice(-3000)}`);
      await sleep(100);
    }

    let runNo = 0;
    const once = (child: ChildProc, count: number): Promise<Run> =>
      child.call<Run>("run", { count, tag: `${tag}r${runNo++}` } satisfies RunArgs, 180_000);

    const runs: Record<Driver, { framework: Run[]; raw: Run[] }> = {
      jetstream: { framework: [], raw: [] },
      kafka: { framework: [], raw: [] },
      dapr: { framework: [], raw: [] },
    };
    const rawNatRuns: Run[] = [];
    for (const d of DRIVERS) {
      ctx.log(`E5 warm-up ${d}`);
      await once(fw[d], Math.ceil(sizes[d] / 5));
      await once(raw[d], Math.ceil(sizes[d] / 5));
    }
    await once(rawNat, Math.ceil(sizes.jetstream / 5));
    for (let i = 0; i < ctx.runs; i++) {
      for (const d of DRIVERS) {
        const sides = rotate(
          [
            { name: "framework" as const, child: fw[d] },
            { name: "raw" as const, child: raw[d] },
          ],
          i,
        );
        for (const side of sides) {
          const m = await once(side.child, sizes[d]);
          runs[d][side.name].push(m);
          ctx.log(
            `E5 ${d} ${side.name} run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s, ${m.cpuSecPer10k.toFixed(2)} CPU s/10k${m.complete ? "" : " (INCOMPLETE)"}`,
          );
        }
      }
      const m = await once(rawNat, sizes.jetstream);
      rawNatRuns.push(m);
      ctx.log(`E5 jetstream raw (async traces on) run ${i + 1}: ${Math.round(m.eventsPerSec)} ev/s`);
    }

    const med = (xs: number[]): number => sig(median(xs), 4);
    const drivers: Record<string, Record<string, number | null>> = {};
    for (const d of DRIVERS) {
      const F = runs[d].framework;
      const B = runs[d].raw;
      const eps = med(F.map((m) => m.eventsPerSec));
      const beps = med(B.map((m) => m.eventsPerSec));
      drivers[d] = {
        count: sizes[d],
        eventsPerSec: eps,
        baselineEventsPerSec: beps,
        ratio: sig(ratio(eps, beps) ?? NaN, 3),
        cpuSecPer10k: med(F.map((m) => m.cpuSecPer10k)),
        baselineCpuSecPer10k: med(B.map((m) => m.cpuSecPer10k)),
      };
      if ([...F, ...B].some((m) => !m.complete)) r.notes.push(`${d}: some runs did not receive every event`);
    }
    const worst = DRIVERS.reduce((a, b) => ((drivers[b]!["ratio"] ?? 0) < (drivers[a]!["ratio"] ?? 0) ? b : a));
    const w = drivers[worst]!;
    r.eventsPerSec = w["eventsPerSec"]!;
    r.baselineEventsPerSec = w["baselineEventsPerSec"]!;
    r.ratio = w["ratio"]!;
    r.cpuSecPer10k = w["cpuSecPer10k"]!;
    r.baselineCpuSecPer10k = w["baselineCpuSecPer10k"]!;
    const nat = med(rawNatRuns.map((m) => m.eventsPerSec));
    r.extra = {
      row: worst,
      drivers,
      runs,
      jetstreamRawAsyncTraces: {
        eventsPerSec: nat,
        cpuSecPer10k: med(rawNatRuns.map((m) => m.cpuSecPer10k)),
        frameworkRatioAgainstIt: sig(ratio(drivers["jetstream"]!["eventsPerSec"]!, nat) ?? NaN, 3),
        runs: rawNatRuns,
      },
      concurrency: CONCURRENCY,
      daprd: fwD.version,
      natsServer: nats!.version,
    };
    r.notes.push(`the row is the driver with the lowest ratio (${worst}); every driver's figures are in extra.drivers`);
    r.goals = DRIVERS.map((d) => {
      const x = drivers[d]!["ratio"]!;
      return { name: `E5 ${d} driver ratio`, target: `>= ${GOAL}`, value: x.toFixed(2), pass: x >= GOAL };
    });
  } finally {
    for (const c of children) await c.stop();
    await Promise.allSettled(daprds.map((d) => d.stop()));
    await Promise.allSettled([kafka?.stop(), nats?.stop()]);
  }
  return r;
}

function cloudEvent(i: number) {
  return {
    specversion: "1.0" as const,
    id: randomUUID(),
    source: "/bench/e5",
    type: "io.openfunction.events.bench",
    datacontenttype: "application/json",
    data: eventData(i, 0),
  };
}

const scenario: Scenario = {
  id: "E5",
  title: "bus drivers alone: publish + subscribe + ack (row: the driver with the lowest ratio)",
  run,
  describe(r) {
    const drivers = r.extra["drivers"] as Record<string, Record<string, number>> | undefined;
    if (drivers === undefined) return [];
    const lines = ["", "E5 per driver (events/s, raw client events/s, ratio, CPU s/10k, raw CPU s/10k):"];
    for (const [d, x] of Object.entries(drivers)) {
      lines.push(
        `  ${d.padEnd(10)} ${String(Math.round(x["eventsPerSec"]!)).padStart(7)} ${String(Math.round(x["baselineEventsPerSec"]!)).padStart(7)}  ${x["ratio"]!.toFixed(2)}  ${x["cpuSecPer10k"]!.toFixed(2)}  ${x["baselineCpuSecPer10k"]!.toFixed(2)}`,
      );
    }
    const nat = r.extra["jetstreamRawAsyncTraces"] as
      { eventsPerSec: number; cpuSecPer10k: number; frameworkRatioAgainstIt: number } | undefined;
    if (nat !== undefined)
      lines.push(
        `E5 raw nats client with async traces on (nats.js default): ${Math.round(nat.eventsPerSec)} events/s, ${nat.cpuSecPer10k.toFixed(2)} CPU s/10k (jetstream driver at ${nat.frameworkRatioAgainstIt} of it)`,
      );
    return lines;
  },
  children: {
    /** One of our drivers through `createEventBus`, publishing and subscribing in this process. */
    async bus(rawArgs): Promise<ChildHandle> {
      const a = rawArgs as ChildArgs;
      const core = await import("@ofevents/core");
      const eb = await import("@ofevents/eventbus");
      const logger = core.createLogger({ level: a.logLevel, format: "json" });
      let preparer: { close(): Promise<void> } | undefined;
      let bus: Awaited<ReturnType<typeof eb.createEventBus>>;
      if (a.driver === "jetstream") {
        bus = await eb.createEventBus(
          { jetstream: { url: a.natsUrl, stream: `e5${Date.now().toString(36)}` } },
          { logger },
        );
      } else if (a.driver === "kafka") {
        bus = await eb.createEventBus({ kafka: { brokers: a.brokers.join(","), partitions: 1 } }, { logger });
      } else {
        const p = eb.createJetStreamTopicPreparer(a.natsUrl);
        preparer = p;
        bus = await eb.createEventBus(
          { jetstream: { url: a.natsUrl } },
          {
            logger,
            via: "dapr",
            dapr: {
              pubsubName: PUBSUB,
              httpPort: a.daprHttpPort,
              grpcPort: a.daprGrpcPort,
              prepareTopic: (t) => p.prepareTopic(t),
            },
          },
        );
      }
      const b = bus;
      const received = counter();
      return {
        handlers: {
          run: async (payload) => {
            const p = payload as RunArgs;
            const topic = `e5-${p.tag}`;
            received.reset();
            const sub = await b.subscribe([topic], async () => received.hit(), { group: `g${p.tag}` });
            try {
              return await timed(p.count, received, (i) => b.publish(topic, cloudEvent(i)));
            } finally {
              await sub.close();
            }
          },
        },
        async stop() {
          await b.close();
          await preparer?.close();
        },
      };
    },

    /** The raw client of the driver, publishing and consuming in this process. */
    async raw(rawArgs): Promise<ChildHandle> {
      const a = rawArgs as ChildArgs;
      const received = counter();
      const body = (i: number): Buffer => Buffer.from(eventBody(i, 0));
      if (a.driver === "jetstream") {
        return {
          handlers: {
            run: async (payload) => {
              const p = payload as RunArgs;
              received.reset();
              const js = await rawJetStream({ url: a.natsUrl, tag: p.tag, noAsyncTraces: a.noAsyncTraces !== false });
              try {
                await js.consume(async () => received.hit());
                return await timed(p.count, received, (i) => js.publish(body(i)));
              } finally {
                await js.close();
              }
            },
          },
          async stop() {},
        };
      }
      if (a.driver === "kafka") {
        const { Kafka, logLevel } = await import("kafkajs");
        const admin = new Kafka({
          brokers: a.brokers,
          clientId: "bench-raw-admin",
          logLevel: logLevel.NOTHING,
        }).admin();
        await admin.connect();
        return {
          handlers: {
            run: async (payload) => {
              const p = payload as RunArgs;
              const topic = `e5-raw-${p.tag}`;
              await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
              received.reset();
              const k = await rawKafka(a.brokers);
              try {
                await k.consume(topic, `raw-${p.tag}`, async () => received.hit(), 1);
                return await timed(p.count, received, async (i) => {
                  await k.producer.send({ topic, acks: -1, messages: [{ value: body(i) }] });
                });
              } finally {
                await k.close();
              }
            },
          },
          async stop() {
            await admin.disconnect();
          },
        };
      }
      const { CommunicationProtocolEnum, DaprClient, DaprServer, LogLevel } = await import("@dapr/dapr");
      const client = new DaprClient({
        daprHost: "127.0.0.1",
        daprPort: String(a.daprHttpPort),
        communicationProtocol: CommunicationProtocolEnum.HTTP,
        logger: { level: LogLevel.Error },
      });
      const server = new DaprServer({
        serverHost: "127.0.0.1",
        serverPort: String(a.appPort),
        clientOptions: { daprHost: "127.0.0.1", daprPort: String(a.daprHttpPort) },
        logger: { level: LogLevel.Error },
      });
      await server.pubsub.subscribe(PUBSUB, RAW_DAPR_TOPIC, async () => received.hit());
      await server.start();
      await client.start();
      return {
        handlers: {
          run: async (payload) => {
            const p = payload as RunArgs;
            received.reset();
            return timed(p.count, received, async (i) => {
              const out = await client.pubsub.publish(PUBSUB, RAW_DAPR_TOPIC, eventData(i, 0));
              if (out.error !== undefined) throw out.error;
            });
          },
        },
        async stop() {
          await server.stop();
          await client.stop();
        },
      };
    },
  },
};

export default scenario;
