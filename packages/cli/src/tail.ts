/**
 * `ofevents tail`: the CloudEvents passing through a topic, a trigger (its inputs' topics and the
 * topics it publishes to) or an event source (its events' topics), as they pass. Against a running
 * `ofevents run` through its page's API (`GET /api/tail`), or against a bus directly with the
 * manifests that define it; either way through `EventBus.tail`, which takes part in no consumer
 * group and leaves nothing behind.
 */
import {
  ErrorCode,
  ManifestError,
  OfEventsError,
  busTopic,
  createExpressionEngine,
  namespaceOf,
  sourceKinds,
  type CloudEvent,
  type Logger,
  type Manifests,
} from "@ofevents/core";
import type { TailedEvent } from "@ofevents/eventbus";
import { validateAll } from "./check.js";
import { createComposition, type BusAccess } from "./compose.js";

/** What to tail: exactly one of topic, trigger and source (`[ns/]name`). */
export interface TailWhat {
  topic?: string | undefined;
  trigger?: string | undefined;
  source?: string | undefined;
  /** The bus of a bare topic (default `default`), and its namespace (default `default`). */
  bus?: string | undefined;
  namespace?: string | undefined;
}

function split(v: string): [string, string] {
  const i = v.indexOf("/");
  return i < 0 ? ["default", v] : [v.slice(0, i), v.slice(i + 1)];
}

/** The bus (name and namespace) and the topics `what` means in the manifests. */
export function tailTopics(m: Manifests, what: TailWhat): { bus: string; namespace: string; topics: string[] } {
  if (what.trigger !== undefined) {
    const [ns, name] = split(what.trigger);
    const t = m.triggers.find((x) => namespaceOf(x.resource) === ns && x.resource.metadata.name === name)?.resource;
    if (t === undefined) throw new OfEventsError(ErrorCode.Config, `no trigger ${ns}/${name} in the manifests`);
    const topics = [
      ...Object.values(t.spec.inputs).map((i) => busTopic(i.namespace ?? ns, i.eventSource, i.event)),
      ...t.spec.subscribers.flatMap((s) => [s.topic, s.deadLetterTopic]).filter((x): x is string => !!x),
    ];
    return { bus: t.spec.eventBus, namespace: ns, topics: [...new Set(topics)] };
  }
  if (what.source !== undefined) {
    const [ns, name] = split(what.source);
    const es = m.eventSources.find(
      (x) => namespaceOf(x.resource) === ns && x.resource.metadata.name === name,
    )?.resource;
    if (es === undefined) throw new OfEventsError(ErrorCode.Config, `no event source ${ns}/${name} in the manifests`);
    if (es.spec.eventBus === undefined)
      throw new OfEventsError(ErrorCode.Config, `event source ${ns}/${name} has no eventBus: nothing to tail`);
    const topics = sourceKinds.flatMap((k) => Object.keys(es.spec[k] ?? {}).map((e) => busTopic(ns, name, e)));
    return { bus: es.spec.eventBus, namespace: ns, topics };
  }
  if (what.topic !== undefined)
    return { bus: what.bus ?? "default", namespace: what.namespace ?? "default", topics: [what.topic] };
  throw new OfEventsError(ErrorCode.Config, "name what to tail: a topic, trigger [ns/]name or source [ns/]name");
}

export interface TailOptions {
  what: TailWhat;
  /** With manifests: the bus directly. Without: a running `ofevents run` at `url`. */
  paths?: string[] | undefined;
  url?: string | undefined;
  busAccess?: BusAccess | undefined;
  /** Only the events for which this JSONata expression is true. */
  filter?: string | undefined;
  /** Stop after this many events were printed. */
  limit?: number | undefined;
  /** Stop after this long (ms). */
  durationMs?: number | undefined;
  logger: Logger;
  print(e: TailedEvent): void;
  /** Told which topics are tailed, once the tail runs. */
  started?(topics: string[]): void;
  signal?: AbortSignal | undefined;
}

