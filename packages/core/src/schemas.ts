/**
 * The four resources of `events.openfunction.io/v1alpha1`, as zod schemas. They are the single
 * source of truth: TypeScript types are inferred from them and crds/*.yaml are generated from them.
 *
 * OpenFunction's fields are kept exactly (apis/events/v1alpha1 in OpenFunction/OpenFunction), so its
 * manifests load unchanged. Everything else is an optional extension, marked "Extension:" in its
 * description.
 */
import { z } from "zod";
import { parseDuration, parseHistoryTime } from "./duration.js";

export const API_GROUP = "events.openfunction.io";
export const API_VERSION = `${API_GROUP}/v1alpha1`;

/** The kinds this project owns. */
export const Kind = {
  EventSource: "EventSource",
  EventBus: "EventBus",
  ClusterEventBus: "ClusterEventBus",
  Trigger: "Trigger",
} as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

const ext = (text: string) => `Extension: ${text}`;

export const durationSchema = z
  .string()
  .refine((s) => parseDuration(s) !== undefined, {
    message: 'expected a duration such as "500ms", "2s", "5m" or "PT5M"',
  })
  .describe('A duration: Go style ("500ms", "2s", "1h30m") or ISO-8601 ("PT5M").');

const dnsName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, {
    message: "must be a lowercase DNS name (a-z, 0-9, '-', '.')",
  });

