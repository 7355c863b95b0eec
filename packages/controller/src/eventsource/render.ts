/**
 * EventSource → what runs it: a ConfigMap with the resource (sink refs resolved to `uri`) and its
 * bus, a Deployment running `ofevents eventsource` with the Dapr sidecar annotations, a Service
 * for webhook and generic events, and a KEDA ScaledObject whose triggers fit the events (scaling.ts):
 *
 * | event | KEDA trigger | from zero | several replicas |
 * |---|---|---|---|
 * | kafka | `kafka` on the source's group lag; `offsetResetPolicy` from `startFrom` | yes | yes |
 * | redis `stream` | `redis-streams` (cluster / sentinel variants) on the group's lag | yes | yes |
 * | nats `jetstream` | `nats-jetstream` on the durable's pending messages | yes | yes |
 * | nats core with `queueGroup` | none | no | yes |
 * | amqp | none (replicas share the queue as competing consumers) | no | yes |
 * | webhook, generic | none (CPU when nothing else) | no | yes |
 * | cron, mqtt, redis `channel`, nats core without queue group | none | no | no (one replica) |
 * | webhook | none (CPU when nothing else) | no | yes |
 * | cron, mqtt, redis `channel`, nats core without queue group, kubernetes | none | no | no (one replica) |
 *
 * An EventSource with `kubernetes` events also gets a ServiceAccount, Roles and bindings with
 * exactly the access its watches need (rbac.ts), and its pods run as that ServiceAccount
 * (Deployment mode).
 *
 * A kafka event's OpenFunction `scaleOption` is honoured: its consumerGroup, topic, lagThreshold,
 * metadata and authRef shape the trigger; its replica counts, polling and cooldown the ScaledObject.
 */
import {
  genericEndpoint,
  namespaceOf,
  natsSourceDurable,
  sourceConsumerName,
  type EventSource,
  type KafkaSourceSpec,
  type NatsSourceSpec,
  type RedisSourceSpec,
  type ResolvedBus,
} from "@ofevents/core";
import { renderBusFor } from "../eventbus/render.js";
import { renderFunction } from "../function.js";
import { renderKubernetesAccess } from "./rbac.js";
import type {
  ConfigMap,
  ContainerPort,
  DaprObject,
  Deployment,
  OpenFunctionFunction,
  RenderedObject,
  ScaledObject,
  Service,
  TriggerAuthentication,
} from "../k8s.js";
import { objectMeta, workloadName } from "../labels.js";
import {
  RenderMode,
  resolveOptions,
  workloadBusDriver,
  type ControllerOptions,
  type ResolvedOptions,
} from "../options.js";
import {
  kafkaAuth,
  natsMonitoringEndpoint,
  renderScaling,
  scalerMetadata,
  type ScalePart,
  type SecretParameter,
} from "../scaling.js";
import { resolveSink, type SinkLookup } from "../sinks.js";
import { podSelector, renderConfigMap, renderDeployment, workloadMeta, type WorkloadInput } from "../workload.js";

export interface RenderEventSourceInput {
  /** The EventSource as validated (validateEventSource's `resource`), with its uid. */
  eventSource: EventSource;
  /** `resolveEventBus(spec.eventBus, namespace, buses)`, when the source has an eventBus. */
  bus: ResolvedBus | undefined;
  options: ControllerOptions;
  sinks?: SinkLookup | undefined;
}

/** What an EventSource or Trigger renders to; `objects` lists everything in apply order. */
export interface RenderedWorkload {
  /** The name the objects share (also the Dapr app id). */
  name: string;
  configMap: ConfigMap;
  deployment: Deployment | undefined;
  service: Service | undefined;
  scaledObject: ScaledObject | undefined;
  triggerAuthentications: TriggerAuthentication[];
  /** The OpenFunction Function, in Function mode (instead of the Deployment and ScaledObject). */
  function: OpenFunctionFunction | undefined;
  /** The Dapr objects of the bus in the resource's namespace (the ClusterEventBus fallback lands here). */
  eventBus: DaprObject[];
  objects: RenderedObject[];
}

