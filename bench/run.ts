/**
 * `npm run bench`: runs every scenario in bench/scenarios (each file's default export is a
 * `Scenario`), prints a table and the goals on stdout, progress on stderr, and writes
 * bench/results/latest.json. A figure is only printed beside its baseline, measured in the same
 * run on the same machine.
 *
 *   --quick            small counts (a smoke run; figures meaningless), writes results/quick.json
 *   --only E1,E6       run only these scenarios
 *   --runs N           repetitions of each timed measurement (default 3, at least 3)
 *   --out FILE         where the JSON goes
 *   --profile          child processes write V8 CPU profiles (to --profile-dir, default a new
 *                      folder in the OS temp dir); a summary of each is printed
 *   --perf             the same children sampled by perf (CPU time only, kernel included; needs
 *                      `perf`), each sample charged to the nearest framework file on its stack
 *   --log-level LEVEL  log level of the framework processes (default warn)
 *   --node-flags="..." extra node flags for every child process (framework and baseline alike),
 *                      e.g. --node-flags=--trace-gc (the lines go to the child's log, which is kept)
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { formatPerf, perfAvailable, summarizePerf, type PerfSummary } from "./lib/perf.js";
import { formatProfile, summarizeProfile, type ProfileSummary } from "./lib/profile.js";
import { killAllChildren, repoRoot, spawnChild } from "./lib/proc.js";
import type { Scenario, ScenarioContext, ScenarioResult } from "./lib/types.js";

const { values: opts } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    runs: { type: "string" },
    out: { type: "string" },
    profile: { type: "boolean", default: false },
    perf: { type: "boolean", default: false },
    "profile-dir": { type: "string" },
    "log-level": { type: "string", default: "warn" },
    "node-flags": { type: "string", default: "" },
    help: { type: "boolean", default: false },
  },
});

if (opts.help) {
  process.stdout.write(
    "usage: bench/run.ts [--quick] [--only E1,E6] [--runs N] [--out FILE] [--profile] [--perf] [--profile-dir DIR] [--log-level warn] [--node-flags=--trace-gc]\n",
  );
  process.exit(0);
}

const log = (line: string): void => {
  process.stderr.write(`[bench] ${line}\n`);
};

process.on("exit", killAllChildren);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAllChildren();
    process.exit(130);
  });
}

async function loadScenarios(): Promise<Array<{ file: string; scenario: Scenario }>> {
  const dir = join(repoRoot, "bench", "scenarios");
  const files = (await readdir(dir)).filter((f) => f.endsWith(".ts")).sort();
  const out: Array<{ file: string; scenario: Scenario }> = [];
  for (const f of files) {
    const file = join(dir, f);
    const mod = (await import(pathToFileURL(file).href)) as { default?: Scenario };
    if (mod.default === undefined || typeof mod.default.run !== "function")
      throw new Error(`${f}: the default export is not a Scenario`);
    out.push({ file, scenario: mod.default });
  }
  return out;
}

function versionOf(pkgJson: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(pkgJson, "utf8")) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cores: os.availableParallelism(),
    nodeVersion: process.version,
    cpuModel: cpus[0]?.model ?? "unknown",
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    loadAvgAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

function versions(): Record<string, unknown> {
  const v: Record<string, unknown> = {};
  for (const p of ["core", "eventbus", "eventsource", "trigger", "cli"])
    v[`@ofevents/${p}`] = versionOf(join(repoRoot, "packages", p, "package.json"));
  for (const p of ["jsonata", "undici", "cloudevents", "pino"])
    v[p] = versionOf(join(repoRoot, "node_modules", p, "package.json"));
  const commit = git(["rev-parse", "--short", "HEAD"]);
  const dirty = git(["status", "--porcelain", "--untracked-files=no"]);
  v["git"] = commit === undefined ? undefined : `${commit}${dirty === "" ? "" : " (uncommitted changes)"}`;
  return v;
}

function fmt(x: number | null, digits: number): string {
  if (x === null || !Number.isFinite(x)) return "-";
  return x.toFixed(digits);
}

function table(results: ScenarioResult[]): string[] {
  const head = [
    "id",
    "events/s",
    "baseline",
    "ratio",
    "p50 ms",
    "p99 ms",
    "base p50",
    "base p99",
    "CPU s/10k",
    "base CPU s/10k",
  ];
  const rows = results.map((r) => [
    r.id,
    fmt(r.eventsPerSec, 0),
    fmt(r.baselineEventsPerSec, 0),
    r.ratio !== null && r.ratio > 0 && r.ratio < 0.01 ? r.ratio.toPrecision(2) : fmt(r.ratio, 3),
    fmt(r.p50Ms, 2),
    fmt(r.p99Ms, 2),
    fmt(r.baselineP50Ms, 2),
    fmt(r.baselineP99Ms, 2),
    fmt(r.cpuSecPer10k, 3),
    fmt(r.baselineCpuSecPer10k, 3),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
}

async function main(): Promise<number> {
  const started = performance.now();
  const runs = Math.max(3, Number(opts.runs ?? 3) || 3);
  const nodeFlags = opts["node-flags"].split(/\s+/).filter((f) => f !== "");
  const only = opts.only
    ?.split(",")
    .map((s) => s.trim().toUpperCase())
    .filter((s) => s !== "");
  const outFile = resolve(opts.out ?? join(repoRoot, "bench", "results", opts.quick ? "quick.json" : "latest.json"));
  if (opts.perf) {
    const why = perfAvailable();
    if (why !== undefined) throw new Error(`--perf: ${why}`);
  }
  const profileRoot =
    opts.profile || opts.perf
      ? resolve(
          opts["profile-dir"] ??
            join(tmpdir(), `ofevents-bench-profiles-${new Date().toISOString().replace(/[:.]/g, "-")}`),
        )
      : undefined;

  const all = await loadScenarios();
  const chosen = only === undefined ? all : all.filter((s) => only.includes(s.scenario.id.toUpperCase()));
  if (only !== undefined) {
    const unknown = only.filter((id) => !all.some((s) => s.scenario.id.toUpperCase() === id));
    if (unknown.length > 0)
      throw new Error(`unknown scenario(s) ${unknown.join(", ")}; known: ${all.map((s) => s.scenario.id).join(", ")}`);
  }

  const header = {
    machine: machine(),
    versions: versions(),
    options: { quick: opts.quick, runs, logLevel: opts["log-level"], only: only ?? null, nodeFlags },
  };
  log(
    `${header.machine["cores"] as number} cores, ${header.machine["cpuModel"] as string}, node ${process.version}, load ${JSON.stringify(header.machine["loadAvgAtStart"])}`,
  );

  const results = new Map<string, ScenarioResult>();
  const failures: Array<{ id: string; error: string }> = [];
  const profiles: Record<string, ProfileSummary> = {};
  const perfProfiles: Record<string, PerfSummary> = {};
  const describeLines: string[] = [];
  for (const { file, scenario } of chosen) {
    const t0 = performance.now();
    log(`${scenario.id}: ${scenario.title}`);
    const profileDirs: Array<{ role: string; dir: string }> = [];
    const perfFiles: Array<{ role: string; key: string; file: string; pid: number }> = [];
    const ctx: ScenarioContext = {
      quick: opts.quick,
      runs,
      logLevel: opts["log-level"],
      profileDir: profileRoot,
      results,
      perfProfiles,
      log,
      async spawn(role, args, o = {}) {
        const wanted = profileRoot !== undefined && o.profile === true;
        const dir = wanted && opts.profile ? join(profileRoot, `${scenario.id}-${role}`) : undefined;
        if (dir !== undefined) {
          await mkdir(dir, { recursive: true });
          if (!profileDirs.some((d) => d.dir === dir)) profileDirs.push({ role, dir });
        }
        let perfFile: string | undefined;
        let key = "";
        if (wanted && opts.perf) {
          await mkdir(profileRoot, { recursive: true });
          const same = perfFiles.filter((f) => f.role === role).length;
          key = `${scenario.id}-${role}${same > 0 ? `#${same + 1}` : ""}`;
          perfFile = join(profileRoot, `${key.replace(/[^\w.#-]/g, "_")}.perf.data`);
        }
        const child = await spawnChild({
          scenarioFile: file,
          role,
          args,
          cpuProfDir: dir,
          perfFile,
          env: o.env,
          nodeFlags,
        });
        if (perfFile !== undefined) perfFiles.push({ role, key, file: perfFile, pid: child.pid });
        return child;
      },
    };
    try {
      const r = await scenario.run(ctx);
      results.set(r.id, r);
      describeLines.push(...(scenario.describe?.(r) ?? []));
      log(`${scenario.id} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
      failures.push({ id: scenario.id, error: msg });
      log(`${scenario.id} FAILED: ${msg}`);
    }
    for (const { role, dir } of profileDirs) {
      const files = (await readdir(dir)).filter((x) => x.endsWith(".cpuprofile")).sort();
      for (const [i, f] of files.entries()) {
        const key = `${scenario.id}-${role}${files.length > 1 ? `#${i + 1}` : ""}`;
        profiles[key] = await summarizeProfile(join(dir, f), 20);
        describeLines.push("", ...formatProfile(`profile ${key} (${join(dir, f)})`, profiles[key]));
      }
    }
    for (const { key, file: f, pid } of perfFiles) {
      perfProfiles[key] = await summarizePerf(f, pid, 25);
      describeLines.push("", ...formatPerf(`perf ${key} (${f})`, perfProfiles[key]));
    }
  }

  const list = [...results.values()];
  const out: string[] = ["", ...table(list), ""];
  const goals = list.flatMap((r) => r.goals);
  if (goals.length > 0) {
    out.push("goals:");
    for (const g of goals)
      out.push(`  ${g.pass === null ? "N/A " : g.pass ? "PASS" : "MISS"}  ${g.name} ${g.target}: ${g.value}`);
  }
  const notes = list.flatMap((r) => r.notes.map((n) => `  ${r.id}: ${n}`));
  if (notes.length > 0) out.push("notes:", ...notes);
  out.push(...describeLines);
  for (const f of failures) out.push(`FAILED ${f.id}: ${f.error.split("\n")[0]}`);
  process.stdout.write(`${out.join("\n")}\n`);

  const json = {
    ...header,
    startedAt: new Date(Date.now() - (performance.now() - started)).toISOString(),
    durationSec: Number(((performance.now() - started) / 1000).toFixed(1)),
    scenarios: list,
    failures,
    ...(Object.keys(profiles).length > 0 ? { profiles } : {}),
    ...(Object.keys(perfProfiles).length > 0 ? { perfProfiles } : {}),
  };
  await mkdir(dirname(outFile), { recursive: true });
  await writeFile(outFile, `${JSON.stringify(json, null, 2)}\n`);
  log(`wrote ${relative(process.cwd(), outFile)}`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    killAllChildren();
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killAllChildren();
    process.exit(1);
  },
);