export const metadataSchema = z
  .object({
    name: dnsName.describe("Name of the resource."),
    namespace: dnsName.optional().describe("Namespace; `default` when absent."),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .loose();

const conditionSchema = z
  .object({
    type: z.string(),
    status: z.string(),
    reason: z.string().optional(),
    message: z.string().optional(),
    timestamp: z.string().optional(),
    lastTransitionTime: z.string().optional(),
    observedGeneration: z.number().int().optional(),
  })
  .loose();

export const statusSchema = z
  .object({
    conditions: z.array(conditionSchema).optional(),
    observedGeneration: z.number().int().optional(),
  })
  .loose()
  .describe("Status written by the controller.");

export const referenceSchema = z
  .object({
    kind: z.string().min(1).describe("Kind of the referenced object (Service, Function, Knative Service...)."),
    namespace: z.string().optional().describe("Namespace of the referenced object; the resource's when absent."),
    name: z.string().min(1).describe("Name of the referenced object."),
    apiVersion: z.string().min(1).describe("apiVersion of the referenced object."),
  })
  .strict();

export const sinkSchema = z
  .object({
    ref: referenceSchema.optional().describe("A Function, Knative Service or Service whose URL receives the events."),
    uri: z.string().optional().describe("The URL that receives the events."),
  })
  .strict()
  .refine((s) => s.ref !== undefined || s.uri !== undefined, {
    message: "set sink.uri or sink.ref",
  })
  .refine((s) => s.uri === undefined || URL.canParse(s.uri), { message: "sink.uri is not a valid URL", path: ["uri"] })
  .describe(
    "Where events are sent synchronously (CloudEvents over HTTP). With both, `uri` wins (OpenFunction's rule).",
  );

export const secretKeySelectorSchema = z
  .object({
    name: z.string().min(1).describe("Secret name."),
    key: z.string().min(1).describe("Key inside the Secret."),
  })
  .strict()
  .describe("A reference to a key of a Secret (a Kubernetes Secret, or locally a Secret manifest or env var).");

const genericScaleOption = {
  pollingInterval: z.number().int().optional().describe("KEDA: seconds between checks of the scaler."),
  cooldownPeriod: z.number().int().optional().describe("KEDA: seconds after the last activity before scaling to zero."),
  minReplicaCount: z.number().int().optional().describe("KEDA: fewest replicas."),
  maxReplicaCount: z.number().int().optional().describe("KEDA: most replicas."),
  advanced: z.record(z.string(), z.unknown()).optional().describe("KEDA: advanced ScaledObject settings."),
  metadata: z.record(z.string(), z.string()).optional().describe("KEDA: extra scaler metadata."),
  authRef: z.record(z.string(), z.unknown()).optional().describe("KEDA: TriggerAuthentication reference."),
};

// ---------------------------------------------------------------------------------------------
// EventSource

export const tlsSchema = z
  .object({
    enabled: z.boolean().optional().describe("Use TLS (default true when this block is present)."),
    caSecret: secretKeySelectorSchema.optional().describe("PEM CA certificate."),
    certSecret: secretKeySelectorSchema.optional().describe("PEM client certificate."),
    keySecret: secretKeySelectorSchema.optional().describe("PEM client key."),
    insecureSkipVerify: z.boolean().optional().describe("Skip server certificate verification (tests only)."),
  })
  .strict()
  .describe(ext("TLS settings, certificates by reference."));

export const saslSchema = z
  .object({
    mechanism: z.enum(["plain", "scram-sha-256", "scram-sha-512"]).describe("SASL mechanism."),
    usernameSecret: secretKeySelectorSchema,
    passwordSecret: secretKeySelectorSchema,
  })
  .strict();

export const redisSourceSchema = z
  .object({
    redisHost: z.string().describe("host:port of the Redis server."),
    redisPassword: z.string().describe("Password (empty for none)."),
    enableTLS: z.boolean().optional().describe("Connect with TLS."),
    failover: z.boolean().optional().describe("Use Redis Sentinel failover."),
    sentinelMasterName: z.string().optional().describe("Sentinel master name (with failover)."),
    redeliverInterval: z
      .string()
      .optional()
      .describe("How often pending stream entries are checked for redelivery (Dapr setting)."),
    processingTimeout: z
      .string()
      .optional()
      .describe("How long a stream entry may stay unacknowledged before another consumer claims it."),
    redisType: z.string().optional().describe('"node" or "cluster".'),
    redisDB: z.number().int().optional().describe("Database number."),
    redisMaxRetries: z.number().int().optional().describe("Command retries before giving up."),
    redisMinRetryInterval: z.string().optional().describe("Minimum backoff between retries."),
    redisMaxRetryInterval: z.string().optional().describe("Maximum backoff between retries."),
    dialTimeout: z.string().optional().describe("Connect timeout."),
    readTimeout: z.string().optional().describe("Socket read timeout."),
    writeTimeout: z.string().optional().describe("Socket write timeout."),
    poolSize: z.number().int().optional().describe("Connection pool size (Dapr setting)."),
    poolTimeout: z.string().optional().describe("Wait for a pooled connection (Dapr setting)."),
    maxConnAge: z.string().optional().describe("Connection age before recycling (Dapr setting)."),
    minIdleConns: z.number().int().optional().describe("Idle connections kept (Dapr setting)."),
    idleCheckFrequency: z.string().optional().describe("Idle connection reaper frequency (Dapr setting)."),
    idleTimeout: z.string().optional().describe("Close connections idle this long (Dapr setting)."),
    channel: z.string().optional().describe(ext("Pub/sub channel (pattern with *) to subscribe to.")),
    stream: z
      .string()
      .optional()
      .describe(ext("Stream to read with a consumer group (XREADGROUP, XACK after publish).")),
    consumerGroup: z
      .string()
      .optional()
      .describe(ext("Stream consumer group (default ofevents-{namespace}-{eventSource}-{event}).")),
    consumerName: z.string().optional().describe(ext("Consumer name inside the group (default the host name).")),
    startFrom: z
      .enum(["newest", "oldest"])
      .optional()
      .describe(ext("Where a new stream group starts (default newest).")),
    passwordSecret: secretKeySelectorSchema.optional().describe(ext("Password by reference.")),
  })
  .strict()
  .describe(
    "A Redis event source (OpenFunction's fields, plus channel or stream; without either the event loads but does not run).",
  );

export const kafkaSourceSchema = z
  .object({
    brokers: z.string().min(1).describe("Comma-separated list of host:port of Kafka brokers."),
    authRequired: z.boolean().describe("Whether SASL authentication is used."),
    topic: z.string().optional().describe("Topic to consume."),
    saslUsername: z
      .string()
      .optional()
      .describe("SASL user name when authRequired (plain text; prefer sasl with secrets)."),
    saslPassword: z
      .string()
      .optional()
      .describe("SASL password when authRequired (plain text; prefer sasl with secrets)."),
    maxMessageBytes: z.number().int().optional().describe("Bytes fetched per partition per request."),
    consumerGroup: z
      .string()
      .optional()
      .describe(ext("Consumer group (default ofevents-{namespace}-{eventSource}-{event}).")),
    startFrom: z
      .enum(["newest", "oldest"])
      .optional()
      .describe(ext("Where a new consumer group starts (default newest); a known group resumes from its commit.")),
    clientId: z.string().optional().describe(ext("Kafka client id (default ofevents).")),
    sasl: saslSchema.optional().describe(ext("SASL credentials by reference (instead of saslUsername/saslPassword).")),
    tls: tlsSchema.optional().describe(ext("TLS to the brokers.")),
    scaleOption: z
      .object({
        ...genericScaleOption,
        consumerGroup: z.string().optional().describe("Consumer group whose lag is measured."),
        topic: z.string().optional().describe("Topic whose lag is measured."),
        lagThreshold: z.string().describe("Target lag per replica."),
      })
      .strict()
      .optional()
      .describe("KEDA scaling of the source's workload on consumer lag."),
  })
  .strict()
  .describe("A Kafka event source (OpenFunction's fields).");

export const cronSourceSchema = z
  .object({
    schedule: z.string().min(1).describe('Cron schedule: 5 or 6 fields, a macro such as "@hourly", or "@every 2s".'),
    timezone: z.string().optional().describe(ext("IANA time zone of the schedule (default UTC).")),
    data: z.unknown().optional().describe(ext("Data of each event (default: the tick time).")),
  })
  .strict()
  .describe("A cron event source.");

export const mqttSourceSchema = z
  .object({
    url: z.string().min(1).describe("Broker URL, e.g. tcp://host:1883."),
    topic: z.string().min(1).describe("Topic (filter) to subscribe to."),
    consumerID: z.string().optional().describe("MQTT client id (keeps the session across restarts)."),
    qos: z
      .number()
      .int()
      .min(0)
      .max(2)
      .optional()
      .describe("Subscription QoS (default 1: acknowledged after the bus took the event)."),
    retain: z.boolean().optional().describe("Retain flag (publishing only; ignored by the source)."),
    cleanSession: z
      .boolean()
      .optional()
      .describe("Start a clean session (default false, so QoS 1 messages wait while the source is away)."),
    caCert: z.string().optional().describe("PEM CA certificate."),
    clientCert: z.string().optional().describe("PEM client certificate."),
    clientKey: z.string().optional().describe("PEM client key."),
  })
  .strict()
  .describe("An MQTT event source (OpenFunction's fields).");

export const natsSourceSchema = z
  .object({
    url: z.string().min(1).describe("NATS server URL(s), comma-separated."),
    subject: z.string().min(1).describe("Subject (wildcards allowed) to consume."),
    queueGroup: z.string().optional().describe("Core NATS queue group: members share the messages."),
    jetstream: z
      .object({
        stream: z.string().min(1).describe("Stream holding the subject."),
        durable: z
          .string()
          .optional()
          .describe("Durable consumer name (default ofevents-{namespace}-{eventSource}-{event})."),
        deliverPolicy: z.enum(["all", "new", "last"]).optional().describe("Where a new consumer starts (default new)."),
        ackWait: durationSchema.optional().describe("Redelivery after this long without ack (default 30s)."),
      })
      .strict()
      .optional()
      .describe("Consume through a JetStream durable consumer (ack after publish) instead of core NATS."),
    credentialsSecret: secretKeySelectorSchema.optional().describe("NATS credentials file content."),
    tokenSecret: secretKeySelectorSchema.optional().describe("NATS auth token."),
  })
  .strict()
  .describe(ext("A NATS event source: core subjects or JetStream consumers."));

export const amqpSourceSchema = z
  .object({
    url: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Broker URL: amqp://host:5672/vhost or amqps://host:5671/vhost (credentials in it are allowed; prefer auth).",
      ),
    urlSecret: secretKeySelectorSchema
      .optional()
      .describe("The broker URL by reference (instead of url), for a URL that carries credentials."),
    exchange: z
      .object({
        name: z.string().min(1).describe("Exchange to bind the queue to."),
        type: z
          .enum(["direct", "fanout", "topic", "headers"])
          .optional()
          .describe("Exchange type, used when it is declared (default topic)."),
        durable: z.boolean().optional().describe("Declare the exchange durable (default true)."),
        declare: z
          .boolean()
          .optional()
          .describe("Declare the exchange if missing (default true); false: it must exist."),
      })
      .strict()
      .optional()
      .describe("Consume what is published to this exchange through a queue bound with routingKey."),
    routingKey: z
      .string()
      .optional()
      .describe('Binding key of the queue on the exchange (default "#" on a topic exchange; required on direct).'),
    queue: z
      .object({
        name: z
          .string()
          .min(1)
          .optional()
          .describe("Queue to consume (default with exchange: ofevents-{namespace}-{eventSource}-{event})."),
        durable: z.boolean().optional().describe("Declare the queue durable (default true)."),
        autoDelete: z
          .boolean()
          .optional()
          .describe("Declare the queue auto-delete: removed when its last consumer goes (default false)."),
        declare: z.boolean().optional().describe("Declare the queue if missing (default true); false: it must exist."),
        arguments: z
          .record(z.string(), z.unknown())
          .optional()
          .describe('Queue arguments when declared, e.g. {"x-queue-type": "quorum"}.'),
      })
      .strict()
      .optional()
      .describe("The queue consumed: an existing one, or one declared (and bound when exchange is set)."),
    prefetch: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .optional()
      .describe("Unacknowledged messages the broker hands to this source at once (default 16)."),
    auth: z
      .object({
        usernameSecret: secretKeySelectorSchema.describe("User name."),
        passwordSecret: secretKeySelectorSchema.describe("Password."),
      })
      .strict()
      .optional()
      .describe("PLAIN credentials by reference (override any in the URL)."),
    tls: tlsSchema.optional().describe("TLS settings for an amqps:// URL (CA, client certificate by reference)."),
  })
  .strict()
  .describe(ext("An AMQP 0-9-1 (RabbitMQ) event source: a queue, or an exchange and binding key."));

/** The senders a webhook `preset` knows. */
export const WebhookSender = { GitHub: "github", GitLab: "gitlab", Stripe: "stripe" } as const;
export type WebhookSender = (typeof WebhookSender)[keyof typeof WebhookSender];

export const webhookPresetSchema = z
  .object({
    sender: z
      .enum([WebhookSender.GitHub, WebhookSender.GitLab, WebhookSender.Stripe])
      .describe(
        'github: X-Hub-Signature-256 (HMAC-SHA256 of the body), type com.github.<X-GitHub-Event>, id X-GitHub-Delivery; gitlab: X-Gitlab-Token equals the secret, type com.gitlab.<X-Gitlab-Event>, id X-Gitlab-Event-UUID; stripe: Stripe-Signature (HMAC-SHA256 of "<t>.<body>"), type com.stripe.<body type>, id the body\'s id.',
      ),
    secret: secretKeySelectorSchema.describe(
      "The webhook secret (GitHub's secret, GitLab's secret token, Stripe's signing secret whsec_...).",
    ),
    tolerance: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("stripe: the most seconds the signature's timestamp may differ from now (default 300)."),
  })
  .strict();

export const webhookSourceSchema = z
  .object({
    endpoint: z.string().regex(/^\//, { message: 'must start with "/"' }).describe("HTTP path, e.g. /orders."),
    method: z
      .enum(["GET", "POST", "PUT", "PATCH", "DELETE"])
      .default("POST")
      .describe("HTTP method accepted (default POST)."),
    port: z
      .union([z.string().regex(/^\d+$/), z.number().int()])
      .refine((p) => Number(p) >= 0 && Number(p) <= 65535, { message: "a port is 0-65535 (0: any free port)" })
      .describe("Port to listen on (Argo Events' webhook context: a string)."),
    url: z.string().optional().describe("External URL of the endpoint, informative."),
    authSecret: secretKeySelectorSchema.optional().describe("Bearer token the caller must present."),
    hmac: z
      .object({
        secret: secretKeySelectorSchema.describe("The shared key."),
        header: z.string().min(1).optional().describe("Header carrying the signature (default X-Hub-Signature-256)."),
        algorithm: z.enum(["sha1", "sha256", "sha512"]).optional().describe("Hash (default sha256)."),
        prefix: z.string().optional().describe('Text before the hex digest (default "<algorithm>=").'),
      })
      .strict()
      .optional()
      .describe(ext("The caller signs the body with HMAC (GitHub-style); a missing or wrong signature gets 401.")),
    preset: webhookPresetSchema
      .optional()
      .describe(
        ext(
          "Check the signature of a known sender (GitHub, GitLab, Stripe) and take the event's type and id from its headers or body; a missing, wrong or expired signature gets 401.",
        ),
      ),
    maxPayloadSize: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Largest accepted body in bytes (default 1048576)."),
    metadata: z.record(z.string(), z.string()).optional().describe("Added to each event as extension attributes."),
  })
  .strict()
  .describe(ext("An HTTP endpoint; fields follow Argo Events' webhook event source."));

export const genericSourceSchema = z
  .object({
    port: z
      .union([z.string().regex(/^\d+$/), z.number().int()])
      .refine((p) => Number(p) >= 0 && Number(p) <= 65535, { message: "a port is 0-65535 (0: any free port)" })
      .optional()
      .describe("Port the ingest endpoint listens on (default 8080; shared with webhooks on the same port)."),
    path: z
      .string()
      .regex(/^\//, { message: 'must start with "/"' })
      .optional()
      .describe("HTTP path of the ingest endpoint (default /{event name})."),
    subject: z
      .object({
        deployment: dnsName.describe("Name of the Deployment whose containers get K_SINK and K_CE_OVERRIDES."),
        namespace: z
          .string()
          .optional()
          .describe("Its namespace: the EventSource's (the default; another one is refused, as in Knative)."),
      })
      .strict()
      .optional()
      .describe(
        "On a cluster, the controller adds K_SINK (the ingest URL) and K_CE_OVERRIDES to this Deployment's containers, and removes them when the event or the EventSource goes (deleted while no controller led: when a controller next takes the lead).",
      ),
    ceOverrides: z
      .object({
        extensions: z
          .record(z.string(), z.string())
          .describe("Extension attributes set on every event (replacing what the sender set)."),
      })
      .strict()
      .optional()
      .describe("Given to the sender as K_CE_OVERRIDES, and applied by the source to every event it takes."),
    maxPayloadSize: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Largest accepted body in bytes (default 1048576)."),
  })
  .strict()
  .describe(
    ext(
      "Knative's SinkBinding idea: an HTTP endpoint taking CloudEvents (binary, structured, batch) from any process, whose address the controller injects into a Deployment as K_SINK.",
    ),
  );

/** The port a generic event listens on when it names none. */
export const DEFAULT_GENERIC_PORT = 8080;

/** Where a generic event listens: its port and path, defaults applied (8080, `/{event name}`). */
export function genericEndpoint(eventName: string, spec: GenericSourceSpec): { port: number; path: string } {
  return { port: Number(spec.port ?? DEFAULT_GENERIC_PORT), path: spec.path ?? `/${eventName}` };
}

/** A generic event's `K_CE_OVERRIDES` as Knative writes it (`{"extensions":{...}}`); undefined without overrides. */
export function ceOverridesEnv(spec: GenericSourceSpec): string | undefined {
  return spec.ceOverrides === undefined ? undefined : JSON.stringify({ extensions: spec.ceOverrides.extensions });
}

export const kubernetesEventTypes = ["ADDED", "MODIFIED", "DELETED"] as const;

export const kubernetesSourceSchema = z
  .object({
    group: z.string().optional().describe('API group of the watched resource ("" or absent: the core group).'),
    version: z.string().min(1).describe('API version, e.g. "v1".'),
    resource: z
      .string()
      .regex(/^[a-z0-9][-a-z0-9.]*$/, { message: "a lowercase plural resource name, e.g. configmaps" })
      .optional()
      .describe('Plural resource name, e.g. "configmaps" (this or kind).'),
    kind: z
      .string()
      .min(1)
      .optional()
      .describe('Kind, e.g. "ConfigMap", resolved to its resource by discovery (this or resource).'),
    namespace: z
      .string()
      .optional()
      .describe("Namespace to watch; empty or absent: all namespaces (a ClusterRole on Kubernetes)."),
    filter: z
      .object({
        labels: z.string().optional().describe('Label selector, e.g. "app=shop,tier!=test".'),
        fields: z.string().optional().describe('Field selector, e.g. "metadata.name=orders".'),
        afterStart: z
          .boolean()
          .optional()
          .describe(
            "On a first start (no stored state), skip the objects that already exist (default false: each is sent as ADDED).",
          ),
      })
      .strict()
      .optional()
      .describe("Which objects are watched."),
    eventTypes: z
      .array(z.enum(kubernetesEventTypes))
      .min(1)
      .optional()
      .describe("Watch event types that become events (default all: ADDED, MODIFIED, DELETED)."),
    projection: z
      .string()
      .min(1)
      .optional()
      .describe("JSONata expression over {type, object} giving the event data (default: the object)."),
    state: z
      .object({
        configMap: z
          .string()
          .min(1)
          .optional()
          .describe("ConfigMap in the EventSource's namespace keeping the resume state (key {eventSource}.{event})."),
        file: z.string().min(1).optional().describe("Local JSON file keeping the resume state."),
      })
      .strict()
      .refine((s) => (s.configMap === undefined) !== (s.file === undefined), { message: "set configMap or file" })
      .optional()
      .describe(
        "Where the last resourceVersion and the objects already sent are kept, so a restart resumes (default: not kept).",
      ),
    kubeconfig: z
      .string()
      .min(1)
      .optional()
      .describe("Path of a kubeconfig (default: the in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config)."),
  })
  .strict()
  .refine((s) => (s.resource === undefined) !== (s.kind === undefined), {
    message: "set resource or kind (one of them)",
    path: ["resource"],
  })
  .describe(ext("Kubernetes object changes (watch), modelled on Argo Events' resource event source."));

const eventMap = <T extends z.ZodType>(s: T) => z.record(z.string().min(1), s);

export const eventSourceSpecSchema = z
  .object({
    eventBus: z.string().optional().describe("Name of the EventBus (or ClusterEventBus) events are published to."),
    redis: eventMap(redisSourceSchema).optional().describe("Redis events, keyed by event name."),
    kafka: eventMap(kafkaSourceSchema).optional().describe("Kafka events, keyed by event name."),
    cron: eventMap(cronSourceSchema).optional().describe("Cron events, keyed by event name."),
    mqtt: eventMap(mqttSourceSchema).optional().describe("MQTT events, keyed by event name."),
    webhook: eventMap(webhookSourceSchema).optional().describe(ext("Webhook events, keyed by event name.")),
    nats: eventMap(natsSourceSchema).optional().describe(ext("NATS events, keyed by event name.")),
    amqp: eventMap(amqpSourceSchema).optional().describe(ext("AMQP (RabbitMQ) events, keyed by event name.")),
    generic: eventMap(genericSourceSchema)
      .optional()
      .describe(ext("Generic events (CloudEvents over HTTP from any process), keyed by event name.")),
    kubernetes: eventMap(kubernetesSourceSchema)
      .optional()
      .describe(ext("Kubernetes object watches, keyed by event name.")),
    sink: sinkSchema
      .optional()
      .describe("Send events directly to this sink (with eventBus too: every event goes to both)."),
    build: z
      .record(z.string(), z.unknown())
      .optional()
      .describe("OpenFunction build settings (no effect: the workload runs the ofevents image; a warning says so)."),
    logLevel: z.string().optional().describe('Log level: OpenFunction\'s "1".."3" or debug|info|warn|error.'),
  })
  .strict();

/** The event kinds an EventSource may hold; each is a map keyed by event name. */
export const SourceKind = {
  Redis: "redis",
  Kafka: "kafka",
  Cron: "cron",
  Mqtt: "mqtt",
  Webhook: "webhook",
  Nats: "nats",
  Amqp: "amqp",
  Generic: "generic",
  Kubernetes: "kubernetes",
} as const;
export type SourceKind = (typeof SourceKind)[keyof typeof SourceKind];
export const sourceKinds = Object.values(SourceKind);

export const eventSourceSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(Kind.EventSource),
    metadata: metadataSchema,
    spec: eventSourceSpecSchema,
    status: statusSchema.optional(),
  })
  .superRefine((es, ctx) => {
    if (es.spec.eventBus === undefined && es.spec.sink === undefined) {
      ctx.addIssue({ code: "custom", path: ["spec"], message: "set spec.eventBus or spec.sink" });
    }
    const count = sourceKinds.reduce((n, k) => n + Object.keys(es.spec[k] ?? {}).length, 0);
    if (count === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["spec"],
        message: `define at least one event (under ${sourceKinds.join(", ")})`,
      });
    }
    // The same event name under two kinds is allowed (OpenFunction's sample 3 does it): both
    // publish to the same bus topic.
  });

