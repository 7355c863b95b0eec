/**
 * The cases file of `ofevents test` (docs/test-command.md): its schema, and its resolution against
 * the trigger it tests. Every problem is reported at once, each with the file, the line, the case's
 * name and the field's path, e.g. `orders.cases.yaml:14 case "big order": events[0].input: ...`.
 */
import { readFile } from "node:fs/promises";
import {
  EXTENSION_NAME,
  busTopic,
  namespaceOf,
  newEvent,
  parseDuration,
  type CloudEvent,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import { LineCounter, isNode, parseDocument, type Document } from "yaml";
import { z } from "zod";

/** What a sink answers to an attempt: an HTTP status, no connection, or no answer within the delivery timeout. */
export type SinkAnswer = number | "unreachable" | "timeout";

const duration = z
  .union([z.string(), z.number().nonnegative()])
  .refine((v) => typeof v === "number" || parseDuration(v) !== undefined, {
    message: 'not a duration (use e.g. "500ms", "2s", "5m", "PT5M", or a number of milliseconds)',
  });

const answer = z.union([z.number().int().min(100).max(599), z.literal("unreachable"), z.literal("timeout")]);
const answers = z.union([answer, z.array(answer).min(1)]);
const sinkAnswers = z.record(z.string(), answers);

const attributeValue = z.union([z.string(), z.number(), z.boolean()]);

/** CloudEvent attributes to match: `data` deep-subset, any other attribute by value. */
const eventMatchFields = {
  id: attributeValue.optional(),
  type: attributeValue.optional(),
  source: attributeValue.optional(),
  subject: attributeValue.optional(),
  time: attributeValue.optional(),
  datacontenttype: attributeValue.optional(),
  dataschema: attributeValue.optional(),
  data: z.unknown().optional(),
};

const eventMatch = z.object(eventMatchFields).catchall(attributeValue);

const deliveryMatch = z.union([
  z.strictObject({ batch: z.array(eventMatch).min(1) }),
  eventMatch.refine((m) => !("batch" in m), { message: "batch must be a list of event matches" }),
]);

/** Fields of a dead-letter match that are not event attributes. */
const DEAD_LETTER_FIELDS = ["reason", "code", "attempts", "to"] as const;

const deadLetterMatch = z
  .object({
    ...eventMatchFields,
    reason: z.string().optional(),
    code: z.string().optional(),
    attempts: z.number().int().nonnegative().optional(),
    to: z.enum(["deadLetterSink", "deadLetterTopic", "none"]).optional(),
  })
  .catchall(attributeValue);

const none = z.literal("none");

const expectation = z
  .strictObject({
    subscriber: z.number().int().nonnegative(),
    deliveries: z.union([none, z.array(deliveryMatch)]).optional(),
    deadLetters: z.union([none, z.array(deadLetterMatch)]).optional(),
  })
  .refine((e) => e.deliveries !== undefined || e.deadLetters !== undefined, {
    message: "say what to check: deliveries, deadLetters, or both",
  });

const inputEvent = z.strictObject({
  input: z.string().min(1),
  at: duration.optional(),
  id: z.string().min(1).optional(),
  type: z.string().min(1).optional(),
  source: z.string().min(1).optional(),
  subject: z.string().optional(),
  time: z.string().optional(),
  datacontenttype: z.string().optional(),
  data: z.unknown().optional(),
  extensions: z.record(z.string(), attributeValue).optional(),
});

const rfc3339 = z.string().refine((t) => /^\d{4}-\d\d-\d\dT/.test(t) && !Number.isNaN(Date.parse(t)), {
  message: "not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)",
});

const testCase = z.strictObject({
  name: z.string().min(1),
  start: rfc3339.optional(),
  events: z.array(inputEvent),
  sinks: sinkAnswers.optional(),
  runFor: duration.optional(),
  expect: z.array(expectation).min(1),
});

export const casesFileSchema = z.strictObject({
  trigger: z.string().min(1).optional(),
  start: rfc3339.optional(),
  sinks: sinkAnswers.optional(),
  cases: z.array(testCase).min(1),
});

export type CasesFile = z.infer<typeof casesFileSchema>;
export type EventMatch = z.infer<typeof eventMatch>;
export type DeliveryMatch = z.infer<typeof deliveryMatch>;
export type DeadLetterMatch = z.infer<typeof deadLetterMatch>;

/** Where virtual time starts when neither the file nor the case says (`start`). */
export const DEFAULT_START = "2026-01-01T00:00:00.000Z";

/** One event to publish: on `topic`, `atMs` after the case's start. */
export interface CaseEvent {
  input: string;
  topic: string;
  atMs: number;
  /** The event; `time` is filled in when it is published, unless the case gave one. */
  event: CloudEvent;
  timeGiven: boolean;
}

export interface CaseExpectation {
  subscriber: number;
  deliveries: DeliveryMatch[] | undefined;
  deadLetters: DeadLetterMatch[] | undefined;
}

/** A case checked against its trigger, ready to run. */
export interface TestCase {
  name: string;
  startMs: number;
  events: CaseEvent[];
  /** Answers by sink key (a Function ref's name, `namespace/name`, a uri, or the resolved URL). */
  sinks: Record<string, SinkAnswer[]>;
  /** How long the clock may run after the last event; undefined: long enough (see `settleBound`). */
  runForMs: number | undefined;
  expect: CaseExpectation[];
}

/** A problem in a cases file, located. */
export interface CaseProblem {
  file: string;
  line: number | undefined;
  /** The case's name, when the problem is inside a case. */
  caseName: string | undefined;
  /** Path within the case (or the file, outside a case), e.g. `events[0].input`. */
  path: string;
  message: string;
}

export function formatProblem(p: CaseProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  const inCase = p.caseName === undefined ? "" : ` case ${JSON.stringify(p.caseName)}`;
  return `${where}${inCase}: ${p.path === "" ? "" : `${p.path}: `}${p.message}`;
}

/** The cases file could not be read or does not fit its schema or its trigger. */
export class CasesFileError extends Error {
  constructor(readonly problems: CaseProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "CasesFileError";
  }
}

type Path = ReadonlyArray<PropertyKey>;

function pathText(path: Path): string {
  let out = "";
  for (const k of path) {
    if (typeof k === "number") out += `[${k}]`;
    else out += out === "" ? String(k) : `.${String(k)}`;
  }
  return out;
}

/** A parsed cases file that locates paths within it. */
export class CasesSource {
  private constructor(
    readonly file: string,
    readonly value: unknown,
    private readonly doc: Document | undefined,
    private readonly counter: LineCounter,
  ) {}

  /** Reads and parses `file` (YAML or JSON); throws CasesFileError when it cannot. */
  static async read(file: string): Promise<CasesSource> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CasesFileError([
        {
          file,
          line: undefined,
          caseName: undefined,
          path: "",
          message: code === "ENOENT" ? "no such file" : (err as Error).message,
        },
      ]);
    }
    return CasesSource.parse(text, file);
  }

  static parse(text: string, file: string): CasesSource {
    const counter = new LineCounter();
    const doc = parseDocument(text, { lineCounter: counter, prettyErrors: true });
    if (doc.errors.length > 0) {
      throw new CasesFileError(
        doc.errors.map((e) => ({
          file,
          line: e.linePos?.[0].line,
          caseName: undefined,
          path: "",
          message: e.message.split("\n")[0] ?? e.message,
        })),
      );
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      throw new CasesFileError([{ file, line: 1, caseName: undefined, path: "", message: (err as Error).message }]);
    }
    return new CasesSource(file, value, doc, counter);
  }

  /** The line of the node at `path`, or of its nearest ancestor that exists. */
  lineOf(path: Path): number | undefined {
    if (this.doc === undefined) return undefined;
    for (let n = path.length; n >= 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true);
      if (isNode(node) && node.range !== undefined && node.range !== null)
        return this.counter.linePos(node.range[0]).line;
    }
    return undefined;
  }

  /** A problem at `path` (from the file's root), named after the case it is in. */
  problem(path: Path, message: string): CaseProblem {
    const inCase = path[0] === "cases" && typeof path[1] === "number";
    const raw = inCase ? (this.value as { cases?: Array<{ name?: unknown }> }).cases?.[path[1] as number] : undefined;
    const caseName =
      inCase && typeof raw?.name === "string" && raw.name !== ""
        ? raw.name
        : inCase
          ? `#${Number(path[1]) + 1}`
          : undefined;
    return {
      file: this.file,
      line: this.lineOf(path),
      caseName,
      path: pathText(inCase ? path.slice(2) : path),
      message,
    };
  }

  /** Checks the schema; throws CasesFileError with every problem. */
  validate(): CasesFile {
    if (this.value === null || this.value === undefined)
      throw new CasesFileError([this.problem([], "the file is empty: it needs a list of cases")]);
    const r = casesFileSchema.safeParse(this.value);
    if (r.success) {
      const problems: CaseProblem[] = [];
      const seen = new Map<string, number>();
      r.data.cases.forEach((c, i) => {
        const first = seen.get(c.name);
        if (first !== undefined)
          problems.push(this.problem(["cases", i, "name"], `the name of case #${first + 1} too: names must be unique`));
        else seen.set(c.name, i);
      });
      if (problems.length > 0) throw new CasesFileError(problems);
      return r.data;
    }
    throw new CasesFileError(
      r.error.issues.map((i) =>
        // An unknown field is shown where it is, not at the mapping that holds it.
        i.code === "unrecognized_keys" && i.keys.length === 1
          ? this.problem([...i.path, i.keys[0]!], "unknown field")
          : this.problem(i.path, issueMessage(i)),
      ),
    );
  }
}

