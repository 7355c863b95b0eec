// The platform, run for real: etcd + kube-apiserver (ControlPlane), kube-controller-manager and the
// KEDA operator as processes on 127.0.0.1, with a real nats-server for KEDA's nats-jetstream
// trigger. No scheduler or kubelet yet: Pods stay Pending, so these tests assert on Deployments,
// ReplicaSets, Pods as objects, HPAs and ScaledObject status.
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, AckPolicy, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KedaOperator } from "../helpers/keda.js";
import { ControlPlane, type KubeResponse } from "../helpers/kube.js";
import { KubeControllerManager } from "../helpers/kube-controller-manager.js";
import { NatsServer } from "../helpers/nats.js";
import { MissingBinaryError } from "../helpers/server.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

interface ObjectMeta {
  name: string;
  namespace?: string;
  uid: string;
  generation?: number;
  deletionTimestamp?: string;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
}

interface KubeObject {
  metadata: ObjectMeta;
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
let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;

beforeAll(async () => {
  cp = await ControlPlane.start();
  [kcm, nats] = await Promise.all([KubeControllerManager.start(cp), NatsServer.start({ jetstream: true })]);
  keda = await KedaOperator.start(cp);
  nc = await connect({ servers: nats.url });
  jsm = await nc.jetstreamManager();
}, 180_000);

afterAll(async () => {
  // Each stop runs even if an earlier one throws; the control plane goes last.
  try {
    await nc?.close();
  } finally {
    try {
      await keda?.stop();
    } finally {
      try {
        await kcm?.stop();
      } finally {
        try {
          await nats?.stop();
        } finally {
          await cp?.stop();
        }
      }
    }
  }
}, 120_000);

async function ok(res: Promise<KubeResponse>, what: string, expected = [200, 201]): Promise<KubeResponse> {
  const r = await res;
  if (!expected.includes(r.status)) throw new Error(`${what}: HTTP ${r.status}: ${r.text}`);
  return r;
}

async function create<T = KubeObject>(path: string, body: unknown): Promise<T> {
  return (await ok(cp.request("POST", path, { body }), `POST ${path}`)).json as T;
}

async function get<T = KubeObject>(path: string): Promise<T> {
  return (await ok(cp.request("GET", path), `GET ${path}`)).json as T;
}

async function list<T = KubeObject>(path: string): Promise<T[]> {
  return (await get<{ items: T[] }>(path)).items;
}

async function createNamespace(): Promise<string> {
  const name = `p-${randomSuffix()}`;
  await create("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
  return name;
}

/** A Deployment whose Pods never start (no kubelet); the image is never pulled. */
function deployment(name: string, replicas: number): unknown {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "main", image: "registry.invalid/ofevents/idle:1" }] },
      },
    },
  };
}

const ownedBy = (o: KubeObject, uid: string): boolean =>
  (o.metadata.ownerReferences ?? []).some((r) => r.uid === uid && r.controller === true);

/** The ReplicaSets a Deployment controls and the Pods those control, once `predicate` holds. */
async function waitForRollout(
  ns: string,
  deploymentUid: string,
  predicate: (rs: KubeObject[], pods: KubeObject[]) => boolean,
  message: string,
): Promise<{ rs: KubeObject[]; pods: KubeObject[] }> {
  return waitFor(
    async () => {
      const rs = (await list(`/apis/apps/v1/namespaces/${ns}/replicasets`)).filter((r) => ownedBy(r, deploymentUid));
      const rsUids = new Set(rs.map((r) => r.metadata.uid));
      const pods = (await list(`/api/v1/namespaces/${ns}/pods`)).filter(
        (p) => !p.metadata.deletionTimestamp && [...rsUids].some((uid) => ownedBy(p, uid)),
      );
      return predicate(rs, pods) ? { rs, pods } : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200, message },
  );
}

const replicasOf = (o: KubeObject): unknown => o.spec?.["replicas"];

