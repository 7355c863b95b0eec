/**
 * The controller (STYLE item 19): informers on the four kinds (watch.ts) feed a work queue keyed
 * by `kind/namespace/name` (kube/queue.ts); the Lease holder (kube/lease.ts) takes keys off it and
 * reconciles each (reconcile.ts: read → validate → render → apply and prune → status). A bad spec
 * becomes a `Ready: False` condition; an API failure requeues the key with exponential backoff.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { API_GROUP, type Logger } from "@ofevents/core";
import { eventSourcesNamedByLeftovers } from "./eventsource/left-behind.js";
import { healthServers } from "./health.js";
import { KubeApi } from "./kube/api.js";
import { LeaderElector, retryPeriodMs, type LeaderElectionOptions } from "./kube/lease.js";
import { WorkQueue } from "./kube/queue.js";
import { labelValue } from "./labels.js";
import { ControllerMetrics } from "./metrics.js";
import type { ControllerOptions } from "./options.js";
import { resolveOptions } from "./options.js";
import { reconcile, type ReconcileInput } from "./reconcile.js";
import { KIND_NAMES, key, keyOf, type Kind, type RawObject } from "./resources.js";
import { watchResources } from "./watch.js";

export interface StartControllerInput {
  kubeConfig: KubeConfig;
  logger: Logger;
  options: ControllerOptions;
  /** The controller's own namespace: where its Lease lives (default `default`). */
  namespace?: string | undefined;
  leaderElection?: LeaderElectionOptions | undefined;
  /** Requeue backoff after an error: base and cap in ms (default 200 ms .. 60 s). */
  backoff?: { baseMs?: number | undefined; maxMs?: number | undefined } | undefined;
  /**
   * Namespaces whose EventSources, Triggers and EventBuses it reconciles (default: every
   * namespace). ClusterEventBuses are cluster-scoped and always watched.
   */
  namespaces?: readonly string[] | undefined;
  /**
   * Serves `/healthz`, `/readyz` and `/metrics` on `host:port` (port 0 picks a free one; host
   * default 0.0.0.0); none without it.
   */
  health?: { port: number; host?: string | undefined } | undefined;
  /** Also serves `/metrics` alone on this port (same host as `health`, default 0.0.0.0). */
  metrics?: { port: number; host?: string | undefined } | undefined;
}

export interface ControllerHandle {
  /** Whether this replica holds the Lease (and reconciles). */
  isLeader(): boolean;
  /** The port of `/healthz`, `/readyz` and `/metrics`, when served. */
  readonly healthPort: number | undefined;
  /** The port of the `/metrics`-only server, when asked for. */
  readonly metricsPort: number | undefined;
  /** The metrics in the Prometheus text format (what `GET /metrics` serves). */
  metricsText(): string;
  /** Stops informers and the loop, and releases the Lease when held. */
  stop(): Promise<void>;
}

/**
 * Starts the controller. Resolves once the informers are listed; reconciling starts when this
 * replica acquires the Lease. Throws a CONFIG OfEventsError for options that cannot work.
 */