function issueMessage(i: z.core.$ZodIssue): string {
  if (i.code === "unrecognized_keys") return `unknown field${i.keys.length === 1 ? "" : "s"} ${i.keys.join(", ")}`;
  if (i.code === "invalid_union") {
    // The branch that got furthest says best what is wrong.
    const best = [...i.errors].sort((a, b) => depth(b) - depth(a))[0];
    const inner = best?.[0];
    if (inner !== undefined && inner.path.length > 0) return `${pathText(inner.path)}: ${issueMessage(inner)}`;
    if (inner !== undefined && inner.code !== "invalid_type") return issueMessage(inner);
  }
  if (i.code === "invalid_type" && /received undefined$/.test(i.message)) return `required (${i.expected})`;
  return i.message;
}

function depth(issues: readonly z.core.$ZodIssue[]): number {
  return Math.max(0, ...issues.map((x) => x.path.length + (x.code === "invalid_type" ? 0 : 0.5)));
}

function toMs(d: string | number): number {
  return typeof d === "number" ? d : parseDuration(d)!;
}

function answerList(a: SinkAnswer | SinkAnswer[]): SinkAnswer[] {
  return Array.isArray(a) ? a : [a];
}

/** The keys by which a case may name a sink of `trigger` in `sinks:`, with the URL each resolves to. */
export function sinkKeys(trigger: Trigger, resolve: (s: Sink, namespace: string) => string): Map<string, string> {
  const ns = namespaceOf(trigger);
  const keys = new Map<string, string>();
  for (const s of trigger.spec.subscribers)
    for (const sink of [s.sink, s.deadLetterSink]) {
      if (sink === undefined) continue;
      const url = resolve(sink, ns);
      keys.set(url, url);
      if (sink.uri !== undefined) keys.set(sink.uri, url);
      if (sink.ref !== undefined) {
        keys.set(sink.ref.name, url);
        keys.set(`${sink.ref.namespace ?? ns}/${sink.ref.name}`, url);
      }
    }
  return keys;
}

