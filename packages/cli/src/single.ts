/**
 * Single-resource entrypoints, the container commands on Kubernetes: `ofevents eventsource -f`
 * and `ofevents trigger -f` run exactly one EventSource or Trigger with its bus, expose `/healthz`
 * (the process is alive), `/readyz` (the resource runs and its bus is connected) and `/metrics`
 * (Prometheus) on `--health-port`, and stop gracefully on SIGTERM.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  ErrorCode,
  ManifestError,
  OfEventsError,
  createExpressionEngine,
  createInstrumentation,
  createMetrics,
  createSecretResolver,
  daprTopicName,
  formatIssue,
  namespaceOf,
  resourceLogger,
  resolveEventBus,
  serveMetrics,
  type Logger,
  type Metrics,
  type Sink,
} from "@ofevents/core";
import { createSinkClient } from "@ofevents/delivery";
import { createEventBus, createJetStreamTopicPreparer, type EventBus } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type SourceEvents } from "@ofevents/eventsource";
import { startTrigger, type TriggerEvents } from "@ofevents/trigger";
import { validateAll } from "./check.js";

export interface SingleOptions {
  kind: "EventSource" | "Trigger";
  paths: string[];
  /** `name` or `namespace/name`; required when the files hold several resources of the kind. */
  name?: string | undefined;
  logger: Logger;
  host?: string | undefined;
  healthPort?: number | undefined;
  healthHost?: string | undefined;
  /** Where the resource's and its bus's metrics go (default: a new registry with process metrics). */
  metrics?: Metrics | undefined;
  /**
   * How to reach the bus: `direct` (the broker's own client), `dapr` (through the sidecar), or
   * `auto` (default): Dapr when the sidecar's variables DAPR_HTTP_PORT / DAPR_GRPC_PORT are set or
   * the bus is a generic `dapr` one.
   */
  busDriver?: "auto" | "direct" | "dapr" | undefined;
  /** Dapr pub/sub component name (default: the bus's name, as the controller renders it). */
  pubsubName?: string | undefined;
  /** How long to wait for the sidecar, ms (default 60,000). */
  sidecarTimeoutMs?: number | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

export interface Single {
  healthPort: number;
  metrics: Metrics;
  stop(): Promise<void>;
}

function pick<T extends { metadata: { name: string; namespace?: string | undefined } }>(
  kind: string,
  items: T[],
  name: string | undefined,
): T {
  const matches =
    name === undefined
      ? items
      : items.filter((r) => (name.includes("/") ? `${namespaceOf(r)}/${r.metadata.name}` : r.metadata.name) === name);
  if (matches.length === 1) return matches[0]!;
  const known = items.map((r) => `${namespaceOf(r)}/${r.metadata.name}`).join(", ") || "none";
  throw new OfEventsError(
    ErrorCode.Config,
    matches.length === 0
      ? `no ${kind}${name === undefined ? "" : ` named ${name}`} in the manifests (found: ${known})`
      : `several ${kind}s in the manifests (${known}): choose one with --name`,
  );
}

/** Off a cluster a ref can only be a URL we derive: the in-cluster Service address (uri wins). */
export function clusterSinkUrl(sink: Sink, namespace: string): string {
  if (sink.uri !== undefined) return sink.uri;
  const ref = sink.ref!;
  return `http://${ref.name}.${ref.namespace ?? namespace}.svc.cluster.local`;
}

