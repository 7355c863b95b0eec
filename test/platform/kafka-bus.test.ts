// The default path on a Kafka EventBus, run for real: the controller (its default bus driver, dapr)
// renders the bus as a `pubsub.kafka` Component; the node agent runs the EventSource and Trigger
// Pods with real daprd sidecars that load it from the API server; a real Kafka broker (KRaft)
// carries the events; KEDA reconciles the Trigger's ScaledObject against that broker. Events
// posted to the EventSource Pod's webhook reach a sink through daprd, Kafka, daprd and the
// Trigger Pod, and the group KEDA watches is the one daprd consumes with.
import { setTimeout as delay } from "node:timers/promises";
import { KubeConfig } from "@kubernetes/client-node";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BusDriver, resolveOptions, startController, type ControllerHandle } from "@ofevents/controller";
import { silentLogger } from "@ofevents/core";
import { KafkaBroker } from "../helpers/kafka.js";
import { KedaOperator } from "../helpers/keda.js";
import { ControlPlane } from "../helpers/kube.js";
import { KubeControllerManager } from "../helpers/kube-controller-manager.js";
import { NodeAgent } from "../helpers/node-agent.js";
import { installCrds } from "../helpers/platform.js";
import { reportFigures } from "../helpers/report.js";
import { freePorts } from "../helpers/server.js";
import { RecordingSink, type Received } from "../helpers/sink.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

const API = "/apis/events.openfunction.io/v1alpha1";
/** The `time` of every posted event, kept as sent (nanoseconds included) all the way to the sink. */
const EVENT_TIME = "2026-01-02T03:04:05.123456789Z";
/** A stand-in image that idles, for the control ScaledObject's target. */
const IDLE_IMAGE = "example/idle:1";
/** KEDA's polling interval of the rendered ScaledObjects (seconds). */
const POLLING_S = 2;

interface Obj {
  metadata: {
    name: string;
    namespace?: string;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; name: string }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

let cp: ControlPlane;
let kcm: KubeControllerManager;
let keda: KedaOperator;
let kafka: KafkaBroker;
let agent: NodeAgent;
let controller: ControllerHandle | undefined;
let sink: RecordingSink;
let kc: KubeConfig;
let controllerNs: string;

async function req(method: string, path: string, body?: unknown): Promise<Obj & { items?: Obj[] }> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj & { items?: Obj[] };
}

async function list(path: string): Promise<Obj[]> {
  return (await req("GET", path)).items ?? [];
}

function conditionsOf(o: Obj): Condition[] {
  return (o.status?.["conditions"] ?? []) as Condition[];
}

function podsReady(pods: Obj[]): boolean {
  return pods.length > 0 && pods.every((p) => conditionsOf(p).some((c) => c.type === "Ready" && c.status === "True"));
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  [kcm, keda, kafka] = await Promise.all([
    KubeControllerManager.start(cp),
    KedaOperator.start(cp),
    KafkaBroker.start(),
  ]);
  kc = new KubeConfig();
  kc.loadFromString(cp.kubeconfig());
  await installCrds(cp, [
    ["dapr.io", "v1alpha1", "Component", "components"],
    ["dapr.io", "v1alpha1", "Resiliency", "resiliencies"],
  ]);
  agent = await NodeAgent.start(cp);
  agent.image(IDLE_IMAGE, { command: process.execPath, args: ["-e", "setInterval(() => {}, 1 << 30)"] });
  sink = await RecordingSink.start();
  controllerNs = `ofevents-system-${randomSuffix()}`;
  await req("POST", "/api/v1/namespaces", { metadata: { name: controllerNs } });
  // No busDriver: the controller's default, which `ofevents controller` also starts with (it
  // passes none unless --bus-driver or OFEVENTS_BUS_DRIVER is given).
  controller = await startController({
    kubeConfig: kc,
    logger: silentLogger(),
    // Short KEDA polls, so its Active condition follows the lag within seconds.
    options: { image: "ofevents/ofevents:test", keda: { pollingInterval: POLLING_S } },
    namespace: controllerNs,
    leaderElection: { identity: "platform", leaseDurationSeconds: 5, retryPeriodMs: 300 },
    backoff: { baseMs: 50, maxMs: 2_000 },
  });
  await waitFor(() => controller!.isLeader(), { timeoutMs: 10_000, message: "the controller leads" });
}, 240_000);