export async function startController(input: StartControllerInput): Promise<ControllerHandle> {
  const { kubeConfig, logger, options } = input;
  resolveOptions(options);
  const namespace = input.namespace ?? "default";
  const le = input.leaderElection ?? {};
  const api = new KubeApi(kubeConfig);
  const queue = new WorkQueue(input.backoff?.baseMs ?? 200, input.backoff?.maxMs ?? 60_000);
  const stopping = new AbortController();
  let stopped = false;
  let synced = false;
  const watched = input.namespaces === undefined || input.namespaces.length === 0 ? undefined : [...input.namespaces];
  const election = new LeaderElector(api, logger, namespace, le, () => {
    enqueueAll();
    void enqueueLeftBehind().catch((err: unknown) =>
      logger.warn({ err }, "listing what deleted EventSources left behind failed; next time this replica leads"),
    );
  });
  const metrics = new ControllerMetrics(() => ({ depth: queue.depth, leader: election.leader, synced }));
  const servers = healthServers(
    () => ({ stopped, synced, leader: election.leader }),
    () => metrics.text(),
  );

  let healthPort: number | undefined;
  let metricsPort: number | undefined;
  try {
    if (input.health !== undefined) healthPort = await servers.listen(input.health, false);
    if (input.metrics !== undefined) metricsPort = await servers.listen(input.metrics, true);
  } catch (err) {
    await servers.close();
    throw err;
  }

  const watch = watchResources({
    kubeConfig,
    api,
    logger,
    namespaces: watched,
    retryMs: retryPeriodMs(le),
    stopped: () => stopped,
    onObject(kind, o) {
      if (!election.leader) return;
      queue.add(keyOf(kind, o));
      if (kind === "EventBus" || kind === "ClusterEventBus") enqueueUsers(kind, o);
    },
    onOwned(kind, ns, name) {
      // A Deployment, ConfigMap or Service changed or deleted by hand: its owner applies it again.
      if (election.leader) queue.add(key(kind, ns, name));
    },
  });

  /** Requeues the EventSources and Triggers that name a bus that appeared, changed or went. */
  function enqueueUsers(kind: "EventBus" | "ClusterEventBus", bus: RawObject): void {
    const name = bus.metadata?.name;
    for (const userKind of ["EventSource", "Trigger"] as const) {
      for (const o of watch.list(userKind)) {
        if (o.spec?.["eventBus"] !== name) continue;
        if (kind === "EventBus" && o.metadata?.namespace !== bus.metadata?.namespace) continue;
        queue.add(keyOf(userKind, o));
      }
    }
  }

  function enqueueAll(): void {
    for (const kind of KIND_NAMES) for (const o of watch.list(kind)) queue.add(keyOf(kind, o));
  }

  /**
   * Queues the EventSources that are gone but left RBAC objects or sink bindings (deleted while no
   * controller led): their reconcile finds them gone and removes what they left.
   */
  async function enqueueLeftBehind(): Promise<void> {
    const known = new Set<string>();
    for (const o of watch.list("EventSource")) {
      const name = o.metadata?.name ?? "";
      known.add(`${o.metadata?.namespace}/${name}`).add(`${o.metadata?.namespace}/${labelValue(name)}`);
    }
    for (const left of await eventSourcesNamedByLeftovers(api, watched)) {
      if (known.has(`${left.namespace}/${left.name}`) || !election.leader) continue;
      logger.info({ eventSource: `${left.namespace}/${left.name}` }, "removing what a deleted EventSource left behind");
      queue.add(key("EventSource", left.namespace, left.name));
    }
  }

  const reconciler: ReconcileInput = { api, logger, options, listBuses: (kind) => watch.list(kind) };
  async function work(): Promise<void> {
    for (;;) {
      const k = await queue.next(stopping.signal);
      if (k === undefined) return;
      if (!election.leader) continue;
      const kind = k.slice(0, k.indexOf("/")) as Kind;
      try {
        metrics.count(kind, await reconcile(reconciler, k));
        queue.forget(k);
      } catch (err) {
        metrics.count(kind, "error");
        logger.warn({ err, key: k }, "reconcile failed: requeued");
        queue.addRateLimited(k);
      }
    }
  }

  try {
    await watch.start();
  } catch (err) {
    stopped = true;
    await servers.close();
    throw err;
  }
  synced = true;
  election.start();
  const worker = work();
  logger.info(
    { identity: election.identity, group: API_GROUP, namespaces: watched ?? "all", healthPort },
    "controller started",
  );

  return {
    isLeader: () => election.leader,
    healthPort,
    metricsPort,
    metricsText: () => metrics.text(),
    async stop() {
      if (stopped) return;
      stopped = true;
      await election.stop();
      stopping.abort();
      queue.close();
      await worker;
      await watch.stop();
      await election.resign();
      await servers.close();
    },
  };
}
