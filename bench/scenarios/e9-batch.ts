/**
 * E9 batch: E2's pipeline with `batch: { maxEvents: 100, maxWait: 20ms }` on the subscriber (the
 * sink gets CloudEvents batch requests; it counts each member), against the same pipeline without
 * it, in the same run: what batching costs or saves. Latency includes up to `maxWait` by design.
 */
import { shapedScenario } from "../lib/shaped.js";

export default shapedScenario({
  id: "E9",
  title: "E2 with batch (100 events or 20 ms) against E2 without",
  feature: "      batch: { maxEvents: 100, maxWait: 20ms }",
  goals: (r) => [
    { name: "E9 batch throughput ratio", target: ">= 1.0", value: r.ratio!.toFixed(2), pass: r.ratio! >= 1 },
  ],
});
