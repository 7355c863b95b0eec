/**
 * End to end through Dapr sidecars, every part its own process: a webhook EventSource
 * (`ofevents eventsource`) with its own daprd → NATS JetStream → a Trigger (`ofevents trigger`)
 * with its own daprd → an HTTP sink in this process. The daprds load the Component and
 * Resiliency that renderDaprComponents makes for the EventBus (written as YAML); the entrypoints
 * find their sidecar through DAPR_HTTP_PORT / DAPR_GRPC_PORT. Each test has its own resources,
 * topics (streams) and sidecars (app ids, so JetStream durables).
 *
 * Counted per test: events sent (ids the webhook answered 2xx), ids the sink answered 2xx
 * (delivered), deliveries beyond the first of an id (duplicates), messages on the dead-letter
 * topics (the subscriber's and the bus's `<topic>.deadletter`), and ids neither delivered nor
 * dead-lettered (lost).
 *
 * What this pins about Dapr 1.18's pubsub.jetstream: the Component must say `concurrency: single`
 * (with "parallel" nats.go acks every message on receipt: a killed trigger loses what daprd holds),
 * so daprd hands the trigger one message at a time per topic. A killed trigger's in-flight message
 * fails in daprd ("stream closed"), is retried by the inbound Resiliency policy until the
 * subscription is closed, then NAKed with ackWait's delay and redelivered to the restarted
 * trigger's new subscription on the same daprd (which opens once the old one drained).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type JetStreamManager, type NatsConnection } from "nats";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { API_VERSION, eventBusSchema, renderDaprComponents, silentLogger, type CloudEvent } from "@ofevents/core";
import { createEventBus, createJetStreamTopicPreparer, daprJetStreamStreamName } from "@ofevents/eventbus";
import { Daprd } from "./helpers/daprd.js";
import { NatsServer } from "./helpers/nats.js";
import { reportFigures } from "./helpers/report.js";
import { freePort } from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = `${root}packages/cli/bin/ofevents.js`;
const N = 5_000;
const BUS = "default";
/** Webhook requests in flight at once. */
const CONCURRENCY = 32;

