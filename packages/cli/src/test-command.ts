/**
 * `ofevents test -f <manifests> <cases.yaml>...`: declarative tests of a trigger's routing, run
 * offline on a virtual clock (docs/test-command.md). Exit 0 when every case passes, 1 when one
 * fails, 2 when the cases cannot run (usage, manifests, cases file).
 */
import { parseArgs } from "node:util";
import {
  createLogger,
  formatIssue,
  namespaceOf,
  silentLogger,
  sourceKinds,
  type Logger,
  type Subscriber,
  type Trigger,
} from "@ofevents/core";
import { validateAll } from "./check.js";
import { CasesFileError, CasesSource, formatProblem, resolveCases } from "./test-cases.js";
import { checkCase, formatMismatches, type Mismatch } from "./test-match.js";
import { runCase, sinkUrl, type CaseRun } from "./test-runner.js";

export interface CaseReport {
  name: string;
  ok: boolean;
  /** The run itself failed (the trigger could not start, ...). */
  error?: string | undefined;
  /** Virtual ms from the case's start to the end of its run. */
  endedAtMs?: number | undefined;
  settled?: boolean | undefined;
  mismatches: Mismatch[];
  run?: CaseRun | undefined;
}

export interface FileReport {
  file: string;
  /** `namespace/name` of the trigger the file tests. */
  trigger: string;
  subscribers: Subscriber[];
  cases: CaseReport[];
}

export interface TestReport {
  ok: boolean;
  passed: number;
  failed: number;
  files: FileReport[];
}

export interface RunTestsOptions {
  /** Manifest files and folders (the trigger, its sources). */
  manifests: string[];
  casesFiles: string[];
  /** Only the cases whose name contains this text. */
  only?: string | undefined;
  logger?: Logger | undefined;
  /** Called after each case, e.g. to print its line as it finishes. */
  onCase?: ((file: FileReport, c: CaseReport) => void) | undefined;
}

/** Problems that keep the cases from running: bad manifests, a bad cases file, no such trigger. */
export class TestSetupError extends Error {
  constructor(readonly lines: string[]) {
    super(lines.join("\n"));
    this.name = "TestSetupError";
  }
}

function pickTrigger(triggers: Trigger[], name: string | undefined, file: string): Trigger {
  const full = (t: Trigger): string => `${namespaceOf(t)}/${t.metadata.name}`;
  const matches =
    name === undefined ? triggers : triggers.filter((t) => (name.includes("/") ? full(t) : t.metadata.name) === name);
  if (matches.length === 1) return matches[0]!;
  const known = triggers.map(full).join(", ") || "none";
  throw new TestSetupError([
    matches.length === 0
      ? `${file}: trigger: no Trigger${name === undefined ? "" : ` named ${name}`} in the manifests (found: ${known})`
      : `${file}: several Triggers in the manifests (${known}): name one with "trigger: [namespace/]name"`,
  ]);
}

/**
 * Loads the manifests, checks every cases file against its trigger, then runs the cases one by
 * one. Rejects with TestSetupError when something keeps the cases from running; a failing case is
 * in the report, not an error.
 */
export async function runTests(o: RunTestsOptions): Promise<TestReport> {
  const logger = o.logger ?? silentLogger();
  const { manifests, issues } = await validateAll(o.manifests);
  if (issues.length > 0) throw new TestSetupError(issues.map(formatIssue));
  const triggers = manifests.triggers.map((t) => t.resource);
  const kinds = new Map<string, string>();
  for (const { resource: es } of manifests.eventSources)
    for (const kind of sourceKinds)
      for (const event of Object.keys(es.spec[kind] ?? {}))
        kinds.set(`${namespaceOf(es)}/${es.metadata.name}/${event}`, kind);

  const plans: Array<{ file: string; trigger: Trigger; cases: ReturnType<typeof resolveCases> }> = [];
  const problems: string[] = [];
  for (const file of o.casesFiles) {
    try {
      const source = await CasesSource.read(file);
      const parsed = source.validate();
      const trigger = pickTrigger(triggers, parsed.trigger, file);
      const cases = resolveCases(source, parsed, trigger, { resolveSink: sinkUrl, sourceKinds: kinds });
      plans.push({ file, trigger, cases: cases.filter((c) => o.only === undefined || c.name.includes(o.only)) });
    } catch (err) {
      if (err instanceof CasesFileError) problems.push(...err.problems.map(formatProblem));
      else if (err instanceof TestSetupError) problems.push(...err.lines);
      else throw err;
    }
  }
  if (problems.length > 0) throw new TestSetupError(problems);
  if (o.only !== undefined && plans.every((p) => p.cases.length === 0))
    throw new TestSetupError([`no case name contains ${JSON.stringify(o.only)}`]);

  const report: TestReport = { ok: true, passed: 0, failed: 0, files: [] };
  for (const plan of plans) {
    const fileReport: FileReport = {
      file: plan.file,
      trigger: `${namespaceOf(plan.trigger)}/${plan.trigger.metadata.name}`,
      subscribers: plan.trigger.spec.subscribers,
      cases: [],
    };
    report.files.push(fileReport);
    for (const c of plan.cases) {
      let r: CaseReport;
      try {
        const run = await runCase(plan.trigger, c, { logger: logger.child({ case: c.name }) });
        const mismatches = checkCase(c, run);
        r = {
          name: c.name,
          ok: mismatches.length === 0,
          endedAtMs: run.endedAtMs,
          settled: run.settled,
          mismatches,
          run,
        };
      } catch (err) {
        r = { name: c.name, ok: false, error: (err as Error).message, mismatches: [] };
      }
      fileReport.cases.push(r);
      if (r.ok) report.passed++;
      else report.failed++;
      o.onCase?.(fileReport, r);
    }
  }
  report.ok = report.failed === 0;
  return report;
}

