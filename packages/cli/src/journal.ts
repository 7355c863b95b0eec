/**
 * "Where is event X?" in `ofevents run`: an in-process journal of what happened to each event,
 * fed by the instrumentation events of the sources and triggers: received, filtered out (by which
 * expression), waiting in which join, fired, delivered, retried, dead-lettered (with the reasons),
 * deduplicated, debounced, batched, released. Bounded: the latest `maxEvents` events, at most
 * `maxSteps` steps each (the first ones and a count of what was left out), so a long run holds a
 * constant amount of memory. Served as JSON at `GET /events/<id>` and `GET /events` (the latest
 * ids) next to /metrics; `ofevents events <id>` prints it.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { namespaceOf, sendBody, sendJson, type EventSource, type Instrumentation, type Trigger } from "@ofevents/core";
import type { SourceEvents } from "@ofevents/eventsource";
import type { TriggerEvents } from "@ofevents/trigger";

export const DEFAULT_JOURNAL_EVENTS = 10_000;
export const DEFAULT_JOURNAL_STEPS = 64;

export interface JournalStep {
  /** When (RFC 3339, ms); kept as epoch ms until served, so recording costs no formatting. */
  at: string;
  /** `eventsource ns/name` or `trigger ns/name`. */
  where: string;
  /** What happened: received, published, filtered, pending, fired, delivered, retried, dead-lettered, ... */
  step: string;
  /** The facts of the step (input, subscriber, target, status, reason, ...). */
  detail: Record<string, unknown>;
}

export interface JournalEntry {
  id: string;
  steps: JournalStep[];
  /** Steps not kept beyond `maxSteps`. */
  omitted: number;
}

/** A step as kept: its time in epoch ms. */
interface KeptStep extends Omit<JournalStep, "at"> {
  at: number;
}

interface KeptEntry {
  id: string;
  steps: KeptStep[];
  omitted: number;
}

function served(e: KeptEntry): JournalEntry {
  return { id: e.id, omitted: e.omitted, steps: e.steps.map(servedStep) };
}