// ---------------------------------------------------------------------------------------------
// EventBus / ClusterEventBus

export const natsStreamingBusSchema = z
  .object({
    natsURL: z.string().min(1).describe("NATS server URL (mapped to JetStream)."),
    natsStreamingClusterID: z
      .string()
      .min(1)
      .describe("NATS Streaming cluster id (no effect: JetStream has none; a warning says so)."),
    subscriptionType: z
      .enum(["topic", "queue"])
      .describe('"queue": the replicas of a trigger share its events; "topic": each replica gets every event.'),
    ackWaitTime: durationSchema.optional().describe("Redelivery after this long without ack (JetStream ack wait)."),
    maxInFlight: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Unacknowledged messages per consumer (JetStream max ack pending)."),
    durableSubscriptionName: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Prefix of each trigger's durable consumer (`<name>-<group>`). OpenFunction <= 0.5 had none: absent, the durable is the group's name alone (with a warning).",
      ),
    deliverNew: z.boolean().optional().describe("A new consumer starts with new messages (the default)."),
    startAtSequence: z.number().int().positive().optional().describe("A new consumer starts at this sequence."),
    startWithLastReceived: z.boolean().optional().describe("A new consumer starts with the last message."),
    deliverAll: z.boolean().optional().describe("A new consumer starts with the first message."),
    startAtTimeDelta: durationSchema.optional().describe("A new consumer starts this long before it is created."),
    startAtTime: z.string().optional().describe("A new consumer starts at this time (read with startAtTimeFormat)."),
    startAtTimeFormat: z
      .string()
      .optional()
      .describe("Go time layout of startAtTime, e.g. 2006-01-02T15:04:05Z07:00 (default RFC 3339)."),
    consumerID: z
      .string()
      .optional()
      .describe("NATS Streaming client id (no effect: a trigger's consumer is named after it; a warning says so)."),
    scaleOption: z
      .object({
        ...genericScaleOption,
        natsServerMonitoringEndpoint: z.string().describe("host:port of the NATS monitoring endpoint."),
        queueGroup: z
          .string()
          .optional()
          .describe("NATS Streaming queue group (no effect: the scaler measures the trigger's own consumer)."),
        durableName: z
          .string()
          .optional()
          .describe("NATS Streaming durable name (no effect: the scaler measures the trigger's own consumer)."),
        subject: z
          .string()
          .optional()
          .describe("NATS Streaming subject (no effect: the scaler measures the trigger's own consumer)."),
        lagThreshold: z.string().describe("Target backlog per replica."),
      })
      .strict()
      .optional()
      .describe("KEDA scaling of trigger workloads on the bus backlog."),
  })
  .strict()
  .describe("NATS Streaming (OpenFunction's fields). NATS Streaming is end-of-life: mapped to JetStream.");

