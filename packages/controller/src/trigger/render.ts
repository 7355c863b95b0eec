/**
 * Trigger → a ConfigMap with the resource (sink refs resolved to `uri`) and its bus, a Deployment
 * running `ofevents trigger` with the Dapr sidecar annotations, and a KEDA ScaledObject on the
 * backlog of its input topics (one trigger per distinct topic that a condition names: the runtime
 * subscribes to no other). The names are the ones the workload's bus driver uses:
 *
 * | bus | driver | KEDA trigger |
 * |---|---|---|
 * | jetstream, natsStreaming (mapped to JetStream) | direct | `nats-jetstream`: stream and consumer from core's jetStreamNames(prefix, topic, `trigger-{ns}-{name}`, durablePrefix) |
 * | jetstream, natsStreaming | dapr | `nats-jetstream`: the same stream (jetStreamNames), consumer the rendered Component's `durableName` with the app id |
 * | kafka | direct | `kafka`: topic and group from core's kafkaBusNames (topicPrefix, sanitised), `offsetResetPolicy: latest` |
 * | kafka | dapr | `kafka`: the same topic (kafkaBusNames), group the rendered Component's `consumerGroup` (`{topicPrefix}{app id}`), `offsetResetPolicy: earliest` (the Component's `initialOffset: oldest`) |
 * | dapr `pubsub.kafka` / `pubsub.jetstream` / `pubsub.redis` | dapr | as above from the Component's metadata (`streamName` when set); `redis-streams` on stream = topic, group = consumerID |
 *
 * Every replica shares the group, so triggers scale out and sleep at zero. A natsStreaming bus's
 * OpenFunction `scaleOption` is honoured (natsServerMonitoringEndpoint, lagThreshold, metadata,
 * authRef, replica counts, polling, cooldown). The Dapr-path names are read from the Component
 * core renders (renderDaprComponents) and core's naming.ts, the functions the drivers use. The
 * `kafka` bus on the Dapr path is checked against a running daprd, broker and KEDA (the group and
 * topic exist on the broker with daprd's commits, and KEDA reads no lag on them:
 * test/platform/kafka-bus.test.ts); the other Dapr-path rows were not.
 */
import {
  DAPR_APP_ID,
  DEFAULT_JETSTREAM_STREAM_PREFIX,
  busTopic,
  conditionInputs,
  jetStreamNames,
  kafkaBusNames,
  namespaceOf,
  parseCondition,
  renderDaprComponents,
  triggerGroup,
  withDaprAppId,
  type DaprPubSubComponent,
  type ResolvedBus,
  type Trigger,
} from "@ofevents/core";
import { renderBusFor } from "../eventbus/render.js";
import type { RenderedWorkload } from "../eventsource/render.js";
import { renderFunction } from "../function.js";
import { workloadName } from "../labels.js";
import {
  BusDriver,
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
  type GenericScaleOption,
  type ScalePart,
} from "../scaling.js";
import { resolveSink, type SinkLookup } from "../sinks.js";
import { renderConfigMap, renderDeployment, workloadMeta, type WorkloadInput } from "../workload.js";

export interface RenderTriggerInput {
  /** The Trigger as validated (validateTrigger's `resource`), with its uid. */
  trigger: Trigger;
  /** `resolveEventBus(spec.eventBus, namespace, buses)`; validation ensured it was found. */
  bus: ResolvedBus;
  options: ControllerOptions;
  sinks?: SinkLookup | undefined;
}

/** The bus topics the trigger subscribes to: those of inputs some condition names, in input order. */
export function triggerTopics(t: Trigger): string[] {
  const ns = namespaceOf(t);
  const names = Object.keys(t.spec.inputs);
  const used = new Set(t.spec.subscribers.flatMap((s) => conditionInputs(parseCondition(s.condition, names))));
  const topics: string[] = [];
  for (const [n, i] of Object.entries(t.spec.inputs)) {
    const topic = busTopic(i.namespace ?? ns, i.eventSource, i.event);
    if (used.has(n) && !topics.includes(topic)) topics.push(topic);
  }
  return topics;
}