/**
 * Checks `file` against `trigger` (input names, subscriber indexes, sink names, event times and
 * attributes) and builds the cases to run. Throws CasesFileError with every problem.
 */
export function resolveCases(
  source: CasesSource,
  file: CasesFile,
  trigger: Trigger,
  o: {
    resolveSink: (s: Sink, namespace: string) => string;
    /** The source kind of each event of the manifests' EventSources, by `namespace/eventSource/event`: the default type. */
    sourceKinds: ReadonlyMap<string, string>;
  },
): TestCase[] {
  const ns = namespaceOf(trigger);
  const inputs = trigger.spec.inputs;
  const inputNames = Object.keys(inputs);
  const subscribers = trigger.spec.subscribers.length;
  const keys = sinkKeys(trigger, o.resolveSink);
  const knownSinks = [
    ...new Set(
      trigger.spec.subscribers.flatMap((s) => [s.sink, s.deadLetterSink]).flatMap((s) => s?.ref?.name ?? s?.uri ?? []),
    ),
  ];
  const problems: CaseProblem[] = [];
  const checkSinks = (answers: Record<string, unknown> | undefined, at: Path): void => {
    for (const key of Object.keys(answers ?? {}))
      if (!keys.has(key))
        problems.push(
          source.problem(
            [...at, key],
            `no sink of trigger ${ns}/${trigger.metadata.name} is named ${JSON.stringify(key)} (known: ${knownSinks.join(", ") || "none"})`,
          ),
        );
  };
  checkSinks(file.sinks, ["sinks"]);
  const cases = file.cases.map((c, ci): TestCase => {
    const at = (...p: Path): Path => ["cases", ci, ...p];
    checkSinks(c.sinks, at("sinks"));
    const counters = new Map<string, number>();
    let previous = 0;
    const events: CaseEvent[] = [];
    c.events.forEach((e, ei) => {
      const input = inputs[e.input];
      if (input === undefined) {
        problems.push(
          source.problem(
            at("events", ei, "input"),
            `no input ${JSON.stringify(e.input)} in trigger ${ns}/${trigger.metadata.name} (inputs: ${inputNames.join(", ")})`,
          ),
        );
        return;
      }
      const atMs = e.at === undefined ? previous : toMs(e.at);
      if (atMs < previous) {
        problems.push(
          source.problem(
            at("events", ei, "at"),
            `${atMs} ms is before the previous event (${previous} ms): list events in time order`,
          ),
        );
        return;
      }
      previous = atMs;
      const n = (counters.get(e.input) ?? 0) + 1;
      counters.set(e.input, n);
      const inputNs = input.namespace ?? ns;
      const kind = o.sourceKinds.get(`${inputNs}/${input.eventSource}/${input.event}`);
      let event: CloudEvent;
      try {
        event = newEvent({
          id: e.id ?? `${e.input}-${n}`,
          source: e.source ?? `/apis/v1/namespaces/${inputNs}/eventsources/${input.eventSource}`,
          type: e.type ?? `io.openfunction.events.${kind ?? "test"}`,
          subject: e.subject ?? input.event,
          time: e.time,
          datacontenttype: e.datacontenttype,
          data: e.data,
          extensions: e.extensions,
        });
      } catch (err) {
        problems.push(source.problem(at("events", ei, "extensions"), (err as Error).message));
        return;
      }
      events.push({
        input: e.input,
        topic: busTopic(inputNs, input.eventSource, input.event),
        atMs,
        event,
        timeGiven: e.time !== undefined,
      });
    });
    const checked = new Set<number>();
    c.expect.forEach((x, xi) => {
      if (x.subscriber >= subscribers)
        problems.push(
          source.problem(
            at("expect", xi, "subscriber"),
            `trigger ${ns}/${trigger.metadata.name} has ${subscribers} subscriber${subscribers === 1 ? "" : "s"} (0..${subscribers - 1})`,
          ),
        );
      else if (checked.has(x.subscriber))
        problems.push(
          source.problem(
            at("expect", xi, "subscriber"),
            `subscriber ${x.subscriber} is already checked in this case: one entry per subscriber`,
          ),
        );
      checked.add(x.subscriber);
      const attributeNames = (m: Record<string, unknown>, p: Path, extra: readonly string[]): void => {
        for (const k of Object.keys(m))
          if (!(k in eventMatchFields) && !extra.includes(k) && !EXTENSION_NAME.test(k))
            problems.push(source.problem([...p, k], `not a CloudEvents attribute name (a-z, 0-9, at most 20)`));
      };
      if (Array.isArray(x.deliveries))
        x.deliveries.forEach((m, mi) => {
          if ("batch" in m && Array.isArray(m.batch))
            m.batch.forEach((b, bi) => attributeNames(b, at("expect", xi, "deliveries", mi, "batch", bi), []));
          else attributeNames(m, at("expect", xi, "deliveries", mi), []);
        });
      if (Array.isArray(x.deadLetters))
        x.deadLetters.forEach((m, mi) => attributeNames(m, at("expect", xi, "deadLetters", mi), DEAD_LETTER_FIELDS));
    });
    const startText = c.start ?? file.start ?? DEFAULT_START;
    const sinks: Record<string, SinkAnswer[]> = {};
    for (const [k, v] of Object.entries({ ...file.sinks, ...c.sinks })) sinks[k] = answerList(v);
    return {
      name: c.name,
      startMs: Date.parse(startText),
      events,
      sinks,
      runForMs: c.runFor === undefined ? undefined : toMs(c.runFor),
      expect: c.expect.map((x) => ({
        subscriber: x.subscriber,
        deliveries: x.deliveries === "none" ? [] : x.deliveries,
        deadLetters: x.deadLetters === "none" ? [] : x.deadLetters,
      })),
    };
  });
  if (problems.length > 0) throw new CasesFileError(problems);
  return cases;
}
