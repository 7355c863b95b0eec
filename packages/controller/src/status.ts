import type { KubeApi } from "./kube/api.js";
import { kindPath, type Kind, type RawObject, type StatusCondition } from "./resources.js";

/** The `Ready` condition a reconcile concludes with. */
export interface ReadyUpdate {
  status: "True" | "False";
  reason: string;
  message: string;
}

/**
 * Writes `Ready` and `observedGeneration` to the status subresource, unless they already say the
 * same (so an unchanged resource costs no write and no watch event). `lastTransitionTime` moves
 * only when the status flips.
 */
export async function writeStatus(api: KubeApi, kind: Kind, raw: RawObject, cond: ReadyUpdate): Promise<void> {
  const generation = raw.metadata?.generation;
  const prev = raw.status?.conditions?.find((c) => c.type === "Ready");
  const same =
    prev !== undefined &&
    prev.status === cond.status &&
    prev.reason === cond.reason &&
    prev.message === cond.message &&
    prev.observedGeneration === generation &&
    raw.status?.observedGeneration === generation;
  if (same) return;
  const condition: StatusCondition = {
    type: "Ready",
    ...cond,
    lastTransitionTime:
      prev !== undefined && prev.status === cond.status ? prev.lastTransitionTime : new Date().toISOString(),
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
  await api.request(
    "PATCH",
    `${kindPath(kind, raw.metadata?.namespace, raw.metadata?.name)}/status`,
    { status: { conditions: [condition], ...(generation === undefined ? {} : { observedGeneration: generation }) } },
    "application/merge-patch+json",
  );
}
