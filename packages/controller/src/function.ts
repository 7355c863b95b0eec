/**
 * Function mode: the workload as an OpenFunction Function (core.openfunction.io/v1beta1,
 * `serving.runtime: async`) instead of a Deployment and ScaledObject, for clusters that run
 * OpenFunction (that is how OpenFunction deploys its own EventSources and Triggers).
 *
 * - `serving.template`: the pod of the Deployment mode (container `function`, the image's
 *   entrypoint args, the ConfigMap volume, probes, securityContext); `serving.labels` are our pod
 *   labels, so a webhook Service selects the Function's pods.
 * - `serving.annotations`: the Dapr app id (ours, so `{appID}` groups and KEDA names agree), app
 *   port and protocol, and the config hash.
 * - `serving.pubsub`: the bus's Dapr Component spec, keyed by the bus name; `serving.inputs`: one
 *   per input topic of a Trigger; `serving.outputs`: the bus topics an EventSource publishes to
 *   and the sinks (each an HTTP binding in `serving.bindings`, operation `post`), as OpenFunction
 *   declares them. The entrypoint itself reads the ConfigMap, not these.
 * - `serving.scaleOptions.keda.scaledObject` and `serving.triggers`: the ScaledObject of the
 *   Deployment mode; with none (a single-replica workload) min = max = 1 and no triggers.
 */
import {
  ErrorCode,
  busTopic,
  sourceKinds,
  daprTopicName,
  hasCode,
  namespaceOf,
  renderDaprComponents,
  type DaprPubSubComponent,
  type EventSource,
  type ResolvedBus,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import type { ConfigMap, OpenFunctionFunction } from "./k8s.js";
import { CONFIG_HASH_ANNOTATION, objectMeta } from "./labels.js";
import type { ScalingResult } from "./scaling.js";
import { configHash, daprAnnotations, renderDeployment, type WorkloadInput } from "./workload.js";

export const FUNCTION_CONTAINER = "function";

interface DaprIO {
  name: string;
  component: string;
  topic?: string;
  operation?: string;
}

function busComponentSpec(bus: ResolvedBus | undefined, namespace: string): DaprPubSubComponent["spec"] | undefined {
  if (bus?.resource === undefined) return undefined;
  try {
    const [component] = renderDaprComponents(bus.resource, { namespace });
    return (component as DaprPubSubComponent).spec;
  } catch (err) {
    if (hasCode(err, ErrorCode.Config)) return undefined;
    throw err;
  }
}

function sinksOf(r: EventSource | Trigger): Sink[] {
  if (r.kind === "EventSource") return r.spec.sink === undefined ? [] : [r.spec.sink];
  return r.spec.subscribers.flatMap((s) => [s.sink, s.deadLetterSink].filter((x): x is Sink => x !== undefined));
}

/** The Function for `workload`; `topics` are a Trigger's input topics. */
export function renderFunction(
  workload: WorkloadInput,
  cm: ConfigMap,
  scaling: ScalingResult,
  bus: ResolvedBus | undefined,
  topics: readonly string[] = [],
): OpenFunctionFunction {
  const o = workload.options;
  const pod = renderDeployment({ ...workload, replicas: undefined }, cm).spec.template;
  const containers = pod.spec.containers.map((c) => ({ ...c, name: FUNCTION_CONTAINER }));
  const busName = bus?.resource?.metadata.name;
  const componentSpec = busComponentSpec(bus, workload.namespace);
  const inputs: DaprIO[] = [];
  const outputs: DaprIO[] = [];
  const bindings: Record<string, unknown> = {};
  if (busName !== undefined && componentSpec !== undefined) {
    // The Dapr topic names the direct drivers use too (core's daprTopicName: on Kafka with the
    // topicPrefix), so a Function and a direct-driver workload share topics.
    const daprTopic = (topic: string): string => {
      try {
        return daprTopicName(bus?.spec, topic);
      } catch {
        return topic; // not a NATS subject: the workload reports the CONFIG error
      }
    };
    topics.forEach((topic, i) => inputs.push({ name: `input-${i}`, component: busName, topic: daprTopic(topic) }));
    const r = workload.resource;
    if (r.kind === "EventSource") {
      const ns = namespaceOf(r);
      const events = new Set<string>();
      for (const k of sourceKinds) {
        for (const e of Object.keys(r.spec[k] ?? {})) events.add(e);
      }
      [...events].forEach((e, i) =>
        outputs.push({ name: `output-${i}`, component: busName, topic: daprTopic(busTopic(ns, r.metadata.name, e)) }),
      );
    }
  }
  sinksOf(workload.resource).forEach((sink, i) => {
    if (sink.uri === undefined) return;
    const name = `sink-${i}`;
    bindings[name] = { type: "bindings.http", version: "v1", metadata: [{ name: "url", value: sink.uri }] };
    outputs.push({ name, component: name, operation: "post" });
  });
  const so = scaling.scaledObject?.spec;
  const replicas = scaling.replicas ?? 1;
  const scaledObject = {
    minReplicaCount: so?.minReplicaCount ?? replicas,
    ...(so === undefined ? { maxReplicaCount: replicas } : {}),
    ...(so?.maxReplicaCount === undefined ? {} : { maxReplicaCount: so.maxReplicaCount }),
    ...(so?.pollingInterval === undefined ? {} : { pollingInterval: so.pollingInterval }),
    ...(so?.cooldownPeriod === undefined ? {} : { cooldownPeriod: so.cooldownPeriod }),
    ...(so?.advanced === undefined ? {} : { advanced: so.advanced }),
  };
  const serving: Record<string, unknown> = {
    runtime: "async",
    labels: pod.metadata.labels,
    annotations: {
      [CONFIG_HASH_ANNOTATION]: configHash(cm),
      ...daprAnnotations(workload.name, o),
    },
    ...(busName !== undefined && componentSpec !== undefined ? { pubsub: { [busName]: componentSpec } } : {}),
    ...(Object.keys(bindings).length === 0 ? {} : { bindings }),
    ...(inputs.length === 0 ? {} : { inputs }),
    ...(outputs.length === 0 ? {} : { outputs }),
    scaleOptions: {
      minReplicas: scaledObject.minReplicaCount,
      ...(scaledObject.maxReplicaCount === undefined ? {} : { maxReplicas: scaledObject.maxReplicaCount }),
      keda: { scaledObject },
    },
    ...(so === undefined ? {} : { triggers: so.triggers }),
    template: { ...pod.spec, containers },
  };
  return {
    apiVersion: "core.openfunction.io/v1beta1",
    kind: "Function",
    metadata: objectMeta(workload.owner, workload.name, workload.namespace),
    spec: { version: "v1.0.0", image: o.image, serving },
  };
}
