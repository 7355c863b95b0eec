/**
 * KEDA scaling of a workload: what each event or input contributes (a trigger on a backlog, and
 * whether the workload may sleep at zero or run several replicas), folded into one ScaledObject.
 *
 * - min replicas: 0 only when every part can wake the workload from zero (a backlog KEDA can
 *   see: Kafka lag, a Redis stream group, a JetStream consumer); otherwise at least 1, whatever
 *   `scaleOption.minReplicaCount` says (a webhook or cron source at zero would lose events).
 * - max replicas: 1 when a part must run once (cron ticks, an MQTT client id, a Redis channel or
 *   core NATS subject without queue group would be duplicated), else `maxReplicaCount`.
 * - min = max = 1 renders no ScaledObject: the Deployment runs one replica.
 * - No backlog trigger but room to scale out (webhooks): a CPU trigger (80 % of the request).
 * - Credentials from secrets become a TriggerAuthentication per trigger, unless `authRef` names one.
 */
import type { SaslSpec, TlsSpec } from "@ofevents/core";
import type { ObjectMeta, ScaleTrigger, ScaledObject, TriggerAuthentication } from "./k8s.js";
import { Defaults, type ResolvedOptions } from "./options.js";

/** OpenFunction's GenericScaleOption (the fields every scaleOption has). */
export interface GenericScaleOption {
  pollingInterval?: number | undefined;
  cooldownPeriod?: number | undefined;
  minReplicaCount?: number | undefined;
  maxReplicaCount?: number | undefined;
  advanced?: Record<string, unknown> | undefined;
  metadata?: Record<string, string> | undefined;
  authRef?: Record<string, unknown> | undefined;
}

/** A secret key KEDA reads for a trigger parameter. */
export interface SecretParameter {
  parameter: string;
  name: string;
  key: string;
}

/** What one event (EventSource) or input topic (Trigger) needs from scaling. */
export interface ScalePart {
  /** Describes the part in messages, e.g. `kafka/orders`. */
  label: string;
  trigger?: ScaleTrigger | undefined;
  /** Secrets the trigger authenticates with (a TriggerAuthentication is rendered for them). */
  secrets?: SecretParameter[] | undefined;
  /** KEDA can see the part's backlog, so the workload may sleep at zero. */
  wakesFromZero: boolean;
  /** Several replicas share the work without duplicating events. */
  scalesOut: boolean;
  /** The scaleOption the resource gives for this part. */
  scaleOption?: GenericScaleOption | undefined;
}

export interface ScalingResult {
  scaledObject: ScaledObject | undefined;
  authentications: TriggerAuthentication[];
  /** The Deployment's replica count when no ScaledObject owns it. */
  replicas: number | undefined;
}

const CPU_UTILIZATION = "80";

/** KEDA's `authenticationRef` from OpenFunction's free-form `authRef` (`{name, kind?}`). */
function authRefOf(authRef: Record<string, unknown> | undefined): ScaleTrigger["authenticationRef"] {
  const name = authRef?.["name"];
  if (typeof name !== "string" || name === "") return undefined;
  const kind = authRef?.["kind"];
  return typeof kind === "string" && kind !== "" ? { name, kind } : { name };
}

/** Default `initialCooldownPeriod` (seconds) of a ScaledObject that may scale to zero. */
export const DEFAULT_INITIAL_COOLDOWN_S = 60;

type NumericOption = "minReplicaCount" | "maxReplicaCount" | "pollingInterval" | "cooldownPeriod";

/** `f` over the values the options give for `key`, or undefined when none does. */
function pick(
  opts: readonly GenericScaleOption[],
  key: NumericOption,
  f: (...n: number[]) => number,
): number | undefined {
  const given = opts.map((o) => o[key]).filter((v): v is number => v !== undefined);
  return given.length === 0 ? undefined : f(...given);
}

/**
 * The ScaledObject (and TriggerAuthentications) of workload `name` for `parts`, with `meta`
 * giving labels and owner references. Several parts' scale options combine to the strictest:
 * the highest minimum, the lowest maximum, the shortest polling interval, the longest cooldown.
 */
