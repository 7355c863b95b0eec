/**
 * Redrive on the durable buses, every part a real process or server: the trigger
 * (`ofevents trigger --bus-driver direct`) keeps the dead letters of a sink outage on its
 * dead-letter topic; `ofevents redrive` (a process of its own, killable) delivers them again once
 * the sink is back. See ./semantics-durable.ts for the broker, manifests and sinks.
 */
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import type { RedriveResult } from "@ofevents/trigger";
import { OFEVENTS_BIN } from "./helpers/ofevents.js";
import { waitFor } from "./helpers/wait.js";
import {
  allArrived,
  keyed,
  metric,
  useDurableEnv,
  type DurableBus,
  type DurableEnv,
  type Sink,
} from "./semantics-durable.js";
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";

const run = promisify(execFile);

export type RedriveReport = RedriveResult & { trigger: string };

/** `ofevents <command> ... --json` (redrive or replay); resolves with its exit code and result. */
export async function historyCli<R>(
  command: "redrive" | "replay",
  files: string[],
  args: string[],
): Promise<{ code: number; report: R }> {
  const r = await run(
    process.execPath,
    [OFEVENTS_BIN, command, ...files.flatMap((f) => ["-f", f]), "--json", "--log-format", "json", ...args],
    { timeout: 120_000 },
  ).then(
    (x) => ({ code: 0, stdout: x.stdout, stderr: x.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: e.code ?? -1,
      stdout: e.stdout ?? "",
      stderr: e.stderr ?? "",
    }),
  );
  const line = r.stdout.trim().split("\n").pop() ?? "";
  if (!line.startsWith("{")) throw new Error(`${command} exited ${r.code} without a result:\n${r.stdout}\n${r.stderr}`);
  return { code: r.code, report: JSON.parse(line) as R };
}

/** `ofevents redrive ... --json`. */
export function redriveCli(files: string[], args: string[]) {
  return historyCli<RedriveReport>("redrive", files, args);
}

/** How many times each id arrived at `sink`, and how many of those carried `ofredriven`. */
function arrivals(sink: Sink): { count: Map<string, number>; redriven: Map<string, number> } {
  const count = new Map<string, number>();
  const redriven = new Map<string, number>();
  for (const r of sink.received) {
    const id = String(r.headers["ce-id"]);
    count.set(id, (count.get(id) ?? 0) + 1);
    if (r.headers["ce-ofredriven"] !== undefined) redriven.set(id, (redriven.get(id) ?? 0) + 1);
  }
  return { count, redriven };
}

/**
 * A sink outage: subscriber 0's sink answers 503 until fixed, so each of 60 events is
 * dead-lettered (kept); subscriber 1's sink is fine. After the fix, a dry run lists the 60, a
 * redrive delivers each once to subscriber 0's sink and nothing to subscriber 1's, and a second
 * redrive finds them settled.
 */
export async function redriveAfterOutage(env: DurableEnv) {
  const broken = await env.sink();
  const fine = await env.sink();
  let down = true;
  broken.status = () => (down ? 503 : 200);
  const m = await env.manifests([
    `sink: { uri: "${broken.url}" }, delivery: { retry: 1, backoffDelay: 10ms }`,
    `sink: { uri: "${fine.url}" }`,
  ]);
  const p = await env.trigger(m.files, m.name);
  const sent = Array.from({ length: 60 }, (_, i) => keyed(`k${i % 4}`, i));
  await env.publish(m.topic, sent);
  await allArrived(fine, sent, 60_000, () => p.output());
  await waitFor(async () => (await metric(p, "ofevents_trigger_events_dead_lettered_total")) >= 60, {
    timeoutMs: 60_000,
    message: () => `60 dead letters\n${p.output()}`,
  });
  down = false;
  const brokenBefore = broken.received.length;
  const dry = await redriveCli(m.files, ["--dry-run", "--trigger", `default/${m.name}`]);
  const first = await redriveCli(m.files, ["--trigger", `default/${m.name}`]);
  const second = await redriveCli(m.files, ["--trigger", `default/${m.name}`]);
  await p.stop();
  const after = arrivals(broken);
  return {
    sent,
    dry,
    first,
    second,
    /** Deliveries to subscriber 0's sink after the fix (by the redrive). */
    redrivenArrivals: broken.received.slice(brokenBefore),
    brokenRedriven: after.redriven,
    fine: arrivals(fine),
  };
}

