/**
 * The ConfigMap and Deployment of an EventSource or Trigger: the entrypoint
 * (`ofevents eventsource|trigger -f /etc/ofevents --name ns/name`) reads the resource and its
 * bus from the ConfigMap, serves /healthz, /readyz and /metrics on the health port (also Dapr's
 * app port), and reads secrets from environment variables `<NAME>_<KEY>` (core's envNameFor),
 * filled from the Secrets the specs reference.
 */
import { createHash } from "node:crypto";
import {
  API_VERSION,
  envNameFor,
  namespaceOf,
  toLogLevel,
  toYaml,
  type AnyEventBus,
  type EventSource,
  type SecretKeySelector,
  type Trigger,
} from "@ofevents/core";
import type { ConfigMap, Container, ContainerPort, Deployment, EnvVar, ObjectMeta, PodSpec } from "./k8s.js";
import { COMPONENT_LABEL, CONFIG_HASH_ANNOTATION, NAME_LABEL, objectMeta, ownerLabels } from "./labels.js";
import { BusDriver, Defaults, type ResolvedOptions } from "./options.js";

/** The manifest as the workload reads it: apiVersion, kind, name, namespace, labels and spec only. */
export function cleanManifest<T extends EventSource | Trigger | AnyEventBus>(r: T): T {
  const { name, labels } = r.metadata;
  const metadata =
    r.kind === "ClusterEventBus"
      ? { name, ...(labels === undefined ? {} : { labels }) }
      : { name, namespace: namespaceOf(r), ...(labels === undefined ? {} : { labels }) };
  return { apiVersion: API_VERSION, kind: r.kind, metadata, spec: structuredClone(r.spec) } as T;
}

/** File names in the ConfigMap: the kind, lower-cased, `.yaml`. */
export function manifestFile(kind: string): string {
  return `${kind.toLowerCase()}.yaml`;
}

/** Every `{ name, key }` secret reference under a key ending in `Secret`, in document order. */
export function secretRefs(value: unknown, out: SecretKeySelector[] = []): SecretKeySelector[] {
  if (Array.isArray(value)) {
    for (const v of value) secretRefs(v, out);
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      const ref = v as { name?: unknown; key?: unknown } | null;
      if (
        k.endsWith("Secret") &&
        ref !== null &&
        typeof ref === "object" &&
        typeof ref.name === "string" &&
        typeof ref.key === "string"
      ) {
        out.push({ name: ref.name, key: ref.key });
      } else {
        secretRefs(v, out);
      }
    }
  }
  return out;
}

/** Env vars that give the entrypoint's secret resolver each referenced secret key. */
export function secretEnv(...specs: unknown[]): EnvVar[] {
  const seen = new Map<string, EnvVar>();
  for (const ref of specs.flatMap((s) => secretRefs(s))) {
    const name = envNameFor(ref);
    if (!seen.has(name)) seen.set(name, { name, valueFrom: { secretKeyRef: { name: ref.name, key: ref.key } } });
  }
  return [...seen.values()];
}

export interface WorkloadInput {
  kind: "EventSource" | "Trigger";
  /** The resource as the workload runs it (sinks resolved), owner of everything rendered. */
  resource: EventSource | Trigger;
  /** The raw resource, for its uid (owner references). */
  owner: { kind: string; metadata: { name: string; uid?: unknown } };
  /** The bus manifest the workload needs, or undefined (an EventSource with a sink). */
  bus: AnyEventBus | undefined;
  name: string;
  namespace: string;
  options: ResolvedOptions;
  /** How the workload reaches the bus (undefined without a bus). */
  busDriver: BusDriver | undefined;
  /** Extra container ports (webhooks). */
  ports: ContainerPort[];
  /** The replica count, or undefined when a ScaledObject owns it. */
  replicas: number | undefined;
}

export function workloadMeta(input: Pick<WorkloadInput, "owner" | "namespace" | "kind">): (n: string) => ObjectMeta {
  return (n) => objectMeta(input.owner, n, input.namespace);
}

/** The ConfigMap holding the resource and its bus, one YAML file each. */
export function renderConfigMap(input: WorkloadInput): ConfigMap {
  const data: Record<string, string> = { [manifestFile(input.kind)]: toYaml(cleanManifest(input.resource)) };
  if (input.bus !== undefined) data[manifestFile(input.bus.kind)] = toYaml(cleanManifest(input.bus));
  return { apiVersion: "v1", kind: "ConfigMap", metadata: objectMeta(input.owner, input.name, input.namespace), data };
}

/** 16 hex digits of the SHA-256 of the ConfigMap data (sorted by file name). */
export function configHash(cm: ConfigMap): string {
  const h = createHash("sha256");
  for (const k of Object.keys(cm.data).sort()) h.update(k).update("\0").update(cm.data[k]!).update("\0");
  return h.digest("hex").slice(0, 16);
}

