/**
 * Prometheus metrics fed by the runtimes' instrumentation events (STYLE.md item 12): a runner
 * creates one `Metrics` and attaches every EventSource, Trigger and bus it starts. Core may not
 * import the packages that emit these events, so their shapes are declared here structurally;
 * the real `SourceEvents`, `TriggerEvents` and `BusEvents` are assignable to them. Labels hold only
 * names from the manifests (namespace, resource, event, input, subscriber index, target), never an
 * event id, so their number stays bounded. docs/metrics.md lists every metric.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { sendBody } from "./http.js";

/** The part of an `Instrumentation<E>` that metrics need. */
export interface Observable<E> {
  on<K extends keyof E>(type: K, listener: (payload: E[K]) => void): () => void;
}

/** What metrics read of an EventSource runtime's events (a subset of `SourceEvents`). */
export interface SourceMetricEvents {
  dispatched: { event: string };
  published: { event: string };
  delivered: { event: string };
  failed: { event: string };
  started: { event: string };
  start_failed: { event: string };
  rejected: { event: string; reason: string };
}

/** What metrics read of a Trigger runtime's events (a subset of `TriggerEvents`). */
export interface TriggerMetricEvents {
  received: { input: string };
  filtered: { input?: string | undefined; subscriber?: number | undefined; reason: string };
  pending: { subscriber: number; input: string };
  consumed: { subscriber: number; input: string };
  fired: { subscriber: number };
  settled: { subscriber: number };
  delivered: { subscriber: number; target: string; kind: string; durationMs?: number | undefined };
  retried: { subscriber: number; target: string };
  dead_lettered: { subscriber: number; target: string };
  dropped: { subscriber: number; target: string };
  expired: { subscriber: number; input: string };
  evicted: { subscriber: number; input: string };
  uncorrelated: { subscriber: number; input: string };
  reset: { subscriber: number; input: string };
  batched: { subscriber: number; size: number };
  debounced: { subscriber: number };
  deduplicated: { subscriber: number };
  throttled: { subscriber: number; ms: number };
}

/** What metrics read of a bus's events (a subset of `BusEvents`). */
export interface BusMetricEvents {
  published: { topic: string };
  redelivery: { topic: string; group: string };
  dead_lettered: { topic: string; group: string };
}

export interface SourceLabels {
  namespace: string;
  eventSource: string;
}

export interface TriggerLabels {
  namespace: string;
  trigger: string;
}

export interface BusLabels {
  /** The bus's key or name (e.g. `EventBus:default/default`, `memory:default`). */
  bus: string;
  /** memory, jetstream, kafka, dapr. */
  driver: string;
}

export interface MetricsOptions {
  /** Also collect the process metrics of prom-client (CPU, memory, event loop lag, GC), prefixed `ofevents_`. */
  processMetrics?: boolean | undefined;
}

export interface Metrics {
  readonly registry: Registry;
  /** Counts an EventSource runtime's events; returns a function that stops counting. */
  observeSource(events: Observable<SourceMetricEvents>, labels: SourceLabels): () => void;
  /** Counts a Trigger runtime's events; returns a function that stops counting. */
  observeTrigger(events: Observable<TriggerMetricEvents>, labels: TriggerLabels): () => void;
  /** Counts a bus's events; returns a function that stops counting. */
  observeBus(events: Observable<BusMetricEvents>, labels: BusLabels): () => void;
  /** The registry in the Prometheus text exposition format. */
  text(): Promise<string>;
  readonly contentType: string;
}

/** One labelled value of a {@link Series}: the hot path adds to `value`, a scrape reads it. */
interface Cell {
  value: number;
}

/** Beyond this many label combinations per lookup, cells are made afresh instead of remembered. */
const MEMO_MAX = 10_000;

