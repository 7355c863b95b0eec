/**
 * Replay on the durable buses: a live trigger (`ofevents trigger --bus-driver direct`) delivers
 * three batches of events; `ofevents replay` (a process of its own) replays the time range of the
 * middle one. See ./semantics-durable.ts for the broker, manifests and sinks.
 */
import type { ReplayResult } from "@ofevents/trigger";
import { historyCli } from "./redrive-durable.js";
import { allArrived, keyed, useDurableEnv, type DurableBus, type DurableEnv } from "./semantics-durable.js";
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `ofevents replay ... --json`. */
export function replayCli(files: string[], args: string[]) {
  return historyCli<ReplayResult & { trigger: string }>("replay", files, args);
}

/**
 * Batches A (40), B (30) and C (20) a second apart, delivered live; a dry run from the start of
 * B lists B and C; a replay of B's range delivers B again, marked; then D (10) is delivered live
 * once: the live trigger was not affected.
 */
export async function replayRange(env: DurableEnv) {
  const sink = await env.sink();
  const m = await env.manifests(`sink: { uri: "${sink.url}" }, transform: '$merge([data, { "seen": true }])'`);
  const p = await env.trigger(m.files, m.name);
  const batch = (tag: string, n: number) => Array.from({ length: n }, (_, i) => keyed(`${tag}${i % 3}`, i));
  const [a, b, c, d] = [batch("a", 40), batch("b", 30), batch("c", 20), batch("d", 10)];
  await env.publish(m.topic, a);
  await allArrived(sink, a, 60_000, () => p.output());
  await pause(1_100);
  const t1 = new Date();
  await pause(1_100);
  await env.publish(m.topic, b);
  await allArrived(sink, b, 60_000, () => p.output());
  await pause(1_100);
  const t2 = new Date();
  await pause(1_100);
  await env.publish(m.topic, c);
  await allArrived(sink, c, 60_000, () => p.output());
  const trigger = ["--trigger", `default/${m.name}`];
  const dry = await replayCli(m.files, [...trigger, "--from", t1.toISOString(), "--dry-run"]);
  const live = sink.received.length;
  const replayed = await replayCli(m.files, [...trigger, "--from", t1.toISOString(), "--to", t2.toISOString()]);
  const byReplay = sink.received.slice(live);
  await env.publish(m.topic, d);
  await allArrived(sink, d, 60_000, () => p.output());
  await pause(500);
  await p.stop();
  const count = new Map<string, number>();
  for (const r of sink.received) {
    const id = String(r.headers["ce-id"]);
    count.set(id, (count.get(id) ?? 0) + 1);
  }
  return { a, b, c, d, dry, replayed, byReplay, count };
}

/** The replay tests on one durable bus (test/replay-{jetstream,kafka}.test.ts). */
export function replaySuite(bus: DurableBus): void {
  describe(`replay on ${bus}`, () => {
    const env = useDurableEnv(bus);

    it(`replay ${bus} - a time range is delivered again (the exact id set, marked, transformed), the live trigger unaffected`, async () => {
      const r = await replayRange(env());
      const ids = (xs: ReadonlyArray<{ id: string }>) => xs.map((e) => e.id).sort();
      expect(r.dry.report.ids.slice().sort()).toEqual([...ids(r.b), ...ids(r.c)].sort());
      expect(r.replayed.code).toBe(0);
      expect(r.replayed.report).toMatchObject({ read: 30, replayed: 30, delivered: 30, complete: true });
      expect(r.byReplay.map((x) => String(x.headers["ce-id"])).sort()).toEqual(ids(r.b));
      for (const x of r.byReplay) {
        expect(x.headers["ce-ofreplayed"]).toMatch(/^\d{4}-\d\d-\d\dT/);
        expect(x.data).toMatchObject({ seen: true });
      }
      // Live: A, C and D once each; B once live and once replayed.
      for (const e of [...r.a, ...r.c, ...r.d]) expect(r.count.get(e.id)).toBe(1);
      for (const e of r.b) expect(r.count.get(e.id)).toBe(2);
      reportFigures(
        `replay ${bus}: range of 30 of 100 events replayed, ${r.replayed.report.delivered} delivered, live trigger unaffected`,
      );
    }, 240_000);
  });
}
