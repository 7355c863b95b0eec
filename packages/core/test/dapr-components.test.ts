import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  API_VERSION,
  loadManifests,
  ErrorCode,
  OfEventsError,
  eventBusSchema,
  renderDaprComponents,
  type AnyEventBus,
  type DaprComponent,
  type DaprPubSubComponent,
  type DaprResiliency,
  type EventBusSpec,
} from "../src/index.js";

function bus(spec: EventBusSpec, name = "default", namespace: string | undefined = "shop"): AnyEventBus {
  return eventBusSchema.parse({
    apiVersion: API_VERSION,
    kind: "EventBus",
    metadata: { name, ...(namespace === undefined ? {} : { namespace }) },
    spec,
  });
}

function component(objects: DaprComponent[]): DaprPubSubComponent {
  const c = objects.find((o): o is DaprPubSubComponent => o.kind === "Component");
  if (c === undefined) throw new Error("no Component rendered");
  return c;
}

function resiliency(objects: DaprComponent[]): DaprResiliency {
  const r = objects.find((o): o is DaprResiliency => o.kind === "Resiliency");
  if (r === undefined) throw new Error("no Resiliency rendered");
  return r;
}

/** The Component's metadata as name → value (or "secret:<name>/<key>"). */
function meta(objects: DaprComponent[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of component(objects).spec.metadata) {
    out[m.name] = m.value ?? `secret:${m.secretKeyRef?.name}/${m.secretKeyRef?.key}`;
  }
  return out;
}

const JETSTREAM: EventBusSpec = { jetstream: { url: "nats://nats:4222" } };
const KAFKA: EventBusSpec = { kafka: { brokers: "kafka-0:9092,kafka-1:9092" } };
const REDIS: EventBusSpec = { dapr: { type: "pubsub.redis", metadata: [{ name: "redisHost", value: "redis:6379" }] } };
const NATS_STREAMING: EventBusSpec = {
  natsStreaming: {
    natsURL: "nats://nats:4222",
    natsStreamingClusterID: "stan",
    subscriptionType: "queue",
    durableSubscriptionName: "ImDurable",
  },
};

describe("dapr components - shape", () => {
  it("dapr components - a Component named after the bus, then its Resiliency, in the bus's namespace", () => {
    const objects = renderDaprComponents(bus(JETSTREAM));
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      "Component/default",
      "Resiliency/default-resiliency",
    ]);
    for (const o of objects) {
      expect(o.apiVersion).toBe("dapr.io/v1alpha1");
      expect(o.metadata.namespace).toBe("shop");
      expect(o.metadata.labels).toEqual({
        "app.kubernetes.io/managed-by": "ofevents",
        "events.openfunction.io/eventbus": "default",
      });
    }
    expect(component(objects).spec).toMatchObject({ type: "pubsub.jetstream", version: "v1" });
  });

  it("dapr components - name, namespace and scopes can be chosen; a ClusterEventBus has no namespace of its own", () => {
    const cluster = eventBusSchema.parse({
      apiVersion: API_VERSION,
      kind: "EventBus",
      metadata: { name: "shared" },
      spec: KAFKA,
    });
    const objects = renderDaprComponents({ ...cluster, kind: "ClusterEventBus" } as AnyEventBus, {
      name: "bus-shared",
      scopes: ["trigger-a", "trigger-b"],
    });
    expect(objects.map((o) => o.metadata.name)).toEqual(["bus-shared", "bus-shared-resiliency"]);
    expect(objects.map((o) => o.metadata.namespace)).toEqual([undefined, undefined]);
    expect(objects.map((o) => o.scopes)).toEqual([
      ["trigger-a", "trigger-b"],
      ["trigger-a", "trigger-b"],
    ]);
    expect(renderDaprComponents(bus(KAFKA), { namespace: "other" })[0]!.metadata.namespace).toBe("other");
  });

  it("dapr components - pure: the same bus gives the same objects and is not changed", () => {
    const b = bus(REDIS);
    const before = JSON.stringify(b);
    expect(renderDaprComponents(b)).toEqual(renderDaprComponents(b));
    expect(JSON.stringify(b)).toBe(before);
  });

  it("dapr components - every bus of examples/eventbus/dapr.yaml renders", async () => {
    const m = await loadManifests([fileURLToPath(new URL("../../../examples/eventbus/dapr.yaml", import.meta.url))]);
    expect(m.issues).toEqual([]);
    const rendered = m.eventBuses.map((b) => renderDaprComponents(b.resource));
    expect(rendered.map((objects) => component(objects).spec.type)).toEqual(["pubsub.redis", "pubsub.jetstream"]);
    expect(meta(rendered[0]!)["redeliverInterval"]).toBe("15000");
  });

  it("dapr components - objects survive JSON (what the local runner writes into daprd's resources path)", () => {
    const objects = renderDaprComponents(bus(KAFKA));
    expect(JSON.parse(JSON.stringify(objects))).toEqual(objects);
  });
});

