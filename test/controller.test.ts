// The controller's reconcile loop against a real kube-apiserver (test/helpers/kube.ts) with our
// CRDs plus minimal KEDA and Dapr CRDs: what it applies, the status it writes, the bus appearing
// later, the ClusterEventBus fallback, updates, and leader election through a Lease.
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiextensionsV1Api, KubeConfig, loadYaml, type V1CustomResourceDefinition } from "@kubernetes/client-node";
import { createLogger, silentLogger } from "@ofevents/core";
import { parseAllDocuments } from "yaml";
import {
  renderEventSource,
  renderTrigger,
  startController,
  validateEventSource,
  validateTrigger,
  workloadName,
  CONTROLLER_METRICS,
  type ControllerHandle,
  type ControllerOptions,
} from "@ofevents/controller";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "./helpers/kube.js";
import { OFEVENTS_BIN } from "./helpers/ofevents.js";
import { metricValue } from "./helpers/prometheus.js";
import { freePorts } from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";
import { looseCrd } from "./helpers/platform.js";

const ROOT = join(import.meta.dirname, "..");
const API = "/apis/events.openfunction.io/v1alpha1";
const OPTIONS: ControllerOptions = { image: "ghcr.io/example/ofevents:test" };

interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  status?: {
    observedGeneration?: number;
    conditions?: {
      type: string;
      status: string;
      reason: string;
      message: string;
      lastTransitionTime: string;
      observedGeneration?: number;
    }[];
  };
}

let cp: ControlPlane;
let kc: KubeConfig;
let controller: ControllerHandle | undefined;

/** A request as the admin; throws with the API server's message unless 2xx. */
async function req(method: string, path: string, body?: unknown, contentType?: string): Promise<Obj> {
  const res = await cp.request(method, path, {
    ...(body === undefined ? {} : { body }),
    ...(contentType === undefined ? {} : { contentType }),
  });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj;
}

async function status(path: string): Promise<number> {
  return (await cp.request("GET", path)).status;
}

async function createNamespace(): Promise<string> {
  const name = `t-${randomSuffix()}`;
  await req("POST", "/api/v1/namespaces", { metadata: { name } });
  return name;
}

const nsPath = (ns: string, plural: string, name = ""): string =>
  `${API}/namespaces/${ns}/${plural}${name === "" ? "" : `/${name}`}`;

