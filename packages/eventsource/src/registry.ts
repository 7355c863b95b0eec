import { ErrorCode, SourceError, SourceKind } from "@ofevents/core";
import type { SourceAdapter } from "./types.js";

function notYet(kind: SourceKind): () => Promise<SourceAdapter> {
  return () => Promise.reject(new SourceError(ErrorCode.SourceConfig, `the ${kind} source is not available in this build yet`, kind));
}

/** Adapters by kind, loaded lazily so a client library loads only when its source is used. */
export const adapters: Record<SourceKind, () => Promise<SourceAdapter>> = {
  [SourceKind.Webhook]: async () => (await import("./sources/webhook.js")).webhookAdapter as SourceAdapter,
  [SourceKind.Cron]: async () => (await import("./sources/cron.js")).cronAdapter as SourceAdapter,
  [SourceKind.Kafka]: notYet(SourceKind.Kafka),
  [SourceKind.Redis]: notYet(SourceKind.Redis),
  [SourceKind.Mqtt]: notYet(SourceKind.Mqtt),
  [SourceKind.Nats]: notYet(SourceKind.Nats),
};

export function loadAdapter(kind: SourceKind): Promise<SourceAdapter> {
  return adapters[kind]();
}