describe("dapr components - each bus kind", () => {
  it("dapr components - jetstream: per-app durable and queue group, one at a time (acked after delivery), new groups start now, no stream or maxDeliver", () => {
    const m = meta(
      renderDaprComponents(bus({ jetstream: { url: "nats://a:4222,nats://b:4222", ackWait: "PT45S", replicas: 3 } })),
    );
    expect(m).toEqual({
      natsURL: "nats://a:4222,nats://b:4222",
      replicas: "3",
      ackWait: "45000ms",
      deliverPolicy: "new",
      durableName: "{appID}",
      queueGroupName: "{appID}",
      concurrency: "single",
      maxAckPending: "100",
    });
  });

  it("dapr components - natsStreaming is carried by pubsub.jetstream, its durable name prefixing the per-app durable", () => {
    const objects = renderDaprComponents(
      bus({
        natsStreaming: {
          ...NATS_STREAMING.natsStreaming!,
          ackWaitTime: "20s",
          maxInFlight: 10,
          startAtSequence: 7,
        },
      }),
    );
    expect(component(objects).spec.type).toBe("pubsub.jetstream");
    expect(meta(objects)).toEqual({
      natsURL: "nats://nats:4222",
      ackWait: "20000ms",
      maxAckPending: "10",
      deliverPolicy: "sequence",
      startSequence: "7",
      durableName: "ImDurable-{appID}",
      queueGroupName: "ImDurable-{appID}",
      concurrency: "single",
    });
    expect(meta(renderDaprComponents(bus(NATS_STREAMING)))["deliverPolicy"]).toBe("new");
  });

  it.each([
    { name: "deliverAll", extra: { deliverAll: true }, expected: { deliverPolicy: "all" } },
    { name: "startWithLastReceived", extra: { startWithLastReceived: true }, expected: { deliverPolicy: "last" } },
    {
      name: "startAtTime with its Go layout (Dapr reads Unix seconds)",
      extra: { startAtTime: "2024-05-01 10:00", startAtTimeFormat: "2006-01-02 15:04" },
      expected: { deliverPolicy: "time", startTime: String(Date.UTC(2024, 4, 1, 10) / 1000) },
    },
    {
      name: "startAtTimeDelta (no Dapr form: new events)",
      extra: { startAtTimeDelta: "1h" },
      expected: { deliverPolicy: "new" },
    },
    {
      name: "no durableSubscriptionName (OpenFunction 0.5): the durable is the app id",
      extra: { durableSubscriptionName: undefined },
      expected: { durableName: "{appID}", queueGroupName: "{appID}" },
    },
  ])("dapr components - natsStreaming $name", ({ extra, expected }) => {
    const ns: Record<string, unknown> = { ...NATS_STREAMING.natsStreaming!, ...extra };
    for (const k of Object.keys(ns)) if (ns[k] === undefined) delete ns[k];
    const m = meta(renderDaprComponents(bus({ natsStreaming: ns } as EventBusSpec)));
    expect(m).toMatchObject(expected);
    if (!("startTime" in expected)) expect(m).not.toHaveProperty("startTime");
  });

  it("dapr components - jetstream start and pending settings reach the component", () => {
    const m = meta(
      renderDaprComponents(
        bus({ jetstream: { url: "nats://nats:4222", deliverPolicy: "sequence", startSequence: 42, maxAckPending: 7 } }),
      ),
    );
    expect(m).toMatchObject({ deliverPolicy: "sequence", startSequence: "42", maxAckPending: "7" });
  });

  it.each([
    {
      name: "plain, no TLS",
      kafka: {},
      expected: { authType: "none", disableTls: "true" },
    },
    {
      name: "SASL SCRAM with TLS and a CA",
      kafka: {
        sasl: {
          mechanism: "scram-sha-512" as const,
          usernameSecret: { name: "kafka-credentials", key: "username" },
          passwordSecret: { name: "kafka-credentials", key: "password" },
        },
        tls: { caSecret: { name: "kafka-tls", key: "ca.crt" } },
      },
      expected: {
        authType: "password",
        saslUsername: "secret:kafka-credentials/username",
        saslPassword: "secret:kafka-credentials/password",
        saslMechanism: "SHA-512",
        caCert: "secret:kafka-tls/ca.crt",
      },
    },
    {
      name: "SASL plain without TLS",
      kafka: {
        sasl: {
          mechanism: "plain" as const,
          usernameSecret: { name: "k", key: "u" },
          passwordSecret: { name: "k", key: "p" },
        },
      },
      expected: { authType: "password", saslMechanism: "PLAINTEXT", disableTls: "true" },
    },
    {
      name: "TLS with a client certificate (mTLS)",
      kafka: {
        tls: {
          certSecret: { name: "c", key: "tls.crt" },
          keySecret: { name: "c", key: "tls.key" },
          insecureSkipVerify: true,
        },
      },
      expected: { authType: "mtls", clientCert: "secret:c/tls.crt", clientKey: "secret:c/tls.key", skipVerify: "true" },
    },
    {
      name: "TLS, server certificate only",
      kafka: { tls: { enabled: true } },
      expected: { authType: "certificate" },
    },
  ])("dapr components - kafka: $name", ({ kafka, expected }) => {
    const objects = renderDaprComponents(bus({ kafka: { brokers: "k:9092", ...kafka } }), { secretStore: "vault" });
    const m = meta(objects);
    expect(m).toMatchObject({ brokers: "k:9092", clientID: "ofevents", consumerGroup: "{appID}", ...expected });
    if (!("disableTls" in expected)) expect(m).not.toHaveProperty("disableTls");
    const secrets = Object.values(m).some((v) => v.startsWith("secret:"));
    expect(component(objects).auth).toEqual(secrets ? { secretStore: "vault" } : undefined);
  });

  it("dapr components - kafka: the topic prefix prefixes the consumer group too", () => {
    expect(
      meta(renderDaprComponents(bus({ kafka: { brokers: "k:9092", topicPrefix: "ofevents." } })))["consumerGroup"],
    ).toBe("ofevents.{appID}");
  });

  it("dapr components - the dapr block keeps its type, version and metadata; what the user set wins", () => {
    const objects = renderDaprComponents(
      bus({
        dapr: {
          type: "pubsub.kafka",
          version: "v2",
          metadata: [
            { name: "brokers", value: "k:9092" },
            { name: "authType", value: "none" },
            { name: "initialOffset", value: "newest" },
            { name: "consumerGroup", value: "fixed" },
          ],
        },
      }),
    );
    expect(component(objects).spec).toMatchObject({ type: "pubsub.kafka", version: "v2" });
    expect(meta(objects)).toMatchObject({
      brokers: "k:9092",
      authType: "none",
      initialOffset: "newest",
      consumerGroup: "fixed",
    });
  });

  it("dapr components - any other pub/sub type passes through as given, with the Resiliency", () => {
    const objects = renderDaprComponents(
      bus({ dapr: { type: "pubsub.rabbitmq", metadata: [{ name: "connectionString", value: "amqp://r:5672" }] } }),
    );
    expect(component(objects).spec).toEqual({
      type: "pubsub.rabbitmq",
      version: "v1",
      metadata: [{ name: "connectionString", value: "amqp://r:5672" }],
    });
    expect(resiliency(objects).spec.targets.components["default"]?.inbound?.retry).toBe("default-inbound");
  });

  it.each([
    { name: "memory (one process only)", spec: { memory: {} } as EventBusSpec },
    {
      name: "jetstream credentials file (Dapr takes jwt and seed apart)",
      spec: { jetstream: { url: "nats://n:4222", credentialsSecret: { name: "n", key: "c" } } } as EventBusSpec,
    },
    {
      name: "kafka SASL with a client certificate",
      spec: {
        kafka: {
          brokers: "k:9092",
          sasl: {
            mechanism: "plain",
            usernameSecret: { name: "a", key: "u" },
            passwordSecret: { name: "a", key: "p" },
          },
          tls: { certSecret: { name: "c", key: "crt" }, keySecret: { name: "c", key: "key" } },
        },
      } as EventBusSpec,
    },
  ])("dapr components - what Dapr cannot carry is a CONFIG error: $name", ({ spec }) => {
    let err: unknown;
    try {
      renderDaprComponents(bus(spec));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as OfEventsError).code).toBe(ErrorCode.Config);
  });
});

