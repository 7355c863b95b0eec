// The real control plane (etcd + kube-apiserver, test/helpers/kube.ts) with our CRDs: the API
// server must accept crds/*.yaml as structural schemas, serve the OpenFunction samples, and reject
// bad manifests itself, naming the field. Also checks the admin/restricted kubeconfigs and RBAC.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ApiConstructor,
  ApiException,
  ApiextensionsV1Api,
  type ApiType,
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  loadYaml,
  RbacAuthorizationV1Api,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ControlPlane } from "./helpers/kube.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const ROOT = join(import.meta.dirname, "..");
const GROUP = "events.openfunction.io";
const VERSION = "v1alpha1";
const SAMPLES = join(ROOT, "packages/core/test/fixtures/openfunction/samples.yaml");

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
  [key: string]: unknown;
}

interface CrdInfo {
  plural: string;
  kind: string;
  scope: "Namespaced" | "Cluster";
  shortNames: readonly string[];
}

async function readYaml(path: string): Promise<Manifest[]> {
  const docs = parseAllDocuments(await readFile(path, "utf8"));
  return docs.map((d) => d.toJSON() as Manifest).filter((m): m is Manifest => m !== null);
}

let cp: ControlPlane;
let kc: KubeConfig;
/** Each CRD file's outcome: the created CRD's names, or what the API server said. */
const crdResults = new Map<string, CrdInfo | Error>();

function admin<T extends ApiType>(api: ApiConstructor<T>): T {
  return kc.makeApiClient(api);
}

/** The API server's message from a client-node error (its `body` is the Status JSON text). */
function statusOf(err: unknown): { code: number; message: string } {
  if (!(err instanceof ApiException)) throw err;
  const body: unknown = typeof err.body === "string" ? JSON.parse(err.body) : err.body;
  return { code: err.code, message: String((body as { message?: unknown }).message) };
}

async function rejection(promise: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await promise;
  } catch (err) {
    return statusOf(err);
  }
  throw new Error("expected the API server to reject the request");
}

