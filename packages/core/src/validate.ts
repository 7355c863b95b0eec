/**
 * Checks that a schema cannot express: conditions name existing inputs, JSONata expressions
 * compile. Used by the loader (so `ofevents validate` and `run`) and by the controller's Trigger
 * validation.
 */
import { Cron } from "croner";
import { ExpressionError, type ValidationIssue } from "./errors.js";
import { parseCondition } from "./expr/condition.js";
import { createExpressionEngine, type ExpressionEngine } from "./expr/jsonata.js";
import { Kind, type Resource } from "./schemas.js";

let sharedEngine: ExpressionEngine | undefined;
function engine(): ExpressionEngine {
  sharedEngine ??= createExpressionEngine();
  return sharedEngine;
}

function exprIssues(path: string, kind: "filter" | "transform", expr: string): ValidationIssue[] {
  const found = kind === "filter" ? engine().validateFilter(expr) : engine().validateTransform(expr);
  return found.map((i) => ({
    code: i.code,
    path,
    message: i.message,
  }));
}

/** Returns the semantic problems of a schema-valid resource; paths are relative to the resource. */
export function validateSemantics(r: Resource): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  if (r.kind !== Kind.Trigger) return issues;
  const inputs = Object.keys(r.spec.inputs);
  if (inputs.length === 0) issues.push({ code: "custom", path: "spec.inputs", message: "define at least one input" });
  for (const [name, input] of Object.entries(r.spec.inputs)) {
    if (input.filter !== undefined) issues.push(...exprIssues(`spec.inputs.${name}.filter`, "filter", input.filter));
  }
  r.spec.subscribers.forEach((s, i) => {
    const base = `spec.subscribers.${i}`;
    try {
      parseCondition(s.condition, inputs);
    } catch (err) {
      if (!(err instanceof ExpressionError)) throw err;
      issues.push({ code: err.code, path: `${base}.condition`, message: err.message });
    }
    if (s.filter !== undefined) issues.push(...exprIssues(`${base}.filter`, "filter", s.filter));
    if (s.transform !== undefined) issues.push(...exprIssues(`${base}.transform`, "transform", s.transform));
    if (s.correlation?.key !== undefined) {
      issues.push(...exprIssues(`${base}.correlation.key`, "transform", s.correlation.key));
    }
    for (const [field, key] of [
      ["batch.key", s.batch?.key],
      ["debounce.key", s.debounce?.key],
      ["ordering.key", s.ordering?.key],
      ["dedup.key", s.dedup?.key],
    ] as const) {
      if (key !== undefined) issues.push(...exprIssues(`${base}.${field}`, "transform", key));
    }
    if (s.ordering !== undefined && s.batch !== undefined) {
      issues.push({
        code: "custom",
        path: `${base}.ordering`,
        message:
          "ordering and batch cannot be combined: a batch is one delivery (give batch a key for per-key batches)",
      });
    }
    const reset = s.correlation?.reset;
    if (reset?.cron !== undefined) {
      const problem = cronProblem(reset.cron, reset.timezone);
      if (problem !== undefined)
        issues.push({ code: "invalid_value", path: `${base}.correlation.reset.cron`, message: problem });
    }
  });
  if (r.spec.subscribers.length === 0) {
    issues.push({ code: "custom", path: "spec.subscribers", message: "define at least one subscriber" });
  }
  return issues;
}

/** Why a cron schedule (5 or 6 fields, or a macro) in `timezone` cannot run; undefined when it can. */
export function cronProblem(schedule: string, timezone?: string): string | undefined {
  const s = schedule.trim();
  const fields = s.split(/\s+/).length;
  if (!s.startsWith("@") && fields !== 5 && fields !== 6) return `"${s}": expected 5 or 6 fields, got ${fields}`;
  try {
    new Cron(s, { paused: true, ...(timezone === undefined ? {} : { timezone }) }).stop();
  } catch (err) {
    return `"${s}"${timezone === undefined ? "" : ` in ${timezone}`}: ${(err as Error).message}`;
  }
  return undefined;
}
