export type {
  BusEvents,
  DeliveryInfo,
  EventBus,
  EventPublisher,
  EventSubscriber,
  MessageHandler,
  ReadOptions,
  RetainedEvent,
  SubscribeOptions,
  SeenSet,
  Subscription,
  Tail,
  TailedEvent,
} from "./types.js";
export {
  DEFAULT_BACKOFF_MS,
  DEFAULT_MAX_DELIVER,
  DEFAULT_MAX_IN_FLIGHT,
  MAX_BACKOFF_MS,
  DeadLetterExtension,
  deadLetterTopicFor,
} from "./types.js";
export { withDeadLetterReason } from "./deadletter.js";
export { UNDECODABLE_EVENT_TYPE } from "./consumer.js";
export { decodeBusEvent } from "./envelope.js";
export {
  kafkaLogging,
  kafkaSasl,
  kafkaTls,
  logNatsStatus,
  natsOptions,
  type NatsAuth,
  type ReadSecret,
} from "./clients.js";
export { createMemoryBus, type MemoryBusOptions } from "./drivers/memory.js";
export { MemorySeenSet } from "./seen.js";
export { createEventBus, type CreateEventBusOptions } from "./factory.js";
export type { CreateDaprBusOptions, DaprBusOptions } from "./drivers/dapr.js";
export { createJetStreamTopicPreparer, daprJetStreamStreamName } from "./drivers/dapr-jetstream.js";
export type { JetStreamTopicPreparer } from "./drivers/dapr-jetstream.js";
