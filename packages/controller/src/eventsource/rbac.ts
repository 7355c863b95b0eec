/**
 * The API access of an EventSource with `kubernetes` events: a ServiceAccount named like the
 * workload, and for each watched namespace a Role (all namespaces: a ClusterRole) with exactly
 * `get`, `list` and `watch` on the watched resources, bound to it; plus, for a `state.configMap`,
 * `get`/`patch` on that ConfigMap and `create` on ConfigMaps (the API cannot restrict a create to
 * a name) in the EventSource's namespace. Discovery (used for `kind`) needs no grant: every
 * authenticated user may read it (`system:discovery`).
 *
 * Objects in the EventSource's namespace are owned by it and pruned with it. A Role in another
 * namespace, and a ClusterRole with its binding, cannot be owned by a namespaced resource: they
 * carry the owner's labels plus `events.openfunction.io/namespace`, by which the controller
 * removes them (eventsource/unowned.ts).
 */
import { namespaceOf, type EventSource, type KubernetesSourceSpec } from "@ofevents/core";
import type { ObjectMeta, PolicyRule, Role, RoleBinding, ServiceAccount } from "../k8s.js";
import { objectMeta, ownerLabels } from "../labels.js";

/** Label naming the owner's namespace on what it cannot own (other namespaces, cluster-scoped). */
export const OWNER_NAMESPACE_LABEL = "events.openfunction.io/namespace";
const WATCH_VERBS = ["get", "list", "watch"];

/**
 * The plural of a kind as Kubernetes guesses it (`meta.UnsafeGuessKindToResource`): lower case,
 * `s` → `ses`, `y` → `ies`, else `s`. Set `resource` when the guess is wrong.
 */
export function guessResource(kind: string): string {
  const k = kind.toLowerCase();
  if (k.endsWith("s")) return `${k}es`;
  if (k.endsWith("y")) return `${k.slice(0, -1)}ies`;
  return `${k}s`;
}

export interface KubernetesAccess {
  serviceAccount: ServiceAccount;
  roles: Role[];
  bindings: RoleBinding[];
}

/** What the `kubernetes` events of `es` need, or undefined when it has none. Pure. */
export function renderKubernetesAccess(es: EventSource, name: string): KubernetesAccess | undefined {
  const events = Object.values(es.spec.kubernetes ?? {});
  if (events.length === 0) return undefined;
  const ns = namespaceOf(es);
  // Watched namespace ("" = all) → apiGroup → resources.
  const watched = new Map<string, Map<string, Set<string>>>();
  const stateMaps = new Set<string>();
  for (const spec of events) {
    const where = spec.namespace ?? "";
    const byGroup = watched.get(where) ?? new Map<string, Set<string>>();
    watched.set(where, byGroup);
    const group = spec.group ?? "";
    const resources = byGroup.get(group) ?? new Set<string>();
    byGroup.set(group, resources);
    resources.add(resourceOf(spec));
    if (spec.state?.configMap !== undefined) stateMaps.add(spec.state.configMap);
  }

  const subject = { kind: "ServiceAccount" as const, name, namespace: ns };
  const unowned = (objName: string, objNamespace?: string): ObjectMeta => ({
    name: objName,
    ...(objNamespace === undefined ? {} : { namespace: objNamespace }),
    labels: { ...ownerLabels(es), [OWNER_NAMESPACE_LABEL]: ns },
  });
  const roles: Role[] = [];
  const bindings: RoleBinding[] = [];
  const add = (kind: "Role" | "ClusterRole", meta: ObjectMeta, rules: PolicyRule[]): void => {
    roles.push({ apiVersion: "rbac.authorization.k8s.io/v1", kind, metadata: meta, rules });
    bindings.push({
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: kind === "Role" ? "RoleBinding" : "ClusterRoleBinding",
      metadata: structuredClone(meta),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind, name: meta.name },
      subjects: [subject],
    });
  };

  const ownRules: PolicyRule[] = [];
  for (const where of [...watched.keys()].sort()) {
    const rules = [...watched.get(where)!]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([group, resources]) => ({ apiGroups: [group], resources: [...resources].sort(), verbs: WATCH_VERBS }));
    if (where === "") add("ClusterRole", unowned(`ofevents:${ns}:${name}`), rules);
    else if (where === ns) ownRules.push(...rules);
    else add("Role", unowned(`ofevents:${ns}:${name}`, where), rules);
  }
  if (stateMaps.size > 0) {
    const names = [...stateMaps].sort();
    ownRules.push(
      { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "patch"], resourceNames: names },
      { apiGroups: [""], resources: ["configmaps"], verbs: ["create"] },
    );
  }
  if (ownRules.length > 0) add("Role", objectMeta(es, name, ns), ownRules);
  return {
    serviceAccount: { apiVersion: "v1", kind: "ServiceAccount", metadata: objectMeta(es, name, ns) },
    roles,
    bindings,
  };
}

function resourceOf(spec: KubernetesSourceSpec): string {
  return spec.resource ?? guessResource(spec.kind ?? "");
}
