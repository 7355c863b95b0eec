import { OfEventsError, type CloudEvent } from "@ofevents/core";
import { DeadLetterExtension } from "./types.js";

const MAX_REASON = 512;

/** A copy of `event` carrying why it is dead-lettered as extension attributes. */
export function withDeadLetterReason(
  event: CloudEvent,
  error: unknown,
  destination: string,
  deliveries: number,
): CloudEvent {
  const reason = error instanceof Error ? error.message : String(error);
  const out: Record<string, unknown> = {
    ...event,
    [DeadLetterExtension.Reason]: reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON)}…` : reason,
    [DeadLetterExtension.Destination]: destination,
    [DeadLetterExtension.Deliveries]: deliveries,
  };
  if (error instanceof OfEventsError) out[DeadLetterExtension.Code] = error.code;
  return out as CloudEvent;
}