afterAll(async () => {
  await controller?.stop();
  await agent?.stop();
  await sink?.stop();
  await Promise.allSettled([keda?.stop(), kcm?.stop(), kafka?.stop()]);
  await cp?.stop();
}, 120_000);

interface FlowResult {
  sent: number;
  delivered: number;
  duplicates: number;
  readyMs: number;
}

/** Fails with what explains a stuck flow in `ns`: Pods, ScaledObjects, the Pods' and daprd's logs, the agent's and KEDA's. */
function diagnoser(ns: string): (err: unknown) => Promise<never> {
  return async (err) => {
    const pods = await list(`/api/v1/namespaces/${ns}/pods`);
    const deps = await list(`/apis/apps/v1/namespaces/${ns}/deployments`);
    const sos = await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`);
    const logs = pods
      .map(
        (p) =>
          `--- ${p.metadata.name}\n${agent.logs(`${ns}/${p.metadata.name}`).slice(-3000)}\n--- daprd\n${agent.daprd(`${ns}/${p.metadata.name}`)?.log.toString().slice(-3000) ?? "(none)"}`,
      )
      .join("\n");
    throw new Error(
      [
        (err as Error).message,
        `pods: ${JSON.stringify(pods.map((p) => [p.metadata.name, p.status]))}`,
        `deployments: ${JSON.stringify(deps.map((d) => [d.metadata.name, d.spec?.["replicas"], d.status]))}`,
        `scaledobjects: ${JSON.stringify(sos.map((o) => [o.metadata.name, o.spec, o.status]))}`,
        logs,
        `agent:\n${agent.log.toString().slice(-3000)}`,
        `keda:\n${keda.log.toString().slice(-3000)}`,
      ].join("\n"),
      { cause: err },
    );
  };
}

/**
 * A namespace with a Kafka EventBus `default` (`topicPrefix` when given), a webhook EventSource
 * `hooks` (event `orders` on a free local port) and a Trigger `t` delivering to the sink.
 */
async function createFlow(topicPrefix?: string): Promise<{ ns: string; webhookPort: number; brokers: string }> {
  const ns = `kbus-${randomSuffix()}`;
  await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
  const [webhookPort] = await freePorts(1);
  const brokers = kafka.brokers.join(",");
  await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "EventBus",
    metadata: { name: "default", namespace: ns },
    spec: { kafka: { brokers, ...(topicPrefix === undefined ? {} : { topicPrefix }) } },
  });
  await req("POST", `${API}/namespaces/${ns}/eventsources`, {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "EventSource",
    metadata: { name: "hooks", namespace: ns },
    spec: { eventBus: "default", webhook: { orders: { port: String(webhookPort), endpoint: "/orders" } } },
  });
  await req("POST", `${API}/namespaces/${ns}/triggers`, {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "Trigger",
    metadata: { name: "t", namespace: ns },
    spec: {
      eventBus: "default",
      inputs: { o: { eventSource: "hooks", event: "orders" } },
      subscribers: [{ condition: "o", sink: { uri: sink.url } }],
    },
  });
  return { ns, webhookPort: webhookPort!, brokers };
}

/** Posts one event per id to the webhook, one at a time, each with source `/shop/{ns}`, a subject, a time and an extension. */
async function post(ns: string, webhookPort: number, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    const res = await fetch(`http://127.0.0.1:${webhookPort}/orders`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": id,
        "ce-source": `/shop/${ns}`,
        "ce-type": "order",
        "ce-subject": `order/${id}`,
        "ce-orderclass": "gold",
        "ce-time": EVENT_TIME,
      },
      body: JSON.stringify({ id }),
    });
    expect(res.status).toBe(200);
  }
}

/** What the sink received from namespace `ns` (event ids repeat across namespaces; sources do not). */
function receivedFrom(ns: string, prefix: string): Received[] {
  return sink.received.filter((r) => r.headers["ce-source"] === `/shop/${ns}` && r.id.startsWith(prefix));
}

/**
 * One flow ({@link createFlow}) on the controller's default bus driver; posts `n` events and
 * checks every step from the rendered Component to the consumer group on the broker.
 */