/** The HTTP sink: answers `status(id)` and counts the ids it answered 2xx. */
class Sink {
  readonly counts = new Map<string, number>();
  /** 2xx answers (deliveries), duplicates included. */
  total = 0;
  /** Every answer by status. */
  readonly answers = new Map<number, number>();
  firstAt: number | undefined;
  url = "";
  status: (id: string) => number = () => 200;
  private server!: Server;

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const id = String(req.headers["ce-id"]);
      req.resume();
      req.on("end", () => {
        this.firstAt ??= Date.now();
        const status = this.status(id);
        this.answers.set(status, (this.answers.get(status) ?? 0) + 1);
        if (status >= 200 && status < 300) {
          this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
          this.total++;
        }
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/sink`;
  }

  get duplicates(): number {
    return this.total - this.counts.size;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** One entrypoint process. */
interface Proc {
  name: string;
  child: ChildProcess;
  healthPort: number;
  exited: Promise<number | null>;
  output: () => string;
}

describe("dapr pipeline - webhook → daprd → JetStream → daprd → trigger → sink, real processes", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let dir: string;
  let agent: Agent;
  const procs: Proc[] = [];
  const daprds: Daprd[] = [];

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: true });
    nc = await connect({ servers: nats.url });
    jsm = await nc.jetstreamManager();
    dir = await mkdtemp(join(tmpdir(), "ofevents-dapr-pipeline-"));
    agent = new Agent({ connections: CONCURRENCY, keepAliveTimeout: 30_000, pipelining: 1 });
  }, 120_000);

  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    await Promise.allSettled(procs.map((p) => p.exited));
    await Promise.allSettled(daprds.map((d) => d.stop()));
    await agent?.close();
    await nc?.close();
    await nats?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  interface Pipeline {
    tag: string;
    file: string;
    webhookUrl: string;
    /** The bus topic the source publishes to and the trigger consumes. */
    topic: string;
    /** The subscriber's dead-letter topic. */
    dlt: string;
    esDaprd: Daprd;
    trDaprd: Daprd;
    busSpec: { jetstream: { url: string; ackWait: string } };
  }

  /** Writes the manifests and starts both sidecars with the rendered Dapr resources. */
  async function setup(sinkUrl: string, delivery: string): Promise<Pipeline> {
    const tag = randomSuffix();
    const webhookPort = await freePort();
    const busSpec = { jetstream: { url: nats.url, ackWait: "5s" } };
    const dlt = `dlt-${tag}`;
    const file = join(dir, `pipeline-${tag}.yaml`);
    await writeFile(
      file,
      `apiVersion: ${API_VERSION}
kind: EventBus
metadata: { name: ${BUS} }
spec:
  jetstream: { url: "${busSpec.jetstream.url}", ackWait: ${busSpec.jetstream.ackWait} }
---
apiVersion: ${API_VERSION}
kind: EventSource
metadata: { name: hooks-${tag} }
spec:
  eventBus: ${BUS}
  webhook:
    orders: { port: "${webhookPort}", endpoint: /orders }
---
apiVersion: ${API_VERSION}
kind: Trigger
metadata: { name: fwd-${tag} }
spec:
  eventBus: ${BUS}
  inputs:
    order: { eventSource: hooks-${tag}, event: orders }
  subscribers:
    - condition: order
      sink: { uri: "${sinkUrl}" }
      deadLetterTopic: ${dlt}
      delivery: ${delivery}
`,
    );
    const bus = eventBusSchema.parse({
      apiVersion: API_VERSION,
      kind: "EventBus",
      metadata: { name: BUS },
      spec: busSpec,
    });
    // The pub/sub Component is named after the bus, which is the entrypoints' default --pubsub-name.
    const resources = renderDaprComponents(bus).map((o) => stringify(o));
    const [esDaprd, trDaprd] = await Promise.all([
      Daprd.start({ appId: `es-${tag}`, resources }),
      Daprd.start({ appId: `tr-${tag}`, resources }),
    ]);
    daprds.push(esDaprd, trDaprd);
    return {
      tag,
      file,
      webhookUrl: `http://127.0.0.1:${webhookPort}/orders`,
      topic: `default-hooks-${tag}-orders`,
      dlt,
      esDaprd,
      trDaprd,
      busSpec,
    };
  }

