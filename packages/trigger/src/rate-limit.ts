/**
 * A subscriber's `delivery.rateLimit`: a token bucket over its attempts (the generic cell rate
 * algorithm: `perSecond` tokens a second, up to `burst` at once), so that in any interval of t
 * seconds at most `burst + perSecond * t` attempts start. A sink's Retry-After pauses the whole
 * subscriber: no attempt starts before the pause is over. Waiting attempts hold their event, and
 * with it the bus message, so the bus stops handing out more (backpressure, bounded memory).
 */
import { sleep } from "@ofevents/core";

export class TokenBucket {
  private readonly intervalMs: number;
  private readonly toleranceMs: number;
  /** The theoretical time the next attempt is due at a steady rate. */
  private due = 0;
  private pausedUntil = 0;

  constructor(
    perSecond: number,
    burst = 1,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.intervalMs = 1000 / perSecond;
    this.toleranceMs = (Math.max(1, burst) - 1) * this.intervalMs;
  }

  /** Waits for a token; resolves with the time waited, ms. Rejects with the signal's reason when aborted. */
  async take(signal?: AbortSignal): Promise<number> {
    const start = this.now();
    const due = Math.max(this.due, start);
    const at = Math.max(start, due - this.toleranceMs, this.pausedUntil);
    this.due = Math.max(due, at) + this.intervalMs;
    if (at > start) await sleep(at - start, signal);
    // A pause asked for while this attempt waited holds it too.
    for (let t = this.now(); this.pausedUntil > t && signal?.aborted !== true; t = this.now())
      await sleep(this.pausedUntil - t, signal);
    signal?.throwIfAborted();
    return this.now() - start;
  }

  /** No attempt starts within the next `ms` (a sink's Retry-After). */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + ms);
  }
}