async function daprKafkaFlow(n: number, topicPrefix?: string): Promise<FlowResult> {
  const { ns, webhookPort, brokers } = await createFlow(topicPrefix);
  const diagnose = diagnoser(ns);

  // The rendered Component: pubsub.kafka on the broker, the group daprd names per app.
  const component = await waitFor(
    async () =>
      (await list(`/apis/dapr.io/v1alpha1/namespaces/${ns}/components`)).find((c) => c.metadata.name === "default"),
    { timeoutMs: 60_000, intervalMs: 250, message: "the bus's Component rendered" },
  );
  const componentSpec = component.spec as { type: string; metadata: { name: string; value?: string }[] };
  const meta = (name: string): string | undefined => componentSpec.metadata.find((m) => m.name === name)?.value;
  expect(componentSpec.type).toBe("pubsub.kafka");
  expect(meta("brokers")).toBe(brokers);

  const started = Date.now();
  await waitFor(
    async () => {
      const pods = await list(`/api/v1/namespaces/${ns}/pods`);
      return pods.length === 2 && podsReady(pods);
    },
    { timeoutMs: 180_000, intervalMs: 250, message: "the EventSource and Trigger Pods (with daprd) Ready" },
  ).catch(diagnose);
  const readyMs = Date.now() - started;
  const pods = await list(`/api/v1/namespaces/${ns}/pods`);
  for (const p of pods) {
    expect(agent.daprd(`${ns}/${p.metadata.name}`), `${p.metadata.name} has a daprd`).toBeDefined();
    expect(p.metadata.annotations?.["dapr.io/enabled"]).toBe("true");
    // The workload reaches the bus through that daprd (the controller's default driver).
    const args = ((p.spec?.["containers"] ?? []) as { args?: string[] }[])[0]?.args ?? [];
    expect(args.slice(args.indexOf("--bus-driver"), args.indexOf("--bus-driver") + 2)).toEqual([
      "--bus-driver",
      "dapr",
    ]);
  }
  const triggerPod = pods.find((p) => p.metadata.name.startsWith("trigger-"))!;
  expect(triggerPod, "the Trigger's Pod").toBeDefined();
  const appId = triggerPod.metadata.annotations?.["dapr.io/app-id"] ?? triggerPod.metadata.name;

  // The names daprd uses for this Component: the group is its consumerGroup metadata with the
  // app id in place of {appID} (daprd's default, when absent, is the app id itself); the topic
  // is the bus topic {namespace}-{eventSource}-{event} after the bus's topicPrefix (a valid
  // Kafka name as it stands), which the workloads' dapr driver publishes and subscribes to.
  const group = (meta("consumerGroup") ?? "{appID}").split("{appID}").join(appId);
  if (topicPrefix !== undefined) expect(group).toBe(`${topicPrefix}${appId}`);
  const topic = `${topicPrefix ?? ""}${ns}-hooks-orders`;
  const scaled = await waitFor(
    async () =>
      (await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`)).find((s) =>
        (s.metadata.ownerReferences ?? []).some((r) => r.kind === "Trigger"),
      ),
    { timeoutMs: 60_000, intervalMs: 250, message: "the Trigger's ScaledObject" },
  );
  const triggers = (scaled.spec?.["triggers"] ?? []) as { type: string; metadata: Record<string, string> }[];
  expect(triggers.map((t) => t.type)).toEqual(["kafka"]);
  expect(triggers[0]!.metadata).toMatchObject({ bootstrapServers: brokers, consumerGroup: group, topic });

  const N = n;
  const ids = Array.from({ length: N }, (_, i) => `kbus-${i}`);
  await post(ns, webhookPort, ids);
  const mine = (): Received[] => receivedFrom(ns, "kbus-");
  const got = (): string[] => mine().map((r) => r.id);
  await waitFor(() => new Set(got()).size >= N, {
    timeoutMs: 120_000,
    intervalMs: 250,
    message: `${N} events at the sink through Kafka and daprd`,
  }).catch(diagnose);
  const unique = new Set(got());
  expect([...unique].sort()).toEqual([...ids].sort());
  // Every attribute crossed daprd and Kafka twice unchanged, the extension included.
  for (const r of mine()) {
    expect(r.headers["ce-type"]).toBe("order");
    expect(r.headers["ce-subject"]).toBe(`order/${r.id}`);
    expect(r.headers["ce-orderclass"]).toBe("gold");
    expect(r.headers["ce-time"]).toBe(EVENT_TIME);
    expect(JSON.parse(r.body.toString("utf8"))).toEqual({ id: r.id });
  }

  // The group KEDA watches is the one on the broker: daprd's consumer group of that topic.
  const admin = new Kafka({ clientId: "kafka-bus-test", brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
    expect(groups).toContain(group);
    // The direct driver's group of this Trigger was never used: the events came through daprd.
    expect(groups).not.toContain(`${topicPrefix ?? ""}trigger-${ns}-t`);
    const described = (await admin.describeGroups([group])).groups[0]!;
    expect(described.state).toBe("Stable");
    expect(described.members.length).toBeGreaterThanOrEqual(1);
    // daprd commits its marked offsets in the background (every second): the group catches up.
    const committed = async (): Promise<number> =>
      (await admin.fetchOffsets({ groupId: group, topics: [topic] }))
        .flatMap((o) => o.partitions)
        .reduce((n, p) => n + Math.max(Number(p.offset), 0), 0);
    await waitFor(async () => (await committed()) === N, {
      timeoutMs: 60_000,
      intervalMs: 500,
      message: `the group ${group} committed ${N} offsets of ${topic}`,
    }).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; committed ${await committed()}`, { cause: err });
    });
  } finally {
    await admin.disconnect();
  }

  // KEDA reached the broker and parsed the trigger (Ready), and reads no lag (not Active): the
  // group it watches has committed the whole topic. A group daprd does not use would have no
  // commits, and KEDA (offsetResetPolicy earliest) would count the whole topic as lag: Active.
  const status = async (type: string): Promise<string | undefined> => {
    const so = (await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`)).find(
      (s) => s.metadata.name === scaled.metadata.name,
    );
    return so === undefined ? undefined : conditionsOf(so).find((c) => c.type === type)?.status;
  };
  await waitFor(async () => (await status("Ready")) === "True", {
    timeoutMs: 120_000,
    intervalMs: 500,
    message: "the Trigger's ScaledObject Ready",
  }).catch(diagnose);
  // Two polls after the last commit, so the condition reflects the lag after delivery.
  await delay(2 * POLLING_S * 1000 + 500);
  await waitFor(async () => (await status("Active")) === "False" && (await status("Ready")) === "True", {
    timeoutMs: 60_000,
    intervalMs: 500,
    message: "the Trigger's ScaledObject Ready and not Active (no lag on daprd's group)",
  }).catch(diagnose);

  // The control: the same trigger on a group nobody consumes with is Active (the whole topic is
  // its lag), so "not Active" above is KEDA reading daprd's commits.
  const control = `control-${randomSuffix()}`;
  await req("POST", `/apis/apps/v1/namespaces/${ns}/deployments`, {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: control, namespace: ns },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: control } },
      template: {
        metadata: { labels: { app: control } },
        spec: { containers: [{ name: "idle", image: IDLE_IMAGE }] },
      },
    },
  });
  await req("POST", `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`, {
    apiVersion: "keda.sh/v1alpha1",
    kind: "ScaledObject",
    metadata: { name: control, namespace: ns },
    spec: {
      scaleTargetRef: { name: control },
      minReplicaCount: 1,
      maxReplicaCount: 1,
      pollingInterval: POLLING_S,
      triggers: [{ type: "kafka", metadata: { ...triggers[0]!.metadata, consumerGroup: `${group}-unused` } }],
    },
  });
  await waitFor(
    async () => {
      const so = (await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`)).find(
        (s) => s.metadata.name === control,
      );
      const c = so === undefined ? [] : conditionsOf(so);
      return (
        c.some((x) => x.type === "Ready" && x.status === "True") &&
        c.some((x) => x.type === "Active" && x.status === "True")
      );
    },
    { timeoutMs: 60_000, intervalMs: 500, message: "the control ScaledObject (a group without commits) Active" },
  ).catch(diagnose);

  return { sent: N, delivered: unique.size, duplicates: got().length - unique.size, readyMs };
}

