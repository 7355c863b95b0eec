// The access the controller renders for an EventSource with `kubernetes` events, applied to a real
// kube-apiserver as the controller's ServiceAccount with deploy/rbac.yaml plus
// deploy/rbac-kubernetes-source.yaml (so those grant enough to create it): the source, run as the rendered ServiceAccount, watches what it was granted
// (a namespace's ConfigMaps through a Role, Namespaces through a ClusterRole), keeps its resume
// state in the granted ConfigMap, and is refused everything else.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { busTopic, createSecretResolver, silentLogger, type CloudEvent, type EventSource } from "@ofevents/core";
import { renderEventSource, validateEventSource, type RenderedObject } from "@ofevents/controller";
import { createMemoryBus } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource } from "@ofevents/eventsource";
import { ControlPlane, type KubeCredentials } from "./helpers/kube.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
let cp: ControlPlane;
let dir: string;
/** The controller's ServiceAccount, with the shipped RBAC. */
let controllerSa: KubeCredentials;

beforeAll(async () => {
  cp = await ControlPlane.start();
  dir = await mkdtemp(join(tmpdir(), "k8s-rbac-"));
  await createNamespace("ofevents-system");
  for (const file of ["rbac.yaml", "rbac-kubernetes-source.yaml"]) {
    const docs = parseAllDocuments(await readFile(join(ROOT, "deploy", file), "utf8"));
    for (const o of docs.map((d) => d.toJS() as RenderedObject)) {
      await kube("PATCH", `${pathOf(o)}?fieldManager=test&force=true`, o, "application/apply-patch+yaml");
    }
  }
  controllerSa = await cp.serviceAccountCredentials("ofevents-system", "ofevents-controller");
}, 180_000);

