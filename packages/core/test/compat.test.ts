/**
 * Every field of OpenFunction's Events API (OpenFunction/OpenFunction, apis/events/v1alpha1, at
 * fd7e457) is either used, with a behaviour test named in its row, or warned: a manifest with
 * the field loads and `validate` / `run` print a warning saying why it has no effect.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { API_VERSION, CompatCode, parseManifestText } from "../src/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

type Used = { go: string; field: string; used: { file: string; test: string } };
type Warned = {
  go: string;
  field: string;
  warned: { manifest: Record<string, unknown>; path: string; code?: string; message: RegExp };
};
type Row = Used | Warned;

const T = {
  render: "packages/controller/test/render.test.ts",
  redis: "packages/eventsource/test/redis-source.test.ts",
  kafka: "packages/eventsource/test/kafka-source.test.ts",
  kafkaAuth: "packages/eventsource/test/kafka-auth.test.ts",
  mqtt: "packages/eventsource/test/mqtt-source.test.ts",
  cron: "packages/eventsource/test/cron.test.ts",
  jetstream: "packages/eventbus/test/jetstream-bus.test.ts",
  buses: "packages/core/test/buses.test.ts",
  dapr: "packages/core/test/dapr-components.test.ts",
  trigger: "packages/trigger/test/trigger.test.ts",
  logger: "packages/core/test/resource-logger.test.ts",
  schemas: "packages/core/test/schemas.test.ts",
} as const;

const used = (go: string, field: string, file: string, test: string): Used => ({ go, field, used: { file, test } });

const ES_GO = "eventsource_types.go";
const EV_GO = "event.go";
const EB_GO = "eventbus_types.go";
const TR_GO = "trigger_types.go";

const RENDER_KAFKA_SCALE =
  "controller render - kafka scaleOption (OpenFunction's GenericScaleOption) and SASL/TLS secrets";
const RENDER_NATS =
  "controller render - natsStreaming EventBus (OpenFunction's): mapped to JetStream, its scaleOption honoured";
const RENDER_SINK_REF =
  "controller render - source without an event bus: sink ref resolved into the ConfigMap, one replica for cron";
const JS_START = "jetstream bus - a new group starts where $name says";
const REDIS_STREAM =
  "redis source - turns stream entries into CloudEvents (JSON, text, field map) with stream positions as ids";
const REDIS_OPTIONS = "redis source - OpenFunction's connection fields become ioredis options";
const REDIS_VALIDATE = "redis source - validate rejects $name";
const MQTT_QOS = "mqtt source - QoS 1 payloads become CloudEvents: JSON, text, bytes, MQTT 5 content type";
const MQTT_SESSION =
  "mqtt source - messages published while the source is stopped arrive after a restart (persistent session)";

function eventSource(spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: "EventSource",
    metadata: { name: "es" },
    spec: { eventBus: "default", ...spec },
  };
}
const REDIS = { redisHost: "127.0.0.1:6379", redisPassword: "", stream: "s" };
const redis = (extra: Record<string, unknown>) => eventSource({ redis: { e: { ...REDIS, ...extra } } });
const NATS = {
  natsURL: "nats://127.0.0.1:4222",
  natsStreamingClusterID: "stan",
  subscriptionType: "queue",
  durableSubscriptionName: "ImDurable",
};
const natsBus = (extra: Record<string, unknown>, spec: Record<string, unknown> = {}) => ({
  apiVersion: API_VERSION,
  kind: "EventBus",
  metadata: { name: "default" },
  spec: { natsStreaming: { ...NATS, ...extra }, ...spec },
});

const rows: Row[] = [
  // eventsource_types.go: EventSourceSpec
  used(
    ES_GO,
    "EventSourceSpec.eventBus",
    T.render,
    "controller render - kafka source on an EventBus: ConfigMap, Deployment, kafka-lag ScaledObject, bus Component",
  ),
  used(ES_GO, "EventSourceSpec.redis", T.redis, REDIS_STREAM),
  used(
    ES_GO,
    "EventSourceSpec.kafka",
    T.kafka,
    "kafka source - JSON, text and bytes records become CloudEvents with the record's position, time and headers",
  ),
  used(
    ES_GO,
    "EventSourceSpec.cron",
    T.cron,
    "cron source - @every 100ms ticks publish events with ids derived from the scheduled time",
  ),
  used(ES_GO, "EventSourceSpec.mqtt", T.mqtt, MQTT_QOS),
  used(ES_GO, "EventSourceSpec.sink", T.render, RENDER_SINK_REF),
  {
    go: ES_GO,
    field: "EventSourceSpec.build",
    warned: {
      manifest: eventSource({
        cron: { e: { schedule: "@every 1s" } },
        build: { builder: "openfunction/builder-go:latest" },
      }),
      path: "spec.build",
      message: /no effect: the source runs in the ofevents image/,
    },
  },
  used(ES_GO, "EventSourceSpec.logLevel", T.logger, "resource logger - $name"),
  used(ES_GO, "SinkSpec.ref", T.render, RENDER_SINK_REF),
  used(
    ES_GO,
    "SinkSpec.uri",
    T.render,
    "controller render - a sink with both ref and uri resolves to the uri (OpenFunction's rule)",
  ),
  {
    go: ES_GO,
    field: "SinkSpec.ref beside SinkSpec.uri",
    warned: {
      manifest: eventSource({
        cron: { e: { schedule: "@every 1s" } },
        sink: { uri: "http://f.default", ref: { kind: "Service", name: "f", apiVersion: "v1" } },
      }),
      path: "spec.sink.ref",
      message: /uri wins/,
    },
  },
  used(ES_GO, "Reference.kind", T.render, RENDER_SINK_REF),
  used(ES_GO, "Reference.namespace", T.render, RENDER_SINK_REF),
  used(ES_GO, "Reference.name", T.render, RENDER_SINK_REF),
  used(ES_GO, "Reference.apiVersion", T.render, RENDER_SINK_REF),
  // event.go: GenericScaleOption (inlined in KafkaScaleOption and NatsStreamingScaleOption)
  ...["pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount", "advanced", "metadata", "authRef"].map(
    (f) => used(EV_GO, `GenericScaleOption.${f}`, T.render, RENDER_KAFKA_SCALE),
  ),
  // event.go: RedisSpec
  {
    go: EV_GO,
    field: "RedisSpec (OpenFunction's: no stream, no channel)",
    warned: {
      manifest: eventSource({ redis: { e: { redisHost: "127.0.0.1:6379", redisPassword: "" } } }),
      path: "spec.redis.e",
      code: CompatCode.NotRunnable,
      message: /does not run: OpenFunction made it a Dapr redis binding, which cannot receive/,
    },
  },
  used(
    EV_GO,
    "RedisSpec (OpenFunction's, at run time)",
    T.redis,
    "redis source - OpenFunction's redis event (no stream, no channel) loads, and its start says why it does not run",
  ),
  used(EV_GO, "RedisSpec.redisHost", T.redis, REDIS_STREAM),
  used(EV_GO, "RedisSpec.redisPassword", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.enableTLS", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.failover", T.redis, REDIS_VALIDATE),
  used(EV_GO, "RedisSpec.sentinelMasterName", T.redis, REDIS_VALIDATE),
  used(
    EV_GO,
    "RedisSpec.redeliverInterval",
    T.redis,
    "redis source - claims entries left pending by a dead consumer after processingTimeout",
  ),
  used(
    EV_GO,
    "RedisSpec.processingTimeout",
    T.redis,
    "redis source - claims entries left pending by a dead consumer after processingTimeout",
  ),
  used(EV_GO, "RedisSpec.redisType", T.redis, REDIS_VALIDATE),
  used(EV_GO, "RedisSpec.redisDB", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.redisMaxRetries", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.redisMinRetryInterval", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.redisMaxRetryInterval", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.dialTimeout", T.redis, REDIS_OPTIONS),
  used(EV_GO, "RedisSpec.readTimeout", T.redis, REDIS_OPTIONS),
  ...(
    [
      ["writeTimeout", "1s"],
      ["poolSize", 10],
      ["poolTimeout", "1s"],
      ["maxConnAge", "1m"],
      ["minIdleConns", 2],
      ["idleCheckFrequency", "1m"],
      ["idleTimeout", "5m"],
    ] as const
  ).map(([f, v]): Warned => ({
    go: EV_GO,
    field: `RedisSpec.${f}`,
    warned: {
      manifest: redis({ [f]: v }),
      path: `spec.redis.e.${f}`,
      message: /no effect: a go-redis connection-pool setting/,
    },
  })),
  // event.go: KafkaSpec, KafkaScaleOption
  used(
    EV_GO,
    "KafkaSpec.brokers",
    T.kafka,
    "kafka source - JSON, text and bytes records become CloudEvents with the record's position, time and headers",
  ),
  used(
    EV_GO,
    "KafkaSpec.authRequired",
    T.kafkaAuth,
    "kafka source - OpenFunction's inline saslUsername/saslPassword consume (PLAIN)",
  ),
  used(
    EV_GO,
    "KafkaSpec.topic",
    T.kafka,
    "kafka source - JSON, text and bytes records become CloudEvents with the record's position, time and headers",
  ),
  used(
    EV_GO,
    "KafkaSpec.saslUsername",
    T.kafkaAuth,
    "kafka source - OpenFunction's inline saslUsername/saslPassword consume (PLAIN)",
  ),
  used(
    EV_GO,
    "KafkaSpec.saslPassword",
    T.kafkaAuth,
    "kafka source - OpenFunction's inline saslUsername/saslPassword consume (PLAIN)",
  ),
  used(
    EV_GO,
    "KafkaSpec.maxMessageBytes",
    T.kafka,
    "kafka source - validate: the runtime refuses to start an invalid spec and names the field",
  ),
  used(EV_GO, "KafkaSpec.scaleOption", T.render, RENDER_KAFKA_SCALE),
  used(EV_GO, "KafkaScaleOption.consumerGroup", T.render, RENDER_KAFKA_SCALE),
  used(EV_GO, "KafkaScaleOption.topic", T.render, RENDER_KAFKA_SCALE),
  used(EV_GO, "KafkaScaleOption.lagThreshold", T.render, RENDER_KAFKA_SCALE),
  // event.go: CronSpec
  used(
    EV_GO,
    "CronSpec.schedule",
    T.cron,
    "cron source - @every 100ms ticks publish events with ids derived from the scheduled time",
  ),
  // event.go: MQTTSpec
  used(EV_GO, "MQTTSpec.url", T.mqtt, MQTT_QOS),
  used(EV_GO, "MQTTSpec.topic", T.mqtt, MQTT_QOS),
  used(EV_GO, "MQTTSpec.consumerID", T.mqtt, MQTT_SESSION),
  used(EV_GO, "MQTTSpec.qos", T.mqtt, MQTT_QOS),
  {
    go: EV_GO,
    field: "MQTTSpec.retain",
    warned: {
      manifest: eventSource({ mqtt: { e: { url: "tcp://127.0.0.1:1883", topic: "t", retain: true } } }),
      path: "spec.mqtt.e.retain",
      message: /no effect: it is a publishing flag/,
    },
  },
  used(EV_GO, "MQTTSpec.cleanSession", T.mqtt, MQTT_SESSION),
  used(EV_GO, "MQTTSpec.caCert", T.mqtt, "mqtt source - validate rejects $name"),
  used(EV_GO, "MQTTSpec.clientCert", T.mqtt, "mqtt source - validate rejects $name"),
  used(EV_GO, "MQTTSpec.clientKey", T.mqtt, "mqtt source - validate rejects $name"),
  // event.go: NatsStreamingSpec, NatsStreamingScaleOption
  used(EV_GO, "NatsStreamingSpec.natsURL", T.render, RENDER_NATS),
  {
    go: EV_GO,
    field: "NatsStreamingSpec.natsStreamingClusterID",
    warned: {
      manifest: natsBus({}),
      path: "spec.natsStreaming.natsStreamingClusterID",
      message: /no effect: NATS Streaming is end-of-life and this bus runs on JetStream/,
    },
  },
  used(
    EV_GO,
    "NatsStreamingSpec.subscriptionType",
    T.jetstream,
    "jetstream bus - durablePrefix prefixes the consumer name; subscriptionType topic gives each member every event",
  ),
  {
    go: EV_GO,
    field: "NatsStreamingSpec.subscriptionType (topic, through Dapr)",
    warned: {
      manifest: natsBus({ subscriptionType: "topic" }),
      path: "spec.natsStreaming.subscriptionType",
      message: /honoured by the direct JetStream driver only/,
    },
  },
  used(EV_GO, "NatsStreamingSpec.ackWaitTime", T.buses, "buses - $name"),
  used(
    EV_GO,
    "NatsStreamingSpec.maxInFlight",
    T.jetstream,
    "jetstream bus - maxAckPending sets the consumer's max ack pending and caps each subscriber's in-flight",
  ),
  used(
    EV_GO,
    "NatsStreamingSpec.durableSubscriptionName",
    T.jetstream,
    "jetstream bus - durablePrefix prefixes the consumer name; subscriptionType topic gives each member every event",
  ),
  {
    go: EV_GO,
    field: "NatsStreamingSpec.durableSubscriptionName (absent, OpenFunction 0.5)",
    warned: {
      manifest: natsBus({ durableSubscriptionName: undefined }),
      path: "spec.natsStreaming.durableSubscriptionName",
      code: CompatCode.Defaulted,
      message: /is absent .*named after the trigger alone/,
    },
  },
  ...["deliverNew", "startAtSequence", "startWithLastReceived", "deliverAll", "startAtTimeDelta", "startAtTime"].map(
    (f) => used(EV_GO, `NatsStreamingSpec.${f}`, T.jetstream, JS_START),
  ),
  {
    go: EV_GO,
    field: "NatsStreamingSpec.startAtTimeDelta (through Dapr)",
    warned: {
      manifest: natsBus({ startAtTimeDelta: "1h" }),
      path: "spec.natsStreaming.startAtTimeDelta",
      message: /Dapr component takes no relative start/,
    },
  },
  {
    go: EV_GO,
    field: "NatsStreamingSpec start options beyond the first (Dapr's precedence)",
    warned: {
      manifest: natsBus({ startAtSequence: 3, deliverAll: true }),
      path: "spec.natsStreaming.deliverAll",
      message: /no effect: startAtSequence is set and takes precedence/,
    },
  },
  used(EV_GO, "NatsStreamingSpec.startAtTimeFormat", T.buses, "buses - $name"),
  {
    go: EV_GO,
    field: "NatsStreamingSpec.consumerID",
    warned: {
      manifest: natsBus({ consumerID: "c1" }),
      path: "spec.natsStreaming.consumerID",
      message: /no effect: a trigger's consumer is named after the trigger/,
    },
  },
  used(EV_GO, "NatsStreamingSpec.scaleOption", T.render, RENDER_NATS),
  used(EV_GO, "NatsStreamingScaleOption.natsServerMonitoringEndpoint", T.render, RENDER_NATS),
  ...["queueGroup", "durableName", "subject"].map((f): Warned => ({
    go: EV_GO,
    field: `NatsStreamingScaleOption.${f}`,
    warned: {
      manifest: natsBus({ scaleOption: { natsServerMonitoringEndpoint: "nats:8222", lagThreshold: "10", [f]: "x" } }),
      path: `spec.natsStreaming.scaleOption.${f}`,
      message: /no effect: the KEDA scaler measures the JetStream consumer the trigger uses/,
    },
  })),
  used(EV_GO, "NatsStreamingScaleOption.lagThreshold", T.render, RENDER_NATS),
  // eventbus_types.go (ClusterEventBus shares EventBusSpec: clustereventbus_types.go)
  {
    go: EB_GO,
    field: "EventBusSpec.topic",
    warned: {
      manifest: natsBus({}, { topic: "default" }),
      path: "spec.topic",
      message: /no effect: an event's topic is \{namespace\}-\{eventSource\}-\{event\}/,
    },
  },
  used(EB_GO, "EventBusSpec.natsStreaming", T.render, RENDER_NATS),
  // trigger_types.go
  used(
    TR_GO,
    "TriggerSpec.eventBus",
    T.render,
    "controller render - two inputs, two subscribers on JetStream: one nats-jetstream trigger per topic, refs resolved",
  ),
  used(
    TR_GO,
    "TriggerSpec.inputs",
    T.trigger,
    "trigger - a one-input condition delivers every event that passes the input filter, unchanged",
  ),
  used(
    TR_GO,
    "TriggerSpec.subscribers",
    T.trigger,
    "trigger - subscribers with the same condition keep separate state",
  ),
  used(TR_GO, "TriggerSpec.logLevel", T.logger, "resource logger - $name"),
  used(
    TR_GO,
    "Input.namespace",
    T.render,
    "controller render - two inputs, two subscribers on JetStream: one nats-jetstream trigger per topic, refs resolved",
  ),
  used(
    TR_GO,
    "Input.eventSource",
    T.trigger,
    "trigger - a one-input condition delivers every event that passes the input filter, unchanged",
  ),
  used(
    TR_GO,
    "Input.event",
    T.trigger,
    "trigger - a one-input condition delivers every event that passes the input filter, unchanged",
  ),
  used(
    TR_GO,
    "Subscriber.condition",
    T.trigger,
    "trigger - a && b fires once per pair, carries the joined id, and a transform sees $inputs",
  ),
  used(
    TR_GO,
    "Subscriber.sink",
    T.trigger,
    "trigger - a failing sink is retried per delivery, then the dead-letter sink gets the event with the reason",
  ),
  used(
    TR_GO,
    "Subscriber.deadLetterSink",
    T.trigger,
    "trigger - a failing sink is retried per delivery, then the dead-letter sink gets the event with the reason",
  ),
  used(TR_GO, "Subscriber.topic", T.trigger, "trigger - topic subscribers publish to the bus for async functions"),
  used(
    TR_GO,
    "Subscriber.deadLetterTopic",
    T.trigger,
    "trigger - a 4xx is not retried and goes to the dead-letter topic when there is no dead-letter sink",
  ),
];

const usedRows = rows.filter((r): r is Used => "used" in r);
const warnedRows = rows.filter((r): r is Warned => "warned" in r);

describe("compat - every OpenFunction field is used or warned", () => {
  it.each(usedRows)("compat - $go $field is used: its behaviour test exists", ({ used: u }) => {
    const text = readFileSync(ROOT + u.file, "utf8");
    expect(text, `${u.file} has no test named "${u.test}"`).toContain(`"${u.test}"`);
  });

  it.each(warnedRows)("compat - $go $field loads with a warning", ({ warned: w }) => {
    const m = parseManifestText(stringify(w.manifest), "m.yaml");
    expect(m.issues).toEqual([]);
    const hits = m.warnings.filter((x) => x.path === w.path);
    expect(hits, JSON.stringify(m.warnings)).toHaveLength(1);
    expect(hits[0]!.message).toMatch(w.message);
    expect(hits[0]!.code).toBe(w.code ?? CompatCode.NoEffect);
    expect(hits[0]).toMatchObject({ file: "m.yaml", docIndex: 0 });
  });

  it("compat - a field without the warned value loads without that warning", () => {
    const m = parseManifestText(stringify(natsBus({})), "m.yaml");
    // Only the cluster id, which OpenFunction requires, is warned for its documented bus.
    expect(m.warnings.map((w) => w.path)).toEqual(["spec.natsStreaming.natsStreamingClusterID"]);
    const es = parseManifestText(stringify(redis({ readTimeout: "1s" })), "m.yaml");
    expect(es.warnings).toEqual([]);
  });

  it("compat - a startAtTime its layout cannot read is an issue naming the layout", () => {
    const m = parseManifestText(
      stringify(natsBus({ startAtTime: "2024-05-01", startAtTimeFormat: "2006-01-02 15:04" })),
      "m.yaml",
    );
    expect(m.issues.map((i) => [i.path, i.message])).toEqual([
      ["spec.natsStreaming.startAtTime", '"2024-05-01" does not match the layout 2006-01-02 15:04'],
    ]);
  });
});
