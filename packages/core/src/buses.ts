/**
 * Which bus a resource's `eventBus` name means: a namespaced EventBus wins, a ClusterEventBus of the
 * same name is the fallback (OpenFunction's rule). Shared by the runners and the controller.
 */
import { namespaceOf, type ClusterEventBus, type EventBus, type EventBusSpec } from "./schemas.js";

export interface ResolvedBus {
  /** The resource found, or undefined when none defines the name. */
  resource: EventBus | ClusterEventBus | undefined;
  /** A stable key for the bus (`EventBus:{ns}/{name}`, `ClusterEventBus:/{name}`, `memory:{name}`). */
  key: string;
  /** The spec to run with: natsStreaming is mapped to jetstream. Undefined when no bus was found. */
  spec: EventBusSpec | undefined;
  /** Set when the spec was rewritten (natsStreaming is end-of-life). */
  warning: string | undefined;
}

export function resolveEventBus(
  name: string,
  namespace: string,
  buses: { eventBuses: readonly EventBus[]; clusterEventBuses: readonly ClusterEventBus[] },
): ResolvedBus {
  const ns = buses.eventBuses.find((b) => b.metadata.name === name && namespaceOf(b) === namespace);
  const cluster = ns === undefined ? buses.clusterEventBuses.find((b) => b.metadata.name === name) : undefined;
  const resource = ns ?? cluster;
  if (resource === undefined) return { resource, key: `memory:${name}`, spec: undefined, warning: undefined };
  const key = ns !== undefined ? `EventBus:${namespace}/${name}` : `ClusterEventBus:/${name}`;
  const spec = resource.spec;
  if (spec.natsStreaming !== undefined) {
    return {
      resource,
      key,
      spec: { jetstream: { url: spec.natsStreaming.natsURL } },
      warning: `${resource.kind} ${name}: natsStreaming is end-of-life; mapped to JetStream at ${spec.natsStreaming.natsURL}`,
    };
  }
  return { resource, key, spec, warning: undefined };
}