export function renderScaling(
  name: string,
  meta: (name: string) => ObjectMeta,
  parts: readonly ScalePart[],
  options: ResolvedOptions,
): ScalingResult {
  const wakes = parts.length > 0 && parts.every((p) => p.wakesFromZero);
  const scalesOut = parts.every((p) => p.scalesOut);
  const opts = parts.map((p) => p.scaleOption).filter((o): o is GenericScaleOption => o !== undefined);
  const floor = wakes ? 0 : 1;
  const min = Math.max(floor, pick(opts, "minReplicaCount", Math.max) ?? options.keda.minReplicaCount ?? floor);
  let max = scalesOut ? (pick(opts, "maxReplicaCount", Math.min) ?? options.keda.maxReplicaCount) : 1;
  if (max !== undefined) max = Math.max(max, min, 1);
  if (!options.keda.enabled || (min >= 1 && max === 1)) {
    return { scaledObject: undefined, authentications: [], replicas: Math.max(min, 1) };
  }

  const authentications: TriggerAuthentication[] = [];
  const triggers: ScaleTrigger[] = [];
  for (const part of parts) {
    if (part.trigger === undefined) continue;
    const trigger: ScaleTrigger = { ...part.trigger, metadata: { ...part.trigger.metadata } };
    const ref = trigger.authenticationRef ?? authRefOf(part.scaleOption?.authRef);
    if (ref !== undefined) {
      trigger.authenticationRef = ref;
    } else if (part.secrets !== undefined && part.secrets.length > 0) {
      const authName = `${name}-${triggers.length}`;
      authentications.push({
        apiVersion: "keda.sh/v1alpha1",
        kind: "TriggerAuthentication",
        metadata: meta(authName),
        spec: { secretTargetRef: part.secrets.map((s) => ({ ...s })) },
      });
      trigger.authenticationRef = { name: authName };
    }
    triggers.push(trigger);
  }
  if (triggers.length === 0) {
    triggers.push({ type: "cpu", metricType: "Utilization", metadata: { value: CPU_UTILIZATION } });
  }

  const polling = pick(opts, "pollingInterval", Math.min) ?? options.keda.pollingInterval;
  const cooldown = pick(opts, "cooldownPeriod", Math.max) ?? options.keda.cooldownPeriod;
  const advanced = opts.find((o) => o.advanced !== undefined)?.advanced;
  const scaledObject: ScaledObject = {
    apiVersion: "keda.sh/v1alpha1",
    kind: "ScaledObject",
    metadata: meta(name),
    spec: {
      scaleTargetRef: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        name,
        envSourceContainerName: Defaults.containerName,
      },
      minReplicaCount: min,
      ...(max === undefined ? {} : { maxReplicaCount: max }),
      ...(polling === undefined ? {} : { pollingInterval: polling }),
      ...(cooldown === undefined ? {} : { cooldownPeriod: cooldown }),
      // A workload that may sleep first runs long enough to create its durable consumer or group:
      // before that the scaler sees no backlog to wake it with.
      ...(min === 0 ? { initialCooldownPeriod: options.keda.initialCooldownPeriod ?? DEFAULT_INITIAL_COOLDOWN_S } : {}),
      ...(advanced === undefined ? {} : { advanced: structuredClone(advanced) }),
      triggers,
    },
  };
  return { scaledObject, authentications, replicas: undefined };
}

/**
 * Trigger metadata: ours, then the user's extra `metadata`, then the identity fields (what the
 * scaler watches must be what the workload consumes, so those always win).
 */
export function scalerMetadata(
  defaults: Record<string, string | undefined>,
  extra: Record<string, string> | undefined,
  identity: Record<string, string | undefined>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const src of [defaults, extra ?? {}, identity]) {
    for (const [k, v] of Object.entries(src)) if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * `host:port` of the NATS monitoring endpoint: the option, else the first server URL's host
 * with the monitoring port 8222 (nats-server's `-m 8222` convention).
 */
export function natsMonitoringEndpoint(url: string, options: ResolvedOptions): string {
  if (options.keda.natsMonitoringEndpoint !== undefined) return options.keda.natsMonitoringEndpoint;
  const first = url.split(",")[0]!.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(first) ? first : `nats://${first}`;
  let host: string;
  try {
    host = new URL(withScheme).hostname;
  } catch {
    host = first.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").replace(/:\d+$/, "");
  }
  return `${host}:${Defaults.natsMonitoringPort}`;
}

/**
 * KEDA kafka scaler settings for SASL / TLS given by secret references: `sasl` and `tls` in the
 * metadata, the credentials as TriggerAuthentication parameters (username, password, ca, cert, key).
 */
export function kafkaAuth(
  sasl: SaslSpec | undefined,
  tls: TlsSpec | undefined,
): { metadata: Record<string, string>; secrets: SecretParameter[] } {
  const metadata: Record<string, string> = {};
  const secrets: SecretParameter[] = [];
  if (sasl !== undefined) {
    metadata["sasl"] = { plain: "plaintext", "scram-sha-256": "scram_sha256", "scram-sha-512": "scram_sha512" }[
      sasl.mechanism
    ];
    secrets.push({ parameter: "username", ...sasl.usernameSecret }, { parameter: "password", ...sasl.passwordSecret });
  }
  if (tls !== undefined && tls.enabled !== false) {
    metadata["tls"] = "enable";
    if (tls.insecureSkipVerify === true) metadata["unsafeSsl"] = "true";
    for (const [parameter, ref] of [
      ["ca", tls.caSecret],
      ["cert", tls.certSecret],
      ["key", tls.keySecret],
    ] as const) {
      if (ref !== undefined) secrets.push({ parameter, ...ref });
    }
  }
  return { metadata, secrets };
}
