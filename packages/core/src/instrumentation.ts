/**
 * Typed instrumentation events. Runtimes emit them (`dispatched`, `published`, `delivered`,
 * `retried`, `dead_lettered`...); metrics and tests subscribe. Listeners never break the emitter:
 * a throwing listener is ignored.
 */
export type Listener<T> = (payload: T) => void;

export interface Instrumentation<E extends { [K in keyof E]: unknown }> {
  on<K extends keyof E>(type: K, listener: Listener<E[K]>): () => void;
  emit<K extends keyof E>(type: K, payload: E[K]): void;
  /** Resolves with the first payload of `type` that matches, rejects after `timeoutMs`. */
  once<K extends keyof E>(type: K, predicate?: (p: E[K]) => boolean, timeoutMs?: number): Promise<E[K]>;
}

export function createInstrumentation<E extends { [K in keyof E]: unknown }>(): Instrumentation<E> {
  const listeners = new Map<keyof E, Set<Listener<never>>>();
  const api: Instrumentation<E> = {
    on(type, listener) {
      let set = listeners.get(type);
      if (set === undefined) listeners.set(type, (set = new Set()));
      set.add(listener as Listener<never>);
      return () => set.delete(listener as Listener<never>);
    },
    emit(type, payload) {
      const set = listeners.get(type);
      if (set === undefined) return;
      for (const l of set) {
        try {
          (l as Listener<typeof payload>)(payload);
        } catch {
          // A listener's failure is its own; the runtime goes on.
        }
      }
    },
    once(type, predicate, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for "${String(type)}"`));
        }, timeoutMs);
        const off = api.on(type, (p) => {
          if (predicate !== undefined && !predicate(p)) return;
          clearTimeout(timer);
          off();
          resolve(p);
        });
      });
    },
  };
  return api;
}
