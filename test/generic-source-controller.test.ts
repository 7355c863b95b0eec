// A generic event's sink binding against a real kube-apiserver (test/helpers/kube.ts) with our CRDs
// and the controller in process: the subject Deployment's containers get K_SINK and K_CE_OVERRIDES
// by server-side apply, keep their own env, follow a changed EventSource, lose exactly what was
// added when the event stops naming them or the EventSource is deleted; a subject that does not
// exist yet is SubjectNotFound until it appears, then bound.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControllerHandle, ControllerOptions } from "@ofevents/controller";
import { ControlPlane } from "./helpers/kube.js";
import { installCrds, startLeadingController } from "./helpers/platform.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const API = "/apis/events.openfunction.io/v1alpha1";
const OPTIONS: ControllerOptions = { image: "ghcr.io/example/ofevents:test" };

interface EnvVar {
  name: string;
  value?: string;
}
interface Deployment {
  metadata: {
    name: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    managedFields?: Array<{ manager: string; operation: string }>;
  };
  spec: { template: { spec: { containers: Array<{ name: string; image: string; env?: EnvVar[] }> } } };
}
interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

let cp: ControlPlane;
let controller: ControllerHandle | undefined;

async function req<T = unknown>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
  const res = await cp.request(method, path, {
    ...(body === undefined ? {} : { body }),
    ...(contentType === undefined ? {} : { contentType }),
  });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as T;
}

async function namespace(): Promise<string> {
  const name = `g-${randomSuffix()}`;
  await req("POST", "/api/v1/namespaces", { metadata: { name } });
  await req("POST", `${API}/namespaces/${name}/eventbuses`, {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "EventBus",
    metadata: { name: "default" },
    spec: { kafka: { brokers: "kafka-0.kafka:9092" } },
  });
  return name;
}

/** A Deployment of the user's, with two containers; the first has env of its own. */
function appDeployment(name: string): object {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [
            { name: "main", image: "example/app:1", env: [{ name: "FOO", value: "bar" }] },
            { name: "helper", image: "example/helper:1" },
          ],
        },
      },
    },
  };
}

function genericSource(generic: Record<string, unknown>): object {
  return {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind: "EventSource",
    metadata: { name: "apps" },
    spec: { eventBus: "default", generic },
  };
}

const getDeployment = (ns: string, name: string) =>
  req<Deployment>("GET", `/apis/apps/v1/namespaces/${ns}/deployments/${name}`);

/** The env of each container, by container name. */
const envOf = (d: Deployment): Record<string, EnvVar[]> =>
  Object.fromEntries(d.spec.template.spec.containers.map((c) => [c.name, c.env ?? []]));

async function readyOf(ns: string, name: string): Promise<Condition | undefined> {
  const es = await req<{ status?: { conditions?: Condition[] } }>(
    "GET",
    `${API}/namespaces/${ns}/eventsources/${name}`,
  );
  return es.status?.conditions?.find((c) => c.type === "Ready");
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  await installCrds(cp, [
    ["keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"],
    ["keda.sh", "v1alpha1", "TriggerAuthentication", "triggerauthentications"],
    ["dapr.io", "v1alpha1", "Component", "components"],
    ["dapr.io", "v1alpha1", "Resiliency", "resiliencies"],
  ]);
  controller = await startLeadingController(cp, OPTIONS);
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await cp?.stop();
}, 60_000);