describe("dapr components - settings that would lose or stall messages are set safely", () => {
  it.each([
    { kind: "jetstream", spec: JETSTREAM },
    { kind: "natsStreaming", spec: NATS_STREAMING },
    { kind: "kafka", spec: KAFKA },
    { kind: "redis (dapr block)", spec: REDIS },
    { kind: "dapr block, other type", spec: { dapr: { type: "pubsub.pulsar" } } as EventBusSpec },
  ])(
    "dapr components - $kind: daprd retries a failed delivery a bounded number of times, then dead-letters it",
    ({ spec }) => {
      const r = resiliency(renderDaprComponents(bus(spec)));
      const target = r.spec.targets.components["default"];
      const inbound = r.spec.policies.retries[target?.inbound?.retry ?? ""];
      // A bounded count: with none daprd retries forever; with no policy at all Redis acks the
      // failure (lost), JetStream redelivers at once without end.
      expect(inbound).toEqual({ policy: "exponential", maxInterval: "30000ms", maxRetries: 5 });
      const outbound = r.spec.policies.retries[target?.outbound?.retry ?? ""];
      expect(outbound?.maxRetries).toBe(3);
    },
  );

  it("dapr components - the retry policy can be tuned", () => {
    const r = resiliency(
      renderDaprComponents(bus(KAFKA), { inboundRetries: 2, inboundMaxInterval: "PT5S", outboundRetries: 0 }),
    );
    expect(r.spec.policies.retries["default-inbound"]).toEqual({
      policy: "exponential",
      maxInterval: "5000ms",
      maxRetries: 2,
    });
    expect(r.spec.policies.retries["default-outbound"]?.maxRetries).toBe(0);
  });

  it("dapr components - redis: failed deliveries are never acked silently (Resiliency), pending ones are redelivered", () => {
    const objects = renderDaprComponents(bus(REDIS));
    expect(meta(objects)).toEqual({
      redisHost: "redis:6379",
      redeliverInterval: "15000",
      processingTimeout: "60000",
      consumerID: "{appID}",
    });
    expect(resiliency(objects).spec.targets.components["default"]).toEqual({
      inbound: { retry: "default-inbound" },
      outbound: { retry: "default-outbound" },
    });
  });

  it("dapr components - redis: durations are written in milliseconds (daprd ignores redeliverInterval: 1s and uses 15 s)", () => {
    const m = meta(
      renderDaprComponents(
        bus({
          dapr: {
            type: "pubsub.redis",
            metadata: [
              { name: "redisHost", value: "redis:6379" },
              { name: "redeliverInterval", value: "1s" },
              { name: "processingTimeout", value: "PT2M" },
            ],
          },
        }),
      ),
    );
    expect(m["redeliverInterval"]).toBe("1000");
    expect(m["processingTimeout"]).toBe("120000");
    expect(
      meta(
        renderDaprComponents(
          bus({ dapr: { type: "pubsub.redis", metadata: [{ name: "redeliverInterval", value: "500" }] } }),
        ),
      )["redeliverInterval"],
    ).toBe("500");
  });

  it("dapr components - kafka: a new group reads from the oldest offset (newest misses what is published before it joins)", () => {
    expect(meta(renderDaprComponents(bus(KAFKA)))["initialOffset"]).toBe("oldest");
    expect(
      meta(
        renderDaprComponents(bus({ dapr: { type: "pubsub.kafka", metadata: [{ name: "brokers", value: "k:9092" }] } })),
      )["initialOffset"],
    ).toBe("oldest");
  });

  it("dapr components - kafka: a failing message is neither retried forever by daprd nor ever skipped by the component", () => {
    const objects = renderDaprComponents(bus(KAFKA));
    // daprd: bounded retries, then the subscription's dead-letter topic.
    expect(resiliency(objects).spec.policies.retries["default-inbound"]?.maxRetries).toBe(5);
    // The component only retries when that failed too; it never commits past the message.
    expect(meta(objects)).toMatchObject({
      consumeRetryEnabled: "true",
      backOffPolicy: "constant",
      backOffDuration: "5s",
      backOffMaxRetries: "-1",
    });
  });

  it("dapr components - kafka: an exponential component back-off never gives up (its 15 min default elapsed time skips the message)", () => {
    const m = meta(
      renderDaprComponents(
        bus({
          dapr: {
            type: "pubsub.kafka",
            metadata: [
              { name: "brokers", value: "k:9092" },
              { name: "backOffPolicy", value: "exponential" },
            ],
          },
        }),
      ),
    );
    expect(m).toMatchObject({ backOffPolicy: "exponential", backOffMaxElapsedTime: "0", backOffMaxRetries: "-1" });
    expect(m).not.toHaveProperty("backOffDuration");
  });

  it("dapr components - jetstream: a failed delivery waits ackWait instead of coming back at once (no hot loop), also in the dapr block", () => {
    expect(meta(renderDaprComponents(bus(JETSTREAM)))["ackWait"]).toBe("30000ms");
    const m = meta(
      renderDaprComponents(
        bus({ dapr: { type: "pubsub.jetstream", metadata: [{ name: "natsURL", value: "nats://n:4222" }] } }),
      ),
    );
    expect(m).toMatchObject({
      ackWait: "30s",
      concurrency: "single",
      durableName: "{appID}",
      queueGroupName: "{appID}",
    });
  });

  it("dapr components - jetstream: concurrency parallel in the dapr block is refused (it acks on receipt and loses events)", () => {
    const render = (concurrency: string) =>
      renderDaprComponents(
        bus({
          dapr: {
            type: "pubsub.jetstream",
            metadata: [
              { name: "natsURL", value: "nats://n:4222" },
              { name: "concurrency", value: concurrency },
            ],
          },
        }),
      );
    const err = (() => {
      try {
        render("parallel");
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as OfEventsError).code).toBe(ErrorCode.Config);
    expect((err as Error).message).toContain('concurrency: "parallel"');
    expect(meta(render("single"))["concurrency"]).toBe("single");
  });

  it("dapr components - jetstream: no maxDeliver (JetStream stops delivering after it: neither acked nor dead-lettered)", () => {
    for (const spec of [JETSTREAM, NATS_STREAMING, { jetstream: { url: "nats://n:4222", maxDeliver: 3 } }]) {
      expect(meta(renderDaprComponents(bus(spec)))).not.toHaveProperty("maxDeliver");
    }
  });

  it("dapr components - jetstream: durable per app and no fixed stream, so one component serves every topic and every Trigger", () => {
    const m = meta(renderDaprComponents(bus(JETSTREAM)));
    expect(m["durableName"]).toBe("{appID}");
    expect(m["queueGroupName"]).toBe("{appID}");
    expect(m).not.toHaveProperty("streamName");
  });
});
