/** Checks shared by the kinds' validate functions: schema, log level, bus, sinks. */
import {
  ErrorCode,
  OfEventsError,
  renderDaprComponents,
  resolveEventBus,
  toLogLevel,
  type ClusterEventBus,
  type EventBus,
  type ResolvedBus,
  type ValidationIssue,
} from "@ofevents/core";
import {
  Reason,
  generationOf,
  issuesMessage,
  readyCondition,
  type ReadyCondition,
  type Validation,
} from "./conditions.js";
import { BUS_DRIVER_ANNOTATION, BusDriver, workloadBusDriver, type ResolvedOptions } from "./options.js";

/** The buses a resource's `eventBus` may name (parsed, e.g. by validateEventBus). */
export interface BusCatalog {
  eventBuses: readonly EventBus[];
  clusterEventBuses: readonly ClusterEventBus[];
}

/** Issue codes beyond the schema's, each mapped to a condition reason. */
export const IssueCode = {
  EventBusNotFound: "eventbus_not_found",
  EventBusUnsupported: "eventbus_unsupported",
  SinkUnresolvable: "sink_unresolvable",
} as const;

const REASON_OF: Record<string, Reason> = {
  [IssueCode.EventBusNotFound]: Reason.EventBusNotFound,
  [IssueCode.EventBusUnsupported]: Reason.EventBusUnsupported,
  [IssueCode.SinkUnresolvable]: Reason.SinkUnresolvable,
};

/** What parseWith needs of a (zod) schema. */
export interface SafeParser<T> {
  safeParse(
    raw: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: readonly { code: string; path: readonly PropertyKey[]; message: string }[] } };
}

/** Parses `raw` with `schema`; issues carry the dotted path. */
export function parseWith<T>(
  schema: SafeParser<T>,
  raw: unknown,
): { value: T; issues: [] } | { value: undefined; issues: ValidationIssue[] } {
  const r = schema.safeParse(raw);
  if (r.success) return { value: r.data, issues: [] };
  return {
    value: undefined,
    issues: r.error.issues.map((i) => ({ code: i.code, path: i.path.map(String).join("."), message: i.message })),
  };
}

export function logLevelIssues(level: string | undefined): ValidationIssue[] {
  try {
    toLogLevel(level);
    return [];
  } catch (err) {
    return [{ code: "invalid_value", path: "spec.logLevel", message: (err as Error).message }];
  }
}

/**
 * Resolves the bus a resource names and checks a workload can use it on a cluster: it exists
 * (namespaced EventBus first, then ClusterEventBus), is not the in-process memory bus, and Dapr
 * can carry it when the workload goes through Dapr.
 */
export function busIssues(
  name: string,
  namespace: string,
  catalog: BusCatalog,
  options: ResolvedOptions,
  user: { metadata: { annotations?: Record<string, string> | undefined } } = { metadata: {} },
): { bus: ResolvedBus; issues: ValidationIssue[] } {
  const bus = resolveEventBus(name, namespace, catalog);
  const path = "spec.eventBus";
  if (bus.resource === undefined) {
    return {
      bus,
      issues: [
        {
          code: IssueCode.EventBusNotFound,
          path,
          message: `EventBus "${name}" not found in namespace ${namespace}, nor a ClusterEventBus of that name`,
        },
      ],
    };
  }
  const kind = `${bus.resource.kind} ${name}`;
  if (bus.resource.spec.memory !== undefined) {
    return {
      bus,
      issues: [
        {
          code: IssueCode.EventBusUnsupported,
          path,
          message: `${kind} is a memory bus, which lives inside one process: on a cluster use jetstream, kafka or dapr`,
        },
      ],
    };
  }
  const chosen = workloadBusDriver(user, bus.resource, options);
  if (chosen.invalid !== undefined) {
    return {
      bus,
      issues: [
        {
          code: "invalid_value",
          path: `metadata.annotations.${BUS_DRIVER_ANNOTATION}`,
          message: `"${chosen.invalid}" is not a bus driver: use direct or dapr`,
        },
      ],
    };
  }
  const viaDapr = chosen.driver === BusDriver.Dapr;
  if (viaDapr && !options.dapr.enabled) {
    return {
      bus,
      issues: [
        { code: IssueCode.EventBusUnsupported, path, message: `${kind} needs Dapr, which the controller has off` },
      ],
    };
  }
  if (viaDapr) {
    try {
      renderDaprComponents(bus.resource, { namespace });
    } catch (err) {
      if (!(err instanceof OfEventsError) || err.code !== ErrorCode.Config) throw err;
      return {
        bus,
        issues: [{ code: IssueCode.EventBusUnsupported, path, message: `${kind}: ${err.message}` }],
      };
    }
  }
  return { bus, issues: [] };
}

/** A failed validation: Ready False with the first issue's reason and every issue in the message. */
export function failed<T>(
  raw: unknown,
  resource: T | undefined,
  issues: ValidationIssue[],
): { ok: false; resource: T | undefined; condition: ReadyCondition; issues: ValidationIssue[] } {
  const reason = REASON_OF[issues[0]?.code ?? ""] ?? Reason.InvalidSpec;
  return {
    ok: false,
    resource,
    condition: readyCondition("False", reason, issuesMessage(issues), generationOf(raw)),
    issues,
  };
}

/** The outcome: Ready False with the first issue's reason and every issue in the message, or Ready True. */
export function outcome<T, Extra extends object>(
  raw: unknown,
  resource: T | undefined,
  issues: ValidationIssue[],
  extra: Extra,
  note?: string,
): Validation<T, Extra> {
  if (issues.length > 0 || resource === undefined) return failed(raw, resource, issues);
  const condition: ReadyCondition = readyCondition(
    "True",
    Reason.Valid,
    note === undefined ? "the spec is valid" : `the spec is valid; ${note}`,
    generationOf(raw),
  );
  return { ok: true, resource, condition, issues: [], ...extra };
}
