// The platform, run for real: our controller reconciles OpenFunction-style manifests on a real
// etcd + kube-apiserver; kube-controller-manager turns its Deployments into ReplicaSets and Pods;
// the node agent runs those Pods as local processes (this repository's build); KEDA watches the
// rendered ScaledObjects; the bus is a real nats-server with JetStream. Events posted to the
// EventSource Pod's webhook reach a sink through the Trigger Pod; deleting the Trigger removes
// everything it owned (garbage collector).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControllerHandle } from "@ofevents/controller";
import { KedaOperator } from "../helpers/keda.js";
import { ControlPlane } from "../helpers/kube.js";
import { KubeControllerManager } from "../helpers/kube-controller-manager.js";
import { NatsServer } from "../helpers/nats.js";
import { NodeAgent } from "../helpers/node-agent.js";
import { installCrds, startLeadingController } from "../helpers/platform.js";
import { reportFigures } from "../helpers/report.js";
import { freePorts } from "../helpers/server.js";
import { RecordingSink } from "../helpers/sink.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

const API = "/apis/events.openfunction.io/v1alpha1";

interface Obj {
  metadata: { name: string; namespace?: string; uid?: string; ownerReferences?: { kind: string; name: string }[] };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

let cp: ControlPlane;
let kcm: KubeControllerManager;
let keda: KedaOperator;
let nats: NatsServer;
let agent: NodeAgent;
let controller: ControllerHandle | undefined;
let sink: RecordingSink;

async function req(method: string, path: string, body?: unknown): Promise<Obj & { items?: Obj[] }> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj & { items?: Obj[] };
}

async function list(path: string): Promise<Obj[]> {
  return (await req("GET", path)).items ?? [];
}

function podsReady(pods: Obj[]): boolean {
  return (
    pods.length > 0 &&
    pods.every((p) =>
      ((p.status?.["conditions"] ?? []) as { type: string; status: string }[]).some(
        (c) => c.type === "Ready" && c.status === "True",
      ),
    )
  );
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  [kcm, keda, nats] = await Promise.all([
    KubeControllerManager.start(cp),
    KedaOperator.start(cp),
    NatsServer.start({ jetstream: true }),
  ]);
  await installCrds(cp, [
    ["dapr.io", "v1alpha1", "Component", "components"],
    ["dapr.io", "v1alpha1", "Resiliency", "resiliencies"],
  ]);
  agent = await NodeAgent.start(cp);
  sink = await RecordingSink.start();
  controller = await startLeadingController(cp, {
    image: "ofevents/ofevents:test",
    busDriver: "direct",
    // The first replica must create its durable consumer before KEDA may scale it to zero.
    keda: { natsMonitoringEndpoint: new URL(nats.monitorUrl).host, initialCooldownPeriod: 15 },
  });
}, 240_000);

afterAll(async () => {
  await controller?.stop();
  await agent?.stop();
  await sink?.stop();
  await Promise.allSettled([keda?.stop(), kcm?.stop(), nats?.stop()]);
  await cp?.stop();
}, 120_000);

