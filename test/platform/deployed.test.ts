// The controller installed from deploy/ as written, running as the Pods deploy/ describes (two
// replicas, Lease election, its own ServiceAccount and RBAC), then OpenFunction-style manifests on
// the default (Dapr) path: a natsStreaming EventBus, a Kafka EventSource and a Trigger whose
// subscribers call a sync function by `sink.ref` and publish to a topic an async function (a
// Dapr-subscribed app Pod) consumes. 2,000 Kafka records reach both functions while the leader
// controller Pod is killed; another replica takes the Lease and reconciles a Trigger applied afterwards.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kafka, logLevel } from "kafkajs";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import type { NatsStreamingBusSpec } from "@ofevents/core";
import { KafkaBroker } from "../helpers/kafka.js";
import { KedaOperator } from "../helpers/keda.js";
import { ControlPlane } from "../helpers/kube.js";
import { KubeControllerManager } from "../helpers/kube-controller-manager.js";
import { NatsServer } from "../helpers/nats.js";
import { NodeAgent, type PodRef } from "../helpers/node-agent.js";
import { reportFigures } from "../helpers/report.js";
import { RecordingSink } from "../helpers/sink.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";
import { looseCrd } from "../helpers/platform.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const API = "/apis/events.openfunction.io/v1alpha1";
const CONTROLLER_NS = "ofevents-system";
const CONTROLLER_LABEL = "app.kubernetes.io/name=ofevents-controller";
const LEASE = `/apis/coordination.k8s.io/v1/namespaces/${CONTROLLER_NS}/leases/ofevents-controller`;
/** The overlay's lease timing (below): how long a dead leader keeps the Lease, how often replicas try. */
const LEASE_DURATION_MS = 5_000;
const LEASE_RETRY_MS = 500;

interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    ownerReferences?: { kind: string; name: string }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

let cp: ControlPlane;
let kcm: KubeControllerManager;
let keda: KedaOperator;
let nats: NatsServer;
let kafka: KafkaBroker;
let agent: NodeAgent;
let syncSink: RecordingSink;
let asyncSink: RecordingSink;
let nc: NatsConnection | undefined;

async function req(method: string, path: string, body?: unknown): Promise<Obj & { items?: Obj[] }> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj & { items?: Obj[] };
}

async function list(path: string): Promise<Obj[]> {
  return (await req("GET", path)).items ?? [];
}

async function waitServed(plural: string, group: string, version: string): Promise<void> {
  await waitFor(async () => (await cp.request("GET", `/apis/${group}/${version}/${plural}?limit=1`)).status === 200, {
    timeoutMs: 30_000,
    intervalMs: 100,
    message: `${plural}.${group} served`,
  });
}

/** The collection path of an object, as kubectl finds it (every kind deploy/ has: plural = kind + "s"). */
function collectionPath(o: Obj): string {
  const base = o.apiVersion!.includes("/") ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
  const ns = o.metadata.namespace === undefined ? "" : `/namespaces/${o.metadata.namespace}`;
  return `${base}${ns}/${o.kind!.toLowerCase()}s`;
}

/** Every document of the files deploy/kustomization.yaml lists, in its order (what `kubectl apply -k` sends). */
async function deployDocuments(): Promise<Obj[]> {
  const kustomization = parseYaml(await readFile(join(ROOT, "deploy/kustomization.yaml"), "utf8")) as {
    resources: string[];
  };
  const docs: Obj[] = [];
  for (const file of kustomization.resources) {
    const text = await readFile(join(ROOT, "deploy", file), "utf8");
    for (const doc of parseAllDocuments(text)) {
      const o = doc.toJS() as Obj | null;
      if (o !== null) docs.push(o);
    }
  }
  return docs;
}

/**
 * A kustomize overlay's strategic-merge patch of a container's `env` (merged by name): replaces
 * the value of a variable deploy/ sets, appends one it does not.
 */
