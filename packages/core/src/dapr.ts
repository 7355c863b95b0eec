/**
 * Dapr resources for an EventBus: the pub/sub Component (dapr.io/v1alpha1) that carries the bus,
 * and the Resiliency policy that keeps a failed delivery from being lost or retried forever.
 * The Kubernetes controller applies these objects; the local runner writes them (as JSON, which
 * daprd's YAML loader reads) into daprd's resources path. Pure: same bus, same objects.
 *
 * Safe settings (docs/eventbus/dapr.md, "What the rendered objects set, and why"):
 * - One consumer group per app: `{appID}` (daprd substitutes its app id) is the Kafka consumer
 *   group, the Redis consumer id and the JetStream durable and queue group, so every Trigger
 *   (app) gets each event and the replicas of one app share them.
 * - Resiliency: daprd retries a delivery the app failed a bounded number of times, then the
 *   subscription's dead-letter topic takes it. Without a policy Redis acknowledges a failed
 *   delivery (lost), JetStream redelivers it at once without end, Kafka blocks its partition.
 * - Kafka: `initialOffset: oldest` (a new group otherwise misses what is published before it
 *   joined), component retries never give up (`backOffMaxRetries: -1`, no elapsed-time limit):
 *   a message is dead-lettered by daprd or retried, never skipped.
 * - JetStream: `ackWait` set (a failed delivery is redelivered after it, not at once),
 *   `concurrency: single` (with "parallel" every message is acked on receipt: at most once)
 *   and `maxAckPending: 100` (what waits in daprd must not outlast ackWait), no `maxDeliver`
 *   (JetStream would silently stop delivering), no `streamName`: each topic resolves to its
 *   own stream, so one durable name serves every topic.
 * - Redis: `redeliverInterval` / `processingTimeout` written in milliseconds (daprd ignores
 *   `redeliverInterval: 1s`, a Go duration, and falls back to 15 s).
 */
import { OfEventsError, ErrorCode } from "./errors.js";
import { parseDuration } from "./duration.js";
import { natsStreamingToJetStream } from "./buses.js";
import { DAPR_APP_ID, daprJetStreamDurable, daprKafkaConsumerGroup } from "./naming.js";
import type { AnyEventBus, EventBusSpec, SecretKeySelector } from "./schemas.js";

export const DAPR_API_VERSION = "dapr.io/v1alpha1";

/** One `spec.metadata` item of a Component: a literal value or a reference to a secret. */
export interface DaprMetadataItem {
  name: string;
  value?: string;
  secretKeyRef?: { name: string; key: string };
}

interface DaprObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
}

/** A Dapr pub/sub Component. */
export interface DaprPubSubComponent {
  apiVersion: typeof DAPR_API_VERSION;
  kind: "Component";
  metadata: DaprObjectMeta;
  spec: { type: string; version: string; metadata: DaprMetadataItem[] };
  /** Secret store used for `secretKeyRef` (Kubernetes: the built-in one when absent). */
  auth?: { secretStore: string };
  /** App ids that may load the component (all when absent). */
  scopes?: string[];
}

/** A Dapr retry policy (`spec.policies.retries.<name>` of a Resiliency). */
export interface DaprRetryPolicy {
  policy: "constant" | "exponential";
  /** Constant: the pause between attempts. */
  duration?: string;
  /** Exponential: the longest pause (the first is 500 ms, growing 1.5× with jitter). */
  maxInterval?: string;
  /** Retries after the first attempt; absent means forever. */
  maxRetries: number;
}

/** A Dapr Resiliency: retry policies and the components they apply to. */
export interface DaprResiliency {
  apiVersion: typeof DAPR_API_VERSION;
  kind: "Resiliency";
  metadata: DaprObjectMeta;
  spec: {
    policies: { retries: Record<string, DaprRetryPolicy> };
    targets: { components: Record<string, { inbound?: { retry: string }; outbound?: { retry: string } }> };
  };
  scopes?: string[];
}

/** What {@link renderDaprComponents} returns: the Component, then its Resiliency. */
export type DaprComponent = DaprPubSubComponent | DaprResiliency;

