/**
 * CPU profiles taken by the kernel's sampler (`perf record -e cpu-clock`) instead of V8's, for
 * `npm run bench -- --perf`. V8's profiler samples on a wall clock: a sample taken while the thread
 * waits in a syscall or for a core is charged to the native function it is in (`writev` most of
 * all on a busy 2-core machine), so its shares are of wall time. perf samples only CPU time, the
 * kernel's included, and with `--perf-basic-prof` it names the JIT-compiled JavaScript frames too.
 *
 * Summaries: each sample is charged to the nearest framework function on its stack
 * (packages/<pkg>/dist/<file>): what our code costs with the library, runtime and kernel work it
 * called; and, by its leaf, to a category of work (kernel, GC, JSON, property access...). A few
 * parts are also counted inclusively: every sample with one of their frames anywhere on its stack.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFile, rm } from "node:fs/promises";

/** Samples per second per CPU; ~1 ms each. */
export const PERF_HZ = 999;

export interface PerfLine {
  name: string;
  cpuMs: number;
  /** Of all samples, 0..1. */
  share: number;
}

export interface PerfSummary {
  cpuMs: number;
  samples: number;
  /** Each sample charged to the nearest framework file on its stack, else to the leaf's module or category. */
  byOwner: PerfLine[];
  /** Each sample charged to the category of its leaf frame. */
  byCategory: PerfLine[];
  byFunction: PerfLine[];
  /** Each of {@link INCLUSIVE}: the samples with one of its frames anywhere on the stack. */
  inclusive: PerfLine[];
}

/** The name of the expression engine's line in {@link PerfSummary.inclusive}. */
export const ENGINE_PART = "expression engine (core/expr, jsonata)";

/**
 * Parts counted inclusively. The expression engine's share is the filter's cost in place, read
 * from the pipeline's own samples: jsonata evaluates through async functions, so the engine's
 * frames are on the stack while its work runs, whichever microtask resumed it (the promise
 * machinery between two of its steps, with no frame of its own on the stack, is not counted).
 */
