/** A subscriber's `dedup` on the kafka bus, the trigger a real process (see ./semantics-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { useDurableEnv, dedupAcrossKill } from "./semantics-durable.js";

describe("dedup on kafka", () => {
  const env = useDurableEnv("kafka");

  it("dedup kafka - the seen set survives a SIGKILL of the trigger: no repeat of a delivered order is delivered after the restart", async () => {
    const r = await dedupAcrossKill(env());
    expect(r.repeatsDelivered).toBe(0);
    reportFigures(
      `dedup kafka across SIGKILL: 200 orders, 200 repeats, ${r.repeatsDelivered} repeats delivered, ${r.duplicates} redeliveries of events in flight at the kill`,
    );
  }, 240_000);
});