async function createNamespace(): Promise<string> {
  const name = `t-${randomSuffix()}`;
  await admin(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

function create(m: Manifest, namespace: string, api = admin(CustomObjectsApi)): Promise<unknown> {
  const info = infoFor(m.kind);
  const [group, version] = m.apiVersion.split("/") as [string, string];
  return info.scope === "Namespaced"
    ? api.createNamespacedCustomObject({ group, version, namespace, plural: info.plural, body: m })
    : api.createClusterCustomObject({ group, version, plural: info.plural, body: m });
}

function infoFor(kind: string): CrdInfo {
  for (const r of crdResults.values()) if (!(r instanceof Error) && r.kind === kind) return r;
  throw new Error(`no CRD for kind ${kind} was accepted: ${[...crdResults.values()].map(String).join("; ")}`);
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  kc = new KubeConfig();
  kc.loadFromString(cp.kubeconfig());

  const crdApi = admin(ApiextensionsV1Api);
  const files = (await readdir(join(ROOT, "crds"))).filter((f) => f.endsWith(".yaml")).sort();
  for (const file of files) {
    // Through client-node's loadYaml: the typed API serializes `body` from its model classes, so
    // plain parsed YAML would lose `x-kubernetes-preserve-unknown-fields` and `enum` (the model
    // calls them xKubernetesPreserveUnknownFields and _enum); loadYaml maps them.
    const crd = loadYaml<V1CustomResourceDefinition>(await readFile(join(ROOT, "crds", file), "utf8"));
    try {
      const created = await crdApi.createCustomResourceDefinition({ body: crd });
      const names = created.spec.names;
      crdResults.set(file, {
        plural: names.plural,
        kind: names.kind,
        scope: created.spec.scope as CrdInfo["scope"],
        shortNames: names.shortNames ?? [],
      });
    } catch (err) {
      crdResults.set(
        file,
        err instanceof ApiException ? new Error(`${file}: ${statusOf(err).message}`) : (err as Error),
      );
    }
  }
  // Established: the API server serves the new resource. A list can still answer 429 "storage is
  // (re)initializing" for a moment after that (the watch cache fills), so wait for one to work.
  await Promise.all(
    [...crdResults.values()]
      .filter((r): r is CrdInfo => !(r instanceof Error))
      .map((r) =>
        waitFor(
          async () => {
            const crd = await crdApi.readCustomResourceDefinition({ name: `${r.plural}.${GROUP}` });
            const established = crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
            return (
              established && (await cp.request("GET", `/apis/${GROUP}/${VERSION}/${r.plural}?limit=1`)).status === 200
            );
          },
          { timeoutMs: 30_000, intervalMs: 100, message: `${r.plural}.${GROUP} Established` },
        ),
      ),
  );
}, 180_000);

afterAll(async () => {
  await cp?.stop();
}, 60_000);

describe("control plane", () => {
  it("controlplane - serves /version as the built kube-apiserver on 127.0.0.1", async () => {
    expect(cp.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const res = await cp.request("GET", "/version");
    expect(res.status).toBe(200);
    expect((res.json as { gitVersion: string }).gitVersion).toBe(`v${cp.versions.kubeApiServer}`);
    expect(cp.versions.etcd).toMatch(/^3\.[5-9]\./);
    const health = await fetch(`${cp.etcdUrl}/health`);
    expect(await health.json()).toMatchObject({ health: "true" });
  });

  it("controlplane - the admin kubeconfig works with client-node, as text and as a file", async () => {
    const namespaces = await admin(CoreV1Api).listNamespace();
    expect(namespaces.items.map((n) => n.metadata?.name)).toContain("default");

    const dir = await mkdtemp(join(tmpdir(), "ofevents-kubeconfig-"));
    try {
      const path = join(dir, "kubeconfig");
      await cp.writeKubeconfig(path);
      const fromFile = new KubeConfig();
      fromFile.loadFromFile(path);
      expect(fromFile.getCurrentCluster()?.server).toBe(cp.url);
      const self = await fromFile.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
      expect(self.status?.userInfo).toMatchObject({
        username: "admin",
        groups: ["system:masters", "system:authenticated"],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("controlplane - a user without bindings is forbidden, a bound ServiceAccount is allowed", async () => {
    const namespace = await createNamespace();
    const rbac = admin(RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({
      namespace,
      body: {
        metadata: { name: "read-namespace" },
        rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: "controller-reads" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "read-namespace" },
        subjects: [
          { kind: "ServiceAccount", name: "controller", namespace },
          { kind: "User", apiGroup: "rbac.authorization.k8s.io", name: "alice" },
        ],
      },
    });
    const as = async (kubeconfig: string) => {
      const c = new KubeConfig();
      c.loadFromString(kubeconfig);
      return c.makeApiClient(CoreV1Api);
    };

    const sa = await as(await cp.serviceAccountKubeconfig(namespace, "controller"));
    await expect(sa.listNamespacedConfigMap({ namespace })).resolves.toMatchObject({ items: [] });
    const saDenied = await rejection(sa.listNamespacedSecret({ namespace }));
    expect(saDenied.code).toBe(403);
    expect(saDenied.message).toContain(`system:serviceaccount:${namespace}:controller`);

    const alice = await as(await cp.userKubeconfig("alice"));
    await expect(alice.listNamespacedConfigMap({ namespace })).resolves.toMatchObject({ items: [] });
    const bob = await as(await cp.userKubeconfig("bob", ["developers"]));
    const bobDenied = await rejection(bob.listNamespacedConfigMap({ namespace }));
    expect(bobDenied.code).toBe(403);
    expect(bobDenied.message).toContain('User "bob" cannot list resource "configmaps"');
  });
});

describe("CRDs on the real API server", () => {
  it("crds - all six (the four kinds, Redrive and Replay) are accepted and Established", () => {
    const errors = [...crdResults.values()].filter((r) => r instanceof Error).map((e) => e.message);
    expect(errors).toEqual([]);
    expect([...crdResults.values()].map((r) => (r as CrdInfo).kind).sort()).toEqual([
      "ClusterEventBus",
      "EventBus",
      "EventSource",
      "Redrive",
      "Replay",
      "Trigger",
    ]);
  });

  it("crds - the OpenFunction samples are accepted", async () => {
    const namespace = await createNamespace();
    const samples = (await readYaml(SAMPLES)).filter((m) => m.apiVersion === `${GROUP}/${VERSION}`);
    expect(samples.length).toBeGreaterThanOrEqual(8);
    for (const m of samples) {
      // The ClusterEventBus sample shares its name with other runs' objects: make it unique.
      const body = m.kind === "ClusterEventBus" ? { ...m, metadata: { name: `default-${randomSuffix()}` } } : m;
      await create(body, namespace);
    }
    const triggers = await admin(CustomObjectsApi).listNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: infoFor("Trigger").plural,
    });
    expect((triggers as { items: Manifest[] }).items.map((t) => t.metadata.name).sort()).toEqual([
      "condition-trigger",
      "my-trigger",
    ]);
  });

  it("crds - a Trigger subscriber without condition is rejected with the field path", async () => {
    const namespace = await createNamespace();
    const trigger: Manifest = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: "Trigger",
      metadata: { name: "no-condition" },
      spec: {
        eventBus: "default",
        inputs: { a: { eventSource: "es", event: "e" } },
        subscribers: [{ topic: "metrics" }],
      },
    };
    const { code, message } = await rejection(create(trigger, namespace));
    expect(code).toBe(422);
    expect(message).toContain("spec.subscribers[0].condition: Required value");
  });

  it("crds - an EventSource with a non-boolean kafka authRequired is rejected with the field path", async () => {
    const namespace = await createNamespace();
    const source: Manifest = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: "EventSource",
      metadata: { name: "bad-kafka" },
      spec: { kafka: { orders: { brokers: "127.0.0.1:9092", topic: "orders", authRequired: "yes" } } },
    };
    const { code, message } = await rejection(create(source, namespace));
    expect(code).toBe(422);
    expect(message).toContain("spec.kafka.orders.authRequired: Invalid value");
    expect(message).toContain("must be of type boolean");
  });

  it("crds - short names resolve to the plurals and the printer columns come back as a Table", async () => {
    const res = await cp.request("GET", `/apis/${GROUP}/${VERSION}`);
    expect(res.status).toBe(200);
    const resources = (res.json as { resources: { name: string; shortNames?: string[]; categories?: string[] }[] })
      .resources;
    for (const info of [...crdResults.values()] as CrdInfo[]) {
      const served = resources.find((r) => r.name === info.plural);
      expect(served, info.plural).toBeDefined();
      expect(served!.shortNames ?? []).toEqual(info.shortNames);
    }
    expect(resources.find((r) => r.name === "triggers")?.shortNames).toContain("trg");
    // OpenFunction 1.2's plurals, so its kubectl habits and RBAC rules keep working (plus the
    // two operations).
    expect(
      resources
        .map((r) => r.name)
        .filter((n) => !n.includes("/"))
        .sort(),
    ).toEqual(["clustereventbuses", "eventbuses", "eventsources", "redrives", "replays", "triggers"]);

    const namespace = await createNamespace();
    const [trigger] = (await readYaml(SAMPLES)).filter((m) => m.kind === "Trigger");
    await create(trigger!, namespace);
    const table = await cp.request("GET", `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/triggers`, {
      accept: "application/json;as=Table;g=meta.k8s.io;v=v1",
    });
    expect(table.status).toBe(200);
    const t = table.json as { kind: string; columnDefinitions: { name: string }[]; rows: { cells: unknown[] }[] };
    expect(t.kind).toBe("Table");
    expect(t.columnDefinitions.map((c) => c.name)).toEqual(["Name", "EventBus", "Status", "Reason", "Age"]);
    expect(t.rows).toHaveLength(1);
    expect(t.rows[0]!.cells.slice(0, 2)).toEqual(["my-trigger", "default"]);
  });
});