describe("platform control plane", () => {
  it("platform - the servers run the pinned versions", () => {
    expect(kcm.version).toBe(cp.versions.kubeApiServer);
    expect(keda.version).toMatch(/^2\.\d+\.\d+$/);
    expect([...keda.crds].sort()).toEqual([
      "cloudeventsources.eventing.keda.sh",
      "clustercloudeventsources.eventing.keda.sh",
      "clustertriggerauthentications.keda.sh",
      "scaledjobs.keda.sh",
      "scaledobjects.keda.sh",
      "triggerauthentications.keda.sh",
    ]);
  });

  it("kube-controller-manager - a Deployment gets one ReplicaSet and its Pods, and follows a scale-up", async () => {
    const ns = await createNamespace();
    const name = `web-${randomSuffix()}`;
    const d = await create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment(name, 2));

    const first = await waitForRollout(
      ns,
      d.metadata.uid,
      (rs, pods) => rs.length === 1 && replicasOf(rs[0]!) === 2 && pods.length === 2,
      "a ReplicaSet of 2 with 2 Pods",
    );
    const rs = first.rs[0]!;
    expect(rs.metadata.name).toMatch(new RegExp(`^${name}-[a-z0-9]+$`));
    expect(replicasOf(rs)).toBe(2);
    for (const pod of first.pods) {
      expect(pod.metadata.name.startsWith(`${rs.metadata.name}-`)).toBe(true);
      expect(pod.status?.["phase"]).toBe("Pending");
      expect(pod.spec?.["nodeName"]).toBeUndefined();
    }

    await ok(
      cp.request("PATCH", `/apis/apps/v1/namespaces/${ns}/deployments/${name}`, {
        body: { spec: { replicas: 3 } },
        contentType: "application/merge-patch+json",
      }),
      "scale to 3",
    );
    // The ReplicaSet is listed before the Pods: wait for both to show the new count.
    const second = await waitForRollout(
      ns,
      d.metadata.uid,
      (r, pods) => r.length === 1 && replicasOf(r[0]!) === 3 && pods.length === 3,
      "a ReplicaSet of 3 with 3 Pods",
    );
    expect(second.rs[0]!.metadata.uid).toBe(rs.metadata.uid);
    expect(replicasOf(second.rs[0]!)).toBe(3);
    const status = await waitFor(
      async () => {
        const cur = await get(`/apis/apps/v1/namespaces/${ns}/deployments/${name}`);
        return cur.status?.["observedGeneration"] === cur.metadata.generation && cur.status?.["replicas"] === 3
          ? cur
          : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: "Deployment status for generation 2" },
    );
    expect(status.status?.["unavailableReplicas"]).toBe(3);
    expect(status.status?.["availableReplicas"]).toBeUndefined();
  });

  it("kube-controller-manager - deleting a Deployment (background propagation) deletes its ReplicaSet, Pods and owned ConfigMap", async () => {
    const ns = await createNamespace();
    const name = `gc-${randomSuffix()}`;
    const d = await create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment(name, 2));
    const owner = { apiVersion: "apps/v1", kind: "Deployment", name, uid: d.metadata.uid };
    await create(`/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: `${name}-owned`, ownerReferences: [owner] },
      data: { k: "v" },
    });
    await create(`/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: `${name}-free` },
      data: { k: "v" },
    });
    const { rs } = await waitForRollout(ns, d.metadata.uid, (r, pods) => r.length === 1 && pods.length === 2, "2 Pods");

    await ok(
      cp.request("DELETE", `/apis/apps/v1/namespaces/${ns}/deployments/${name}`, {
        body: { apiVersion: "v1", kind: "DeleteOptions", propagationPolicy: "Background" },
      }),
      "delete Deployment",
    );
    const rsUid = rs[0]!.metadata.uid;
    await waitFor(
      async () => {
        const [sets, pods, owned] = await Promise.all([
          list(`/apis/apps/v1/namespaces/${ns}/replicasets`),
          list(`/api/v1/namespaces/${ns}/pods`),
          cp.request("GET", `/api/v1/namespaces/${ns}/configmaps/${name}-owned`),
        ]);
        return sets.length === 0 && pods.filter((p) => ownedBy(p, rsUid)).length === 0 && owned.status === 404;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: "ReplicaSet, Pods and owned ConfigMap collected" },
    );
    expect((await list(`/api/v1/namespaces/${ns}/pods`)).length).toBe(0);
    const free = await get(`/api/v1/namespaces/${ns}/configmaps/${name}-free`);
    expect(free.metadata.name).toBe(`${name}-free`);
  });

  it("kube-controller-manager - a namespace gets its default ServiceAccount, and deleting it finishes", async () => {
    const ns = await createNamespace();
    const sa = await waitFor(
      async () => {
        const res = await cp.request("GET", `/api/v1/namespaces/${ns}/serviceaccounts/default`);
        return res.status === 200 ? (res.json as KubeObject) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: "default ServiceAccount" },
    );
    expect(sa.metadata.namespace).toBe(ns);
    await create(`/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "x" },
    });

    await ok(cp.request("DELETE", `/api/v1/namespaces/${ns}`), "delete namespace");
    await waitFor(async () => (await cp.request("GET", `/api/v1/namespaces/${ns}`)).status === 404, {
      timeoutMs: 60_000,
      intervalMs: 250,
      message: `namespace ${ns} gone`,
    });
  });
});

describe("KEDA operator", () => {
  it("keda - a missing operator binary or CRD folder is an error naming the setup command", async () => {
    const saved = process.env["OFEVENTS_CACHE"];
    const empty = await mkdtemp(join(tmpdir(), "ofevents-no-keda-"));
    try {
      process.env["OFEVENTS_CACHE"] = empty;
      const missing = await KedaOperator.start(cp).catch((err: unknown) => err);
      expect(missing).toBeInstanceOf(MissingBinaryError);
      expect((missing as Error).message).toMatch(/^keda-operator not found .*run `npm run test:setup`/);

      // An executable without the crds/ folder that test:setup copies beside the binary.
      await mkdir(join(empty, "bin"));
      await mkdir(join(empty, "keda-x"));
      await writeFile(join(empty, "keda-x", "keda-operator"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
      await symlink(join(empty, "keda-x", "keda-operator"), join(empty, "bin", "keda-operator"));
      const noCrds = await KedaOperator.start(cp).catch((err: unknown) => err);
      expect(noCrds).toBeInstanceOf(MissingBinaryError);
      expect((noCrds as Error).message).toMatch(/^KEDA CRDs not found \(no .*keda-x\/crds .*run `npm run test:setup`/);
    } finally {
      if (saved === undefined) delete process.env["OFEVENTS_CACHE"];
      else process.env["OFEVENTS_CACHE"] = saved;
      await rm(empty, { recursive: true, force: true });
    }
  });

  /** A stream with one durable pull consumer (explicit acks) that nothing consumes from. */
  async function streamWithConsumer(): Promise<{ stream: string; consumer: string; subject: string }> {
    const suffix = randomSuffix();
    const stream = `s-${suffix}`;
    const consumer = `c-${suffix}`;
    const subject = `work.${suffix}`;
    await jsm.streams.add({ name: stream, subjects: [subject] });
    await jsm.consumers.add(stream, { durable_name: consumer, ack_policy: AckPolicy.Explicit });
    return { stream, consumer, subject };
  }

  async function publish(subject: string, count: number): Promise<void> {
    const js = nc.jetstream();
    for (let i = 0; i < count; i++) await js.publish(subject, new TextEncoder().encode(`event ${i}`));
  }

  function scaledObject(
    name: string,
    target: string,
    backlog: { stream: string; consumer: string },
    replicas: { min: number; max: number },
  ): unknown {
    return {
      apiVersion: "keda.sh/v1alpha1",
      kind: "ScaledObject",
      metadata: { name },
      spec: {
        scaleTargetRef: { name: target },
        minReplicaCount: replicas.min,
        maxReplicaCount: replicas.max,
        pollingInterval: 1,
        cooldownPeriod: 1,
        triggers: [
          {
            type: "nats-jetstream",
            metadata: {
              natsServerMonitoringEndpoint: new URL(nats.monitorUrl).host,
              account: "$G",
              stream: backlog.stream,
              consumer: backlog.consumer,
              lagThreshold: "2",
            },
          },
        ],
      },
    };
  }

  const conditionsOf = (so: KubeObject): Condition[] => (so.status?.["conditions"] as Condition[] | undefined) ?? [];
  const conditionStatus = (so: KubeObject, type: string): string | undefined =>
    conditionsOf(so).find((c) => c.type === type)?.status;

  it("keda - a ScaledObject on a Deployment is Ready and Active on a backlog, and gets its HPA", async () => {
    const ns = await createNamespace();
    const target = `worker-${randomSuffix()}`;
    await create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment(target, 1));
    const js = await streamWithConsumer();
    await publish(js.subject, 5);
    const soName = `so-${randomSuffix()}`;
    const so = await create(
      `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`,
      scaledObject(soName, target, js, { min: 1, max: 3 }),
    );

    const ready = await waitFor(
      async () => {
        const cur = await get(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/${soName}`);
        return conditionStatus(cur, "Ready") === "True" && conditionStatus(cur, "Active") === "True" ? cur : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: "ScaledObject Ready and Active" },
    );
    const metric = `s0-nats-jetstream-${js.stream}`;
    expect(ready.status?.["scaleTargetKind"]).toBe("apps/v1.Deployment");
    expect(ready.status?.["externalMetricNames"]).toEqual([metric]);
    expect(ready.status?.["hpaName"]).toBe(`keda-hpa-${soName}`);
    expect(conditionStatus(ready, "Fallback")).toBe("False");

    const hpa = await get(`/apis/autoscaling/v2/namespaces/${ns}/horizontalpodautoscalers/keda-hpa-${soName}`);
    expect(hpa.metadata.ownerReferences).toEqual([
      expect.objectContaining({
        apiVersion: "keda.sh/v1alpha1",
        kind: "ScaledObject",
        name: soName,
        uid: so.metadata.uid,
      }),
    ]);
    expect(hpa.spec?.["scaleTargetRef"]).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: target });
    expect(hpa.spec?.["minReplicas"]).toBe(1);
    expect(hpa.spec?.["maxReplicas"]).toBe(3);
    expect(hpa.spec?.["metrics"]).toEqual([
      {
        type: "External",
        external: {
          metric: { name: metric, selector: { matchLabels: { "scaledobject.keda.sh/name": soName } } },
          target: { type: "AverageValue", averageValue: "2" },
        },
      },
    ]);
    // Active with min 1: KEDA leaves the replica count to the HPA (not evaluated here).
    const d = await get(`/apis/apps/v1/namespaces/${ns}/deployments/${target}`);
    expect(replicasOf(d)).toBe(1);
  });

  it("keda - minReplicaCount 0 scales an idle Deployment to zero, and a backlog brings it back to one", async () => {
    const ns = await createNamespace();
    const target = `sleeper-${randomSuffix()}`;
    const d = await create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment(target, 1));
    await waitForRollout(ns, d.metadata.uid, (rs, pods) => rs.length === 1 && pods.length === 1, "1 Pod");
    const js = await streamWithConsumer();
    const soName = `so-${randomSuffix()}`;
    await create(
      `/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects`,
      scaledObject(soName, target, js, { min: 0, max: 2 }),
    );

    const idle = await waitFor(
      async () => {
        const cur = await get(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/${soName}`);
        return conditionStatus(cur, "Ready") === "True" && conditionStatus(cur, "Active") === "False" ? cur : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: "ScaledObject Ready and not Active" },
    );
    expect(idle.status?.["originalReplicaCount"]).toBe(1);
    const atZero = await waitForRollout(
      ns,
      d.metadata.uid,
      (rs, pods) => rs.length === 1 && replicasOf(rs[0]!) === 0 && pods.length === 0,
      "scaled to 0",
    );
    expect(replicasOf(await get(`/apis/apps/v1/namespaces/${ns}/deployments/${target}`))).toBe(0);
    const hpa = await get(`/apis/autoscaling/v2/namespaces/${ns}/horizontalpodautoscalers/keda-hpa-${soName}`);
    expect(hpa.spec?.["minReplicas"]).toBe(1);

    await publish(js.subject, 3);
    const woken = await waitForRollout(
      ns,
      d.metadata.uid,
      (rs, pods) => rs.length === 1 && replicasOf(rs[0]!) === 1 && pods.length === 1,
      "scaled back to 1",
    );
    expect(woken.rs[0]!.metadata.uid).toBe(atZero.rs[0]!.metadata.uid);
    expect(replicasOf(await get(`/apis/apps/v1/namespaces/${ns}/deployments/${target}`))).toBe(1);
    const active = await waitFor(
      async () => {
        const cur = await get(`/apis/keda.sh/v1alpha1/namespaces/${ns}/scaledobjects/${soName}`);
        return conditionStatus(cur, "Active") === "True" ? cur : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, message: "ScaledObject Active" },
    );
    expect(active.status?.["lastActiveTime"]).toEqual(expect.any(String));
  });
});