/** A virtual duration as text: 0s, 1.5s, 10m0s, 1h0m0s. */
export function formatVirtual(ms: number): string {
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(3))}s`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Number(((ms % 60_000) / 1000).toFixed(3));
  return h > 0 ? `${h}h${m}m${s}s` : `${m}m${s}s`;
}

/** The report as text: one line per case as it finishes, then each failure's differences. */
export function formatFailures(report: TestReport): string {
  const lines: string[] = [];
  for (const f of report.files)
    for (const c of f.cases) {
      if (c.ok) continue;
      lines.push("", `--- FAIL: ${c.name} (${f.file}, trigger ${f.trigger})`);
      if (c.error !== undefined) lines.push(`  error: ${c.error}`);
      if (c.run !== undefined) {
        lines.push(...formatMismatches(c.mismatches, c.run, f.subscribers));
        const filtered = Object.entries(c.run.inputFiltered);
        if (filtered.length > 0)
          lines.push(`  left out by the inputs' filters: ${filtered.map(([input, n]) => `${input} ${n}`).join(", ")}`);
        if (!c.settled)
          lines.push(
            `  note: still busy when the clock stopped at +${formatVirtual(c.endedAtMs ?? 0)} (set runFor to run longer)`,
          );
      }
    }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`;
}

function caseLine(c: CaseReport): string {
  const at = c.endedAtMs === undefined ? "" : ` (virtual ${formatVirtual(c.endedAtMs)})`;
  return `${c.ok ? "ok  " : "FAIL"} ${c.name}${at}\n`;
}

export const TEST_HELP = `Usage: ofevents test -f <file|folder>... <cases.yaml>... [options]

Run declarative test cases of a trigger's routing: each case publishes input events at virtual
times and checks what every named subscriber delivered and dead-lettered. The trigger's own
runtime does the work (filters, conditions, joins and their windows, transforms, batch, debounce,
dedup, ordering, rate limits, retries) on an in-memory bus and a virtual clock, so a case with a
window of an hour runs at once. No server is started, no sink is called: a sink answers what the
case says (default 200). Prints one line per case, then the differences of each failure; exit 0
when every case passes, 1 when one fails, 2 when they cannot run (see docs/test-command.md).

Options:
  -f, --file <file|folder>    the manifests (the trigger, and its EventSources for the default
                              event types); repeat it. The positional arguments are cases files.
      --case <text>           only the cases whose name contains this text
      --json                  print the result as JSON
      --log-level <level>     the runtime's log, to stderr (default silent)
  -h, --help                  show this help
`;

/** `ofevents test`: the exit code. */
export async function testCommand(args: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      file: { type: "string", short: "f", multiple: true },
      case: { type: "string" },
      json: { type: "boolean", default: false },
      "log-level": { type: "string", default: "silent" },
    },
  });
  const manifests = values.file ?? [];
  if (manifests.length === 0 || positionals.length === 0) {
    err(
      `error: ${manifests.length === 0 ? "name the manifests with -f <file|folder>" : "name at least one cases file"}; see: ofevents test --help\n`,
    );
    return 2;
  }
  let logger: Logger;
  try {
    logger =
      values["log-level"] === "silent"
        ? silentLogger()
        : createLogger({ level: values["log-level"], format: "json", write: err });
  } catch (e) {
    err(`error: --log-level: ${(e as Error).message}; see: ofevents test --help\n`);
    return 2;
  }
  let report: TestReport;
  try {
    report = await runTests({
      manifests,
      casesFiles: positionals,
      only: values.case,
      logger,
      onCase: (_f, c) => {
        if (!values.json) out(caseLine(c));
      },
    });
  } catch (e) {
    if (!(e instanceof TestSetupError)) throw e;
    for (const line of e.lines) err(`${line}\n`);
    return 2;
  }
  if (values.json) {
    out(`${JSON.stringify(jsonReport(report), null, 2)}\n`);
    return report.ok ? 0 : 1;
  }
  out(formatFailures(report));
  out(`\n${report.passed} passed, ${report.failed} failed\n`);
  return report.ok ? 0 : 1;
}

/** The report as JSON: per case its result, its differences and what each subscriber got. */
export function jsonReport(report: TestReport): unknown {
  return {
    ok: report.ok,
    passed: report.passed,
    failed: report.failed,
    files: report.files.map((f) => ({
      file: f.file,
      trigger: f.trigger,
      cases: f.cases.map((c) => ({
        name: c.name,
        ok: c.ok,
        ...(c.error === undefined ? {} : { error: c.error }),
        ...(c.endedAtMs === undefined ? {} : { endedAtMs: c.endedAtMs, settled: c.settled }),
        mismatches: c.mismatches,
        ...(c.run === undefined
          ? {}
          : { subscribers: c.run.subscribers, inputFiltered: c.run.inputFiltered, returned: c.run.returned }),
      })),
    })),
  };
}