function patchEnv(deployment: Obj, container: string, values: Record<string, string>): void {
  const spec = deployment.spec as {
    template: {
      spec: { containers: { name: string; env?: { name: string; value?: string; valueFrom?: unknown }[] }[] };
    };
  };
  const c = spec.template.spec.containers.find((x) => x.name === container);
  if (c === undefined) throw new Error(`overlay: no container ${container} in ${deployment.metadata.name}`);
  c.env ??= [];
  for (const [name, value] of Object.entries(values)) {
    const existing = c.env.find((e) => e.name === name);
    if (existing) {
      delete existing.valueFrom;
      existing.value = value;
    } else c.env.push({ name, value });
  }
}

const ready = (p: Obj): boolean =>
  ((p.status?.["conditions"] ?? []) as { type: string; status: string }[]).some(
    (c) => c.type === "Ready" && c.status === "True",
  );

const controllerPods = async (): Promise<Obj[]> =>
  (await list(`/api/v1/namespaces/${CONTROLLER_NS}/pods?labelSelector=${encodeURIComponent(CONTROLLER_LABEL)}`)).filter(
    (p) => (p.metadata as { deletionTimestamp?: string }).deletionTimestamp === undefined,
  );

const holder = async (): Promise<string | undefined> => {
  const res = await cp.request("GET", LEASE);
  if (res.status !== 200) return undefined;
  return ((res.json as Obj).spec?.["holderIdentity"] ?? undefined) as string | undefined;
};

/** `ofevents_controller_leader` on a controller Pod's /metrics (its health port). */
async function leaderGauge(pod: string): Promise<number | undefined> {
  const port = agent.portOf(`${CONTROLLER_NS}/${pod}`, "health");
  if (port === undefined) return undefined;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /^ofevents_controller_leader(?:\{[^}]*\})? (\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** The Pods of `namespaces` with their status, logs, daprd logs, and the agent's log: what a failure needs. */
async function diagnosis(namespaces: string[]): Promise<string> {
  const out: string[] = [];
  for (const ns of namespaces) {
    for (const p of await list(`/api/v1/namespaces/${ns}/pods`).catch(() => [])) {
      const ref: PodRef = `${ns}/${p.metadata.name}`;
      out.push(
        `--- ${ref} ${JSON.stringify(p.status?.["containerStatuses"] ?? p.status?.["phase"])}`,
        agent.logs(ref).slice(-4000),
        `--- ${ref} daprd`,
        agent.daprd(ref)?.log.toString().slice(-2000) ?? "(none)",
      );
    }
  }
  out.push("--- agent", agent.log.toString().slice(-6000));
  return out.join("\n");
}

function failWith(namespaces: string[]): (err: unknown) => Promise<never> {
  return async (err: unknown) => {
    throw new Error(`${(err as Error).message}\n${await diagnosis(namespaces)}`, { cause: err });
  };
}

/**
 * The stand-in function image: an HTTP server on $PORT. A sync function takes CloudEvents in
 * binary mode (ce-id header); an async function answers daprd's GET /dapr/subscribe with $TOPIC
 * on $PUBSUB (the programmatic subscription an OpenFunction async function makes) and takes the
 * CloudEvents daprd delivers (structured JSON). Either forwards the event's id and data to
 * $RECORD_URL and answers 2xx only once that was recorded (5xx otherwise, so it is redelivered).
 */
const FUNCTION = `
const http = require("node:http");
http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    res.setHeader("content-type", "application/json");
    if (req.method === "GET" && req.url === "/dapr/subscribe") {
      const subs = process.env.TOPIC ? [{ pubsubname: process.env.PUBSUB, topic: process.env.TOPIC, route: "/events" }] : [];
      return res.end(JSON.stringify(subs));
    }
    if (req.method !== "POST") return res.end("{}");
    const body = Buffer.concat(chunks).toString("utf8");
    let id = req.headers["ce-id"];
    let data = body;
    if (id === undefined) {
      const ce = JSON.parse(body);
      id = ce.id;
      data = JSON.stringify(ce.data === undefined ? null : ce.data);
    }
    let ok = false;
    try {
      const r = await fetch(process.env.RECORD_URL, { method: "POST", headers: { "ce-id": String(id), "content-type": "application/json" }, body: data });
      ok = r.ok;
    } catch {}
    res.statusCode = ok ? 200 : 500;
    res.end(JSON.stringify({ status: ok ? "SUCCESS" : "RETRY" }));
  });
}).listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`;

function functionPod(
  ns: string,
  name: string,
  recordUrl: string,
  dapr?: { appId: string; pubsub: string; topic: string },
): Obj {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: ns,
      labels: { app: name },
      ...(dapr === undefined
        ? {}
        : {
            annotations: {
              "dapr.io/enabled": "true",
              "dapr.io/app-id": dapr.appId,
              "dapr.io/app-port": "8080",
              "dapr.io/app-protocol": "http",
            },
          }),
    } as Obj["metadata"],
    spec: {
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: "function",
          image: "example/function:1",
          env: [
            { name: "RECORD_URL", value: recordUrl },
            ...(dapr === undefined
              ? []
              : [
                  { name: "PUBSUB", value: dapr.pubsub },
                  { name: "TOPIC", value: dapr.topic },
                ]),
          ],
          ports: [{ name: "http", containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/", port: "http" }, periodSeconds: 1 },
        },
      ],
    },
  };
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  [kcm, keda, nats, kafka] = await Promise.all([
    KubeControllerManager.start(cp),
    KedaOperator.start(cp),
    NatsServer.start({ jetstream: true }),
    KafkaBroker.start(),
  ]);
  // Dapr's CRDs, loose, as Dapr's installation would have put them there.
  for (const [kind, plural] of [
    ["Component", "components"],
    ["Resiliency", "resiliencies"],
    ["Subscription", "subscriptions"],
  ] as const) {
    await req(
      "POST",
      "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
      looseCrd("dapr.io", "v1alpha1", kind, plural),
    );
  }
  agent = await NodeAgent.start(cp);
  agent.image("example/function:1", { command: process.execPath, args: ["-e", FUNCTION], portEnv: { 8080: "PORT" } });
  [syncSink, asyncSink] = await Promise.all([RecordingSink.start(), RecordingSink.start()]);
}, 240_000);

