/**
 * `ofevents tail` as a process: against a running `ofevents run` (through its page's API), and
 * against a real JetStream and a real Kafka bus directly. The tail prints what passes from the
 * moment it started, honours --filter and --limit, and takes nothing from the consumer groups: a
 * subscribed group gets every event while the tail runs, and nothing of the tail stays at the
 * broker after it stopped.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventBusSchema, newEvent, renderDaprComponents, silentLogger, type CloudEvent } from "@ofevents/core";
import { stringify } from "yaml";
import {
  createEventBus,
  createJetStreamTopicPreparer,
  type EventBus,
  type JetStreamTopicPreparer,
} from "@ofevents/eventbus";
import { Daprd } from "./helpers/daprd.js";
import { KafkaBroker } from "./helpers/kafka.js";
import { NatsServer } from "./helpers/nats.js";
import { OFEVENTS_BIN, OfeventsProcess } from "./helpers/ofevents.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

interface TailProcess {
  lines: Array<{ topic: string; event: CloudEvent }>;
  stderr: string[];
  started: Promise<void>;
  exited: Promise<number | null>;
  stop(): void;
}

/** Spawns `ofevents tail <args>`; `started` resolves on its "tailing" line. */
function tail(args: string[], env: Record<string, string> = {}): TailProcess {
  const child = spawn(process.execPath, [OFEVENTS_BIN, "tail", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const lines: TailProcess["lines"] = [];
  const stderr: string[] = [];
  let onStarted!: () => void;
  const started = new Promise<void>((r) => (onStarted = r));
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString("utf8");
    for (let i = out.indexOf("\n"); i >= 0; i = out.indexOf("\n")) {
      lines.push(JSON.parse(out.slice(0, i)) as TailProcess["lines"][number]);
      out = out.slice(i + 1);
    }
  });
  child.stderr.on("data", (c: Buffer) => {
    const s = c.toString("utf8");
    stderr.push(s);
    if (s.includes("tailing ")) onStarted();
  });
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { lines, stderr, started, exited, stop: () => child.kill("SIGTERM") };
}

async function startedOrExited(t: TailProcess): Promise<void> {
  const code = await Promise.race([t.started.then(() => "started" as const), t.exited]);
  if (code !== "started") throw new Error(`tail exited (${code}) before it started: ${t.stderr.join("")}`);
}

const API = "events.openfunction.io/v1alpha1";

describe("tail against ofevents run", () => {
  let dir: string;
  let proc: OfeventsProcess;
  let page: string;
  let webhook: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-tail-run-"));
    const port = await freePort();
    webhook = `http://127.0.0.1:${port}/orders`;
    await writeFile(
      join(dir, "flow.yaml"),
      `apiVersion: ${API}
kind: EventSource
metadata: { name: orders }
spec:
  eventBus: default
  webhook:
    created: { port: "${port}", endpoint: /orders, method: POST }
---
apiVersion: ${API}
kind: Trigger
metadata: { name: orders }
spec:
  eventBus: default
  inputs:
    order: { eventSource: orders, event: created }
  subscribers:
    - condition: order
      topic: big-orders
      filter: data.amount >= 100
`,
    );
    let url: string | undefined;
    proc = await OfeventsProcess.start({
      command: "run",
      files: [dir],
      name: "run for tail",
      args: ["--ui-port", "0"],
      onLine: (line) => {
        if (line.includes('"msg":"running"')) url = (JSON.parse(line) as { page?: string }).page;
      },
    });
    page = await waitFor(() => url);
  });

  afterAll(async () => {
    await proc?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("prints the events of a trigger's input and output topics as they pass, filtered, until --limit", async () => {
    const t = tail([
      "trigger",
      "default/orders",
      "--url",
      page,
      "--json",
      "--limit",
      "4",
      "--filter",
      "data.amount >= 100",
    ]);
    await startedOrExited(t);
    for (const amount of [150, 20, 300]) {
      const res = await request(webhook, { method: "POST", body: JSON.stringify({ amount }) });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    }
    expect(await t.exited).toBe(0);
    // 150 and 300 on the input topic and again on big-orders; 20 filtered out by --filter.
    const seen = t.lines.map((l) => `${l.topic}:${(l.event.data as { amount: number }).amount}`).sort();
    expect(seen).toEqual([
      "big-orders:150",
      "big-orders:300",
      "default-orders-created:150",
      "default-orders-created:300",
    ]);
  });

  it("says what is wrong: nothing listening, or a trigger the run does not have", async () => {
    const none = tail(["some-topic", "--url", `http://127.0.0.1:${await freePort()}/`]);
    expect(await none.exited).toBe(1);
    expect(none.stderr.join("")).toMatch(/cannot reach ofevents run/);
    const unknown = tail(["trigger", "default/nope", "--url", page]);
    expect(await unknown.exited).toBe(1);
    expect(unknown.stderr.join("")).toMatch(/no trigger default\/nope/);
  });
});