export async function startSingle(o: SingleOptions): Promise<Single> {
  const log = o.logger.child({ component: "entrypoint" });
  const { manifests, issues, warnings } = await validateAll(o.paths, { peersElsewhere: true });
  if (issues.length > 0) throw new ManifestError(issues);
  for (const w of warnings) log.warn(formatIssue(w));
  let ready = false;
  let stopping = false;
  const metrics = o.metrics ?? createMetrics(undefined, { processMetrics: true });
  let bus: EventBus | undefined;
  let notRunning: () => Array<{ event: string; reason: string }> = () => [];
  const busReachable = cachedProbe(() => bus?.ping(READY_PING_TIMEOUT_MS) ?? Promise.resolve(), READY_CACHE_MS);
  const readiness = async (): Promise<string | undefined> => {
    if (stopping) return "stopping";
    if (!ready) return "starting";
    const down = notRunning();
    if (down.length > 0) return down.map((d) => `event ${d.event}: ${d.reason}`).join("; ");
    try {
      await busReachable();
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  };
  const health = await startHealth(o.healthHost ?? "0.0.0.0", o.healthPort ?? 8081, readiness, metrics);
  const stops: Array<() => Promise<void>> = [];
  const stop = async (): Promise<void> => {
    stopping = true;
    for (const s of stops.reverse()) await s().catch((err: unknown) => log.error({ err }, "shutdown step failed"));
    await closeServer(health);
  };
  try {
    const secrets = createSecretResolver(manifests.secrets.map((s) => s.resource));
    const sinks = createSinkClient();
    stops.push(() => sinks.close());
    const resource =
      o.kind === "EventSource"
        ? pick("EventSource", res(manifests.eventSources), o.name)
        : pick("Trigger", res(manifests.triggers), o.name);
    const namespace = namespaceOf(resource);
    const busName = resource.spec.eventBus;
    /** Creates the broker's side of a bus topic ahead of its first use (JetStream through Dapr: its stream). */
    let prepareBusTopic: ((topic: string) => Promise<void>) | undefined;
    if (busName !== undefined) {
      const r = resolveEventBus(busName, namespace, {
        eventBuses: res(manifests.eventBuses),
        clusterEventBuses: res(manifests.clusterEventBuses),
      });
      if (r.resource === undefined) {
        throw new OfEventsError(
          ErrorCode.Config,
          `EventBus "${busName}" is not in the manifests (nor a ClusterEventBus of that name)`,
        );
      }
      if (r.warning !== undefined) log.warn({ eventBus: busName }, r.warning);
      const env = o.env ?? process.env;
      const sidecar = env["DAPR_HTTP_PORT"] !== undefined || env["DAPR_GRPC_PORT"] !== undefined;
      const viaDapr =
        o.busDriver === "dapr" || ((o.busDriver ?? "auto") === "auto" && (sidecar || r.spec?.dapr !== undefined));
      let prepareTopic: ((topic: string) => Promise<void>) | undefined;
      const js = r.spec?.jetstream;
      if (viaDapr && js !== undefined) {
        // The streams the direct driver uses too (same prefix): both paths share topics.
        const preparer = createJetStreamTopicPreparer(js, o.logger);
        prepareTopic = (t) => preparer.prepareTopic(t);
        prepareBusTopic = (t) => preparer.prepareTopic(daprTopicName(r.spec, t));
        stops.push(() => preparer.close());
      }
      if (viaDapr)
        log.info(
          { eventBus: busName, pubsubName: o.pubsubName ?? busName },
          "reaching the bus through the Dapr sidecar",
        );
      const b = await createEventBus(r.spec, {
        logger: o.logger,
        secrets,
        namespace,
        ...(viaDapr
          ? {
              via: "dapr" as const,
              dapr: {
                pubsubName: o.pubsubName ?? busName,
                prepareTopic,
                sidecarTimeoutMs: o.sidecarTimeoutMs ?? 60_000,
              },
            }
          : {}),
      });
      metrics.observeBus(b.events, { bus: r.key, driver: b.driver });
      bus = b;
      stops.push(() => b.close());
    }
    if (resource.kind === "EventSource") {
      const webhooks = createWebhookServers({ host: o.host ?? "0.0.0.0", logger: o.logger });
      stops.push(() => webhooks.close());
      const instrumentation = createInstrumentation<SourceEvents>();
      metrics.observeSource(instrumentation, { namespace, eventSource: resource.metadata.name });
      const rt = await startEventSource(resource, {
        instrumentation,
        logger: resourceLogger(o.logger, resource),
        bus,
        sinks,
        secrets,
        webhooks,
        resolveSink: clusterSinkUrl,
      });
      notRunning = () => rt.notRunning();
      stops.push(() => rt.stop());
    } else {
      // An async function subscribes to the Trigger's output topics through its own daprd, which
      // cannot subscribe to a JetStream topic before its stream exists (it retries, with backoff)
      // and then starts with new messages: without the streams made now, at the first publish,
      // what the Trigger publishes before the function's subscription succeeds never reaches it.
      if (prepareBusTopic !== undefined) {
        const outputs = resource.spec.subscribers.flatMap((s) => [s.topic, s.deadLetterTopic]);
        for (const topic of new Set(outputs.filter((t): t is string => t !== undefined))) await prepareBusTopic(topic);
      }
      const instrumentation = createInstrumentation<TriggerEvents>();
      metrics.observeTrigger(instrumentation, { namespace, trigger: resource.metadata.name });
      const rt = await startTrigger(resource, {
        instrumentation,
        bus: bus!,
        logger: resourceLogger(o.logger, resource),
        engine: createExpressionEngine(),
        sinks,
        resolveSink: clusterSinkUrl,
      });
      stops.push(() => rt.stop());
    }
    ready = true;
    log.info(
      {
        kind: o.kind,
        name: `${namespace}/${resource.metadata.name}`,
        healthPort: (health.address() as AddressInfo).port,
      },
      "running",
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { healthPort: (health.address() as AddressInfo).port, metrics, stop };
}

function res<T>(items: ReadonlyArray<{ resource: T }>): T[] {
  return items.map((i) => i.resource);
}

/** How long a readiness probe waits for the bus's round trip (kubelet's default probe timeout is 1 s). */
const READY_PING_TIMEOUT_MS = 800;
/** Probes within this long share one round trip, so a probe storm costs the broker nothing. */
const READY_CACHE_MS = 1_000;

/**
 * Wraps a probe so that calls in flight share one run and a result is reused for `ttlMs`: an
 * unreachable backend costs at most one pending round trip at a time.
 */
function cachedProbe(probe: () => Promise<void>, ttlMs: number): () => Promise<void> {
  let last: { at: number; result: Promise<void> } | undefined;
  return () => {
    const now = Date.now();
    if (last === undefined || now - last.at >= ttlMs) {
      const result = probe();
      const entry = { at: now, result };
      last = entry;
      // Age counts from the answer, not the question, so a slow probe is not rerun at once.
      const answered = (): void => void (entry.at = Date.now());
      result.then(answered, answered);
    }
    return last.result;
  };
}

/**
 * `/healthz`: the process serves. `/readyz`: 200 once the resource runs and while its bus's
 * backend (NATS, Kafka, the Dapr sidecar) answers a round trip; 503 with the reason otherwise.
 */
async function startHealth(
  host: string,
  port: number,
  readiness: () => Promise<string | undefined>,
  metrics: Metrics,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (serveMetrics(metrics, req, res)) return;
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") return void res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    if (path === "/readyz") {
      void readiness().then((reason) => {
        if (reason === undefined) res.writeHead(200, { "content-type": "text/plain" }).end("ready");
        else res.writeHead(503, { "content-type": "text/plain" }).end(`not ready: ${reason}`);
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((r) => {
    server.close(() => r());
    server.closeIdleConnections();
  });
}
