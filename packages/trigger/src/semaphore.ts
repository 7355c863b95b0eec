/** A counting semaphore: at most `limit` holders; waiters are served in order. */
export class Semaphore {
  private active = 0;
  private readonly queue: Array<() => void> = [];
  constructor(private readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    else this.active++;
    return this.releaser();
  }

  /** A slot at once when one is free and nobody waits (its release), else undefined: no promise. */
  tryAcquire(): (() => void) | undefined {
    if (this.active >= this.limit || this.queue.length > 0) return undefined;
    this.active++;
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next !== undefined) next();
      else this.active--;
    };
  }
}