/** The KEDA part for one input topic, or one without a trigger when the bus offers no backlog KEDA can read. */
function topicPart(
  topic: string,
  t: Trigger,
  bus: ResolvedBus,
  driver: BusDriver,
  appId: string,
  o: ResolvedOptions,
): ScalePart {
  const raw = bus.resource!;
  const spec = bus.spec!;
  const so: GenericScaleOption | undefined = raw.spec.natsStreaming?.scaleOption;
  const lag = raw.spec.natsStreaming?.scaleOption?.lagThreshold;
  const group = triggerGroup(namespaceOf(t), t.metadata.name);
  const label = `topic/${topic}`;
  const none: ScalePart = { label, wakesFromZero: false, scalesOut: true, scaleOption: so };
  const nats = (url: string, stream: string, consumer: string): ScalePart => ({
    label,
    trigger: {
      type: "nats-jetstream",
      metadata: scalerMetadata({ lagThreshold: o.keda.lagThreshold }, so?.metadata, {
        natsServerMonitoringEndpoint:
          raw.spec.natsStreaming?.scaleOption?.natsServerMonitoringEndpoint ?? natsMonitoringEndpoint(url, o),
        account: o.keda.natsAccount,
        stream,
        consumer,
        lagThreshold: lag,
      }),
    },
    wakesFromZero: true,
    scalesOut: true,
    scaleOption: so,
  });
  const kafka = (
    brokers: string,
    names: { topic: string; group: string },
    reset: string,
    auth = kafkaAuth(undefined, undefined),
  ): ScalePart => ({
    label,
    trigger: {
      type: "kafka",
      metadata: scalerMetadata({ lagThreshold: o.keda.lagThreshold, ...auth.metadata }, so?.metadata, {
        bootstrapServers: brokers,
        consumerGroup: names.group,
        topic: names.topic,
        offsetResetPolicy: reset,
      }),
    },
    secrets: auth.secrets,
    wakesFromZero: true,
    scalesOut: true,
    scaleOption: so,
  });

  if (driver === BusDriver.Direct && spec.dapr === undefined) {
    // The names the direct drivers use (core's naming.ts).
    if (spec.jetstream !== undefined) {
      // natsStreaming's durableSubscriptionName prefixes the consumer.
      const n = jetStreamNames(
        spec.jetstream.stream ?? DEFAULT_JETSTREAM_STREAM_PREFIX,
        topic,
        group,
        spec.jetstream.durablePrefix,
      );
      return nats(spec.jetstream.url, n.stream, n.consumer!);
    }
    if (spec.kafka !== undefined) {
      const k = spec.kafka;
      const n = kafkaBusNames(k.topicPrefix, topic, group);
      return kafka(k.brokers, { topic: n.topic, group: n.group! }, "latest", kafkaAuth(k.sasl, k.tls));
    }
    return none;
  }
  // Through daprd: the group is the one in the Component core renders for the bus (what daprd
  // loads), the topic and stream the ones the dapr driver and its prepareTopic use, which are the
  // direct driver's (both paths share them).
  let component: DaprPubSubComponent;
  try {
    component = renderDaprComponents(raw)[0] as DaprPubSubComponent;
  } catch {
    return none;
  }
  const meta = (name: string): string | undefined => component.spec.metadata.find((m) => m.name === name)?.value;
  switch (component.spec.type) {
    case "pubsub.kafka": {
      const brokers = meta("brokers");
      if (brokers === undefined) return none;
      const groupName = withDaprAppId(meta("consumerGroup") ?? DAPR_APP_ID, appId);
      const reset = (meta("initialOffset") ?? "oldest") === "newest" ? "latest" : "earliest";
      const auth = spec.kafka === undefined ? undefined : kafkaAuth(spec.kafka.sasl, spec.kafka.tls);
      const kt = kafkaBusNames(spec.kafka?.topicPrefix, topic).topic;
      return kafka(brokers, { topic: kt, group: groupName }, reset, auth);
    }
    case "pubsub.jetstream": {
      const url = meta("natsURL");
      if (url === undefined) return none;
      const durable = withDaprAppId(meta("durableName") ?? DAPR_APP_ID, appId);
      const prefix = spec.jetstream?.stream ?? DEFAULT_JETSTREAM_STREAM_PREFIX;
      return nats(url, meta("streamName") ?? jetStreamNames(prefix, topic).stream, durable);
    }
    case "pubsub.redis": {
      const host = meta("redisHost");
      if (host === undefined) return none;
      const metadata = scalerMetadata({ lagCount: o.keda.lagThreshold }, so?.metadata, {
        address: host,
        stream: topic,
        consumerGroup: withDaprAppId(meta("consumerID") ?? DAPR_APP_ID, appId),
      });
      return { label, trigger: { type: "redis-streams", metadata }, wakesFromZero: true, scalesOut: true };
    }
    default:
      return none;
  }
  return none;
}