export const INCLUSIVE: ReadonlyArray<{ name: string; frame: RegExp }> = [
  { name: ENGINE_PART, frame: /packages\/core\/dist\/expr\/|node_modules\/jsonata\// },
];

/** Whether `perf record` can sample here (installed, and allowed by perf_event_paranoid). */
export function perfAvailable(): string | undefined {
  const r = spawnSync("perf", ["record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], { encoding: "utf8" });
  if (r.error !== undefined) return `perf is not installed (${r.error.message})`;
  if (r.status !== 0) return `perf record fails here: ${(r.stderr ?? "").trim().split("\n").slice(-2).join(" ")}`;
  return undefined;
}

/** Samples process `pid` (all its threads) until it exits; resolves once perf wrote `file`. */
export function recordPerf(pid: number, file: string): { done: Promise<void>; proc: ChildProcess } {
  const proc = spawn(
    "perf",
    ["record", "-e", "cpu-clock", "-F", String(PERF_HZ), "-g", "-p", String(pid), "-o", file, "--quiet"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  proc.stderr!.on("data", (c: Buffer) => (stderr = (stderr + c.toString("utf8")).slice(-2000)));
  const done = new Promise<void>((resolve, reject) => {
    proc.once("error", reject);
    proc.once("exit", (code, signal) =>
      code === 0 || signal !== null ? resolve() : reject(new Error(`perf record exited ${code}: ${stderr.trim()}`)),
    );
  });
  return { done, proc };
}

const FRAMEWORK = /packages\/([a-z0-9-]+)\/dist\/([^:]+?)\.js/;

/** The category of a leaf frame. */
export function categorize(sym: string, dso: string): string {
  if (dso.includes("kernel")) return "kernel";
  if (/Scaveng|MarkCompact|Sweeper|Marking|Heap::|GCTracer|ConcurrentMarking|MemoryAllocator/.test(sym)) return "GC";
  if (/Json(Parser|Stringifier)|JsonParse|JsonStringify/.test(sym)) return "JSON";
  if (/StringTable|Internalize/.test(sym)) return "string interning";
  if (/Promise|Microtask|Await|Generator|AsyncFunction/.test(sym)) return "promises, async";
  if (
    /IC(_|$|::)|LoadIC|StoreIC|StubCache|LookupIterator|Megamorphic|TransitionArray|MigrateToMap|GetProperty/.test(sym)
  )
    return "property access";
  if (sym.startsWith("JS:")) {
    if (FRAMEWORK.test(sym)) return "JS: framework";
    if (sym.includes("node_modules/")) return "JS: libraries";
    if (sym.includes("node:")) return "JS: node";
    return "JS: other";
  }
  if (/llhttp|wasm/.test(sym)) return "HTTP parsers";
  if (/^(malloc|_int_malloc|cfree|free|_int_free|__mem(move|cpy|set))/.test(sym)) return "malloc, memcpy";
  return "other native";
}

function moduleOf(sym: string): string | undefined {
  const lib = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(sym);
  if (lib !== null) return lib[1]!.startsWith(".cache") ? "bench harness" : lib[1]!;
  const nodeMod = /\b(node:[\w/]+)/.exec(sym);
  return nodeMod === null ? undefined : nodeMod[1]!;
}

/**
 * Reads `file` (perf script) and charges each sample. The JIT map perf needs (/tmp/perf-<pid>.map,
 * written by the child) moves next to `file` as `<file>.map`: copy it back to look again with
 * `perf report -i <file>`.
 */
export async function summarizePerf(file: string, pid: number, top = 20): Promise<PerfSummary> {
  const r = spawnSync("perf", ["script", "-i", file, "-F", "ip,sym,dso"], {
    encoding: "utf8",
    maxBuffer: 1024 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`perf script ${file}: ${(r.stderr ?? "").trim()}`);
  const map = `/tmp/perf-${pid}.map`;
  await copyFile(map, `${file}.map`).catch(() => undefined);
  await rm(map, { force: true });
  return summarizeScript(r.stdout, top);
}

/** Summarises `perf script -F ip,sym,dso` output: one block of "<ip> <symbol> (<dso>)" lines, leaf first, per sample. */
export function summarizeScript(text: string, top = 20): PerfSummary {
  const owner = new Map<string, number>();
  const category = new Map<string, number>();
  const fn = new Map<string, number>();
  const inclusive = new Map<string, number>(INCLUSIVE.map((p) => [p.name, 0]));
  let samples = 0;
  const add = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
  const charge = (frames: Array<{ sym: string; dso: string }>): void => {
    if (frames.length === 0) return;
    samples++;
    const leaf = frames[0]!;
    add(category, categorize(leaf.sym, leaf.dso));
    add(fn, leaf.sym.replace(/^JS:[*^~]?/, "").slice(0, 120));
    for (const p of INCLUSIVE) if (frames.some((f) => p.frame.test(f.sym))) add(inclusive, p.name);
    for (const f of frames) {
      const m = FRAMEWORK.exec(f.sym);
      if (m !== null) return add(owner, `${m[1]}/${m[2]}`);
    }
    const js = frames.find((f) => f.sym.startsWith("JS:") && moduleOf(f.sym) !== undefined);
    add(
      owner,
      js !== undefined
        ? `(no framework frame) ${moduleOf(js.sym)!}`
        : `(no framework frame) ${categorize(leaf.sym, leaf.dso)}`,
    );
  };
  let frames: Array<{ sym: string; dso: string }> = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "") {
      charge(frames);
      frames = [];
      continue;
    }
    const m = /^[0-9a-f]+\s+(.*?)\s+\(([^)]*)\)$/.exec(t);
    if (m !== null) frames.push({ sym: m[1]!, dso: m[2]! });
  }
  charge(frames);
  const msPer = 1000 / PERF_HZ;
  const lines = (m: Map<string, number>, n: number): PerfLine[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, c]) => ({ name, cpuMs: Math.round(c * msPer), share: samples > 0 ? c / samples : 0 }));
  return {
    cpuMs: Math.round(samples * msPer),
    samples,
    byOwner: lines(owner, top),
    byCategory: lines(category, 20),
    byFunction: lines(fn, top),
    inclusive: lines(inclusive, INCLUSIVE.length),
  };
}

export function formatPerf(title: string, s: PerfSummary): string[] {
  const pct = (x: number): string => `${(x * 100).toFixed(1).padStart(5)}%`;
  const out = [
    `${title}: ${s.cpuMs} CPU ms (${s.samples} samples)`,
    "  by owner (nearest framework file on the stack):",
  ];
  for (const l of s.byOwner) out.push(`    ${pct(l.share)}  ${l.name}`);
  out.push("  by kind of work (leaf frame):");
  for (const l of s.byCategory) out.push(`    ${pct(l.share)}  ${l.name}`);
  out.push("  by function (self):");
  for (const l of s.byFunction.slice(0, 12)) out.push(`    ${pct(l.share)}  ${l.name}`);
  out.push("  inclusive (a frame anywhere on the stack):");
  for (const l of s.inclusive) out.push(`    ${pct(l.share)}  ${l.name}`);
  return out;
}
