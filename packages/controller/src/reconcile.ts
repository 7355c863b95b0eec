/**
 * One reconcile: read the resource → validate → render (pure) → apply and prune → status. What
 * differs per kind is its {@link KindHandler}; a bad spec becomes a `Ready: False` condition, an
 * API failure is thrown (the caller requeues the key with backoff).
 */
import type { AnyEventBus, ClusterEventBus, EventBus, Logger } from "@ofevents/core";
import { applyOrReport } from "./apply.js";
import { renderEventBus } from "./eventbus/render.js";
import { validateEventBus } from "./eventbus/validate.js";
import { Reason } from "./conditions.js";
import { applyBindings, removeBindings, sinkBindings, type SinkBinding } from "./eventsource/binding.js";
import { pruneUnowned } from "./eventsource/unowned.js";
import { renderEventSource } from "./eventsource/render.js";
import { validateEventSource } from "./eventsource/validate.js";
import { isStatus, type KubeApi } from "./kube/api.js";
import type { ControllerOptions } from "./options.js";
import { reconcileOperation } from "./operation.js";
import {
  isOperationKind,
  kindPath,
  type Kind,
  type OperationKindName,
  type OwnedObject,
  type RawObject,
} from "./resources.js";
import { writeStatus, type ReadyUpdate } from "./status.js";
import { renderTrigger } from "./trigger/render.js";
import { validateTrigger } from "./trigger/validate.js";
import type { BusCatalog } from "./validation.js";

/** The result label of `ofevents_controller_reconciles_total`. */
export type ReconcileResult = "success" | "invalid" | "error";

export interface ReconcileInput {
  api: KubeApi;
  logger: Logger;
  options: ControllerOptions;
  /** The cached buses of the cluster, as written (each parsed on use). */
  listBuses: (kind: "EventBus" | "ClusterEventBus") => RawObject[];
}

/** What a kind makes of a raw resource: its `Ready` condition and, when valid, what to apply. */
interface Verdict {
  ok: boolean;
  condition: ReadyUpdate;
  objects: readonly OwnedObject[] | undefined;
  /** An EventSource's sink bindings (generic events with a subject), when valid. */
  bindings?: SinkBinding[] | undefined;
}

type KindHandler = (raw: RawObject, r: ReconcileInput) => Verdict;

/** A bus; `render`: whether it has a namespace of its own to render its Dapr Component into. */
const bus =
  (render: boolean): KindHandler =>
  (raw, r) => {
    const v = validateEventBus(raw, { options: r.options });
    const objects = render && v.ok ? renderEventBus({ bus: v.resource, options: r.options }) : undefined;
    return { ok: v.ok, condition: v.condition, objects };
  };

const HANDLERS: Record<Exclude<Kind, OperationKindName>, KindHandler> = {
  EventBus: bus(true),
  // Cluster-scoped: the resources that use it render its Component into their namespaces.
  ClusterEventBus: bus(false),
  EventSource: (raw, r) => {
    const v = validateEventSource(raw, { buses: catalog(r), options: r.options });
    const objects = v.ok
      ? renderEventSource({ eventSource: v.resource, bus: v.bus, options: r.options }).objects
      : undefined;
    return { ok: v.ok, condition: v.condition, objects, bindings: v.ok ? sinkBindings(v.resource) : undefined };
  },
  Trigger: (raw, r) => {
    const v = validateTrigger(raw, { buses: catalog(r), options: r.options });
    const objects = v.ok ? renderTrigger({ trigger: v.resource, bus: v.bus, options: r.options }).objects : undefined;
    return { ok: v.ok, condition: v.condition, objects };
  },
};

/** The cluster's valid buses, parsed from the cache. */
function catalog(r: ReconcileInput): BusCatalog {
  const parse = (raw: RawObject): AnyEventBus | undefined => validateEventBus(raw, { options: r.options }).resource;
  return {
    eventBuses: r
      .listBuses("EventBus")
      .map(parse)
      .filter((b): b is EventBus => b?.kind === "EventBus"),
    clusterEventBuses: r
      .listBuses("ClusterEventBus")
      .map(parse)
      .filter((b): b is ClusterEventBus => b?.kind === "ClusterEventBus"),
  };
}

/** What an EventSource that is gone leaves in objects it could not own. */
async function removeUnowned(r: ReconcileInput, ns: string, name: string): Promise<void> {
  await removeBindings(r.api, r.logger, ns, name);
  await pruneUnowned(r.api, r.logger, ns, name, []);
}

/** Reconciles one work-queue key; "success" also for an object that is gone (nothing to do). */
export async function reconcile(r: ReconcileInput, key: string): Promise<Exclude<ReconcileResult, "error">> {
  const [kind, ns, name] = key.split("/") as [Kind, string, string];
  let raw: RawObject;
  try {
    raw = (await r.api.request("GET", kindPath(kind, ns === "" ? undefined : ns, name))) as RawObject;
  } catch (err) {
    // Gone: owner references and the garbage collector remove what it created; the env it
    // injected into Deployments it does not own, and the RBAC objects it could not own, are
    // taken out here.
    if (isStatus(err, 404)) {
      if (kind === "EventSource") await removeUnowned(r, ns, name);
      return "success";
    }
    throw err;
  }
  if (raw.metadata?.deletionTimestamp !== undefined) {
    if (kind === "EventSource") await removeUnowned(r, ns, name);
    return "success";
  }
  if (isOperationKind(kind)) return reconcileOperation(r, kind, raw, () => catalog(r));
  const v = HANDLERS[kind](raw, r);
  if (v.ok && v.objects !== undefined) {
    const pruned = await applyOrReport(r.api, r.logger, kind, raw, name, ns, v.objects);
    // Only an EventSource with kubernetes events renders RBAC it cannot own. Its ServiceAccount,
    // rendered only for them, pruned now: its last kubernetes event went, and that RBAC goes too.
    if (
      kind === "EventSource" &&
      (Object.keys((raw.spec as { kubernetes?: object } | undefined)?.kubernetes ?? {}).length > 0 ||
        pruned.has("v1/ServiceAccount"))
    )
      await pruneUnowned(r.api, r.logger, ns, name, v.objects);
  }
  if (v.bindings !== undefined) {
    const missing = await applyBindings(r.api, r.logger, ns, name, v.bindings);
    if (missing.length > 0) {
      // Nothing watches Deployments it does not own: the retry with backoff binds it once it exists.
      await writeStatus(r.api, kind, raw, {
        status: "False",
        reason: Reason.SubjectNotFound,
        message: `the subject Deployment of a generic event does not exist (bound once it does): ${missing.join(", ")}`,
      });
      throw new Error(`generic event subject not found: ${missing.join(", ")}`);
    }
  }
  await writeStatus(r.api, kind, raw, v.condition);
  return v.ok ? "success" : "invalid";
}