/** The entrypoint's arguments. */
export function workloadArgs(input: WorkloadInput): string[] {
  const args = [
    input.kind === "EventSource" ? "eventsource" : "trigger",
    "-f",
    Defaults.configPath,
    "--name",
    `${input.namespace}/${input.resource.metadata.name}`,
  ];
  if (input.options.healthPort !== Defaults.healthPort) args.push("--health-port", String(input.options.healthPort));
  if (input.busDriver !== undefined) args.push("--bus-driver", input.busDriver);
  if (input.busDriver === BusDriver.Dapr) {
    const d = input.options.dapr;
    if (d.pubsubName !== undefined) args.push("--pubsub-name", d.pubsubName);
    if (d.sidecarTimeout !== undefined) args.push("--sidecar-timeout", d.sidecarTimeout);
  }
  const level = input.resource.spec.logLevel;
  if (level !== undefined) args.push("--log-level", toLogLevel(level));
  return args;
}

/** The pod's Dapr sidecar annotations (none when Dapr is off). */
export function daprAnnotations(appId: string, options: ResolvedOptions): Record<string, string> {
  if (!options.dapr.enabled) return {};
  return {
    "dapr.io/enabled": "true",
    "dapr.io/app-id": appId,
    "dapr.io/app-port": String(options.healthPort),
    "dapr.io/app-protocol": "http",
    ...(options.dapr.config === undefined ? {} : { "dapr.io/config": options.dapr.config }),
    ...(options.dapr.logLevel === undefined ? {} : { "dapr.io/log-level": options.dapr.logLevel }),
  };
}

/** The pod labels (also the selector of the Deployment and of a webhook Service). */
export function podSelector(input: Pick<WorkloadInput, "owner">): Record<string, string> {
  return ownerLabels(input.owner);
}

/** The project's container: the image, `args`, secrets from `env`, the config volume and a writable /tmp. */
export function projectContainer(o: ResolvedOptions, args: string[], env: EnvVar[]): Container {
  return {
    name: Defaults.containerName,
    image: o.image,
    ...(o.imagePullPolicy === undefined ? {} : { imagePullPolicy: o.imagePullPolicy }),
    args,
    ...(env.length === 0 ? {} : { env }),
    volumeMounts: [
      { name: "config", mountPath: Defaults.configPath, readOnly: true },
      { name: "tmp", mountPath: "/tmp" },
    ],
    resources: structuredClone(o.resources),
    securityContext: {
      runAsNonRoot: true,
      runAsUser: o.runAsUser,
      runAsGroup: o.runAsUser,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    },
  };
}

/** A Pod of one {@link projectContainer} reading the ConfigMap `cm`. */
export function projectPodSpec(o: ResolvedOptions, container: Container, cm: ConfigMap): PodSpec {
  return {
    ...(o.serviceAccountName === undefined ? {} : { serviceAccountName: o.serviceAccountName }),
    securityContext: { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } },
    containers: [container],
    volumes: [
      { name: "config", configMap: { name: cm.metadata.name } },
      { name: "tmp", emptyDir: {} },
    ],
  };
}

export function renderDeployment(input: WorkloadInput, cm: ConfigMap): Deployment {
  const o = input.options;
  const selector = podSelector(input);
  const podLabels = { ...selector, [NAME_LABEL]: "ofevents", [COMPONENT_LABEL]: input.kind.toLowerCase() };
  const probe = (path: string, periodSeconds: number) => ({
    httpGet: { path, port: "health" },
    periodSeconds,
    timeoutSeconds: 3,
    failureThreshold: 3,
  });
  const container: Container = {
    ...projectContainer(o, workloadArgs(input), secretEnv(input.resource.spec, input.bus?.spec)),
    ports: [{ name: "health", containerPort: o.healthPort, protocol: "TCP" }, ...input.ports],
    livenessProbe: { ...probe("/healthz", 10), initialDelaySeconds: 5 },
    readinessProbe: probe("/readyz", 5),
  };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: objectMeta(input.owner, input.name, input.namespace, {
      [NAME_LABEL]: "ofevents",
      [COMPONENT_LABEL]: input.kind.toLowerCase(),
    }),
    spec: {
      ...(input.replicas === undefined ? {} : { replicas: input.replicas }),
      selector: { matchLabels: selector },
      template: {
        metadata: {
          labels: podLabels,
          annotations: { [CONFIG_HASH_ANNOTATION]: configHash(cm), ...daprAnnotations(input.name, o) },
        },
        spec: projectPodSpec(o, container, cm),
      },
    },
  };
}
