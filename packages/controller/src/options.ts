/** What the controller is configured with, and the defaults every render uses. */
import { OfEventsError, ErrorCode, hasCode, renderDaprComponents, type AnyEventBus } from "@ofevents/core";
import type { ResourceRequirements } from "./k8s.js";

/** How a workload is deployed. */
export const RenderMode = {
  /** A Deployment (+ ConfigMap, Service, ScaledObject) running the `ofevents` image. */
  Deployment: "deployment",
  /** An OpenFunction Function (core.openfunction.io/v1beta1, async runtime), for clusters that run OpenFunction. */
  Function: "function",
} as const;
export type RenderMode = (typeof RenderMode)[keyof typeof RenderMode];

/** How a workload reaches its bus (the entrypoints' `--bus-driver`). */
export const BusDriver = {
  /** The broker's own client (opt-in, for throughput); KEDA watches the direct drivers' streams, consumers, topics and groups. */
  Direct: "direct",
  /** Through the Dapr sidecar and the bus's Component (the default with Dapr on). */
  Dapr: "dapr",
} as const;
export type BusDriver = (typeof BusDriver)[keyof typeof BusDriver];

/** Annotation on an EventSource or Trigger that picks its bus driver (`direct` or `dapr`) over the controller's. */
export const BUS_DRIVER_ANNOTATION = "ofevents.io/bus-driver";

export interface ControllerOptions {
  /** The `ofevents` image the workloads run. */
  image: string;
  imagePullPolicy?: "Always" | "IfNotPresent" | "Never" | undefined;
  /** Deployment (default) or OpenFunction Function. */
  mode?: RenderMode | undefined;
  /**
   * Bus access of the workloads (default dapr, direct when Dapr is off; a `spec.dapr` bus always
   * goes through Dapr; the `ofevents.io/bus-driver` annotation of a resource wins).
   */
  busDriver?: BusDriver | undefined;
  dapr?:
    | {
        /** Render Dapr Components for buses and inject the sidecar into workloads (default true). */
        enabled?: boolean | undefined;
        /** `dapr.io/config`: the Dapr Configuration the sidecars use. */
        config?: string | undefined;
        /** `dapr.io/log-level` of the sidecars. */
        logLevel?: string | undefined;
        /** The entrypoints' `--sidecar-timeout` on the Dapr path, e.g. `60s` (default: theirs, 60s). */
        sidecarTimeout?: string | undefined;
        /**
         * The entrypoints' `--pubsub-name` on the Dapr path: a Component installed separately that
         * every workload uses instead of the one rendered from its bus (default: the bus's name).
         */
        pubsubName?: string | undefined;
      }
    | undefined;
  keda?:
    | {
        /** Render ScaledObjects (default true); without them a workload runs one replica. */
        enabled?: boolean | undefined;
        /** Target backlog per replica when the resource sets none (default "10"). */
        lagThreshold?: string | undefined;
        /** `host:port` of the NATS monitoring endpoint (default: the bus URL's host, port 8222). */
        natsMonitoringEndpoint?: string | undefined;
        /** NATS account of the streams (default `$G`, the account of a server without accounts). */
        natsAccount?: string | undefined;
        /** Most replicas when the resource sets none (default: KEDA's, 100). */
        maxReplicaCount?: number | undefined;
        /**
         * Fewest replicas when the resource sets none (default 0 when KEDA can wake the workload,
         * else 1; never below that floor).
         */
        minReplicaCount?: number | undefined;
        /** Seconds between KEDA's checks when the resource sets none (default: KEDA's, 30). */
        pollingInterval?: number | undefined;
        /** Seconds after the last activity before scaling to zero when the resource sets none (default: KEDA's, 300). */
        cooldownPeriod?: number | undefined;
        /**
         * KEDA ≥ 2.13: seconds after creation before a new ScaledObject may scale to zero, so the
         * first replica creates its durable consumer or group (default 60 for a workload that may
         * scale to zero).
         */
        initialCooldownPeriod?: number | undefined;
      }
    | undefined;
  /** The entrypoints' `--health-port`, also Dapr's app port (default 8081). */
  healthPort?: number | undefined;
  /** Container resources (default: requests 50m CPU / 64Mi, limit 256Mi). */
  resources?: ResourceRequirements | undefined;
  /** User and group the container runs as (default 1000, the image's non-root user). */
  runAsUser?: number | undefined;
  serviceAccountName?: string | undefined;
}

