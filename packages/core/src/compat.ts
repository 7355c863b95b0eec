/**
 * OpenFunction compatibility: every field of OpenFunction's API (apis/events/v1alpha1) is either
 * used or named here with the reason it has no effect. `compatibility(resource)` returns the
 * warnings (`validate` prints them, `run` logs each once) and the few issues a field's value can
 * cause (a `startAtTime` its layout cannot read). Pure; the loader calls it for every resource.
 */
import type { ValidationIssue } from "./errors.js";
import { parseGoTime } from "./gotime.js";
import { Kind, type EventSource, type NatsStreamingBusSpec, type Resource } from "./schemas.js";

/** Codes of compatibility warnings. */
export const CompatCode = {
  /** The field loads and has no effect here; the message says why. */
  NoEffect: "no_effect",
  /** An optional field was filled in with a documented default. */
  Defaulted: "defaulted",
  /** The event loads but cannot run; the message says why. */
  NotRunnable: "not_runnable",
} as const;
export type CompatCode = (typeof CompatCode)[keyof typeof CompatCode];

/** The result of {@link compatibility}. */
export interface Compatibility {
  warnings: ValidationIssue[];
  issues: ValidationIssue[];
}

/** Redis fields that are go-redis pool settings: ioredis has none of them. */
const REDIS_POOL_FIELDS = [
  "writeTimeout",
  "poolSize",
  "poolTimeout",
  "maxConnAge",
  "minIdleConns",
  "idleCheckFrequency",
  "idleTimeout",
] as const;

/** natsStreaming start options, in the order Dapr's NATS Streaming component gave them precedence. */
const START_OPTIONS = [
  "startAtSequence",
  "startWithLastReceived",
  "deliverAll",
  "deliverNew",
  "startAtTimeDelta",
  "startAtTime",
] as const;
type StartOption = (typeof START_OPTIONS)[number];

/** The start option of a natsStreaming bus that is used (the first set, in Dapr's order). */
export function natsStreamingStartOption(spec: NatsStreamingBusSpec): StartOption | undefined {
  return START_OPTIONS.find((k) => spec[k] !== undefined && spec[k] !== false);
}

/**
 * A redis event that names neither `stream` nor `channel` is OpenFunction's: a Dapr redis
 * binding, which cannot receive. Returns, for each such event, its path and why it does not run.
 */
export function unrunnableEvents(es: EventSource): Array<{ event: string; path: string; message: string }> {
  const out: Array<{ event: string; path: string; message: string }> = [];
  for (const [event, r] of Object.entries(es.spec.redis ?? {})) {
    if (r.stream === undefined && r.channel === undefined) {
      out.push({
        event,
        path: `spec.redis.${event}`,
        message:
          `redis event "${event}" does not run: OpenFunction made it a Dapr redis binding, which cannot receive ` +
          '(Dapr registers bindings.redis as output only), and it names nothing to read; set "stream" or "channel"',
      });
    }
  }
  return out;
}

function noEffect(path: string, message: string): ValidationIssue {
  return { code: CompatCode.NoEffect, path, message };
}

function sinkWarnings(sink: { ref?: unknown; uri?: string | undefined } | undefined, path: string): ValidationIssue[] {
  if (sink?.ref === undefined || sink.uri === undefined) return [];
  return [noEffect(`${path}.ref`, "has no effect beside uri: uri wins (OpenFunction's rule)")];
}