/** Remembers `make(key)` per key (bounded), so a hot path does one Map lookup per event. */
function memo<K, V>(make: (key: K) => V): (key: K) => V {
  const seen = new Map<K, V>();
  return (key) => {
    let v = seen.get(key);
    if (v === undefined) {
      v = make(key);
      if (seen.size < MEMO_MAX) seen.set(key, v);
    }
    return v;
  };
}

/** The entry of these label values in `entries`, made (with a copy of the labels) on first use. */
function entryOf<L extends string, E>(
  entries: Map<string, E>,
  labelNames: readonly L[],
  labels: Record<L, string>,
  make: (labels: Record<L, string>) => E,
): E {
  const key = labelNames.map((n) => labels[n]).join("\0");
  let entry = entries.get(key);
  if (entry === undefined) {
    entry = make({ ...labels });
    entries.set(key, entry);
  }
  return entry;
}

/**
 * A labelled counter or gauge kept as plain numbers and handed to prom-client only when it is
 * scraped (its `collect` hook). Counting an event is then a property increment: prom-client's own
 * `inc(labels)` hashes and validates the labels on every call, which cost several % of the
 * pipeline's CPU per event.
 */
class Series<L extends string> {
  private readonly cells = new Map<string, { labels: Record<L, string>; cell: Cell }>();

  constructor(
    kind: "counter" | "gauge",
    name: string,
    help: string,
    private readonly labelNames: readonly L[],
    registers: Registry[],
  ) {
    const cells = this.cells;
    if (kind === "counter") {
      new Counter<L>({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const { labels, cell } of cells.values()) this.inc(labels, cell.value);
        },
      });
    } else {
      new Gauge<L>({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const { labels, cell } of cells.values()) this.set(labels, cell.value);
        },
      });
    }
  }

  /** The cell of these label values, created at 0 (the series then shows from the start). */
  cell(labels: Record<L, string>): Cell {
    return entryOf(this.cells, this.labelNames, labels, (own) => ({ labels: own, cell: { value: 0 } })).cell;
  }
}

/** Delivery latency buckets, in seconds: sub-millisecond in-process hops up to slow retried sinks. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** One labelled histogram of a {@link HistogramSeries}: the hot path calls `observe`. */
export interface HistogramCell {
  observe(value: number): void;
}

/** A sample line as prom-client's registry formats it: `labels` first, then `sharedLabels`. */
interface SampleLine {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
}

interface HistogramEntry<L extends string> {
  labels: Record<L, string>;
  /** Observations in each bucket alone (the last one is +Inf); a scrape accumulates them. */
  counts: number[];
  sum: number;
  count: number;
  cell: HistogramCell;
}

/**
 * A labelled histogram kept as plain numbers, as {@link Series} keeps counters: an observation is
 * a bucket search and three additions. prom-client's own `observe` validates and hashes the labels
 * and looks the bucket up by a number key on every call (about 1 % of a pipeline's CPU per event).
 * The series registers itself with prom-client's registry as a metric of its own and answers a
 * scrape with the same lines a prom-client `Histogram` prints: cumulative `_bucket`s by `le` (with
 * `+Inf`), `_sum` and `_count`.
 */