function kafkaPart(ns: string, es: string, event: string, spec: KafkaSourceSpec, o: ResolvedOptions): ScalePart {
  const so = spec.scaleOption;
  const auth = kafkaAuth(spec.sasl, spec.tls);
  const metadata = scalerMetadata({ lagThreshold: o.keda.lagThreshold, ...auth.metadata }, so?.metadata, {
    bootstrapServers: spec.brokers,
    consumerGroup: so?.consumerGroup ?? spec.consumerGroup ?? sourceConsumerName(ns, es, event),
    topic: so?.topic ?? spec.topic,
    lagThreshold: so?.lagThreshold,
    // A new group starts where the source does; KEDA counts the lag the same way.
    offsetResetPolicy: spec.startFrom === "oldest" ? "earliest" : "latest",
  });
  return {
    label: `kafka/${event}`,
    trigger: { type: "kafka", metadata },
    secrets: auth.secrets,
    wakesFromZero: true,
    scalesOut: true,
    scaleOption: so,
  };
}

function redisPart(ns: string, es: string, event: string, spec: RedisSourceSpec, o: ResolvedOptions): ScalePart {
  if (spec.stream === undefined) {
    // Pub/sub channel: a message reaches whoever listens now; replicas would each get it.
    return { label: `redis/${event}`, wakesFromZero: false, scalesOut: false };
  }
  const cluster = spec.redisType === "cluster";
  const sentinel = spec.failover === true;
  const type = sentinel ? "redis-sentinel-streams" : cluster ? "redis-cluster-streams" : "redis-streams";
  const metadata = scalerMetadata(
    { lagCount: o.keda.lagThreshold, ...(spec.enableTLS === true ? { enableTLS: "true" } : {}) },
    undefined,
    {
      ...(cluster || sentinel ? { addresses: spec.redisHost } : { address: spec.redisHost }),
      ...(sentinel && spec.sentinelMasterName !== undefined ? { sentinelMaster: spec.sentinelMasterName } : {}),
      ...(spec.redisDB !== undefined && !cluster ? { databaseIndex: String(spec.redisDB) } : {}),
      stream: spec.stream,
      consumerGroup: spec.consumerGroup ?? sourceConsumerName(ns, es, event),
    },
  );
  const secrets: SecretParameter[] =
    spec.passwordSecret === undefined ? [] : [{ parameter: "password", ...spec.passwordSecret }];
  return { label: `redis/${event}`, trigger: { type, metadata }, secrets, wakesFromZero: true, scalesOut: true };
}

function natsPart(ns: string, es: string, event: string, spec: NatsSourceSpec, o: ResolvedOptions): ScalePart {
  if (spec.jetstream === undefined) {
    return { label: `nats/${event}`, wakesFromZero: false, scalesOut: spec.queueGroup !== undefined };
  }
  const metadata = scalerMetadata({ lagThreshold: o.keda.lagThreshold }, undefined, {
    natsServerMonitoringEndpoint: natsMonitoringEndpoint(spec.url, o),
    account: o.keda.natsAccount,
    stream: spec.jetstream.stream,
    consumer: spec.jetstream.durable ?? natsSourceDurable(ns, es, event),
  });
  return {
    label: `nats/${event}`,
    trigger: { type: "nats-jetstream", metadata },
    wakesFromZero: true,
    scalesOut: true,
  };
}

/** One scale part per event of the source, in kind then event-name order. */
export function eventSourceScaleParts(es: EventSource, o: ResolvedOptions): ScalePart[] {
  const ns = namespaceOf(es);
  const name = es.metadata.name;
  const parts: ScalePart[] = [];
  const each = <T>(m: Record<string, T> | undefined, f: (event: string, spec: T) => ScalePart) => {
    for (const [event, spec] of Object.entries(m ?? {})) parts.push(f(event, spec));
  };
  each(es.spec.kafka, (e, s) => kafkaPart(ns, name, e, s, o));
  each(es.spec.redis, (e, s) => redisPart(ns, name, e, s, o));
  each(es.spec.nats, (e, s) => natsPart(ns, name, e, s, o));
  each(es.spec.webhook, (e) => ({ label: `webhook/${e}`, wakesFromZero: false, scalesOut: true }));
  each(es.spec.generic, (e) => ({ label: `generic/${e}`, wakesFromZero: false, scalesOut: true }));
  each(es.spec.cron, (e) => ({ label: `cron/${e}`, wakesFromZero: false, scalesOut: false }));
  each(es.spec.mqtt, (e) => ({ label: `mqtt/${e}`, wakesFromZero: false, scalesOut: false }));
  each(es.spec.amqp, (e) => ({ label: `amqp/${e}`, wakesFromZero: false, scalesOut: true }));
  // Each replica would watch, and send, every change.
  each(es.spec.kubernetes, (e) => ({ label: `kubernetes/${e}`, wakesFromZero: false, scalesOut: false }));
  return parts;
}

