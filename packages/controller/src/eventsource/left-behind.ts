/**
 * What an EventSource leaves outside its ownership: the RBAC objects of its `kubernetes` events
 * that it cannot own (eventsource/unowned.ts) and the sink bindings in Deployments it does not
 * own (eventsource/binding.ts). No garbage collector removes them; the controller does when it
 * sees the EventSource go. A deletion made while no controller was leading (stopped, crashed,
 * upgraded) is never seen, so on taking the lead the controller lists these objects and names
 * the EventSources they were made for; those not in its cache are queued, and their reconcile
 * finds them gone and removes what they left. A list the controller may not make (the opt-in
 * RBAC of deploy/rbac-kubernetes-source.yaml not installed) is skipped: nothing of that kind was
 * created then.
 */
import { isStatus, type KubeApi } from "../kube/api.js";
import { MANAGED_BY, MANAGED_BY_LABEL, kindLabel } from "../labels.js";
import { BINDING_ANNOTATION, BINDING_LABEL } from "./binding.js";
import { OWNER_NAMESPACE_LABEL } from "./rbac.js";
import { RBAC, UNOWNED_RBAC_TYPES } from "./unowned.js";

/** An EventSource named by an object it left: its namespace and its name (or, past 63 characters, its label value). */
export interface LeftBy {
  namespace: string;
  name: string;
}

interface Listed {
  items?: Array<{
    metadata: { namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  }>;
}

async function list(api: KubeApi, path: string): Promise<NonNullable<Listed["items"]>> {
  try {
    return ((await api.request("GET", path)) as Listed).items ?? [];
  } catch (err) {
    if (isStatus(err, 403)) return [];
    throw err;
  }
}

/**
 * The EventSources that the labelled RBAC objects and bound Deployments name, in `namespaces`
 * (all when undefined), each once. Deployments are listed in `namespaces` only; the RBAC objects
 * cluster-wide (a Role lives in the namespace its source watches), as the pruning lists them.
 */
export async function eventSourcesNamedByLeftovers(
  api: KubeApi,
  namespaces: readonly string[] | undefined,
): Promise<LeftBy[]> {
  const found = new Map<string, LeftBy>();
  const add = (namespace: string | undefined, name: string | undefined): void => {
    if (namespace === undefined || name === undefined || namespace === "" || name === "") return;
    if (namespaces !== undefined && !namespaces.includes(namespace)) return;
    found.set(`${namespace}/${name}`, { namespace, name });
  };

  const owned = encodeURIComponent(`${MANAGED_BY_LABEL}=${MANAGED_BY},${OWNER_NAMESPACE_LABEL}`);
  const nameLabel = kindLabel("EventSource");
  for (const { plural } of UNOWNED_RBAC_TYPES) {
    for (const item of await list(api, `${RBAC}/${plural}?labelSelector=${owned}`)) {
      const labels = item.metadata.labels ?? {};
      add(labels[OWNER_NAMESPACE_LABEL], labels[nameLabel]);
    }
  }

  const bound = encodeURIComponent(BINDING_LABEL);
  const paths =
    namespaces === undefined
      ? [`/apis/apps/v1/deployments?labelSelector=${bound}`]
      : namespaces.map((ns) => `/apis/apps/v1/namespaces/${ns}/deployments?labelSelector=${bound}`);
  for (const path of paths) {
    for (const item of await list(api, path)) {
      // `{namespace}/{EventSource}/{event}`: the full name, where the label holds a cut one.
      const [ns, name] = (item.metadata.annotations?.[BINDING_ANNOTATION] ?? "").split("/");
      if (ns !== undefined && name !== undefined && name !== "") add(ns, name);
      else add(item.metadata.namespace, item.metadata.labels?.[BINDING_LABEL]);
    }
  }
  return [...found.values()];
}