export const jetstreamBusSchema = z
  .object({
    url: z.string().min(1).describe("NATS server URL(s), comma-separated."),
    stream: z.string().optional().describe("Stream name prefix (default ofevents)."),
    maxDeliver: z.number().int().positive().optional().describe("Deliveries before dead-lettering (default 5)."),
    ackWait: durationSchema.optional().describe("How long a delivery may take before redelivery (default 30s)."),
    replicas: z.number().int().positive().optional().describe("Stream replicas (default 1)."),
    maxAge: durationSchema.optional().describe("How long the stream keeps events."),
    credentialsSecret: secretKeySelectorSchema.optional().describe("NATS credentials file content."),
    deliverPolicy: z
      .enum(["new", "all", "last", "sequence", "time"])
      .optional()
      .describe(
        "Where a new group's consumer starts (default new); an existing one resumes where it was. sequence needs startSequence, time needs startTime or startTimeDelta.",
      ),
    startSequence: z.number().int().positive().optional().describe('Stream sequence for deliverPolicy "sequence".'),
    startTime: z
      .string()
      .refine((t) => !Number.isNaN(Date.parse(t)), { message: "expected an RFC 3339 time" })
      .optional()
      .describe('Start time (RFC 3339) for deliverPolicy "time".'),
    startTimeDelta: durationSchema
      .optional()
      .describe('For deliverPolicy "time" without startTime: start this long before the consumer is created.'),
    maxAckPending: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Unacknowledged messages a group's consumer may have out; also caps each subscriber's in-flight (default: the larger of 1024 and 4 × in-flight).",
      ),
    durablePrefix: z
      .string()
      .min(1)
      .optional()
      .describe("Durable consumer names are `<durablePrefix>-<group>` (default: the group alone)."),
    subscriptionType: z
      .enum(["queue", "topic"])
      .optional()
      .describe(
        '"queue" (default): the members of a group share its events; "topic": each member (process) gets every event through its own consumer `<group>.<host name>`.',
      ),
  })
  .strict()
  .superRefine((j, ctx) => {
    if (j.deliverPolicy === "sequence" && j.startSequence === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["startSequence"],
        message: 'deliverPolicy "sequence" needs startSequence',
      });
    if (j.deliverPolicy === "time" && j.startTime === undefined && j.startTimeDelta === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["startTime"],
        message: 'deliverPolicy "time" needs startTime or startTimeDelta',
      });
  })
  .describe(ext("NATS JetStream bus."));

