/**
 * The checks an EventBus or ClusterEventBus must pass: the zod schema (one backend set), a backend
 * workloads on a cluster can share (not the in-process memory bus), and, with Dapr on, a spec
 * core's renderDaprComponents can turn into a Component. The result is the `Ready` condition to
 * write: never a throw.
 */
import {
  ErrorCode,
  OfEventsError,
  clusterEventBusSchema,
  eventBusSchema,
  renderDaprComponents,
  type AnyEventBus,
  type ValidationIssue,
} from "@ofevents/core";
import type { Validation } from "../conditions.js";
import { resolveOptions, type ControllerOptions } from "../options.js";
import { IssueCode, failed, outcome, parseWith } from "../validation.js";

export interface ValidateEventBusContext {
  options: ControllerOptions;
}

/** Validates a raw EventBus or ClusterEventBus (picked by its `kind`). */
export function validateEventBus(raw: unknown, ctx: ValidateEventBusContext): Validation<AnyEventBus> {
  const options = resolveOptions(ctx.options);
  const kind = (raw as { kind?: unknown } | null)?.kind;
  const parsed =
    kind === "ClusterEventBus"
      ? parseWith<AnyEventBus>(clusterEventBusSchema, raw)
      : parseWith<AnyEventBus>(eventBusSchema, raw);
  if (parsed.value === undefined) return failed(raw, undefined, parsed.issues);
  const bus = parsed.value;
  const issues: ValidationIssue[] = [];
  if (bus.spec.memory !== undefined) {
    issues.push({
      code: IssueCode.EventBusUnsupported,
      path: "spec.memory",
      message: "the memory bus lives inside one process: on a cluster use jetstream, kafka or dapr",
    });
  } else if (bus.spec.dapr !== undefined && !options.dapr.enabled) {
    issues.push({
      code: IssueCode.EventBusUnsupported,
      path: "spec.dapr",
      message: "a dapr bus needs Dapr, which the controller has off",
    });
  } else if (options.dapr.enabled) {
    try {
      renderDaprComponents(bus, { namespace: "default" });
    } catch (err) {
      if (!(err instanceof OfEventsError) || err.code !== ErrorCode.Config) throw err;
      issues.push({
        code: IssueCode.EventBusUnsupported,
        path: "spec",
        message: `Dapr cannot carry it: ${err.message}`,
      });
    }
  }
  const note =
    bus.spec.natsStreaming === undefined
      ? undefined
      : "natsStreaming is end-of-life: workloads use JetStream at its natsURL";
  return outcome(raw, bus, issues, {}, note);
}
