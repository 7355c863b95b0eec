/**
 * The kinds the controller watches and the kinds it renders, with where each lives in the API,
 * and the work-queue key of a resource.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { API_VERSION } from "@ofevents/core";
import { KubeApiError } from "./kube/api.js";

export const KINDS = {
  EventSource: { plural: "eventsources", namespaced: true },
  Trigger: { plural: "triggers", namespaced: true },
  EventBus: { plural: "eventbuses", namespaced: true },
  ClusterEventBus: { plural: "clustereventbuses", namespaced: false },
  Redrive: { plural: "redrives", namespaced: true },
  Replay: { plural: "replays", namespaced: true },
} as const;
export type Kind = keyof typeof KINDS;
export const KIND_NAMES = Object.keys(KINDS) as Kind[];
/** The operations: run once as a Job, not rendered into a workload (operation.ts). */
export type OperationKindName = "Redrive" | "Replay";
export function isOperationKind(kind: Kind): kind is OperationKindName {
  return kind === "Redrive" || kind === "Replay";
}

/**
 * Where each kind the controller renders lives (for apply and prune). Cluster-scoped kinds are
 * applied, never pruned by namespace: eventsource/unowned.ts prunes them by label. An `optIn` kind needs a grant beyond
 * deploy/rbac.yaml (deploy/rbac-kubernetes-source.yaml): without it, prune skips the kind (the
 * controller could not have created any).
 */
export const OWNED: Record<string, { prefix: string; plural: string; clusterScoped?: true; optIn?: true }> = {
  "v1/ConfigMap": { prefix: "/api/v1", plural: "configmaps" },
  "v1/Service": { prefix: "/api/v1", plural: "services" },
  "apps/v1/Deployment": { prefix: "/apis/apps/v1", plural: "deployments" },
  "batch/v1/Job": { prefix: "/apis/batch/v1", plural: "jobs" },
  "keda.sh/v1alpha1/ScaledObject": { prefix: "/apis/keda.sh/v1alpha1", plural: "scaledobjects" },
  "keda.sh/v1alpha1/TriggerAuthentication": { prefix: "/apis/keda.sh/v1alpha1", plural: "triggerauthentications" },
  "core.openfunction.io/v1beta1/Function": { prefix: "/apis/core.openfunction.io/v1beta1", plural: "functions" },
  "dapr.io/v1alpha1/Component": { prefix: "/apis/dapr.io/v1alpha1", plural: "components" },
  "dapr.io/v1alpha1/Resiliency": { prefix: "/apis/dapr.io/v1alpha1", plural: "resiliencies" },
  "v1/ServiceAccount": { prefix: "/api/v1", plural: "serviceaccounts", optIn: true },
  "rbac.authorization.k8s.io/v1/Role": { prefix: "/apis/rbac.authorization.k8s.io/v1", plural: "roles", optIn: true },
  "rbac.authorization.k8s.io/v1/RoleBinding": {
    prefix: "/apis/rbac.authorization.k8s.io/v1",
    plural: "rolebindings",
    optIn: true,
  },
  "rbac.authorization.k8s.io/v1/ClusterRole": {
    prefix: "/apis/rbac.authorization.k8s.io/v1",
    plural: "clusterroles",
    clusterScoped: true,
  },
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": {
    prefix: "/apis/rbac.authorization.k8s.io/v1",
    plural: "clusterrolebindings",
    clusterScoped: true,
  },
};

/** A watched resource as the API server returns it, before validation. */
export interface RawObject extends KubernetesObject {
  spec?: Record<string, unknown>;
  status?: { conditions?: StatusCondition[]; observedGeneration?: number } & Record<string, unknown>;
}

export interface StatusCondition {
  type: "Ready";
  status: "True" | "False";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

/** A rendered object, as applied. */
export interface OwnedObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}

/** The work-queue key of a resource: `kind/namespace/name` (namespace empty when cluster-scoped). */
export function key(kind: string, namespace: string | undefined, name: string | undefined): string {
  return `${kind}/${namespace ?? ""}/${name ?? ""}`;
}

export function keyOf(kind: Kind, o: RawObject): string {
  return key(kind, o.metadata?.namespace, o.metadata?.name);
}

export function kindPath(kind: Kind, namespace?: string, name?: string): string {
  const k = KINDS[kind];
  const ns = k.namespaced && namespace !== undefined ? `/namespaces/${namespace}` : "";
  return `/apis/${API_VERSION}${ns}/${k.plural}${name === undefined ? "" : `/${name}`}`;
}

export function objectPath(o: OwnedObject): string {
  const t = OWNED[`${o.apiVersion}/${o.kind}`];
  if (!t) throw new KubeApiError(0, `no API path known for ${o.apiVersion} ${o.kind}`);
  const ns = o.metadata.namespace === undefined ? "" : `/namespaces/${o.metadata.namespace}`;
  return `${t.prefix}${ns}/${t.plural}/${o.metadata.name}`;
}
