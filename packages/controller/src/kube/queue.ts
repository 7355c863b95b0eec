/** A queue of keys: deduplicated, served one at a time, with per-key exponential backoff. */
export class WorkQueue {
  readonly #queued = new Set<string>();
  readonly #order: string[] = [];
  readonly #failures = new Map<string, number>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #wake: (() => void) | undefined;

  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
  ) {}

  add(key: string): void {
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#order.push(key);
    this.#wake?.();
  }

  addRateLimited(key: string): void {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    const delay = Math.min(this.baseMs * 2 ** n, this.maxMs);
    const t = setTimeout(() => {
      this.#timers.delete(t);
      this.add(key);
    }, delay);
    this.#timers.add(t);
  }

  /** Keys waiting to be served. */
  get depth(): number {
    return this.#order.length;
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** The next key, or undefined once `signal` aborts. */
  async next(signal: AbortSignal): Promise<string | undefined> {
    while (!signal.aborted) {
      const key = this.#order.shift();
      if (key !== undefined) {
        this.#queued.delete(key);
        return key;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
      this.#wake = undefined;
    }
    return undefined;
  }

  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#wake?.();
  }
}
