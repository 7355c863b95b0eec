/** A subscriber's `ordering` on the kafka bus, the trigger a real process (see ./semantics-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { useDurableEnv, orderingAcrossKill, orderingUnderConcurrency } from "./semantics-durable.js";

describe("ordering on kafka", () => {
  const env = useDurableEnv("kafka");

  it("ordering kafka - with a sink of random latency, each key's events arrive in bus order while keys go in parallel", async () => {
    const { peak } = await orderingUnderConcurrency(env());
    expect(peak).toBeGreaterThan(1);
    expect(peak).toBeLessThanOrEqual(4);
  }, 120_000);

  it("ordering kafka - across a SIGKILL of the trigger and a restart, each key's first deliveries stay in bus order and nothing is lost", async () => {
    const r = await orderingAcrossKill(env());
    reportFigures(
      `ordering kafka across SIGKILL: 600 events, ${r.total} deliveries (${r.repeats} repeats after the kill), order per key kept`,
    );
  }, 240_000);
});
