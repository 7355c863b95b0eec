/**
 * The RBAC objects of a `kubernetes` event that an EventSource cannot own (a Role in another
 * namespace, a ClusterRole and their bindings: eventsource/rbac.ts): no garbage collector removes
 * them, so the controller does, by their labels: those it no longer renders while the EventSource
 * has `kubernetes` events, and all of them once the EventSource is gone. Without the opt-in RBAC
 * (deploy/rbac-kubernetes-source.yaml) the lists are refused; none were created then, so nothing
 * is done.
 */
import type { Logger } from "@ofevents/core";
import { isStatus, type KubeApi } from "../kube/api.js";
import { MANAGED_BY, MANAGED_BY_LABEL, kindLabel, labelValue } from "../labels.js";
import type { OwnedObject } from "../resources.js";
import { OWNER_NAMESPACE_LABEL } from "./rbac.js";

export const RBAC = "/apis/rbac.authorization.k8s.io/v1";
/**
 * The kinds of the RBAC objects an EventSource cannot own. Bindings first, so a binding never
 * points at a role already gone.
 */
export const UNOWNED_RBAC_TYPES = [
  { kind: "ClusterRoleBinding", plural: "clusterrolebindings", cluster: true },
  { kind: "RoleBinding", plural: "rolebindings", cluster: false },
  { kind: "ClusterRole", plural: "clusterroles", cluster: true },
  { kind: "Role", plural: "roles", cluster: false },
] as const;

interface Listed {
  items?: Array<{ metadata: { name: string; namespace?: string } }>;
}

const id = (kind: string, namespace: string | undefined, name: string): string => `${kind}/${namespace ?? ""}/${name}`;

/**
 * Deletes the unowned RBAC objects labelled for EventSource `namespace/name` that are not in
 * `wanted` (what it renders now; empty once it is gone). Objects in its own namespace are owned
 * and left to the usual pruning.
 */
export async function pruneUnowned(
  api: KubeApi,
  logger: Logger,
  namespace: string,
  name: string,
  wanted: readonly OwnedObject[],
): Promise<void> {
  const keep = new Set(wanted.map((o) => id(o.kind, o.metadata.namespace, o.metadata.name)));
  const selector = encodeURIComponent(
    `${MANAGED_BY_LABEL}=${MANAGED_BY},${kindLabel("EventSource")}=${labelValue(name)},${OWNER_NAMESPACE_LABEL}=${namespace}`,
  );
  for (const t of UNOWNED_RBAC_TYPES) {
    let list: Listed;
    try {
      list = (await api.request("GET", `${RBAC}/${t.plural}?labelSelector=${selector}`)) as Listed;
    } catch (err) {
      if (isStatus(err, 403)) return; // not granted: none were created
      throw err;
    }
    for (const item of list.items ?? []) {
      const ns = t.cluster ? undefined : item.metadata.namespace;
      if (ns === namespace) continue; // owned: pruned with the EventSource's other objects
      if (keep.has(id(t.kind, ns, item.metadata.name))) continue;
      const path =
        ns === undefined
          ? `${RBAC}/${t.plural}/${item.metadata.name}`
          : `${RBAC}/namespaces/${ns}/${t.plural}/${item.metadata.name}`;
      try {
        await api.request("DELETE", path);
        logger.info(
          { type: t.kind, name: item.metadata.name, namespace: ns, eventSource: `${namespace}/${name}` },
          "pruned",
        );
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    }
  }
}
