/**
 * Sinks given by `ref` become URLs, so the workloads get a `uri` they can call:
 *
 * | ref | URL |
 * |---|---|
 * | Knative Service (`serving.knative.dev/*`, `Service`) | `http://{name}.{ns}.svc.cluster.local` (Knative's cluster-local address) |
 * | OpenFunction Function (`core.openfunction.io/*`, `Function`) | `http://{name}.{ns}.svc.cluster.local` |
 * | Service (`v1`, `Service`) | `http://{name}.{ns}.svc.cluster.local[:{port}]` |
 *
 * A Function: OpenFunction (≥ 0.7) gives each Function a Service of its own name, the internal
 * address of its function gateway route, which forwards to the Knative Service of the current
 * revision (whose generated name changes with each build). The Function's own name is therefore
 * the stable address; `status.addresses` (type Internal) holds the same URL. Pure: nothing is read
 * from the cluster. For a plain Service the port is the one the caller knows (the reconcile loop
 * reads the Service); 80 or unknown leaves it out.
 */
import type { Sink, ValidationIssue } from "@ofevents/core";

type Reference = NonNullable<Sink["ref"]>;

/** Looks up what a pure render cannot know (filled by the reconcile loop from the cluster). */
export interface SinkLookup {
  /** The port of a plain Service a sink points at (its first port), when known. */
  servicePort?: ((namespace: string, name: string) => number | undefined) | undefined;
}

export const SinkRefKind = {
  KnativeService: "KnativeService",
  Function: "Function",
  Service: "Service",
} as const;
export type SinkRefKind = (typeof SinkRefKind)[keyof typeof SinkRefKind];

/** Which supported kind a ref names, or undefined. */
export function sinkRefKind(ref: Reference): SinkRefKind | undefined {
  const group = ref.apiVersion.includes("/") ? ref.apiVersion.slice(0, ref.apiVersion.indexOf("/")) : "";
  if (ref.kind === "Service" && group === "serving.knative.dev") return SinkRefKind.KnativeService;
  if (ref.kind === "Function" && group === "core.openfunction.io") return SinkRefKind.Function;
  if (ref.kind === "Service" && ref.apiVersion === "v1") return SinkRefKind.Service;
  return undefined;
}

/**
 * The URL of a sink: its `uri`, or the address of what its `ref` names (`namespace` when the
 * ref has none). Returns undefined for a ref of an unsupported kind (validation reports it).
 */
export function sinkUrl(sink: Sink, namespace: string, lookup: SinkLookup = {}): string | undefined {
  if (sink.uri !== undefined) return sink.uri;
  const ref = sink.ref;
  if (ref === undefined) return undefined;
  const ns = ref.namespace ?? namespace;
  const host = `${ref.name}.${ns}.svc.cluster.local`;
  switch (sinkRefKind(ref)) {
    case SinkRefKind.KnativeService:
    case SinkRefKind.Function:
      return `http://${host}`;
    case SinkRefKind.Service: {
      const port = lookup.servicePort?.(ns, ref.name);
      return port === undefined || port === 80 ? `http://${host}` : `http://${host}:${port}`;
    }
    default:
      return undefined;
  }
}

/** The sink with `ref` replaced by its `uri` (unchanged when it cannot be resolved). */
export function resolveSink(sink: Sink, namespace: string, lookup: SinkLookup = {}): Sink {
  const uri = sinkUrl(sink, namespace, lookup);
  return uri === undefined ? sink : { uri };
}

/** An issue for a ref the controller cannot resolve, at `path` (none beside a `uri`, which wins). */
export function sinkIssues(sink: Sink | undefined, path: string): ValidationIssue[] {
  if (sink?.ref === undefined || sink.uri !== undefined || sinkRefKind(sink.ref) !== undefined) return [];
  return [
    {
      code: "sink_unresolvable",
      path: `${path}.ref`,
      message: `cannot resolve a ${sink.ref.kind} of ${sink.ref.apiVersion} to a URL (supported: a Knative Service of serving.knative.dev, a Function of core.openfunction.io, a Service of v1)`,
    },
  ];
}
