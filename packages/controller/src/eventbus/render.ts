/**
 * EventBus / ClusterEventBus → the Dapr Component carrying the bus and its Resiliency (core's
 * renderDaprComponents), named after the bus: the pub/sub name workloads and Functions use.
 *
 * An EventBus renders into its own namespace. A ClusterEventBus has no namespace: it renders into
 * each namespace whose resources use it and has no EventBus of the same name there (the
 * namespaced EventBus wins, as in OpenFunction); the objects are owned by the ClusterEventBus, so
 * deleting it removes every copy.
 */
import {
  ErrorCode,
  OfEventsError,
  hasCode,
  namespaceOf,
  renderDaprComponents,
  type AnyEventBus,
  type DaprComponent,
  type ResolvedBus,
} from "@ofevents/core";
import type { DaprObject } from "../k8s.js";
import { objectMeta } from "../labels.js";
import { resolveOptions, type ControllerOptions } from "../options.js";

export interface RenderEventBusInput {
  bus: AnyEventBus;
  /** Where to render a ClusterEventBus (the namespace of a resource that uses it); ignored for an EventBus. */
  namespace?: string | undefined;
  options: ControllerOptions;
}

/**
 * The Dapr objects of a bus: the Component, then its Resiliency; none when Dapr is disabled.
 * Throws a CONFIG OfEventsError for a bus Dapr cannot carry (validateEventBus reports it first)
 * and for a ClusterEventBus without a namespace to render into.
 */
export function renderEventBus(input: RenderEventBusInput): DaprObject[] {
  if (!resolveOptions(input.options).dapr.enabled) return [];
  const { bus } = input;
  const namespace = bus.kind === "EventBus" ? namespaceOf(bus) : input.namespace;
  if (namespace === undefined) {
    throw new OfEventsError(
      ErrorCode.Config,
      `ClusterEventBus ${bus.metadata.name}: a namespace to render into is required`,
    );
  }
  return renderDaprComponents(bus, { namespace }).map((c: DaprComponent): DaprObject => {
    const metadata = objectMeta(bus, c.metadata.name, namespace);
    return { ...c, metadata } as DaprObject;
  });
}

/**
 * The Dapr objects of the bus a resource in `namespace` resolved to, in that namespace, or none
 * (no bus, Dapr disabled, or a bus Dapr cannot carry: the bus's own status reports that).
 */
export function renderBusFor(
  bus: ResolvedBus | undefined,
  namespace: string,
  options: ControllerOptions,
): DaprObject[] {
  if (bus?.resource === undefined) return [];
  try {
    return renderEventBus({ bus: bus.resource, namespace, options });
  } catch (err) {
    if (hasCode(err, ErrorCode.Config)) return [];
    throw err;
  }
}
