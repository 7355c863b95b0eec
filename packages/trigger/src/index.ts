export {
  startTrigger,
  DEFAULT_CONCURRENCY,
  DEFAULT_MAX_PENDING,
  DEFAULT_STOP_GRACE_MS,
  DEFAULT_WINDOW,
} from "./runtime.js";
export type { TriggerRuntime, TriggerRuntimeOptions } from "./runtime.js";
export { JOINED_EXTENSION } from "./types.js";
export type { TriggerEvents } from "./types.js";
export { KEEPS_DEAD_LETTERS } from "./runtime.js";
export {
  redrive,
  redriveOne,
  redrivenEvent,
  REDRIVEN_EXTENSION,
  type RedriveOptions,
  type RedriveOutcome,
  type RedriveResult,
} from "./redrive.js";
export {
  replay,
  REPLAYED_EXTENSION,
  REPLAY_DRAIN_TIMEOUT_MS,
  type ReplayOptions,
  type ReplayResult,
} from "./replay.js";
