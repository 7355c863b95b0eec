/**
 * OpenFunction's own manifests behave as OpenFunction documents them. The shape of its e2e test
 * (OpenFunction/OpenFunction test/events/manifests.yaml): Functions without our module annotation
 * (they run elsewhere), a natsStreaming EventBus, a Kafka EventSource with both `eventBus` and
 * `sink`, and a Trigger on that source. Real Kafka and nats-server (JetStream, which natsStreaming
 * maps to); every event reaches both the source's sink and the trigger's sink.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbedded, validateAll, type Embedded } from "@ofevents/cli";
import { createLogger, newEvent, silentLogger } from "@ofevents/core";
import { KafkaBroker } from "./helpers/kafka.js";
import { NatsServer } from "./helpers/nats.js";
import { freePorts } from "./helpers/server.js";
import { RecordingSink } from "./helpers/sink.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

/** OpenFunction's e2e manifest, with the addresses of this machine's servers. */
function e2eManifest(o: { natsUrl: string; brokers: string; topic: string; sinkA: string; sinkB: string }): string {
  return `
apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata:
  name: sink-a
spec:
  version: "v1.0.0"
  image: "openfunction/sink-sample:latest"
  port: 8080
  serving:
    runtime: "knative"
    template:
      containers:
        - name: function
          imagePullPolicy: Always
---
apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata:
  name: sink-b
spec:
  version: "v1.0.0"
  image: "openfunction/sink-sample:latest"
  port: 8080
  serving:
    runtime: "knative"
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata:
  name: default
spec:
  natsStreaming:
    natsURL: "${o.natsUrl}"
    natsStreamingClusterID: "stan"
    subscriptionType: "queue"
    durableSubscriptionName: "ImDurable"
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata:
  name: my-eventsource
spec:
  logLevel: "2"
  eventBus: "default"
  kafka:
    sample-one:
      brokers: "${o.brokers}"
      topic: "${o.topic}"
      authRequired: false
  sink:
    uri: "${o.sinkA}"
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata:
  name: my-trigger
spec:
  logLevel: "2"
  eventBus: "default"
  inputs:
    inputDemo:
      eventSource: "my-eventsource"
      event: "sample-one"
  subscribers:
    - condition: inputDemo
      sink:
        uri: "${o.sinkB}"
`;
}