export const kafkaBusSchema = z
  .object({
    brokers: z.string().min(1).describe("Comma-separated host:port of Kafka brokers."),
    topicPrefix: z.string().optional().describe("Prefix for bus topics (default none)."),
    partitions: z.number().int().positive().optional().describe("Partitions of created topics (default 1)."),
    maxDeliver: z.number().int().positive().optional().describe("Deliveries before dead-lettering (default 5)."),
    sasl: saslSchema.optional().describe("SASL credentials by reference."),
    tls: tlsSchema.optional().describe("TLS to the brokers."),
    clientId: z.string().optional().describe("Kafka client id (default ofevents)."),
  })
  .strict()
  .describe(ext("Kafka bus."));

export const daprBusSchema = z
  .object({
    type: z
      .string()
      .regex(/^pubsub\./, { message: 'must be a Dapr pub/sub type such as "pubsub.redis"' })
      .describe("Dapr component type, e.g. pubsub.redis."),
    version: z.string().optional().describe("Component version (default v1)."),
    metadata: z
      .array(z.object({ name: z.string(), value: z.string() }).strict())
      .optional()
      .describe("Component metadata, as in a Dapr Component."),
  })
  .strict()
  .describe(ext("Any Dapr pub/sub component type with its metadata."));

export const memoryBusSchema = z
  .object({
    maxDeliver: z.number().int().positive().optional(),
  })
  .strict()
  .describe(ext("In-process bus (embedded mode only)."));