export interface RenderDaprOptions {
  /** Component name, the pub/sub name the dapr driver publishes to (default: the bus's name). */
  name?: string | undefined;
  /** Namespace of the objects (default: the EventBus's; none for a ClusterEventBus). */
  namespace?: string | undefined;
  /** App ids that may load the objects (`scopes`; default: every app of the namespace). */
  scopes?: readonly string[] | undefined;
  /** Secret store for secret references (default: the platform's; Kubernetes' built-in one). */
  secretStore?: string | undefined;
  /** Retries daprd makes of a delivery the app failed, before dead-lettering it (default 5). */
  inboundRetries?: number | undefined;
  /** Longest pause between those retries (default "30s"; exponential from 500 ms). */
  inboundMaxInterval?: string | undefined;
  /** Retries daprd makes of a publish the broker refused (default 3, exponential up to 2 s). */
  outboundRetries?: number | undefined;
}

export const DaprDefaults = {
  inboundRetries: 5,
  inboundMaxInterval: "30s",
  outboundRetries: 3,
  outboundMaxInterval: "2s",
  jetstreamAckWait: "30s",
  jetstreamMaxAckPending: 100,
  redisRedeliverIntervalMs: 15_000,
  redisProcessingTimeoutMs: 60_000,
  kafkaBackOffDuration: "5s",
} as const;

export { DAPR_APP_ID };

type Items = DaprMetadataItem[];

function set(items: Items, name: string, value: string | undefined): void {
  if (value === undefined) return;
  const i = items.findIndex((m) => m.name === name);
  if (i >= 0) items[i] = { name, value };
  else items.push({ name, value });
}

function setDefault(items: Items, name: string, value: string): void {
  if (!items.some((m) => m.name === name)) items.push({ name, value });
}

function secretRef(name: string, ref: SecretKeySelector): DaprMetadataItem {
  return { name, secretKeyRef: { name: ref.name, key: ref.key } };
}

/** A duration of the spec as Go text daprd parses ("1500ms"); ISO-8601 is converted. */
function goDuration(field: string, text: string): string {
  const ms = parseDuration(text);
  if (ms === undefined) throw new OfEventsError(ErrorCode.Config, `${field}: "${text}" is not a duration`);
  return `${ms}ms`;
}

function jetstream(spec: NonNullable<EventBusSpec["jetstream"]>): { type: string; items: Items } {
  if (spec.credentialsSecret !== undefined) {
    throw new OfEventsError(
      ErrorCode.Config,
      "jetstream.credentialsSecret (a .creds file) cannot be given to Dapr's pubsub.jetstream, which takes jwt and seedKey apart: use spec.dapr with those, or the direct jetstream driver",
    );
  }
  const items: Items = [{ name: "natsURL", value: spec.url }];
  if (spec.replicas !== undefined) set(items, "replicas", String(spec.replicas));
  set(items, "ackWait", goDuration("jetstream.ackWait", spec.ackWait ?? DaprDefaults.jetstreamAckWait));
  if (spec.maxAckPending !== undefined) set(items, "maxAckPending", String(spec.maxAckPending));
  // Where a new group starts; as with the direct driver, "new" by default. A relative start
  // (startTimeDelta alone) has no Dapr form: rendering is pure, so it cannot become a time here.
  switch (spec.deliverPolicy) {
    case "all":
    case "last":
      set(items, "deliverPolicy", spec.deliverPolicy);
      break;
    case "sequence":
      set(items, "deliverPolicy", "sequence");
      set(items, "startSequence", String(spec.startSequence));
      break;
    case "time":
      if (spec.startTime !== undefined) {
        set(items, "deliverPolicy", "time");
        // Dapr reads startTime as Unix seconds.
        set(items, "startTime", String(Math.floor(Date.parse(spec.startTime) / 1000)));
      } else set(items, "deliverPolicy", "new");
      break;
    default:
      set(items, "deliverPolicy", "new");
  }
  // A durable prefix (natsStreaming's durableSubscriptionName) names one subscription; several
  // Triggers sharing it would compete for events, so it only prefixes the per-app durable.
  if (spec.durablePrefix !== undefined) {
    set(items, "durableName", daprJetStreamDurable(spec.durablePrefix));
    set(items, "queueGroupName", daprJetStreamDurable(spec.durablePrefix));
  }
  jetstreamSafe(items);
  return { type: "pubsub.jetstream", items };
}

function natsStreaming(spec: NonNullable<EventBusSpec["natsStreaming"]>): { type: string; items: Items } {
  return jetstream(natsStreamingToJetStream(spec));
}

