/** The controller's own metrics (docs/metrics.md lists each), in the Prometheus text format. */
import type { ReconcileResult } from "./reconcile.js";
import { KIND_NAMES } from "./resources.js";

export const CONTROLLER_METRICS = {
  reconciles: {
    name: "ofevents_controller_reconciles_total",
    type: "counter",
    help: "Reconciles by kind and result (success: applied and Ready True or a bus status written; invalid: Ready False; error: an API failure, requeued with backoff).",
  },
  errors: {
    name: "ofevents_controller_reconcile_errors_total",
    type: "counter",
    help: "Reconciles that failed on an API error, by kind (requeued with backoff).",
  },
  depth: {
    name: "ofevents_controller_workqueue_depth",
    type: "gauge",
    help: "Keys waiting in the work queue (not counting those waiting out a backoff).",
  },
  leader: {
    name: "ofevents_controller_leader",
    type: "gauge",
    help: "1 while this replica holds the Lease and reconciles, 0 on standby.",
  },
  informersSynced: {
    name: "ofevents_controller_informers_synced",
    type: "gauge",
    help: "1 once every informer has listed its objects, else 0.",
  },
} as const;

/** The gauges, read when the metrics are served. */
export interface ControllerState {
  depth: number;
  leader: boolean;
  synced: boolean;
}

/** Counts reconciles by kind and result; every series exists from the start, at 0. */
export class ControllerMetrics {
  readonly #reconciles = new Map<string, number>();
  readonly #errors = new Map<string, number>();

  constructor(private readonly state: () => ControllerState) {
    for (const kind of KIND_NAMES) {
      for (const result of ["success", "invalid", "error"] as const) this.#reconciles.set(`${kind}\0${result}`, 0);
      this.#errors.set(kind, 0);
    }
  }

  count(kind: string, result: ReconcileResult): void {
    const k = `${kind}\0${result}`;
    this.#reconciles.set(k, (this.#reconciles.get(k) ?? 0) + 1);
    if (result === "error") this.#errors.set(kind, (this.#errors.get(kind) ?? 0) + 1);
  }

  text(): string {
    const m = CONTROLLER_METRICS;
    const { depth, leader, synced } = this.state();
    const head = (d: { name: string; type: string; help: string }): string =>
      `# HELP ${d.name} ${d.help}\n# TYPE ${d.name} ${d.type}\n`;
    let out = head(m.reconciles);
    for (const [k, v] of this.#reconciles) {
      const [kind, result] = k.split("\0");
      out += `${m.reconciles.name}{kind="${kind}",result="${result}"} ${v}\n`;
    }
    out += head(m.errors);
    for (const [kind, v] of this.#errors) out += `${m.errors.name}{kind="${kind}"} ${v}\n`;
    out += `${head(m.depth)}${m.depth.name} ${depth}\n`;
    out += `${head(m.leader)}${m.leader.name} ${leader ? 1 : 0}\n`;
    out += `${head(m.informersSynced)}${m.informersSynced.name} ${synced ? 1 : 0}\n`;
    return out;
  }
}