export const BusKind = {
  NatsStreaming: "natsStreaming",
  JetStream: "jetstream",
  Kafka: "kafka",
  Dapr: "dapr",
  Memory: "memory",
} as const;
export type BusKind = (typeof BusKind)[keyof typeof BusKind];
const busKinds = Object.values(BusKind);

export const eventBusSpecSchema = z
  .object({
    topic: z
      .string()
      .optional()
      .describe(
        "OpenFunction's default channel name (no effect: topics are {namespace}-{eventSource}-{event}; a warning says so).",
      ),
    natsStreaming: natsStreamingBusSchema.optional(),
    jetstream: jetstreamBusSchema.optional(),
    kafka: kafkaBusSchema.optional(),
    dapr: daprBusSchema.optional(),
    memory: memoryBusSchema.optional(),
  })
  .strict();

function busRefine(bus: { spec: z.infer<typeof eventBusSpecSchema> }, ctx: z.RefinementCtx): void {
  const set = busKinds.filter((k) => bus.spec[k] !== undefined);
  if (set.length !== 1) {
    ctx.addIssue({
      code: "custom",
      path: ["spec"],
      message:
        set.length === 0
          ? `set one bus backend (${busKinds.join(", ")})`
          : `set only one bus backend, got ${set.join(", ")}`,
    });
  }
}

export const eventBusSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(Kind.EventBus),
    metadata: metadataSchema,
    spec: eventBusSpecSchema,
    status: statusSchema.optional(),
  })
  .superRefine(busRefine);

export const clusterEventBusSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(Kind.ClusterEventBus),
    metadata: metadataSchema,
    spec: eventBusSpecSchema,
    status: statusSchema.optional(),
  })
  .superRefine(busRefine);

// ---------------------------------------------------------------------------------------------
// Trigger

export const inputSchema = z
  .object({
    namespace: z.string().optional().describe("Namespace of the EventSource (the Trigger's when absent)."),
    eventSource: z.string().min(1).describe("Name of the EventSource."),
    event: z.string().min(1).describe("Name of the event inside the EventSource."),
    filter: z
      .string()
      .optional()
      .describe(ext("JSONata expression over the CloudEvent that must yield true for the event to count.")),
  })
  .strict();