function jetstreamSafe(items: Items): void {
  setDefault(items, "durableName", daprJetStreamDurable());
  setDefault(items, "queueGroupName", daprJetStreamDurable());
  // Without ackWait a failed delivery is nak'ed for immediate redelivery: a hot loop.
  setDefault(items, "ackWait", DaprDefaults.jetstreamAckWait);
  // "single" (one message at a time per subscription), never "parallel": the component then
  // returns from the NATS callback at once, and nats.go, subscribed without ManualAck, acks the
  // message on receipt. A crash or a failed delivery would lose it (the NAK fails "already
  // acknowledged"; dapr/components-contrib#3656, still so in Dapr 1.18). So it is refused.
  const concurrency = items.find((m) => m.name === "concurrency")?.value?.trim();
  if (concurrency !== undefined && concurrency !== "single") {
    throw new OfEventsError(
      ErrorCode.Config,
      `dapr.metadata concurrency: "${concurrency}" makes Dapr's pubsub.jetstream acknowledge each message on receipt, so a crash or a failed delivery loses it; use "single" (the default) or the direct jetstream driver`,
    );
  }
  setDefault(items, "concurrency", "single");
  // Handled one at a time, what JetStream pushes ahead waits in daprd, its ackWait running: with
  // JetStream's 1,000 a backlog outlasts ackWait and comes again (duplicates). 100 is as fast.
  setDefault(items, "maxAckPending", String(DaprDefaults.jetstreamMaxAckPending));
}

function kafka(spec: NonNullable<EventBusSpec["kafka"]>): { type: string; items: Items; secrets: boolean } {
  const items: Items = [{ name: "brokers", value: spec.brokers }];
  const tls = spec.tls !== undefined && spec.tls.enabled !== false;
  const clientCert = tls && spec.tls?.certSecret !== undefined && spec.tls.keySecret !== undefined;
  let secrets = false;
  if (spec.sasl !== undefined) {
    if (clientCert) {
      throw new OfEventsError(
        ErrorCode.Config,
        "kafka: Dapr's pubsub.kafka cannot combine SASL with a TLS client certificate",
      );
    }
    set(items, "authType", "password");
    items.push(
      secretRef("saslUsername", spec.sasl.usernameSecret),
      secretRef("saslPassword", spec.sasl.passwordSecret),
    );
    const mechanism = { plain: "PLAINTEXT", "scram-sha-256": "SHA-256", "scram-sha-512": "SHA-512" }[
      spec.sasl.mechanism
    ];
    set(items, "saslMechanism", mechanism);
    secrets = true;
  } else if (clientCert) {
    set(items, "authType", "mtls");
  } else {
    set(items, "authType", tls ? "certificate" : "none");
  }
  if (tls) {
    if (spec.tls?.caSecret !== undefined) items.push(secretRef("caCert", spec.tls.caSecret));
    if (clientCert)
      items.push(secretRef("clientCert", spec.tls!.certSecret!), secretRef("clientKey", spec.tls!.keySecret!));
    if (spec.tls?.insecureSkipVerify === true) set(items, "skipVerify", "true");
    secrets ||= spec.tls?.caSecret !== undefined || clientCert;
  } else {
    set(items, "disableTls", "true");
  }
  set(items, "clientID", spec.clientId ?? "ofevents");
  set(items, "consumerGroup", daprKafkaConsumerGroup(spec.topicPrefix));
  kafkaSafe(items);
  return { type: "pubsub.kafka", items, secrets };
}

function kafkaSafe(items: Items): void {
  setDefault(items, "consumerGroup", daprKafkaConsumerGroup());
  // "newest" (Dapr's default) resolves when the group first joins, which is after subscribe
  // returned: what is published in between is never delivered to the new group.
  setDefault(items, "initialOffset", "oldest");
  // When a delivery fails for good (retries spent and no dead-letter topic, or the dead-letter
  // publish failed), keep retrying that message rather than commit past it.
  setDefault(items, "consumeRetryEnabled", "true");
  const policy = items.find((m) => m.name === "backOffPolicy")?.value;
  if (policy === "exponential") {
    // An exponential back-off gives up after maxElapsedTime (15 min by default): then the
    // message is skipped. 0 means never.
    setDefault(items, "backOffMaxElapsedTime", "0");
  } else {
    setDefault(items, "backOffPolicy", "constant");
    setDefault(items, "backOffDuration", DaprDefaults.kafkaBackOffDuration);
  }
  setDefault(items, "backOffMaxRetries", "-1");
}

