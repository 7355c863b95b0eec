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
  formatIssue,
  namespaceOf,
  sendBody,
  serveMetrics,
  type Logger,
  type Metrics,
  type Sink,
} from "@ofevents/core";
import type { EventBus } from "@ofevents/eventbus";
import { validateAll } from "./check.js";
import { closeServer, createComposition } from "./compose.js";

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

export function pick<T extends { metadata: { name: string; namespace?: string | undefined } }>(
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
  const c = createComposition({
    manifests,
    logger: o.logger,
    host: o.host ?? "0.0.0.0",
    peers: "elsewhere",
    busAccess: {
      driver: o.busDriver,
      pubsubName: o.pubsubName,
      sidecarTimeoutMs: o.sidecarTimeoutMs,
      env: o.env,
    },
    metrics: o.metrics,
    processMetrics: true,
  });
  const { metrics } = c;
  let ready = false;
  let stopping = false;
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
  const health = await startHealth(o.healthHost ?? "0.0.0.0", o.healthPort ?? 8081, readiness, metrics).catch(
    async (err: unknown) => {
      await c.stop();
      throw err;
    },
  );
  const stop = async (): Promise<void> => {
    stopping = true;
    await c.stop();
    await closeServer(health);
  };
  try {
    const resource =
      o.kind === "EventSource"
        ? pick("EventSource", res(manifests.eventSources), o.name)
        : pick("Trigger", res(manifests.triggers), o.name);
    const namespace = namespaceOf(resource);
    if (resource.spec.eventBus !== undefined) bus = await c.busFor(resource.spec.eventBus, namespace);
    if (resource.kind === "EventSource") {
      const rt = await c.startEventSource(resource, clusterSinkUrl);
      // An event that cannot run here (logged at start, a warning of validate) never holds
      // readiness: the Pod serves the resource's other events.
      const skip = new Set(rt.unsupported());
      notRunning = () => rt.notRunning().filter((d) => !skip.has(d.event));
    } else {
      await c.startTrigger(resource, clusterSinkUrl);
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
    if (path === "/healthz") return sendBody(res, 200, "ok", { "content-type": "text/plain" });
    if (path === "/readyz") {
      void readiness().then((reason) => {
        if (reason === undefined) sendBody(res, 200, "ready", { "content-type": "text/plain" });
        else sendBody(res, 503, `not ready: ${reason}`, { "content-type": "text/plain" });
      });
      return;
    }
    sendBody(res, 404);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
