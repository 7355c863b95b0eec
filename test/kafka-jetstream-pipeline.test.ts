/**
 * End to end over real brokers: Kafka → kafka EventSource → JetStream bus → Trigger (JSONata input
 * filter) → HTTP sink, 10,000 events, the source and the trigger each in their own `ofevents run`
 * process. Then the same flow with the trigger process killed (SIGKILL) mid-stream and restarted:
 * every event still delivered, duplicates counted, losses exactly 0.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KafkaBroker } from "./helpers/kafka.js";
import { NatsServer } from "./helpers/nats.js";
import { reportFigures } from "./helpers/report.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = `${root}packages/cli/bin/ofevents.js`;
const N = 10_000;

class CountingSink {
  counts = new Map<string, number>();
  total = 0;
  url = "";
  private server!: Server;
  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const id = String(req.headers["ce-id"]);
      req.resume();
      req.on("end", () => {
        this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
        this.total++;
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/sink`;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

interface Running {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  /** Resolves once the runner logged "running" (its subscriptions exist). */
  ready: Promise<void>;
}

function run(files: string[], name: string): Running {
  let out = "";
  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  const child = spawn(
    process.execPath,
    [
      bin,
      "run",
      "--log-format",
      "json",
      "--log-level",
      "info",
      "--functions-port",
      "0",
      ...files.flatMap((f) => ["-f", f]),
    ],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const keep = (c: Buffer) => {
    const text = c.toString("utf8");
    if (text.includes('"msg":"running"')) markReady();
    // Keep what explains a failure: warnings and errors, not the per-event info lines.
    const notable = text.split("\n").filter((l) => l !== "" && !l.includes('"level":30'));
    if (notable.length > 0) out = (out + notable.join("\n") + "\n").slice(-20_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, output: () => `${name}: ${out}`, exited, ready };
}

describe("kafka → jetstream pipeline - end to end through real brokers", () => {
  let kafka: KafkaBroker;
  let nats: NatsServer;
  let dir: string;
  const procs: ChildProcess[] = [];

  beforeAll(async () => {
    [kafka, nats] = await Promise.all([KafkaBroker.start(), NatsServer.start({ jetstream: true })]);
    dir = await mkdtemp(join(tmpdir(), "ofevents-pipeline-"));
  }, 180_000);

  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
    await Promise.allSettled([kafka?.stop(), nats?.stop()]);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  async function setup(
    tag: string,
    sinkUrl: string,
  ): Promise<{ topic: string; files: { bus: string; source: string; trigger: string } }> {
    const topic = `orders-${tag}`;
    const admin = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    await admin.disconnect();
    const producer = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    for (let i = 0; i < N; i += 1000) {
      await producer.send({
        topic,
        messages: Array.from({ length: 1000 }, (_, j) => ({ key: String(i + j), value: JSON.stringify({ n: i + j }) })),
      });
    }
    await producer.disconnect();
    const files = {
      bus: join(dir, `bus-${tag}.yaml`),
      source: join(dir, `source-${tag}.yaml`),
      trigger: join(dir, `trigger-${tag}.yaml`),
    };
    await writeFile(
      files.bus,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: default }
spec:
  jetstream: { url: "${nats.url}", stream: "p${tag}", ackWait: 3s }
`,
    );
    await writeFile(
      files.source,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: shop-${tag} }
spec:
  eventBus: default
  kafka:
    orders:
      brokers: "${kafka.brokers.join(",")}"
      topic: ${topic}
      authRequired: false
      startFrom: oldest
`,
    );
    await writeFile(
      files.trigger,
      `apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: even-${tag} }
spec:
  eventBus: default
  inputs:
    order: { eventSource: shop-${tag}, event: orders, filter: "data.n % 2 = 0" }
  subscribers:
    - condition: order
      sink: { uri: "${sinkUrl}" }
      delivery: { retry: 10, backoffDelay: 50ms, concurrency: 32 }
`,
    );
    return { topic, files };
  }

  /** The ids the sink must see: `{topic}/{partition}/{offset}` of every even n. */
  async function expectedIds(topic: string): Promise<Set<string>> {
    const consumer = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).consumer({
      groupId: `check-${randomSuffix()}`,
    });
    const ids = new Set<string>();
    let seen = 0;
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen++;
        const n = (JSON.parse(message.value!.toString()) as { n: number }).n;
        if (n % 2 === 0) ids.add(`${topic}/${partition}/${message.offset}`);
      },
    });
    await waitFor(() => seen === N, { timeoutMs: 60_000, intervalMs: 50, message: () => `reading back ${seen}/${N}` });
    await consumer.disconnect();
    return ids;
  }

  it("pipeline - 10,000 events: exactly the filtered set is delivered", async () => {
    const sink = new CountingSink();
    await sink.start();
    const { topic, files } = await setup(randomSuffix(), sink.url);
    const expected = await expectedIds(topic);
    // A new trigger's durable consumer sees what is published after it first subscribed.
    const trigger = run([files.bus, files.trigger], "trigger");
    await trigger.ready;
    const source = run([files.bus, files.source], "source");
    procs.push(trigger.child, source.child);
    await waitFor(() => sink.counts.size >= expected.size, {
      timeoutMs: 240_000,
      intervalMs: 50,
      message: () => `${sink.counts.size}/${expected.size} delivered\n${trigger.output()}\n${source.output()}`,
    });
    await new Promise((r) => setTimeout(r, 1000));
    const delivered = new Set(sink.counts.keys());
    const missing = [...expected].filter((id) => !delivered.has(id));
    const extra = [...delivered].filter((id) => !expected.has(id));
    const duplicates = sink.total - sink.counts.size;
    reportFigures(
      `pipeline: sent=${N} expected=${expected.size} delivered=${delivered.size} duplicates=${duplicates} lost=${missing.length} unexpected=${extra.length}`,
    );
    expect(missing).toEqual([]);
    expect(extra).toEqual([]);
    source.child.kill("SIGTERM");
    trigger.child.kill("SIGTERM");
    expect(await source.exited).toBe(0);
    expect(await trigger.exited).toBe(0);
    await sink.stop();
  }, 300_000);

  it("pipeline - the trigger killed with SIGKILL mid-stream and restarted loses nothing", async () => {
    const sink = new CountingSink();
    await sink.start();
    const { topic, files } = await setup(randomSuffix(), sink.url);
    const expected = await expectedIds(topic);
    let trigger = run([files.bus, files.trigger], "trigger");
    await trigger.ready;
    const source = run([files.bus, files.source], "source");
    procs.push(trigger.child, source.child);
    await waitFor(() => sink.counts.size >= 1000, {
      timeoutMs: 120_000,
      intervalMs: 50,
      message: () => `first 1000: ${sink.counts.size}\n${trigger.output()}\n${source.output()}`,
    });
    trigger.child.kill("SIGKILL");
    await trigger.exited;
    const atKill = sink.counts.size;
    trigger = run([files.bus, files.trigger], "trigger (restarted)");
    procs.push(trigger.child);
    await waitFor(() => sink.counts.size >= expected.size, {
      timeoutMs: 240_000,
      intervalMs: 50,
      message: () => `${sink.counts.size}/${expected.size} delivered\n${trigger.output()}\n${source.output()}`,
    });
    await new Promise((r) => setTimeout(r, 1000));
    const missing = [...expected].filter((id) => !sink.counts.has(id));
    const duplicates = sink.total - sink.counts.size;
    reportFigures(
      `pipeline SIGKILL: sent=${N} expected=${expected.size} delivered=${sink.counts.size} deliveredAtKill=${atKill} duplicates=${duplicates} lost=${missing.length}`,
    );
    expect(missing).toEqual([]);
    expect([...sink.counts.keys()].every((id) => expected.has(id))).toBe(true);
    source.child.kill("SIGTERM");
    trigger.child.kill("SIGTERM");
    await Promise.all([source.exited, trigger.exited]);
    await sink.stop();
  }, 360_000);
});