/** The Trigger as its workload runs it: subscriber sink refs resolved to `uri`. */
export function workloadTrigger(t: Trigger, sinks: SinkLookup = {}): Trigger {
  const ns = namespaceOf(t);
  return {
    ...t,
    spec: {
      ...t.spec,
      subscribers: t.spec.subscribers.map((s) => ({
        ...s,
        ...(s.sink === undefined ? {} : { sink: resolveSink(s.sink, ns, sinks) }),
        ...(s.deadLetterSink === undefined ? {} : { deadLetterSink: resolveSink(s.deadLetterSink, ns, sinks) }),
      })),
    },
  };
}

/**
 * Renders what runs a Trigger. Pure; the input must have passed validateTrigger (its bus found
 * and usable on a cluster).
 */
export function renderTrigger(input: RenderTriggerInput): RenderedWorkload {
  const o = resolveOptions(input.options);
  const t = input.trigger;
  const namespace = namespaceOf(t);
  const name = workloadName("Trigger", t.metadata.name);
  const bus = input.bus;
  const busDriver = workloadBusDriver(t, bus.resource, o).driver ?? o.busDriver;
  const eventBus = renderBusFor(bus, namespace, input.options);
  const meta = workloadMeta({ owner: t, namespace, kind: "Trigger" });
  const parts =
    bus.spec === undefined ? [] : triggerTopics(t).map((topic) => topicPart(topic, t, bus, busDriver, name, o));
  const scaling = renderScaling(name, meta, parts, o);
  const workload: WorkloadInput = {
    kind: "Trigger",
    resource: workloadTrigger(t, input.sinks),
    owner: t,
    bus: bus.resource,
    name,
    namespace,
    options: o,
    busDriver,
    ports: [],
    replicas: scaling.replicas,
  };
  const configMap = renderConfigMap(workload);
  if (o.mode === RenderMode.Function) {
    const fn = renderFunction(workload, configMap, scaling, bus, triggerTopics(t));
    return {
      name,
      configMap,
      deployment: undefined,
      service: undefined,
      scaledObject: undefined,
      triggerAuthentications: scaling.authentications,
      function: fn,
      eventBus,
      objects: [...scaling.authentications, ...eventBus, configMap, fn],
    };
  }
  const deployment = renderDeployment(workload, configMap);
  return {
    name,
    configMap,
    deployment,
    service: undefined,
    scaledObject: scaling.scaledObject,
    triggerAuthentications: scaling.authentications,
    function: undefined,
    eventBus,
    objects: [
      ...scaling.authentications,
      ...eventBus,
      configMap,
      deployment,
      ...(scaling.scaledObject ? [scaling.scaledObject] : []),
    ],
  };
}