afterAll(async () => {
  await agent?.stop();
  await nc?.close();
  await Promise.allSettled([syncSink?.stop(), asyncSink?.stop()]);
  await Promise.allSettled([keda?.stop(), kcm?.stop(), nats?.stop(), kafka?.stop()]);
  await cp?.stop();
}, 120_000);

describe("platform - the controller installed from deploy/", () => {
  it("platform deployed - two controller Pods from deploy/, one holds the Lease; Kafka → Trigger → sync function and async function (Dapr), every event, while the leader is killed; another replica takes the Lease and reconciles a new Trigger", async () => {
    // 1. deploy/ as written, in the kustomization's order.
    const docs = await deployDocuments();
    const deployment = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "ofevents-controller");
    expect(deployment, "deploy/ has the controller Deployment").toBeDefined();
    // The test's overlay: a strategic-merge patch of the controller container's env only, as a
    // user's kustomize overlay would write it:
    // - OFEVENTS_KEDA_NATS_MONITORING_ENDPOINT: the local nats-server's monitoring port (deploy/
    //   leaves the default, the bus URL's host on port 8222, which is not where it listens here);
    // - OFEVENTS_LEASE_DURATION / OFEVENTS_LEASE_RETRY_PERIOD: 5s / 500ms instead of 15s / 2s, so
    //   the failover below takes seconds;
    // - OFEVENTS_KEDA_MIN_REPLICAS 1: the workloads stay up between the steps (scaling to zero
    //   and back is flow.test.ts's subject; here it would only add KEDA's polling to the figures).
    patchEnv(deployment!, "controller", {
      OFEVENTS_KEDA_NATS_MONITORING_ENDPOINT: new URL(nats.monitorUrl).host,
      OFEVENTS_LEASE_DURATION: `${LEASE_DURATION_MS / 1000}s`,
      OFEVENTS_LEASE_RETRY_PERIOD: `${LEASE_RETRY_MS}ms`,
      OFEVENTS_KEDA_MIN_REPLICAS: "1",
    });
    for (const doc of docs) {
      if (doc.kind === "Deployment") {
        // The CRDs must be served before the controller's informers list them.
        await Promise.all(
          ["eventsources", "triggers", "eventbuses", "clustereventbuses"].map((p) =>
            waitServed(p, "events.openfunction.io", "v1alpha1"),
          ),
        );
      }
      await req("POST", collectionPath(doc), doc);
    }
    await waitServed("components", "dapr.io", "v1alpha1");

    // 2. Two controller Pods Ready; the Lease names one of them, whose /metrics says it leads.
    const installed = Date.now();
    const pods = await waitFor(
      async () => {
        const ps = await controllerPods();
        return ps.length === 2 && ps.every(ready) ? ps : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 250, message: "2 controller Pods Ready" },
    ).catch(failWith([CONTROLLER_NS]));
    const names = pods.map((p) => p.metadata.name);
    const leader = await waitFor(
      async () => {
        const h = await holder();
        return h !== undefined && names.includes(h) ? h : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: "the Lease held by a controller Pod" },
    ).catch(failWith([CONTROLLER_NS]));
    const standby = names.find((n) => n !== leader)!;
    await waitFor(async () => (await leaderGauge(leader)) === 1 && (await leaderGauge(standby)) === 0, {
      timeoutMs: 30_000,
      intervalMs: 200,
      message: `ofevents_controller_leader 1 on ${leader}, 0 on ${standby}`,
    }).catch(failWith([CONTROLLER_NS]));
    const controllersReadyMs = Date.now() - installed;

    // 3. OpenFunction-style manifests.
    const s = randomSuffix();
    const ns = `deployed-${s}`;
    const kafkaTopic = `orders-${s}`;
    const asyncTopic = `fulfil-${s}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    const admin = new Kafka({ clientId: "deployed-test", brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: kafkaTopic, numPartitions: 3 }], waitForLeaders: true });
    // As OpenFunction's natsStreaming sample writes it; mapped to JetStream, carried by Dapr.
    const natsStreaming: NatsStreamingBusSpec = {
      natsURL: nats.url,
      natsStreamingClusterID: "stan",
      subscriptionType: "queue",
      durableSubscriptionName: "ImDurable",
    };
    await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: ns },
      spec: { natsStreaming },
    });
    await req("POST", `${API}/namespaces/${ns}/eventsources`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: "kafka-src", namespace: ns },
      spec: {
        eventBus: "default",
        kafka: {
          // OpenFunction's fields, plus startFrom (ours): the new group reads the topic from its
          // start, so records produced before it joined are not skipped.
          orders: { brokers: kafka.brokers.join(","), authRequired: false, topic: kafkaTopic, startFrom: "oldest" },
        },
      },
    });
    // The sync function: a Pod and the Service the Trigger's sink.ref names.
    await req("POST", `/api/v1/namespaces/${ns}/pods`, functionPod(ns, "sync-fn", syncSink.url));
    await req("POST", `/api/v1/namespaces/${ns}/services`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "sync-fn", namespace: ns },
      spec: { selector: { app: "sync-fn" }, ports: [{ port: 80, targetPort: "http" }] },
    });
    await req("POST", `${API}/namespaces/${ns}/triggers`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "orders", namespace: ns },
      spec: {
        eventBus: "default",
        inputs: { order: { eventSource: "kafka-src", event: "orders" } },
        subscribers: [
          { condition: "order", sink: { ref: { apiVersion: "v1", kind: "Service", name: "sync-fn", namespace: ns } } },
          { condition: "order", topic: asyncTopic },
        ],
      },
    });

    // The async function subscribes through its daprd, which can subscribe only once the topic's
    // stream exists (Dapr's pubsub.jetstream never creates streams): the Trigger creates the
    // streams of its output topics when it starts. Its durable consumer (ImDurable-<app id>)
    // starts with new messages, so the records are produced once it exists.
    await req(
      "POST",
      `/api/v1/namespaces/${ns}/pods`,
      functionPod(ns, "async-fn", asyncSink.url, { appId: "async-fn", pubsub: "default", topic: asyncTopic }),
    );
    nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();

    const started = Date.now();
    await waitFor(
      async () => {
        const ps = await list(`/api/v1/namespaces/${ns}/pods`);
        return ps.length === 4 && ps.every(ready);
      },
      { timeoutMs: 180_000, intervalMs: 250, message: "the EventSource, Trigger and both function Pods Ready" },
    ).catch(failWith([ns, CONTROLLER_NS]));
    await waitFor(async () => (await jsm.streams.info(await jsm.streams.find(asyncTopic))).state.consumer_count >= 1, {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: `the async function's consumer on topic ${asyncTopic}'s stream`,
    }).catch(failWith([ns]));
    const podsReadyMs = Date.now() - started;
    // The Dapr Component the controller rendered for the natsStreaming bus.
    const component = await req("GET", `/apis/dapr.io/v1alpha1/namespaces/${ns}/components/default`);
    expect(component.spec?.["type"]).toBe("pubsub.jetstream");
    for (const p of await list(`/api/v1/namespaces/${ns}/pods`))
      expect(agent.daprd(`${ns}/${p.metadata.name}`) !== undefined, `${p.metadata.name} has a daprd`).toBe(
        p.metadata.name !== "sync-fn",
      );

    // 4. 2,000 records: half, then the leader controller is killed once ~500 reached the sync
    // function, then the other half while another replica takes over.
    const N = 2_000;
    const producer = new Kafka({
      clientId: "deployed-producer",
      brokers: kafka.brokers,
      logLevel: logLevel.NOTHING,
    }).producer();
    await producer.connect();
    const produce = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to; i += 100) {
        const messages = [];
        for (let j = i; j < Math.min(to, i + 100); j++)
          messages.push({ partition: j % 3, value: JSON.stringify({ n: `k-${j}` }) });
        await producer.send({ topic: kafkaTopic, acks: -1, messages });
      }
    };
    const dataIds = (sink: RecordingSink): string[] =>
      sink.received.map((r) => (JSON.parse(r.body.toString("utf8")) as { n: string }).n);
    const flowStarted = Date.now();
    await produce(0, N / 2);
    await waitFor(() => new Set(syncSink.ids).size >= 500, {
      timeoutMs: 120_000,
      intervalMs: 100,
      message: "500 events at the sync function",
    }).catch(failWith([ns]));
    const deliveredAtKill = new Set(syncSink.ids).size;

    // The leader's Pod removed at once (grace period 0) and its process SIGKILLed: it neither
    // releases the Lease nor comes back under its name; the others must wait the Lease out.
    await req("DELETE", `/api/v1/namespaces/${CONTROLLER_NS}/pods/${leader}?gracePeriodSeconds=0`);
    const killedAt = Date.now();
    try {
      agent.killPod(`${CONTROLLER_NS}/${leader}`, "SIGKILL");
    } catch {
      // The agent saw the deletion first and stopped it already.
    }
    const sending = produce(N / 2, N);
    // Another replica takes the Lease: the standby, or the ReplicaSet's replacement Pod if it
    // started in time (both try every retry period once the Lease expired; either may win).
    const newLeader = await waitFor(
      async () => {
        const h = await holder();
        return h !== undefined && h !== leader ? h : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 50, message: `a replica other than ${leader} holds the Lease` },
    ).catch(failWith([CONTROLLER_NS]));
    const recoveredMs = Date.now() - killedAt;
    await sending;
    await producer.disconnect();
    // The dead leader renewed at most one retry period before it died; the others check every
    // retry period: one leads within the lease duration plus two retry periods (and API latency).
    expect(recoveredMs).toBeLessThan(LEASE_DURATION_MS + 2 * LEASE_RETRY_MS + 2_000);
    expect((await controllerPods()).map((p) => p.metadata.name)).toContain(newLeader);
    await waitFor(async () => (await leaderGauge(newLeader)) === 1, {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: `ofevents_controller_leader 1 on ${newLeader}`,
    });

    // 5. A Trigger applied after the failover is reconciled by the new leader.
    const appliedAt = Date.now();
    await req("POST", `${API}/namespaces/${ns}/triggers`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "after", namespace: ns },
      spec: {
        eventBus: "default",
        inputs: { order: { eventSource: "kafka-src", event: "orders" } },
        subscribers: [{ condition: "order", topic: `after-${s}` }],
      },
    });
    const ownedByAfter = (o: Obj): boolean =>
      (o.metadata.ownerReferences ?? []).some((r) => r.kind === "Trigger" && r.name === "after");
    await waitFor(
      async () => {
        const [trigger, deps, sos] = await Promise.all([
          req("GET", `${API}/namespaces/${ns}/triggers/after`),
          list(`/apis/apps/v1/namespaces/${ns}/deployments`),
          list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`),
        ]);
        return ready(trigger) && deps.some(ownedByAfter) && sos.some(ownedByAfter);
      },
      {
        timeoutMs: 60_000,
        intervalMs: 200,
        message: "the Trigger applied after the failover: Ready, Deployment, ScaledObject",
      },
    ).catch(failWith([CONTROLLER_NS]));
    const reconciledMs = Date.now() - appliedAt;
    // Two controller Pods again (the ReplicaSet replaced the dead one): the new leader and a
    // standby; nothing the controllers did was refused (deploy/rbac.yaml grants every call they made).
    const after = await waitFor(
      async () => {
        const ps = await controllerPods();
        const names = ps.map((p) => p.metadata.name);
        return ps.length === 2 && ps.every(ready) && !names.includes(leader) && names.includes(newLeader)
          ? names
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: "2 controller Pods Ready, the killed one replaced" },
    ).catch(failWith([CONTROLLER_NS]));
    const newStandby = after.find((n) => n !== newLeader)!;
    await waitFor(async () => (await leaderGauge(newStandby)) === 0, {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: `ofevents_controller_leader 0 on ${newStandby}`,
    });
    expect(await holder()).toBe(newLeader);
    for (const pod of after) expect(agent.logs(`${CONTROLLER_NS}/${pod}`)).not.toMatch(/forbidden/i);

    // 6. Every record at both functions: ids topic/partition/offset, exactly those produced.
    const offsets = await admin.fetchTopicOffsets(kafkaTopic);
    await admin.disconnect();
    const expectedIds = offsets.flatMap((p) =>
      Array.from({ length: Number(p.high) }, (_, o) => `${kafkaTopic}/${p.partition}/${o}`),
    );
    expect(expectedIds.length).toBe(N);
    const expectedData = Array.from({ length: N }, (_, i) => `k-${i}`).sort();
    await waitFor(() => new Set(syncSink.ids).size >= N && new Set(asyncSink.ids).size >= N, {
      timeoutMs: 180_000,
      intervalMs: 250,
      message: `${N} events at the sync and the async function`,
    }).catch(async (err: unknown) => {
      const counts = `sync ${new Set(syncSink.ids).size}, async ${new Set(asyncSink.ids).size} of ${N}`;
      throw new Error(`${counts}: ${(err as Error).message}\n${await diagnosis([ns])}`, { cause: err });
    });
    const flowMs = Date.now() - flowStarted;
    const syncUnique = new Set(syncSink.ids);
    const asyncUnique = new Set(asyncSink.ids);
    expect([...syncUnique].sort()).toEqual([...expectedIds].sort());
    expect([...asyncUnique].sort()).toEqual([...expectedIds].sort());
    expect([...new Set(dataIds(syncSink))].sort()).toEqual(expectedData);
    expect([...new Set(dataIds(asyncSink))].sort()).toEqual(expectedData);
    const lost = 2 * N - syncUnique.size - asyncUnique.size;
    expect(lost).toBe(0);

    reportFigures(
      `platform deployed kafka→sync+async: sent=${N} sync=${syncUnique.size} async=${asyncUnique.size} duplicates=${syncSink.ids.length - syncUnique.size + asyncSink.ids.length - asyncUnique.size} (sync ${syncSink.ids.length - syncUnique.size}, async ${asyncSink.ids.length - asyncUnique.size}) lost=${lost} leaderFailoverMs=${recoveredMs} flowMs=${flowMs} podsReadyMs=${podsReadyMs}`,
    );
    reportFigures(
      `platform controller failover: replicas=2 controllersReadyMs=${controllersReadyMs} deliveredAtKill=${deliveredAtKill} recoveredMs=${recoveredMs} newLeader=${newLeader === standby ? "standby" : "replacement"} (lease ${LEASE_DURATION_MS} ms, retry ${LEASE_RETRY_MS} ms) newTriggerReconciledMs=${reconciledMs}`,
    );
  }, 330_000);
});
