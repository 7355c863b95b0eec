import { OfEventsError, ErrorCode, type EventBusSpec, type Logger } from "@ofevents/core";
import { createMemoryBus } from "./drivers/memory.js";
import type { EventBus } from "./types.js";

export interface CreateEventBusOptions {
  logger: Logger;
}

/**
 * Creates the bus an EventBus spec describes, picked by the field that is set. `undefined` gives
 * the in-memory bus. Drivers of external systems are loaded lazily, so their clients load only
 * when used.
 */
export async function createEventBus(spec: EventBusSpec | undefined, options: CreateEventBusOptions): Promise<EventBus> {
  if (spec === undefined || spec.memory !== undefined) {
    return createMemoryBus({ logger: options.logger, maxDeliver: spec?.memory?.maxDeliver });
  }
  const set = Object.keys(spec).filter((k) => k !== "topic");
  throw new OfEventsError(ErrorCode.Config, `the ${set.join(", ")} bus driver is not available in this build`);
}
