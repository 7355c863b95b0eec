/**
 * Shared machinery of the tests of a trigger subscriber's ordering, dedup, batch and rate limit on
 * the durable buses: a real broker (nats-server with JetStream, or Kafka), the trigger as its own
 * process (`ofevents trigger --bus-driver direct`, killable with SIGKILL and restartable), events
 * published straight onto the bus topic of input `a`, and a real HTTP sink recording arrival times.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { API_VERSION, newEvent, silentLogger, type CloudEvent, type EventBusSpec } from "@ofevents/core";
import { createEventBus, type EventBus } from "@ofevents/eventbus";
import { Sink, busiest } from "../packages/trigger/test/support.js";
import { KafkaBroker } from "./helpers/kafka.js";
import { NatsServer } from "./helpers/nats.js";
import { OfeventsProcess } from "./helpers/ofevents.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";
import { mulberry32 } from "./reliability/harness.js";
import { reportFigures } from "./helpers/report.js";

export type DurableBus = "jetstream" | "kafka";

/** JetStream's ack wait in these tests: what a restarted ordered subscriber waits at most. */
export const ACK_WAIT = "3s";
/** Kafka bus topics get this many partitions; events carry their key as `partitionkey`. */
export const PARTITIONS = 3;

export { Sink };

/** One broker, a folder of manifests, a publishing bus client, and the trigger processes started. */
export class DurableEnv {
  readonly procs: OfeventsProcess[] = [];
  readonly sinks: Sink[] = [];
  private publisher: EventBus | undefined;

  private constructor(
    readonly bus: DurableBus,
    private readonly server: NatsServer | KafkaBroker,
    readonly dir: string,
  ) {}

  static async start(bus: DurableBus): Promise<DurableEnv> {
    const server = bus === "jetstream" ? await NatsServer.start({ jetstream: true }) : await KafkaBroker.start();
    return new DurableEnv(bus, server, await mkdtemp(join(tmpdir(), `ofevents-semantics-${bus}-`)));
  }

  get spec(): EventBusSpec {
    return this.bus === "jetstream"
      ? { jetstream: { url: (this.server as NatsServer).url, ackWait: ACK_WAIT } }
      : { kafka: { brokers: (this.server as KafkaBroker).brokers.join(","), partitions: PARTITIONS } };
  }

  async sink(): Promise<Sink> {
    const s = await new Sink().start();
    this.sinks.push(s);
    return s;
  }

  /**
   * Writes an EventBus and a Trigger whose subscriber (condition `a`) is `subscriber` (YAML flow
   * mapping body, e.g. `sink: { uri: ... }, ordering: { key: data.k }`; several: one each); returns the files
   * and the bus topic of input `a`. Each call gets its own EventSource name, so its own topic.
   */
  async manifests(subscriber: string | readonly string[]): Promise<{ files: string[]; topic: string; name: string }> {
    const tag = randomSuffix();
    const source = `src-${tag}`;
    const bus = join(this.dir, `bus-${tag}.yaml`);
    const trigger = join(this.dir, `trigger-${tag}.yaml`);
    await writeFile(
      bus,
      `apiVersion: ${API_VERSION}\nkind: EventBus\nmetadata: { name: default, namespace: default }\nspec: ${JSON.stringify(this.spec)}\n`,
    );
    await writeFile(
      trigger,
      `apiVersion: ${API_VERSION}
kind: Trigger
metadata: { name: t-${tag}, namespace: default }
spec:
  eventBus: default
  inputs: { a: { eventSource: ${source}, event: a } }
  subscribers:
${(typeof subscriber === "string" ? [subscriber] : subscriber).map((x) => `    - { condition: a, ${x} }`).join("\n")}
`,
    );
    return { files: [bus, trigger], topic: `default-${source}-a`, name: `t-${tag}` };
  }

  /** Starts `ofevents trigger` on `files` (direct driver), ready once its /readyz answers 200. */
  async trigger(files: string[], name: string): Promise<OfeventsProcess> {
    const p = await OfeventsProcess.start({
      command: "trigger",
      files,
      name: `trigger ${name} on ${this.bus}`,
      args: ["--bus-driver", "direct"],
    });
    this.procs.push(p);
    return p;
  }

