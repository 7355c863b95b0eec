/** A subscriber's `batch` on the jetstream bus, the trigger a real process (see ./semantics-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { useDurableEnv, batchAcrossKill } from "./semantics-durable.js";

describe("batch on jetstream", () => {
  const env = useDurableEnv("jetstream");

  it("batch jetstream - a SIGKILL of the trigger mid-batch loses nothing: every event arrives in some batch after the restart", async () => {
    const r = await batchAcrossKill(env());
    expect(r.lost).toBe(0);
    reportFigures(
      `batch jetstream across SIGKILL: 600 events in ${r.batches} batches, lost ${r.lost}, ${r.repeats} repeats`,
    );
  }, 240_000);
});