async function waitEstablished(name: string, listPath: string): Promise<void> {
  await waitFor(
    async () => {
      const crd = await req("GET", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
      const ok = (crd.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions?.some(
        (c) => c.type === "Established" && c.status === "True",
      );
      return ok === true && (await status(`${listPath}?limit=1`)) === 200;
    },
    { timeoutMs: 30_000, intervalMs: 100, message: `${name} Established` },
  );
}

function ready(o: Obj): NonNullable<NonNullable<Obj["status"]>["conditions"]>[number] | undefined {
  return o.status?.conditions?.find((c) => c.type === "Ready");
}

/** Waits until the resource at `path` has a Ready condition for its current generation matching `want`. */
async function waitReady(path: string, want: { status: string; reason?: string }): Promise<Obj> {
  return await waitFor(
    async () => {
      const o = await req("GET", path);
      const c = ready(o);
      const match =
        c !== undefined &&
        c.status === want.status &&
        (want.reason === undefined || c.reason === want.reason) &&
        c.observedGeneration === o.metadata.generation &&
        o.status?.observedGeneration === o.metadata.generation;
      return match ? o : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 100, message: `${path} Ready ${want.status} ${want.reason ?? ""}` },
  );
}

const kafkaBus = (name: string, ns?: string): Obj => ({
  apiVersion: "events.openfunction.io/v1alpha1",
  kind: ns === undefined ? "ClusterEventBus" : "EventBus",
  metadata: { name, ...(ns === undefined ? {} : { namespace: ns }) },
  spec: { kafka: { brokers: "kafka-0.kafka:9092", topicPrefix: "ofevents." } },
});

const kafkaSource = (name: string, bus: string, topic = "orders"): Obj => ({
  apiVersion: "events.openfunction.io/v1alpha1",
  kind: "EventSource",
  metadata: { name },
  spec: {
    eventBus: bus,
    kafka: { created: { brokers: "kafka-0.kafka:9092", topic, authRequired: false } },
  },
});

beforeAll(async () => {
  cp = await ControlPlane.start();
  kc = new KubeConfig();
  kc.loadFromString(cp.kubeconfig());
  const crdApi = kc.makeApiClient(ApiextensionsV1Api);
  const waits: Promise<void>[] = [];
  for (const file of (await readdir(join(ROOT, "crds"))).filter((f) => f.endsWith(".yaml")).sort()) {
    // loadYaml maps x-kubernetes-* and enum onto client-node's model (plain YAML would lose them).
    const crd = loadYaml<V1CustomResourceDefinition>(await readFile(join(ROOT, "crds", file), "utf8"));
    const created = await crdApi.createCustomResourceDefinition({ body: crd });
    waits.push(waitEstablished(created.metadata!.name!, `${API}/${created.spec.names.plural}`));
  }
  for (const [group, version, kind, plural] of [
    ["keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"],
    ["keda.sh", "v1alpha1", "TriggerAuthentication", "triggerauthentications"],
    ["dapr.io", "v1alpha1", "Component", "components"],
    ["dapr.io", "v1alpha1", "Resiliency", "resiliencies"],
  ] as const) {
    await req(
      "POST",
      "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
      looseCrd(group, version, kind, plural),
    );
    waits.push(waitEstablished(`${plural}.${group}`, `/apis/${group}/${version}/${plural}`));
  }
  await Promise.all(waits);
  const controllerNs = await createNamespace();
  controller = await startController({
    kubeConfig: kc,
    logger: silentLogger(),
    options: OPTIONS,
    namespace: controllerNs,
    leaderElection: { identity: "main", leaseDurationSeconds: 5, retryPeriodMs: 300 },
    backoff: { baseMs: 50, maxMs: 2_000 },
  });
  await waitFor(() => controller!.isLeader(), { timeoutMs: 10_000, message: "main controller leads" });
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await cp?.stop();
}, 60_000);

describe("controller", () => {
  it("controller - an EventBus, a kafka EventSource and a two-input Trigger become their objects, Ready", async () => {
    const ns = await createNamespace();
    const bus = await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    const es = await req("POST", nsPath(ns, "eventsources"), kafkaSource("orders", "default"));
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("payments", "default", "payments"));
    const trigger = await req("POST", nsPath(ns, "triggers"), {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "pair" },
      spec: {
        eventBus: "default",
        inputs: {
          a: { eventSource: "orders", event: "created" },
          b: { eventSource: "payments", event: "created" },
        },
        subscribers: [
          { condition: "a", sink: { uri: "http://sink-a.default.svc/" } },
          { condition: "a && b", topic: "matched" },
        ],
      },
    });

    const esReady = await waitReady(nsPath(ns, "eventsources", "orders"), { status: "True", reason: "Valid" });
    expect(ready(esReady)).toMatchObject({ type: "Ready", status: "True", observedGeneration: 1 });
    expect(Date.parse(ready(esReady)!.lastTransitionTime)).not.toBeNaN();
    const busReady = await waitReady(nsPath(ns, "eventbuses", "default"), { status: "True" });
    expect(busReady.status?.observedGeneration).toBe(1);
    await waitReady(nsPath(ns, "triggers", "pair"), { status: "True", reason: "Valid" });

    // What the pure render gives for the objects as the API server stores them.
    const buses = { eventBuses: [bus as never], clusterEventBuses: [] };
    const vEs = validateEventSource(es, { buses, options: OPTIONS });
    expect(vEs.ok).toBe(true);
    const wantEs = renderEventSource({
      eventSource: vEs.resource!,
      bus: vEs.ok ? vEs.bus : undefined,
      options: OPTIONS,
    });
    const vT = validateTrigger(trigger, { buses, options: OPTIONS });
    if (!vT.ok) throw new Error(vT.condition.message);
    const wantT = renderTrigger({ trigger: vT.resource, bus: vT.bus, options: OPTIONS });

    const owner = { kind: "EventSource", name: "orders", uid: es.metadata.uid, controller: true };
    const cm = await req("GET", `/api/v1/namespaces/${ns}/configmaps/eventsource-orders`);
    expect(cm.metadata.labels).toMatchObject({
      "app.kubernetes.io/managed-by": "ofevents",
      "events.openfunction.io/eventsource": "orders",
    });
    expect(cm.metadata.ownerReferences).toEqual([expect.objectContaining(owner)]);
    expect(cm.data).toEqual(wantEs.configMap.data);

    const dep = await req("GET", `/apis/apps/v1/namespaces/${ns}/deployments/eventsource-orders`);
    expect(dep.metadata.ownerReferences).toEqual([expect.objectContaining(owner)]);
    const tmpl = (
      dep.spec as { template: { metadata: Obj["metadata"]; spec: { containers: Record<string, unknown>[] } } }
    ).template;
    expect(tmpl.metadata.annotations).toMatchObject({
      "dapr.io/enabled": "true",
      "dapr.io/app-id": "eventsource-orders",
      "dapr.io/app-port": "8081",
    });
    const container = tmpl.spec.containers[0]!;
    const wantContainer = wantEs.deployment!.spec.template.spec.containers[0]!;
    expect(container["image"]).toBe("ghcr.io/example/ofevents:test");
    expect(container["args"]).toEqual(wantContainer.args);
    expect(container["args"]).toContain("eventsource");
    expect(dep.spec?.["replicas"]).toBe(wantEs.deployment!.spec.replicas ?? 1);

    const so = await req("GET", `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/eventsource-orders`);
    expect(so.spec).toEqual(wantEs.scaledObject!.spec);
    expect(so.spec?.["scaleTargetRef"]).toMatchObject({ kind: "Deployment", name: "eventsource-orders" });
    const triggers = so.spec?.["triggers"] as { type: string; metadata: Record<string, string> }[];
    expect(triggers.map((t) => t.type)).toEqual(["kafka"]);
    expect(triggers[0]!.metadata).toMatchObject({ topic: "orders", bootstrapServers: "kafka-0.kafka:9092" });

    // The Trigger: ConfigMap, Deployment running `ofevents trigger`, ScaledObject on its two input topics.
    const tcm = await req("GET", `/api/v1/namespaces/${ns}/configmaps/trigger-pair`);
    expect(tcm.data).toEqual(wantT.configMap.data);
    expect(tcm.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: "Trigger", name: "pair", uid: trigger.metadata.uid }),
    ]);
    const tdep = await req("GET", `/apis/apps/v1/namespaces/${ns}/deployments/trigger-pair`);
    const tArgs = (tdep.spec as { template: { spec: { containers: { args: string[] }[] } } }).template.spec
      .containers[0]!.args;
    expect(tArgs).toEqual(wantT.deployment!.spec.template.spec.containers[0]!.args);
    expect(tArgs).toContain("trigger");
    const tso = await req("GET", `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/trigger-pair`);
    expect(tso.spec).toEqual(wantT.scaledObject!.spec);
    expect((tso.spec?.["triggers"] as unknown[]).length).toBe(2);

    // The bus's Dapr objects, owned by the EventBus; every object applied by the controller's field manager.
    expect(wantEs.eventBus.map((o) => o.kind).sort()).toEqual(["Component", "Resiliency"]);
    for (const o of wantEs.eventBus) {
      const plural = o.kind === "Component" ? "components" : "resiliencies";
      const got = await req("GET", `/apis/dapr.io/v1alpha1/namespaces/${ns}/${plural}/${o.metadata.name}`);
      expect(got.spec).toEqual(o.spec);
      expect(got.metadata.ownerReferences).toEqual([
        expect.objectContaining({ kind: "EventBus", name: "default", uid: bus.metadata.uid }),
      ]);
    }
    const managed = (await cp.request("GET", `/api/v1/namespaces/${ns}/configmaps/eventsource-orders`)).json as {
      metadata: { managedFields: { manager: string; operation: string }[] };
    };
    expect(managed.metadata.managedFields).toContainEqual(
      expect.objectContaining({ manager: "ofevents-controller", operation: "Apply" }),
    );
  }, 60_000);

  it("controller - a source whose bus is missing is EventBusNotFound until the bus appears", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("early", "later"));
    const nf = await waitReady(nsPath(ns, "eventsources", "early"), { status: "False", reason: "EventBusNotFound" });
    expect(ready(nf)!.message).toContain('EventBus "later" not found');
    expect(await status(`/api/v1/namespaces/${ns}/configmaps/eventsource-early`)).toBe(404);

    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("later", ns));
    const ok = await waitReady(nsPath(ns, "eventsources", "early"), { status: "True", reason: "Valid" });
    expect(ready(ok)!.message).toContain("valid");
    expect(await status(`/apis/apps/v1/namespaces/${ns}/deployments/eventsource-early`)).toBe(200);
  }, 60_000);

  it("controller - a source falls back to a ClusterEventBus of that name", async () => {
    const ns = await createNamespace();
    const name = `cluster-${randomSuffix()}`;
    await req("POST", `${API}/clustereventbuses`, kafkaBus(name));
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("fallback", name));
    await waitReady(nsPath(ns, "eventsources", "fallback"), { status: "True", reason: "Valid" });
    const cm = await req("GET", `/api/v1/namespaces/${ns}/configmaps/eventsource-fallback`);
    expect(cm.data?.[Object.keys(cm.data)[0]!]).toContain(name);
    await waitReady(`${API}/clustereventbuses/${name}`, { status: "True" });
  }, 60_000);

  it("controller - a bad spec is a NotReady condition and the loop keeps going", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    await req("POST", nsPath(ns, "eventsources"), {
      ...kafkaSource("bad", "default"),
      spec: {
        eventBus: "default",
        logLevel: "loud",
        kafka: { x: { brokers: "b:9092", topic: "t", authRequired: false } },
      },
    });
    const bad = await waitReady(nsPath(ns, "eventsources", "bad"), { status: "False", reason: "InvalidSpec" });
    expect(ready(bad)!.message).toContain("spec.logLevel");
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("good", "default"));
    await waitReady(nsPath(ns, "eventsources", "good"), { status: "True" });
  }, 60_000);

  it("controller - OpenFunction's redis event: the workload runs the other events, Ready False names the event", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    await req("POST", nsPath(ns, "eventsources"), {
      ...kafkaSource("mixed", "default"),
      spec: {
        eventBus: "default",
        kafka: { orders: { brokers: "b:9092", topic: "t", authRequired: false } },
        redis: { cache: { redisHost: "redis:6379", redisPassword: "" } },
      },
    });
    const es = await waitReady(nsPath(ns, "eventsources", "mixed"), { status: "False", reason: "EventNotRunnable" });
    expect(ready(es)!.message).toMatch(/^spec\.redis\.cache: redis event "cache" does not run/);
    expect(await status(`/apis/apps/v1/namespaces/${ns}/deployments/eventsource-mixed`)).toBe(200);
  }, 60_000);

  it("controller - a spec change re-renders and bumps observedGeneration", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("moving", "default", "first"));
    await waitReady(nsPath(ns, "eventsources", "moving"), { status: "True" });
    const soPath = `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/eventsource-moving`;
    expect(
      ((await req("GET", soPath)).spec?.["triggers"] as { metadata: { topic: string } }[])[0]!.metadata.topic,
    ).toBe("first");

    await req(
      "PATCH",
      nsPath(ns, "eventsources", "moving"),
      { spec: { kafka: { created: { brokers: "kafka-0.kafka:9092", topic: "second", authRequired: false } } } },
      "application/merge-patch+json",
    );
    const updated = await waitReady(nsPath(ns, "eventsources", "moving"), { status: "True" });
    expect(updated.metadata.generation).toBe(2);
    expect(updated.status?.observedGeneration).toBe(2);
    await waitFor(
      async () =>
        ((await req("GET", soPath)).spec?.["triggers"] as { metadata: { topic: string } }[])[0]!.metadata.topic ===
        "second",
      { timeoutMs: 10_000, message: "ScaledObject re-rendered" },
    );
    const cm = await req("GET", `/api/v1/namespaces/${ns}/configmaps/eventsource-moving`);
    expect(Object.values(cm.data ?? {}).join()).toContain("second");
  }, 60_000);

  it("controller - an object no longer rendered is pruned (the webhook Service goes with the webhook)", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    const hook = { webhook: { endpoint: "/orders", port: 12000 } };
    const source = kafkaSource("hooked", "default");
    await req("POST", nsPath(ns, "eventsources"), { ...source, spec: { ...source.spec, webhook: hook } });
    await waitReady(nsPath(ns, "eventsources", "hooked"), { status: "True" });
    const svcPath = `/api/v1/namespaces/${ns}/services/eventsource-hooked`;
    const svc = await req("GET", svcPath);
    expect((svc.spec as { ports: { port: number }[] }).ports.map((p) => p.port)).toEqual([12000]);

    await req(
      "PATCH",
      nsPath(ns, "eventsources", "hooked"),
      { spec: { webhook: null } },
      "application/merge-patch+json",
    );
    await waitFor(async () => (await status(svcPath)) === 404, { timeoutMs: 10_000, message: "Service pruned" });
    expect(await status(`/apis/apps/v1/namespaces/${ns}/deployments/eventsource-hooked`)).toBe(200);
  }, 60_000);

  it("controller - kubernetes events get a ServiceAccount, a Role and a ClusterRole with their bindings; what is no longer rendered is pruned, owned or not, and the unowned goes with the EventSource", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    const source = kafkaSource("watching", "default");
    await req("POST", nsPath(ns, "eventsources"), {
      ...source,
      spec: {
        ...source.spec,
        kubernetes: {
          configs: { version: "v1", resource: "configmaps", namespace: ns },
          nodes: { version: "v1", kind: "Node" },
        },
      },
    });
    await waitReady(nsPath(ns, "eventsources", "watching"), { status: "True" });
    const rbac = "/apis/rbac.authorization.k8s.io/v1";
    const dep = await req("GET", `/apis/apps/v1/namespaces/${ns}/deployments/eventsource-watching`);
    expect((dep.spec as { template: { spec: { serviceAccountName?: string } } }).template.spec.serviceAccountName).toBe(
      "eventsource-watching",
    );
    expect(await status(`/api/v1/namespaces/${ns}/serviceaccounts/eventsource-watching`)).toBe(200);
    const role = await req("GET", `${rbac}/namespaces/${ns}/roles/eventsource-watching`);
    expect((role as unknown as { rules: unknown }).rules).toEqual([
      { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"] },
    ]);
    expect(await status(`${rbac}/namespaces/${ns}/rolebindings/eventsource-watching`)).toBe(200);
    const clusterRole = await req("GET", `${rbac}/clusterroles/ofevents:${ns}:eventsource-watching`);
    expect((clusterRole as unknown as { rules: unknown }).rules).toEqual([
      { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] },
    ]);
    expect(await status(`${rbac}/clusterrolebindings/ofevents:${ns}:eventsource-watching`)).toBe(200);

    await req(
      "PATCH",
      nsPath(ns, "eventsources", "watching"),
      { spec: { kubernetes: { configs: null } } },
      "application/merge-patch+json",
    );
    await waitFor(async () => (await status(`${rbac}/namespaces/${ns}/roles/eventsource-watching`)) === 404, {
      timeoutMs: 10_000,
      message: "Role pruned",
    });
    expect(await status(`/api/v1/namespaces/${ns}/serviceaccounts/eventsource-watching`)).toBe(200);
    // Still rendered: the ClusterRole stays.
    expect(await status(`${rbac}/clusterroles/ofevents:${ns}:eventsource-watching`)).toBe(200);

    // Not owned (cluster-scoped, another namespace), yet pruned by label once no longer rendered ...
    const other = await createNamespace();
    await req(
      "PATCH",
      nsPath(ns, "eventsources", "watching"),
      { spec: { kubernetes: { nodes: null, elsewhere: { version: "v1", resource: "configmaps", namespace: other } } } },
      "application/merge-patch+json",
    );
    const otherRole = `${rbac}/namespaces/${other}/roles/ofevents:${ns}:eventsource-watching`;
    const otherBinding = `${rbac}/namespaces/${other}/rolebindings/ofevents:${ns}:eventsource-watching`;
    await waitFor(async () => (await status(otherRole)) === 200 && (await status(otherBinding)) === 200, {
      timeoutMs: 10_000,
      message: "Role in the other namespace",
    });
    await waitFor(
      async () =>
        (await status(`${rbac}/clusterroles/ofevents:${ns}:eventsource-watching`)) === 404 &&
        (await status(`${rbac}/clusterrolebindings/ofevents:${ns}:eventsource-watching`)) === 404,
      { timeoutMs: 10_000, message: "ClusterRole and its binding pruned" },
    );
    // ... and all of it once the EventSource is gone. Gone also before the test of
    // deploy/rbac.yaml alone, whose controller may not create ServiceAccounts.
    await req("DELETE", nsPath(ns, "eventsources", "watching"));
    await waitFor(async () => (await status(otherRole)) === 404 && (await status(otherBinding)) === 404, {
      timeoutMs: 10_000,
      message: "the other namespace's Role and binding removed with the EventSource",
    });
  }, 60_000);

  it("controller - an EventSource with kubernetes events deleted while no controller ran: the next one to lead removes the RBAC it could not own", async () => {
    const ns = await createNamespace();
    const other = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    const source = kafkaSource("gone", "default");
    await req("POST", nsPath(ns, "eventsources"), {
      ...source,
      spec: {
        ...source.spec,
        kubernetes: {
          nodes: { version: "v1", kind: "Node" },
          elsewhere: { version: "v1", resource: "configmaps", namespace: other },
        },
      },
    });
    const rbac = "/apis/rbac.authorization.k8s.io/v1";
    const unowned = [
      `${rbac}/clusterroles/ofevents:${ns}:eventsource-gone`,
      `${rbac}/clusterrolebindings/ofevents:${ns}:eventsource-gone`,
      `${rbac}/namespaces/${other}/roles/ofevents:${ns}:eventsource-gone`,
      `${rbac}/namespaces/${other}/rolebindings/ofevents:${ns}:eventsource-gone`,
    ];
    const statuses = async () => Promise.all(unowned.map((p) => status(p)));
    await waitFor(async () => (await statuses()).every((s) => s === 200), {
      timeoutMs: 10_000,
      message: "the ClusterRole and the other namespace's Role, with their bindings",
    });
    // No controller sees the deletion: what it could not own stays ...
    await controller?.stop();
    controller = undefined;
    await req("DELETE", nsPath(ns, "eventsources", "gone"));
    await waitFor(async () => (await status(nsPath(ns, "eventsources", "gone"))) === 404, {
      timeoutMs: 10_000,
      message: "the EventSource gone",
    });
    expect(await statuses()).toEqual([200, 200, 200, 200]);
    // ... until the next controller takes the lead.
    controller = await startController({
      kubeConfig: kc,
      logger: silentLogger(),
      options: OPTIONS,
      namespace: await createNamespace(),
      leaderElection: { identity: "main", leaseDurationSeconds: 5, retryPeriodMs: 300 },
      backoff: { baseMs: 50, maxMs: 2_000 },
    });
    let last: number[] = [];
    await waitFor(async () => (last = await statuses()).every((s) => s === 404), {
      timeoutMs: 15_000,
      message: () => `removed by the controller that came after the deletion (statuses ${last.join(", ")})`,
    });
  }, 60_000);

  it("controller - an EventSource's last kubernetes event removed: the RBAC it could not own goes with it", async () => {
    const ns = await createNamespace();
    const other = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    const source = kafkaSource("stops-watching", "default");
    await req("POST", nsPath(ns, "eventsources"), {
      ...source,
      spec: { ...source.spec, kubernetes: { elsewhere: { version: "v1", resource: "configmaps", namespace: other } } },
    });
    const rbac = "/apis/rbac.authorization.k8s.io/v1";
    const unowned = [
      `${rbac}/namespaces/${other}/roles/ofevents:${ns}:eventsource-stops-watching`,
      `${rbac}/namespaces/${other}/rolebindings/ofevents:${ns}:eventsource-stops-watching`,
    ];
    let last: number[] = [];
    await waitFor(async () => (last = await Promise.all(unowned.map((p) => status(p)))).every((s) => s === 200), {
      timeoutMs: 10_000,
      message: () => `the other namespace's Role and binding (statuses ${last.join(", ")})`,
    });
    await req(
      "PATCH",
      nsPath(ns, "eventsources", "stops-watching"),
      { spec: { kubernetes: null } },
      "application/merge-patch+json",
    );
    await waitFor(async () => (last = await Promise.all(unowned.map((p) => status(p)))).every((s) => s === 404), {
      timeoutMs: 10_000,
      message: () => `removed with the last kubernetes event (statuses ${last.join(", ")})`,
    });
    expect(await status(nsPath(ns, "eventsources", "stops-watching"))).toBe(200);
    expect(await status(`/api/v1/namespaces/${ns}/serviceaccounts/eventsource-stops-watching`)).toBe(404);
  }, 60_000);

  it("controller - an owned Deployment deleted or changed by hand is put back", async () => {
    const ns = await createNamespace();
    await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
    await req("POST", nsPath(ns, "eventsources"), kafkaSource("guarded", "default"));
    await waitReady(nsPath(ns, "eventsources", "guarded"), { status: "True" });
    const depPath = `/apis/apps/v1/namespaces/${ns}/deployments/eventsource-guarded`;
    const before = await req("GET", depPath);
    await req("DELETE", depPath);
    await waitFor(
      async () => {
        if ((await status(depPath)) !== 200) return false;
        const now = await req("GET", depPath);
        return (now.metadata as { uid: string }).uid !== (before.metadata as { uid: string }).uid;
      },
      { timeoutMs: 15_000, message: "Deployment recreated" },
    );
    const cmPath = `/api/v1/namespaces/${ns}/configmaps/eventsource-guarded`;
    const cm = await req("GET", cmPath);
    const key = Object.keys(cm.data as Record<string, string>)[0]!;
    await req("PATCH", cmPath, { data: { [key]: "tampered" } }, "application/merge-patch+json");
    await waitFor(async () => ((await req("GET", cmPath)).data as Record<string, string>)[key] !== "tampered", {
      timeoutMs: 15_000,
      message: "ConfigMap restored",
    });
  }, 60_000);

  it("controller - deploy/rbac.yaml is enough for the controller, and no more than it needs", async () => {
    // Install the RBAC exactly as shipped, then run a controller as its ServiceAccount.
    await req("POST", "/api/v1/namespaces", { metadata: { name: "ofevents-system" } });
    const rbac = parseAllDocuments(await readFile(join(ROOT, "deploy", "rbac.yaml"), "utf8")).map(
      (d) => d.toJS() as Obj,
    );
    const paths: Record<string, string> = {
      ServiceAccount: "/api/v1/namespaces/ofevents-system/serviceaccounts",
      ClusterRole: "/apis/rbac.authorization.k8s.io/v1/clusterroles",
      ClusterRoleBinding: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
      Role: "/apis/rbac.authorization.k8s.io/v1/namespaces/ofevents-system/roles",
      RoleBinding: "/apis/rbac.authorization.k8s.io/v1/namespaces/ofevents-system/rolebindings",
    };
    for (const o of rbac) await req("POST", paths[o.kind as string]!, o);
    const saKc = new KubeConfig();
    saKc.loadFromString(await cp.serviceAccountKubeconfig("ofevents-system", "ofevents-controller"));
    const lines: string[] = [];
    const restricted = await startController({
      kubeConfig: saKc,
      logger: createLogger({ level: "warn", write: (l) => void lines.push(l) }),
      options: OPTIONS,
      namespace: "ofevents-system",
      leaderElection: { identity: "rbac", leaseDurationSeconds: 5, retryPeriodMs: 300 },
      backoff: { baseMs: 50, maxMs: 2_000 },
    });
    try {
      await waitFor(() => restricted.isLeader(), {
        timeoutMs: 10_000,
        message: "the restricted controller leads its lease",
      });
      const ns = await createNamespace();
      await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
      const source = kafkaSource("rbac", "default");
      await req("POST", nsPath(ns, "eventsources"), {
        ...source,
        spec: { ...source.spec, webhook: { w: { endpoint: "/w", port: 12000 } } },
      });
      await waitReady(nsPath(ns, "eventsources", "rbac"), { status: "True" });
      // A Redrive: its ConfigMap and Job are created and its status written (no job controller
      // runs here, so it stays Pending).
      await req("POST", nsPath(ns, "triggers"), {
        apiVersion: "events.openfunction.io/v1alpha1",
        kind: "Trigger",
        metadata: { name: "rbac" },
        spec: {
          eventBus: "default",
          inputs: { a: { eventSource: "rbac", event: "w" } },
          subscribers: [{ condition: "a", sink: { uri: "http://sink.default.svc/" } }],
        },
      });
      await req("POST", nsPath(ns, "redrives"), {
        apiVersion: "events.openfunction.io/v1alpha1",
        kind: "Redrive",
        metadata: { name: "rbac" },
        spec: { trigger: "rbac" },
      });
      await waitFor(
        async () =>
          ((await req("GET", nsPath(ns, "redrives", "rbac"))).status as Record<string, unknown> | undefined)?.[
            "phase"
          ] === "Pending",
        {
          timeoutMs: 15_000,
          message: () => `the Redrive Pending\n${lines.join("\n")}`,
        },
      );
      expect(await status(`/apis/batch/v1/namespaces/${ns}/jobs/redrive-rbac`)).toBe(200);
      // Let the restricted controller reconcile too, then check it was never refused.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(lines.filter((l) => /403|forbidden/i.test(l))).toEqual([]);
      // Least privilege: what it does not need, it may not do (it reads Pods' status, for a Job's
      // result, not their logs).
      const sa = await cp.serviceAccountCredentials("ofevents-system", "ofevents-controller");
      for (const path of [
        "/api/v1/secrets",
        `/api/v1/namespaces/${ns}/pods/any/log`,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
      ]) {
        expect((await cp.request("GET", path, { credentials: sa })).status, path).toBe(403);
      }
      expect(
        (await cp.request("DELETE", `/api/v1/namespaces/${ns}/pods/any`, { credentials: sa })).status,
        "delete a Pod",
      ).toBe(403);
    } finally {
      await restricted.stop();
    }
  }, 90_000);

  it("controller - a second replica stays passive while the first holds the lease, then takes over", async () => {
    // The suite's controller would reconcile too: stop it so only the pair under test runs.
    await controller?.stop();
    controller = undefined;
    const leaseNs = await createNamespace();
    const start = (identity: string) =>
      startController({
        kubeConfig: kc,
        logger: silentLogger(),
        options: OPTIONS,
        namespace: leaseNs,
        leaderElection: { identity, leaseDurationSeconds: 3, retryPeriodMs: 200 },
      });
    const first = await start("first");
    await waitFor(() => first.isLeader(), { timeoutMs: 10_000, message: "first leads" });
    const second = await start("second");
    try {
      const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${leaseNs}/leases/ofevents-controller`;
      const lease = await req("GET", leasePath);
      expect(lease.spec).toMatchObject({ holderIdentity: "first", leaseDurationSeconds: 3 });

      const ns = await createNamespace();
      await req("POST", nsPath(ns, "eventbuses"), kafkaBus("default", ns));
      await req("POST", nsPath(ns, "eventsources"), kafkaSource("led", "default"));
      await waitReady(nsPath(ns, "eventsources", "led"), { status: "True" });
      // Several renew periods later the second still waits.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(second.isLeader()).toBe(false);
      expect(first.isLeader()).toBe(true);

      await first.stop();
      await waitFor(() => second.isLeader(), { timeoutMs: 10_000, message: "second takes over" });
      expect((await req("GET", leasePath)).spec).toMatchObject({ holderIdentity: "second", leaseTransitions: 1 });
      await req("POST", nsPath(ns, "eventsources"), kafkaSource("after", "default"));
      await waitReady(nsPath(ns, "eventsources", "after"), { status: "True" });
    } finally {
      await first.stop();
      await second.stop();
    }
  }, 60_000);
});

describe("controller - the ofevents controller command", () => {
  const jetstreamBus = (ns: string): Obj => ({
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "EventBus",
    metadata: { name: "default", namespace: ns },
    spec: { jetstream: { url: "nats://nats.nats-system.svc:4222" } },
  });
  const oneInputTrigger = (name: string, annotations?: Record<string, string>): Obj => ({
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "Trigger",
    metadata: { name, ...(annotations === undefined ? {} : { annotations }) },
    spec: {
      eventBus: "default",
      inputs: { a: { eventSource: "orders", event: "created" } },
      subscribers: [{ condition: "a", sink: { uri: "http://sink.default.svc/" } }],
    },
  });
  const args = (o: Obj): string[] =>
    (o.spec as { template: { spec: { containers: { args: string[] }[] } } }).template.spec.containers[0]!.args;

  it("controller - the command's flags and environment reach the rendered objects; /readyz, /healthz and /metrics answer", async () => {
    // Only the process under test reconciles.
    await controller?.stop();
    controller = undefined;
    const ns = await createNamespace();
    const other = await createNamespace();
    const leaseNs = await createNamespace();
    for (const n of [ns, other]) await req("POST", nsPath(n, "eventbuses"), jetstreamBus(n));
    await req("POST", nsPath(ns, "triggers"), oneInputTrigger("plain"));
    await req("POST", nsPath(ns, "triggers"), oneInputTrigger("via-dapr", { "ofevents.io/bus-driver": "dapr" }));
    await req("POST", nsPath(ns, "triggers"), oneInputTrigger("bad", { "ofevents.io/bus-driver": "fast" }));
    await req("POST", nsPath(other, "triggers"), oneInputTrigger("unwatched"));

    const dir = await mkdtemp(join(tmpdir(), "ofevents-ctl-"));
    const kubeconfig = join(dir, "kubeconfig");
    await writeFile(kubeconfig, cp.kubeconfig(), { mode: 0o600 });
    const [port, metricsPort] = (await freePorts(2)) as [number, number];
    const output: string[] = [];
    const child = spawn(
      process.execPath,
      [
        OFEVENTS_BIN,
        "controller",
        "--image",
        "ghcr.io/example/ofevents:flags",
        "--kubeconfig",
        kubeconfig,
        "--bus-driver",
        "direct",
        "--watch-namespaces",
        ns,
        "--lease-namespace",
        leaseNs,
        "--health-port",
        String(port),
        "--health-host",
        "127.0.0.1",
        "--metrics-port",
        String(metricsPort),
        "--log-level",
        "warn",
      ],
      {
        env: {
          ...process.env,
          // A flag wins over its variable; the variables without a flag apply.
          OFEVENTS_BUS_DRIVER: "dapr",
          OFEVENTS_KEDA_POLLING_INTERVAL: "15",
          OFEVENTS_DAPR_SIDECAR_TIMEOUT: "90s",
          OFEVENTS_DAPR_CONFIG: "tracing",
          OFEVENTS_LEASE_IDENTITY: "ctl-flags",
          OFEVENTS_LEASE_DURATION: "7s",
          OFEVENTS_LEASE_RETRY_PERIOD: "500ms",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    child.stdout.on("data", (c: Buffer) => output.push(c.toString()));
    child.stderr.on("data", (c: Buffer) => output.push(c.toString()));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const get = async (path: string): Promise<{ status: number; text: string }> => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: res.status, text: await res.text() };
    };
    try {
      const readyz = await waitFor(
        async () => {
          const r = await get("/readyz").catch(() => undefined);
          return r?.status === 200 && r.text.includes("leader") ? r : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 200, message: `/readyz says leader; output: ${output.join("")}` },
      );
      expect(readyz.text).toBe("ready: leader\n");
      // The Lease names this replica by --lease-identity and carries --lease-duration.
      const lease = await req("GET", `/apis/coordination.k8s.io/v1/namespaces/${leaseNs}/leases/ofevents-controller`);
      expect(lease.spec).toMatchObject({ holderIdentity: "ctl-flags", leaseDurationSeconds: 7 });
      expect(await get("/healthz")).toEqual({ status: 200, text: "ok\n" });

      const deployment = (name: string) =>
        `/apis/apps/v1/namespaces/${ns}/deployments/${workloadName("Trigger", name)}`;
      const plain = await waitFor(
        async () => ((await status(deployment("plain"))) === 200 ? req("GET", deployment("plain")) : undefined),
        {
          timeoutMs: 20_000,
          intervalMs: 200,
          message: "the plain Trigger's Deployment",
        },
      );
      const plainArgs = args(plain);
      expect(plainArgs[plainArgs.indexOf("--bus-driver") + 1]).toBe("direct");
      expect(plainArgs).not.toContain("--sidecar-timeout");
      expect(
        (plain.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata
          .annotations,
      ).toMatchObject({
        "dapr.io/enabled": "true",
        "dapr.io/config": "tracing",
      });
      const viaDapr = await waitFor(
        async () => ((await status(deployment("via-dapr"))) === 200 ? req("GET", deployment("via-dapr")) : undefined),
        { timeoutMs: 20_000, intervalMs: 200, message: "the annotated Trigger's Deployment" },
      );
      const daprArgs = args(viaDapr);
      expect(daprArgs[daprArgs.indexOf("--bus-driver") + 1]).toBe("dapr");
      expect(daprArgs[daprArgs.indexOf("--sidecar-timeout") + 1]).toBe("90s");
      const so = await req(
        "GET",
        `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/${workloadName("Trigger", "plain")}`,
      );
      expect(so.spec).toMatchObject({ pollingInterval: 15 });
      // The Component rendered for the bus (the Dapr path's).
      expect(await status(`/apis/dapr.io/v1alpha1/namespaces/${ns}/components/default`)).toBe(200);
      const bad = await waitReady(nsPath(ns, "triggers", "bad"), { status: "False", reason: "InvalidSpec" });
      expect(ready(bad)!.message).toContain("ofevents.io/bus-driver");

      const metrics = await waitFor(
        async () => {
          const t = (await get("/metrics")).text;
          // Counted once a reconcile returns, just after its status is written.
          const count = (kind: string, result: string) =>
            metricValue(t, CONTROLLER_METRICS.reconciles.name, { kind, result }) ?? 0;
          const ok =
            count("Trigger", "success") >= 2 && count("Trigger", "invalid") >= 1 && count("EventBus", "success") >= 1;
          return ok ? t : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 200, message: "reconciles counted" },
      );
      expect(metricValue(metrics, CONTROLLER_METRICS.errors.name, { kind: "Trigger" })).toBe(0);
      expect(metricValue(metrics, CONTROLLER_METRICS.leader.name)).toBe(1);
      expect(metricValue(metrics, CONTROLLER_METRICS.informersSynced.name)).toBe(1);
      expect(metricValue(metrics, CONTROLLER_METRICS.depth.name)).toBeGreaterThanOrEqual(0);

      // --metrics-port serves /metrics alone.
      const alone = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(metricValue(await alone.text(), CONTROLLER_METRICS.leader.name)).toBe(1);
      expect((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status).toBe(404);

      // The namespace it does not watch is left alone.
      const unwatched = await req("GET", nsPath(other, "triggers", "unwatched"));
      expect(unwatched.status?.conditions).toBeUndefined();
      expect(
        await status(`/apis/apps/v1/namespaces/${other}/deployments/${workloadName("Trigger", "unwatched")}`),
      ).toBe(404);
    } finally {
      child.kill("SIGTERM");
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 15_000))]);
      if (code === "timeout") child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
      expect(code, output.join("")).toBe(0);
    }
  }, 90_000);

  it("controller - the command reads its environment, and refuses bad values before connecting", () => {
    const run = (args: string[], env: Record<string, string> = {}) =>
      spawnSync(process.execPath, [OFEVENTS_BIN, "controller", ...args], {
        env: { ...process.env, ...env },
        encoding: "utf8",
        timeout: 30_000,
      });
    const fromEnv = run([], { OFEVENTS_IMAGE: "x", OFEVENTS_BUS_DRIVER: "fast" });
    expect(fromEnv.status).toBe(1);
    expect(fromEnv.stderr).toBe('error: --bus-driver must be dapr, direct, got "fast"\n');
    const noImage = run([], { OFEVENTS_IMAGE: "" });
    expect(noImage.stderr).toContain("--image is required");
    const daprOff = run(["--image", "x", "--dapr-enabled", "false", "--bus-driver", "dapr"]);
    expect(daprOff.status).toBe(1);
    expect(daprOff.stderr).toContain("busDriver dapr needs dapr.enabled");
    const port = run(["--image", "x", "--health-port", "99999"]);
    expect(port.stderr).toContain("--health-port must be a whole number from 0 to 65535");
  });

  it("controller - the README's table lists every option of ofevents controller with its variable", async () => {
    const help = spawnSync(process.execPath, [OFEVENTS_BIN, "controller", "--help"], { encoding: "utf8" }).stdout;
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const table = readme.slice(readme.indexOf("| flag | environment variable |"));
    // Each option's block: its line and the indented lines after it, up to the next option.
    const blocks = help.split(/\n(?=\s+-(?:-|h))/).filter((b) => /^\s+--[a-z]/.test(b));
    expect(blocks.length).toBeGreaterThan(25);
    for (const block of blocks) {
      const flag = /--[a-z-]+/.exec(block)![0];
      const row = table.split("\n").find((l) => l.startsWith(`| \`${flag}\` |`));
      expect(row, flag).toBeDefined();
      const variable = /\[([A-Z_]+)\]/.exec(block)?.[1];
      if (variable !== undefined) expect(row, flag).toContain(`\`${variable}\``);
    }
  });
});
