/**
 * Child processes for the work being measured, and what the kernel says about them: CPU seconds
 * from /proc/<pid>/stat (utime + stime, all threads) and RSS from /proc/<pid>/status.
 *
 * Children run plain `node` on a copy of bench/ transpiled to JavaScript (no loader hooks in the
 * measured process: tsx's would add ~35 MiB of RSS and a thread), so what they import from
 * `@ofevents/*` resolves to the built dist packages, the code users run.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { recordPerf } from "./perf.js";

/** The repository root (only meaningful in the harness process). */
export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const benchDir = join(repoRoot, "bench");
// One folder per harness process, so that concurrent runs (a smoke test beside a full run) never
// rewrite each other's code; removed when the harness exits.
const cacheDir = join(repoRoot, "node_modules", ".cache", "ofevents-bench", String(process.pid));

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** User + system CPU seconds of a process (all its threads) so far; 10 ms resolution. */
export function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "(comm) ": state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** Resident set size now and its peak (VmHWM), in MiB. */
export function procMemoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/** CPU seconds of this process (all threads), from process.cpuUsage. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

let prepared: Promise<void> | undefined;

/** Transpiles bench/lib and bench/scenarios into the cache folder (once per harness run). */
function prepareChildCode(): Promise<void> {
  prepared ??= (async () => {
    const ts = (await import("typescript")).default;
    process.on("exit", () => rmSync(cacheDir, { recursive: true, force: true }));
    for (const sub of ["lib", "scenarios"]) {
      const out = join(cacheDir, "bench", sub);
      await mkdir(out, { recursive: true });
      for (const f of await readdir(join(benchDir, sub))) {
        if (!f.endsWith(".ts")) continue;
        const source = await readFile(join(benchDir, sub, f), "utf8");
        const js = ts.transpileModule(source, {
          fileName: f,
          compilerOptions: {
            module: ts.ModuleKind.ESNext,
            target: ts.ScriptTarget.ES2022,
            verbatimModuleSyntax: true,
            sourceMap: false,
          },
        }).outputText;
        await writeFile(join(out, f.replace(/\.ts$/, ".js")), js);
      }
    }
    // Modules of test/helpers that bench/lib imports (plain node, no test dependencies).
    for (const f of ["ports.ts"]) {
      const out = join(cacheDir, "test", "helpers");
      await mkdir(out, { recursive: true });
      const source = await readFile(join(repoRoot, "test", "helpers", f), "utf8");
      const js = ts.transpileModule(source, {
        fileName: f,
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
      }).outputText;
      await writeFile(join(out, f.replace(/\.ts$/, ".js")), js);
    }
    // Under node_modules no package.json of ours applies: say it is ESM.
    await writeFile(join(cacheDir, "package.json"), '{ "type": "module", "private": true }\n');
  })();
  return prepared;
}

