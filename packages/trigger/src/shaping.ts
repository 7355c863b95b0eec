/**
 * What a subscriber does with its events between filter and delivery, per key: `batch` gathers
 * them, `debounce` keeps one of a burst, `dedup` drops repeats. Each holds an event's settlement
 * (its bus message stays unacknowledged) until the event is delivered, superseded or returned.
 */
import type { SeenSet } from "@ofevents/eventbus";

/** An event held by a stage, with how to settle its bus message. */
export interface Held<T> {
  item: T;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Gathers items per key; hands a batch on at `maxEvents`, or `maxWaitMs` after its first item. */
export class Batcher<T> {
  private readonly open = new Map<string, { members: Held<T>[]; timer: NodeJS.Timeout }>();

  constructor(
    private readonly maxEvents: number,
    private readonly maxWaitMs: number,
    private readonly flush: (members: Held<T>[]) => void,
  ) {}

  /** Adds `item` to the open batch of `key`; settles when its batch was delivered or dead-lettered. */
  add(key: string, item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let batch = this.open.get(key);
      if (batch === undefined) {
        const timer = setTimeout(() => this.take(key), this.maxWaitMs);
        this.open.set(key, (batch = { members: [], timer }));
      }
      batch.members.push({ item, resolve, reject });
      if (batch.members.length >= this.maxEvents) this.take(key);
    });
  }

  private take(key: string): void {
    const batch = this.open.get(key);
    if (batch === undefined) return;
    this.open.delete(key);
    clearTimeout(batch.timer);
    this.flush(batch.members);
  }

  /** Removes and returns every member of the batches not handed on yet (shutdown). */
  drain(): Held<T>[] {
    const all: Held<T>[] = [];
    for (const b of this.open.values()) {
      clearTimeout(b.timer);
      all.push(...b.members);
    }
    this.open.clear();
    return all;
  }
}

/**
 * Bursts per key: events closer than `windowMs` to the previous one of their key. Trailing
 * ({@link hold}): the last of a burst is due `windowMs` after it arrived with no newer one; each
 * earlier one is superseded. Leading ({@link lead}): the first of a burst goes on at once, the
 * later ones are suppressed; the burst ends after `windowMs` without an event of its key.
 */
export class Debouncer<T> {
  private readonly held = new Map<string, { entry: Held<T>; timer: NodeJS.Timeout }>();
  private readonly quiet = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly windowMs: number,
    /** A trailing event whose burst ended: deliver it, then settle it. */
    private readonly due: (entry: Held<T>) => void,
    /** A trailing event superseded by a newer one of its key: settle it. */
    private readonly superseded: (entry: Held<T>) => void,
  ) {}

  /** Leading edge: whether this event opens a burst of `key` (deliver it) or falls in one (skip it). */
  lead(key: string): boolean {
    const burst = this.quiet.get(key);
    if (burst !== undefined) clearTimeout(burst);
    const timer = setTimeout(() => this.quiet.delete(key), this.windowMs);
    timer.unref?.();
    this.quiet.set(key, timer);
    return burst === undefined;
  }

  /** Trailing edge: holds `item` as the last of its burst; settles when it was delivered or superseded. */
  hold(key: string, item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry: Held<T> = { item, resolve, reject };
      const before = this.held.get(key);
      if (before !== undefined) {
        clearTimeout(before.timer);
        this.superseded(before.entry);
      }
      const timer = setTimeout(() => {
        this.held.delete(key);
        this.due(entry);
      }, this.windowMs);
      this.held.set(key, { entry, timer });
    });
  }

  /** Removes and returns the trailing events not due yet (shutdown). */
  drain(): Held<T>[] {
    const all: Held<T>[] = [];
    for (const h of this.held.values()) {
      clearTimeout(h.timer);
      all.push(h.entry);
    }
    this.held.clear();
    for (const t of this.quiet.values()) clearTimeout(t);
    this.quiet.clear();
    return all;
  }
}

/** A claim on a dedup key: report whether the event was delivered. */
export type Claim = (delivered: boolean) => Promise<void>;

/**
 * Duplicate suppression over a {@link SeenSet}: a key is claimed before delivery (a second event
 * with a key in flight waits for the first's outcome) and added to the set once delivered.
 */
export class Dedup {
  private readonly inFlight = new Map<string, Promise<boolean>>();

  constructor(
    readonly seen: SeenSet,
    private readonly onAddFailed: (key: string, err: unknown) => void,
  ) {}

  /** Resolves with a claim to deliver under `key`, or undefined when `key` was delivered within the window. */
  async claim(key: string): Promise<Claim | undefined> {
    for (let prior = this.inFlight.get(key); prior !== undefined; prior = this.inFlight.get(key))
      if (await prior) return undefined;
    let settle!: (delivered: boolean) => void;
    this.inFlight.set(key, new Promise<boolean>((r) => (settle = r)));
    const finish = (delivered: boolean): void => {
      this.inFlight.delete(key);
      settle(delivered);
    };
    let seen: boolean;
    try {
      seen = await this.seen.has(key);
    } catch (err) {
      finish(false);
      throw err;
    }
    if (seen) {
      finish(true);
      return undefined;
    }
    return async (delivered) => {
      try {
        if (delivered) await this.seen.add(key);
      } catch (err) {
        this.onAddFailed(key, err);
      } finally {
        finish(delivered);
      }
    };
  }
}