const figures = (label: string, r: FlowResult): string =>
  `platform flow ${label}: sent=${r.sent} delivered=${r.delivered} duplicates=${r.duplicates} lost=${r.sent - r.delivered} podsReadyMs=${r.readyMs}`;

describe("platform - a Kafka EventBus on the default (Dapr) path", () => {
  it("platform - the controller's default bus driver is dapr", () => {
    expect(resolveOptions({ image: "ofevents/ofevents:test" }).busDriver).toBe(BusDriver.Dapr);
  });

  it("platform - webhook EventSource → pubsub.kafka through daprd → Trigger → sink, as Pods; KEDA watches the group daprd consumes with", async () => {
    reportFigures(figures("dapr kafka", await daprKafkaFlow(300)));
  }, 300_000);

  it("platform - with a topicPrefix, the topic and group KEDA watches are the prefixed ones daprd uses", async () => {
    reportFigures(figures("dapr kafka topicPrefix", await daprKafkaFlow(100, "ofevents.")));
  }, 300_000);

  it("platform - the idle Trigger on the Dapr path scales to zero, and a backlog on daprd's group brings it back", async () => {
    // A controller with short cooldowns takes over (it re-renders the ScaledObjects of every
    // namespace; the cases above are done): a new ScaledObject may scale to zero after 10 s, an
    // idle one 3 s after its last activity.
    await controller?.stop();
    controller = await startController({
      kubeConfig: kc,
      logger: silentLogger(),
      options: {
        image: "ofevents/ofevents:test",
        keda: { pollingInterval: POLLING_S, initialCooldownPeriod: 10, cooldownPeriod: 3 },
      },
      namespace: controllerNs,
      leaderElection: { identity: "platform-2", leaseDurationSeconds: 5, retryPeriodMs: 300 },
      backoff: { baseMs: 50, maxMs: 2_000 },
    });
    await waitFor(() => controller!.isLeader(), { timeoutMs: 30_000, message: "the second controller leads" });

    const { ns, webhookPort } = await createFlow();
    const diagnose = diagnoser(ns);
    const replicas = async (): Promise<number | undefined> =>
      (await list(`/apis/apps/v1/namespaces/${ns}/deployments`)).find((d) =>
        (d.metadata.ownerReferences ?? []).some((r) => r.kind === "Trigger"),
      )?.spec?.["replicas"] as number | undefined;
    const triggerPodReady = async (): Promise<boolean> =>
      (await list(`/api/v1/namespaces/${ns}/pods`)).some(
        (p) => p.metadata.name.startsWith("trigger-") && podsReady([p]),
      );

    // The Trigger runs once (daprd joins its group), then, idle, KEDA scales it to zero.
    await waitFor(triggerPodReady, {
      timeoutMs: 180_000,
      intervalMs: 250,
      message: "the Trigger Pod (with daprd) Ready once",
    }).catch(diagnose);
    await waitFor(async () => (await replicas()) === 0, {
      timeoutMs: 120_000,
      intervalMs: 250,
      message: "the idle Trigger Deployment at 0 replicas",
    }).catch(diagnose);
    await waitFor(async () => !(await triggerPodReady()), {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: "the Trigger Pod gone",
    }).catch(diagnose);

    // Events published while it sleeps are lag on daprd's group: KEDA wakes the Trigger.
    const ids = Array.from({ length: 200 }, (_, i) => `wake-${i}`);
    const woken = Date.now();
    await post(ns, webhookPort, ids);
    const got = (): string[] => receivedFrom(ns, "wake-").map((r) => r.id);
    await waitFor(() => new Set(got()).size === ids.length, {
      timeoutMs: 180_000,
      intervalMs: 250,
      message: "the backlog delivered after scaling from zero",
    }).catch(diagnose);
    const recoveredMs = Date.now() - woken;
    expect(await replicas()).toBe(1);
    const unique = new Set(got());
    expect([...unique].sort()).toEqual([...ids].sort());
    reportFigures(
      `platform dapr kafka scale to zero and back: sent=${ids.length} delivered=${unique.size} duplicates=${got().length - unique.size} lost=${ids.length - unique.size} recoveredMs=${recoveredMs}`,
    );
  }, 360_000);
});