afterAll(async () => {
  await cp?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

async function kube(
  method: string,
  path: string,
  body?: unknown,
  contentType?: string,
  credentials?: KubeCredentials,
): Promise<unknown> {
  const res = await cp.request(method, path, {
    ...(body === undefined ? {} : { body }),
    ...(credentials === undefined ? {} : { credentials }),
    ...(contentType === undefined ? {} : { contentType }),
  });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json;
}

const createNamespace = (name: string) =>
  kube("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });

/** Where a rendered object lives, for a server-side apply as the controller does it. */
function pathOf(o: RenderedObject): string {
  const [prefix, plural] = {
    ServiceAccount: ["/api/v1", "serviceaccounts"],
    Role: ["/apis/rbac.authorization.k8s.io/v1", "roles"],
    RoleBinding: ["/apis/rbac.authorization.k8s.io/v1", "rolebindings"],
    ClusterRole: ["/apis/rbac.authorization.k8s.io/v1", "clusterroles"],
    ClusterRoleBinding: ["/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"],
  }[o.kind as string]!;
  const ns = o.metadata.namespace === undefined ? "" : `/namespaces/${o.metadata.namespace}`;
  return `${prefix}${ns}/${plural}/${o.metadata.name}`;
}

describe("kubernetes source - rendered RBAC on a real kube-apiserver", () => {
  it("kubernetes source - runs as the rendered ServiceAccount with exactly the granted access", async () => {
    const ns = `shop-${randomSuffix()}`;
    const other = `team-${randomSuffix()}`;
    await createNamespace(ns);
    await createNamespace(other);
    const raw = {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: "watcher", namespace: ns, uid: "00000000-0000-4000-8000-00000000000a" },
      spec: {
        sink: { uri: "http://fn.example.svc/" },
        kubernetes: {
          configs: { version: "v1", resource: "configmaps", namespace: ns, state: { configMap: "k8s-state" } },
          namespaces: { version: "v1", kind: "Namespace", filter: { afterStart: true } },
        },
      },
    };
    const v = validateEventSource(raw, { buses: { eventBuses: [], clusterEventBuses: [] }, options: { image: "x" } });
    if (!v.ok) throw new Error(v.condition.message);
    const rendered = renderEventSource({ eventSource: v.resource, bus: v.bus, options: { image: "x" } });
    const rbac = rendered.objects.filter((o) => /ServiceAccount|Role/.test(o.kind));
    expect(rbac.map((o) => o.kind)).toEqual([
      "ServiceAccount",
      "ClusterRole",
      "Role",
      "ClusterRoleBinding",
      "RoleBinding",
    ]);
    // Applied as the controller would: its ServiceAccount, server-side apply.
    for (const o of rbac) {
      await kube("PATCH", `${pathOf(o)}?fieldManager=test&force=true`, o, "application/apply-patch+yaml", controllerSa);
    }
    const sa = rendered.deployment!.spec.template.spec.serviceAccountName!;
    const kubeconfig = join(dir, `${sa}-${randomSuffix()}.kubeconfig`);
    await writeFile(kubeconfig, await cp.serviceAccountKubeconfig(ns, sa));
    const creds = await cp.serviceAccountCredentials(ns, sa);

    // What it may not do: other resources, other namespaces, writing what it watches.
    for (const [method, path] of [
      ["GET", `/api/v1/namespaces/${ns}/secrets`],
      ["GET", `/api/v1/namespaces/${other}/configmaps`],
      ["DELETE", `/api/v1/namespaces/${ns}/configmaps/anything`],
      ["GET", `/api/v1/namespaces/${other}/configmaps/k8s-state`],
    ] as const) {
      expect((await cp.request(method, path, { credentials: creds })).status, `${method} ${path}`).toBe(403);
    }

    // The source, as the workload runs it, with the ServiceAccount's kubeconfig.
    const es = structuredClone(v.resource) as EventSource;
    for (const spec of Object.values(es.spec.kubernetes!)) spec.kubeconfig = kubeconfig;
    delete es.spec.sink;
    es.spec.eventBus = "default";
    const bus = createMemoryBus({ logger: silentLogger() });
    const got: Record<string, CloudEvent[]> = { configs: [], namespaces: [] };
    for (const event of ["configs", "namespaces"]) {
      await bus.subscribe([busTopic(ns, "watcher", event)], async (ev) => void got[event]!.push(ev), {
        group: `t-${event}`,
      });
    }
    const runtime = await startEventSource(es, {
      logger: silentLogger(),
      bus,
      secrets: createSecretResolver([], {}),
      webhooks: createWebhookServers({ logger: silentLogger() }),
    });
    try {
      await waitFor(() => runtime.notRunning().length === 0, {
        message: () => JSON.stringify(runtime.notRunning()),
        timeoutMs: 15_000,
      });
      await kube("POST", `/api/v1/namespaces/${ns}/configmaps`, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "orders" },
        data: { a: "1" },
      });
      const fresh = `new-${randomSuffix()}`;
      await createNamespace(fresh);
      await waitFor(() => got["configs"]!.some((e) => e.subject === `${ns}/orders`), { message: "configmap event" });
      await waitFor(() => got["namespaces"]!.some((e) => e.subject === fresh), { message: "namespace event" });
      expect(got["namespaces"]!.map((e) => e.subject)).toEqual([fresh]);
    } finally {
      await runtime.stop();
      await bus.close();
    }
    // The resume state was written through the granted ConfigMap access.
    const state = (await kube("GET", `/api/v1/namespaces/${ns}/configmaps/k8s-state`)) as {
      data: Record<string, string>;
    };
    expect(Object.keys(state.data).sort()).toEqual(["watcher.configs"]);
    expect(JSON.parse(state.data["watcher.configs"]!)).toMatchObject({ resourceVersion: expect.any(String) });

    // A watch outside the grant fails to start, with the API server's refusal.
    const denied = structuredClone(es);
    denied.spec.kubernetes = { other: { version: "v1", resource: "configmaps", namespace: other, kubeconfig } };
    await expect(
      startEventSource(denied, {
        logger: silentLogger(),
        bus: createMemoryBus({ logger: silentLogger() }),
        secrets: createSecretResolver([], {}),
        webhooks: createWebhookServers({ logger: silentLogger() }),
      }),
    ).rejects.toThrow(/403|forbidden/i);
  }, 60_000);
});