  /** Publishes `events` to `topic` in order, each once the bus took the one before. */
  async publish(topic: string, events: readonly CloudEvent[]): Promise<void> {
    this.publisher ??= await createEventBus(this.spec, { logger: silentLogger() });
    for (const e of events) await this.publisher.publish(topic, e);
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.procs.map((p) => p.kill("SIGKILL")));
    await this.publisher?.close();
    await Promise.allSettled(this.sinks.map((s) => s.stop()));
    await this.server.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Starts a DurableEnv for the file's tests (beforeAll) and stops it after them; returns its getter. */
export function useDurableEnv(bus: DurableBus): () => DurableEnv {
  let env: DurableEnv | undefined;
  beforeAll(async () => {
    env = await DurableEnv.start(bus);
  }, 120_000);
  afterAll(async () => {
    await env?.stop();
  }, 60_000);
  return () => env!;
}

/** An event of key `k` (also its `partitionkey`, so that Kafka keeps a key in one partition). */
export function keyed(k: string, i: number, extra: Record<string, unknown> = {}): CloudEvent {
  return {
    ...newEvent({ id: `${k}-${i}-${randomSuffix()}`, source: "/semantics", type: "t", data: { k, i, ...extra } }),
    partitionkey: k,
  };
}

/**
 * Checks that the sink saw each key's events first in bus order: the first delivery of the i-th
 * event of a key comes after the first delivery of its (i-1)-th. Repeats (at-least-once after a
 * kill) are allowed. Returns a description of the first violation, or undefined.
 */
export function orderViolation(sink: Sink, sent: readonly CloudEvent[]): string | undefined {
  const first = new Map<string, number>();
  sink.received.forEach((r, n) => {
    const id = String(r.headers["ce-id"]);
    if (!first.has(id)) first.set(id, n);
  });
  const byKey = new Map<string, CloudEvent[]>();
  for (const e of sent) {
    const k = (e.data as { k: string }).k;
    byKey.set(k, [...(byKey.get(k) ?? []), e]);
  }
  for (const [k, events] of byKey) {
    for (let i = 1; i < events.length; i++) {
      const a = first.get(events[i - 1]!.id);
      const b = first.get(events[i]!.id);
      if (a === undefined || b === undefined) return `key ${k}: event ${i - 1} or ${i} never arrived`;
      if (b < a) return `key ${k}: event ${i} (request ${b}) arrived before event ${i - 1} (request ${a})`;
    }
  }
  return undefined;
}

/** Waits until the sink has received (2xx or not) every id of `sent` at least once. */
export async function allArrived(sink: Sink, sent: readonly CloudEvent[], timeoutMs: number, what: () => string) {
  const want = new Set(sent.map((e) => e.id));
  await waitFor(
    () => {
      const got = new Set(sink.received.map((r) => String(r.headers["ce-id"])));
      for (const id of want) if (!got.has(id)) return false;
      return true;
    },
    {
      timeoutMs,
      intervalMs: 100,
      message: () => {
        const got = new Set(sink.received.map((r) => String(r.headers["ce-id"])));
        return `all ${want.size} events at the sink (missing ${[...want].filter((id) => !got.has(id)).length})\n${what()}`;
      },
    },
  );
}

/** Ids the sink received: `ce-id` of binary requests, and each member of a batch. */
export function receivedIds(sink: Sink): string[] {
  return sink.received.flatMap((r) =>
    Array.isArray(r.data) ? (r.data as Array<{ id: string }>).map((e) => e.id) : [String(r.headers["ce-id"])],
  );
}

/** The value of a counter on the trigger's /metrics (summed over its series), 0 when absent. */
export async function metric(p: OfeventsProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${p.healthPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").pop());
  return sum;
}

/** Ordering under concurrency: 4 keys, a sink of random latency; each key in bus order, keys in parallel. */
export async function orderingUnderConcurrency(env: DurableEnv): Promise<{ peak: number }> {
  const sink = await env.sink();
  const random = mulberry32(0x0dd);
  sink.delayFor = () => random() * 15;
  const m = await env.manifests(
    `sink: { uri: "${sink.url}" }, ordering: { key: data.k }, delivery: { concurrency: 8 }`,
  );
  const p = await env.trigger(m.files, m.name);
  const sent = Array.from({ length: 200 }, (_, i) => keyed(`k${i % 4}`, Math.floor(i / 4)));
  await env.publish(m.topic, sent);
  await allArrived(sink, sent, 60_000, () => p.output());
  const violation = orderViolation(sink, sent);
  if (violation !== undefined) throw new Error(`${violation}\n${p.output()}`);
  await p.stop();
  return { peak: sink.peak };
}

/**
 * Ordering across a SIGKILL of the trigger: half the events, a kill mid-flow, the other half while
 * it is down, a restart; every event arrives and each key's first deliveries stay in bus order.
 */
export async function orderingAcrossKill(env: DurableEnv): Promise<{ repeats: number; total: number }> {
  const sink = await env.sink();
  const random = mulberry32(0x5eed);
  sink.delayFor = () => random() * 10;
  const m = await env.manifests(
    `sink: { uri: "${sink.url}" }, ordering: { key: data.k }, delivery: { concurrency: 8 }`,
  );
  let p = await env.trigger(m.files, m.name);
  const sent = Array.from({ length: 600 }, (_, i) => keyed(`k${i % 4}`, Math.floor(i / 4)));
  await env.publish(m.topic, sent.slice(0, 300));
  await waitFor(() => sink.received.length >= 100, { timeoutMs: 60_000, message: () => p.output() });
  await p.kill("SIGKILL");
  await env.publish(m.topic, sent.slice(300));
  p = await env.trigger(m.files, m.name);
  await allArrived(sink, sent, 120_000, () => p.output());
  const violation = orderViolation(sink, sent);
  if (violation !== undefined) throw new Error(`${violation}\n${p.output()}`);
  await p.stop();
  return { repeats: sink.received.length - sent.length, total: sink.received.length };
}

/**
 * Dedup across a SIGKILL: 200 orders (a kill mid-flow, a restart), then a repeat of each order as
 * a new event: every order arrives, and no repeat is delivered (the seen set survived the kill).
 */
export async function dedupAcrossKill(env: DurableEnv): Promise<{ repeatsDelivered: number; duplicates: number }> {
  const sink = await env.sink();
  sink.delayMs = 2;
  const m = await env.manifests(`sink: { uri: "${sink.url}" }, dedup: { window: 10m, key: data.order }`);
  let p = await env.trigger(m.files, m.name);
  const first = Array.from({ length: 200 }, (_, i) => keyed(`k${i % 4}`, i, { order: `o-${i}` }));
  await env.publish(m.topic, first);
  await waitFor(() => sink.received.length >= 80, { timeoutMs: 60_000, message: () => p.output() });
  await p.kill("SIGKILL");
  p = await env.trigger(m.files, m.name);
  await allArrived(sink, first, 120_000, () => p.output());
  const before = sink.received.length;
  const repeats = first.map((_, i) => keyed(`k${i % 4}`, i, { order: `o-${i}`, repeat: true }));
  await env.publish(m.topic, repeats);
  await waitFor(async () => (await metric(p, "ofevents_trigger_events_deduplicated_total")) >= 200, {
    timeoutMs: 60_000,
    message: () => `200 repeats deduplicated\n${p.output()}`,
  });
  const ids = new Set(receivedIds(sink));
  await p.stop();
  return {
    repeatsDelivered: repeats.filter((e) => ids.has(e.id)).length,
    duplicates: before - first.length,
  };
}

/** Batches across a SIGKILL mid-batch: every event arrives in some batch (lost = 0). */
export async function batchAcrossKill(env: DurableEnv): Promise<{ lost: number; batches: number; repeats: number }> {
  const sink = await env.sink();
  sink.delayMs = 20;
  const m = await env.manifests(`sink: { uri: "${sink.url}" }, batch: { maxEvents: 10, maxWait: 300ms }`);
  let p = await env.trigger(m.files, m.name);
  const sent = Array.from({ length: 600 }, (_, i) => keyed(`k${i % 4}`, i));
  await env.publish(m.topic, sent.slice(0, 400));
  await waitFor(() => sink.received.length >= 15, { timeoutMs: 60_000, message: () => p.output() });
  await p.kill("SIGKILL");
  await env.publish(m.topic, sent.slice(400));
  p = await env.trigger(m.files, m.name);
  const want = new Set(sent.map((e) => e.id));
  await waitFor(
    () => {
      const got = new Set(receivedIds(sink));
      return [...want].every((id) => got.has(id));
    },
    { timeoutMs: 120_000, intervalMs: 100, message: () => p.output() },
  );
  for (const r of sink.received)
    if (r.headers["content-type"] !== "application/cloudevents-batch+json; charset=utf-8")
      throw new Error(`a request that is not a batch: ${String(r.headers["content-type"])}`);
  const got = new Set(receivedIds(sink));
  await p.stop();
  return {
    lost: [...want].filter((id) => !got.has(id)).length,
    batches: sink.received.length,
    repeats: receivedIds(sink).length - want.size,
  };
}

/**
 * A rate limit measured by the sink: 150 events published at once (far faster than the limit, so
 * the bus holds the backlog); the trigger (perSecond 25, burst 5, concurrency 8) delivers every
 * one, and no 1-second window at the sink holds more than perSecond + burst requests, give or
 * take one that arrived a request's time after it started.
 */
export async function rateLimitMeasured(
  env: DurableEnv,
): Promise<{ busiest: number; spanMs: number; throttledSec: number; delivered: number }> {
  const sink = await env.sink();
  sink.delayMs = 5;
  const m = await env.manifests(
    `sink: { uri: "${sink.url}" }, delivery: { rateLimit: { perSecond: 25, burst: 5 }, concurrency: 8 }`,
  );
  const sent = Array.from({ length: 150 }, (_, i) => keyed(`k${i % 4}`, i));
  const p = await env.trigger(m.files, m.name);
  await env.publish(m.topic, sent);
  await allArrived(sink, sent, 60_000, () => p.output());
  const at = sink.received.map((r) => r.at);
  const throttledSec = await metric(p, "ofevents_trigger_throttled_seconds_total");
  await p.stop();
  return {
    busiest: busiest(at, 1000),
    spanMs: Math.max(...at) - Math.min(...at),
    throttledSec,
    delivered: new Set(sink.ids()).size,
  };
}

/** The rate-limit test on one durable bus (test/rate-limit-{jetstream,kafka}.test.ts). */
export function rateLimitSuite(bus: DurableBus): void {
  describe(`rate-limit on ${bus}`, () => {
    const env = useDurableEnv(bus);

    it(`rate-limit ${bus} - a burst far above the limit is delivered whole, and the sink sees no more than perSecond + burst (+1 for arrival jitter) in any 1-second window`, async () => {
      const r = await rateLimitMeasured(env());
      expect(r.delivered).toBe(150);
      // The bucket bounds when attempts start (at most 30 in any second); the sink sees when they
      // arrive, a request's time later. On a loaded machine one request of the burst can arrive
      // late enough that a second at the sink holds one more start (31 seen once in a parallel run
      // of the kafka suites; 30 alone): one is the measurement's slack, not the limiter's.
      expect(r.busiest).toBeLessThanOrEqual(31);
      // (150 - 5) tokens at 25/s: about 5.8 s from the first request to the last.
      expect(r.spanMs).toBeGreaterThan(5_000);
      expect(r.throttledSec).toBeGreaterThan(0);
      reportFigures(
        `rate-limit ${bus}: 150 events in ${(r.spanMs / 1000).toFixed(1)} s, busiest 1 s window ${r.busiest} (limit 25 + burst 5), throttled ${r.throttledSec.toFixed(1)} s`,
      );
    }, 180_000);
  });
}
