/**
 * Compares what a case expected with what its run did, per subscriber, and prints the differences.
 * A delivery matches when every field the case gives matches: `data` as a deep subset (objects may
 * have more keys; arrays have the same length, item by item), any other attribute by value (as
 * text: attributes are strings on the wire). Lists match in order and in length.
 */
import type { CloudEvent, Subscriber } from "@ofevents/core";
import type { DeadLetterMatch, DeliveryMatch, EventMatch, TestCase } from "./test-cases.js";
import type { CaseRun, DeadLettered, Delivered } from "./test-runner.js";

export interface Mismatch {
  subscriber: number;
  list: "deliveries" | "deadLetters";
  index: number;
  /** `missing`: expected, not there; `unexpected`: there, not expected; `differs`: at `path`. */
  kind: "missing" | "unexpected" | "differs";
  path?: string | undefined;
  expected?: unknown;
  actual?: unknown;
  /** The expected text is a part of the actual text (a dead letter's reason). */
  contains?: boolean | undefined;
}

/** `contains`: the expected text is a part the actual text must contain. */
type Diff = { path: string; expected: unknown; actual: unknown; contains?: boolean };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Where `actual` does not contain `expected`. */
function subset(expected: unknown, actual: unknown, path: string, out: Diff[]): void {
  if (isObject(expected)) {
    if (!isObject(actual)) {
      out.push({ path, expected, actual });
      return;
    }
    for (const [k, v] of Object.entries(expected)) subset(v, actual[k], `${path}.${k}`, out);
    return;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) {
      out.push({ path, expected, actual });
      return;
    }
    expected.forEach((v, i) => subset(v, actual[i], `${path}[${i}]`, out));
    return;
  }
  if (!Object.is(expected, actual)) out.push({ path, expected, actual });
}

function matchEvent(expected: EventMatch, actual: CloudEvent, prefix: string, skip: readonly string[] = []): Diff[] {
  const out: Diff[] = [];
  const a = actual as Record<string, unknown>;
  for (const [k, v] of Object.entries(expected)) {
    if (skip.includes(k)) continue;
    const path = `${prefix}${k}`;
    if (k === "data") subset(v, a["data"], path, out);
    else if (a[k] === undefined || String(a[k]) !== String(v)) out.push({ path, expected: v, actual: a[k] });
  }
  return out;
}

function matchDelivery(expected: DeliveryMatch, actual: Delivered): Diff[] {
  const batch = "batch" in expected && Array.isArray(expected.batch) ? (expected.batch as EventMatch[]) : undefined;
  if (batch === undefined) {
    if ("batch" in actual)
      return [{ path: "", expected: "one event", actual: `a batch of ${actual.batch.length} events` }];
    return matchEvent(expected as EventMatch, actual.event, "");
  }
  if (!("batch" in actual)) return [{ path: "", expected: `a batch of ${batch.length} events`, actual: "one event" }];
  if (actual.batch.length !== batch.length)
    return [{ path: "batch", expected: `${batch.length} events`, actual: `${actual.batch.length} events` }];
  return batch.flatMap((m, i) => matchEvent(m, actual.batch[i]!, `batch[${i}].`));
}

const DEAD_LETTER_FIELDS = ["reason", "code", "attempts", "to"] as const;

function matchDeadLetter(expected: DeadLetterMatch, actual: DeadLettered): Diff[] {
  const out: Diff[] = [];
  if (expected.reason !== undefined && !actual.reason.includes(expected.reason))
    out.push({ path: "reason", expected: expected.reason, actual: actual.reason, contains: true });
  if (expected.code !== undefined && expected.code !== actual.code)
    out.push({ path: "code", expected: expected.code, actual: actual.code });
  if (expected.attempts !== undefined && expected.attempts !== actual.attempts)
    out.push({ path: "attempts", expected: expected.attempts, actual: actual.attempts });
  if (expected.to !== undefined && expected.to !== actual.to)
    out.push({ path: "to", expected: expected.to, actual: actual.to });
  const event = actual.event ?? ({ id: actual.id } as CloudEvent);
  return [...out, ...matchEvent(expected as EventMatch, event, "", DEAD_LETTER_FIELDS)];
}