function natsStreaming(ns: NatsStreamingBusSpec, out: Compatibility): void {
  const p = "spec.natsStreaming";
  out.warnings.push(
    noEffect(
      `${p}.natsStreamingClusterID`,
      `has no effect: NATS Streaming is end-of-life and this bus runs on JetStream at ${ns.natsURL}, which has no cluster id`,
    ),
  );
  if (ns.consumerID !== undefined) {
    out.warnings.push(
      noEffect(
        `${p}.consumerID`,
        "has no effect: a trigger's consumer is named after the trigger (with the Dapr sidecar, after its app id)",
      ),
    );
  }
  if (ns.durableSubscriptionName === undefined) {
    out.warnings.push({
      code: CompatCode.Defaulted,
      path: `${p}.durableSubscriptionName`,
      message:
        "is absent (as in OpenFunction 0.5): each trigger's durable consumer is named after the trigger alone (with the Dapr sidecar, its app id)",
    });
  }
  const used = natsStreamingStartOption(ns);
  for (const k of START_OPTIONS) {
    if (k !== used && ns[k] !== undefined && ns[k] !== false) {
      out.warnings.push(noEffect(`${p}.${k}`, `has no effect: ${used} is set and takes precedence`));
    }
  }
  if (ns.startAtTimeFormat !== undefined && (used !== "startAtTime" || ns.startAtTime === undefined)) {
    out.warnings.push(noEffect(`${p}.startAtTimeFormat`, "has no effect without startAtTime"));
  }
  if (ns.startAtTime !== undefined && parseGoTime(ns.startAtTime, ns.startAtTimeFormat) === undefined) {
    out.issues.push({
      code: "invalid_value",
      path: `${p}.startAtTime`,
      message: `"${ns.startAtTime}" does not match the layout ${ns.startAtTimeFormat ?? "2006-01-02T15:04:05Z07:00 (RFC 3339)"}`,
    });
  }
  if (used === "startAtTimeDelta") {
    out.warnings.push(
      noEffect(
        `${p}.startAtTimeDelta`,
        "is honoured by the direct JetStream driver only: the Dapr component takes no relative start, so through the Dapr sidecar a new consumer starts with new events",
      ),
    );
  }
  if (ns.subscriptionType === "topic") {
    out.warnings.push(
      noEffect(
        `${p}.subscriptionType`,
        '"topic" is honoured by the direct JetStream driver only: through the Dapr sidecar the replicas of a trigger share its events',
      ),
    );
  }
  for (const k of ["queueGroup", "durableName", "subject"] as const) {
    if (ns.scaleOption?.[k] !== undefined) {
      out.warnings.push(
        noEffect(
          `${p}.scaleOption.${k}`,
          "has no effect: the KEDA scaler measures the JetStream consumer the trigger uses (a NATS Streaming scaler setting)",
        ),
      );
    }
  }
}

/**
 * The compatibility warnings and issues of one parsed resource, with paths inside it. Never
 * throws.
 */
export function compatibility(r: Resource): Compatibility {
  const out: Compatibility = { warnings: [], issues: [] };
  switch (r.kind) {
    case Kind.EventSource: {
      const s = r.spec;
      if (s.build !== undefined) {
        out.warnings.push(
          noEffect(
            "spec.build",
            "has no effect: the source runs in the ofevents image; OpenFunction's build of an event-source handler is not done",
          ),
        );
      }
      out.warnings.push(...sinkWarnings(s.sink, "spec.sink"));
      for (const u of unrunnableEvents(r))
        out.warnings.push({ code: CompatCode.NotRunnable, path: u.path, message: u.message });
      for (const [event, spec] of Object.entries(s.redis ?? {})) {
        for (const f of REDIS_POOL_FIELDS) {
          if (spec[f] !== undefined) {
            out.warnings.push(
              noEffect(
                `spec.redis.${event}.${f}`,
                "has no effect: a go-redis connection-pool setting with no equivalent in ioredis (an event uses one or two connections)",
              ),
            );
          }
        }
      }
      for (const [event, spec] of Object.entries(s.mqtt ?? {})) {
        if (spec.retain !== undefined) {
          out.warnings.push(
            noEffect(
              `spec.mqtt.${event}.retain`,
              "has no effect: it is a publishing flag, and the source only subscribes",
            ),
          );
        }
      }
      break;
    }
    case Kind.EventBus:
    case Kind.ClusterEventBus:
      if (r.spec.topic !== undefined) {
        out.warnings.push(
          noEffect("spec.topic", "has no effect: an event's topic is {namespace}-{eventSource}-{event}"),
        );
      }
      if (r.spec.natsStreaming !== undefined) natsStreaming(r.spec.natsStreaming, out);
      break;
    case Kind.Trigger:
      r.spec.subscribers.forEach((sub, i) => {
        out.warnings.push(...sinkWarnings(sub.sink, `spec.subscribers.${i}.sink`));
        out.warnings.push(...sinkWarnings(sub.deadLetterSink, `spec.subscribers.${i}.deadLetterSink`));
      });
      break;
  }
  return out;
}
