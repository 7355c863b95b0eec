// What the platform tests that run our controller in process share: the project's CRDs (and loose
// CRDs standing for other projects' kinds) installed in a ControlPlane and served, and a controller
// started in a namespace of its own, leading its Lease.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { parse as parseYaml } from "yaml";
import { startController, type ControllerHandle, type ControllerOptions } from "@ofevents/controller";
import { silentLogger } from "@ofevents/core";
import type { ControlPlane } from "./kube.js";
import { randomSuffix, waitFor } from "./wait.js";

const CRDS = fileURLToPath(new URL("../../crds/", import.meta.url));

/** A loose CRD (any fields kept), as another project's operator would have installed the real one. */
export function looseCrd(group: string, version: string, kind: string, plural: string): unknown {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.${group}` },
    spec: {
      group,
      scope: "Namespaced",
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
        },
      ],
    },
  };
}

/** Resolves once `/apis/{group}/{version}/{plural}` answers 200. */
export async function waitServed(cp: ControlPlane, group: string, version: string, plural: string): Promise<void> {
  await waitFor(async () => (await cp.request("GET", `/apis/${group}/${version}/${plural}?limit=1`)).status === 200, {
    timeoutMs: 30_000,
    intervalMs: 100,
    message: `${plural}.${group} served`,
  });
}

/**
 * Creates every CRD of crds/ and the `loose` ones (`[group, version, kind, plural]`), and resolves
 * once all are served.
 */
export async function installCrds(
  cp: ControlPlane,
  loose: ReadonlyArray<readonly [string, string, string, string]> = [],
): Promise<void> {
  const served: Array<[string, string, string]> = [];
  for (const file of (await readdir(CRDS)).filter((f) => f.endsWith(".yaml")).sort()) {
    const crd = parseYaml(await readFile(join(CRDS, file), "utf8")) as {
      spec: { group: string; names: { plural: string }; versions: { name: string }[] };
    };
    await post(cp, crd);
    served.push([crd.spec.group, crd.spec.versions[0]!.name, crd.spec.names.plural]);
  }
  for (const [group, version, kind, plural] of loose) {
    await post(cp, looseCrd(group, version, kind, plural));
    served.push([group, version, plural]);
  }
  await Promise.all(served.map(([group, version, plural]) => waitServed(cp, group, version, plural)));
}

async function post(cp: ControlPlane, crd: unknown): Promise<void> {
  const res = await cp.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", { body: crd });
  if (res.status !== 201) throw new Error(`creating a CRD: ${res.status} ${res.text}`);
}

/** A kubeconfig of the control plane's admin. */
export function adminKubeConfig(cp: ControlPlane): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(cp.kubeconfig());
  return kc;
}

/**
 * Our controller, in process, as the control plane's admin, with its Lease in a new namespace;
 * resolves once it leads (short lease and backoff timings, so tests do not wait).
 */
export async function startLeadingController(
  cp: ControlPlane,
  options: ControllerOptions,
  backoffMaxMs = 2_000,
): Promise<ControllerHandle> {
  const namespace = `ofevents-system-${randomSuffix()}`;
  const res = await cp.request("POST", "/api/v1/namespaces", { body: { metadata: { name: namespace } } });
  if (res.status !== 201) throw new Error(`creating namespace ${namespace}: ${res.status} ${res.text}`);
  const controller = await startController({
    kubeConfig: adminKubeConfig(cp),
    logger: silentLogger(),
    options,
    namespace,
    leaderElection: { identity: "platform", leaseDurationSeconds: 5, retryPeriodMs: 300 },
    backoff: { baseMs: 50, maxMs: backoffMaxMs },
  });
  await waitFor(() => controller.isLeader(), { timeoutMs: 10_000, message: "the controller leads" });
  return controller;
}