/**
 * A crash in the middle of a redrive: 80 dead letters, a slow sink, the redrive SIGKILLed after
 * about a third, then run again: every dead letter reaches the sink (lost = 0).
 */
export async function redriveAcrossKill(env: DurableEnv) {
  const sink = await env.sink();
  let down = true;
  sink.status = () => (down ? 503 : 200);
  const m = await env.manifests(`sink: { uri: "${sink.url}" }, delivery: { retry: 0 }`);
  const p = await env.trigger(m.files, m.name);
  const sent = Array.from({ length: 80 }, (_, i) => keyed(`k${i % 4}`, i));
  await env.publish(m.topic, sent);
  await waitFor(async () => (await metric(p, "ofevents_trigger_events_dead_lettered_total")) >= 80, {
    timeoutMs: 60_000,
    message: () => `80 dead letters\n${p.output()}`,
  });
  await p.stop();
  down = false;
  sink.delayMs = 40;
  const before = sink.received.length;
  const redrivenIds = (): string[] =>
    sink.received
      .slice(before)
      .filter((r) => r.headers["ce-ofredriven"] !== undefined)
      .map((r) => String(r.headers["ce-id"]));
  const child = spawn(
    process.execPath,
    [OFEVENTS_BIN, "redrive", ...m.files.flatMap((f) => ["-f", f]), "--json", "--trigger", `default/${m.name}`],
    { stdio: "ignore" },
  );
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  await waitFor(() => redrivenIds().length >= 25, { timeoutMs: 60_000, message: "a third of the redrive done" });
  child.kill("SIGKILL");
  await exited;
  const atKill = redrivenIds().length;
  const again = await redriveCli(m.files, ["--trigger", `default/${m.name}`]);
  const ids = redrivenIds();
  const got = new Set(ids);
  return {
    atKill,
    again: again.report,
    lost: sent.filter((e) => !got.has(e.id)).length,
    repeats: ids.length - got.size,
  };
}

/** The redrive tests on one durable bus (test/redrive-{jetstream,kafka}.test.ts). */
export function redriveSuite(bus: DurableBus): void {
  describe(`redrive on ${bus}`, () => {
    const env = useDurableEnv(bus);

    it(`redrive ${bus} - after a sink outage every dead letter is delivered exactly once to its subscriber and to no other; a second redrive finds them settled`, async () => {
      const r = await redriveAfterOutage(env());
      const ids = r.sent.map((e) => e.id).sort();
      expect(r.dry.code).toBe(0);
      expect(r.dry.report.matched).toBe(60);
      expect([...r.dry.report.ids].sort()).toEqual(ids);
      expect(r.first.code).toBe(0);
      expect(r.first.report).toMatchObject({ matched: 60, delivered: 60, deadLettered: 0, orphaned: 0 });
      // Subscriber 0's sink: each event once, by the redrive, marked ofredriven.
      expect(r.redrivenArrivals.map((a) => String(a.headers["ce-id"])).sort()).toEqual(ids);
      for (const a of r.redrivenArrivals) {
        expect(a.headers["ce-ofredriven"]).toMatch(/^\d{4}-\d\d-\d\dT/);
        expect(a.headers["ce-oferrorreason"]).toBeUndefined();
      }
      // Subscriber 1's sink: each event once, never redriven.
      expect([...r.fine.count.keys()].sort()).toEqual(ids);
      expect([...r.fine.count.values()].every((n) => n === 1)).toBe(true);
      expect(r.fine.redriven.size).toBe(0);
      expect(r.second.report).toMatchObject({ read: 60, settled: 60, matched: 0, delivered: 0 });
      reportFigures(
        `redrive ${bus} after an outage: 60 dead letters, ${r.first.report.delivered} redriven, a second redrive settled ${r.second.report.settled}`,
      );
    }, 240_000);

    it(`redrive ${bus} - a SIGKILL of the redrive midway loses nothing: the next redrive delivers the rest`, async () => {
      const r = await redriveAcrossKill(env());
      expect(r.lost).toBe(0);
      expect(r.again.deadLettered).toBe(0);
      expect(r.repeats).toBeLessThanOrEqual(1);
      reportFigures(
        `redrive ${bus} across SIGKILL: 80 dead letters, ${r.atKill} redriven at the kill, lost ${r.lost}, ${r.repeats} repeats`,
      );
    }, 240_000);
  });
}