  /** Spawns `ofevents <kind>` next to `daprd` and waits for its /readyz. */
  async function entrypoint(kind: "eventsource" | "trigger", p: Pipeline, daprd: Daprd, name: string): Promise<Proc> {
    const healthPort = await freePort();
    let out = "";
    const child = spawn(
      process.execPath,
      [
        bin,
        kind,
        "-f",
        p.file,
        "--host",
        "127.0.0.1",
        "--health-port",
        String(healthPort),
        "--log-format",
        "json",
        "--log-level",
        "warn",
      ],
      {
        cwd: root,
        env: { ...process.env, DAPR_HTTP_PORT: String(daprd.httpPort), DAPR_GRPC_PORT: String(daprd.grpcPort) },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const keep = (c: Buffer) => void (out = (out + c.toString("utf8")).slice(-20_000));
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const proc: Proc = { name, child, healthPort, exited, output: () => `--- ${name} ---\n${out}` };
    procs.push(proc);
    // The last answer of /readyz says why a resource is not ready ("starting", or the bus's reason).
    let lastAnswer = "no answer";
    // An exit ends the wait at once, with the process's output, instead of at the timeout.
    const gone = new AbortController();
    child.once("close", (code) => {
      if (code !== null) gone.abort(new Error(`${name} exited with ${code}\n${proc.output()}`));
    });
    await waitFor(
      async () => {
        const res = await request(`http://127.0.0.1:${healthPort}/readyz`, {
          dispatcher: agent,
          headersTimeout: 5_000,
          bodyTimeout: 5_000,
        }).catch((err: Error) => void (lastAnswer = err.message));
        if (res !== undefined) lastAnswer = `${res.statusCode} ${await res.body.text()}`;
        return res?.statusCode === 200;
      },
      {
        timeoutMs: 90_000,
        intervalMs: 100,
        signal: gone.signal,
        message: () =>
          `${name} /readyz (last answer: ${lastAnswer})\n${proc.output()}\n${daprd.log.toString().slice(-5_000)}`,
      },
    );
    return proc;
  }

  async function stopProc(p: Proc): Promise<number | null> {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
    return p.exited;
  }

  /**
   * Posts `ids` to the webhook as binary-mode CloudEvents, CONCURRENCY at a time; a non-2xx answer
   * is posted again (at most 5 tries; the same id is de-duplicated by JetStream). Returns the ids
   * the webhook took (answered 2xx).
   */
  async function post(url: string, ids: readonly string[]): Promise<{ taken: string[]; refused: number }> {
    const taken: string[] = [];
    let refused = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length) {
        const i = next++;
        const id = ids[i]!;
        for (let attempt = 1; attempt <= 5; attempt++) {
          const res = await request(url, {
            dispatcher: agent,
            method: "POST",
            headers: {
              "content-type": "application/json",
              "ce-specversion": "1.0",
              "ce-id": id,
              "ce-source": "/dapr-pipeline/test",
              "ce-type": "dev.ofevents.order",
            },
            body: JSON.stringify({ n: i }),
            headersTimeout: 30_000,
            bodyTimeout: 30_000,
          }).catch(() => undefined);
          await res?.body.dump();
          if (res !== undefined && res.statusCode >= 200 && res.statusCode < 300) {
            taken.push(id);
            break;
          }
          refused++;
          await new Promise((r) => setTimeout(r, 200 * attempt));
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    return { taken, refused };
  }

  /** Messages on a topic's stream (0 when nothing was ever published or subscribed to it). */
  async function stored(topic: string): Promise<number> {
    const info = await jsm.streams.info(daprJetStreamStreamName(topic)).catch(() => undefined);
    return info?.state.messages ?? 0;
  }

  /** Messages on both dead-letter topics: the subscriber's and the bus's (after maxDeliver). */
  async function deadLettered(p: Pipeline): Promise<number> {
    return (await stored(p.dlt)) + (await stored(`${p.topic}.deadletter`));
  }

  function diagnose(...ps: Proc[]): string {
    return ps.map((p) => p.output()).join("\n");
  }

  const ids = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `ev-${tag}-${i}`);

  it("dapr pipeline - the trigger creates the streams of its subscribers' topic and dead-letter topic when it starts, before any event", async () => {
    const sink = new Sink();
    await sink.start();
    const p = await setup(sink.url, "{ retry: 1 }");
    // A second subscriber publishes to `out`, the topic an async function would read through its
    // own daprd; that daprd can subscribe only once the topic's stream exists.
    const out = `out-${p.tag}`;
    const file = join(dir, `outputs-${p.tag}.yaml`);
    await writeFile(file, `${await readFile(p.file, "utf8")}    - condition: order\n      topic: ${out}\n`);
    const streamOf = (topic: string) => jsm.streams.find(topic).catch(() => undefined);
    expect(await streamOf(out)).toBeUndefined();
    expect(await streamOf(p.dlt)).toBeUndefined();
    const trigger = await entrypoint("trigger", { ...p, file }, p.trDaprd, "trigger");
    try {
      expect(await streamOf(out)).toBe(daprJetStreamStreamName(out));
      expect(await streamOf(p.dlt)).toBe(daprJetStreamStreamName(p.dlt));
      expect(await stored(out)).toBe(0);
    } finally {
      expect(await stopProc(trigger)).toBe(0);
      await sink.stop();
    }
  }, 120_000);

  it("dapr pipeline - 5,000 webhook events reach the sink through two sidecars and JetStream, each id delivered", async () => {
    const sink = new Sink();
    await sink.start();
    const p = await setup(sink.url, "{ retry: 10, backoffDelay: 100ms, concurrency: 32 }");
    // The trigger's durable consumer sees what is published after it first subscribed: it goes first.
    const trigger = await entrypoint("trigger", p, p.trDaprd, "trigger");
    const source = await entrypoint("eventsource", p, p.esDaprd, "eventsource");
    const sent = ids(p.tag, N);
    const t0 = Date.now();
    const { taken, refused } = await post(p.webhookUrl, sent);
    const postedMs = Date.now() - t0;
    expect(taken.length).toBe(N);
    await waitFor(() => sink.counts.size >= N, {
      timeoutMs: 180_000,
      intervalMs: 100,
      message: () => `${sink.counts.size}/${N} delivered\n${diagnose(trigger, source)}`,
    });
    const deliveredMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 1_000)); // late duplicates
    const dead = await deadLettered(p);
    const lost = sent.filter((id) => !sink.counts.has(id)).length;
    reportFigures(
      `dapr pipeline: sent=${N} delivered=${sink.counts.size} duplicates=${sink.duplicates} deadLettered=${dead} lost=${lost} webhookRetries=${refused} posted in ${postedMs} ms (${Math.round((N / postedMs) * 1000)}/s), delivered in ${deliveredMs} ms (${Math.round((N / deliveredMs) * 1000)}/s)`,
    );
    expect(new Set(sink.counts.keys())).toEqual(new Set(sent));
    expect(dead).toBe(0);
    // With `concurrency: parallel` nats.go acks each message on receipt, and daprd's own ack then
    // fails like this: delivery would be at most once.
    expect(p.trDaprd.log.lines().filter((l) => l.includes("already acknowledged"))).toEqual([]);
    expect(await stopProc(source)).toBe(0);
    expect(await stopProc(trigger)).toBe(0);
    await sink.stop();
  }, 300_000);

