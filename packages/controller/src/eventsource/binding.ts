/**
 * Sink bindings of generic events (Knative's SinkBinding idea): a generic event naming a
 * `subject` Deployment gets `K_SINK` (the ingest URL of the EventSource's Service) and, with
 * `ceOverrides`, `K_CE_OVERRIDES` in the env of every container of that Deployment's pod template.
 *
 * The env is written by server-side apply with a field manager of the EventSource's own
 * (`ofevents-binding-{name}`), with the Deployment labelled `events.openfunction.io/sink-binding:
 * {EventSource}` and annotated with the event. Unbinding applies an empty configuration with the
 * same manager: the API server then removes exactly the fields that manager owned (the env
 * entries, label and annotation), whatever else changed in the Deployment meanwhile. A Deployment
 * labelled for an EventSource but no longer named by it (event removed, subject changed) is
 * unbound on the next reconcile, and every one is unbound when the EventSource is deleted.
 */
import { API_GROUP, genericEndpoint, namespaceOf, ceOverridesEnv, type EventSource, type Logger } from "@ofevents/core";
import { isStatus, type KubeApi } from "../kube/api.js";
import { dnsLabel, labelValue, workloadName } from "../labels.js";

/** Label on a bound Deployment: the EventSource (name as a label value) that bound it. */
export const BINDING_LABEL = `${API_GROUP}/sink-binding`;
/** Annotation on a bound Deployment: `{namespace}/{EventSource}/{event}`. */
export const BINDING_ANNOTATION = `${API_GROUP}/sink-binding`;

/** One generic event's binding: what the subject Deployment's containers get. */
export interface SinkBinding {
  event: string;
  namespace: string;
  deployment: string;
  /** `K_SINK`. */
  sink: string;
  /** `K_CE_OVERRIDES`, when the event has `ceOverrides`. */
  ceOverrides: string | undefined;
}

/** The server-side apply field manager of an EventSource's bindings. */
export function bindingManager(eventSource: string): string {
  return `ofevents-binding-${dnsLabel(eventSource)}`;
}

/** The in-cluster ingest URL of a generic event: its EventSource's Service, port and path. */
export function ingestUrl(es: EventSource, event: string): string {
  const spec = es.spec.generic?.[event];
  if (spec === undefined) throw new Error(`EventSource ${es.metadata.name} has no generic event ${event}`);
  const { port, path } = genericEndpoint(event, spec);
  return `http://${workloadName("EventSource", es.metadata.name)}.${namespaceOf(es)}.svc.cluster.local:${port}${path}`;
}

/** The bindings of an EventSource: one per generic event with a `subject`, in event-name order. Pure. */
export function sinkBindings(es: EventSource): SinkBinding[] {
  const ns = namespaceOf(es);
  return Object.entries(es.spec.generic ?? {})
    .filter(([, spec]) => spec.subject !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([event, spec]) => ({
      event,
      namespace: spec.subject!.namespace ?? ns,
      deployment: spec.subject!.deployment,
      sink: ingestUrl(es, event),
      ceOverrides: ceOverridesEnv(spec),
    }));
}

/** The part of a Deployment the binding reads: its containers' names. */
export interface DeploymentContainers {
  spec?: { template?: { spec?: { containers?: Array<{ name: string }> } } };
}

/**
 * The server-side apply configuration that binds `b` into `deployment` (as read now): the env
 * entries on every container of its pod template, the label and the annotation. Pure.
 */
export function renderBindingPatch(eventSource: string, b: SinkBinding, deployment: DeploymentContainers): object {
  const env = [
    { name: "K_SINK", value: b.sink },
    ...(b.ceOverrides === undefined ? [] : [{ name: "K_CE_OVERRIDES", value: b.ceOverrides }]),
  ];
  const containers = (deployment.spec?.template?.spec?.containers ?? []).map((c) => ({ name: c.name, env }));
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: b.deployment,
      namespace: b.namespace,
      labels: { [BINDING_LABEL]: labelValue(eventSource) },
      annotations: { [BINDING_ANNOTATION]: `${b.namespace}/${eventSource}/${b.event}` },
    },
    spec: { template: { spec: { containers } } },
  };
}

/** The apply configuration that takes every field of the binding manager back out of a Deployment. Pure. */
export function renderUnbindPatch(namespace: string, deployment: string): object {
  return { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: deployment, namespace } };
}

const deploymentPath = (ns: string, name: string): string => `/apis/apps/v1/namespaces/${ns}/deployments/${name}`;

async function apply(api: KubeApi, eventSource: string, ns: string, name: string, body: object): Promise<void> {
  await api.request(
    "PATCH",
    `${deploymentPath(ns, name)}?fieldManager=${encodeURIComponent(bindingManager(eventSource))}&force=true`,
    body,
    "application/apply-patch+yaml",
  );
}

/**
 * Applies the bindings of EventSource `eventSource` in `namespace` and unbinds the Deployments it
 * bound before that are no longer among them. Resolves with the subject Deployments that do not
 * exist (bound on a later reconcile, once they do).
 */
export async function applyBindings(
  api: KubeApi,
  logger: Logger,
  namespace: string,
  eventSource: string,
  bindings: readonly SinkBinding[],
): Promise<string[]> {
  const missing: string[] = [];
  const wanted = new Set<string>();
  for (const b of bindings) {
    wanted.add(`${b.namespace}/${b.deployment}`);
    let current: DeploymentContainers;
    try {
      current = (await api.request("GET", deploymentPath(b.namespace, b.deployment))) as DeploymentContainers;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      missing.push(`${b.namespace}/${b.deployment}`);
      continue;
    }
    await apply(api, eventSource, b.namespace, b.deployment, renderBindingPatch(eventSource, b, current));
  }
  for (const name of await boundBy(api, namespace, eventSource)) {
    if (wanted.has(`${namespace}/${name}`)) continue;
    await unbind(api, logger, eventSource, namespace, name);
  }
  return missing;
}

/** Unbinds every Deployment EventSource `eventSource` bound in `namespace` (it was deleted). */
export async function removeBindings(
  api: KubeApi,
  logger: Logger,
  namespace: string,
  eventSource: string,
): Promise<void> {
  for (const name of await boundBy(api, namespace, eventSource))
    await unbind(api, logger, eventSource, namespace, name);
}

async function boundBy(api: KubeApi, namespace: string, eventSource: string): Promise<string[]> {
  const selector = encodeURIComponent(`${BINDING_LABEL}=${labelValue(eventSource)}`);
  const list = (await api.request(
    "GET",
    `/apis/apps/v1/namespaces/${namespace}/deployments?labelSelector=${selector}`,
  )) as {
    items?: Array<{ metadata: { name: string; annotations?: Record<string, string> } }>;
  };
  // The label value of a long name is cut and hashed: the annotation tells which EventSource it is.
  return (list.items ?? [])
    .filter((d) => d.metadata.annotations?.[BINDING_ANNOTATION]?.startsWith(`${namespace}/${eventSource}/`) !== false)
    .map((d) => d.metadata.name);
}

async function unbind(api: KubeApi, logger: Logger, eventSource: string, ns: string, name: string): Promise<void> {
  try {
    await apply(api, eventSource, ns, name, renderUnbindPatch(ns, name));
    logger.info({ deployment: `${ns}/${name}`, eventSource }, "sink binding removed");
  } catch (err) {
    if (!isStatus(err, 404)) throw err;
  }
}
