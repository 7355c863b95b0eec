/**
 * The one retry loop of every outbound hop (to an HTTP sink, to a bus topic, from a source to the
 * bus): attempts until success, an error that is not worth retrying (see `classify`), the retry
 * budget, or a stop. Backoff is exponential or linear with jitter (core's `backoffDelay`); a sink's
 * Retry-After stretches the wait up to `retryAfterMaxMs`.
 */
import { BusError, DeliveryError, OfEventsError, backoffDelay, sleep, type BackoffPolicy } from "@ofevents/core";

/**
 * What an outbound error means for the event:
 * - `retry`: transient (a 5xx, 429 or 408 answer, a timeout, a connection or broker error): try again;
 * - `rejected`: the sink refused this event (another 4xx): trying again cannot help;
 * - `poison`: the event itself cannot be sent (malformed, or an expression failed on it);
 * - `stop`: the hop cannot go on now, through no fault of the event (the bus client is closed).
 * Errors of unknown origin count as transient: a bug surfaces as retries, never as a silent drop.
 */
export type Verdict = "retry" | "rejected" | "poison" | "stop";

export function classify(err: unknown): Verdict {
  if (err instanceof DeliveryError) return err.retriable ? "retry" : "rejected";
  if (err instanceof BusError) return err.retriable ? "retry" : "stop";
  if (err instanceof OfEventsError) return err.retriable ? "retry" : "poison";
  return "retry";
}

/** Whether retrying cannot help this event: it is `poison` or was `rejected`. A source acks and skips it. */
export function refused(err: unknown): boolean {
  const v = classify(err);
  return v === "poison" || v === "rejected";
}

/** How often and how far apart a hop is attempted. */
export interface RetrySchedule {
  /** Retries after the first attempt. */
  retry: number;
  backoffPolicy: BackoffPolicy;
  backoffDelayMs: number;
  /** Upper bound of one wait, ms (default 60 s). */
  maxDelayMs?: number;
  /** Longest wait a Retry-After may ask for, ms (default: no Retry-After honoured). */
  retryAfterMaxMs?: number;
}

export interface AttemptInfo<E = unknown> {
  /** The attempt that failed (1-based). */
  attempt: number;
  error: E;
  /** The wait before the next attempt. */
  delayMs: number;
}

export interface RetryOptions<E = unknown> {
  /**
   * Ends waits between attempts and prevents new ones; an attempt in flight is let finish. Several
   * signals: any of them (combined only when a wait happens, so a first attempt that succeeds
   * costs no signal).
   */
  stopRetrying?: AbortSignal | ReadonlyArray<AbortSignal | undefined> | undefined;
  /** Called before each wait. */
  onRetry?: ((info: AttemptInfo<E>) => void) | undefined;
}

/** The wait after failed attempt `n` (1-based) under `schedule`. */
export function retryDelay(n: number, schedule: RetrySchedule): number {
  return backoffDelay(n, {
    policy: schedule.backoffPolicy,
    delayMs: schedule.backoffDelayMs,
    ...(schedule.maxDelayMs === undefined ? {} : { maxDelayMs: schedule.maxDelayMs }),
  });
}

/**
 * Runs `attempt(n)` for n = 1, 2, … until it resolves; rejects with the last error once it is not
 * `retry`, the schedule's retries are spent, or `stopRetrying` aborted.
 */
export function withRetry<T, E = unknown>(
  attempt: (n: number) => Promise<T>,
  schedule: RetrySchedule,
  o: RetryOptions<E> = {},
): Promise<T> {
  // The first attempt runs on its own: an event that is taken at once costs no loop, no signal.
  let first: Promise<T>;
  try {
    first = attempt(1);
  } catch (err) {
    first = Promise.reject(err);
  }
  return first.catch((err: unknown) => retryAfter(err, attempt, schedule, o));
}

/** Attempts 2, 3, … after attempt 1 failed with `firstError`. */
async function retryAfter<T, E>(
  firstError: unknown,
  attempt: (n: number) => Promise<T>,
  schedule: RetrySchedule,
  o: RetryOptions<E>,
): Promise<T> {
  const signals = stopSignals(o.stopRetrying);
  const stopped = (): boolean => signals.some((s) => s.aborted);
  let err = firstError;
  for (let n = 1; ; n++) {
    if (classify(err) !== "retry" || n > schedule.retry || stopped()) throw err;
    let delayMs = retryDelay(n, schedule);
    const asked = err instanceof DeliveryError ? err.retryAfterMs : undefined;
    if (asked !== undefined && schedule.retryAfterMaxMs !== undefined)
      delayMs = Math.max(delayMs, Math.min(asked, schedule.retryAfterMaxMs));
    o.onRetry?.({ attempt: n, error: err as E, delayMs });
    await sleep(delayMs, signals.length > 1 ? AbortSignal.any(signals) : signals[0]);
    if (stopped()) throw err;
    try {
      return await attempt(n + 1);
    } catch (next) {
      err = next;
    }
  }
}

function stopSignals(given: RetryOptions["stopRetrying"]): AbortSignal[] {
  if (given === undefined) return [];
  if (given instanceof AbortSignal) return [given];
  return given.filter((s): s is AbortSignal => s !== undefined);
}

/**
 * The wait between a source's attempts to hand a message on (after the runtime's own publish
 * retries): 250 ms doubling to 10 s, with jitter; a source waits for as long as the bus or sink is
 * down, so the cap bounds how late it notices the recovery.
 */
export const SOURCE_RETRY: RetrySchedule = {
  retry: Infinity,
  backoffPolicy: "exponential",
  backoffDelayMs: 250,
  maxDelayMs: 10_000,
};

export interface UntilTakenOptions {
  /** The source stops: no new attempt, the wait ends. */
  signal: AbortSignal;
  /** Ends one wait early without stopping (e.g. a Kafka rebalance). */
  wake?: () => AbortSignal | undefined;
  /** False once the message can no longer be acknowledged (its connection ended). */
  alive?: () => boolean;
  /** Told why the message is skipped. */
  onRefused: (err: unknown) => void;
  /** Called before each wait, e.g. to log or to keep the message claimed; awaited. */
  onRetry: (info: AttemptInfo) => void | Promise<void>;
  /** Called after each wait, before the next attempt; what it throws ends `untilTaken` with that error. */
  afterWait?: () => Promise<void>;
  schedule?: RetrySchedule;
}

/**
 * How a source hands one message on: `attempt` (the runtime's dispatch) until it is taken, refused
 * (`refused(err)`: the message is acknowledged and skipped) or the source stops (the message stays
 * unacknowledged, so the broker delivers it again). A source keeps its message until then, which is
 * what makes it acknowledge late; it never drops one because a bus or sink is down.
 */
export async function untilTaken(
  attempt: () => Promise<unknown>,
  o: UntilTakenOptions,
): Promise<"taken" | "refused" | "stopped"> {
  const schedule = o.schedule ?? SOURCE_RETRY;
  const gone = (): boolean => o.signal.aborted || o.alive?.() === false;
  for (let n = 1; ; n++) {
    if (gone()) return "stopped";
    try {
      await attempt();
      return "taken";
    } catch (err) {
      if (refused(err)) {
        o.onRefused(err);
        return "refused";
      }
      if (gone()) return "stopped";
      const delayMs = retryDelay(n, schedule);
      await o.onRetry({ attempt: n, error: err, delayMs });
      const wake = o.wake?.();
      await sleep(delayMs, wake === undefined ? o.signal : AbortSignal.any([o.signal, wake]));
      if (o.afterWait !== undefined && !gone()) await o.afterWait();
    }
  }
}
