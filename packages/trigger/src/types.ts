import type { CloudEvent } from "@ofevents/core";

/** Instrumentation events of a trigger; `subscriber` is the subscriber's index. */
export interface TriggerEvents {
  received: { input: string; id: string };
  filtered: { input?: string; subscriber?: number; id: string; reason: "filter" | "error" };
  pending: { subscriber: number; input: string; id: string; key: string };
  /** A pending event left its list because a firing joined it (see `pending`, `expired`, `evicted`). */
  consumed: { subscriber: number; input: string; id: string };
  fired: { subscriber: number; id: string; joined: string[] };
  /** The deliveries of a firing finished: delivered, dead-lettered, dropped, or failed back to the bus. */
  settled: { subscriber: number; id: string };
  /** `durationMs`: from the trigger's receipt of the (last joined) event to this delivery. */
  delivered: {
    subscriber: number;
    id: string;
    target: string;
    kind: "sink" | "topic";
    status?: number;
    durationMs?: number;
  };
  retried: { subscriber: number; id: string; target: string; attempt: number; error: unknown };
  /** `event`: the event as it was to be delivered (transformed), without the dead-letter attributes. */
  dead_lettered: {
    subscriber: number;
    id: string;
    target: string;
    deadLetter: string;
    error: unknown;
    event: CloudEvent;
  };
  dropped: { subscriber: number; id: string; target: string; error: unknown };
  expired: { subscriber: number; input: string; id: string };
  evicted: { subscriber: number; input: string; id: string };
  uncorrelated: { subscriber: number; input: string; id: string };
  /** A pending event released unjoined by `correlation.reset` (cron or after). */
  reset: { subscriber: number; input: string; id: string };
  /** A batch was delivered or dead-lettered; `ids` are its members. */
  batched: { subscriber: number; size: number; ids: string[] };
  /** An event of a burst acknowledged without delivery: superseded (trailing) or after the leading one. */
  debounced: { subscriber: number; id: string };
  /** An event acknowledged without delivery: its dedup key was delivered within the window. */
  deduplicated: { subscriber: number; id: string; key: string };
  /** An attempt waited `ms` for the rate limit (or a Retry-After pause). */
  throttled: { subscriber: number; id: string; ms: number };
}

/** Extension attribute carrying the ids of the events a delivered event was joined with. */
export const JOINED_EXTENSION = "ofjoined";