describe("openfunction e2e manifest", () => {
  let kafka: KafkaBroker;
  let nats: NatsServer;
  let dir: string;
  const started: Array<{ stop(): Promise<void> }> = [];

  beforeAll(async () => {
    [kafka, nats] = await Promise.all([KafkaBroker.start(), NatsServer.start({ jetstream: true })]);
    dir = await mkdtemp(join(tmpdir(), "ofevents-of-e2e-"));
  }, 120_000);

  afterAll(async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await Promise.allSettled([kafka?.stop(), nats?.stop()]);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("openfunction e2e - a source with eventBus and sink sends every event to both; Functions without a module are skipped", async () => {
    const topic = `events-sample-${randomSuffix()}`;
    const admin = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    await admin.disconnect();
    const [sinkA, sinkB] = await Promise.all([RecordingSink.start(), RecordingSink.start()]);
    started.push(sinkA, sinkB);
    const file = join(dir, "manifests.yaml");
    await writeFile(
      file,
      e2eManifest({ natsUrl: nats.url, brokers: kafka.brokers.join(","), topic, sinkA: sinkA.url, sinkB: sinkB.url }),
    );

    // validate and run agree: both accept it.
    const checked = await validateAll([file]);
    expect(checked.issues).toEqual([]);
    const lines: string[] = [];
    const embedded: Embedded = await startEmbedded({
      paths: [file],
      logger: createLogger({ level: "info", format: "json", write: (l) => void lines.push(l) }),
      functionsPort: 0,
    });
    started.push(embedded);
    expect(lines.some((l) => l.includes("deployed elsewhere") && l.includes("default/sink-a"))).toBe(true);

    const producer = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    const N = 20;
    await producer.send({
      topic,
      messages: Array.from({ length: N }, (_, i) => ({ value: JSON.stringify({ n: i }) })),
    });
    await producer.disconnect();
    const expected = Array.from({ length: N }, (_, i) => `${topic}/0/${i}`).sort();
    await waitFor(() => sinkA.ids.length >= N && sinkB.ids.length >= N, {
      timeoutMs: 30_000,
      message: `both sinks received ${N} events (a: ${sinkA.ids.length}, b: ${sinkB.ids.length})`,
    });
    expect([...new Set(sinkA.ids)].sort()).toEqual(expected);
    expect([...new Set(sinkB.ids)].sort()).toEqual(expected);
  }, 90_000);

  it("openfunction redis - OpenFunction's redis event loads with a warning; at run time it does not start and says why, the other events run", async () => {
    const file = join(dir, "redis.yaml");
    await writeFile(
      file,
      `
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: my-eventsource }
spec:
  eventBus: default
  redis:
    sample-three:
      redisHost: "redis-leader.default.svc.cluster.local:6379"
      redisPassword: ""
      enableTLS: false
  webhook: { hook: { port: "0", endpoint: /hook } }
`,
    );
    const checked = await validateAll([file]);
    expect(checked.issues).toEqual([]);
    expect(checked.warnings.some((w) => w.path.startsWith("spec.redis.sample-three"))).toBe(true);
    const lines: string[] = [];
    const embedded = await startEmbedded({
      paths: [file],
      logger: createLogger({ level: "info", format: "json", write: (l) => void lines.push(l) }),
      functionsPort: 0,
    });
    started.push(embedded);
    expect(embedded.notRunning()).toEqual([
      { eventSource: "my-eventsource", event: "sample-three", reason: expect.stringMatching(/does not run/) as string },
    ]);
    expect(lines.some((l) => l.includes("not supported here") && l.includes("sample-three"))).toBe(true);
    // Only the redis event is not running: the webhook event started.
  });

  it("openfunction logLevel - spec.logLevel sets that resource's log level in run", async () => {
    const file = join(dir, "loglevel.yaml");
    const [p1, p2] = await freePorts(2);
    await writeFile(
      file,
      `
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: chatty }
spec:
  logLevel: "2"
  eventBus: default
  webhook: { hook: { port: "${p1}", endpoint: /chatty } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: quiet }
spec:
  eventBus: default
  webhook: { hook: { port: "${p2}", endpoint: /quiet } }
`,
    );
    const lines: Array<Record<string, unknown>> = [];
    const embedded = await startEmbedded({
      paths: [file],
      logger: createLogger({ level: "info", format: "json", write: (l) => void lines.push(JSON.parse(l)) }),
      functionsPort: 0,
    });
    started.push(embedded);
    // Both sources log "published" at debug level for each event; only chatty's "2" lets it through.
    for (const [port, path] of [
      [p1, "chatty"],
      [p2, "quiet"],
    ] as const) {
      const res = await fetch(`http://127.0.0.1:${port}/${path}`, { method: "POST", body: "{}" });
      expect(res.status).toBe(200);
    }
    const debugOf = (source: string): number =>
      lines.filter((l) => l["level"] === 20 && String(l["eventSource"]).endsWith(`/${source}`)).length;
    expect(debugOf("chatty")).toBeGreaterThan(0);
    expect(debugOf("quiet")).toBe(0);
  });

  it("openfunction e2e - a sink ref to a Function deployed elsewhere fails when used, naming the function", async () => {
    const file = join(dir, "ref.yaml");
    await writeFile(
      file,
      `
apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata: { name: sink-a }
spec: { image: "openfunction/sink-sample:latest", serving: { runtime: knative } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: hooks }
spec:
  eventBus: default
  webhook: { orders: { port: "0", endpoint: /orders } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { a: { eventSource: hooks, event: orders } }
  subscribers:
    - condition: a
      sink: { ref: { apiVersion: core.openfunction.io/v1beta2, kind: Function, name: sink-a } }
`,
    );
    expect((await validateAll([file])).issues).toEqual([]);
    const embedded = await startEmbedded({ paths: [file], logger: silentLogger(), functionsPort: 0 });
    started.push(embedded);
    const outcomes: string[] = [];
    embedded.triggers[0]!.events.on("dropped", (e) => void outcomes.push((e.error as Error).message));
    embedded.triggers[0]!.events.on("delivered", (e) => void outcomes.push(`delivered to ${e.target}`));
    const bus = embedded.buses.get("memory:default")!;
    await bus.publish("default-hooks-orders", newEvent({ id: "e-1", source: "/test", type: "t", data: { n: 1 } }));
    await waitFor(() => outcomes.length > 0, { message: "the delivery's outcome" });
    // 404 is not retried; the trigger names itself in its log, the reason names the Function.
    expect(outcomes[0]).toMatch(/answered 404.*Function default\/sink-a is deployed elsewhere/);
  });
});
