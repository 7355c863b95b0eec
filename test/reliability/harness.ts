/**
 * Shared machinery of the fault suites (test/reliability/*.test.ts): per-bus broker sets and
 * manifests, HTTP sinks that count, fail at random or stall, the pipeline
 *
 *   Kafka topic → Kafka EventSource process → bus → Trigger process → HTTP sink (+ dead-letter sink)
 *
 * with each process killable and restartable, direct publishing of a backlog onto the bus, RSS
 * sampling, the tally of sent / delivered / dead-lettered / lost ids and its figures line.
 *
 * Buses: `jetstream` and `kafka` run their processes with `ofevents run` (the direct drivers);
 * `dapr` runs the container entrypoints `ofevents eventsource` / `ofevents trigger`, each next to
 * its own daprd carrying a JetStream Component rendered by renderDaprComponents.
 *
 * Event ids are `{kafka topic}/{partition}/{offset}` (the Kafka source derives them from the
 * record position), so the ids that must arrive are known from the topic's end offsets.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Kafka, logLevel } from "kafkajs";
import { expect } from "vitest";
import { connect, type NatsConnection } from "nats";
import { stringify } from "yaml";
import {
  API_VERSION,
  eventBusSchema,
  renderDaprComponents,
  silentLogger,
  type CloudEvent,
  type EventBus as EventBusResource,
} from "@ofevents/core";
import { createEventBus, type EventBus } from "@ofevents/eventbus";
import { Daprd } from "../helpers/daprd.js";
import { KafkaBroker } from "../helpers/kafka.js";
import { NatsServer } from "../helpers/nats.js";
import { OfeventsProcess } from "../helpers/ofevents.js";
import { reportFigures } from "../helpers/report.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

export type BusKind = "jetstream" | "kafka" | "dapr";

/** Partitions of the Kafka topic the EventSource reads (the source handles them concurrently). */
export const SOURCE_PARTITIONS = 3;
/** The EventBus every manifest names (the Dapr Component is named after it). */
const BUS = "default";
const MiB = 1024 * 1024;

export function mib(bytes: number): number {
  return Math.round((bytes / MiB) * 10) / 10;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence, so a failure replays. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the sink does with one request: answer 200 (counted), 500 (not counted) or nothing yet. */
export type SinkAnswer = "ok" | "fail" | "stall";

/**
 * An HTTP sink on 127.0.0.1 receiving binary-mode CloudEvents. `answer(id)` decides each request;
 * only 2xx answers count as delivered. Stalled requests are held until release().
 */
export class TestSink {
  /** Ids answered 2xx, with how many times. */
  readonly counts = new Map<string, number>();
  /** 2xx answers, duplicates included. */
  total = 0;
  /** Requests received, whatever the answer. */
  received = 0;
  /** 500 answers. */
  failed = 0;
  answer: (id: string) => SinkAnswer = () => "ok";
  url = "";
  readonly #held: Array<{ id: string; res: ServerResponse }> = [];
  #server: Server | undefined;

  async start(): Promise<this> {
    this.#server = createServer((req, res) => {
      const id = String(req.headers["ce-id"]);
      req.resume();
      req.on("end", () => {
        this.received++;
        const a = this.answer(id);
        if (a === "stall") this.#held.push({ id, res });
        else if (a === "fail") {
          this.failed++;
          res.writeHead(500).end();
        } else this.#ok(id, res);
      });
    });
    await new Promise<void>((r) => this.#server!.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/sink`;
    return this;
  }

  /** Requests being held (stalled) right now. */
  get held(): number {
    return this.#held.length;
  }

  get delivered(): number {
    return this.counts.size;
  }

  /** 2xx answers beyond the first for an id. */
  get duplicates(): number {
    return this.total - this.counts.size;
  }

  /** Answers 200 from now on, and to every held request. */
  release(): void {
    this.answer = () => "ok";
    for (const { id, res } of this.#held.splice(0)) this.#ok(id, res);
  }

  async stop(): Promise<void> {
    if (this.#server === undefined) return;
    this.#held.splice(0);
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server!.close(() => r()));
    this.#server = undefined;
  }

  #ok(id: string, res: ServerResponse): void {
    if (res.destroyed) return; // the trigger gave up on it (timeout): not an answer
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.total++;
    res.writeHead(200).end();
  }
}