class HistogramSeries<L extends string> {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly cells = new Map<string, HistogramEntry<L>>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly L[],
    private readonly bounds: readonly number[],
    registers: Registry[],
  ) {
    for (const r of registers) r.registerMetric(this as unknown as Histogram<L>);
  }

  /** The histogram of these label values, created empty (its series show from the start). */
  cell(labels: Record<L, string>): HistogramCell {
    const bounds = this.bounds;
    return entryOf(this.cells, this.labelNames, labels, (own) => {
      const e: HistogramEntry<L> = {
        labels: own,
        counts: new Array<number>(bounds.length + 1).fill(0),
        sum: 0,
        count: 0,
        cell: {
          observe(value) {
            let i = 0;
            while (i < bounds.length && value > bounds[i]!) i++;
            e.counts[i]!++;
            e.sum += value;
            e.count++;
          },
        },
      };
      return e;
    }).cell;
  }

  getForPromString(): { name: string; help: string; type: string; values: SampleLine[]; aggregator: string } {
    const values: SampleLine[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, counts, sum, count } of this.cells.values()) {
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += counts[i]!;
        values.push({ labels: { le }, sharedLabels: labels, value: acc, metricName: bucket });
      });
      values.push({ labels: { le: "+Inf" }, sharedLabels: labels, value: count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: labels, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: labels, value: count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** As `getForPromString`, each line's labels in one object (prom-client's JSON form). */
  get(): ReturnType<HistogramSeries<L>["getForPromString"]> {
    const m = this.getForPromString();
    return { ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.sharedLabels, ...v.labels } })) };
  }

  /** Empties every histogram (prom-client's `resetMetrics`); the label sets stay. */
  reset(): void {
    for (const e of this.cells.values()) {
      e.counts.fill(0);
      e.sum = 0;
      e.count = 0;
    }
  }
}

/**
 * Creates the ofevents metrics in `registry` (default: a new one, never prom-client's global
 * registry). Throws if the registry already holds metrics of these names.
 */