function redisSafe(items: Items): void {
  // Both are read as integer milliseconds; redeliverInterval is never parsed as a Go duration
  // ("1s" is ignored and 15 s used), so durations are converted.
  for (const [name, fallback] of [
    ["redeliverInterval", DaprDefaults.redisRedeliverIntervalMs],
    ["processingTimeout", DaprDefaults.redisProcessingTimeoutMs],
  ] as const) {
    const item = items.find((m) => m.name === name);
    if (item === undefined) {
      items.push({ name, value: String(fallback) });
    } else if (item.value !== undefined && !/^\d+$/.test(item.value.trim())) {
      const ms = parseDuration(item.value);
      if (ms === undefined)
        throw new OfEventsError(ErrorCode.Config, `dapr.metadata ${name}: "${item.value}" is not a duration`);
      item.value = String(ms);
    }
  }
  setDefault(items, "consumerID", DAPR_APP_ID);
}

function generic(spec: NonNullable<EventBusSpec["dapr"]>): { type: string; version: string; items: Items } {
  const items: Items = (spec.metadata ?? []).map((m) => ({ name: m.name, value: m.value }));
  switch (spec.type) {
    case "pubsub.jetstream":
      jetstreamSafe(items);
      break;
    case "pubsub.kafka":
      kafkaSafe(items);
      break;
    case "pubsub.redis":
      redisSafe(items);
      break;
    default:
      break;
  }
  return { type: spec.type, version: spec.version ?? "v1", items };
}

/**
 * Renders the Dapr Component carrying `bus` and the Resiliency that makes its deliveries safe,
 * in that order. `natsStreaming` is carried by `pubsub.jetstream` (the caller warns). Throws a
 * CONFIG OfEventsError for a bus Dapr cannot carry (`memory`) or a setting it cannot express.
 */
export function renderDaprComponents(bus: AnyEventBus, options: RenderDaprOptions = {}): DaprComponent[] {
  const name = options.name ?? bus.metadata.name;
  const namespace = options.namespace ?? (bus.kind === "EventBus" ? bus.metadata.namespace : undefined);
  const spec = bus.spec;
  let type: string;
  let version = "v1";
  let items: Items;
  let secrets = false;
  if (spec.jetstream !== undefined) ({ type, items } = jetstream(spec.jetstream));
  else if (spec.natsStreaming !== undefined) ({ type, items } = natsStreaming(spec.natsStreaming));
  else if (spec.kafka !== undefined) ({ type, items, secrets } = kafka(spec.kafka));
  else if (spec.dapr !== undefined) ({ type, version, items } = generic(spec.dapr));
  else {
    throw new OfEventsError(
      ErrorCode.Config,
      `EventBus ${bus.metadata.name}: the memory bus lives inside one process and cannot be carried by Dapr`,
    );
  }
  const metadata: DaprObjectMeta = {
    name,
    ...(namespace === undefined ? {} : { namespace }),
    labels: { "app.kubernetes.io/managed-by": "ofevents", "events.openfunction.io/eventbus": bus.metadata.name },
  };
  const scopes = options.scopes === undefined ? {} : { scopes: [...options.scopes] };
  const component: DaprPubSubComponent = {
    apiVersion: DAPR_API_VERSION,
    kind: "Component",
    metadata,
    spec: { type, version, metadata: items },
    ...(secrets && options.secretStore !== undefined ? { auth: { secretStore: options.secretStore } } : {}),
    ...scopes,
  };
  const inbound = `${name}-inbound`;
  const outbound = `${name}-outbound`;
  const resiliency: DaprResiliency = {
    apiVersion: DAPR_API_VERSION,
    kind: "Resiliency",
    metadata: { ...metadata, name: `${name}-resiliency` },
    spec: {
      policies: {
        retries: {
          [inbound]: {
            policy: "exponential",
            maxInterval: goDuration(
              "inboundMaxInterval",
              options.inboundMaxInterval ?? DaprDefaults.inboundMaxInterval,
            ),
            maxRetries: options.inboundRetries ?? DaprDefaults.inboundRetries,
          },
          [outbound]: {
            policy: "exponential",
            maxInterval: DaprDefaults.outboundMaxInterval,
            maxRetries: options.outboundRetries ?? DaprDefaults.outboundRetries,
          },
        },
      },
      targets: { components: { [name]: { inbound: { retry: inbound }, outbound: { retry: outbound } } } },
    },
    ...scopes,
  };
  return [component, resiliency];
}
