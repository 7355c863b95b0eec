/** Retry delays: exponential or linear with full jitter, as in Knative's delivery spec. */
export type BackoffPolicy = "exponential" | "linear";

export interface BackoffOptions {
  policy: BackoffPolicy;
  /** Base delay in ms. */
  delayMs: number;
  /** Upper bound of one delay in ms. */
  maxDelayMs?: number;
  /** Fraction of the delay that is randomised (0..1, default 0.2). */
  jitter?: number;
  random?: () => number;
}

/**
 * Delay before retry number `attempt` (1-based): exponential = delay·2^(attempt-1),
 * linear = delay·attempt, then ± jitter, capped at maxDelayMs.
 */
export function backoffDelay(attempt: number, o: BackoffOptions): number {
  const base = o.policy === "exponential" ? o.delayMs * 2 ** (attempt - 1) : o.delayMs * attempt;
  const capped = Math.min(base, o.maxDelayMs ?? 60_000);
  const jitter = o.jitter ?? 0.2;
  const r = (o.random ?? Math.random)();
  return Math.max(0, Math.round(capped * (1 - jitter + 2 * jitter * r)));
}

/** Resolves after `ms`, or early (without error) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Resolves or rejects as `p` does, or rejects with `onTimeout()` after `ms`, whichever comes first. */
export async function within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(onTimeout()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