export function createMetrics(registry: Registry = new Registry(), options: MetricsOptions = {}): Metrics {
  if (options.processMetrics === true) collectDefaultMetrics({ register: registry, prefix: "ofevents_" });
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Series<L> =>
    new Series("counter", `ofevents_${name}`, help, labelNames, registers);
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]): Series<L> =>
    new Series("gauge", `ofevents_${name}`, help, labelNames, registers);

  const src = ["namespace", "eventsource", "event"] as const;
  const source = {
    received: counter(
      "eventsource_events_received_total",
      "Events an EventSource adapter received and handed to the runtime.",
      src,
    ),
    published: counter("eventsource_events_published_total", "Events an EventSource published to its bus.", src),
    delivered: counter(
      "eventsource_events_delivered_total",
      "Events an EventSource delivered to its sync sink (2xx answer).",
      src,
    ),
    failed: counter(
      "eventsource_events_failed_total",
      "Events neither published nor delivered (the source was not acknowledged).",
      src,
    ),
    inFlight: gauge("eventsource_dispatches_in_flight", "Events received and not yet published or delivered.", src),
    up: gauge("eventsource_up", "1 when the event's adapter started, 0 when it failed to start.", src),
    startFailures: counter(
      "eventsource_start_failures_total",
      "Attempts to start an event's adapter that failed (a source that cannot connect is retried with backoff).",
      src,
    ),
    rejected: counter(
      "eventsource_requests_rejected_total",
      "Requests an adapter refused before dispatching anything, by reason (unauthorized: missing or wrong credentials or signature).",
      [...src, "reason"],
    ),
  };

  const tr = ["namespace", "trigger"] as const;
  const trigger = {
    received: counter("trigger_events_received_total", "Events a trigger input received from the bus.", [
      ...tr,
      "input",
    ]),
    filtered: counter(
      "trigger_events_filtered_total",
      "Events an input filter (subscriber empty) or a subscriber filter (input empty) let through no further; reason is filter or error.",
      [...tr, "input", "subscriber", "reason"],
    ),
    pending: gauge("trigger_events_pending", "Events waiting in a subscriber's correlation window.", [
      ...tr,
      "subscriber",
      "input",
    ]),
    fired: counter("trigger_firings_total", "Times a subscriber's condition fired and its delivery started.", [
      ...tr,
      "subscriber",
    ]),
    inFlight: gauge("trigger_deliveries_in_flight", "Firings whose deliveries have not finished yet.", [
      ...tr,
      "subscriber",
    ]),
    delivered: counter("trigger_events_delivered_total", "Events delivered to a sink (2xx) or published to a topic.", [
      ...tr,
      "subscriber",
      "kind",
      "target",
    ]),
    latency: new HistogramSeries(
      "ofevents_trigger_delivery_duration_seconds",
      "Time from the trigger's receipt of an event (the last joined one) to its delivery, retries included.",
      [...tr, "subscriber", "kind"],
      LATENCY_BUCKETS,
      registers,
    ),
    retried: counter("trigger_delivery_retries_total", "Delivery attempts that failed and were retried.", [
      ...tr,
      "subscriber",
      "target",
    ]),
    deadLettered: counter(
      "trigger_events_dead_lettered_total",
      "Events that could not be delivered and went to the dead-letter sink or topic.",
      [...tr, "subscriber", "target"],
    ),
    dropped: counter(
      "trigger_events_dropped_total",
      "Events that could not be delivered and had no dead-letter sink or topic.",
      [...tr, "subscriber", "target"],
    ),
    expired: counter("trigger_events_expired_total", "Pending events released unjoined at the end of their window.", [
      ...tr,
      "subscriber",
      "input",
    ]),
    evicted: counter(
      "trigger_events_evicted_total",
      "Pending events released unjoined because more than maxPending were waiting.",
      [...tr, "subscriber", "input"],
    ),
    uncorrelated: counter("trigger_events_uncorrelated_total", "Events without a correlation key, released unjoined.", [
      ...tr,
      "subscriber",
      "input",
    ]),
    reset: counter(
      "trigger_events_reset_total",
      "Pending events released unjoined by the subscriber's correlation.reset (cron or after).",
      [...tr, "subscriber", "input"],
    ),
    batches: counter("trigger_batches_total", "Batches a subscriber with batch delivered or dead-lettered.", [
      ...tr,
      "subscriber",
    ]),
    batched: counter("trigger_batched_events_total", "Events that went in those batches.", [...tr, "subscriber"]),
    debounced: counter(
      "trigger_events_debounced_total",
      "Events of a burst that debounce acknowledged without delivery (superseded, or after the leading one).",
      [...tr, "subscriber"],
    ),
    deduplicated: counter(
      "trigger_events_deduplicated_total",
      "Events acknowledged without delivery because their dedup key was delivered within the window.",
      [...tr, "subscriber"],
    ),
    throttled: counter(
      "trigger_throttled_seconds_total",
      "Time attempts waited for the subscriber's rate limit (or a sink's Retry-After pause), summed over attempts.",
      [...tr, "subscriber"],
    ),
  };

  const bs = ["bus", "driver", "topic"] as const;
  const bus = {
    published: counter("bus_events_published_total", "Events the bus durably took.", bs),
    redelivered: counter("bus_redeliveries_total", "Messages a handler failed and the bus will deliver again.", [
      ...bs,
      "group",
    ]),
    deadLettered: counter(
      "bus_events_dead_lettered_total",
      "Messages moved to the dead-letter topic after maxDeliver.",
      [...bs, "group"],
    ),
  };

  // Sink URLs may carry credentials or tokens: a label keeps scheme, host and path only.
  const targets = new Map<string, string>();
  const target = (t: string): string => {
    let label = targets.get(t);
    if (label === undefined) {
      label = t;
      if (/^https?:\/\//i.test(t) && URL.canParse(t)) {
        const u = new URL(t);
        label = `${u.protocol}//${u.host}${u.pathname}`;
      }
      if (targets.size < 10_000) targets.set(t, label);
    }
    return label;
  };

  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),

    observeSource(events, labels) {
      const l = (event: string) => ({ namespace: labels.namespace, eventsource: labels.eventSource, event });
      const cells = memo((event: string) => ({
        received: source.received.cell(l(event)),
        published: source.published.cell(l(event)),
        delivered: source.delivered.cell(l(event)),
        failed: source.failed.cell(l(event)),
        inFlight: source.inFlight.cell(l(event)),
      }));
      const up = memo((event: string) => source.up.cell(l(event)));
      const offs = [
        events.on("dispatched", (p) => {
          const c = cells(p.event);
          c.received.value++;
          c.inFlight.value++;
        }),
        events.on("published", (p) => {
          const c = cells(p.event);
          c.published.value++;
          c.inFlight.value--;
        }),
        events.on("delivered", (p) => {
          const c = cells(p.event);
          c.delivered.value++;
          c.inFlight.value--;
        }),
        events.on("failed", (p) => {
          const c = cells(p.event);
          c.failed.value++;
          c.inFlight.value--;
        }),
        events.on("started", (p) => {
          up(p.event).value = 1;
          // Series exist from the start (cells are created at 0), so rate() and absent() see a 0.
          cells(p.event);
        }),
        events.on("start_failed", (p) => {
          up(p.event).value = 0;
          source.startFailures.cell(l(p.event)).value++;
        }),
        events.on("rejected", (p) => {
          source.rejected.cell({ ...l(p.event), reason: p.reason }).value++;
        }),
      ];
      return () => offs.forEach((off) => off());
    },

    observeTrigger(events, labels) {
      const base = { namespace: labels.namespace, trigger: labels.trigger };
      const sub = (subscriber: number) => ({ ...base, subscriber: String(subscriber) });
      // Cells are looked up by a key of the label values; created (at 0) on first use.
      const received = memo((input: string) => trigger.received.cell({ ...base, input }));
      const filtered = memo((key: string) => {
        const [input = "", subscriber = "", reason = ""] = key.split("\0");
        return trigger.filtered.cell({ ...base, input, subscriber, reason });
      });
      const bySub = memo((subscriber: number) => ({
        fired: trigger.fired.cell(sub(subscriber)),
        inFlight: trigger.inFlight.cell(sub(subscriber)),
      }));
      const shaping = memo((subscriber: number) => ({
        batches: trigger.batches.cell(sub(subscriber)),
        batched: trigger.batched.cell(sub(subscriber)),
        debounced: trigger.debounced.cell(sub(subscriber)),
        deduplicated: trigger.deduplicated.cell(sub(subscriber)),
        throttled: trigger.throttled.cell(sub(subscriber)),
      }));
      const bySubInput = memo((key: string) => {
        const [subscriber = "", input = ""] = key.split("\0");
        const l = { ...base, subscriber, input };
        return {
          pending: trigger.pending.cell(l),
          expired: trigger.expired.cell(l),
          evicted: trigger.evicted.cell(l),
          uncorrelated: trigger.uncorrelated.cell(l),
          reset: trigger.reset.cell(l),
        };
      });
      const subInput = (p: { subscriber: number; input: string }) => bySubInput(`${p.subscriber}\0${p.input}`);
      const bySubTarget = memo((key: string) => {
        const [subscriber = "", t = ""] = key.split("\0");
        const l = { ...base, subscriber, target: target(t) };
        return {
          retried: trigger.retried.cell(l),
          deadLettered: trigger.deadLettered.cell(l),
          dropped: trigger.dropped.cell(l),
        };
      });
      const subTarget = (p: { subscriber: number; target: string }) => bySubTarget(`${p.subscriber}\0${p.target}`);
      // Looked up level by level rather than by one joined key: no string is built per event.
      const delivered = memo((subscriber: number) =>
        memo((t: string) =>
          memo((kind: string) => trigger.delivered.cell({ ...sub(subscriber), target: target(t), kind })),
        ),
      );
      const latency = memo((subscriber: number) =>
        memo((kind: string) => trigger.latency.cell({ ...sub(subscriber), kind })),
      );
      const offs = [
        events.on("received", (p) => void received(p.input).value++),
        events.on(
          "filtered",
          (p) =>
            void filtered(`${p.input ?? ""}\0${p.subscriber === undefined ? "" : String(p.subscriber)}\0${p.reason}`)
              .value++,
        ),
        events.on("pending", (p) => void subInput(p).pending.value++),
        events.on("consumed", (p) => void subInput(p).pending.value--),
        events.on("expired", (p) => {
          const c = subInput(p);
          c.pending.value--;
          c.expired.value++;
        }),
        events.on("evicted", (p) => {
          const c = subInput(p);
          c.pending.value--;
          c.evicted.value++;
        }),
        events.on("uncorrelated", (p) => void subInput(p).uncorrelated.value++),
        events.on("reset", (p) => {
          const c = subInput(p);
          c.pending.value--;
          c.reset.value++;
        }),
        events.on("batched", (p) => {
          const c = shaping(p.subscriber);
          c.batches.value++;
          c.batched.value += p.size;
        }),
        events.on("debounced", (p) => void shaping(p.subscriber).debounced.value++),
        events.on("deduplicated", (p) => void shaping(p.subscriber).deduplicated.value++),
        events.on("throttled", (p) => void (shaping(p.subscriber).throttled.value += p.ms / 1000)),
        events.on("fired", (p) => {
          const c = bySub(p.subscriber);
          c.fired.value++;
          c.inFlight.value++;
        }),
        events.on("settled", (p) => void bySub(p.subscriber).inFlight.value--),
        events.on("delivered", (p) => {
          delivered(p.subscriber)(p.target)(p.kind).value++;
          if (p.durationMs !== undefined) latency(p.subscriber)(p.kind).observe(p.durationMs / 1000);
        }),
        events.on("retried", (p) => void subTarget(p).retried.value++),
        events.on("dead_lettered", (p) => void subTarget(p).deadLettered.value++),
        events.on("dropped", (p) => void subTarget(p).dropped.value++),
      ];
      return () => offs.forEach((off) => off());
    },

    observeBus(events, labels) {
      const l = (topic: string) => ({ bus: labels.bus, driver: labels.driver, topic });
      const published = memo((topic: string) => bus.published.cell(l(topic)));
      const byGroup = memo((key: string) => {
        const [topic = "", group = ""] = key.split("\0");
        return {
          redelivered: bus.redelivered.cell({ ...l(topic), group }),
          deadLettered: bus.deadLettered.cell({ ...l(topic), group }),
        };
      });
      const offs = [
        events.on("published", (p) => void published(p.topic).value++),
        events.on("redelivery", (p) => void byGroup(`${p.topic}\0${p.group}`).redelivered.value++),
        events.on("dead_lettered", (p) => void byGroup(`${p.topic}\0${p.group}`).deadLettered.value++),
      ];
      return () => offs.forEach((off) => off());
    },
  };
}

