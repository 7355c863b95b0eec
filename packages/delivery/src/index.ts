export {
  CE_BATCH_CONTENT_TYPE,
  CE_JSON_CONTENT_TYPE,
  decodeHeaderValue,
  encodeBatch,
  encodeBinary,
  encodeHeaderValue,
  encodeStructured,
  httpMode,
  toEvent,
  type HttpHeaders,
  type HttpMessage,
  type HttpMode,
} from "./http-binding.js";
export { DEFAULT_DELIVERY, deliveryPolicy, type DeliveryPolicy } from "./policy.js";
export {
  SOURCE_RETRY,
  classify,
  refused,
  retryDelay,
  untilTaken,
  withRetry,
  type AttemptInfo,
  type RetryOptions,
  type RetrySchedule,
  type UntilTakenOptions,
  type Verdict,
} from "./retry.js";
export { createSinkClient, encodeHttp, idempotencyKey } from "./sink.js";
export type { Payload, SinkClient, SinkClientOptions, SinkResponse } from "./sink.js";
export { NotDelivered, createOutbound, targetName } from "./target.js";
export type { Outbound, SendOptions, Sent, Target } from "./target.js";