function servedStep(s: KeptStep): JournalStep {
  return { ...s, at: new Date(s.at).toISOString() };
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Journal {
  private readonly entries = new Map<string, KeptEntry>();

  constructor(
    readonly maxEvents = DEFAULT_JOURNAL_EVENTS,
    readonly maxSteps = DEFAULT_JOURNAL_STEPS,
  ) {}

  record(id: string, where: string, step: string, detail: Record<string, unknown> = {}): void {
    let e = this.entries.get(id);
    if (e === undefined) {
      e = { id, steps: [], omitted: 0 };
      this.entries.set(id, e);
      // Map order is insertion order: the first key is the oldest event.
      if (this.entries.size > this.maxEvents) this.entries.delete(this.entries.keys().next().value!);
    }
    if (e.steps.length < this.maxSteps) e.steps.push({ at: Date.now(), where, step, detail });
    else e.omitted++;
  }

  get(id: string): JournalEntry | undefined {
    const e = this.entries.get(id);
    return e === undefined ? undefined : served(e);
  }

  /** The latest `limit` event ids, newest first, each with its last step. */
  recent(limit = 20): Array<{ id: string; last: JournalStep | undefined }> {
    const ids = [...this.entries.keys()].slice(-limit).reverse();
    return ids.map((id) => {
      const e = this.entries.get(id)!;
      const last = e.steps[e.steps.length - 1];
      return { id, last: last === undefined ? undefined : servedStep(last) };
    });
  }

  get size(): number {
    return this.entries.size;
  }

  observeSource(es: EventSource, events: Instrumentation<SourceEvents>): void {
    const where = `eventsource ${namespaceOf(es)}/${es.metadata.name}`;
    events.on("dispatched", (e) => this.record(e.id, where, "received", { event: e.event }));
    events.on("published", (e) => this.record(e.id, where, "published", { event: e.event, topic: e.topic }));
    events.on("delivered", (e) =>
      this.record(e.id, where, "delivered", { event: e.event, sink: e.sink, status: e.status }),
    );
    events.on("failed", (e) => this.record(e.id, where, "not taken", { event: e.event, reason: reason(e.error) }));
  }

  observeTrigger(t: Trigger, events: Instrumentation<TriggerEvents>): void {
    const where = `trigger ${namespaceOf(t)}/${t.metadata.name}`;
    const inputFilter = (input: string | undefined): string | undefined =>
      input === undefined ? undefined : t.spec.inputs[input]?.filter;
    const sub = (i: number) => ({ subscriber: i, condition: t.spec.subscribers[i]?.condition });
    const r = (id: string, step: string, detail: Record<string, unknown>) => this.record(id, where, step, detail);
    events.on("received", (e) => r(e.id, "received", { input: e.input }));
    events.on("filtered", (e) =>
      r(e.id, e.reason === "error" ? "filter failed" : "filtered out", {
        ...(e.input === undefined ? {} : { input: e.input, filter: inputFilter(e.input) }),
        ...(e.subscriber === undefined
          ? {}
          : { ...sub(e.subscriber), filter: t.spec.subscribers[e.subscriber]?.filter }),
      }),
    );
    events.on("pending", (e) => r(e.id, "waiting for a join", { ...sub(e.subscriber), input: e.input, key: e.key }));
    events.on("consumed", (e) => r(e.id, "joined", { ...sub(e.subscriber), input: e.input }));
    events.on("fired", (e) =>
      r(e.id, "fired", { ...sub(e.subscriber), ...(e.joined.length > 0 ? { joined: e.joined } : {}) }),
    );
    events.on("delivered", (e) =>
      r(e.id, "delivered", {
        ...sub(e.subscriber),
        target: e.target,
        ...(e.status === undefined ? {} : { status: e.status }),
      }),
    );
    events.on("retried", (e) =>
      r(e.id, "retried", { ...sub(e.subscriber), target: e.target, attempt: e.attempt, reason: reason(e.error) }),
    );
    events.on("dead_lettered", (e) =>
      r(e.id, "dead-lettered", { ...sub(e.subscriber), target: e.target, to: e.deadLetter, reason: reason(e.error) }),
    );
    events.on("dropped", (e) =>
      r(e.id, "dropped (no dead-letter target)", { ...sub(e.subscriber), target: e.target, reason: reason(e.error) }),
    );
    events.on("expired", (e) => r(e.id, "released: join window expired", { ...sub(e.subscriber), input: e.input }));
    events.on("evicted", (e) => r(e.id, "released: maxPending exceeded", { ...sub(e.subscriber), input: e.input }));
    events.on("reset", (e) => r(e.id, "released: correlation.reset", { ...sub(e.subscriber), input: e.input }));
    events.on("uncorrelated", (e) => r(e.id, "no correlation key", { ...sub(e.subscriber), input: e.input }));
    events.on("deduplicated", (e) => r(e.id, "deduplicated", { ...sub(e.subscriber), key: e.key }));
    events.on("debounced", (e) => r(e.id, "debounced", sub(e.subscriber)));
    events.on("batched", (e) => {
      for (const id of e.ids) r(id, "batched", { ...sub(e.subscriber), batchSize: e.size });
    });
    events.on("throttled", (e) => r(e.id, "rate-limited", { ...sub(e.subscriber), waitedMs: Math.round(e.ms) }));
  }

  /** `GET /events/<id>` (404 when unknown) and `GET /events?limit=N`; false for other paths. */
  serve(req: IncomingMessage, res: ServerResponse): boolean {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== "/events" && !url.pathname.startsWith("/events/")) return false;
    const json = (status: number, body: unknown): void => sendJson(res, status, body);
    if (req.method !== "GET") {
      sendBody(res, 405, undefined, { allow: "GET" });
      return true;
    }
    if (url.pathname === "/events" || url.pathname === "/events/") {
      const limit = Number(url.searchParams.get("limit") ?? "20");
      json(200, { events: this.recent(Number.isInteger(limit) && limit > 0 ? Math.min(limit, 1_000) : 20) });
      return true;
    }
    const id = decodeURIComponent(url.pathname.slice("/events/".length));
    const e = this.get(id);
    if (e === undefined)
      json(404, {
        error: `no event ${id} in the journal (it keeps the latest ${this.maxEvents} events of this run)`,
      });
    else json(200, e);
    return true;
  }
}
