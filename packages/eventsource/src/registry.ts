import { SourceKind } from "@ofevents/core";
import type { SourceAdapter } from "./types.js";

/** Adapters by kind, loaded lazily so a client library loads only when its source is used. */
export const adapters: Record<SourceKind, () => Promise<SourceAdapter>> = {
  [SourceKind.Webhook]: async () => (await import("./sources/webhook.js")).webhookAdapter as SourceAdapter,
  [SourceKind.Cron]: async () => (await import("./sources/cron.js")).cronAdapter as SourceAdapter,
  [SourceKind.Kafka]: async () => (await import("./sources/kafka.js")).kafkaAdapter as SourceAdapter,
  [SourceKind.Redis]: async () => (await import("./sources/redis.js")).redisAdapter as SourceAdapter,
  [SourceKind.Mqtt]: async () => (await import("./sources/mqtt.js")).mqttAdapter as SourceAdapter,
  [SourceKind.Nats]: async () => (await import("./sources/nats.js")).natsAdapter as SourceAdapter,
  [SourceKind.Amqp]: async () => (await import("./sources/amqp.js")).amqpAdapter as SourceAdapter,
  [SourceKind.Generic]: async () => (await import("./sources/generic.js")).genericAdapter as SourceAdapter,
  [SourceKind.Kubernetes]: async () => (await import("./sources/kubernetes.js")).kubernetesAdapter as SourceAdapter,
};

export function loadAdapter(kind: SourceKind): Promise<SourceAdapter> {
  return adapters[kind]();
}
