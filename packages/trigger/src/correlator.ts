/**
 * The condition state of one subscriber whose condition names several inputs (see README,
 * "Conditions over several inputs"):
 *
 * - each arriving event of a named input joins that input's pending list (per correlation key);
 * - an input is true while it has a pending event younger than the window, `!x` while it has none;
 * - when the condition becomes true, the triggering event fires, and the oldest pending event of
 *   each positive input that made it true is consumed with it;
 * - a pending event stays unacknowledged on the bus until it is consumed (acked after the firing
 *   was delivered), expires (acked, counted) or is evicted beyond maxPending (acked, counted);
 * - `correlation.reset`: `after` releases every pending event of a key (acked, counted) that long
 *   after the first of them arrived; `cron` (see runtime.ts) releases every pending event at once;
 * - on shutdown pending events are returned to the bus (rejected), so they are redelivered.
 */
import { evaluateCondition, satisfyingInputs, type CloudEvent, type ConditionAst } from "@ofevents/core";

export interface PendingEntry {
  input: string;
  event: CloudEvent;
  arrived: number;
  timer: NodeJS.Timeout | undefined;
  release: () => void;
  fail: (err: unknown) => void;
}

export type Outcome = { type: "pending" } | { type: "fire"; consumed: PendingEntry[] };

export interface CorrelatorOptions {
  ast: ConditionAst;
  windowMs: number;
  maxPending: number;
  onExpire: (e: PendingEntry) => void;
  onEvict: (e: PendingEntry) => void;
  /** Release the pending events of a key this long after the first of them arrived (`correlation.reset.after`). */
  resetAfterMs?: number | undefined;
  onReset?: ((e: PendingEntry) => void) | undefined;
}

export class Correlator {
  /** key → input → entries, oldest first. */
  private readonly state = new Map<string, Map<string, PendingEntry[]>>();
  private readonly counts = new Map<string, number>();
  /** key → the timer of its `reset.after`, from the key's first pending event. */
  private readonly resets = new Map<string, NodeJS.Timeout>();

  constructor(private readonly o: CorrelatorOptions) {}

  /** Adds an entry; returns whether the condition fired and which entries it consumed. */
  offer(key: string, entry: PendingEntry): Outcome {
    let byInput = this.state.get(key);
    if (byInput === undefined) {
      this.state.set(key, (byInput = new Map()));
      const after = this.o.resetAfterMs;
      if (after !== undefined) {
        const timer = setTimeout(() => this.resetKey(key), after);
        timer.unref?.();
        this.resets.set(key, timer);
      }
    }
    let list = byInput.get(entry.input);
    if (list === undefined) byInput.set(entry.input, (list = []));
    list.push(entry);
    this.counts.set(entry.input, (this.counts.get(entry.input) ?? 0) + 1);

    const truth = (name: string): boolean => (byInput.get(name)?.length ?? 0) > 0;
    if (!evaluateCondition(this.o.ast, truth)) {
      entry.timer = setTimeout(() => {
        if (this.remove(key, entry)) this.o.onExpire(entry);
      }, this.o.windowMs);
      entry.timer.unref?.();
      this.enforceBound(entry.input);
      return { type: "pending" };
    }
    const satisfied = satisfyingInputs(this.o.ast, truth) ?? [];
    const consumed: PendingEntry[] = [entry];
    this.remove(key, entry);
    for (const name of satisfied) {
      if (name === entry.input) continue;
      const oldest = byInput.get(name)?.[0];
      if (oldest !== undefined) {
        this.remove(key, oldest);
        consumed.push(oldest);
      }
    }
    return { type: "fire", consumed };
  }

  private remove(key: string, entry: PendingEntry): boolean {
    const byInput = this.state.get(key);
    const list = byInput?.get(entry.input);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return false;
    list!.splice(i, 1);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    this.counts.set(entry.input, (this.counts.get(entry.input) ?? 1) - 1);
    if (list!.length === 0) byInput!.delete(entry.input);
    if (byInput!.size === 0) {
      this.state.delete(key);
      clearTimeout(this.resets.get(key));
      this.resets.delete(key);
    }
    return true;
  }

  /** Releases every pending event of `key` (reset). */
  private resetKey(key: string): void {
    const byInput = this.state.get(key);
    if (byInput === undefined) return;
    const entries = [...byInput.values()].flat();
    for (const e of entries) if (this.remove(key, e)) this.o.onReset?.(e);
  }

  /** Releases every pending event (a `reset.cron` tick); returns how many. */
  resetAll(): number {
    const keys = [...this.state.keys()];
    let n = 0;
    for (const key of keys) {
      n += [...(this.state.get(key)?.values() ?? [])].reduce((a, l) => a + l.length, 0);
      this.resetKey(key);
    }
    return n;
  }

  /** Releases the oldest pending event of `input` (over all keys) while beyond maxPending. */
  private enforceBound(input: string): void {
    while ((this.counts.get(input) ?? 0) > this.o.maxPending) {
      let oldest: { key: string; e: PendingEntry } | undefined;
      for (const [key, byInput] of this.state) {
        const e = byInput.get(input)?.[0];
        if (e !== undefined && (oldest === undefined || e.arrived < oldest.e.arrived)) oldest = { key, e };
      }
      if (oldest === undefined) return;
      this.remove(oldest.key, oldest.e);
      this.o.onEvict(oldest.e);
    }
  }

  /** Removes and returns every pending entry (shutdown). */
  drain(): PendingEntry[] {
    const all: PendingEntry[] = [];
    for (const byInput of this.state.values()) for (const list of byInput.values()) all.push(...list);
    for (const e of all) if (e.timer !== undefined) clearTimeout(e.timer);
    for (const t of this.resets.values()) clearTimeout(t);
    this.resets.clear();
    this.state.clear();
    this.counts.clear();
    return all;
  }

  pendingCount(input?: string): number {
    if (input !== undefined) return this.counts.get(input) ?? 0;
    let n = 0;
    for (const c of this.counts.values()) n += c;
    return n;
  }
}