export interface ChildProc {
  readonly pid: number;
  /** What the child sent with its ready message. */
  readonly info: Record<string, unknown>;
  /** Calls a handler of the child; rejects with its error, or after `timeoutMs` (default 120 s). */
  call<T = unknown>(cmd: string, payload?: unknown, timeoutMs?: number): Promise<T>;
  cpuSeconds(): number;
  memoryMiB(): { rss: number; peak: number };
  /** The end of the child's stderr and log output, for error messages. */
  outputTail(): string;
  /** Bytes the child wrote to stdout (its log) so far. */
  logBytes(): number;
  /** Asks the child to stop gracefully; kills it after `timeoutMs` (default 10 s). */
  stop(timeoutMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
/** Kills every child still running (the runner calls it on exit and on SIGINT). */
export function killAllChildren(): void {
  for (const c of live) c.kill("SIGKILL");
  live.clear();
}

type FromChild =
  | { type: "ready"; info: Record<string, unknown> }
  | { type: "reply"; id: number; ok: true; value: unknown }
  | { type: "reply"; id: number; ok: false; error: string };

export async function spawnChild(o: {
  scenarioFile: string;
  role: string;
  args: unknown;
  cpuProfDir?: string | undefined;
  /** Sample the child with perf into this file (`--perf`), its JIT frames named (`--perf-basic-prof`). */
  perfFile?: string | undefined;
  /** Added to the harness's environment. */
  env?: Record<string, string> | undefined;
  /** Node flags before the entry (`--node-flags`), e.g. `--trace-gc`. */
  nodeFlags?: readonly string[] | undefined;
  readyTimeoutMs?: number;
}): Promise<ChildProc> {
  await prepareChildCode();
  const scenarioJs = join(cacheDir, relative(repoRoot, o.scenarioFile)).replace(/\.ts$/, ".js");
  const entry = join(cacheDir, "bench", "lib", "child.js");
  const logDir = await mkdtemp(join(tmpdir(), "ofevents-bench-"));
  const logFile = join(logDir, `${o.role}.log`);
  const logFd = openSync(logFile, "w");
  const flags = [...(o.nodeFlags ?? [])];
  if (o.cpuProfDir !== undefined) flags.push("--cpu-prof", `--cpu-prof-dir=${o.cpuProfDir}`);
  // The JIT map goes to /tmp/perf-<pid>.map; the V8 log this turns on goes beside the perf data, not the cwd.
  if (o.perfFile !== undefined)
    flags.push("--perf-basic-prof", "--no-logfile-per-isolate", `--logfile=${o.perfFile}.v8.log`);
  const child = spawn(process.execPath, [...flags, entry, scenarioJs, o.role, JSON.stringify(o.args ?? null)], {
    cwd: repoRoot,
    ...(o.env === undefined ? {} : { env: { ...process.env, ...o.env } }),
    stdio: ["ignore", logFd, "pipe", "ipc"],
  });
  closeSync(logFd);
  live.add(child);
  // perf stops by itself when the child exits; stop() waits for it to finish writing.
  const perf = o.perfFile === undefined ? undefined : recordPerf(child.pid!, o.perfFile);
  if (perf !== undefined) {
    live.add(perf.proc);
    void perf.done.catch(() => undefined).then(() => live.delete(perf.proc));
  }
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString("utf8")).slice(-8000);
  });
  const outputTail = (): string => {
    let log = "";
    try {
      log = readFileSync(logFile, "utf8").slice(-4000);
    } catch {
      // gone already
    }
    return `${stderr}${log === "" ? "" : `\n[log]\n${log}`}`.trim();
  };
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  void exited.then(() => live.delete(child));

  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let ready: ((info: Record<string, unknown>) => void) | undefined;
  child.on("message", (m: FromChild) => {
    if (m.type === "ready") ready?.(m.info);
    else if (m.type === "reply") {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (p === undefined) return;
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(`${o.role}: ${m.error}`));
    }
  });
  void exited.then((code) => {
    for (const p of pending.values()) p.reject(new Error(`${o.role} exited (${code}) during a call: ${outputTail()}`));
    pending.clear();
  });

  const readyTimeoutMs = o.readyTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const info = await Promise.race([
    new Promise<Record<string, unknown>>((resolve) => (ready = resolve)),
    exited.then((code) => {
      throw new Error(`child ${o.role} exited (${code}) before it was ready:\n${outputTail()}`);
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`child ${o.role} not ready after ${readyTimeoutMs} ms:\n${outputTail()}`)),
        readyTimeoutMs,
      );
    }),
  ])
    .catch((err: unknown) => {
      child.kill("SIGKILL");
      throw err;
    })
    .finally(() => clearTimeout(timer));

  const pid = child.pid!;
  return {
    pid,
    info,
    call<T>(cmd: string, payload?: unknown, timeoutMs = 120_000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const t = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${o.role}: ${cmd} did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(t);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(t);
            reject(e);
          },
        });
        child.send({ type: "call", id, cmd, payload });
      });
    },
    cpuSeconds: () => procCpuSeconds(pid),
    memoryMiB: () => procMemoryMiB(pid),
    outputTail,
    logBytes: () => {
      try {
        return statSync(logFile).size;
      } catch {
        return 0;
      }
    },
    async stop(timeoutMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        if (child.connected) child.send({ type: "stop" });
        const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
        await exited;
        clearTimeout(t);
      }
      await perf?.done;
      // With node flags (--trace-gc...) the log holds what was asked for: it stays, and says where.
      if (o.nodeFlags !== undefined && o.nodeFlags.length > 0)
        process.stderr.write(`[bench] ${o.role} (pid ${child.pid}) log kept: ${logFile}\n`);
      else await rm(logDir, { recursive: true, force: true });
    },
  };
}
