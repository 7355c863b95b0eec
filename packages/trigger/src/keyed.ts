/**
 * Order within a key (a subscriber's `ordering`). Events reach a subscriber in bus order, but the
 * work before their delivery is asynchronous (key and filter expressions), so two events can
 * overtake each other on the way. A {@link Sequencer} hands out tickets on arrival; each event's
 * synchronous step (joining its key's queue) runs in ticket order. A {@link KeyedQueue} then runs
 * the work of one key one at a time, in the order it was queued, and different keys in parallel.
 */

/** A place in arrival order; `done()` passes the turn on once this holder is past its ordered step. */
export interface Ticket {
  /** Resolves when every earlier ticket is done. */
  readonly turn: Promise<void>;
  /** Passes the turn on (after this ticket's own turn came, so calling it early is safe). Idempotent. */
  done(): void;
}

export class Sequencer {
  private tail: Promise<void> = Promise.resolve();

  /** Takes the next ticket; call synchronously when the event arrives. */
  ticket(): Ticket {
    const turn = this.tail;
    let open!: () => void;
    this.tail = new Promise<void>((r) => (open = r));
    let passed = false;
    return {
      turn,
      done() {
        if (passed) return;
        passed = true;
        void turn.then(open);
      },
    };
  }
}

/** Work queued per key: one at a time within a key, in queue order; keys run in parallel. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();

  /**
   * Queues `work` under `key`. It starts when the work queued before it under `key` settled or
   * called its `leave`; it may call `leave()` itself to let the next one start early (work that
   * goes on outside the key's order, such as an event held by debounce).
   */
  run<T>(key: string, work: (leave: () => void) => Promise<T>): Promise<T> {
    const before = this.tails.get(key);
    let open!: () => void;
    const mine = new Promise<void>((r) => (open = r));
    this.tails.set(key, mine);
    const leave = (): void => {
      open();
      if (this.tails.get(key) === mine) this.tails.delete(key);
    };
    const started = before === undefined ? invoke(work, leave) : before.then(() => work(leave));
    started.then(leave, leave);
    return started;
  }

  /** Keys with work queued or running. */
  get size(): number {
    return this.tails.size;
  }
}

function invoke<T>(work: (leave: () => void) => Promise<T>, leave: () => void): Promise<T> {
  try {
    return work(leave);
  } catch (err) {
    return Promise.reject(err);
  }
}
