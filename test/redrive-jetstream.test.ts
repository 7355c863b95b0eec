/** `ofevents redrive` on the jetstream bus, the trigger and the redrive real processes (see ./redrive-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { redriveAcrossKill, redriveAfterOutage } from "./redrive-durable.js";
import { useDurableEnv } from "./semantics-durable.js";

describe("redrive on jetstream", () => {
  const env = useDurableEnv("jetstream");

  it("redrive jetstream - after a sink outage every dead letter is delivered exactly once to its subscriber and to no other; a second redrive finds them settled", async () => {
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
      `redrive jetstream after an outage: 60 dead letters, ${r.first.report.delivered} redriven, a second redrive settled ${r.second.report.settled}`,
    );
  }, 240_000);

  it("redrive jetstream - a SIGKILL of the redrive midway loses nothing: the next redrive delivers the rest", async () => {
    const r = await redriveAcrossKill(env());
    expect(r.lost).toBe(0);
    expect(r.again.deadLettered).toBe(0);
    expect(r.repeats).toBeLessThanOrEqual(1);
    reportFigures(
      `redrive jetstream across SIGKILL: 80 dead letters, ${r.atKill} redriven at the kill, lost ${r.lost}, ${r.repeats} repeats`,
    );
  }, 240_000);
});
