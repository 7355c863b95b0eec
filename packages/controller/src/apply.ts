/** Server-side apply of what a resource renders, and pruning of what it no longer renders. */
import type { Logger } from "@ofevents/core";
import { Reason } from "./conditions.js";
import { KubeApiError, isStatus, type KubeApi } from "./kube/api.js";
import { MANAGED_BY, MANAGED_BY_LABEL, kindLabel, labelValue } from "./labels.js";
import { OWNED, objectPath, type Kind, type OwnedObject, type RawObject } from "./resources.js";
import { writeStatus } from "./status.js";

export const FIELD_MANAGER = "ofevents-controller";

/**
 * Server-side applies `objects` with strict field validation (a field the installed CRD does not
 * know fails the reconcile instead of being dropped), then deletes what `owner` owns by label
 * and no longer renders. Resolves with the types (`OWNED` keys) of which it deleted something.
 */
export async function applyAndPrune(
  api: KubeApi,
  logger: Logger,
  ownerKind: Kind,
  ownerName: string,
  namespace: string,
  objects: readonly OwnedObject[],
): Promise<Set<string>> {
  const wanted = new Set<string>();
  const pruned = new Set<string>();
  for (const o of objects) {
    await api.request(
      "PATCH",
      `${objectPath(o)}?fieldManager=${FIELD_MANAGER}&force=true&fieldValidation=Strict`,
      o,
      "application/apply-patch+yaml",
    );
    wanted.add(`${o.apiVersion}/${o.kind}/${o.metadata.name}`);
  }
  const selector = encodeURIComponent(
    `${MANAGED_BY_LABEL}=${MANAGED_BY},${kindLabel(ownerKind)}=${labelValue(ownerName)}`,
  );
  for (const [type, t] of Object.entries(OWNED)) {
    if (t.clusterScoped === true) continue;
    let list: { items?: { metadata: { name: string } }[] };
    try {
      list = (await api.request(
        "GET",
        `${t.prefix}/namespaces/${namespace}/${t.plural}?labelSelector=${selector}`,
      )) as typeof list;
    } catch (err) {
      if (isStatus(err, 404)) continue; // that kind's CRD is not installed
      if (t.optIn === true && isStatus(err, 403)) continue; // not granted: none were created
      throw err;
    }
    for (const item of list.items ?? []) {
      if (wanted.has(`${type}/${item.metadata.name}`)) continue;
      try {
        await api.request("DELETE", `${t.prefix}/namespaces/${namespace}/${t.plural}/${item.metadata.name}`);
        logger.info({ type, name: item.metadata.name, namespace }, "pruned");
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
      pruned.add(type);
    }
  }
  return pruned;
}

/**
 * {@link applyAndPrune}; when the API server refuses a rendered object (400, 404: its kind is
 * not installed, 422: strict field validation, a value of the wrong type), `Ready` says so
 * before the error requeues the key (a CRD installed or upgraded later is picked up).
 */
export async function applyOrReport(
  api: KubeApi,
  logger: Logger,
  kind: Kind,
  raw: RawObject,
  name: string,
  namespace: string,
  objects: readonly OwnedObject[],
): Promise<Set<string>> {
  try {
    return await applyAndPrune(api, logger, kind, name, namespace, objects);
  } catch (err) {
    // Server-side apply answers 500 "failed to create typed patch object" for a value of the
    // wrong type (the CRD's schema, not the server, is at fault): a refusal like a 422.
    const refused =
      err instanceof KubeApiError &&
      ([400, 404, 422].includes(err.status) ||
        (err.status === 500 && err.message.includes("failed to create typed patch object")));
    if (refused) {
      await writeStatus(api, kind, raw, {
        status: "False",
        reason: Reason.RenderRejected,
        message:
          err.status === 404
            ? `the API server does not serve a kind the controller renders (is its CRD installed?): ${err.message.trim()}`
            : `the API server refused a rendered object: ${err.message.trim()}`,
      });
    }
    throw err;
  }
}