function busSuite(kind: "jetstream" | "kafka"): void {
  describe(`tail against a ${kind} bus`, () => {
    let server: NatsServer | KafkaBroker;
    let dir: string;
    let bus: EventBus;
    let file: string;

    beforeAll(async () => {
      server = kind === "jetstream" ? await NatsServer.start({ jetstream: true }) : await KafkaBroker.start();
      const spec =
        kind === "jetstream"
          ? { jetstream: { url: (server as NatsServer).url } }
          : { kafka: { brokers: (server as KafkaBroker).brokers.join(","), partitions: 2 } };
      dir = await mkdtemp(join(tmpdir(), `ofevents-tail-${kind}-`));
      file = join(dir, "bus.yaml");
      await writeFile(
        file,
        `apiVersion: ${API}\nkind: EventBus\nmetadata: { name: default }\nspec: ${JSON.stringify(spec)}\n`,
      );
      bus = await createEventBus(spec, { logger: silentLogger() });
    }, 120_000);

    afterAll(async () => {
      await bus?.close();
      await server?.stop();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    });

    it(`${kind}: prints what is published from the start on, while a subscribed group still gets every event`, async () => {
      const topic = `tail-${kind}-${Date.now()}`;
      const group: string[] = [];
      const sub = await bus.subscribe(
        [topic],
        async (e) => {
          group.push(e.id);
        },
        { group: "g" },
      );
      // Published before the tail: not printed.
      await bus.publish(topic, newEvent({ id: "before", source: "/t", type: "t", data: {} }));
      const t = tail([topic, "-f", file, "--json", "--limit", "20"]);
      await startedOrExited(t);
      const ids = Array.from({ length: 20 }, (_, i) => `e-${i}`);
      for (const id of ids) await bus.publish(topic, newEvent({ id, source: "/t", type: "t", data: { i: id } }));
      expect(await t.exited).toBe(0);
      expect(t.lines.map((l) => l.event.id).sort()).toEqual([...ids].sort());
      expect(t.lines.every((l) => l.topic === topic)).toBe(true);
      await waitFor(() => group.length === 21, { timeoutMs: 20_000, message: () => `group got ${group.length}` });
      expect([...group].sort()).toEqual(["before", ...ids].sort());
      // Nothing of the tail stays: after it, the group still gets every new event and nothing else remains.
      await bus.publish(topic, newEvent({ id: "after", source: "/t", type: "t", data: {} }));
      await waitFor(() => group.includes("after"), { timeoutMs: 20_000 });
      await sub.close();
      if (kind === "kafka") {
        const { Kafka } = (await import("kafkajs")).default;
        const admin = new Kafka({ brokers: (server as KafkaBroker).brokers, logLevel: 0 }).admin();
        await admin.connect();
        try {
          const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
          expect(groups.filter((g) => g.includes("tail."))).toEqual([]);
        } finally {
          await admin.disconnect();
        }
      } else {
        const { connect } = await import("nats");
        const nc = await connect({ servers: (server as NatsServer).url });
        try {
          const jsm = await nc.jetstreamManager();
          // Only the group's durable consumer stays: the tail's ephemeral one is gone.
          const ephemeral = async (): Promise<string[]> => {
            const names: string[] = [];
            for await (const s of jsm.streams.list())
              for await (const c of jsm.consumers.list(s.config.name))
                if (c.config.durable_name === undefined) names.push(c.name);
            return names;
          };
          await waitFor(async () => (await ephemeral()).length === 0, {
            timeoutMs: 10_000,
            message: "no ephemeral consumer",
          });
        } finally {
          await nc.close();
        }
      }
    });
  });
}

busSuite("jetstream");
busSuite("kafka");

describe("tail through a Dapr sidecar of its own", () => {
  let server: NatsServer;
  let dir: string;
  let file: string;
  const daprds: Daprd[] = [];
  let app: EventBus;
  let tailSidecar: Daprd;
  let preparer: JetStreamTopicPreparer;

  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true });
    const spec = { jetstream: { url: server.url } };
    dir = await mkdtemp(join(tmpdir(), "ofevents-tail-dapr-"));
    file = join(dir, "bus.yaml");
    await writeFile(
      file,
      `apiVersion: ${API}\nkind: EventBus\nmetadata: { name: default }\nspec: ${JSON.stringify(spec)}\n`,
    );
    const bus = eventBusSchema.parse({ apiVersion: API, kind: "EventBus", metadata: { name: "default" }, spec });
    const resources = renderDaprComponents(bus).map((o) => stringify(o));
    const tag = Date.now().toString(36);
    const [appSidecar, own] = await Promise.all([
      Daprd.start({ appId: `app-${tag}`, resources }),
      Daprd.start({ appId: `ofevents-tail-${tag}`, resources }),
    ]);
    daprds.push(appSidecar, own);
    tailSidecar = own;
    // Dapr's jetstream component creates no streams: the app's bus makes them, as the entrypoints' does.
    preparer = createJetStreamTopicPreparer(server.url);
    app = await createEventBus(spec, {
      logger: silentLogger(),
      via: "dapr",
      dapr: {
        pubsubName: "default",
        httpPort: appSidecar.httpPort,
        grpcPort: appSidecar.grpcPort,
        prepareTopic: (t) => preparer.prepareTopic(t),
      },
    });
  }, 120_000);

  afterAll(async () => {
    await app?.close();
    await preparer?.close();
    await Promise.allSettled(daprds.map((d) => d.stop()));
    await server?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("dapr: prints what the app's sidecar publishes while the app's group gets every event", async () => {
    const topic = `tail-dapr-${Date.now()}`;
    const group: string[] = [];
    const sub = await app.subscribe(
      [topic],
      async (e) => {
        group.push(e.id);
      },
      { group: "g" },
    );
    const t = tail([topic, "-f", file, "--bus-driver", "dapr", "--json", "--limit", "10"], {
      DAPR_HTTP_PORT: String(tailSidecar.httpPort),
      DAPR_GRPC_PORT: String(tailSidecar.grpcPort),
    });
    await startedOrExited(t);
    const ids = Array.from({ length: 10 }, (_, i) => `d-${i}`);
    for (const id of ids) await app.publish(topic, newEvent({ id, source: "/t", type: "t", data: { id } }));
    expect(await t.exited).toBe(0);
    expect(t.lines.map((l) => l.event.id).sort()).toEqual([...ids].sort());
    await waitFor(() => group.length === 10, { timeoutMs: 20_000, message: () => `group got ${group.length}` });
    expect([...group].sort()).toEqual([...ids].sort());
    await sub.close();
  });
});
