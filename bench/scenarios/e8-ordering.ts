/**
 * E8 ordering: E2's pipeline with `ordering: { key: data.order.customer.id }` on the subscriber
 * (50 keys among the passing events; `delivery.concurrency` the default 16 on both sides), against
 * the same pipeline without it, in the same run: what per-key ordering costs.
 */
import { shapedScenario } from "../lib/shaped.js";

export default shapedScenario({
  id: "E8",
  title: "E2 with per-key ordering (50 keys) against E2 without",
  feature: "      ordering: { key: data.order.customer.id }",
  goals: (r) => [
    { name: "E8 ordering throughput ratio", target: ">= 0.8", value: r.ratio!.toFixed(2), pass: r.ratio! >= 0.8 },
  ],
});
