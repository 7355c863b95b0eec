/**
 * Names the bus drivers give to what they create on a broker, and the default consumer names of
 * the runtimes. Pure, so the controller renders KEDA scalers that watch exactly the streams,
 * consumers, topics and groups the workloads use (docs/eventbus/jetstream.md, kafka.md).
 */
import { createHash } from "node:crypto";
import { ErrorCode, OfEventsError } from "./errors.js";
import type { EventBusSpec } from "./schemas.js";

/** The JetStream bus's default stream prefix (`jetstream.stream`). */
export const DEFAULT_JETSTREAM_STREAM_PREFIX = "ofevents";

/** Longest NATS token kept as is; longer ones are shortened and suffixed with a hash. */
const NATS_TOKEN_MAX = 200;

/**
 * A name as one NATS token: `[A-Za-z0-9-]` kept, `_` doubled, every other UTF-8 byte as `_XX`
 * (upper-case hex). Injective, so distinct topics never share a stream. A token longer than 200
 * characters is cut to 183 and suffixed with `-` and 16 hex digits of the name's SHA-256.
 * Throws a TypeError for an empty name.
 */
export function natsToken(name: string): string {
  if (name === "") throw new TypeError("a topic or group name must not be empty");
  let out = "";
  for (const ch of name) {
    if (/^[A-Za-z0-9-]$/.test(ch)) out += ch;
    else if (ch === "_") out += "__";
    else for (const b of Buffer.from(ch, "utf8")) out += `_${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  if (out.length <= NATS_TOKEN_MAX) return out;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
  return `${out.slice(0, NATS_TOKEN_MAX - 17)}-${hash}`;
}

/** daprd replaces this with its app id in any metadata value of a Component. */
export const DAPR_APP_ID = "{appID}";

/**
 * A bus topic as a NATS subject, which is the topic itself on both paths (the direct driver and
 * Dapr's pubsub.jetstream, which publishes and subscribes on subject = topic). A topic that is not
 * a valid literal subject is refused with a CONFIG OfEventsError: empty, empty tokens (a leading,
 * trailing or doubled `.`), whitespace or control characters, the wildcards `*` and `>`, or a
 * leading `$` (reserved for the server's own subjects: `$JS`, `$SYS`...).
 */
export function natsSubject(topic: string): string {
  const why =
    topic === ""
      ? "it is empty"
      : topic.split(".").some((t) => t === "")
        ? "it has an empty token (a leading, trailing or doubled '.')"
        : /[\s\p{Cc}]/u.test(topic)
          ? "it has whitespace or control characters"
          : /[*>]/.test(topic)
            ? "it has a wildcard ('*' or '>')"
            : topic.startsWith("$")
              ? "a leading '$' is reserved for the server's subjects"
              : undefined;
  if (why !== undefined) {
    throw new OfEventsError(
      ErrorCode.Config,
      `topic ${JSON.stringify(topic)} cannot be a NATS subject on a JetStream bus: ${why}`,
    );
  }
  return topic;
}

/** Where a bus topic lives, and what a group's consumer is called (KEDA's scaler needs both). */
export interface JetStreamNames {
  stream: string;
  subject: string;
  consumer: string | undefined;
}

/**
 * The JetStream bus's names, the same for the direct driver and the Dapr path (the stream that
 * the dapr driver's `prepareTopic` creates, which Dapr's pubsub.jetstream finds by subject):
 * topic `t` lives in stream `<token(prefix)>-<token(t)>` on subject `t` (see {@link natsSubject});
 * group `g` is the direct driver's durable consumer `<token(g)>` of that stream, or
 * `<token(durablePrefix-g)>` with the bus's `durablePrefix` (natsStreaming's
 * durableSubscriptionName). Throws a CONFIG OfEventsError for a topic that is not a subject.
 */
export function jetStreamNames(prefix: string, topic: string, group?: string, durablePrefix?: string): JetStreamNames {
  const subject = natsSubject(topic);
  const consumer =
    group === undefined ? undefined : natsToken(durablePrefix === undefined ? group : `${durablePrefix}-${group}`);
  return { stream: `${natsToken(prefix)}-${natsToken(topic)}`, subject, consumer };
}

/**
 * The subject of a topic before subject = topic: `<token(prefix)>.<token(t)>`. A stream of the
 * topic's name that has only this subject is one the previous version created; the driver adds
 * the topic's subject to it (docs/eventbus/jetstream.md, "Upgrading").
 */
export function legacyJetStreamSubject(prefix: string, topic: string): string {
  return `${natsToken(prefix)}.${natsToken(topic)}`;
}

/**
 * The durable consumer (and queue group) of Dapr's pubsub.jetstream in the rendered Component:
 * `{durablePrefix}-{appID}`, or `{appID}` (daprd puts its app id in place of `{appID}`).
 */
export function daprJetStreamDurable(durablePrefix?: string): string {
  return durablePrefix === undefined ? DAPR_APP_ID : `${durablePrefix}-${DAPR_APP_ID}`;
}

/** The consumer group of Dapr's pubsub.kafka in the rendered Component: `{topicPrefix}{appID}`. */
export function daprKafkaConsumerGroup(topicPrefix?: string): string {
  return `${topicPrefix ?? ""}${DAPR_APP_ID}`;
}

/** A Component metadata value with `{appID}` replaced by `appId`, as daprd reads it. */
export function withDaprAppId(value: string, appId: string): string {
  return value.split(DAPR_APP_ID).join(appId);
}

const KAFKA_NAME_MAX = 249;
const KAFKA_INVALID_CHARS = /[^a-zA-Z0-9._-]/g;

/**
 * A valid Kafka topic or group name for `name`: characters outside [a-zA-Z0-9._-] become "_",
 * and a name that had to change (or is longer than 249) gets a short hash of the original, so
 * two different bus names never share a Kafka name.
 */
export function kafkaName(name: string): string {
  const clean = name.replace(KAFKA_INVALID_CHARS, "_");
  if (clean === name && name.length > 0 && name.length <= KAFKA_NAME_MAX && name !== "." && name !== "..") return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 8);
  return `${clean.slice(0, KAFKA_NAME_MAX - 9)}_${hash}`;
}

/**
 * The Kafka bus's names: the topic and (given a group) the group id, both `topicPrefix` + name
 * made valid by {@link kafkaName}, so installations sharing a cluster stay apart.
 */
export function kafkaBusNames(
  topicPrefix: string | undefined,
  topic: string,
  group?: string,
): { topic: string; group: string | undefined } {
  const prefix = topicPrefix ?? "";
  return {
    topic: kafkaName(`${prefix}${topic}`),
    group: group === undefined ? undefined : kafkaName(`${prefix}${group}`),
  };
}

/**
 * The Dapr topic of a bus topic: the name a Dapr-side app (an OpenFunction function, our dapr
 * driver, a Function's inputs and outputs) uses for it on the Component rendered for `spec`,
 * which is the name the direct driver of the same bus uses, so both paths share it. Kafka
 * (`kafka`, or `dapr` of type `pubsub.kafka`): `topicPrefix` + topic made a valid Kafka name
 * ({@link kafkaBusNames}); JetStream (`jetstream`, `natsStreaming`, `pubsub.jetstream`): the topic,
 * which must be a NATS subject ({@link natsSubject}, a CONFIG OfEventsError otherwise); other
 * buses: prefix + topic. `topicPrefix` defaults to the kafka spec's.
 */
export function daprTopicName(spec: EventBusSpec | undefined, topic: string, topicPrefix?: string): string {
  const prefix = topicPrefix ?? spec?.kafka?.topicPrefix ?? "";
  if (spec?.kafka !== undefined || spec?.dapr?.type === "pubsub.kafka") return kafkaBusNames(prefix, topic).topic;
  const t = `${prefix}${topic}`;
  if (spec?.jetstream !== undefined || spec?.natsStreaming !== undefined || spec?.dapr?.type === "pubsub.jetstream")
    natsSubject(t);
  return t;
}

/**
 * The bus consumer group of a Trigger: `trigger-{namespace}-{name}` (the trigger runtime's
 * default group; every replica of the trigger shares it).
 */
export function triggerGroup(namespace: string, name: string): string {
  return `trigger-${namespace}-${name}`;
}

/**
 * The bus topic where a trigger keeps its dead letters (`keepDeadLetters`). A namespace has no
 * dot, so this never equals an event's topic (`{namespace}-...`) or a consumer's dead-letter
 * topic (`{topic}.deadletter`).
 */
export function triggerDeadLetterTopic(namespace: string, name: string): string {
  return `${namespace}.${name}.deadletters`;
}

/**
 * The default broker-side consumer name of one event of an EventSource (Kafka consumer group,
 * Redis stream group, MQTT client id): `ofevents-{namespace}-{eventSource}-{event}`.
 */
export function sourceConsumerName(namespace: string, eventSource: string, event: string): string {
  return `ofevents-${namespace}-${eventSource}-${event}`;
}

/** The default JetStream durable of a NATS source event: {@link sourceConsumerName} with `[^A-Za-z0-9_-]` as `_`. */
export function natsSourceDurable(namespace: string, eventSource: string, event: string): string {
  return sourceConsumerName(namespace, eventSource, event).replace(/[^A-Za-z0-9_-]/g, "_");
}

/**
 * The stream of a topic on a JetStream bus with stream prefix `prefix` (default `ofevents`):
 * {@link jetStreamNames}' stream, which the dapr driver's `prepareTopic` creates too.
 * @deprecated Use jetStreamNames(prefix, topic).stream.
 */
export function daprJetStreamStreamName(topic: string, prefix: string = DEFAULT_JETSTREAM_STREAM_PREFIX): string {
  return jetStreamNames(prefix, topic).stream;
}