/** Tails until the limit, the duration or the signal; resolves with the number of events printed. */
export async function runTail(o: TailOptions): Promise<number> {
  const engine = createExpressionEngine();
  let filter;
  try {
    filter = o.filter === undefined ? undefined : engine.compile(o.filter);
  } catch (err) {
    throw new OfEventsError(ErrorCode.Config, `--filter: ${(err as Error).message}`);
  }
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  o.signal?.addEventListener("abort", onAbort);
  const timer = o.durationMs === undefined ? undefined : setTimeout(onAbort, o.durationMs);
  let printed = 0;
  // Events are printed in the order they came, one filter evaluation at a time.
  let chain = Promise.resolve();
  const take = (e: TailedEvent): void => {
    chain = chain.then(async () => {
      if (stop.signal.aborted) return;
      if (filter !== undefined && (await filter.evaluate(e.event).catch(() => false)) !== true) return;
      o.print(e);
      printed++;
      if (o.limit !== undefined && printed >= o.limit) stop.abort();
    });
  };
  try {
    if (o.paths !== undefined) await tailBus(o, take, stop.signal);
    else await tailRun(o, take, stop.signal);
    await chain;
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", onAbort);
  }
  return printed;
}

async function tailBus(o: TailOptions, take: (e: TailedEvent) => void, signal: AbortSignal): Promise<void> {
  const { manifests, issues } = await validateAll(o.paths!, { peersElsewhere: true });
  if (issues.length > 0) throw new ManifestError(issues);
  const { bus: name, namespace, topics } = tailTopics(manifests, o.what);
  const c = createComposition({
    manifests,
    logger: o.logger,
    host: "127.0.0.1",
    peers: "elsewhere",
    busAccess: o.busAccess ?? { driver: "direct" },
    processMetrics: false,
  });
  try {
    const bus = await c.busFor(name, namespace);
    if (bus.tail === undefined) throw new OfEventsError(ErrorCode.Config, `the ${bus.driver} bus cannot be tailed`);
    const t = await bus.tail(topics, take);
    o.started?.(topics);
    try {
      if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    } finally {
      await t.close();
    }
  } finally {
    await c.stop();
  }
}

async function tailRun(o: TailOptions, take: (e: TailedEvent) => void, signal: AbortSignal): Promise<void> {
  const base = o.url ?? "http://127.0.0.1:9400/";
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o.what)) if (v !== undefined) q.set(k, v);
  const url = new URL(`api/tail?${q}`, base.endsWith("/") ? base : `${base}/`);
  let res: Response;
  try {
    res = await fetch(url, { signal, headers: { accept: "text/event-stream" } });
  } catch (err) {
    if (signal.aborted) return;
    throw new OfEventsError(
      ErrorCode.Config,
      `cannot reach ofevents run at ${base} (${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}): start it, give its page's address with --url, or tail the bus directly with -f <manifests>`,
    );
  }
  if (!res.ok) {
    const body = (await res.json().catch(() => ({}))) as { error?: string };
    throw new OfEventsError(ErrorCode.Config, `ofevents run answered ${res.status}: ${body.error ?? res.statusText}`);
  }
  let buffer = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body! as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const type = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (data === undefined) continue;
        if (type === "tailing") o.started?.((JSON.parse(data) as { topics: string[] }).topics);
        else if (type === "event") take(JSON.parse(data) as { topic: string; event: CloudEvent });
      }
    }
  } catch (err) {
    if (!signal.aborted) throw err;
  }
}

/** One line per event: time, topic, type, id, subject, then the data. */
export function prettyEvent(e: TailedEvent): string {
  const ev = e.event;
  const time = new Date().toISOString().slice(11, 23);
  const data = ev.data === undefined ? "" : ` ${typeof ev.data === "string" ? ev.data : JSON.stringify(ev.data)}`;
  return `${time} ${e.topic}  ${ev.type}  ${ev.id}${ev.subject === undefined ? "" : `  ${ev.subject}`}\n  ${data.trim()}\n`;
}
