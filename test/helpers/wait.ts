import { randomBytes } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";

export interface WaitForOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Pause between two calls of the predicate (default 50 ms). */
  intervalMs?: number;
  /**
   * Names what was awaited, for the timeout error. A function is called only on timeout: for
   * diagnostics that cost something to gather or change while waiting (counts, process output).
   */
  message?: string | (() => string);
  /** Stops the wait: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Calls `predicate` until it returns a truthy value and resolves with that value. A predicate
 * that throws counts as "not yet"; its last error becomes the timeout error's `cause`.
 * Rejects after `timeoutMs`, or with the signal's reason when `signal` aborts.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const { timeoutMs = 10_000, intervalMs = 50, message = "condition", signal } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let calls = 0;
  for (;;) {
    signal?.throwIfAborted();
    calls++;
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const detail = lastError instanceof Error ? `; last error: ${lastError.message}` : "";
      throw new Error(`waitFor: ${describeWait(message)} not met after ${timeoutMs} ms (${calls} checks)${detail}`, {
        cause: lastError,
      });
    }
    try {
      await delay(Math.min(intervalMs, left), undefined, signal ? { signal } : {});
    } catch (err) {
      signal?.throwIfAborted();
      throw err;
    }
  }
}

function describeWait(message: string | (() => string)): string {
  if (typeof message === "string") return message;
  try {
    return message();
  } catch (err) {
    return `(the message function failed: ${err instanceof Error ? err.message : String(err)})`;
  }
}

/**
 * A short random lowercase hex string (8 characters by default) for names a test owns: topics,
 * groups, streams, namespaces. Valid in NATS stream names, Kafka topics and Kubernetes names.
 */
export function randomSuffix(bytes = 4): string {
  return randomBytes(bytes).toString("hex");
}
