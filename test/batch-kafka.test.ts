/** A subscriber's `batch` on the kafka bus, the trigger a real process (see ./semantics-durable.ts). */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { DurableEnv, batchAcrossKill } from "./semantics-durable.js";

describe("batch on kafka", () => {
  let env: DurableEnv;
  beforeAll(async () => {
    env = await DurableEnv.start("kafka");
  }, 120_000);
  afterAll(async () => {
    await env?.stop();
  }, 60_000);

  it("batch kafka - a SIGKILL of the trigger mid-batch loses nothing: every event arrives in some batch after the restart", async () => {
    const r = await batchAcrossKill(env);
    expect(r.lost).toBe(0);
    reportFigures(
      `batch kafka across SIGKILL: 600 events in ${r.batches} batches, lost ${r.lost}, ${r.repeats} repeats`,
    );
  }, 240_000);
});
