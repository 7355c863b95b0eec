/**
 * Names, labels and owner references of what the controller creates.
 *
 * - Objects of an EventSource or Trigger share one name, `eventsource-{name}` / `trigger-{name}`
 *   (the kind keeps an EventSource and a Trigger of the same name apart): the ConfigMap,
 *   Deployment, Service, ScaledObject and the Dapr app id. It is a DNS-1035 label (a Service
 *   name): `.` becomes `-`, and a name that had to change or is longer than 63 characters is cut
 *   and suffixed with 8 hex digits of its SHA-256, so two resources never share one.
 * - Labels: `app.kubernetes.io/managed-by: ofevents`, `events.openfunction.io/{kind}: {name}`
 *   (lower-cased kind; a name longer than 63 characters, the limit of a label value, is cut and
 *   hashed the same way), plus `app.kubernetes.io/name: ofevents` and
 *   `app.kubernetes.io/component: {kind}` on workloads.
 * - Owner references: the resource, as controller, with blockOwnerDeletion, so deleting it
 *   deletes what it created (garbage collection). A resource without `metadata.uid` (not read
 *   from the API server) gets none.
 */
import { createHash } from "node:crypto";
import { API_GROUP, API_VERSION } from "@ofevents/core";
import type { ObjectMeta, OwnerReference } from "./k8s.js";

export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY = "ofevents";
export const NAME_LABEL = "app.kubernetes.io/name";
export const COMPONENT_LABEL = "app.kubernetes.io/component";
/** Pod template annotation: hash of the ConfigMap data, so a changed manifest rolls the pods. */
export const CONFIG_HASH_ANNOTATION = `${API_GROUP}/config-hash`;

const LABEL_MAX = 63;

function hash8(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 8);
}

/** The label key naming the owning resource of a kind: `events.openfunction.io/{kind lower-cased}`. */
export function kindLabel(kind: string): string {
  return `${API_GROUP}/${kind.toLowerCase()}`;
}

/** `text` as a label value: kept when it fits (63 characters), else cut and suffixed with a hash. */
export function labelValue(text: string): string {
  if (text.length <= LABEL_MAX) return text;
  return `${text.slice(0, LABEL_MAX - 9).replace(/[-_.]+$/, "")}-${hash8(text)}`;
}

/**
 * `text` as a DNS-1035 label (lowercase, `[a-z0-9-]`, starting with a letter, at most 63):
 * kept when valid, else made valid, cut and suffixed with a hash of the original.
 */
export function dnsLabel(text: string): string {
  if (/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(text)) return text;
  let clean = text
    .toLowerCase()
    .replace(/[^-a-z0-9]/g, "-")
    .slice(0, LABEL_MAX - 9)
    .replace(/-+$/, "");
  if (!/^[a-z]/.test(clean)) clean = `x${clean}`.slice(0, LABEL_MAX - 9);
  return `${clean}-${hash8(text)}`;
}

/** The name shared by the objects of an EventSource or Trigger (and its Dapr app id). */
export function workloadName(kind: "EventSource" | "Trigger", name: string): string {
  return dnsLabel(`${kind.toLowerCase()}-${name}`);
}

/** The owner reference to `resource`, or undefined when it has no uid. */
export function ownerReference(resource: {
  kind: string;
  metadata: { name: string; uid?: unknown };
}): OwnerReference | undefined {
  const uid = resource.metadata.uid;
  if (typeof uid !== "string" || uid === "") return undefined;
  return {
    apiVersion: API_VERSION,
    kind: resource.kind,
    name: resource.metadata.name,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The labels every object rendered for `resource` carries. */
export function ownerLabels(resource: { kind: string; metadata: { name: string } }): Record<string, string> {
  return { [MANAGED_BY_LABEL]: MANAGED_BY, [kindLabel(resource.kind)]: labelValue(resource.metadata.name) };
}

/** Metadata of an object named `name` in `namespace`, labelled for and owned by `owner`. */
export function objectMeta(
  owner: { kind: string; metadata: { name: string; uid?: unknown } },
  name: string,
  namespace: string,
  extraLabels: Record<string, string> = {},
): ObjectMeta {
  const ref = ownerReference(owner);
  return {
    name,
    namespace,
    labels: { ...ownerLabels(owner), ...extraLabels },
    ...(ref === undefined ? {} : { ownerReferences: [ref] }),
  };
}