/**
 * Answers `GET /metrics` with `metrics` in the Prometheus text format (405 for other methods, 500
 * if collecting fails). Returns false and writes nothing for any other path, so a server can also
 * serve /healthz and /readyz.
 */
export function serveMetrics(metrics: Metrics, req: IncomingMessage, res: ServerResponse): boolean {
  if ((req.url ?? "/").split("?")[0] !== "/metrics") return false;
  if (req.method !== "GET" && req.method !== "HEAD") {
    sendBody(res, 405, undefined, { allow: "GET, HEAD" });
    return true;
  }
  metrics.text().then(
    (text) => {
      // Node sends no body to a HEAD request; the length is the GET answer's.
      sendBody(res, 200, text, { "content-type": metrics.contentType });
    },
    (err: unknown) => {
      sendBody(res, 500, `collecting metrics failed: ${(err as Error).message}`, { "content-type": "text/plain" });
    },
  );
  return true;
}

export interface MetricsServer {
  readonly port: number;
  /** Stops listening and closes idle connections. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (and what `also` serves, e.g. the run's journal; 404 elsewhere) on
 * `host:port`; resolves once listening (port 0 picks one).
 */
export async function startMetricsServer(
  metrics: Metrics,
  options: {
    port: number;
    host?: string | undefined;
    also?: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined;
  },
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    if (!serveMetrics(metrics, req, res) && options.also?.(req, res) !== true) sendBody(res, 404);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
