export {
  ErrorCode,
  OfEventsError,
  ManifestError,
  ExpressionError,
  BusError,
  DeliveryError,
  EventError,
  SourceError,
  formatIssue,
  hasCode,
} from "./errors.js";
export type { OfEventsErrorOptions, ValidationIssue } from "./errors.js";

export {
  API_GROUP,
  API_VERSION,
  BusKind,
  DEFAULT_NAMESPACE,
  Kind,
  OperationKind,
  SourceKind,
  busTopic,
  ceOverridesEnv,
  DEFAULT_GENERIC_PORT,
  genericEndpoint,
  clusterEventBusSchema,
  correlationSchema,
  deliverySchema,
  eventBusSchema,
  eventBusSpecSchema,
  eventSourceSchema,
  namespaceOf,
  redriveSchema,
  replaySchema,
  schemas,
  sinkSchema,
  sourceKinds,
  subscriberSchema,
  triggerSchema,
  WebhookSender,
} from "./schemas.js";
export type {
  AnyEventBus,
  ClusterEventBus,
  CronSpec,
  Delivery,
  EventBus,
  EventBusSpec,
  EventSource,
  Input,
  KafkaSourceSpec,
  MqttSourceSpec,
  RedisSourceSpec,
  Operation,
  Redrive,
  Replay,
  Resource,
  SecretKeySelector,
  Sink,
  Subscriber,
  Trigger,
  WebhookSpec,
  WebhookPreset,
  NatsSourceSpec,
  AmqpSourceSpec,
  GenericSourceSpec,
  KubernetesSourceSpec,
  JetStreamBusSpec,
  NatsStreamingBusSpec,
  KafkaBusSpec,
  TlsSpec,
  SaslSpec,
} from "./schemas.js";

export { FUNCTION_API_GROUP, MODULE_ANNOTATION, functionSchema, isSyncFunction, secretSchema } from "./functions.js";
export type { FunctionResource, SecretResource } from "./functions.js";

export { listManifestFiles, loadManifests, loadManifestsOrThrow, parseManifestText } from "./loader.js";
export type { Located, Manifests, SkippedDocument } from "./loader.js";
export { cronProblem, validateSemantics } from "./validate.js";
export { toYaml } from "./yaml.js";
export { generateCrds } from "./crds.js";

export { durationMs, parseDuration, parseHistoryTime } from "./duration.js";
export { backoffDelay, sleep, within } from "./backoff.js";
export type { BackoffOptions, BackoffPolicy } from "./backoff.js";

export {
  CORE_ATTRIBUTES,
  EXTENSION_NAME,
  assertCloudEvent,
  copyJson,
  decodeEvent,
  encodeEvent,
  eventData,
  isoTime,
  newEvent,
  setExtension,
} from "./cloudevent.js";
export type { CloudEvent, NewEventInit } from "./cloudevent.js";

export { createLogger, resourceLogger, silentLogger, toLogLevel } from "./logger.js";
export type { LogFormat, LogLevel, Logger, LoggerOptions } from "./logger.js";

export { createInstrumentation } from "./instrumentation.js";
export type { Instrumentation, Listener } from "./instrumentation.js";
export { createMetrics, serveMetrics, startMetricsServer } from "./metrics.js";
export { sendBody, sendJson } from "./http.js";
export type { BusLabels, Metrics, MetricsOptions, MetricsServer, SourceLabels, TriggerLabels } from "./metrics.js";

export { createExpressionEngine } from "./expr/jsonata.js";
export type { CompiledExpression, ExpressionEngine, ExpressionEngineOptions, ExpressionIssue } from "./expr/jsonata.js";
export {
  conditionInputs,
  evaluateCondition,
  formatCondition,
  parseCondition,
  positiveInputs,
  satisfyingInputs,
} from "./expr/condition.js";
export type { ConditionAst } from "./expr/condition.js";

export { createSecretResolver, envNameFor, withoutCredentials } from "./secrets.js";
export type { SecretResolver } from "./secrets.js";

export {
  assertIncomingEvent,
  decodeUtf8,
  isJsonMediaType,
  MAX_JSON_DEPTH,
  mediaType,
  parseJsonBody,
} from "./event-data.js";
export { REFERENCE_END, REFERENCE_START, generateReference, withReference } from "./reference.js";
export { natsStreamingToJetStream, resolveEventBus } from "./buses.js";
export { CompatCode, compatibility, natsStreamingStartOption, unrunnableEvents } from "./compat.js";
export type { Compatibility } from "./compat.js";
export { GO_RFC3339, parseGoTime } from "./gotime.js";
export {
  DEFAULT_JETSTREAM_STREAM_PREFIX,
  daprJetStreamDurable,
  daprJetStreamStreamName,
  daprKafkaConsumerGroup,
  daprTopicName,
  jetStreamNames,
  kafkaBusNames,
  kafkaName,
  legacyJetStreamSubject,
  natsSubject,
  withDaprAppId,
  natsSourceDurable,
  natsToken,
  sourceConsumerName,
  triggerGroup,
  triggerDeadLetterTopic,
} from "./naming.js";
export type { JetStreamNames } from "./naming.js";
export type { ResolvedBus } from "./buses.js";
export {
  DAPR_API_VERSION,
  DAPR_APP_ID,
  DaprDefaults,
  renderDaprComponents,
  type DaprComponent,
  type DaprMetadataItem,
  type DaprPubSubComponent,
  type DaprResiliency,
  type DaprRetryPolicy,
  type RenderDaprOptions,
} from "./dapr.js";
export {
  tracing,
  tracer,
  eventContext,
  eventAttributes,
  traceHeaders,
  withSpanContext,
  inSpan,
  markSpan,
  otelContext,
  SpanKind,
  SpanStatusCode,
  type Span,
  type SpanContext,
  type SpanOptions,
} from "./tracing.js";