describe("platform - the controller's workloads run", () => {
  it("platform - webhook EventSource → JetStream → Trigger → sink, as Pods; deleting the Trigger removes what it owned", async () => {
    const ns = `flow-${randomSuffix()}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    const [webhookPort] = await freePorts(1);
    await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: ns },
      spec: { jetstream: { url: nats.url, stream: `flow${randomSuffix()}` } },
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

    const started = Date.now();
    await waitFor(
      async () =>
        podsReady(await list(`/api/v1/namespaces/${ns}/pods`)) &&
        (await list(`/api/v1/namespaces/${ns}/pods`)).length === 2,
      {
        timeoutMs: 120_000,
        intervalMs: 250,
        message: "the EventSource and Trigger Pods Ready",
      },
    ).catch(async (err: unknown) => {
      const pods = await list(`/api/v1/namespaces/${ns}/pods`);
      const logs = pods.map((p) => `--- ${p.metadata.name}\n${agent.logs(`${ns}/${p.metadata.name}`)}`).join("\n");
      throw new Error(
        `${(err as Error).message}\npods: ${JSON.stringify(pods.map((p) => p.status))}\n${logs}\nagent:\n${agent.log.toString()}`,
        { cause: err },
      );
    });
    const readyMs = Date.now() - started;

    const N = 200;
    const ids = Array.from({ length: N }, (_, i) => `flow-${i}`);
    for (const id of ids) {
      const res = await fetch(`http://127.0.0.1:${webhookPort}/orders`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-id": id,
          "ce-source": "/shop",
          "ce-type": "order",
        },
        body: JSON.stringify({ id }),
      });
      expect(res.status).toBe(200);
    }
    await waitFor(() => new Set(sink.ids).size >= N, { timeoutMs: 60_000, message: `${N} events at the sink` });
    const delivered = new Set(sink.ids.filter((id) => id.startsWith("flow-")));
    expect([...delivered].sort()).toEqual([...ids].sort());
    const duplicates = sink.ids.filter((id) => id.startsWith("flow-")).length - delivered.size;

    // The Trigger's ScaledObject is KEDA's: it reports status on the trigger's consumer.
    const scaled = await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`);
    expect(scaled.map((s) => s.metadata.name).sort().length).toBeGreaterThanOrEqual(1);

    // Deleting the Trigger: the garbage collector removes its Deployment, ReplicaSets, Pods and ScaledObject.
    const owned = (o: Obj): boolean =>
      o.metadata.name.includes("trigger") || (o.metadata.ownerReferences ?? []).some((r) => r.kind === "Trigger");
    expect((await list(`/apis/apps/v1/namespaces/${ns}/deployments`)).filter(owned).length).toBe(1);
    await req("DELETE", `${API}/namespaces/${ns}/triggers/t`, { propagationPolicy: "Background" });
    await waitFor(
      async () => {
        const [deps, rss, pods, sos] = await Promise.all([
          list(`/apis/apps/v1/namespaces/${ns}/deployments`),
          list(`/apis/apps/v1/namespaces/${ns}/replicasets`),
          list(`/api/v1/namespaces/${ns}/pods`),
          list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`),
        ]);
        return deps.length === 1 && rss.length === 1 && pods.length === 1 && sos.every((s) => !owned(s));
      },
      {
        timeoutMs: 60_000,
        intervalMs: 250,
        message: "the Trigger's Deployment, ReplicaSet, Pod and ScaledObject removed; the EventSource's kept",
      },
    );
    reportFigures(
      `platform flow direct jetstream: sent=${N} delivered=${delivered.size} duplicates=${duplicates} lost=${N - delivered.size} podsReadyMs=${readyMs}`,
    );
  }, 300_000);

  it("platform - OpenFunction natsStreaming bus: the idle Trigger scales to zero, a backlog brings it back; its Pod SIGKILLed mid-stream loses nothing", async () => {
    const ns = `scale-${randomSuffix()}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    const [webhookPort] = await freePorts(1);
    const monitor = new URL(nats.monitorUrl).host;
    await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: ns },
      spec: {
        natsStreaming: {
          natsURL: nats.url,
          natsStreamingClusterID: "stan",
          subscriptionType: "queue",
          durableSubscriptionName: "ImDurable",
          scaleOption: {
            natsServerMonitoringEndpoint: monitor,
            lagThreshold: "10",
            pollingInterval: 1,
            cooldownPeriod: 3,
            minReplicaCount: 0,
          },
        },
      },
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
    const triggerDeployment = async (): Promise<Obj | undefined> =>
      (await list(`/apis/apps/v1/namespaces/${ns}/deployments`)).find((d) =>
        (d.metadata.ownerReferences ?? []).some((r) => r.kind === "Trigger"),
      );
    const replicas = async (): Promise<number | undefined> =>
      (await triggerDeployment())?.spec?.["replicas"] as number | undefined;
    const triggerPod = async (): Promise<string | undefined> => {
      const pods = await list(`/api/v1/namespaces/${ns}/pods`);
      const p = pods.find((x) => x.metadata.name.startsWith("trigger-") && podsReady([x]));
      return p?.metadata.name;
    };
    const post = async (ids: string[]): Promise<void> => {
      for (const id of ids) {
        const res = await fetch(`http://127.0.0.1:${webhookPort}/orders`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": id,
            "ce-source": "/shop",
            "ce-type": "order",
          },
          body: JSON.stringify({ id }),
        });
        expect(res.status).toBe(200);
      }
    };
    const got = (prefix: string): string[] => sink.ids.filter((id) => id.startsWith(prefix));

    // The trigger runs once (its durable consumer exists), then, idle, KEDA scales it to zero.
    const diagnose = async (err: unknown): Promise<never> => {
      const deps = await list(`/apis/apps/v1/namespaces/${ns}/deployments`);
      const pods = await list(`/api/v1/namespaces/${ns}/pods`);
      const sos = await list(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`);
      throw new Error(
        [
          (err as Error).message,
          `deployments: ${JSON.stringify(deps.map((d) => [d.metadata.name, d.spec?.["replicas"], d.status]))}`,
          `pods: ${JSON.stringify(pods.map((p) => [p.metadata.name, p.status?.["phase"]]))}`,
          `scaledobjects: ${JSON.stringify(sos.map((o) => [o.metadata.name, o.spec, o.status]))}`,
          ...pods.map((p) => `--- ${p.metadata.name}\n${agent.logs(`${ns}/${p.metadata.name}`).slice(-3000)}`),
        ].join("\n"),
        { cause: err },
      );
    };
    await waitFor(async () => (await triggerPod()) !== undefined, {
      timeoutMs: 120_000,
      intervalMs: 250,
      message: "the Trigger Pod Ready once",
    }).catch(diagnose);
    await waitFor(async () => (await replicas()) === 0, {
      timeoutMs: 90_000,
      intervalMs: 250,
      message: "the idle Trigger Deployment at 0 replicas",
    }).catch(diagnose);

    // A backlog brings it back to one replica through KEDA.
    const wake = Array.from({ length: 300 }, (_, i) => `wake-${i}`);
    const woken = Date.now();
    await post(wake);
    await waitFor(() => new Set(got("wake-")).size === wake.length, {
      timeoutMs: 120_000,
      intervalMs: 250,
      message: "the backlog delivered after scaling from zero",
    }).catch(diagnose);
    const wakeMs = Date.now() - woken;
    expect(await replicas()).toBe(1);
    expect([...new Set(got("wake-"))].sort()).toEqual([...wake].sort());
    reportFigures(
      `platform scale to zero and back: sent=${wake.length} delivered=${new Set(got("wake-")).size} duplicates=${got("wake-").length - new Set(got("wake-")).size} lost=${wake.length - new Set(got("wake-")).size} recoveredMs=${wakeMs}`,
    );

    // The trigger Pod's process SIGKILLed mid-stream: restarted by the node (restartPolicy Always).
    const kill = Array.from({ length: 1000 }, (_, i) => `kill-${i}`);
    const sending = post(kill);
    await waitFor(() => got("kill-").length >= 200, {
      timeoutMs: 60_000,
      message: "200 events delivered before the kill",
    });
    const pod = (await triggerPod())!;
    const killedAt = Date.now();
    agent.killPod(`${ns}/${pod}`, "SIGKILL");
    await sending;
    await waitFor(() => new Set(got("kill-")).size === kill.length, {
      timeoutMs: 120_000,
      intervalMs: 250,
      message: "every event delivered after the kill",
    });
    const killMs = Date.now() - killedAt;
    const unique = new Set(got("kill-"));
    expect([...unique].sort()).toEqual([...kill].sort());
    reportFigures(
      `platform trigger pod SIGKILL: sent=${kill.length} delivered=${unique.size} duplicates=${got("kill-").length - unique.size} lost=${kill.length - unique.size} recoveredMs=${killMs}`,
    );
  }, 400_000);

  it("platform - the Dapr path (annotation): webhook EventSource and Trigger Pods with daprd sidecars and the rendered Component on JetStream", async () => {
    const ns = `dapr-${randomSuffix()}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    const [webhookPort] = await freePorts(1);
    const viaDapr = { "ofevents.io/bus-driver": "dapr" };
    await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: ns },
      spec: { jetstream: { url: nats.url, stream: `dapr${randomSuffix()}` } },
    });
    await req("POST", `${API}/namespaces/${ns}/eventsources`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: "hooks", namespace: ns, annotations: viaDapr },
      spec: { eventBus: "default", webhook: { orders: { port: String(webhookPort), endpoint: "/orders" } } },
    });
    await req("POST", `${API}/namespaces/${ns}/triggers`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "t", namespace: ns, annotations: viaDapr },
      spec: {
        eventBus: "default",
        inputs: { o: { eventSource: "hooks", event: "orders" } },
        subscribers: [{ condition: "o", sink: { uri: sink.url } }],
      },
    });
    const started = Date.now();
    await waitFor(
      async () => {
        const pods = await list(`/api/v1/namespaces/${ns}/pods`);
        return pods.length === 2 && podsReady(pods);
      },
      { timeoutMs: 180_000, intervalMs: 250, message: "the EventSource and Trigger Pods (with daprd) Ready" },
    ).catch(async (err: unknown) => {
      const pods = await list(`/api/v1/namespaces/${ns}/pods`);
      const logs = pods
        .map(
          (p) =>
            `--- ${p.metadata.name}\n${agent.logs(`${ns}/${p.metadata.name}`).slice(-3000)}\n--- daprd\n${agent.daprd(`${ns}/${p.metadata.name}`)?.log.toString().slice(-3000) ?? "(none)"}`,
        )
        .join("\n");
      throw new Error(`${(err as Error).message}\npods: ${JSON.stringify(pods.map((p) => p.status))}\n${logs}`, {
        cause: err,
      });
    });
    const readyMs = Date.now() - started;
    for (const p of await list(`/api/v1/namespaces/${ns}/pods`))
      expect(agent.daprd(`${ns}/${p.metadata.name}`), `${p.metadata.name} has a daprd`).toBeDefined();
    const N = 200;
    const ids = Array.from({ length: N }, (_, i) => `dapr-${i}`);
    for (const id of ids) {
      const res = await fetch(`http://127.0.0.1:${webhookPort}/orders`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-id": id,
          "ce-source": "/shop",
          "ce-type": "order",
        },
        body: JSON.stringify({ id }),
      });
      expect(res.status).toBe(200);
    }
    const got = (): string[] => sink.ids.filter((id) => id.startsWith("dapr-"));
    await waitFor(() => new Set(got()).size >= N, {
      timeoutMs: 60_000,
      message: `${N} events at the sink through Dapr`,
    });
    const unique = new Set(got());
    expect([...unique].sort()).toEqual([...ids].sort());
    reportFigures(
      `platform flow dapr jetstream: sent=${N} delivered=${unique.size} duplicates=${got().length - unique.size} lost=${N - unique.size} podsReadyMs=${readyMs}`,
    );
  }, 300_000);
});
