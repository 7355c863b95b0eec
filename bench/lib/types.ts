/**
 * The contract between the runner (bench/run.ts) and a scenario (bench/scenarios/*.ts). A
 * scenario is one file whose default export is a `Scenario`; the runner finds it by listing the
 * folder, so adding E2..E5 is adding a file.
 */
import type { PerfSummary } from "./perf.js";
import type { ChildProc } from "./proc.js";

/** Figures of one scenario, as written to `bench/results/latest.json`. `null`: not measured by this scenario. */
export interface ScenarioResult {
  id: string;
  title: string;
  /** eventsPerSec / baselineEventsPerSec. */
  ratio: number | null;
  eventsPerSec: number | null;
  baselineEventsPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  baselineP50Ms: number | null;
  baselineP99Ms: number | null;
  cpuSecPer10k: number | null;
  baselineCpuSecPer10k: number | null;
  /** Scenario-specific figures (per-run samples, RSS, sub-benchmarks). */
  extra: Record<string, unknown>;
  /** Caveats worth printing beside the figures (harness-bound, backpressure...). */
  notes: string[];
  goals: Goal[];
}

export interface Goal {
  name: string;
  target: string;
  /** What was measured, printable. */
  value: string;
  /** `null` when it could not be judged in this run (say why in `value`). */
  pass: boolean | null;
}

export interface ScenarioContext {
  /** Small counts: a smoke run, figures meaningless. */
  quick: boolean;
  /** Repetitions of each timed measurement (the median is reported); at least 3. */
  runs: number;
  /** Log level of the framework processes (default "warn": no per-event log lines). */
  logLevel: string;
  /** When set, framework child processes write V8 CPU profiles into this folder. */
  profileDir: string | undefined;
  /** Results of the scenarios that ran before this one in the same run, by id. */
  results: ReadonlyMap<string, ScenarioResult>;
  /** With `--perf`: the summaries of the children sampled so far, by key (`E1-framework`). */
  perfProfiles: Readonly<Record<string, PerfSummary>>;
  /**
   * Starts a child process running `children[role]` of this scenario's file; `env` is added to
   * the harness's environment (e.g. NODE_EXTRA_CA_CERTS for a broker's self-signed certificate).
   */
  spawn(role: string, args: unknown, options?: { profile?: boolean; env?: Record<string, string> }): Promise<ChildProc>;
  /** A progress line on stderr. */
  log(line: string): void;
}

/** What a child role returns once it is ready to serve. */
export interface ChildHandle {
  /** Sent to the parent with the ready message (ports, pid...). */
  info?: Record<string, unknown>;
  /** Commands the parent can call with `ChildProc.call(name, payload)`. */
  handlers?: Record<string, (payload: unknown) => Promise<unknown>>;
  /** Stops gracefully; the process exits after it resolves. */
  stop(): Promise<void>;
}

export type ChildRole = (args: unknown) => Promise<ChildHandle>;

export interface Scenario {
  id: string;
  title: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
  /**
   * Code that runs in child processes (`ctx.spawn(role, args)`), so that CPU and RSS are the
   * work's own. Import the framework lazily inside the role, so a baseline child never loads it.
   */
  children?: Record<string, ChildRole>;
  /** Extra lines printed under the table (sub-benchmarks, samples). */
  describe?(result: ScenarioResult): string[];
}

/** A result with every figure unset, to fill in. */
export function emptyResult(id: string, title: string): ScenarioResult {
  return {
    id,
    title,
    ratio: null,
    eventsPerSec: null,
    baselineEventsPerSec: null,
    p50Ms: null,
    p99Ms: null,
    baselineP50Ms: null,
    baselineP99Ms: null,
    cpuSecPer10k: null,
    baselineCpuSecPer10k: null,
    extra: {},
    notes: [],
    goals: [],
  };
}
