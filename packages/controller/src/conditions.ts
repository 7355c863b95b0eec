/** The `Ready` status condition the controller writes, and the outcome of a validation. */
import type { ValidationIssue } from "@ofevents/core";

/** Why a resource is (not) ready: stable values for `reason`. */
export const Reason = {
  /** The spec is valid and everything it needs exists (validation passed). */
  Valid: "Valid",
  /** The spec breaks the schema or a rule the schema cannot express. */
  InvalidSpec: "InvalidSpec",
  /** The named EventBus exists neither in the namespace nor as a ClusterEventBus. */
  EventBusNotFound: "EventBusNotFound",
  /** The bus cannot serve workloads on a cluster (the memory bus), or needs Dapr the controller lacks. */
  EventBusUnsupported: "EventBusUnsupported",
  /** A sink `ref` names a kind the controller cannot turn into a URL. */
  SinkUnresolvable: "SinkUnresolvable",
  /**
   * The spec is valid and its workload runs, but an event of it cannot (OpenFunction's redis
   * event, a Dapr binding that cannot receive): the message names each such event.
   */
  EventNotRunnable: "EventNotRunnable",
  /**
   * The API server refused an object rendered for it (strict field validation against the
   * installed CRD, e.g. an OpenFunction Function version that lacks a field, or the kind is not
   * installed): the message is the server's. The reconcile is retried with backoff.
   */
  RenderRejected: "RenderRejected",
  /**
   * A generic event's `subject` Deployment does not exist: the message names it. The reconcile is
   * retried with backoff and binds it once it exists.
   */
  SubjectNotFound: "SubjectNotFound",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export interface ReadyCondition {
  type: "Ready";
  status: "True" | "False";
  reason: Reason;
  message: string;
  observedGeneration?: number;
}

/** The result of a controller validation: the condition to write and, when valid, the parsed resource. */
export type Validation<T, Extra = object> =
  | ({ ok: true; resource: T; condition: ReadyCondition; issues: [] } & Extra)
  | { ok: false; resource: T | undefined; condition: ReadyCondition; issues: ValidationIssue[] };

/** `metadata.generation` of a raw object, when it is a number. */
export function generationOf(raw: unknown): number | undefined {
  const g = (raw as { metadata?: { generation?: unknown } } | null)?.metadata?.generation;
  return typeof g === "number" ? g : undefined;
}

export function readyCondition(
  status: "True" | "False",
  reason: Reason,
  message: string,
  observedGeneration: number | undefined,
): ReadyCondition {
  return {
    type: "Ready",
    status,
    reason,
    message,
    ...(observedGeneration === undefined ? {} : { observedGeneration }),
  };
}

/** One line per issue: `path: message`, joined with "; " (a condition message is one line). */
export function issuesMessage(issues: readonly ValidationIssue[]): string {
  return issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("; ");
}