/** Options with every default filled in. */
export interface ResolvedOptions {
  image: string;
  imagePullPolicy: string | undefined;
  mode: RenderMode;
  busDriver: BusDriver;
  dapr: {
    enabled: boolean;
    config: string | undefined;
    logLevel: string | undefined;
    sidecarTimeout: string | undefined;
    pubsubName: string | undefined;
  };
  keda: {
    enabled: boolean;
    lagThreshold: string;
    natsMonitoringEndpoint: string | undefined;
    natsAccount: string;
    maxReplicaCount: number | undefined;
    minReplicaCount: number | undefined;
    pollingInterval: number | undefined;
    cooldownPeriod: number | undefined;
    initialCooldownPeriod: number | undefined;
  };
  healthPort: number;
  resources: ResourceRequirements;
  runAsUser: number;
  serviceAccountName: string | undefined;
}

export const Defaults = {
  healthPort: 8081,
  lagThreshold: "10",
  natsMonitoringPort: 8222,
  natsAccount: "$G",
  runAsUser: 1000,
  resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "256Mi" } },
  /** Where the ConfigMap is mounted; the entrypoints read it with `-f`. */
  configPath: "/etc/ofevents",
  containerName: "ofevents",
} as const;

/**
 * Fills in the defaults. Throws a CONFIG OfEventsError for a combination that cannot work
 * (no image, the Dapr bus driver without Dapr, a health port out of range).
 */
export function resolveOptions(o: ControllerOptions): ResolvedOptions {
  if (o.image === "") throw new OfEventsError(ErrorCode.Config, "controller options: image is required");
  const daprEnabled = o.dapr?.enabled ?? true;
  const busDriver = o.busDriver ?? (daprEnabled ? BusDriver.Dapr : BusDriver.Direct);
  if (busDriver === BusDriver.Dapr && !daprEnabled) {
    throw new OfEventsError(ErrorCode.Config, "controller options: busDriver dapr needs dapr.enabled");
  }
  const healthPort = o.healthPort ?? Defaults.healthPort;
  if (!Number.isInteger(healthPort) || healthPort < 1 || healthPort > 65_535) {
    throw new OfEventsError(ErrorCode.Config, `controller options: healthPort ${healthPort} is not a port`);
  }
  return {
    image: o.image,
    imagePullPolicy: o.imagePullPolicy,
    mode: o.mode ?? RenderMode.Deployment,
    busDriver,
    dapr: {
      enabled: daprEnabled,
      config: o.dapr?.config,
      logLevel: o.dapr?.logLevel,
      sidecarTimeout: o.dapr?.sidecarTimeout,
      pubsubName: o.dapr?.pubsubName,
    },
    keda: {
      enabled: o.keda?.enabled ?? true,
      lagThreshold: o.keda?.lagThreshold ?? Defaults.lagThreshold,
      natsMonitoringEndpoint: o.keda?.natsMonitoringEndpoint,
      natsAccount: o.keda?.natsAccount ?? Defaults.natsAccount,
      maxReplicaCount: o.keda?.maxReplicaCount,
      minReplicaCount: o.keda?.minReplicaCount,
      pollingInterval: o.keda?.pollingInterval,
      cooldownPeriod: o.keda?.cooldownPeriod,
      initialCooldownPeriod: o.keda?.initialCooldownPeriod,
    },
    healthPort,
    resources: o.resources ?? structuredClone(Defaults.resources),
    runAsUser: o.runAsUser ?? Defaults.runAsUser,
    serviceAccountName: o.serviceAccountName,
  };
}

/** True when core can render a Dapr Component for `bus` (Dapr can carry it). */
export function daprCanCarry(bus: AnyEventBus): boolean {
  try {
    renderDaprComponents(bus, { namespace: "default" });
    return true;
  } catch (err) {
    if (hasCode(err, ErrorCode.Config)) return false;
    throw err;
  }
}

/**
 * The bus driver of one workload, or undefined without a bus: a `spec.dapr` bus goes through
 * Dapr; else the resource's `ofevents.io/bus-driver` annotation (`explicit`), else the
 * controller's driver, except that the Dapr default falls back to direct for a bus Dapr cannot
 * carry (such a bus's own status says why). An annotation with another value is `invalid`.
 */
export function workloadBusDriver(
  resource: { metadata: { annotations?: Record<string, string> | undefined } },
  bus: AnyEventBus | undefined,
  options: ResolvedOptions,
): { driver: BusDriver | undefined; explicit: boolean; invalid?: string | undefined } {
  if (bus === undefined) return { driver: undefined, explicit: false };
  if (bus.spec.dapr !== undefined) return { driver: BusDriver.Dapr, explicit: true };
  const a = resource.metadata.annotations?.[BUS_DRIVER_ANNOTATION];
  if (a === BusDriver.Direct || a === BusDriver.Dapr) return { driver: a, explicit: true };
  const fallback = options.busDriver === BusDriver.Dapr && !daprCanCarry(bus) ? BusDriver.Direct : options.busDriver;
  return { driver: fallback, explicit: false, ...(a === undefined ? {} : { invalid: a }) };
}
