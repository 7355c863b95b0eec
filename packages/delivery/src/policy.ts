/**
 * The delivery policy of one outbound hop, from a subscriber's `delivery` block (Knative's delivery
 * spec): the same retries and backoff whether the target is an HTTP sink or a bus topic; the
 * timeout, Retry-After bound and format apply to HTTP sinks.
 */
import { durationMs, type BackoffPolicy } from "@ofevents/core";
import type { RetrySchedule } from "./retry.js";

export interface DeliveryPolicy extends RetrySchedule {
  timeoutMs: number;
  retryAfterMaxMs: number;
  format: "binary" | "structured";
}

export const DEFAULT_DELIVERY: DeliveryPolicy = {
  retry: 3,
  backoffPolicy: "exponential",
  backoffDelayMs: 200,
  timeoutMs: 30_000,
  retryAfterMaxMs: 60_000,
  format: "binary",
};

/** The delivery policy a subscriber's `delivery` block asks for, with defaults filled in. */
export function deliveryPolicy(
  d: {
    retry?: number | undefined;
    backoffPolicy?: BackoffPolicy | undefined;
    backoffDelay?: string | undefined;
    timeout?: string | undefined;
    retryAfterMax?: string | undefined;
    format?: "binary" | "structured" | undefined;
  } = {},
): DeliveryPolicy {
  return {
    retry: d.retry ?? DEFAULT_DELIVERY.retry,
    backoffPolicy: d.backoffPolicy ?? DEFAULT_DELIVERY.backoffPolicy,
    backoffDelayMs: d.backoffDelay === undefined ? DEFAULT_DELIVERY.backoffDelayMs : durationMs(d.backoffDelay),
    timeoutMs: d.timeout === undefined ? DEFAULT_DELIVERY.timeoutMs : durationMs(d.timeout),
    retryAfterMaxMs: d.retryAfterMax === undefined ? DEFAULT_DELIVERY.retryAfterMaxMs : durationMs(d.retryAfterMax),
    format: d.format ?? DEFAULT_DELIVERY.format,
  };
}
