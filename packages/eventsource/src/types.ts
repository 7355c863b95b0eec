import type { CloudEvent, Logger, SecretResolver, SourceKind, ValidationIssue } from "@ofevents/core";
import type { WebhookServers } from "./webhook-server.js";

/** What an adapter hands to the runtime for one event. The runtime builds the CloudEvent. */
export interface DispatchInit {
  data?: unknown;
  /** Derived from the source position where one exists (Kafka topic/partition/offset...). */
  id?: string | undefined;
  subject?: string | undefined;
  /** The CloudEvent `type` (default `io.openfunction.events.{kind}`), e.g. a webhook preset's `com.github.push`. */
  type?: string | undefined;
  time?: string | undefined;
  datacontenttype?: string | undefined;
  extensions?: Record<string, string | number | boolean> | undefined;
  /** An incoming CloudEvent to pass through with its attributes intact. */
  event?: CloudEvent | undefined;
}

/**
 * Resolves (with the event's id) once the bus (or the sync sink) took the event; only then may the adapter ack its
 * source. Rejects with a BusError/DeliveryError: do not ack, let the source redeliver.
 */
export type Dispatch = (init: DispatchInit) => Promise<{ id: string }>;

export interface SourceContext {
  namespace: string;
  eventSource: string;
  eventName: string;
  logger: Logger;
  secrets: SecretResolver;
  webhooks: WebhookServers;
  /** Aborted when the source must stop. */
  signal: AbortSignal;
  /**
   * Counts a request the adapter refused before dispatching anything (e.g. a webhook's missing or
   * wrong signature): the runtime emits `rejected`, which metrics count.
   */
  rejected(reason: RejectReason): void;
}

/** Why an adapter refused a request before dispatching it: a bounded set, used as a metric label. */
export type RejectReason = "unauthorized";

export interface RunningSource {
  /** Stops taking new events and waits for in-flight dispatches. */
  stop(): Promise<void>;
}

/** One adapter per source kind: `validate` is pure, `start` begins consuming. */
export interface SourceAdapter<S = unknown> {
  readonly kind: SourceKind;
  validate(spec: S): ValidationIssue[];
  start(ctx: SourceContext, spec: S, dispatch: Dispatch): Promise<RunningSource>;
}
