/**
 * Names the bus drivers give to what they create on a broker, and the default consumer names of
 * the runtimes. Pure, so the controller renders KEDA scalers that watch exactly the streams,
 * consumers, topics and groups the workloads use (docs/eventbus/jetstream.md, kafka.md).
 */
import { createHash } from "node:crypto";

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

/** Where a bus topic lives, and what a group's consumer is called (KEDA's scaler needs both). */
export interface JetStreamNames {
  stream: string;
  subject: string;
  consumer: string | undefined;
}

/**
 * The JetStream bus's names: topic `t` lives in stream `<token(prefix)>-<token(t)>` on subject
 * `<token(prefix)>.<token(t)>`; group `g` is the durable consumer `<token(g)>` of that stream, or
 * `<token(durablePrefix-g)>` with the bus's `durablePrefix` (natsStreaming's
 * durableSubscriptionName).
 */
export function jetStreamNames(prefix: string, topic: string, group?: string, durablePrefix?: string): JetStreamNames {
  const p = natsToken(prefix);
  const t = natsToken(topic);
  const consumer =
    group === undefined ? undefined : natsToken(durablePrefix === undefined ? group : `${durablePrefix}-${group}`);
  return { stream: `${p}-${t}`, subject: `${p}.${t}`, consumer };
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
 * The bus consumer group of a Trigger: `trigger-{namespace}-{name}` (the trigger runtime's
 * default group; every replica of the trigger shares it).
 */
export function triggerGroup(namespace: string, name: string): string {
  return `trigger-${namespace}-${name}`;
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

/** The stream the Dapr path creates for a Dapr topic on JetStream: `T-<hex of the topic>`. */
export function daprJetStreamStreamName(daprTopic: string): string {
  return `T-${Buffer.from(daprTopic).toString("hex")}`;
}