function compareList<E, A>(
  subscriber: number,
  list: Mismatch["list"],
  expected: readonly E[],
  actual: readonly A[],
  match: (e: E, a: A) => Diff[],
  summary: (a: A) => unknown,
): Mismatch[] {
  const out: Mismatch[] = [];
  for (let i = 0; i < Math.max(expected.length, actual.length); i++) {
    if (i >= actual.length) out.push({ subscriber, list, index: i, kind: "missing", expected: expected[i] });
    else if (i >= expected.length)
      out.push({ subscriber, list, index: i, kind: "unexpected", actual: summary(actual[i]!) });
    else
      for (const d of match(expected[i]!, actual[i]!))
        out.push({
          subscriber,
          list,
          index: i,
          kind: "differs",
          path: d.path,
          expected: d.expected,
          actual: d.actual,
          ...(d.contains === true ? { contains: true } : {}),
        });
  }
  return out;
}

/** The fields of an event worth showing: its id, subject, join and data (and the reason of a dead letter). */
export function eventSummary(e: CloudEvent): Record<string, unknown> {
  const a = e as Record<string, unknown>;
  const out: Record<string, unknown> = { id: e.id };
  for (const k of ["subject", "ofjoined"]) if (a[k] !== undefined) out[k] = a[k];
  if (a["data"] !== undefined) out["data"] = a["data"];
  return out;
}

export function deliverySummary(d: Delivered): unknown {
  return "batch" in d ? { batch: d.batch.map(eventSummary) } : { to: d.to, ...eventSummary(d.event) };
}

export function deadLetterSummary(d: DeadLettered): unknown {
  return {
    id: d.id,
    to: d.to,
    reason: d.reason,
    ...(d.code === undefined ? {} : { code: d.code }),
    ...(d.attempts === undefined ? {} : { attempts: d.attempts }),
    ...(d.event?.data === undefined ? {} : { data: d.event.data }),
  };
}

/** Every difference between what `c` expects and what `run` did; empty when the case passes. */
export function checkCase(c: TestCase, run: CaseRun): Mismatch[] {
  const out: Mismatch[] = [];
  for (const x of c.expect) {
    const got = run.subscribers[x.subscriber]!;
    if (x.deliveries !== undefined)
      out.push(
        ...compareList(x.subscriber, "deliveries", x.deliveries, got.deliveries, matchDelivery, deliverySummary),
      );
    if (x.deadLetters !== undefined)
      out.push(
        ...compareList(x.subscriber, "deadLetters", x.deadLetters, got.deadLetters, matchDeadLetter, deadLetterSummary),
      );
  }
  return out;
}

function show(v: unknown): string {
  return v === undefined ? "nothing" : JSON.stringify(v);
}

/** How a subscriber is named in a diff: its index, condition and targets. */
export function describeSubscriber(s: Subscriber, index: number): string {
  const name = (sink: Subscriber["sink"]): string => sink?.ref?.name ?? sink?.uri ?? "";
  const to = [
    s.sink === undefined ? undefined : `sink ${name(s.sink)}`,
    s.topic === undefined || s.topic === "" ? undefined : `topic ${s.topic}`,
  ].filter((x) => x !== undefined);
  return `subscriber ${index} (${s.condition}${to.length === 0 ? "" : ` -> ${to.join(", ")}`})`;
}

/**
 * The differences as lines: per subscriber and list, what was expected and what came, then the
 * whole actual list for context.
 */
export function formatMismatches(
  mismatches: readonly Mismatch[],
  run: CaseRun,
  subscribers: readonly Subscriber[],
): string[] {
  const lines: string[] = [];
  const groups = new Map<string, Mismatch[]>();
  for (const m of mismatches) {
    const k = `${m.subscriber}\0${m.list}`;
    groups.set(k, [...(groups.get(k) ?? []), m]);
  }
  for (const group of groups.values()) {
    const { subscriber, list } = group[0]!;
    lines.push(`  ${describeSubscriber(subscribers[subscriber]!, subscriber)}, ${list}:`);
    for (const m of group) {
      if (m.kind === "missing") lines.push(`    - [${m.index}] expected ${show(m.expected)}, got nothing`);
      else if (m.kind === "unexpected") lines.push(`    + [${m.index}] unexpected ${show(m.actual)}`);
      else
        lines.push(
          `    ~ [${m.index}]${m.path === "" ? "" : ` ${m.path}`}: expected ${m.contains === true ? "to contain " : ""}${show(m.expected)}, got ${show(m.actual)}`,
        );
    }
    const got = run.subscribers[subscriber]!;
    const actual = list === "deliveries" ? got.deliveries.map(deliverySummary) : got.deadLetters.map(deadLetterSummary);
    lines.push(`    actual ${list} (${actual.length}):${actual.length === 0 ? " none" : ""}`);
    actual.forEach((a, i) => lines.push(`      [${i}] ${JSON.stringify(a)}`));
  }
  return lines;
}
