/** `ofevents replay` on the jetstream bus, the live trigger and the replay real processes (see ./replay-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { replayRange } from "./replay-durable.js";
import { useDurableEnv } from "./semantics-durable.js";

describe("replay on jetstream", () => {
  const env = useDurableEnv("jetstream");

  it("replay jetstream - a time range is delivered again (the exact id set, marked, transformed), the live trigger unaffected", async () => {
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
      `replay jetstream: range of 30 of 100 events replayed, ${r.replayed.report.delivered} delivered, live trigger unaffected`,
    );
  }, 240_000);
});
