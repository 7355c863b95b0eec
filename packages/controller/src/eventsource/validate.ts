/**
 * The checks an EventSource must pass before the controller renders it, beyond what the API
 * server's schema enforces: the zod schema (its cross-field rules are not in the CRD), the log
 * level, webhook and generic ports (not the health port), generic subjects (in the EventSource's
 * namespace, one event per Deployment), sink refs it can resolve, and the bus (found,
 * usable on a cluster). The result is the `Ready` condition to write: never a throw. An event
 * that cannot run (OpenFunction's redis event) leaves the resource valid, so its workload runs
 * the other events, with `Ready: False` and reason EventNotRunnable naming the event.
 */
import {
  eventSourceSchema,
  genericEndpoint,
  namespaceOf,
  unrunnableEvents,
  type EventSource,
  type ResolvedBus,
  type ValidationIssue,
} from "@ofevents/core";
import { Reason, generationOf, readyCondition, type Validation } from "../conditions.js";
import { resolveOptions, type ControllerOptions } from "../options.js";
import { sinkIssues } from "../sinks.js";
import { busIssues, failed, logLevelIssues, outcome, parseWith, type BusCatalog } from "../validation.js";

export interface ValidateEventSourceContext {
  buses: BusCatalog;
  options: ControllerOptions;
}

/**
 * Validates a raw EventSource (as read from the API server). `ok` with the parsed resource and its
 * resolved bus (undefined when it sends to a sink), or not `ok` with the issues and a
 * `Ready: False` condition whose reason names the first problem.
 */
export function validateEventSource(
  raw: unknown,
  ctx: ValidateEventSourceContext,
): Validation<EventSource, { bus: ResolvedBus | undefined }> {
  const options = resolveOptions(ctx.options);
  const parsed = parseWith(eventSourceSchema, raw);
  if (parsed.value === undefined) return failed(raw, undefined, parsed.issues);
  const es = parsed.value;
  const issues: ValidationIssue[] = [...logLevelIssues(es.spec.logLevel)];
  for (const [event, w] of Object.entries(es.spec.webhook ?? {})) {
    const port = Number(w.port);
    const path = `spec.webhook.${event}.port`;
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      issues.push({ code: "invalid_value", path, message: `${w.port} is not a port (1-65535)` });
    } else if (port === options.healthPort) {
      issues.push({
        code: "invalid_value",
        path,
        message: `port ${port} is the workload's health port: choose another`,
      });
    }
  }
  const subjects = new Map<string, string>();
  for (const [event, g] of Object.entries(es.spec.generic ?? {})) {
    const { port } = genericEndpoint(event, g);
    const path = `spec.generic.${event}.port`;
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      issues.push({ code: "invalid_value", path, message: `${port} is not a port (1-65535)` });
    } else if (port === options.healthPort) {
      issues.push({
        code: "invalid_value",
        path,
        message: `port ${port} is the workload's health port: choose another`,
      });
    }
    if (g.subject === undefined) continue;
    // As Knative's SinkBinding: the subject lives in the binding's namespace.
    if (g.subject.namespace !== undefined && g.subject.namespace !== namespaceOf(es))
      issues.push({
        code: "invalid_value",
        path: `spec.generic.${event}.subject.namespace`,
        message: `the subject Deployment must be in the EventSource's namespace "${namespaceOf(es)}"`,
      });
    const other = subjects.get(g.subject.deployment);
    if (other !== undefined)
      issues.push({
        code: "invalid_value",
        path: `spec.generic.${event}.subject.deployment`,
        message: `Deployment "${g.subject.deployment}" is already the subject of generic event "${other}": it has one K_SINK`,
      });
    else subjects.set(g.subject.deployment, event);
  }
  issues.push(...sinkIssues(es.spec.sink, "spec.sink"));
  let bus: ResolvedBus | undefined;
  let note: string | undefined;
  if (es.spec.eventBus !== undefined) {
    const b = busIssues(es.spec.eventBus, namespaceOf(es), ctx.buses, options, es);
    bus = b.bus;
    note = b.bus.warning;
    issues.push(...b.issues);
  }
  const v = outcome(raw, es, issues, { bus }, note);
  const unrunnable = unrunnableEvents(es);
  if (!v.ok || unrunnable.length === 0) return v;
  // The workload still runs the other events; Ready is False and names those that cannot run.
  return {
    ...v,
    condition: readyCondition(
      "False",
      Reason.EventNotRunnable,
      unrunnable.map((u) => `${u.path}: ${u.message}`).join("; "),
      generationOf(raw),
    ),
  };
}
