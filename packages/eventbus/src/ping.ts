import { BusError, ErrorCode, within } from "@ofevents/core";

/**
 * Runs one round trip to a bus's backend for a readiness probe: resolves when `roundTrip` does
 * within `timeoutMs`, else rejects with a retriable BusError (BUS_UNREACHABLE) naming `what`.
 */
export async function pingWithin(what: string, roundTrip: () => Promise<unknown>, timeoutMs: number): Promise<void> {
  try {
    await within(roundTrip(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
  } catch (err) {
    throw new BusError(ErrorCode.BusUnreachable, `${what} is not reachable: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
