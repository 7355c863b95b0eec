/**
 * The checks a Trigger must pass before the controller renders it: the zod schema, the rules
 * `ofevents validate` applies (conditions name inputs, expressions compile: core's
 * validateSemantics), the log level, sink refs it can resolve, and the bus (found, usable on a
 * cluster). The result is the `Ready` condition to write: never a throw.
 */
import {
  namespaceOf,
  triggerSchema,
  validateSemantics,
  type ResolvedBus,
  type Trigger,
  type ValidationIssue,
} from "@ofevents/core";
import type { Validation } from "../conditions.js";
import { resolveOptions, type ControllerOptions } from "../options.js";
import { sinkIssues } from "../sinks.js";
import { busIssues, failed, logLevelIssues, outcome, parseWith, type BusCatalog } from "../validation.js";

export interface ValidateTriggerContext {
  buses: BusCatalog;
  options: ControllerOptions;
}

/**
 * Validates a raw Trigger (as read from the API server). `ok` with the parsed resource and its
 * resolved bus, or not `ok` with the issues and a `Ready: False` condition whose reason names
 * the first problem (a missing bus: EventBusNotFound, which clears once the bus appears).
 */
export function validateTrigger(raw: unknown, ctx: ValidateTriggerContext): Validation<Trigger, { bus: ResolvedBus }> {
  const options = resolveOptions(ctx.options);
  const parsed = parseWith(triggerSchema, raw);
  if (parsed.value === undefined) return failed(raw, undefined, parsed.issues);
  const t = parsed.value;
  const issues: ValidationIssue[] = [...validateSemantics(t), ...logLevelIssues(t.spec.logLevel)];
  t.spec.subscribers.forEach((s, i) => {
    issues.push(...sinkIssues(s.sink, `spec.subscribers.${i}.sink`));
    issues.push(...sinkIssues(s.deadLetterSink, `spec.subscribers.${i}.deadLetterSink`));
  });
  const b = busIssues(t.spec.eventBus, namespaceOf(t), ctx.buses, options, t);
  issues.push(...b.issues);
  return outcome(raw, t, issues, { bus: b.bus }, b.bus.warning);
}