/** A duration longer than zero (windows, waits). */
export const positiveDurationSchema = z
  .string()
  .superRefine((s, ctx) => {
    const ms = parseDuration(s);
    if (ms === undefined && s.trim().startsWith("-"))
      ctx.addIssue({ code: "custom", message: `must be longer than 0, got "${s}"` });
    else if (ms === undefined)
      ctx.addIssue({ code: "custom", message: 'expected a duration such as "500ms", "2s", "5m" or "PT5M"' });
    else if (ms <= 0) ctx.addIssue({ code: "custom", message: `must be longer than 0, got "${s}"` });
  })
  .describe('A duration longer than 0: Go style ("500ms", "2s", "1h30m") or ISO-8601 ("PT5M").');

const keyExpression = (what: string) =>
  z
    .string()
    .min(1)
    .describe(ext(`JSONata expression over the CloudEvent whose value is the key ${what}.`));

export const batchSchema = z
  .object({
    maxEvents: z.number().int().min(1).describe("Most events in one delivery."),
    maxWait: positiveDurationSchema.describe("How long a partial batch waits for more events before it goes."),
    key: keyExpression("of the batch an event joins (one batch per key value; default: one batch)").optional(),
  })
  .strict()
  .describe(
    ext(
      "Deliver events in batches: to a sink as one CloudEvents batch request (application/cloudevents-batch+json), to a topic member by member.",
    ),
  );

export const debounceSchema = z
  .object({
    window: positiveDurationSchema.describe("Events of one key closer than this form one burst."),
    key: keyExpression("of the burst (default: one burst for all events)").optional(),
    edge: z
      .enum(["trailing", "leading"])
      .optional()
      .describe("Deliver the last event of a burst (trailing, default) or the first (leading)."),
  })
  .strict()
  .describe(ext("Of a burst of events, deliver only the last (or the first); the others are acknowledged."));

export const rateLimitSchema = z
  .object({
    perSecond: z.number().positive().describe("Requests (attempts) per second, on average."),
    burst: z.number().int().min(1).optional().describe("Requests allowed at once after a quiet time (default 1)."),
  })
  .strict()
  .describe(ext("A token bucket over this subscriber's attempts; events wait on the bus, none is dropped."));

export const orderingSchema = z
  .object({
    key: keyExpression("events are ordered by: the same value, one at a time in bus order"),
  })
  .strict()
  .describe(ext("Deliver events of one key one at a time, in bus order; keys go in parallel."));

export const dedupSchema = z
  .object({
    window: positiveDurationSchema.describe("How long a delivered key suppresses its repeats."),
    key: keyExpression("of an event's identity (default: source and id)").optional(),
  })
  .strict()
  .describe(ext("Acknowledge without delivery an event whose key was delivered within the window."));

export const resetSchema = z
  .object({
    cron: z
      .string()
      .min(1)
      .optional()
      .describe('Cron schedule (5 or 6 fields, or a macro such as "@hourly") at which all pending state is released.'),
    timezone: z.string().optional().describe("IANA time zone of the cron schedule (default UTC)."),
    after: positiveDurationSchema
      .optional()
      .describe("Release the pending events of a key this long after the first of them arrived."),
  })
  .strict()
  .refine((r) => r.cron !== undefined || r.after !== undefined, { message: "set cron or after" })
  .describe(ext("When a multi-input condition's pending events are released (acknowledged and counted)."));

export const deliverySchema = z
  .object({
    retry: z.number().int().min(0).optional().describe("Retries after the first attempt (default 3)."),
    backoffPolicy: z.enum(["exponential", "linear"]).optional().describe("Backoff policy (default exponential)."),
    backoffDelay: durationSchema.optional().describe("Base delay between attempts (default PT0.2S)."),
    timeout: durationSchema.optional().describe("Timeout of one attempt (default PT30S)."),
    retryAfterMax: durationSchema.optional().describe("Longest Retry-After honoured on 429/503 (default PT60S)."),
    concurrency: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Deliveries in flight at once for this subscriber (default 16)."),
    rateLimit: rateLimitSchema.optional(),
    format: z.enum(["binary", "structured"]).optional().describe("CloudEvents HTTP mode (default binary)."),
  })
  .strict()
  .describe(ext("Retry, backoff and timeout of deliveries, modelled on Knative's delivery spec."));

export const correlationSchema = z
  .object({
    window: durationSchema.optional().describe("How long an event waits to be joined (default 5m)."),
    maxPending: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Events kept waiting per input; the oldest is released beyond it (default 100)."),
    key: z
      .string()
      .optional()
      .describe("JSONata expression: only events with the same key value join (e.g. data.orderId)."),
    reset: resetSchema.optional(),
  })
  .strict()
  .describe(ext("How events of several inputs are joined for a multi-input condition."));

export const subscriberSchema = z
  .object({
    condition: z.string().min(1).describe('Condition over input names, e.g. "a && (b || !c)".'),
    sink: sinkSchema.optional().describe("Sync function that receives the events."),
    deadLetterSink: sinkSchema.optional().describe("Receives what could not be delivered to sink."),
    topic: z.string().optional().describe("Bus topic an async function consumes."),
    deadLetterTopic: z.string().optional().describe("Bus topic for what could not be published to topic."),
    filter: z.string().optional().describe(ext("JSONata boolean expression applied before delivery.")),
    transform: z
      .string()
      .optional()
      .describe(ext("JSONata expression whose result becomes the delivered event's data.")),
    delivery: deliverySchema.optional(),
    correlation: correlationSchema.optional(),
    batch: batchSchema.optional(),
    debounce: debounceSchema.optional(),
    ordering: orderingSchema.optional(),
    dedup: dedupSchema.optional(),
  })
  .strict()
  .refine((s) => s.sink !== undefined || (s.topic !== undefined && s.topic !== ""), {
    message: "set sink or topic",
  });

