/**
 * The flow of `ofevents run` as the live page draws it: a graph of sources → bus topics →
 * triggers → subscribers → targets built from the loaded manifests, and live counters per node
 * and edge fed by the instrumentation events of the sources and triggers (the same events the
 * metrics and the journal take). Also keeps, bounded, the latest event ids per node and the dead
 * letters per subscriber (with the event, so the page can redrive them).
 */
import {
  busTopic,
  namespaceOf,
  sourceKinds,
  type CloudEvent,
  type EventSource,
  type Instrumentation,
  type Manifests,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import type { SourceEvents } from "@ofevents/eventsource";
import type { TriggerEvents } from "@ofevents/trigger";

export type NodeKind = "source" | "topic" | "trigger" | "subscriber" | "sink" | "function";

export interface FlowNode {
  /** Stable id: `source:ns/name/event`, `topic:bus/topic`, `trigger:ns/name`, `subscriber:ns/name/i`, `sink:url`, `function:ns/name`. */
  id: string;
  kind: NodeKind;
  /** What the page prints on the node. */
  label: string;
  /** Column of the drawing, left to right: sources 0, topics 1, triggers 2, subscribers 3, targets 4. */
  column: number;
  /** Facts shown when the node is selected (filter, condition, window, source kind...). */
  detail: Record<string, string>;
}

export interface FlowEdge {
  id: string;
  from: string;
  to: string;
  /** `dead-letter` edges go to a subscriber's dead-letter target. */
  kind: "publish" | "input" | "subscribe" | "deliver" | "dead-letter" | "consume";
  /** The counters the page prints on the edge: those of node `of` named in `show`. */
  counters?: { of: string; show: string[] } | undefined;
}

/** Which counters each kind of edge shows. */
const SHOWN = {
  sourcePublish: ["received", "published", "failed"],
  sourceDeliver: ["received", "delivered", "failed"],
  input: ["received", "filteredOut", "filterErrors"],
  subscribe: ["fired", "filteredOut", "waiting", "expired", "debounced", "deduplicated", "uncorrelated"],
  deliver: ["delivered", "inFlight", "retried", "throttled", "redriven"],
  deadLetter: ["deadLettered", "dropped"],
};

export interface FlowGraph {
  nodes: FlowNode[];
  edges: FlowEdge[];
}

/** Counters of one node (a subscriber's also carry its gauges: in flight, waiting in joins). */
export type Counters = Record<string, number>;

export interface DeadLetter {
  trigger: string;
  subscriber: number;
  id: string;
  /** The target that failed. */
  target: string;
  /** Where the dead letter went (sink / topic names), or `dropped`. */
  to: string;
  reason: string;
  at: string;
  /** The event as it was to be delivered. */
  event: CloudEvent;
}

const LATEST = 20;
const DEAD_LETTERS = 100;

function sinkLabel(sink: Sink, namespace: string): { id: string; label: string; kind: NodeKind } {
  if (sink.uri !== undefined) return { id: `sink:${sink.uri}`, label: sink.uri, kind: "sink" };
  const ref = sink.ref!;
  const ns = ref.namespace ?? namespace;
  return ref.kind === "Function"
    ? { id: `function:${ns}/${ref.name}`, label: ref.name, kind: "function" }
    : { id: `sink:${ref.kind}/${ns}/${ref.name}`, label: `${ref.kind} ${ref.name}`, kind: "sink" };
}

/** The graph of what the manifests run: deterministic, in manifest order. */
export function buildGraph(m: Manifests, busOf: (name: string, namespace: string) => string): FlowGraph {
  const nodes = new Map<string, FlowNode>();
  const edges = new Map<string, FlowEdge>();
  const node = (n: FlowNode): string => {
    if (!nodes.has(n.id)) nodes.set(n.id, n);
    return n.id;
  };
  /** An edge, once; its counters are those of `of` (default: the node it leaves). */
  const edge = (
    from: string,
    to: string,
    kind: FlowEdge["kind"],
    show?: string[],
    o: { of?: string; id?: string } = {},
  ): void => {
    const id = o.id ?? `${from} -> ${to}`;
    if (!edges.has(id))
      edges.set(id, { id, from, to, kind, ...(show === undefined ? {} : { counters: { of: o.of ?? from, show } }) });
  };
  const topicNode = (bus: string, topic: string): string =>
    node({ id: `topic:${bus}/${topic}`, kind: "topic", label: topic, column: 1, detail: { bus } });
  const targetNode = (sink: Sink, ns: string, detail: Record<string, string> = {}): string => {
    const s = sinkLabel(sink, ns);
    return node({ id: s.id, kind: s.kind, label: s.label, column: 4, detail });
  };

  for (const { resource: es } of m.eventSources) {
    const ns = namespaceOf(es);
    const name = es.metadata.name;
    for (const kind of sourceKinds) {
      for (const event of Object.keys(es.spec[kind] ?? {})) {
        const id = node({
          id: `source:${ns}/${name}/${event}`,
          kind: "source",
          label: `${name}/${event}`,
          column: 0,
          detail: { eventSource: `${ns}/${name}`, event, kind },
        });
        if (es.spec.eventBus !== undefined)
          edge(id, topicNode(busOf(es.spec.eventBus, ns), busTopic(ns, name, event)), "publish", SHOWN.sourcePublish);
        if (es.spec.sink !== undefined) edge(id, targetNode(es.spec.sink, ns), "deliver", SHOWN.sourceDeliver);
      }
    }
  }
  for (const { resource: t } of m.triggers) {
    const ns = namespaceOf(t);
    const name = t.metadata.name;
    const bus = busOf(t.spec.eventBus, ns);
    const tid = node({
      id: `trigger:${ns}/${name}`,
      kind: "trigger",
      label: name,
      column: 2,
      detail: { trigger: `${ns}/${name}`, bus },
    });
    for (const [input, spec] of Object.entries(t.spec.inputs)) {
      const topic = topicNode(bus, busTopic(spec.namespace ?? ns, spec.eventSource, spec.event));
      edge(topic, tid, "input", SHOWN.input, { of: `${tid}#${input}`, id: `${topic} -> ${tid}#${input}` });
    }
    t.spec.subscribers.forEach((s, i) => {
      const detail: Record<string, string> = { condition: s.condition };
      if (s.filter !== undefined) detail["filter"] = s.filter;
      if (s.transform !== undefined) detail["transform"] = s.transform;
      if (s.correlation?.window !== undefined) detail["window"] = s.correlation.window;
      if (s.correlation?.key !== undefined) detail["key"] = s.correlation.key;
      const sid = node({
        id: `subscriber:${ns}/${name}/${i}`,
        kind: "subscriber",
        label: `${i}: ${s.condition}`,
        column: 3,
        detail,
      });
      edge(tid, sid, "subscribe", SHOWN.subscribe, { of: sid });
      if (s.sink !== undefined) edge(sid, targetNode(s.sink, ns), "deliver", SHOWN.deliver);
      if (s.topic !== undefined && s.topic !== "") {
        const topic = topicNode(bus, s.topic);
        nodes.get(topic)!.column = Math.max(nodes.get(topic)!.column, 4);
        edge(sid, topic, "deliver", SHOWN.deliver);
      }
      if (s.deadLetterSink !== undefined) edge(sid, targetNode(s.deadLetterSink, ns), "dead-letter", SHOWN.deadLetter);
      if (s.deadLetterTopic !== undefined)
        edge(sid, topicNode(bus, s.deadLetterTopic), "dead-letter", SHOWN.deadLetter);
    });
  }
  // Async functions consume topics.
  for (const { resource: f } of m.functions) {
    const ns = namespaceOf(f);
    for (const input of f.spec.serving?.inputs ?? []) {
      if (input.topic === undefined) continue;
      const topic = topicNode(busOf(input.component ?? "default", ns), input.topic);
      const fid = node({
        id: `function:${ns}/${f.metadata.name}`,
        kind: "function",
        label: f.metadata.name,
        column: 5,
        detail: { function: `${ns}/${f.metadata.name}`, runtime: "async" },
      });
      edge(topic, fid, "consume");
    }
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

/** Live counters per node id, the latest event ids per node and the dead letters per subscriber. */
export class FlowStats {
  private readonly counters = new Map<string, Counters>();
  private readonly latest = new Map<string, string[]>();
  private readonly deadLetters = new Map<string, DeadLetter[]>();
  /** Bumped on every change, so a stream sends a snapshot only when something moved. */
  version = 0;

  private bump(node: string, counter: string, by = 1): void {
    let c = this.counters.get(node);
    if (c === undefined) this.counters.set(node, (c = {}));
    c[counter] = Math.max(0, (c[counter] ?? 0) + by);
    this.version++;
  }

  private seen(node: string, id: string): void {
    let l = this.latest.get(node);
    if (l === undefined) this.latest.set(node, (l = []));
    const at = l.indexOf(id);
    if (at >= 0) l.splice(at, 1);
    l.push(id);
    if (l.length > LATEST) l.shift();
  }

  observeSource(es: EventSource, events: Instrumentation<SourceEvents>): void {
    const ns = namespaceOf(es);
    const node = (event: string): string => `source:${ns}/${es.metadata.name}/${event}`;
    events.on("dispatched", (e) => {
      this.bump(node(e.event), "received");
      this.seen(node(e.event), e.id);
    });
    events.on("published", (e) => this.bump(node(e.event), "published"));
    events.on("delivered", (e) => this.bump(node(e.event), "delivered"));
    events.on("failed", (e) => this.bump(node(e.event), "failed"));
  }

  observeTrigger(t: Trigger, events: Instrumentation<TriggerEvents>): void {
    const ns = namespaceOf(t);
    const tn = `trigger:${ns}/${t.metadata.name}`;
    const sn = (i: number): string => `subscriber:${ns}/${t.metadata.name}/${i}`;
    events.on("received", (e) => {
      this.bump(tn, "received");
      this.bump(`${tn}#${e.input}`, "received");
      this.seen(tn, e.id);
    });
    events.on("filtered", (e) => {
      const where = e.subscriber === undefined ? `${tn}#${e.input ?? ""}` : sn(e.subscriber);
      this.bump(where, e.reason === "error" ? "filterErrors" : "filteredOut");
      if (e.subscriber === undefined) this.bump(tn, e.reason === "error" ? "filterErrors" : "filteredOut");
    });
    events.on("pending", (e) => {
      this.bump(sn(e.subscriber), "waiting");
      this.seen(sn(e.subscriber), e.id);
    });
    const unwait = (e: { subscriber: number }): void => this.bump(sn(e.subscriber), "waiting", -1);
    events.on("consumed", unwait);
    events.on("expired", (e) => {
      unwait(e);
      this.bump(sn(e.subscriber), "expired");
    });
    events.on("evicted", (e) => {
      unwait(e);
      this.bump(sn(e.subscriber), "evicted");
    });
    events.on("reset", unwait);
    events.on("fired", (e) => {
      this.bump(sn(e.subscriber), "fired");
      this.bump(sn(e.subscriber), "inFlight");
      this.seen(sn(e.subscriber), e.id);
    });
    events.on("settled", (e) => this.bump(sn(e.subscriber), "inFlight", -1));
    events.on("delivered", (e) => this.bump(sn(e.subscriber), "delivered"));
    events.on("retried", (e) => this.bump(sn(e.subscriber), "retried"));
    events.on("dead_lettered", (e) => {
      this.bump(sn(e.subscriber), "deadLettered");
      this.keep(sn(e.subscriber), {
        trigger: `${ns}/${t.metadata.name}`,
        subscriber: e.subscriber,
        id: e.id,
        target: e.target,
        to: e.deadLetter,
        reason: e.error instanceof Error ? e.error.message : String(e.error),
        at: new Date().toISOString(),
        event: e.event,
      });
    });
    events.on("dropped", (e) => this.bump(sn(e.subscriber), "dropped"));
    events.on("throttled", (e) => this.bump(sn(e.subscriber), "throttled"));
    events.on("debounced", (e) => this.bump(sn(e.subscriber), "debounced"));
    events.on("deduplicated", (e) => this.bump(sn(e.subscriber), "deduplicated"));
    events.on("uncorrelated", (e) => this.bump(sn(e.subscriber), "uncorrelated"));
  }

  private keep(node: string, d: DeadLetter): void {
    let l = this.deadLetters.get(node);
    if (l === undefined) this.deadLetters.set(node, (l = []));
    l.push(d);
    if (l.length > DEAD_LETTERS) l.shift();
  }

  /** Every counter by node id (and `trigger:ns/name#input` for the inputs). */
  snapshot(): Record<string, Counters> {
    return Object.fromEntries([...this.counters].map(([k, v]) => [k, { ...v }]));
  }

  latestOf(node: string): string[] {
    return [...(this.latest.get(node) ?? [])].reverse();
  }

  deadLettersOf(node: string): DeadLetter[] {
    return [...(this.deadLetters.get(node) ?? [])];
  }

  /** A dead letter this run saw, by subscriber node and event id. */
  deadLetter(node: string, id: string): DeadLetter | undefined {
    return this.deadLetters.get(node)?.find((d) => d.id === id);
  }

  /** Forgets a dead letter (it was redriven and delivered). */
  forget(node: string, id: string): void {
    const l = this.deadLetters.get(node);
    const at = l?.findIndex((d) => d.id === id) ?? -1;
    if (at >= 0) {
      l!.splice(at, 1);
      this.bump(node, "redriven");
    }
  }
}
