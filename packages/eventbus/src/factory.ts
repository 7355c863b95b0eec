import { OfEventsError, ErrorCode, type EventBusSpec, type Logger, type SecretResolver } from "@ofevents/core";
import type { DaprBusOptions } from "./drivers/dapr.js";
import { createMemoryBus } from "./drivers/memory.js";
import type { EventBus } from "./types.js";

export interface CreateEventBusOptions {
  logger: Logger;
  /** Resolves credential references of the bus spec (default: none available). */
  secrets?: SecretResolver | undefined;
  /** Namespace of the EventBus resource, for secret look-ups (default "default"). */
  namespace?: string | undefined;
  /** "dapr": whatever the spec says, go through the Dapr sidecar (its Component names the broker). */
  via?: "direct" | "dapr" | undefined;
  /** Sidecar and pub/sub Component, for `via: "dapr"` or a `spec.dapr` bus. */
  dapr?: DaprBusOptions | undefined;
}

/**
 * Creates the bus an EventBus spec describes, picked by the field that is set; `undefined` gives
 * the in-memory bus. `via: "dapr"` (or a `spec.dapr` bus) goes through the Dapr sidecar instead,
 * whatever broker its Component names. `natsStreaming` must be mapped to `jetstream` by the
 * caller (it warns).
 * Drivers of external systems load lazily, so their clients load only when used. Resolves once
 * the bus is connected.
 */
export async function createEventBus(
  spec: EventBusSpec | undefined,
  options: CreateEventBusOptions,
): Promise<EventBus> {
  if (options.via === "dapr" || spec?.dapr !== undefined) {
    if (options.dapr === undefined) {
      throw new OfEventsError(ErrorCode.Config, "a bus through Dapr needs options.dapr (at least pubsubName)");
    }
    const { createDaprBus } = await import("./drivers/dapr.js");
    return createDaprBus({ ...options.dapr, logger: options.logger, spec });
  }
  if (spec === undefined || spec.memory !== undefined) {
    return createMemoryBus({ logger: options.logger, maxDeliver: spec?.memory?.maxDeliver });
  }
  if (spec.jetstream !== undefined) {
    const { createJetStreamBus } = await import("./drivers/jetstream.js");
    return createJetStreamBus(spec.jetstream, options);
  }
  if (spec.kafka !== undefined) {
    const { createKafkaBus } = await import("./drivers/kafka.js");
    return createKafkaBus(spec.kafka, options);
  }
  const set = Object.keys(spec).filter((k) => k !== "topic");
  throw new OfEventsError(ErrorCode.Config, `the ${set.join(", ")} bus driver is not available in this build`);
}