  it("dapr pipeline - the trigger process killed with SIGKILL mid-stream and restarted next to the same daprd loses nothing", async () => {
    const sink = new Sink();
    await sink.start();
    const p = await setup(sink.url, "{ retry: 10, backoffDelay: 100ms, concurrency: 32 }");
    let trigger = await entrypoint("trigger", p, p.trDaprd, "trigger");
    const source = await entrypoint("eventsource", p, p.esDaprd, "eventsource");
    const sent = ids(p.tag, N);
    const posting = post(p.webhookUrl, sent);
    await waitFor(() => sink.counts.size >= 1_000, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `first 1,000: ${sink.counts.size}\n${diagnose(trigger, source)}`,
    });
    trigger.child.kill("SIGKILL");
    await trigger.exited;
    const atKill = sink.counts.size;
    const killedAt = Date.now();
    trigger = await entrypoint("trigger", p, p.trDaprd, "trigger (restarted)");
    const restartMs = Date.now() - killedAt;
    const { taken, refused } = await posting;
    expect(taken.length).toBe(N);
    await waitFor(() => sink.counts.size >= N, {
      timeoutMs: 180_000,
      intervalMs: 100,
      message: () =>
        `${sink.counts.size}/${N} delivered\n${diagnose(trigger, source)}\n--- trigger daprd ---\n${p.trDaprd.log.toString().slice(-8_000)}`,
    });
    const recoveredMs = Date.now() - killedAt;
    await new Promise((r) => setTimeout(r, 1_000));
    const dead = await deadLettered(p);
    const lost = sent.filter((id) => !sink.counts.has(id)).length;
    reportFigures(
      `dapr pipeline SIGKILL: sent=${N} delivered=${sink.counts.size} deliveredAtKill=${atKill} duplicates=${sink.duplicates} deadLettered=${dead} lost=${lost} webhookRetries=${refused} trigger ready again after ${restartMs} ms, all delivered ${recoveredMs} ms after the kill`,
    );
    expect(lost).toBe(0);
    expect(dead).toBe(0);
    expect([...sink.counts.keys()].every((id) => id.startsWith(`ev-${p.tag}-`))).toBe(true);
    expect(await stopProc(source)).toBe(0);
    expect(await stopProc(trigger)).toBe(0);
    await sink.stop();
  }, 360_000);

  it("dapr pipeline - a sink answering 503 for its first 2 s gets every event by retries, none lost", async () => {
    const M = 500;
    const sink = new Sink();
    // One event at a time from daprd: the first one's retries span the 503s, the rest wait behind it.
    sink.status = () => (sink.firstAt !== undefined && Date.now() - sink.firstAt < 2_000 ? 503 : 200);
    await sink.start();
    const p = await setup(sink.url, "{ retry: 10, backoffDelay: 100ms, concurrency: 32 }");
    const trigger = await entrypoint("trigger", p, p.trDaprd, "trigger");
    const source = await entrypoint("eventsource", p, p.esDaprd, "eventsource");
    const sent = ids(p.tag, M);
    const { taken, refused } = await post(p.webhookUrl, sent);
    expect(taken.length).toBe(M);
    await waitFor(() => sink.counts.size >= M, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: () => `${sink.counts.size}/${M} delivered\n${diagnose(trigger, source)}`,
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const dead = await deadLettered(p);
    const lost = sent.filter((id) => !sink.counts.has(id)).length;
    const unavailable = sink.answers.get(503) ?? 0;
    reportFigures(
      `dapr pipeline 503: sent=${M} delivered=${sink.counts.size} duplicates=${sink.duplicates} deadLettered=${dead} lost=${lost} answered503=${unavailable} webhookRetries=${refused}`,
    );
    expect(unavailable).toBeGreaterThan(0);
    expect(new Set(sink.counts.keys())).toEqual(new Set(sent));
    expect(dead).toBe(0);
    expect(await stopProc(source)).toBe(0);
    expect(await stopProc(trigger)).toBe(0);
    await sink.stop();
  }, 300_000);

  it("dapr pipeline - a sink answering 400 sends each event to the subscriber's dead-letter topic with the reason", async () => {
    const M = 20;
    const sink = new Sink();
    sink.status = () => 400;
    await sink.start();
    const p = await setup(sink.url, "{ retry: 3, backoffDelay: 100ms }");
    // The dead-letter topic is read through a third sidecar by the dapr driver in this process;
    // subscribed before anything is published (a new durable starts with what comes after it).
    const dlDaprd = await Daprd.start({
      appId: `dl-${p.tag}`,
      resources: renderDaprComponents(
        eventBusSchema.parse({ apiVersion: API_VERSION, kind: "EventBus", metadata: { name: BUS }, spec: p.busSpec }),
      ).map((o) => stringify(o)),
    });
    daprds.push(dlDaprd);
    const preparer = createJetStreamTopicPreparer(nats.url);
    const bus = await createEventBus(p.busSpec, {
      logger: silentLogger(),
      via: "dapr",
      dapr: {
        pubsubName: BUS,
        httpPort: dlDaprd.httpPort,
        grpcPort: dlDaprd.grpcPort,
        prepareTopic: (t) => preparer.prepareTopic(t),
      },
    });
    try {
      const letters: CloudEvent[] = [];
      await bus.subscribe([p.dlt], async (e) => void letters.push(e), { group: "check" });
      const trigger = await entrypoint("trigger", p, p.trDaprd, "trigger");
      const source = await entrypoint("eventsource", p, p.esDaprd, "eventsource");
      const sent = ids(p.tag, M);
      const { taken } = await post(p.webhookUrl, sent);
      expect(taken.length).toBe(M);
      await waitFor(() => new Set(letters.map((e) => e.id)).size >= M, {
        timeoutMs: 60_000,
        intervalMs: 100,
        message: () => `${letters.length}/${M} dead letters\n${diagnose(trigger, source)}`,
      });
      await new Promise((r) => setTimeout(r, 500));
      const got = new Set(letters.map((e) => e.id));
      const lost = sent.filter((id) => !got.has(id)).length;
      reportFigures(
        `dapr pipeline 400: sent=${M} delivered=${sink.counts.size} duplicates=${letters.length - got.size} deadLettered=${got.size} lost=${lost} answered400=${sink.answers.get(400) ?? 0}`,
      );
      expect(got).toEqual(new Set(sent));
      expect(sink.counts.size).toBe(0);
      // 400 is not retried: one attempt per event (more only if JetStream redelivered).
      expect(sink.answers.get(400)).toBeGreaterThanOrEqual(M);
      for (const e of letters) {
        const ext = e as unknown as Record<string, unknown>;
        expect(String(ext["oferrorreason"])).toContain("400");
        expect(ext["oferrorcode"]).toBe("DELIVERY_REJECTED");
        expect(ext["oferrordest"]).toBe(sink.url);
        expect(e.source).toBe("/dapr-pipeline/test");
        expect(e.type).toBe("dev.ofevents.order");
      }
      expect(await stopProc(source)).toBe(0);
      expect(await stopProc(trigger)).toBe(0);
    } finally {
      await bus.close();
      await preparer.close();
      await sink.stop();
    }
  }, 300_000);
});