export const triggerSpecSchema = z
  .object({
    eventBus: z.string().min(1).describe("Name of the EventBus (or ClusterEventBus) the inputs come from."),
    inputs: z.record(z.string().min(1), inputSchema).describe("Inputs, keyed by the name conditions use."),
    subscribers: z.array(subscriberSchema).describe("Who receives events, and when."),
    keepDeadLetters: z
      .boolean()
      .optional()
      .describe(
        "Also keep a copy of every dead-lettered event on the trigger's dead-letter topic `{namespace}.{name}.deadletters`, for `ofevents redrive` (default: true on the jetstream and kafka buses, false on memory and dapr buses).",
      ),
    logLevel: z.string().optional(),
  })
  .strict();

export const triggerSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(Kind.Trigger),
  metadata: metadataSchema,
  spec: triggerSpecSchema,
  status: statusSchema.optional(),
});

/**
 * The operations on a Trigger a cluster user creates (Kubernetes-native `ofevents redrive` and
 * `ofevents replay`): each is reconciled into one Job running the verb, its outcome written to
 * the status. Not manifests of a flow: `validate` checks them, `run` skips them.
 */
export const OperationKind = {
  Redrive: "Redrive",
  Replay: "Replay",
} as const;
export type OperationKind = (typeof OperationKind)[keyof typeof OperationKind];

const operationTrigger = dnsName.describe("Name of the Trigger, in the operation's namespace.");
const operationFilter = z
  .string()
  .min(1)
  .optional()
  .describe("A JSONata expression over each event: only those for which it is truthy are sent.");
const operationDryRun = z
  .boolean()
  .optional()
  .describe("Count what would be sent and send nothing (the Job's log lists the ids).");
const historyTime = z.string().refine((s) => parseHistoryTime(s, new Date()) !== undefined, {
  message: 'expected an RFC 3339 time ("2026-12-05T10:00:00Z") or a duration ("90m")',
});

export const redriveSpecSchema = z
  .object({
    trigger: operationTrigger,
    subscriber: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("Only the dead letters of this subscriber (its index in the Trigger's subscribers)."),
    filter: operationFilter,
    limit: z.number().int().min(1).optional().describe("At most this many dead letters."),
    dryRun: operationDryRun,
  })
  .strict();

export const replaySpecSchema = z
  .object({
    trigger: operationTrigger,
    from: historyTime.describe(
      "Start of the range: an RFC 3339 time, or a duration before the Replay was created (`2h`).",
    ),
    to: historyTime
      .optional()
      .describe("End of the range (default: when the Replay runs): an RFC 3339 time or a duration before creation."),
    filter: operationFilter,
    dryRun: operationDryRun,
  })
  .strict();

export const redriveSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(OperationKind.Redrive),
  metadata: metadataSchema,
  spec: redriveSpecSchema,
  status: z.record(z.string(), z.unknown()).optional(),
});

export const replaySchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(OperationKind.Replay),
  metadata: metadataSchema,
  spec: replaySpecSchema,
  status: z.record(z.string(), z.unknown()).optional(),
});

export type Redrive = z.infer<typeof redriveSchema>;
export type Replay = z.infer<typeof replaySchema>;
export type Operation = Redrive | Replay;

export type EventSource = z.infer<typeof eventSourceSchema>;
export type EventBus = z.infer<typeof eventBusSchema>;
export type ClusterEventBus = z.infer<typeof clusterEventBusSchema>;
export type Trigger = z.infer<typeof triggerSchema>;
export type AnyEventBus = EventBus | ClusterEventBus;
export type Resource = EventSource | EventBus | ClusterEventBus | Trigger;
export type EventBusSpec = z.infer<typeof eventBusSpecSchema>;
export type Sink = z.infer<typeof sinkSchema>;
export type Subscriber = z.infer<typeof subscriberSchema>;
export type Delivery = z.infer<typeof deliverySchema>;
export type Input = z.infer<typeof inputSchema>;
export type WebhookSpec = z.infer<typeof webhookSourceSchema>;
export type WebhookPreset = z.infer<typeof webhookPresetSchema>;
export type CronSpec = z.infer<typeof cronSourceSchema>;
export type KafkaSourceSpec = z.infer<typeof kafkaSourceSchema>;
export type MqttSourceSpec = z.infer<typeof mqttSourceSchema>;
export type RedisSourceSpec = z.infer<typeof redisSourceSchema>;
export type SecretKeySelector = z.infer<typeof secretKeySelectorSchema>;
export type NatsSourceSpec = z.infer<typeof natsSourceSchema>;
export type AmqpSourceSpec = z.infer<typeof amqpSourceSchema>;
export type GenericSourceSpec = z.infer<typeof genericSourceSchema>;
export type KubernetesSourceSpec = z.infer<typeof kubernetesSourceSchema>;
export type JetStreamBusSpec = z.infer<typeof jetstreamBusSchema>;
export type NatsStreamingBusSpec = z.infer<typeof natsStreamingBusSchema>;
export type KafkaBusSpec = z.infer<typeof kafkaBusSchema>;
export type TlsSpec = z.infer<typeof tlsSchema>;
export type SaslSpec = z.infer<typeof saslSchema>;

/** The schema of each kind we own. */
export const schemas = {
  [Kind.EventSource]: eventSourceSchema,
  [Kind.EventBus]: eventBusSchema,
  [Kind.ClusterEventBus]: clusterEventBusSchema,
  [Kind.Trigger]: triggerSchema,
} as const;

/** Topic name of an event on the bus: `{namespace}-{eventSourceName}-{eventName}` (OpenFunction's). */
export function busTopic(namespace: string, eventSource: string, event: string): string {
  return `${namespace}-${eventSource}-${event}`;
}

export const DEFAULT_NAMESPACE = "default";

export function namespaceOf(r: { metadata: { namespace?: string | undefined } }): string {
  return r.metadata.namespace ?? DEFAULT_NAMESPACE;
}
