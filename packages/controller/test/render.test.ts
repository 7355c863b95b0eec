import { ScaledObject as KedaScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication as KedaTriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { Deployment as K8sDeployment } from "kubernetes-models/apps/v1/Deployment";
import { ConfigMap as K8sConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service as K8sService } from "kubernetes-models/v1/Service";
import {
  jetStreamNames,
  kafkaBusNames,
  parseManifestText,
  renderDaprComponents,
  type DaprPubSubComponent,
  type AnyEventBus,
  type ClusterEventBus,
  type EventBus,
} from "@ofevents/core";
import { describe, expect, it } from "vitest";
import {
  Reason,
  renderEventBus,
  renderEventSource,
  renderTrigger,
  validateEventBus,
  validateEventSource,
  validateTrigger,
  type ControllerOptions,
  type RenderedObject,
  type RenderedWorkload,
  labelValue,
  workloadName,
} from "../src/index.js";

const API = "events.openfunction.io/v1alpha1";
const IMAGE = "ghcr.io/ofevents/ofevents:0.1.0";
const options: ControllerOptions = { image: IMAGE };
/** The direct drivers (the opt-in for throughput): the KEDA names are theirs. */
const direct: ControllerOptions = { image: IMAGE, busDriver: "direct" };

let uidCounter = 0;
const uid = () => `00000000-0000-4000-8000-${String(++uidCounter).padStart(12, "0")}`;

// --- OpenFunction-style manifests (OpenFunction/samples events), plus extensions ------------------

const natsStreamingBus = (kind: "EventBus" | "ClusterEventBus", extra: Record<string, unknown> = {}) => ({
  apiVersion: API,
  kind,
  metadata: { name: "default", ...(kind === "EventBus" ? { namespace: "default" } : {}), uid: uid(), generation: 1 },
  spec: {
    natsStreaming: {
      natsURL: "nats://nats.default:4222",
      natsStreamingClusterID: "stan",
      subscriptionType: "queue",
      durableSubscriptionName: "ImDurable",
      ...extra,
    },
  },
});

const jetstreamClusterBus = {
  apiVersion: API,
  kind: "ClusterEventBus",
  metadata: { name: "default", uid: uid(), generation: 1 },
  spec: { jetstream: { url: "nats://nats.nats-system.svc:4222", stream: "events" } },
};

const kafkaSource = (extra: Record<string, unknown> = {}) => ({
  apiVersion: API,
  kind: "EventSource",
  metadata: { name: "my-eventsource", namespace: "default", uid: uid(), generation: 3 },
  spec: {
    logLevel: "2",
    eventBus: "default",
    kafka: {
      "sample-two": {
        brokers: "kafka-server-kafka-brokers.default.svc.cluster.local:9092",
        topic: "events-sample",
        authRequired: false,
        ...extra,
      },
    },
  },
});

const cronSinkSource = {
  apiVersion: API,
  kind: "EventSource",
  metadata: { name: "my-eventsource", namespace: "default", uid: uid(), generation: 1 },
  spec: {
    logLevel: "2",
    cron: { "sample-three": { schedule: "@every 5s" } },
    sink: { ref: { apiVersion: "serving.knative.dev/v1", kind: "Service", name: "function-sample-serving-ksvc" } },
  },
};

const webhookSource = {
  apiVersion: API,
  kind: "EventSource",
  metadata: { name: "github", namespace: "team-a", uid: uid(), generation: 1 },
  spec: {
    eventBus: "default",
    webhook: {
      push: { endpoint: "/push", port: "12000", authSecret: { name: "github-token", key: "token" } },
      issue: { endpoint: "/issue", port: 12000 },
      ping: { endpoint: "/ping", port: "12001" },
    },
  },
};

const twoInputTrigger = {
  apiVersion: API,
  kind: "Trigger",
  metadata: { name: "function-sample-trigger", namespace: "default", uid: uid(), generation: 2 },
  spec: {
    logLevel: "2",
    eventBus: "default",
    inputs: {
      A: { eventSource: "my-eventsource", event: "sample-one" },
      B: { eventSource: "other-source", event: "sample-two", namespace: "team-b" },
    },
    subscribers: [
      {
        condition: "A && B",
        topic: "metrics",
        sink: { ref: { apiVersion: "core.openfunction.io/v1beta2", kind: "Function", name: "sink-fn" } },
      },
      {
        condition: "B",
        sink: { ref: { apiVersion: "v1", kind: "Service", name: "audit", namespace: "ops" } },
        deadLetterSink: { uri: "http://dead.ops.svc.cluster.local/letters" },
      },
    ],
  },
};

// --- helpers ---------------------------------------------------------------------------------------

function parsedBus(raw: unknown, o: ControllerOptions = options): AnyEventBus {
  const v = validateEventBus(raw, { options: o });
  if (!v.ok) throw new Error(v.condition.message);
  return v.resource;
}

function catalog(...raws: unknown[]): { eventBuses: EventBus[]; clusterEventBuses: ClusterEventBus[] } {
  const buses = raws.map((r) => parsedBus(r));
  return {
    eventBuses: buses.filter((b): b is EventBus => b.kind === "EventBus"),
    clusterEventBuses: buses.filter((b): b is ClusterEventBus => b.kind === "ClusterEventBus"),
  };
}

function source(raw: unknown, buses = catalog(), o: ControllerOptions = options): RenderedWorkload {
  const v = validateEventSource(raw, { buses, options: o });
  if (!v.ok) throw new Error(v.condition.message);
  return renderEventSource({ eventSource: v.resource, bus: v.bus, options: o });
}

function trigger(
  raw: unknown,
  buses = catalog(),
  o: ControllerOptions = options,
  servicePort?: number,
): RenderedWorkload {
  const v = validateTrigger(raw, { buses, options: o });
  if (!v.ok) throw new Error(v.condition.message);
  return renderTrigger({
    trigger: v.resource,
    bus: v.bus,
    options: o,
    sinks: { servicePort: () => servicePort },
  });
}

/** Every rendered object is owned by `owner` and labelled for it; models validate what they know. */
function expectWellFormed(r: RenderedWorkload, owner: { kind: string; metadata: { name: string; uid: string } }) {
  for (const obj of r.objects) {
    const meta = obj.metadata;
    if (obj.kind !== "Component" && obj.kind !== "Resiliency") {
      expect(meta.ownerReferences, `${obj.kind} owner`).toEqual([
        {
          apiVersion: API,
          kind: owner.kind,
          name: owner.metadata.name,
          uid: owner.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(meta.labels?.["app.kubernetes.io/managed-by"]).toBe("ofevents");
      expect(meta.labels?.[`events.openfunction.io/${owner.kind.toLowerCase()}`]).toBe(owner.metadata.name);
    }
    validateModel(obj);
  }
}

function validateModel(obj: RenderedObject): void {
  const plain = JSON.parse(JSON.stringify(obj)) as never;
  switch (obj.kind) {
    case "ScaledObject":
      new KedaScaledObject(plain).validate();
      break;
    case "TriggerAuthentication":
      new KedaTriggerAuthentication(plain).validate();
      break;
    case "Deployment":
      new K8sDeployment(plain).validate();
      break;
    case "ConfigMap":
      new K8sConfigMap(plain).validate();
      break;
    case "Service":
      new K8sService(plain).validate();
      break;
    default:
      break;
  }
}

function files(r: RenderedWorkload) {
  const m = parseManifestText(r.configMap.data["eventsource.yaml"] ?? r.configMap.data["trigger.yaml"] ?? "", "x.yaml");
  for (const [file, text] of Object.entries(r.configMap.data)) {
    if (file !== "eventsource.yaml" && file !== "trigger.yaml") parseManifestText(text, file, m);
  }
  expect(m.issues).toEqual([]);
  return m;
}

const container = (r: RenderedWorkload) => r.deployment!.spec.template.spec.containers[0]!;

// --- EventSource ---------------------------------------------------------------------------------------

describe("controller render - EventSource", () => {
  it("controller render - kafka source on an EventBus: ConfigMap, Deployment, kafka-lag ScaledObject, bus Component", () => {
    const bus = natsStreamingBus("EventBus");
    const raw = kafkaSource();
    const r = source(raw, catalog(bus));
    expect(r.name).toBe("eventsource-my-eventsource");

    // ConfigMap: the resource and the bus, read back by the entrypoint's loader.
    expect(Object.keys(r.configMap.data).sort()).toEqual(["eventbus.yaml", "eventsource.yaml"]);
    const m = files(r);
    expect(m.eventSources.map((e) => e.resource.metadata)).toEqual([{ name: "my-eventsource", namespace: "default" }]);
    expect(m.eventSources[0]!.resource.spec.kafka?.["sample-two"]?.topic).toBe("events-sample");
    expect(m.eventBuses.map((b) => b.resource.spec.natsStreaming?.natsURL)).toEqual(["nats://nats.default:4222"]);

    // Deployment.
    const d = r.deployment!;
    expect(d.metadata.name).toBe("eventsource-my-eventsource");
    expect(d.metadata.namespace).toBe("default");
    expect(d.spec.replicas).toBeUndefined();
    expect(d.spec.selector.matchLabels).toEqual({
      "app.kubernetes.io/managed-by": "ofevents",
      "events.openfunction.io/eventsource": "my-eventsource",
    });
    const pod = d.spec.template;
    expect(pod.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    expect(pod.metadata.annotations).toMatchObject({
      "dapr.io/enabled": "true",
      "dapr.io/app-id": "eventsource-my-eventsource",
      "dapr.io/app-port": "8081",
      "dapr.io/app-protocol": "http",
    });
    expect(pod.metadata.annotations["events.openfunction.io/config-hash"]).toMatch(/^[0-9a-f]{16}$/);
    const c = container(r);
    expect(c.image).toBe(IMAGE);
    expect(c.args).toEqual([
      "eventsource",
      "-f",
      "/etc/ofevents",
      "--name",
      "default/my-eventsource",
      "--bus-driver",
      "dapr", // the default: through the Dapr sidecar
      "--log-level",
      "debug", // OpenFunction's logLevel "2"
    ]);
    expect(c.ports).toEqual([{ name: "health", containerPort: 8081, protocol: "TCP" }]);
    expect(c.livenessProbe!.httpGet).toEqual({ path: "/healthz", port: "health" });
    expect(c.readinessProbe!.httpGet).toEqual({ path: "/readyz", port: "health" });
    expect(c.volumeMounts).toContainEqual({ name: "config", mountPath: "/etc/ofevents", readOnly: true });
    expect(c.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 1000,
      runAsGroup: 1000,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    expect(c.resources).toEqual({ requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "256Mi" } });
    expect(c.env).toBeUndefined();
    expect(pod.spec.securityContext).toEqual({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(pod.spec.volumes).toContainEqual({ name: "config", configMap: { name: "eventsource-my-eventsource" } });

    // ScaledObject on the source's own consumer group.
    expect(r.service).toBeUndefined();
    const so = r.scaledObject!;
    expect(so.spec.scaleTargetRef).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      name: "eventsource-my-eventsource",
      envSourceContainerName: "ofevents",
    });
    expect(so.spec.minReplicaCount).toBe(0);
    expect(so.spec.maxReplicaCount).toBeUndefined();
    expect(so.spec.triggers).toEqual([
      {
        type: "kafka",
        metadata: {
          bootstrapServers: "kafka-server-kafka-brokers.default.svc.cluster.local:9092",
          consumerGroup: "ofevents-default-my-eventsource-sample-two",
          topic: "events-sample",
          lagThreshold: "10",
          offsetResetPolicy: "latest",
        },
      },
    ]);
    expect(r.triggerAuthentications).toEqual([]);

    // The bus's Dapr objects in the source's namespace, owned by the EventBus.
    expect(r.eventBus.map((o) => [o.kind, o.metadata.name, o.metadata.namespace])).toEqual([
      ["Component", "default", "default"],
      ["Resiliency", "default-resiliency", "default"],
    ]);
    expect(r.eventBus[0]!.metadata.ownerReferences?.[0]).toMatchObject({ kind: "EventBus", name: "default" });
    expect(r.objects.map((o) => o.kind)).toEqual([
      "Component",
      "Resiliency",
      "ConfigMap",
      "Deployment",
      "ScaledObject",
    ]);
    expectWellFormed(r, raw);
  });

  it("controller render - kafka scaleOption (OpenFunction's GenericScaleOption) and SASL/TLS secrets", () => {
    const raw = kafkaSource({
      startFrom: "oldest",
      consumerGroup: "orders",
      sasl: {
        mechanism: "scram-sha-512",
        usernameSecret: { name: "kafka-user", key: "username" },
        passwordSecret: { name: "kafka-user", key: "password" },
      },
      tls: { caSecret: { name: "kafka-ca", key: "ca.crt" } },
      scaleOption: {
        minReplicaCount: 0,
        maxReplicaCount: 5,
        pollingInterval: 15,
        cooldownPeriod: 60,
        advanced: { horizontalPodAutoscalerConfig: { behavior: { scaleDown: { stabilizationWindowSeconds: 30 } } } },
        metadata: { allowIdleConsumers: "true", consumerGroup: "ignored" },
        topic: "events-sample",
        lagThreshold: "20",
      },
    });
    const r = source(raw, catalog(natsStreamingBus("EventBus")));
    const so = r.scaledObject!;
    expect(so.spec).toMatchObject({
      minReplicaCount: 0,
      maxReplicaCount: 5,
      pollingInterval: 15,
      cooldownPeriod: 60,
      advanced: { horizontalPodAutoscalerConfig: { behavior: { scaleDown: { stabilizationWindowSeconds: 30 } } } },
    });
    expect(so.spec.triggers).toEqual([
      {
        type: "kafka",
        authenticationRef: { name: "eventsource-my-eventsource-0" },
        metadata: {
          bootstrapServers: "kafka-server-kafka-brokers.default.svc.cluster.local:9092",
          consumerGroup: "orders",
          topic: "events-sample",
          lagThreshold: "20",
          offsetResetPolicy: "earliest",
          allowIdleConsumers: "true",
          sasl: "scram_sha512",
          tls: "enable",
        },
      },
    ]);
    expect(r.triggerAuthentications.map((a) => [a.metadata.name, a.spec])).toEqual([
      [
        "eventsource-my-eventsource-0",
        {
          secretTargetRef: [
            { parameter: "username", name: "kafka-user", key: "username" },
            { parameter: "password", name: "kafka-user", key: "password" },
            { parameter: "ca", name: "kafka-ca", key: "ca.crt" },
          ],
        },
      ],
    ]);
    // The entrypoint's secret resolver reads them from <NAME>_<KEY>.
    expect(container(r).env).toEqual([
      { name: "KAFKA_USER_USERNAME", valueFrom: { secretKeyRef: { name: "kafka-user", key: "username" } } },
      { name: "KAFKA_USER_PASSWORD", valueFrom: { secretKeyRef: { name: "kafka-user", key: "password" } } },
      { name: "KAFKA_CA_CA_CRT", valueFrom: { secretKeyRef: { name: "kafka-ca", key: "ca.crt" } } },
    ]);
    expectWellFormed(r, raw);
  });

  it("controller render - source without an event bus: sink ref resolved into the ConfigMap, one replica for cron", () => {
    const r = source(cronSinkSource);
    expect(Object.keys(r.configMap.data)).toEqual(["eventsource.yaml"]);
    const m = files(r);
    expect(m.eventSources[0]!.resource.spec.sink).toEqual({
      uri: "http://function-sample-serving-ksvc.default.svc.cluster.local",
    });
    expect(container(r).args).toEqual([
      "eventsource",
      "-f",
      "/etc/ofevents",
      "--name",
      "default/my-eventsource",
      "--log-level",
      "debug", // OpenFunction's logLevel "2"
    ]);
    // A cron source can neither wake from zero nor run twice: one replica, no ScaledObject.
    expect(r.scaledObject).toBeUndefined();
    expect(r.deployment!.spec.replicas).toBe(1);
    expect(r.eventBus).toEqual([]);
    expect(r.objects.map((o) => o.kind)).toEqual(["ConfigMap", "Deployment"]);
    expectWellFormed(r, cronSinkSource);
  });

  it("controller render - source with an event bus and a sink: the bus is rendered too and the workload gets both", () => {
    const both = { ...cronSinkSource, spec: { ...cronSinkSource.spec, eventBus: "default" } };
    const r = source(both, catalog(natsStreamingBus("EventBus")));
    // The bus's Dapr component is rendered (the entrypoint publishes to it) and the sink resolved.
    expect(r.eventBus.length).toBeGreaterThan(0);
    const m = files(r);
    expect(m.eventSources[0]!.resource.spec.eventBus).toBe("default");
    expect(m.eventSources[0]!.resource.spec.sink).toEqual({
      uri: "http://function-sample-serving-ksvc.default.svc.cluster.local",
    });
    expect(m.eventBuses.map((b) => b.resource.metadata.name)).toEqual(["default"]);
    expectWellFormed(r, both);
  });

  it("controller render - a sink with both ref and uri resolves to the uri (OpenFunction's rule)", () => {
    // A ref the controller cannot resolve is no problem beside a uri: the uri wins.
    const both = {
      ...cronSinkSource,
      spec: {
        ...cronSinkSource.spec,
        sink: { uri: "http://sink.example:8080/in", ref: { apiVersion: "example.io/v1", kind: "Thing", name: "t" } },
      },
    };
    const r = source(both);
    expect(files(r).eventSources[0]!.resource.spec.sink).toEqual({ uri: "http://sink.example:8080/in" });
  });

  it("controller render - ClusterEventBus fallback, rendered into the source's namespace; a namespaced EventBus wins", () => {
    const raw = webhookSource;
    const r = source(raw, catalog(jetstreamClusterBus));
    const m = files(r);
    expect(Object.keys(r.configMap.data).sort()).toEqual(["clustereventbus.yaml", "eventsource.yaml"]);
    expect(m.clusterEventBuses.map((b) => b.resource.metadata)).toEqual([{ name: "default" }]);
    expect(r.eventBus.map((o) => [o.kind, o.metadata.name, o.metadata.namespace])).toEqual([
      ["Component", "default", "team-a"],
      ["Resiliency", "default-resiliency", "team-a"],
    ]);
    expect(r.eventBus[0]!.metadata.ownerReferences).toEqual([
      {
        apiVersion: API,
        kind: "ClusterEventBus",
        name: "default",
        uid: jetstreamClusterBus.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(r.eventBus[0]!.metadata.labels).toEqual({
      "app.kubernetes.io/managed-by": "ofevents",
      "events.openfunction.io/clustereventbus": "default",
    });
    expectWellFormed(r, raw);

    const nsBus = {
      apiVersion: API,
      kind: "EventBus",
      metadata: { name: "default", namespace: "team-a", uid: uid() },
      spec: { kafka: { brokers: "kafka.team-a:9092" } },
    };
    const won = source(raw, catalog(jetstreamClusterBus, nsBus));
    expect(Object.keys(won.configMap.data).sort()).toEqual(["eventbus.yaml", "eventsource.yaml"]);
    expect(files(won).eventBuses[0]!.resource.spec.kafka?.brokers).toBe("kafka.team-a:9092");
    expect(won.eventBus[0]!.metadata.ownerReferences?.[0]).toMatchObject({ kind: "EventBus", uid: nsBus.metadata.uid });
  });

  it("controller render - webhook source: Service on its ports, a CPU ScaledObject that never sleeps", () => {
    const r = source(webhookSource, catalog(jetstreamClusterBus));
    expect(r.name).toBe("eventsource-github");
    expect(container(r).ports).toEqual([
      { name: "health", containerPort: 8081, protocol: "TCP" },
      { name: "http-12000", containerPort: 12000, protocol: "TCP" },
      { name: "http-12001", containerPort: 12001, protocol: "TCP" },
    ]);
    expect(container(r).env).toEqual([
      { name: "GITHUB_TOKEN_TOKEN", valueFrom: { secretKeyRef: { name: "github-token", key: "token" } } },
    ]);
    const svc = r.service!;
    expect(svc.metadata.name).toBe("eventsource-github");
    expect(svc.metadata.namespace).toBe("team-a");
    expect(svc.spec).toEqual({
      type: "ClusterIP",
      selector: r.deployment!.spec.selector.matchLabels,
      ports: [
        { name: "http-12000", port: 12000, targetPort: "http-12000", protocol: "TCP" },
        { name: "http-12001", port: 12001, targetPort: "http-12001", protocol: "TCP" },
      ],
    });
    expect(r.scaledObject!.spec.minReplicaCount).toBe(1);
    expect(r.scaledObject!.spec.triggers).toEqual([
      { type: "cpu", metricType: "Utilization", metadata: { value: "80" } },
    ]);
    expect(r.objects.map((o) => o.kind)).toEqual([
      "Component",
      "Resiliency",
      "ConfigMap",
      "Service",
      "Deployment",
      "ScaledObject",
    ]);
    expectWellFormed(r, webhookSource);
  });

  it.each([
    {
      name: "redis stream: redis-streams on the group's lag, password from its secret",
      events: {
        redis: {
          orders: {
            redisHost: "redis.data:6379",
            redisPassword: "",
            stream: "orders",
            redisDB: 2,
            passwordSecret: { name: "redis", key: "password" },
          },
        },
      },
      expected: {
        min: 0,
        triggers: [
          {
            type: "redis-streams",
            authenticationRef: { name: "eventsource-mixed-0" },
            metadata: {
              address: "redis.data:6379",
              databaseIndex: "2",
              stream: "orders",
              consumerGroup: "ofevents-default-mixed-orders",
              lagCount: "10",
            },
          },
        ],
        auth: [{ parameter: "password", name: "redis", key: "password" }],
      },
    },
    {
      name: "nats jetstream: nats-jetstream on the durable, monitoring endpoint from the URL",
      events: {
        nats: {
          "order.created": {
            url: "nats://nats.nats-system.svc:4222",
            subject: "orders.created",
            jetstream: { stream: "ORDERS" },
          },
        },
      },
      expected: {
        min: 0,
        triggers: [
          {
            type: "nats-jetstream",
            metadata: {
              natsServerMonitoringEndpoint: "nats.nats-system.svc:8222",
              account: "$G",
              stream: "ORDERS",
              consumer: "ofevents-default-mixed-order_created",
              lagThreshold: "10",
            },
          },
        ],
        auth: [],
      },
    },
    {
      name: "kafka and a core NATS queue group: lag trigger, but never below one replica",
      events: {
        kafka: { k: { brokers: "kafka:9092", topic: "t", authRequired: false } },
        nats: { q: { url: "nats://nats:4222", subject: "s", queueGroup: "workers" } },
      },
      expected: {
        min: 1,
        triggers: [
          {
            type: "kafka",
            metadata: {
              bootstrapServers: "kafka:9092",
              consumerGroup: "ofevents-default-mixed-k",
              topic: "t",
              lagThreshold: "10",
              offsetResetPolicy: "latest",
            },
          },
        ],
        auth: [],
      },
    },
    {
      name: "mqtt: one replica and no ScaledObject",
      events: { mqtt: { m: { url: "tcp://mqtt:1883", topic: "sensors/#" } } },
      expected: undefined,
    },
    {
      name: "amqp: replicas share the queue, CPU-scaled, never below one replica",
      events: { amqp: { a: { url: "amqp://rabbitmq:5672", queue: { name: "orders" } } } },
      expected: {
        min: 1,
        triggers: [{ type: "cpu", metricType: "Utilization", metadata: { value: "80" } }],
        auth: [],
      },
    },
    {
      name: "redis channel: one replica and no ScaledObject",
      events: { redis: { c: { redisHost: "redis:6379", redisPassword: "", channel: "news" } } },
      expected: undefined,
    },
  ])("controller render - scaler for $name", ({ events, expected }) => {
    const raw = {
      apiVersion: API,
      kind: "EventSource",
      metadata: { name: "mixed", uid: uid() },
      spec: { eventBus: "default", ...events },
    };
    const r = source(raw, catalog(natsStreamingBus("EventBus")));
    if (expected === undefined) {
      expect(r.scaledObject).toBeUndefined();
      expect(r.deployment!.spec.replicas).toBe(1);
    } else {
      expect(r.scaledObject!.spec.minReplicaCount).toBe(expected.min);
      expect(r.scaledObject!.spec.triggers).toEqual(expected.triggers);
      expect(r.triggerAuthentications.flatMap((a) => a.spec.secretTargetRef)).toEqual(expected.auth);
      expect(r.deployment!.spec.replicas).toBeUndefined();
    }
    expectWellFormed(r, raw);
  });
});

// --- Trigger -----------------------------------------------------------------------------------------

describe("controller render - Trigger", () => {
  it("controller render - two inputs, two subscribers on JetStream: one nats-jetstream trigger per topic, refs resolved", () => {
    const raw = twoInputTrigger;
    const r = trigger(raw, catalog(jetstreamClusterBus), direct, 8080);
    expect(r.name).toBe("trigger-function-sample-trigger");
    const group = "trigger-default-function-sample-trigger";
    const a = jetStreamNames("events", "default-my-eventsource-sample-one", group);
    const b = jetStreamNames("events", "team-b-other-source-sample-two", group);
    expect([a.stream, a.consumer]).toEqual(["events-default-my-eventsource-sample-one", group]);
    expect(r.scaledObject!.spec.minReplicaCount).toBe(0);
    expect(r.scaledObject!.spec.triggers).toEqual(
      [a, b].map((n) => ({
        type: "nats-jetstream",
        metadata: {
          natsServerMonitoringEndpoint: "nats.nats-system.svc:8222",
          account: "$G",
          stream: n.stream,
          consumer: n.consumer,
          lagThreshold: "10",
        },
      })),
    );
    const subs = files(r).triggers[0]!.resource.spec.subscribers;
    expect(subs.map((s) => [s.sink, s.deadLetterSink])).toEqual([
      [{ uri: "http://sink-fn.default.svc.cluster.local" }, undefined],
      [{ uri: "http://audit.ops.svc.cluster.local:8080" }, { uri: "http://dead.ops.svc.cluster.local/letters" }],
    ]);
    expect(subs[0]!.topic).toBe("metrics");
    expect(container(r).args).toEqual([
      "trigger",
      "-f",
      "/etc/ofevents",
      "--name",
      "default/function-sample-trigger",
      "--bus-driver",
      "direct",
      "--log-level",
      "debug", // OpenFunction's logLevel "2"
    ]);
    expect(r.deployment!.spec.template.metadata.annotations["dapr.io/app-id"]).toBe("trigger-function-sample-trigger");
    expect(r.objects.map((o) => o.kind)).toEqual([
      "Component",
      "Resiliency",
      "ConfigMap",
      "Deployment",
      "ScaledObject",
    ]);
    expectWellFormed(r, raw);
  });

  it("controller render - natsStreaming EventBus (OpenFunction's): mapped to JetStream, its scaleOption honoured", () => {
    const bus = natsStreamingBus("EventBus", {
      scaleOption: {
        natsServerMonitoringEndpoint: "nats.default.svc.cluster.local:8222",
        lagThreshold: "5",
        minReplicaCount: 0,
        maxReplicaCount: 3,
        cooldownPeriod: 120,
      },
    });
    const r = trigger(twoInputTrigger, catalog(bus), direct);
    const so = r.scaledObject!;
    expect(so.spec).toMatchObject({ minReplicaCount: 0, maxReplicaCount: 3, cooldownPeriod: 120 });
    // The consumer the direct driver creates: durableSubscriptionName prefixes the trigger's group.
    const n = jetStreamNames(
      "ofevents",
      "default-my-eventsource-sample-one",
      "trigger-default-function-sample-trigger",
      "ImDurable",
    );
    expect(n.consumer).toBe("ImDurable-trigger-default-function-sample-trigger");
    expect(so.spec.triggers[0]).toEqual({
      type: "nats-jetstream",
      metadata: {
        natsServerMonitoringEndpoint: "nats.default.svc.cluster.local:8222",
        account: "$G",
        stream: n.stream,
        consumer: n.consumer,
        lagThreshold: "5",
      },
    });
    // The natsStreaming Component carries the same bus for Functions, through pubsub.jetstream.
    expect((r.eventBus[0] as { spec: { type: string } }).spec.type).toBe("pubsub.jetstream");
    expectWellFormed(r, twoInputTrigger);
  });

  it("controller render - kafka bus: kafka trigger per topic with the trigger's group, names as the kafka driver's", () => {
    const bus = {
      apiVersion: API,
      kind: "EventBus",
      metadata: { name: "default", namespace: "default", uid: uid() },
      spec: {
        kafka: {
          brokers: "kafka-0.kafka:9092,kafka-1.kafka:9092",
          topicPrefix: "prod.",
          sasl: {
            mechanism: "plain",
            usernameSecret: { name: "bus", key: "user" },
            passwordSecret: { name: "bus", key: "pass" },
          },
        },
      },
    };
    const r = trigger(twoInputTrigger, catalog(bus), direct);
    const group = "trigger-default-function-sample-trigger";
    const topics = ["default-my-eventsource-sample-one", "team-b-other-source-sample-two"];
    expect(r.scaledObject!.spec.triggers).toEqual(
      topics.map((t, i) => {
        const n = kafkaBusNames("prod.", t, group);
        return {
          type: "kafka",
          authenticationRef: { name: `trigger-function-sample-trigger-${i}` },
          metadata: {
            bootstrapServers: "kafka-0.kafka:9092,kafka-1.kafka:9092",
            consumerGroup: n.group,
            topic: n.topic,
            lagThreshold: "10",
            offsetResetPolicy: "latest",
            sasl: "plaintext",
          },
        };
      }),
    );
    expect(r.scaledObject!.spec.triggers[0]!.metadata["topic"]).toBe("prod.default-my-eventsource-sample-one");
    expect(r.triggerAuthentications).toHaveLength(2);
    expect(container(r).env?.map((e) => e.name)).toEqual(["BUS_USER", "BUS_PASS"]);
    expectWellFormed(r, twoInputTrigger);
  });

  it("controller render - Dapr bus driver: --bus-driver dapr, KEDA on the stream both paths share and the Component's durable", () => {
    const o: ControllerOptions = { image: IMAGE, busDriver: "dapr" };
    const r = trigger(twoInputTrigger, catalog(jetstreamClusterBus), o);
    expect(container(r).args).toContain("dapr");
    const topic = "default-my-eventsource-sample-one";
    const direct = trigger(twoInputTrigger, catalog(jetstreamClusterBus));
    // One stream per topic, whichever client: the direct driver's and the one prepareTopic makes.
    const stream = jetStreamNames("events", topic).stream;
    expect(stream).toBe("events-default-my-eventsource-sample-one");
    expect(direct.scaledObject!.spec.triggers[0]!.metadata["stream"]).toBe(stream);
    // daprd's durable: the rendered Component's durableName, {appID} as the workload's app id.
    const component = renderDaprComponents(jetstreamClusterBus as AnyEventBus, { namespace: "default" })[0]!;
    const durable = (component as DaprPubSubComponent).spec.metadata.find((m) => m.name === "durableName")!.value!;
    expect(durable).toBe("{appID}");
    expect(r.scaledObject!.spec.triggers[0]!.metadata).toMatchObject({
      stream,
      consumer: "trigger-function-sample-trigger",
    });
    expect(r.deployment!.spec.template.metadata.annotations["dapr.io/app-id"]).toBe("trigger-function-sample-trigger");
    expectWellFormed(r, twoInputTrigger);
  });

  it("controller render - kafka through Dapr: the direct driver's topic, the Component's consumerGroup with the app id", () => {
    const o: ControllerOptions = { image: IMAGE, busDriver: "dapr" };
    const bus = {
      apiVersion: API,
      kind: "EventBus",
      metadata: { name: "default", namespace: "default", uid: uid() },
      spec: { kafka: { brokers: "kafka:9092", topicPrefix: "prod." } },
    };
    const r = trigger(twoInputTrigger, catalog(bus), o);
    const direct = trigger(twoInputTrigger, catalog(bus));
    const topics = ["default-my-eventsource-sample-one", "team-b-other-source-sample-two"];
    const component = renderDaprComponents(bus as AnyEventBus)[0] as DaprPubSubComponent;
    const group = component.spec.metadata.find((m) => m.name === "consumerGroup")!.value!;
    expect(group).toBe("prod.{appID}");
    expect(r.scaledObject!.spec.triggers.map((t) => t.metadata)).toEqual(
      topics.map((t) => ({
        bootstrapServers: "kafka:9092",
        consumerGroup: "prod.trigger-function-sample-trigger",
        topic: kafkaBusNames("prod.", t).topic,
        lagThreshold: "10",
        offsetResetPolicy: "earliest",
      })),
    );
    // The same Kafka topics as the direct driver's; only the group differs (the app's, daprd's).
    expect(r.scaledObject!.spec.triggers.map((t) => t.metadata["topic"])).toEqual(
      direct.scaledObject!.spec.triggers.map((t) => t.metadata["topic"]),
    );
  });

  it.each([
    {
      name: "pubsub.jetstream: the default stream prefix, durableName with the app id",
      type: "pubsub.jetstream",
      metadata: [
        { name: "natsURL", value: "nats://n:4222" },
        { name: "durableName", value: "x-{appID}" },
      ],
      expected: {
        stream: jetStreamNames("ofevents", "default-my-eventsource-sample-one").stream,
        consumer: "x-trigger-function-sample-trigger",
      },
    },
    {
      name: "pubsub.jetstream with streamName: that stream",
      type: "pubsub.jetstream",
      metadata: [
        { name: "natsURL", value: "nats://n:4222" },
        { name: "streamName", value: "all-events" },
      ],
      expected: { stream: "all-events", consumer: "trigger-function-sample-trigger" },
    },
    {
      name: "pubsub.kafka: the topic as a Kafka name, consumerGroup with the app id",
      type: "pubsub.kafka",
      metadata: [
        { name: "brokers", value: "k:9092" },
        { name: "consumerGroup", value: "g-{appID}" },
      ],
      expected: {
        topic: kafkaBusNames(undefined, "default-my-eventsource-sample-one").topic,
        consumerGroup: "g-trigger-function-sample-trigger",
      },
    },
  ])("controller render - spec.dapr $name", ({ type, metadata, expected }) => {
    const bus = {
      apiVersion: API,
      kind: "EventBus",
      metadata: { name: "default", namespace: "default", uid: uid() },
      spec: { dapr: { type, metadata } },
    };
    const r = trigger(twoInputTrigger, catalog(bus));
    expect(r.scaledObject!.spec.triggers[0]!.metadata).toMatchObject(expected);
  });

  it.each([
    {
      name: "durableSubscriptionName prefixes the app id",
      extra: {},
      consumer: "ImDurable-trigger-function-sample-trigger",
    },
    {
      name: "without durableSubscriptionName (OpenFunction 0.5) the durable is the app id",
      extra: { durableSubscriptionName: undefined },
      consumer: "trigger-function-sample-trigger",
    },
  ])(
    "controller render - natsStreaming through Dapr: KEDA reads the Component's durable ($name)",
    ({ extra, consumer }) => {
      const o: ControllerOptions = { image: IMAGE, busDriver: "dapr" };
      const bus = natsStreamingBus("EventBus", extra);
      const ns = bus.spec.natsStreaming as Record<string, unknown>;
      for (const k of Object.keys(ns)) if (ns[k] === undefined) delete ns[k];
      const r = trigger(twoInputTrigger, catalog(bus), o);
      expect(r.scaledObject!.spec.triggers[0]!.metadata).toMatchObject({ consumer });
    },
  );

  it("controller render - an input no condition names gets no KEDA trigger (the runtime does not subscribe)", () => {
    const raw = {
      ...twoInputTrigger,
      metadata: { ...twoInputTrigger.metadata, uid: uid() },
      spec: { ...twoInputTrigger.spec, subscribers: [{ condition: "A", sink: { uri: "http://x.default/" } }] },
    };
    const r = trigger(raw, catalog(jetstreamClusterBus), direct);
    expect(r.scaledObject!.spec.triggers.map((t) => t.metadata["stream"])).toEqual([
      "events-default-my-eventsource-sample-one",
    ]);
  });

  it("controller render - Function mode: an OpenFunction async Function with inputs, pubsub and KEDA triggers", () => {
    const o: ControllerOptions = { image: IMAGE, mode: "function" };
    const r = trigger(twoInputTrigger, catalog(natsStreamingBus("EventBus")), o);
    expect(r.deployment).toBeUndefined();
    expect(r.scaledObject).toBeUndefined();
    const fn = r.function!;
    expect(fn.apiVersion).toBe("core.openfunction.io/v1beta1");
    expect(fn.metadata.name).toBe("trigger-function-sample-trigger");
    const serving = fn.spec["serving"] as Record<string, unknown>;
    expect(serving["runtime"]).toBe("async");
    expect(serving["inputs"]).toEqual([
      { name: "input-0", component: "default", topic: "default-my-eventsource-sample-one" },
      { name: "input-1", component: "default", topic: "team-b-other-source-sample-two" },
    ]);
    expect(Object.keys(serving["pubsub"] as object)).toEqual(["default"]);
    expect((serving["triggers"] as { type: string }[]).map((t) => t.type)).toEqual([
      "nats-jetstream",
      "nats-jetstream",
    ]);
    expect(serving["scaleOptions"]).toEqual({ minReplicas: 0, keda: { scaledObject: { minReplicaCount: 0 } } });
    const template = serving["template"] as { containers: { name: string; args: string[] }[] };
    expect(template.containers[0]!.name).toBe("function");
    expect(template.containers[0]!.args.slice(0, 5)).toEqual([
      "trigger",
      "-f",
      "/etc/ofevents",
      "--name",
      "default/function-sample-trigger",
    ]);
    expect(r.objects.map((x) => x.kind)).toEqual(["Component", "Resiliency", "ConfigMap", "Function"]);
    expectWellFormed(r, twoInputTrigger);
  });
});

describe("controller render - Function mode on Kafka with a topicPrefix", () => {
  it("controller render - Function mode: inputs and outputs name the Kafka topics the direct driver uses", () => {
    const o: ControllerOptions = { image: IMAGE, mode: "function" };
    const bus = {
      apiVersion: API,
      kind: "EventBus",
      metadata: { name: "default", namespace: "default", uid: uid() },
      spec: { kafka: { brokers: "kafka:9092", topicPrefix: "prod." } },
    };
    const t = trigger(twoInputTrigger, catalog(bus), o).function!.spec["serving"] as Record<string, unknown>;
    expect(t["inputs"]).toEqual([
      { name: "input-0", component: "default", topic: "prod.default-my-eventsource-sample-one" },
      { name: "input-1", component: "default", topic: "prod.team-b-other-source-sample-two" },
    ]);
    const ns = { ...bus, metadata: { ...bus.metadata, namespace: "team-a" } };
    const s = source(webhookSource, catalog(ns), o).function!.spec["serving"] as Record<string, unknown>;
    expect((s["outputs"] as Array<{ topic: string }>).map((x) => x.topic)).toEqual(
      ["team-a-github-push", "team-a-github-issue", "team-a-github-ping"].map((x) => kafkaBusNames("prod.", x).topic),
    );
  });
});

describe("controller render - Function mode for an EventSource", () => {
  it("controller render - Function mode: outputs to the bus topics, webhook Service selecting the Function's pods", () => {
    const o: ControllerOptions = { image: IMAGE, mode: "function" };
    const r = source(webhookSource, catalog(jetstreamClusterBus), o);
    const serving = r.function!.spec["serving"] as Record<string, unknown>;
    expect(serving["outputs"]).toEqual([
      { name: "output-0", component: "default", topic: "team-a-github-push" },
      { name: "output-1", component: "default", topic: "team-a-github-issue" },
      { name: "output-2", component: "default", topic: "team-a-github-ping" },
    ]);
    expect(serving["scaleOptions"]).toEqual({ minReplicas: 1, keda: { scaledObject: { minReplicaCount: 1 } } });
    expect(serving["labels"]).toMatchObject(r.service!.spec.selector);
    expect(serving["annotations"]).toMatchObject({
      "dapr.io/app-id": "eventsource-github",
      "dapr.io/app-port": "8081",
    });
    expect(r.objects.map((x) => x.kind)).toEqual(["Component", "Resiliency", "ConfigMap", "Service", "Function"]);

    const sinkFn = source(cronSinkSource, catalog(), o).function!.spec["serving"] as Record<string, unknown>;
    expect(sinkFn["bindings"]).toEqual({
      "sink-0": {
        type: "bindings.http",
        version: "v1",
        metadata: [{ name: "url", value: "http://function-sample-serving-ksvc.default.svc.cluster.local" }],
      },
    });
    expect(sinkFn["outputs"]).toEqual([{ name: "sink-0", component: "sink-0", operation: "post" }]);
    expect(sinkFn["scaleOptions"]).toEqual({
      minReplicas: 1,
      maxReplicas: 1,
      keda: { scaledObject: { minReplicaCount: 1, maxReplicaCount: 1 } },
    });
  });
});

// --- EventBus ----------------------------------------------------------------------------------------

describe("controller render - EventBus", () => {
  it("controller render - EventBus: Component and Resiliency in its namespace, owned by it", () => {
    const raw = natsStreamingBus("EventBus");
    const objs = renderEventBus({ bus: parsedBus(raw), options });
    expect(objs.map((o) => [o.kind, o.metadata.name, o.metadata.namespace])).toEqual([
      ["Component", "default", "default"],
      ["Resiliency", "default-resiliency", "default"],
    ]);
    for (const o of objs) {
      expect(o.metadata.ownerReferences).toEqual([
        {
          apiVersion: API,
          kind: "EventBus",
          name: "default",
          uid: raw.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
    }
    expect(objs[0]!.metadata.labels).toEqual({
      "app.kubernetes.io/managed-by": "ofevents",
      "events.openfunction.io/eventbus": "default",
    });
  });

  it("controller render - ClusterEventBus needs the namespace to render into", () => {
    const bus = parsedBus(jetstreamClusterBus);
    expect(() => renderEventBus({ bus, options })).toThrow(/namespace/);
    expect(renderEventBus({ bus, namespace: "team-c", options }).map((o) => o.metadata.namespace)).toEqual([
      "team-c",
      "team-c",
    ]);
  });

  it("controller render - Dapr off: no Components and no sidecar annotations", () => {
    const o: ControllerOptions = { image: IMAGE, dapr: { enabled: false } };
    expect(renderEventBus({ bus: parsedBus(natsStreamingBus("EventBus"), o), options: o })).toEqual([]);
    const r = source(kafkaSource(), catalog(natsStreamingBus("EventBus")), o);
    expect(Object.keys(r.deployment!.spec.template.metadata.annotations)).toEqual([
      "events.openfunction.io/config-hash",
    ]);
    expect(r.eventBus).toEqual([]);
  });
});

// --- validate ----------------------------------------------------------------------------------------

describe("controller validate - Ready condition", () => {
  it("controller validate - OpenFunction's redis event: the workload renders the other events, Ready False names it", () => {
    const raw = {
      apiVersion: API,
      kind: "EventSource",
      metadata: { name: "mixed", namespace: "default", uid: uid(), generation: 2 },
      spec: {
        eventBus: "default",
        cron: { tick: { schedule: "@every 5s" } },
        redis: { cache: { redisHost: "redis:6379", redisPassword: "" } },
      },
    };
    const v = validateEventSource(raw, { buses: catalog(natsStreamingBus("EventBus")), options });
    expect(v.ok).toBe(true);
    expect(v.condition).toMatchObject({ status: "False", reason: Reason.EventNotRunnable, observedGeneration: 2 });
    expect(v.condition.message).toMatch(/^spec\.redis\.cache: redis event "cache" does not run: OpenFunction made it/);
    if (!v.ok) throw new Error("unreachable");
    const r = renderEventSource({ eventSource: v.resource, bus: v.bus, options });
    expect(r.deployment).toBeDefined();
    expect(Object.keys(files(r).eventSources[0]!.resource.spec.redis ?? {})).toEqual(["cache"]);
  });

  it("controller validate - a missing EventBus is EventBusNotFound until the bus appears", () => {
    const raw = kafkaSource();
    const missing = validateEventSource(raw, { buses: catalog(), options });
    expect(missing.ok).toBe(false);
    expect(missing.condition).toEqual({
      type: "Ready",
      status: "False",
      reason: Reason.EventBusNotFound,
      message: 'spec.eventBus: EventBus "default" not found in namespace default, nor a ClusterEventBus of that name',
      observedGeneration: 3,
    });
    const found = validateEventSource(raw, { buses: catalog(natsStreamingBus("ClusterEventBus")), options });
    expect(found.ok).toBe(true);
    expect(found.condition).toMatchObject({ status: "True", reason: "Valid", observedGeneration: 3 });
    expect(found.condition.message).toMatch(/natsStreaming is end-of-life/);
  });

  it.each([
    {
      name: "schema: an EventSource without events",
      validate: () =>
        validateEventSource(
          {
            apiVersion: API,
            kind: "EventSource",
            metadata: { name: "x", generation: 7 },
            spec: { eventBus: "default" },
          },
          { buses: catalog(), options },
        ),
      reason: Reason.InvalidSpec,
      message: /spec: define at least one event/,
    },
    {
      name: "webhook on the health port",
      validate: () =>
        validateEventSource(
          {
            ...webhookSource,
            spec: { ...webhookSource.spec, webhook: { w: { endpoint: "/w", port: "8081" } } },
          },
          { buses: catalog(jetstreamClusterBus), options },
        ),
      reason: Reason.InvalidSpec,
      message: /spec\.webhook\.w\.port: port 8081 is the workload's health port/,
    },
    {
      name: "a sink ref of a kind it cannot resolve",
      validate: () =>
        validateEventSource(
          {
            ...cronSinkSource,
            spec: { ...cronSinkSource.spec, sink: { ref: { apiVersion: "apps/v1", kind: "Deployment", name: "d" } } },
          },
          { buses: catalog(), options },
        ),
      reason: Reason.SinkUnresolvable,
      message: /spec\.sink\.ref: cannot resolve a Deployment of apps\/v1/,
    },
    {
      name: "a memory bus",
      validate: () =>
        validateTrigger(twoInputTrigger, {
          buses: {
            eventBuses: [
              {
                apiVersion: API,
                kind: "EventBus",
                metadata: { name: "default", namespace: "default" },
                spec: { memory: {} },
              },
            ],
            clusterEventBuses: [],
          },
          options,
        }),
      reason: Reason.EventBusUnsupported,
      message: /memory bus, which lives inside one process/,
    },
    {
      name: "a condition naming an unknown input",
      validate: () =>
        validateTrigger(
          { ...twoInputTrigger, spec: { ...twoInputTrigger.spec, subscribers: [{ condition: "A && C", topic: "t" }] } },
          { buses: catalog(jetstreamClusterBus), options },
        ),
      reason: Reason.InvalidSpec,
      message: /spec\.subscribers\.0\.condition/,
    },
    {
      name: "an OpenFunction log level out of range",
      validate: () =>
        validateTrigger(
          { ...twoInputTrigger, spec: { ...twoInputTrigger.spec, logLevel: "9" } },
          { buses: catalog(jetstreamClusterBus), options },
        ),
      reason: Reason.InvalidSpec,
      message: /spec\.logLevel/,
    },
    {
      name: "an EventBus with two backends",
      validate: () =>
        validateEventBus(
          {
            apiVersion: API,
            kind: "EventBus",
            metadata: { name: "b" },
            spec: { jetstream: { url: "nats://n:4222" }, kafka: { brokers: "k:9092" } },
          },
          { options },
        ),
      reason: Reason.InvalidSpec,
      message: /set only one bus backend/,
    },
    {
      name: "a JetStream bus with a creds file that Dapr cannot carry",
      validate: () =>
        validateEventBus(
          {
            apiVersion: API,
            kind: "ClusterEventBus",
            metadata: { name: "b" },
            spec: { jetstream: { url: "nats://n:4222", credentialsSecret: { name: "n", key: "creds" } } },
          },
          { options },
        ),
      reason: Reason.EventBusUnsupported,
      message: /Dapr cannot carry it/,
    },
  ])("controller validate - $name", ({ validate, reason, message }) => {
    const v = validate();
    expect(v.ok).toBe(false);
    expect(v.condition.type).toBe("Ready");
    expect(v.condition.status).toBe("False");
    expect(v.condition.reason).toBe(reason);
    expect(v.condition.message).toMatch(message);
    expect(v.issues.length).toBeGreaterThan(0);
  });

  it("controller validate - a bad spec is a condition, never a throw", () => {
    for (const raw of [null, 42, "x", {}, { kind: "EventSource" }, { kind: "Trigger", spec: null }]) {
      expect(validateEventSource(raw, { buses: catalog(), options }).condition.reason).toBe(Reason.InvalidSpec);
      expect(validateTrigger(raw, { buses: catalog(), options }).condition.reason).toBe(Reason.InvalidSpec);
      expect(validateEventBus(raw, { options }).condition.reason).toBe(Reason.InvalidSpec);
    }
  });
});

describe("controller names - workload names and label values", () => {
  it.each([
    { name: "kept", input: "my-eventsource", expected: /^eventsource-my-eventsource$/ },
    { name: "dots become dashes, with a hash", input: "a.b", expected: /^eventsource-a-b-[0-9a-f]{8}$/ },
    {
      name: "long names are cut to 63 with a hash",
      input: "x".repeat(100),
      expected: /^eventsource-x{42}-[0-9a-f]{8}$/,
    },
  ])("controller names - $name", ({ input, expected }) => {
    const n = workloadName("EventSource", input);
    expect(n).toMatch(expected);
    expect(n.length).toBeLessThanOrEqual(63);
    expect(n).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])?$/);
  });

  it("controller names - distinct resources keep distinct names and label values", () => {
    expect(workloadName("EventSource", "a.b")).not.toBe(workloadName("EventSource", "a-b"));
    expect(workloadName("EventSource", "x")).not.toBe(workloadName("Trigger", "x"));
    const long = "y".repeat(80);
    expect(labelValue(long)).toHaveLength(63);
    expect(labelValue(long)).not.toBe(labelValue(`${long}z`));
    expect(labelValue("short")).toBe("short");
  });
});

describe("controller render - bus driver: Dapr by default, direct as the opt-in", () => {
  const annotated = (driver: string) => ({
    ...twoInputTrigger,
    metadata: { ...twoInputTrigger.metadata, uid: uid(), annotations: { "ofevents.io/bus-driver": driver } },
  });
  const argAfter = (r: RenderedWorkload, flag: string) => {
    const args = container(r).args;
    const i = args.indexOf(flag);
    return i < 0 ? undefined : args[i + 1];
  };

  it("controller render - bus driver: the default is the Dapr path (args, sidecar annotations, the bus's Component)", () => {
    const r = trigger(twoInputTrigger, catalog(jetstreamClusterBus));
    expect(argAfter(r, "--bus-driver")).toBe("dapr");
    expect(r.deployment!.spec.template.metadata.annotations).toMatchObject({
      "dapr.io/enabled": "true",
      "dapr.io/app-id": "trigger-function-sample-trigger",
      "dapr.io/app-port": "8081",
    });
    expect(r.eventBus.map((o) => [o.kind, o.metadata.name, o.metadata.namespace])).toEqual([
      ["Component", "default", "default"],
      ["Resiliency", "default-resiliency", "default"],
    ]);
    // KEDA watches what the Dapr component consumes: the stream both paths share and the durable (the app id).
    expect(r.scaledObject!.spec.triggers[0]!.metadata).toMatchObject({
      stream: "events-default-my-eventsource-sample-one",
      consumer: "trigger-function-sample-trigger",
    });
    const es = source(kafkaSource(), catalog(jetstreamClusterBus));
    expect(argAfter(es, "--bus-driver")).toBe("dapr");
    const annotatedSource = kafkaSource();
    Object.assign(annotatedSource.metadata, { annotations: { "ofevents.io/bus-driver": "direct" } });
    expect(argAfter(source(annotatedSource, catalog(jetstreamClusterBus)), "--bus-driver")).toBe("direct");
  });

  it("controller render - bus driver: busDriver direct renders --bus-driver direct and the direct drivers' KEDA names", () => {
    const r = trigger(twoInputTrigger, catalog(jetstreamClusterBus), direct);
    expect(argAfter(r, "--bus-driver")).toBe("direct");
    expect(r.scaledObject!.spec.triggers[0]!.metadata["consumer"]).toBe("trigger-default-function-sample-trigger");
  });

  it("controller render - bus driver: the ofevents.io/bus-driver annotation of a resource wins over the controller's", () => {
    expect(argAfter(trigger(annotated("direct"), catalog(jetstreamClusterBus)), "--bus-driver")).toBe("direct");
    expect(argAfter(trigger(annotated("dapr"), catalog(jetstreamClusterBus), direct), "--bus-driver")).toBe("dapr");
    const v = validateTrigger(annotated("fast"), { buses: catalog(jetstreamClusterBus), options });
    expect(v.ok).toBe(false);
    expect(v.condition.reason).toBe(Reason.InvalidSpec);
    expect(v.condition.message).toMatch(/ofevents\.io\/bus-driver.*"fast" is not a bus driver/);
  });

  it("controller render - bus driver: a bus Dapr cannot carry stays on the direct drivers unless Dapr is asked for", () => {
    const credsBus = {
      apiVersion: API,
      kind: "ClusterEventBus",
      metadata: { name: "default", uid: uid() },
      spec: { jetstream: { url: "nats://n:4222", credentialsSecret: { name: "n", key: "creds" } } },
    };
    const bus = parsedBus(credsBus, { ...options, dapr: { enabled: false } });
    const buses = { eventBuses: [], clusterEventBuses: [bus as ClusterEventBus] };
    const r = trigger(twoInputTrigger, buses);
    expect(argAfter(r, "--bus-driver")).toBe("direct");
    expect(r.eventBus).toEqual([]);
    const v = validateTrigger(annotated("dapr"), { buses, options });
    expect(v.ok).toBe(false);
    expect(v.condition.reason).toBe(Reason.EventBusUnsupported);
  });

  it("controller render - bus driver: with Dapr off the default is direct, and no sidecar is injected", () => {
    const off: ControllerOptions = { image: IMAGE, dapr: { enabled: false } };
    const r = trigger(twoInputTrigger, catalog(jetstreamClusterBus), off);
    expect(argAfter(r, "--bus-driver")).toBe("direct");
    expect(r.deployment!.spec.template.metadata.annotations["dapr.io/enabled"]).toBeUndefined();
    expect(() => trigger(twoInputTrigger, catalog(jetstreamClusterBus), { ...off, busDriver: "dapr" })).toThrow(
      /busDriver dapr needs dapr.enabled/,
    );
  });

  it("controller render - Dapr and KEDA settings reach the args, annotations and ScaledObject", () => {
    const o: ControllerOptions = {
      image: IMAGE,
      healthPort: 9000,
      dapr: { config: "tracing", logLevel: "debug", sidecarTimeout: "90s", pubsubName: "shared" },
      keda: { pollingInterval: 15, cooldownPeriod: 600, minReplicaCount: 2, maxReplicaCount: 7 },
    };
    const r = trigger(twoInputTrigger, catalog(jetstreamClusterBus), o);
    const args = container(r).args;
    expect(args.slice(5)).toEqual([
      "--health-port",
      "9000",
      "--bus-driver",
      "dapr",
      "--pubsub-name",
      "shared",
      "--sidecar-timeout",
      "90s",
      "--log-level",
      "debug",
    ]);
    expect(r.deployment!.spec.template.metadata.annotations).toMatchObject({
      "dapr.io/app-port": "9000",
      "dapr.io/config": "tracing",
      "dapr.io/log-level": "debug",
    });
    expect(r.scaledObject!.spec).toMatchObject({
      minReplicaCount: 2,
      maxReplicaCount: 7,
      pollingInterval: 15,
      cooldownPeriod: 600,
    });
    // The direct drivers take neither Dapr flag.
    const d = trigger(twoInputTrigger, catalog(jetstreamClusterBus), { ...o, busDriver: "direct" });
    expect(container(d).args).not.toContain("--pubsub-name");
    expect(container(d).args).not.toContain("--sidecar-timeout");
  });
});