describe("generic-source controller - K_SINK and K_CE_OVERRIDES injected into the subject Deployment", () => {
  it("generic-source controller - bound on create, updated with the EventSource, unbound when the event no longer names it", async () => {
    const ns = await namespace();
    await req("POST", `/apis/apps/v1/namespaces/${ns}/deployments`, appDeployment("my-app"));
    await req(
      "POST",
      `${API}/namespaces/${ns}/eventsources`,
      genericSource({ app: { subject: { deployment: "my-app" }, ceOverrides: { extensions: { team: "platform" } } } }),
    );
    const sink = `http://eventsource-apps.${ns}.svc.cluster.local:8080/app`;
    const bound = await waitFor(
      async () => {
        const d = await getDeployment(ns, "my-app");
        return envOf(d)["helper"]?.some((e) => e.name === "K_SINK") ? d : undefined;
      },
      { timeoutMs: 20_000, message: "my-app bound" },
    );
    const overrides = { name: "K_CE_OVERRIDES", value: '{"extensions":{"team":"platform"}}' };
    expect(envOf(bound)).toEqual({
      main: [{ name: "FOO", value: "bar" }, { name: "K_SINK", value: sink }, overrides],
      helper: [{ name: "K_SINK", value: sink }, overrides],
    });
    expect(bound.metadata.labels?.["events.openfunction.io/sink-binding"]).toBe("apps");
    expect(bound.metadata.annotations?.["events.openfunction.io/sink-binding"]).toBe(`${ns}/apps/app`);
    expect(bound.metadata.managedFields).toContainEqual(
      expect.objectContaining({ manager: "ofevents-binding-apps", operation: "Apply" }),
    );
    // The images and the user's env are untouched.
    expect(bound.spec.template.spec.containers.map((c) => c.image)).toEqual(["example/app:1", "example/helper:1"]);
    await waitFor(async () => (await readyOf(ns, "apps"))?.status === "True", { timeoutMs: 20_000, message: "Ready" });
    // The ingest Service the URL names exists, on the event's port.
    const svc = await req<{ spec: { ports: Array<{ port: number }> } }>(
      "GET",
      `/api/v1/namespaces/${ns}/services/eventsource-apps`,
    );
    expect(svc.spec.ports.map((p) => p.port)).toEqual([8080]);

    // A new port, path and overrides: the env follows.
    await req(
      "PATCH",
      `${API}/namespaces/${ns}/eventsources/apps`,
      { spec: { generic: { app: { port: 9000, path: "/in", ceOverrides: { extensions: { team: "ops" } } } } } },
      "application/merge-patch+json",
    );
    const sink2 = `http://eventsource-apps.${ns}.svc.cluster.local:9000/in`;
    const moved = await waitFor(
      async () => {
        const d = await getDeployment(ns, "my-app");
        return envOf(d)["main"]?.some((e) => e.value === sink2) ? d : undefined;
      },
      { timeoutMs: 20_000, message: "my-app follows the new port" },
    );
    expect(envOf(moved)["main"]).toEqual([
      { name: "FOO", value: "bar" },
      { name: "K_SINK", value: sink2 },
      { name: "K_CE_OVERRIDES", value: '{"extensions":{"team":"ops"}}' },
    ]);

    // The event stops naming the Deployment: exactly what was added goes.
    await req(
      "PATCH",
      `${API}/namespaces/${ns}/eventsources/apps`,
      { spec: { generic: { app: { subject: null } } } },
      "application/merge-patch+json",
    );
    const unbound = await waitFor(
      async () => {
        const d = await getDeployment(ns, "my-app");
        return envOf(d)["main"]?.some((e) => e.name === "K_SINK") ? undefined : d;
      },
      { timeoutMs: 20_000, message: "my-app unbound" },
    );
    expect(envOf(unbound)).toEqual({ main: [{ name: "FOO", value: "bar" }], helper: [] });
    expect(unbound.metadata.labels?.["events.openfunction.io/sink-binding"]).toBeUndefined();
    expect(unbound.metadata.annotations?.["events.openfunction.io/sink-binding"]).toBeUndefined();
    expect(unbound.spec.template.spec.containers.map((c) => c.image)).toEqual(["example/app:1", "example/helper:1"]);
  }, 90_000);

  it("generic-source controller - a missing subject is SubjectNotFound, bound once it appears; deleting the EventSource unbinds", async () => {
    const ns = await namespace();
    await req(
      "POST",
      `${API}/namespaces/${ns}/eventsources`,
      genericSource({ app: { subject: { deployment: "later" } } }),
    );
    const nf = await waitFor(
      async () => {
        const c = await readyOf(ns, "apps");
        return c?.reason === "SubjectNotFound" ? c : undefined;
      },
      { timeoutMs: 20_000, message: "SubjectNotFound" },
    );
    expect(nf.status).toBe("False");
    expect(nf.message).toContain(`${ns}/later`);

    await req("POST", `/apis/apps/v1/namespaces/${ns}/deployments`, appDeployment("later"));
    await waitFor(
      async () => envOf(await getDeployment(ns, "later"))["main"]?.some((e) => e.name === "K_SINK") === true,
      { timeoutMs: 30_000, message: "later bound after it appeared" },
    );
    await waitFor(async () => (await readyOf(ns, "apps"))?.status === "True", { timeoutMs: 20_000, message: "Ready" });

    await req("DELETE", `${API}/namespaces/${ns}/eventsources/apps`);
    const unbound = await waitFor(
      async () => {
        const d = await getDeployment(ns, "later");
        return envOf(d)["main"]?.some((e) => e.name === "K_SINK") ? undefined : d;
      },
      { timeoutMs: 20_000, message: "later unbound after the EventSource was deleted" },
    );
    expect(envOf(unbound)).toEqual({ main: [{ name: "FOO", value: "bar" }], helper: [] });
  }, 90_000);

  it("generic-source controller - an EventSource deleted while no controller ran is unbound by the next one to lead", async () => {
    const ns = await namespace();
    await req("POST", `/apis/apps/v1/namespaces/${ns}/deployments`, appDeployment("app"));
    await req(
      "POST",
      `${API}/namespaces/${ns}/eventsources`,
      genericSource({ app: { subject: { deployment: "app" } } }),
    );
    await waitFor(
      async () => envOf(await getDeployment(ns, "app"))["main"]?.some((e) => e.name === "K_SINK") === true,
      { timeoutMs: 30_000, message: "app bound" },
    );
    // No controller sees the deletion.
    await controller?.stop();
    controller = undefined;
    await req("DELETE", `${API}/namespaces/${ns}/eventsources/apps`);
    await waitFor(async () => (await cp.request("GET", `${API}/namespaces/${ns}/eventsources/apps`)).status === 404, {
      timeoutMs: 10_000,
      message: "the EventSource gone",
    });
    expect(envOf(await getDeployment(ns, "app"))["main"]?.some((e) => e.name === "K_SINK")).toBe(true);
    // The next controller to lead finds the binding of an EventSource it does not know.
    controller = await startLeadingController(cp, OPTIONS);
    const unbound = await waitFor(
      async () => {
        const d = await getDeployment(ns, "app");
        return envOf(d)["main"]?.some((e) => e.name === "K_SINK") ? undefined : d;
      },
      { timeoutMs: 20_000, message: "app unbound by the controller that came after the deletion" },
    );
    expect(envOf(unbound)).toEqual({ main: [{ name: "FOO", value: "bar" }], helper: [] });
  }, 90_000);
});
