/**
 * Smoke run of the benchmark harness (`bench/run.ts --quick`): every scenario runs with tiny
 * counts against the built packages, and the JSON it writes has the documented shape. The
 * figures of a quick run mean nothing, so nothing here is timed. E2..E5 and P1 start real
 * brokers (nats-server, Kafka, daprd) and P1 Argo Events, all from `npm run test:setup`, so the
 * run takes a few minutes.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBench(args: string[], timeoutMs: number, script = "bench/run.ts"): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} --quick did not finish within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const FIGURES = [
  "ratio",
  "eventsPerSec",
  "baselineEventsPerSec",
  "p50Ms",
  "p99Ms",
  "baselineP50Ms",
  "baselineP99Ms",
  "cpuSecPer10k",
  "baselineCpuSecPer10k",
] as const;

describe("bench - quick run of the harness", () => {
  let dir: string;
  let run: Run;
  let json: Record<string, unknown>;

  beforeAll(async () => {
    if (!existsSync(join(root, "packages/cli/dist/index.js")))
      throw new Error("packages are not built: run `npm run build`");
    dir = await mkdtemp(join(tmpdir(), "ofevents-bench-test-"));
    const out = join(dir, "quick.json");
    run = await runBench(["--quick", "--out", out], 540_000);
    if (run.code !== 0) throw new Error(`bench --quick exited ${run.code}:\n${run.stdout}\n${run.stderr}`);
    json = JSON.parse(await readFile(out, "utf8")) as Record<string, unknown>;
  }, 600_000);

  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("bench - describes the machine and the versions measured", () => {
    const machine = json["machine"] as Record<string, unknown>;
    expect(machine["cores"]).toBeTypeOf("number");
    expect(machine["nodeVersion"]).toBe(process.version);
    expect(machine["cpuModel"]).toBeTypeOf("string");
    const versions = json["versions"] as Record<string, unknown>;
    expect(versions["@ofevents/core"]).toBeTypeOf("string");
    expect(versions["jsonata"]).toBeTypeOf("string");
  });

  it("bench - reports every scenario with figures, a ratio in (0, 10) and judged goals", () => {
    const scenarios = json["scenarios"] as Array<Record<string, unknown>>;
    expect(scenarios.map((s) => s["id"])).toEqual(["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9", "P1", "R1"]);
    expect(json["failures"]).toEqual([]);
    for (const s of scenarios) {
      for (const k of FIGURES) {
        const v = s[k];
        expect(
          v === null || (typeof v === "number" && Number.isFinite(v)),
          `${String(s["id"])}.${k} = ${String(v)}`,
        ).toBe(true);
      }
      const ratio = s["ratio"];
      expect(typeof ratio === "number" && ratio > 0 && ratio < 10, `${String(s["id"])}.ratio = ${String(ratio)}`).toBe(
        true,
      );
      const goals = s["goals"] as Array<Record<string, unknown>>;
      expect(goals.length).toBeGreaterThan(0);
      for (const g of goals) expect([true, false, null]).toContain(g["pass"]);
    }
    const e1 = scenarios.find((s) => s["id"] === "E1")!;
    for (const k of FIGURES) expect(e1[k], `E1.${k}`).toBeTypeOf("number");
    for (const id of ["E2", "E3", "E4", "E8", "E9", "P1"]) {
      const e = scenarios.find((s) => s["id"] === id)!;
      for (const k of FIGURES) expect(e[k], `${id}.${k}`).toBeTypeOf("number");
    }
    const e2 = scenarios.find((s) => s["id"] === "E2")!;
    const sweep = (e2["extra"] as Record<string, unknown>)["sizeSweep"] as Array<{
      bytes: number;
      count: number;
      runs: Record<string, Array<{ complete: boolean; delivered: number }>>;
    }>;
    expect(sweep.map((p) => p.bytes)).toEqual([100, 10_240, 262_144]);
    for (const p of sweep) {
      expect(Object.keys(p.runs)).toEqual(["framework", "baseline"]);
      for (const [side, runs] of Object.entries(p.runs)) {
        expect(runs.length, `E2 sweep ${p.bytes} B ${side}`).toBeGreaterThanOrEqual(3);
        for (const m of runs) {
          expect(m.complete, `E2 sweep ${p.bytes} B ${side} complete`).toBe(true);
          expect(m.delivered).toBe(Math.ceil(p.count / 2));
        }
      }
    }
    const e4 = (scenarios.find((s) => s["id"] === "E4")!["extra"] ?? {}) as Record<string, unknown>;
    const peer = e4["secondPeer"] as Record<string, unknown>;
    expect(peer["eventsPerSec"]).toBeTypeOf("number");
    expect(peer["frameworkRatio"]).toBeTypeOf("number");
    const e4count = (e4["sizes"] as { count: number }).count;
    // The routing rule let exactly the passing half through, once each.
    for (const m of (e4["throughputRuns"] as Record<string, Array<Record<string, unknown>>>)["daprRules"]!) {
      expect(m["delivered"]).toBe(Math.ceil(e4count / 2));
      expect(m["duplicates"]).toBe(0);
    }
    const r1 = scenarios.find((s) => s["id"] === "R1")!;
    // One JetStream durable consumer, then one Kafka group, each shared by 1, 2 and 4 replicas.
    for (const bus of ["replicas", "kafkaReplicas"]) {
      const points = (r1["extra"] as Record<string, unknown>)[bus] as Array<{
        replicas: number;
        replicaCpuShares: number[];
        runs: Array<{ complete: boolean; duplicates: number }>;
      }>;
      expect(
        points.map((p) => p.replicas),
        bus,
      ).toEqual([1, 2, 4]);
      for (const p of points) {
        expect(p.replicaCpuShares).toHaveLength(p.replicas);
        for (const m of p.runs) expect(m.complete && m.duplicates === 0, `R1 ${bus} ${p.replicas} replicas`).toBe(true);
      }
    }
    expect((r1["goals"] as unknown[]).length).toBe(2);
    const e5 = scenarios.find((s) => s["id"] === "E5")!;
    const drivers = (e5["extra"] as Record<string, unknown>)["drivers"] as Record<string, Record<string, unknown>>;
    expect(Object.keys(drivers)).toEqual(["jetstream", "kafka", "dapr"]);
    for (const d of Object.values(drivers)) expect(d["ratio"]).toBeTypeOf("number");
    expect((e5["goals"] as unknown[]).length).toBe(3);
    const p1 = scenarios.find((s) => s["id"] === "P1")!;
    const fault = (p1["extra"] as Record<string, unknown>)["fault"] as { runs: Array<Record<string, unknown>> };
    expect(fault.runs.map((x) => x["side"])).toEqual(["argo atLeastOnce false", "argo atLeastOnce true", "framework"]);
    for (const x of fault.runs) {
      expect(x["accepted"], `P1 fault ${String(x["side"])}`).toBe(x["sent"]);
      expect(x["lost"]).toBeTypeOf("number");
      expect(x["duplicates"]).toBeTypeOf("number");
    }
    const e6 = scenarios.find((s) => s["id"] === "E6")!;
    expect((e6["extra"] as Record<string, unknown>)["filterShareOfE1Cpu"]).toBeTypeOf("number");
  });

  it("bench - prints the table and a PASS or MISS per goal", () => {
    expect(run.stdout).toMatch(/^id\s+events\/s\s+baseline\s+ratio/m);
    expect(run.stdout).toMatch(/^\s+(PASS|MISS)\s+E1 throughput ratio/m);
    expect(run.stdout).toMatch(/^\s+(PASS|MISS)\s+E7 /m);
    for (const id of ["E2", "E3", "E4", "P1"])
      expect(run.stdout).toMatch(new RegExp(`^\\s+(PASS|MISS)\\s+${id} throughput ratio`, "m"));
    expect(run.stdout).toMatch(/^\s+(PASS|MISS)\s+E5 kafka driver ratio/m);
    expect(run.stdout).toMatch(/^E2 event size sweep/m);
    expect(run.stdout).toMatch(/^\s+262144 B\s+framework \d+ @/m);
  });
});

describe("bench - parts of E1's path", () => {
  it("bench - parts --quick measures the ingest, the trigger path and the sink client against their plain counterparts", async () => {
    const run = await runBench(["--quick"], 120_000, "bench/parts.ts");
    expect(run.code, run.stderr).toBe(0);
    const micros = (label: string): number => {
      const m = new RegExp(`^${label}.*?\\s([\\d.]+) µs`, "m").exec(run.stdout);
      expect(m, `${label} in:\n${run.stdout}`).not.toBeNull();
      return Number(m![1]);
    };
    for (const label of [
      "ingest: webhook source",
      "ingest: plain node server",
      "trigger: bus → trigger → stub",
      "sink: sink client",
      "sink: undici",
    ])
      expect(micros(label)).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/^ingest: webhook \/ plain [\d.]+x$/m);
    expect(run.stdout).toMatch(/^sink: client \/ undici [\d.]+x$/m);
    // A part that does not exist is refused, not skipped.
    const bad = await runBench(["nothing"], 60_000, "bench/parts.ts");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unknown part\(s\): nothing/);
  }, 180_000);
});