/** The distinct HTTP ports of the source (webhook and generic events), ascending. */
export function webhookPorts(es: EventSource): number[] {
  const ports = new Set(Object.values(es.spec.webhook ?? {}).map((w) => Number(w.port)));
  for (const [event, g] of Object.entries(es.spec.generic ?? {})) ports.add(genericEndpoint(event, g).port);
  return [...ports].sort((a, b) => a - b);
}

/** The EventSource as its workload runs it: sink refs resolved to `uri`. */
export function workloadEventSource(es: EventSource, sinks: SinkLookup = {}): EventSource {
  if (es.spec.sink === undefined) return es;
  return { ...es, spec: { ...es.spec, sink: resolveSink(es.spec.sink, namespaceOf(es), sinks) } };
}

/**
 * Renders what runs an EventSource. Pure; the input must have passed validateEventSource (an
 * unresolvable sink ref is left as is, a bus Dapr cannot carry renders no Dapr objects).
 */
export function renderEventSource(input: RenderEventSourceInput): RenderedWorkload {
  const o = resolveOptions(input.options);
  const es = input.eventSource;
  const namespace = namespaceOf(es);
  const name = workloadName("EventSource", es.metadata.name);
  // With both a sink and an eventBus the entrypoint sends each event to both.
  const bus = input.bus;
  const busDriver = workloadBusDriver(es, bus?.resource, o).driver;
  const eventBus = renderBusFor(bus, namespace, input.options);
  const meta = workloadMeta({ owner: es, namespace, kind: "EventSource" });
  const scaling = renderScaling(name, meta, eventSourceScaleParts(es, o), o);
  const ports: ContainerPort[] = webhookPorts(es).map((p) => ({
    name: `http-${p}`,
    containerPort: p,
    protocol: "TCP",
  }));
  const workload: WorkloadInput = {
    kind: "EventSource",
    resource: workloadEventSource(es, input.sinks),
    owner: es,
    bus: bus?.resource,
    name,
    namespace,
    options: o,
    busDriver,
    ports,
    replicas: scaling.replicas,
  };
  const configMap = renderConfigMap(workload);
  const service: Service | undefined =
    ports.length === 0
      ? undefined
      : {
          apiVersion: "v1",
          kind: "Service",
          metadata: objectMeta(es, name, namespace),
          spec: {
            type: "ClusterIP",
            selector: podSelector(workload),
            ports: ports.map((p) => ({ name: p.name, port: p.containerPort, targetPort: p.name, protocol: "TCP" })),
          },
        };
  if (o.mode === RenderMode.Function) {
    const fn = renderFunction(workload, configMap, scaling, bus);
    return {
      name,
      configMap,
      deployment: undefined,
      service,
      scaledObject: undefined,
      triggerAuthentications: scaling.authentications,
      function: fn,
      eventBus,
      objects: [...scaling.authentications, ...eventBus, configMap, ...(service ? [service] : []), fn],
    };
  }
  const deployment = renderDeployment(workload, configMap);
  const access = renderKubernetesAccess(es, name);
  if (access !== undefined) deployment.spec.template.spec.serviceAccountName = access.serviceAccount.metadata.name;
  return {
    name,
    configMap,
    deployment,
    service,
    scaledObject: scaling.scaledObject,
    triggerAuthentications: scaling.authentications,
    function: undefined,
    eventBus,
    objects: [
      ...scaling.authentications,
      ...eventBus,
      ...(access === undefined ? [] : [access.serviceAccount, ...access.roles, ...access.bindings]),
      configMap,
      ...(service ? [service] : []),
      deployment,
      ...(scaling.scaledObject ? [scaling.scaledObject] : []),
    ],
  };
}
