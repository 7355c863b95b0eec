/**
 * Which bus a resource's `eventBus` name means: a namespaced EventBus wins, a ClusterEventBus of the
 * same name is the fallback (OpenFunction's rule). Shared by the runners and the controller.
 */
import { natsStreamingStartOption } from "./compat.js";
import { parseGoTime } from "./gotime.js";
import {
  namespaceOf,
  type ClusterEventBus,
  type EventBus,
  type EventBusSpec,
  type JetStreamBusSpec,
  type NatsStreamingBusSpec,
} from "./schemas.js";

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
      spec: { jetstream: natsStreamingToJetStream(spec.natsStreaming) },
      warning: `${resource.kind} ${name}: natsStreaming is end-of-life; mapped to JetStream at ${spec.natsStreaming.natsURL}`,
    };
  }
  return { resource, key, spec, warning: undefined };
}

/**
 * The JetStream bus spec a natsStreaming bus runs as (NATS Streaming is end-of-life): natsURL →
 * url, ackWaitTime → ackWait, maxInFlight → maxAckPending, durableSubscriptionName →
 * durablePrefix, subscriptionType as is, and the start option in force (Dapr's precedence:
 * startAtSequence, startWithLastReceived, deliverAll, deliverNew, startAtTimeDelta, startAtTime)
 * → deliverPolicy with startSequence / startTime / startTimeDelta. Fields with no JetStream
 * meaning are left out; compatibility() warns about them. Throws a TypeError for a startAtTime
 * its layout cannot read (the loader reports that as an issue first).
 */
export function natsStreamingToJetStream(ns: NatsStreamingBusSpec): JetStreamBusSpec {
  const out: JetStreamBusSpec = { url: ns.natsURL, subscriptionType: ns.subscriptionType };
  if (ns.ackWaitTime !== undefined) out.ackWait = ns.ackWaitTime;
  if (ns.maxInFlight !== undefined) out.maxAckPending = ns.maxInFlight;
  if (ns.durableSubscriptionName !== undefined) out.durablePrefix = ns.durableSubscriptionName;
  switch (natsStreamingStartOption(ns)) {
    case "startAtSequence":
      out.deliverPolicy = "sequence";
      out.startSequence = ns.startAtSequence!;
      break;
    case "startWithLastReceived":
      out.deliverPolicy = "last";
      break;
    case "deliverAll":
      out.deliverPolicy = "all";
      break;
    case "startAtTimeDelta":
      out.deliverPolicy = "time";
      out.startTimeDelta = ns.startAtTimeDelta!;
      break;
    case "startAtTime": {
      const t = parseGoTime(ns.startAtTime!, ns.startAtTimeFormat);
      if (t === undefined)
        throw new TypeError(`natsStreaming.startAtTime "${ns.startAtTime}" does not match its layout`);
      out.deliverPolicy = "time";
      out.startTime = t.toISOString();
      break;
    }
    default:
      out.deliverPolicy = "new";
  }
  return out;
}
