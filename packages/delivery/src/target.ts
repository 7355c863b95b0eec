/**
 * Every outbound hop of an event, to an HTTP sink or to a bus topic, with one policy, and the one
 * dead-letter path: what a target does not take goes down the subscriber's dead-letter targets in
 * order (a sink, then a topic), as a copy carrying the reason attributes (`withDeadLetterReason`).
 */
import {
  ErrorCode,
  OfEventsError,
  SpanKind,
  eventAttributes,
  inSpan,
  tracing,
  withSpanContext,
  type CloudEvent,
} from "@ofevents/core";
import { withDeadLetterReason, type EventPublisher } from "@ofevents/eventbus";
import type { DeliveryPolicy } from "./policy.js";
import { classify, withRetry, type AttemptInfo } from "./retry.js";
import type { Payload, SinkClient } from "./sink.js";

export type Target = { kind: "sink"; url: string } | { kind: "topic"; topic: string };

/** How a target is named in logs, metrics and the dead-letter attributes: its URL or its topic. */
export function targetName(t: Target): string {
  return t.kind === "sink" ? t.url : t.topic;
}

export interface Sent {
  /** The sink's HTTP status (sinks only). */
  status?: number;
  /** Attempts made, the successful one included. */
  attempts: number;
}

/** A target did not take the event; `attempts` were made (0 when the event never left). */
export class NotDelivered extends OfEventsError {
  constructor(
    readonly target: Target,
    readonly error: unknown,
    readonly attempts: number,
  ) {
    super(
      error instanceof OfEventsError ? error.code : ErrorCode.DeliveryFailed,
      error instanceof Error ? error.message : String(error),
      { retriable: classify(error) === "retry", cause: error },
    );
  }
}

export interface SendOptions {
  /** Cancels the attempt in flight (HTTP) and ends the waits. */
  signal?: AbortSignal | undefined;
  /** Ends the waits between attempts and prevents new ones; an attempt in flight is let finish. */
  stopRetrying?: AbortSignal | undefined;
  onRetry?: ((info: AttemptInfo) => void) | undefined;
  /** Awaited before each attempt (a rate limit); a rejection ends the send with that error. */
  gate?: (() => Promise<void>) | undefined;
}

export interface Outbound {
  /**
   * Sends `event` to `target` under `policy`; rejects with NotDelivered. A batch (an array) goes to
   * a sink as one request; a topic takes events, not batches, so a batch to a topic is refused.
   */
  send(event: Payload, target: Target, policy: DeliveryPolicy, o?: SendOptions): Promise<Sent>;
  /**
   * Sends the dead-letter copy of `event` (why: `error`, after `attempts` at `failed`) to the first
   * of `deadLetters` that takes it. Resolves with the target that took it, or undefined when there
   * is none (the caller reports the drop); rejects with the last NotDelivered when none took it.
   */
  deadLetter(
    event: CloudEvent,
    failed: string,
    error: unknown,
    attempts: number,
    deadLetters: readonly Target[],
    policy: DeliveryPolicy,
    o?: SendOptions & { onFallback?: (from: Target, err: NotDelivered) => void },
  ): Promise<Target | undefined>;
}

export function createOutbound(o: { sinks?: SinkClient | undefined; bus?: EventPublisher | undefined }): Outbound {
  /**
   * One hop as a span (`deliver <url>` or `publish <topic>`), its attempts within it; the event
   * goes on carrying this span's trace context. Retries are the span's `retry` events.
   */
  function send(event: Payload, target: Target, policy: DeliveryPolicy, so: SendOptions = {}): Promise<Sent> {
    if (!tracing.enabled) return sendOnce(event, target, policy, so);
    const one = Array.isArray(event) ? undefined : (event as CloudEvent);
    const name = target.kind === "sink" ? `deliver ${target.url}` : `publish ${target.topic}`;
    const attributes = {
      ...(one === undefined
        ? { "ofevents.batch_size": (event as readonly CloudEvent[]).length }
        : eventAttributes(one)),
      ...(target.kind === "sink" ? { "url.full": target.url } : { "messaging.destination.name": target.topic }),
    };
    return inSpan(
      name,
      { kind: target.kind === "sink" ? SpanKind.CLIENT : SpanKind.PRODUCER, attributes },
      async (span) => {
        const carried = one === undefined ? event : withSpanContext(one, span);
        const sent = await sendOnce(carried, target, policy, {
          ...so,
          onRetry: (info) => {
            span?.addEvent("retry", {
              "ofevents.attempt": info.attempt,
              "ofevents.retry_delay_ms": info.delayMs,
              "error.message": info.error instanceof Error ? info.error.message : String(info.error),
            });
            so.onRetry?.(info);
          },
        });
        span?.setAttribute("ofevents.attempts", sent.attempts);
        if (sent.status !== undefined) span?.setAttribute("http.response.status_code", sent.status);
        return sent;
      },
    );
  }

  function sendOnce(event: Payload, target: Target, policy: DeliveryPolicy, so: SendOptions = {}): Promise<Sent> {
    if (target.kind === "sink") {
      const sinks = o.sinks;
      if (sinks === undefined)
        return Promise.reject(new NotDelivered(target, new Error("no sink client to deliver with"), 0));
      // The sink client counts retries: attempts = retries + 1.
      let retries = 0;
      return sinks
        .deliver(target.url, event, policy, {
          signal: so.signal,
          stopRetrying: so.stopRetrying,
          gate: so.gate,
          onRetry: (info) => {
            retries = info.attempt;
            so.onRetry?.(info);
          },
        })
        .then(
          (res) => ({ status: res.status, attempts: retries + 1 }),
          (err: unknown) => {
            throw new NotDelivered(target, err, retries + 1);
          },
        );
    }
    const bus = o.bus;
    if (bus === undefined) return Promise.reject(new NotDelivered(target, new Error("no event bus to publish to"), 0));
    if (Array.isArray(event))
      return Promise.reject(new NotDelivered(target, new Error("a topic takes events one by one, not a batch"), 0));
    const one = event as CloudEvent;
    const gate = so.gate;
    let attempts = 0;
    return withRetry(
      (n) => {
        attempts = n;
        return gate === undefined ? bus.publish(target.topic, one) : gate().then(() => bus.publish(target.topic, one));
      },
      policy,
      { stopRetrying: [so.signal, so.stopRetrying], onRetry: so.onRetry },
    ).then(
      () => ({ attempts }),
      (err: unknown) => {
        throw new NotDelivered(target, err, Math.max(attempts, 1));
      },
    );
  }

  return {
    send,
    async deadLetter(event, failed, error, attempts, deadLetters, policy, so = {}) {
      if (deadLetters.length === 0) return undefined;
      const copy = withDeadLetterReason(event, error, failed, attempts);
      if (tracing.enabled)
        return inSpan(
          `dead-letter ${failed}`,
          {
            attributes: {
              ...eventAttributes(event),
              "ofevents.dead_letter.reason": String(copy["oferrorreason"]),
              "ofevents.dead_letter.deliveries": attempts,
            },
          },
          () => toFirst(copy),
        );
      return toFirst(copy);

      async function toFirst(copy: CloudEvent): Promise<Target> {
        for (let i = 0; ; i++) {
          const target = deadLetters[i]!;
          try {
            await send(copy, target, policy, so);
            return target;
          } catch (err) {
            if (i === deadLetters.length - 1) throw err;
            so.onFallback?.(target, err as NotDelivered);
          }
        }
      }
    },
  };
}
