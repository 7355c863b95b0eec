/**
 * The in-process SeenSet: the memory bus's, the Kafka driver's view of its compacted topic, and
 * the fallback of a caller whose bus has no `seenSet` (Dapr).
 */
import { BusError, ErrorCode } from "@ofevents/core";
import type { SeenSet } from "./types.js";

/** Rejects a window that is not a positive number of milliseconds (CONFIG, not retriable). */
export function checkWindow(windowMs: number): void {
  if (!Number.isFinite(windowMs) || windowMs <= 0) {
    throw new BusError(ErrorCode.Config, `a seen set's window must be a positive number of ms, not ${windowMs}`, {
      retriable: false,
    });
  }
}

/**
 * Keys seen within `windowMs`, in a Map of key → expiry time. Each add first drops the keys that
 * expired, oldest first, so memory holds about the keys added within one window. Sets built on one
 * `keys` Map share their keys. The constructor throws a CONFIG BusError for a window that is not
 * positive.
 */
export class MemorySeenSet implements SeenSet {
  readonly kind = "memory";

  constructor(
    readonly windowMs: number,
    private readonly keys: Map<string, number> = new Map(),
  ) {
    checkWindow(windowMs);
  }

  has(key: string): Promise<boolean> {
    const expires = this.keys.get(key);
    if (expires === undefined) return Promise.resolve(false);
    if (Date.now() < expires) return Promise.resolve(true);
    this.keys.delete(key);
    return Promise.resolve(false);
  }

  add(key: string): Promise<void> {
    this.remember(key, Date.now());
    return Promise.resolve();
  }

  /**
   * Records `key` as added at `addedAt` (ms since the epoch), e.g. when loading keys kept elsewhere;
   * a key added longer than the window ago is not kept. Load the oldest first: the sweep stops at
   * the first key that has not expired.
   */
  remember(key: string, addedAt: number): void {
    const now = Date.now();
    for (const [k, expires] of this.keys) {
      if (expires > now) break;
      this.keys.delete(k);
    }
    // Re-inserted at the end, so the Map stays ordered by expiry.
    this.keys.delete(key);
    const expires = addedAt + this.windowMs;
    if (expires > now) this.keys.set(key, expires);
  }

  /** How many keys are held (expired ones not yet swept included). */
  get size(): number {
    return this.keys.size;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