export interface PipelineOptions {
  sink: TestSink;
  deadLetterSink?: TestSink;
  /** The subscriber's `delivery` block, as a YAML flow mapping. */
  delivery: string;
  /** JetStream `ackWait` (jetstream and dapr buses): how soon a killed trigger's messages come back. */
  ackWait?: string;
}

/** The brokers of one test file, and the pipelines its tests built (stopped with it). */
export class ReliabilityEnv {
  readonly #pipelines: Pipeline[] = [];

  private constructor(
    readonly bus: BusKind,
    readonly kafka: KafkaBroker,
    readonly nats: NatsServer | undefined,
    readonly dir: string,
  ) {}

  /** Kafka (the EventSource's input, and the bus for `kafka`) plus nats-server with JetStream for the others. */
  static async start(bus: BusKind): Promise<ReliabilityEnv> {
    const [kafka, nats] = await Promise.all([
      KafkaBroker.start(),
      bus === "kafka" ? Promise.resolve(undefined) : NatsServer.start({ jetstream: true }),
    ]);
    return new ReliabilityEnv(bus, kafka, nats, await mkdtemp(join(tmpdir(), `ofevents-reliability-${bus}-`)));
  }

  /** Writes one test's manifests and creates its Kafka input topic; starts nothing yet. */
  async pipeline(o: PipelineOptions): Promise<Pipeline> {
    const p = new Pipeline(this, o);
    this.#pipelines.push(p);
    await p.init();
    return p;
  }

  /** Restarts the bus's broker (nats-server for jetstream and dapr, Kafka for kafka) on the same ports and data. */
  async restartBroker(): Promise<void> {
    if (this.bus === "kafka") await this.kafka.restart();
    else await this.nats!.restart();
  }

  kafkaClient(): Kafka {
    return new Kafka({ brokers: this.kafka.brokers, logLevel: logLevel.NOTHING, clientId: "reliability-test" });
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.#pipelines.map((p) => p.close()));
    await Promise.allSettled([this.kafka.stop(), this.nats?.stop()]);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** One test's pipeline: its Kafka input topic, manifests, processes and (dapr) sidecars. */
export class Pipeline {
  readonly tag = randomSuffix();
  /** The Kafka topic the EventSource reads. */
  readonly input = `input-${this.tag}`;
  /** The bus topic the source publishes to and the trigger consumes. */
  readonly topic: string;
  readonly files: { bus: string; source: string; trigger: string };
  trigger: OfeventsProcess | undefined;
  source: OfeventsProcess | undefined;
  /** Records produced into the input topic so far. */
  produced = 0;
  readonly #bus: EventBusResource;
  #esDaprd: Daprd | undefined;
  #trDaprd: Daprd | undefined;
  readonly #procs: OfeventsProcess[] = [];

  constructor(
    private readonly env: ReliabilityEnv,
    private readonly o: PipelineOptions,
  ) {
    const source = `src-${this.tag}`;
    this.topic = `default-${source}-orders`;
    this.files = {
      bus: join(env.dir, `bus-${this.tag}.yaml`),
      source: join(env.dir, `source-${this.tag}.yaml`),
      trigger: join(env.dir, `trigger-${this.tag}.yaml`),
    };
    this.#bus = eventBusSchema.parse({
      apiVersion: API_VERSION,
      kind: "EventBus",
      metadata: { name: BUS },
      spec:
        env.bus === "kafka"
          ? { kafka: { brokers: env.kafka.brokers.join(","), partitions: 3 } }
          : { jetstream: { url: env.nats!.url, ackWait: o.ackWait ?? "5s" } },
    });
  }

  get bus(): BusKind {
    return this.env.bus;
  }

