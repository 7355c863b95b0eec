/** A subscriber's `delivery.rateLimit` on the kafka bus, the trigger a real process (see ./semantics-durable.ts). */
import { describe, expect, it } from "vitest";
import { reportFigures } from "./helpers/report.js";
import { useDurableEnv, rateLimitMeasured } from "./semantics-durable.js";

describe("rate-limit on kafka", () => {
  const env = useDurableEnv("kafka");

  it("rate-limit kafka - a burst far above the limit is delivered whole, and the sink never sees more than perSecond + burst in any 1-second window", async () => {
    const r = await rateLimitMeasured(env());
    expect(r.delivered).toBe(150);
    expect(r.busiest).toBeLessThanOrEqual(30);
    // (150 - 5) tokens at 25/s: about 5.8 s from the first request to the last.
    expect(r.spanMs).toBeGreaterThan(5_000);
    expect(r.throttledSec).toBeGreaterThan(0);
    reportFigures(
      `rate-limit kafka: 150 events in ${(r.spanMs / 1000).toFixed(1)} s, busiest 1 s window ${r.busiest} (limit 25 + burst 5), throttled ${r.throttledSec.toFixed(1)} s`,
    );
  }, 180_000);
});