  async init(): Promise<void> {
    const admin = this.env.kafkaClient().admin();
    await admin.connect();
    try {
      await admin.createTopics({
        topics: [{ topic: this.input, numPartitions: SOURCE_PARTITIONS }],
        waitForLeaders: true,
      });
    } finally {
      await admin.disconnect();
    }
    const doc = (kind: string, name: string, spec: string) =>
      `apiVersion: ${API_VERSION}\nkind: ${kind}\nmetadata: { name: ${name}, namespace: default }\nspec:\n${spec}`;
    await writeFile(this.files.bus, stringify(this.#bus));
    await writeFile(
      this.files.source,
      doc(
        "EventSource",
        `src-${this.tag}`,
        `  eventBus: ${BUS}
  kafka:
    orders:
      brokers: "${this.env.kafka.brokers.join(",")}"
      topic: ${this.input}
      authRequired: false
      startFrom: oldest
`,
      ),
    );
    const dls =
      this.o.deadLetterSink === undefined ? "" : `      deadLetterSink: { uri: "${this.o.deadLetterSink.url}" }\n`;
    await writeFile(
      this.files.trigger,
      doc(
        "Trigger",
        `fwd-${this.tag}`,
        `  eventBus: ${BUS}
  inputs:
    order: { eventSource: src-${this.tag}, event: orders }
  subscribers:
    - condition: order
      sink: { uri: "${this.o.sink.url}" }
${dls}      delivery: ${this.o.delivery}
`,
      ),
    );
  }

  /** Starts (or restarts) the trigger process; resolves once its subscription exists. */
  async startTrigger(name = "trigger"): Promise<OfeventsProcess> {
    if (this.bus === "dapr") this.#trDaprd ??= await this.#daprd(`tr-${this.tag}`);
    this.trigger = await this.#start(name, this.files.trigger, this.#trDaprd);
    return this.trigger;
  }

  /** Starts (or restarts) the EventSource process. */
  async startSource(name = "eventsource"): Promise<OfeventsProcess> {
    if (this.bus === "dapr") this.#esDaprd ??= await this.#daprd(`es-${this.tag}`);
    this.source = await this.#start(name, this.files.source, this.#esDaprd);
    return this.source;
  }

  /**
   * Produces `count` records `{ n }` into the input topic, round-robin over its partitions; with
   * `perSecond`, paced in batches of 50 (so the flow is still going when a fault strikes).
   */
  async produce(count: number, perSecond?: number): Promise<void> {
    const producer = this.env.kafkaClient().producer();
    await producer.connect();
    try {
      const batch = perSecond === undefined ? 1_000 : 50;
      const t0 = Date.now();
      for (let i = 0; i < count; i += batch) {
        const n = Math.min(batch, count - i);
        const base = this.produced;
        await producer.send({
          topic: this.input,
          messages: Array.from({ length: n }, (_, j) => ({
            partition: (base + j) % SOURCE_PARTITIONS,
            value: JSON.stringify({ n: base + j }),
          })),
        });
        this.produced += n;
        if (perSecond !== undefined) {
          const due = t0 + ((i + n) / perSecond) * 1000;
          if (due > Date.now()) await delay(due - Date.now());
        }
      }
    } finally {
      await producer.disconnect();
    }
  }

  /** Every id the sinks must see: `{topic}/{partition}/{offset}` of each record in the input topic. */
  async expectedIds(): Promise<Set<string>> {
    // Retried for a while: right after a broker restart the partitions may have no leader yet.
    for (let attempt = 1; ; attempt++) {
      const admin = this.env.kafkaClient().admin();
      try {
        await admin.connect();
        const ids = new Set<string>();
        for (const { partition, offset, low } of await admin.fetchTopicOffsets(this.input))
          for (let o = Number(low); o < Number(offset); o++) ids.add(`${this.input}/${partition}/${o}`);
        return ids;
      } catch (err) {
        if (attempt >= 20) throw err;
        await delay(1_000);
      } finally {
        await admin.disconnect();
      }
    }
  }

  /**
   * Publishes `count` events of about `payloadBytes` straight onto the bus topic (the direct
   * driver in this process; for dapr, raw CloudEvents onto the topic's JetStream stream, as daprd
   * stores them), `concurrency` at a time. Calls `progress(published)` after each one. Returns the ids.
   */
  async publishBacklog(
    count: number,
    o: { payloadBytes: number; concurrency?: number; progress?: (published: number) => void },
  ): Promise<Set<string>> {
    const pad = "x".repeat(o.payloadBytes);
    const ids = Array.from({ length: count }, (_, i) => `backlog-${this.tag}-${i}`);
    const event = (i: number): CloudEvent => ({
      specversion: "1.0",
      id: ids[i]!,
      source: "/reliability/backlog",
      type: "dev.ofevents.reliability",
      datacontenttype: "application/json",
      data: { n: i, pad },
    });
    let publish: (e: CloudEvent) => Promise<void>;
    let close: () => Promise<void>;
    if (this.bus === "dapr") {
      const nc: NatsConnection = await connect({ servers: this.env.nats!.url });
      const js = nc.jetstream();
      publish = async (e) => void (await js.publish(this.topic, JSON.stringify(e), { msgID: e.id }));
      close = () => nc.drain();
    } else {
      const bus: EventBus = await createEventBus(this.#bus.spec, { logger: silentLogger() });
      publish = (e) => bus.publish(this.topic, e);
      close = () => bus.close();
    }
    try {
      let next = 0;
      let done = 0;
      const worker = async (): Promise<void> => {
        while (next < count) {
          const i = next++;
          await publish(event(i));
          o.progress?.(++done);
        }
      };
      await Promise.all(Array.from({ length: o.concurrency ?? 64 }, worker));
    } finally {
      await close();
    }
    return new Set(ids);
  }

  /** The processes' and sidecars' last lines, for failure messages. */
  diagnose(): string {
    const parts = [this.trigger, this.source].filter((p) => p !== undefined).map((p) => p.output());
    for (const [name, d] of [
      ["trigger daprd", this.#trDaprd],
      ["eventsource daprd", this.#esDaprd],
    ] as const)
      if (d !== undefined) parts.push(`--- ${name} ---\n${d.log.lines().slice(-40).join("\n")}`);
    return parts.join("\n");
  }

  /** Kills what still runs (SIGTERM, SIGKILL after a grace period) and stops the sidecars. */
  async close(graceMs = 10_000): Promise<void> {
    await Promise.allSettled(this.#procs.map((p) => p.stop(graceMs)));
    await Promise.allSettled([this.#esDaprd?.stop(), this.#trDaprd?.stop()]);
  }

  async #start(name: string, file: string, daprd: Daprd | undefined): Promise<OfeventsProcess> {
    const p = await OfeventsProcess.start({
      command: daprd === undefined ? "run" : file === this.files.trigger ? "trigger" : "eventsource",
      files: [this.files.bus, file],
      name,
      ...(daprd === undefined
        ? {}
        : { env: { DAPR_HTTP_PORT: String(daprd.httpPort), DAPR_GRPC_PORT: String(daprd.grpcPort) } }),
    });
    this.#procs.push(p);
    return p;
  }

  async #daprd(appId: string): Promise<Daprd> {
    return Daprd.start({ appId, resources: renderDaprComponents(this.#bus).map((r) => stringify(r)) });
  }
}

export interface Tally {
  sent: number;
  delivered: number;
  deadLettered: number;
  /** 2xx answers beyond the first per id, on both sinks, plus ids that reached both. */
  duplicates: number;
  /** Ids both delivered and dead-lettered. */
  both: number;
  lost: number;
  /** Ids the sinks saw that were never sent. */
  unexpected: number;
}

export function tally(sent: ReadonlySet<string>, sink: TestSink, deadLetterSink?: TestSink): Tally {
  const dead = deadLetterSink?.counts ?? new Map<string, number>();
  let lost = 0;
  let both = 0;
  for (const id of sent) {
    if (!sink.counts.has(id) && !dead.has(id)) lost++;
    if (sink.counts.has(id) && dead.has(id)) both++;
  }
  let unexpected = 0;
  for (const id of [...sink.counts.keys(), ...dead.keys()]) if (!sent.has(id)) unexpected++;
  return {
    sent: sent.size,
    delivered: sink.counts.size,
    deadLettered: dead.size,
    duplicates: sink.duplicates + (deadLetterSink?.duplicates ?? 0) + both,
    both,
    lost,
    unexpected,
  };
}

/**
 * Waits until every sent id reached the sink or the dead-letter sink, then `quietMs` more for late
 * duplicates; returns the tally.
 */
export async function settle(
  sent: ReadonlySet<string>,
  sinks: { sink: TestSink; deadLetterSink?: TestSink },
  o: { timeoutMs: number; diagnose: () => string; quietMs?: number },
): Promise<Tally> {
  const missing = () => tally(sent, sinks.sink, sinks.deadLetterSink).lost;
  await waitFor(() => missing() === 0, {
    timeoutMs: o.timeoutMs,
    intervalMs: 100,
    message: () => `${missing()} of ${sent.size} ids neither delivered nor dead-lettered\n${o.diagnose()}`,
  });
  await delay(o.quietMs ?? 1_500);
  return tally(sent, sinks.sink, sinks.deadLetterSink);
}

/** Prints the test's one figures line: `reliability <bus> <fault>: sent=… delivered=… … lost=…`. */
export function figures(bus: BusKind, fault: string, t: Tally, extra: Record<string, string | number> = {}): void {
  const more = Object.entries(extra)
    .map(([k, v]) => ` ${k}=${v}`)
    .join("");
  reportFigures(
    `reliability ${bus} ${fault}: sent=${t.sent} delivered=${t.delivered} duplicates=${t.duplicates} deadLettered=${t.deadLettered} lost=${t.lost}${more}`,
  );
}

/** RSS samples of a process, taken every `intervalMs` until stop(). */
export class RssSampler {
  readonly samples: Array<{ at: number; rss: number }> = [];
  #stopped = false;
  readonly #loop: Promise<void>;

  constructor(
    private readonly proc: OfeventsProcess,
    intervalMs = 250,
  ) {
    this.#loop = (async () => {
      while (!this.#stopped) {
        const rss = await proc.rss();
        if (rss !== undefined) this.samples.push({ at: Date.now(), rss });
        await delay(intervalMs);
      }
    })();
  }

  /** Takes one sample now and returns it (bytes). */
  async sample(): Promise<number> {
    const rss = await this.proc.rss();
    if (rss === undefined) throw new Error(`${this.proc.name} is not running\n${this.proc.output()}`);
    this.samples.push({ at: Date.now(), rss });
    return rss;
  }

  get max(): number {
    return Math.max(...this.samples.map((s) => s.rss));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }
}

// ---- the faults ---------------------------------------------------------------------------------

/** Retries enough to ride out a restart; the delivery of each event is the sink's business. */
const DELIVERY = "{ retry: 10, backoffDelay: 50ms, concurrency: 32 }";
const SETTLE_MS = 180_000;

/**
 * Waits until every sent id reached the sink, prints the figures line (`extra` is read once
 * settled, so the durations in it end there) and asserts that every event was delivered: none
 * lost, none unexpected.
 */
async function settleDelivered(
  env: ReliabilityEnv,
  p: { diagnose(): string },
  sink: TestSink,
  sent: ReadonlySet<string>,
  fault: string,
  extra: () => Record<string, string | number>,
): Promise<Tally> {
  const t = await settle(sent, { sink }, { timeoutMs: SETTLE_MS, diagnose: () => p.diagnose() });
  figures(env.bus, fault, t, extra());
  expect(t.lost).toBe(0);
  expect(t.unexpected).toBe(0);
  expect(t.delivered).toBe(sent.size);
  return t;
}

/**
 * Fault 1: the trigger process is killed with SIGKILL once a fifth of the events were delivered,
 * then started again: every event is delivered (duplicates allowed), none lost.
 */
export async function triggerSigkill(env: ReliabilityEnv, o: { events: number }): Promise<void> {
  const sink = await new TestSink().start();
  const p = await env.pipeline({ sink, delivery: DELIVERY, ackWait: "3s" });
  try {
    await p.produce(o.events);
    const sent = await p.expectedIds();
    expect(sent.size).toBe(o.events);
    // A new consumer group starts with new events: the trigger subscribes before the source publishes.
    await p.startTrigger();
    await p.startSource();
    await waitFor(() => sink.delivered >= o.events / 5, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `${sink.delivered} delivered before the kill\n${p.diagnose()}`,
    });
    const exit = await p.trigger!.kill("SIGKILL");
    const atKill = sink.delivered;
    const killedAt = Date.now();
    expect(exit.signal).toBe("SIGKILL");
    // Mid-flow: some delivered, not all.
    expect(atKill).toBeGreaterThan(0);
    expect(atKill).toBeLessThan(o.events);
    await p.startTrigger("trigger (restarted)");
    await settleDelivered(env, p, sink, sent, "trigger SIGKILL", () => ({
      deliveredAtKill: atKill,
      recoveredMs: Date.now() - killedAt,
    }));
  } finally {
    await p.close();
    await sink.stop();
  }
}

/**
 * Fault 2: the EventSource process is killed with SIGKILL while records are still being produced
 * into its Kafka topic, then started again: it resumes from its committed offsets; nothing lost.
 */
export async function sourceSigkill(env: ReliabilityEnv, o: { events: number; perSecond: number }): Promise<void> {
  const sink = await new TestSink().start();
  const p = await env.pipeline({ sink, delivery: DELIVERY });
  try {
    await p.startTrigger();
    await p.startSource();
    // A tenth first, delivered before the rest is produced (paced): the kill then falls while
    // records are still coming, however long the pipeline took to warm up.
    const warm = Math.floor(o.events / 10);
    await p.produce(warm);
    await waitFor(() => sink.delivered >= warm, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `${sink.delivered}/${warm} delivered\n${p.diagnose()}`,
    });
    const producing = p.produce(o.events - warm, o.perSecond);
    producing.catch(() => {});
    // Killed as soon as the first paced records got through: the source is mid-flow, not done.
    await waitFor(() => sink.delivered >= warm + Math.ceil(o.events / 50), {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `${sink.delivered} delivered before the kill (${p.produced} produced)\n${p.diagnose()}`,
    });
    const exit = await p.source!.kill("SIGKILL");
    const atKill = sink.delivered;
    const producedAtKill = p.produced;
    const killedAt = Date.now();
    expect(exit.signal).toBe("SIGKILL");
    // Mid-flow: some delivered, and records still to come that only the restarted source can take.
    expect(atKill).toBeGreaterThan(0);
    expect(producedAtKill).toBeLessThan(o.events);
    await p.startSource("eventsource (restarted)");
    await producing;
    const sent = await p.expectedIds();
    expect(sent.size).toBe(o.events);
    await settleDelivered(env, p, sink, sent, "eventsource SIGKILL", () => ({
      deliveredAtKill: atKill,
      producedAtKill,
      recoveredMs: Date.now() - killedAt,
    }));
  } finally {
    await p.close();
    await sink.stop();
  }
}

/**
 * Fault 3: the bus's broker is restarted (same ports and data) once a fifth of the events were
 * delivered. With `perSecond` the records are produced while it happens (the source is publishing
 * through the restart); without, they are all in Kafka first. Clients reconnect; nothing lost.
 */
export async function brokerRestart(env: ReliabilityEnv, o: { events: number; perSecond?: number }): Promise<void> {
  const sink = await new TestSink().start();
  const p = await env.pipeline({ sink, delivery: DELIVERY });
  try {
    let sent: Set<string> | undefined;
    if (o.perSecond === undefined) {
      await p.produce(o.events);
      sent = await p.expectedIds();
    }
    await p.startTrigger();
    await p.startSource();
    const producing = o.perSecond === undefined ? Promise.resolve() : p.produce(o.events, o.perSecond);
    producing.catch(() => {});
    await waitFor(() => sink.delivered >= o.events / 5, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `${sink.delivered} delivered before the restart\n${p.diagnose()}`,
    });
    const atRestart = sink.delivered;
    const t0 = Date.now();
    await env.restartBroker();
    const restartMs = Date.now() - t0;
    expect(atRestart).toBeGreaterThan(0);
    expect(atRestart).toBeLessThan(o.events);
    await producing;
    sent ??= await p.expectedIds();
    expect(sent.size).toBe(o.events);
    await settleDelivered(env, p, sink, sent, "broker restart", () => ({
      deliveredAtRestart: atRestart,
      restartMs,
      recoveredMs: Date.now() - t0,
    }));
    // Both processes rode it out: neither exited.
    expect(p.trigger!.running).toBe(true);
    expect(p.source!.running).toBe(true);
  } finally {
    await p.close();
    await sink.stop();
  }
}

/**
 * Fault 4: the sink answers 500 to 30 % of the requests (seeded), with 2 retries and a
 * dead-letter sink: each sent id is delivered or dead-lettered, exactly one of the two.
 */
export async function failingSink(env: ReliabilityEnv, o: { events: number; seed: number }): Promise<void> {
  const random = mulberry32(o.seed);
  const sink = await new TestSink().start();
  sink.answer = () => (random() < 0.3 ? "fail" : "ok");
  const dls = await new TestSink().start();
  const p = await env.pipeline({
    sink,
    deadLetterSink: dls,
    delivery: "{ retry: 2, backoffDelay: 10ms, concurrency: 32 }",
  });
  try {
    await p.produce(o.events);
    const sent = await p.expectedIds();
    expect(sent.size).toBe(o.events);
    await p.startTrigger();
    await p.startSource();
    const t = await settle(sent, { sink, deadLetterSink: dls }, { timeoutMs: SETTLE_MS, diagnose: () => p.diagnose() });
    figures(env.bus, "failing sink 30%", t, { answered500: sink.failed, seed: o.seed });
    expect(t.lost).toBe(0);
    expect(t.unexpected).toBe(0);
    expect(t.both).toBe(0);
    expect(t.delivered + t.deadLettered).toBe(o.events);
    // Both paths were taken: retries that succeeded, and events that ran out of retries.
    expect(sink.failed).toBeGreaterThan(0);
    expect(t.deadLettered).toBeGreaterThan(0);
  } finally {
    await p.close();
    await sink.stop();
    await dls.stop();
  }
}

export interface StalledOptions {
  /** Events published onto the bus while the sink is stalled. */
  backlog: number;
  payloadBytes: number;
  /** Bound on the trigger's RSS at every sample. */
  maxRss: number;
  /** Most the RSS may grow from the middle sample (half the backlog published) to the end one. */
  growthMargin: number;
  /** Overrides the subscriber's delivery block (to check that the bound can fail). */
  delivery?: string;
  ackWait?: string;
}

/**
 * Fault 5: the sink holds every request unanswered while a backlog is published onto the bus: the
 * trigger's RSS stays under `maxRss` and does not keep growing from the middle of the backlog to
 * its end. Then the sink answers again and the backlog drains: nothing lost.
 */
export async function stalledSink(env: ReliabilityEnv, o: StalledOptions): Promise<void> {
  const sink = await new TestSink().start();
  sink.answer = () => "stall";
  // An attempt outlasts the stall: nothing times out, nothing is dead-lettered meanwhile.
  const p = await env.pipeline({
    sink,
    delivery: o.delivery ?? "{ retry: 3, backoffDelay: 100ms, concurrency: 16, timeout: 300s }",
    ackWait: o.ackWait ?? "60s",
  });
  try {
    const trigger = await p.startTrigger();
    const rss = new RssSampler(trigger);
    const start = await rss.sample();
    let mid: Promise<number> | undefined;
    const t0 = Date.now();
    const sent = await p.publishBacklog(o.backlog, {
      payloadBytes: o.payloadBytes,
      progress: (n) => {
        if (n === Math.floor(o.backlog / 2)) mid = rss.sample();
      },
    });
    const publishMs = Date.now() - t0;
    await waitFor(() => sink.held > 0, {
      timeoutMs: 60_000,
      intervalMs: 100,
      message: () => `no delivery reached the stalled sink\n${p.diagnose()}`,
    });
    // Time for the trigger to take in whatever it would take (a few pulls/fetches).
    await delay(5_000);
    const middle = await mid!;
    const end = await rss.sample();
    await rss.stop();
    const held = sink.held;
    expect(sink.delivered).toBe(0);
    sink.release();
    const released = Date.now();
    await settleDelivered(env, p, sink, sent, "stalled sink", () => ({
      held,
      rss: `${mib(rss.max)}MiB`,
      rssStart: `${mib(start)}MiB`,
      rssMid: `${mib(middle)}MiB`,
      rssEnd: `${mib(end)}MiB`,
      publishMs,
      drainMs: Date.now() - released,
    }));
    expect(rss.max).toBeLessThanOrEqual(o.maxRss);
    expect(end - middle).toBeLessThanOrEqual(o.growthMargin);
  } finally {
    await p.close(2_000);
    await sink.stop();
  }
}
