/**
 * The reconcile loop (STYLE item 19): informers on the four kinds feed a work queue keyed by
 * `kind/namespace/name`; the Lease holder takes keys off it and runs read → validate → render
 * (pure) → apply (server-side apply) → prune → status. A bad spec becomes a `Ready: False`
 * condition; an API failure requeues the key with exponential backoff.
 */
import { request as httpsRequest, type RequestOptions } from "node:https";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { readFileSync } from "node:fs";
import {
  KubeConfig as KubeConfigClass,
  makeInformer,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
} from "@kubernetes/client-node";
import {
  API_GROUP,
  API_VERSION,
  type AnyEventBus,
  type ClusterEventBus,
  type EventBus,
  type Logger,
} from "@ofevents/core";
import { renderEventBus } from "./eventbus/render.js";
import { validateEventBus } from "./eventbus/validate.js";
import { renderEventSource } from "./eventsource/render.js";
import { validateEventSource } from "./eventsource/validate.js";
import { MANAGED_BY, MANAGED_BY_LABEL, kindLabel, labelValue } from "./labels.js";
import type { ControllerOptions } from "./options.js";
import { resolveOptions } from "./options.js";
import { renderTrigger } from "./trigger/render.js";
import { validateTrigger } from "./trigger/validate.js";
import type { BusCatalog } from "./validation.js";
import { Reason } from "./conditions.js";

export const FIELD_MANAGER = "ofevents-controller";
export const LEASE_NAME = "ofevents-controller";

const KINDS = {
  EventSource: { plural: "eventsources", namespaced: true },
  Trigger: { plural: "triggers", namespaced: true },
  EventBus: { plural: "eventbuses", namespaced: true },
  ClusterEventBus: { plural: "clustereventbuses", namespaced: false },
} as const;
type Kind = keyof typeof KINDS;

/** Where each kind the controller renders lives (for apply and prune). */
const OWNED: Record<string, { prefix: string; plural: string }> = {
  "v1/ConfigMap": { prefix: "/api/v1", plural: "configmaps" },
  "v1/Service": { prefix: "/api/v1", plural: "services" },
  "apps/v1/Deployment": { prefix: "/apis/apps/v1", plural: "deployments" },
  "keda.sh/v1alpha1/ScaledObject": { prefix: "/apis/keda.sh/v1alpha1", plural: "scaledobjects" },
  "keda.sh/v1alpha1/TriggerAuthentication": { prefix: "/apis/keda.sh/v1alpha1", plural: "triggerauthentications" },
  "core.openfunction.io/v1beta1/Function": { prefix: "/apis/core.openfunction.io/v1beta1", plural: "functions" },
  "dapr.io/v1alpha1/Component": { prefix: "/apis/dapr.io/v1alpha1", plural: "components" },
  "dapr.io/v1alpha1/Resiliency": { prefix: "/apis/dapr.io/v1alpha1", plural: "resiliencies" },
};

export interface LeaderElectionOptions {
  /** Lease name (default `ofevents-controller`). */
  leaseName?: string | undefined;
  /** This replica's identity (default hostname + random suffix). */
  identity?: string | undefined;
  /** Seconds a lease stays valid without renewal (default 15). */
  leaseDurationSeconds?: number | undefined;
  /** How often to renew or try to acquire (default 2000 ms). */
  retryPeriodMs?: number | undefined;
}

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

/** The controller's metrics (docs/metrics.md lists each). */
export const CONTROLLER_METRICS = {
  reconciles: {
    name: "ofevents_controller_reconciles_total",
    type: "counter",
    help: "Reconciles by kind and result (success: applied and Ready True or a bus status written; invalid: Ready False; error: an API failure, requeued with backoff).",
  },
  errors: {
    name: "ofevents_controller_reconcile_errors_total",
    type: "counter",
    help: "Reconciles that failed on an API error, by kind (requeued with backoff).",
  },
  depth: {
    name: "ofevents_controller_workqueue_depth",
    type: "gauge",
    help: "Keys waiting in the work queue (not counting those waiting out a backoff).",
  },
  leader: {
    name: "ofevents_controller_leader",
    type: "gauge",
    help: "1 while this replica holds the Lease and reconciles, 0 on standby.",
  },
  informersSynced: {
    name: "ofevents_controller_informers_synced",
    type: "gauge",
    help: "1 once every informer has listed its objects, else 0.",
  },
} as const;

/** The result label of `ofevents_controller_reconciles_total`. */
export type ReconcileResult = "success" | "invalid" | "error";

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

interface RawObject extends KubernetesObject {
  spec?: Record<string, unknown>;
  status?: { conditions?: StatusCondition[]; observedGeneration?: number } & Record<string, unknown>;
}

interface StatusCondition {
  type: "Ready";
  status: "True" | "False";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

/**
 * The kubeconfig at `path`, else the default one (`$KUBECONFIG`, `~/.kube/config`, or the
 * in-cluster ServiceAccount).
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfigClass();
  if (path === undefined) kc.loadFromDefault();
  else kc.loadFromFile(path);
  return kc;
}

/** The namespace the controller runs in: `$POD_NAMESPACE`, the in-cluster one, else `default`. */
export function ownNamespace(): string {
  const env = process.env["POD_NAMESPACE"];
  if (env !== undefined && env !== "") return env;
  try {
    return readFileSync("/var/run/secrets/kubernetes.io/serviceaccount/namespace", "utf8").trim() || "default";
  } catch {
    return "default";
  }
}

/** A failed API request (`status` is the HTTP status). */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

/** Raw requests with the kubeconfig's credentials. */
class Api {
  constructor(private readonly kc: KubeConfig) {}

  async request(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<unknown> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new KubeApiError(0, "kubeconfig has no current cluster");
    const url = new URL(path, cluster.server);
    const opts: RequestOptions = { method, headers: { accept: "application/json" } };
    await this.kc.applyToHTTPSOptions(opts);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers = opts.headers as Record<string, string>;
    if (text !== undefined) headers["content-type"] = contentType;
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    return await new Promise<unknown>((resolve, reject) => {
      const req = send(url, { ...opts, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const out = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          let json: unknown;
          try {
            json = out === "" ? undefined : JSON.parse(out);
          } catch {
            json = undefined;
          }
          if (status >= 200 && status < 300) resolve(json);
          else {
            const msg = (json as { message?: string } | undefined)?.message ?? out;
            reject(new KubeApiError(status, `${method} ${path}: ${status} ${msg}`));
          }
        });
      });
      req.on("timeout", () => req.destroy(new KubeApiError(0, `${method} ${path}: timed out`)));
      req.on("error", reject);
      if (text !== undefined) req.write(text);
      req.end();
    });
  }
}

/** The work-queue key of a resource: `kind/namespace/name` (namespace empty when cluster-scoped). */
function key(kind: string, namespace: string | undefined, name: string | undefined): string {
  return `${kind}/${namespace ?? ""}/${name ?? ""}`;
}

function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
}

function kindPath(kind: Kind, namespace?: string, name?: string): string {
  const k = KINDS[kind];
  const ns = k.namespaced && namespace !== undefined ? `/namespaces/${namespace}` : "";
  return `/apis/${API_VERSION}${ns}/${k.plural}${name === undefined ? "" : `/${name}`}`;
}

function objectPath(o: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }): string {
  const t = OWNED[`${o.apiVersion}/${o.kind}`];
  if (!t) throw new KubeApiError(0, `no API path known for ${o.apiVersion} ${o.kind}`);
  const ns = o.metadata.namespace === undefined ? "" : `/namespaces/${o.metadata.namespace}`;
  return `${t.prefix}${ns}/${t.plural}/${o.metadata.name}`;
}

/** A queue of keys: deduplicated, served one at a time, with per-key exponential backoff. */
class WorkQueue {
  readonly #queued = new Set<string>();
  readonly #order: string[] = [];
  readonly #failures = new Map<string, number>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #wake: (() => void) | undefined;

  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
  ) {}

  add(key: string): void {
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#order.push(key);
    this.#wake?.();
  }

  addRateLimited(key: string): void {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    const delay = Math.min(this.baseMs * 2 ** n, this.maxMs);
    const t = setTimeout(() => {
      this.#timers.delete(t);
      this.add(key);
    }, delay);
    this.#timers.add(t);
  }

  /** Keys waiting to be served. */
  get depth(): number {
    return this.#order.length;
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** The next key, or undefined once `signal` aborts. */
  async next(signal: AbortSignal): Promise<string | undefined> {
    while (!signal.aborted) {
      const key = this.#order.shift();
      if (key !== undefined) {
        this.#queued.delete(key);
        return key;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
      this.#wake = undefined;
    }
    return undefined;
  }

  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#wake?.();
  }
}

function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
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
  const leaseName = le.leaseName ?? LEASE_NAME;
  const identity = le.identity ?? `${hostname()}-${randomBytes(4).toString("hex")}`;
  const leaseSeconds = le.leaseDurationSeconds ?? 15;
  const retryMs = le.retryPeriodMs ?? 2_000;
  const api = new Api(kubeConfig);
  const queue = new WorkQueue(input.backoff?.baseMs ?? 200, input.backoff?.maxMs ?? 60_000);
  const stopping = new AbortController();
  let leader = false;
  let stopped = false;
  let synced = false;
  const watched = input.namespaces === undefined || input.namespaces.length === 0 ? undefined : [...input.namespaces];
  const reconciles = new Map<string, number>();
  const errors = new Map<string, number>();
  for (const kind of Object.keys(KINDS)) {
    for (const result of ["success", "invalid", "error"] as const) reconciles.set(`${kind}\0${result}`, 0);
    errors.set(kind, 0);
  }
  function count(kind: string, result: ReconcileResult): void {
    const k = `${kind}\0${result}`;
    reconciles.set(k, (reconciles.get(k) ?? 0) + 1);
    if (result === "error") errors.set(kind, (errors.get(kind) ?? 0) + 1);
  }

  function metricsText(): string {
    const m = CONTROLLER_METRICS;
    const head = (d: { name: string; type: string; help: string }): string =>
      `# HELP ${d.name} ${d.help}\n# TYPE ${d.name} ${d.type}\n`;
    let out = head(m.reconciles);
    for (const [k, v] of reconciles) {
      const [kind, result] = k.split("\0");
      out += `${m.reconciles.name}{kind="${kind}",result="${result}"} ${v}\n`;
    }
    out += head(m.errors);
    for (const [kind, v] of errors) out += `${m.errors.name}{kind="${kind}"} ${v}\n`;
    out += `${head(m.depth)}${m.depth.name} ${queue.depth}\n`;
    out += `${head(m.leader)}${m.leader.name} ${leader ? 1 : 0}\n`;
    out += `${head(m.informersSynced)}${m.informersSynced.name} ${synced ? 1 : 0}\n`;
    return out;
  }

  function handle(req: IncomingMessage, res: ServerResponse, metricsOnly: boolean): void {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
    } else if (path === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(metricsText());
    } else if (metricsOnly) {
      res.writeHead(404).end();
    } else if (path === "/healthz") {
      res.writeHead(stopped ? 503 : 200, { "content-type": "text/plain" }).end(stopped ? "stopping\n" : "ok\n");
    } else if (path === "/readyz") {
      // Ready once the informers listed their objects; the body says whether it reconciles.
      const ok = synced && !stopped;
      const body = !ok ? "informers not synced\n" : leader ? "ready: leader\n" : "ready: standby\n";
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(body);
    } else {
      res.writeHead(404).end();
    }
  }

  const servers: Server[] = [];
  async function listen(at: { port: number; host?: string | undefined }, metricsOnly: boolean): Promise<number> {
    const srv = createServer((req, res) => handle(req, res, metricsOnly));
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(at.port, at.host ?? "0.0.0.0", () => {
        srv.off("error", reject);
        resolve();
      });
    });
    servers.push(srv);
    return (srv.address() as AddressInfo).port;
  }
  async function closeServers(): Promise<void> {
    await Promise.all(
      servers.map(
        (srv) =>
          new Promise<void>((resolve) => {
            srv.close(() => resolve());
            srv.closeAllConnections();
          }),
      ),
    );
  }
  let healthPort: number | undefined;
  let metricsPort: number | undefined;
  try {
    if (input.health !== undefined) healthPort = await listen(input.health, false);
    if (input.metrics !== undefined) metricsPort = await listen(input.metrics, true);
  } catch (err) {
    await closeServers();
    throw err;
  }

  /** An informer that fails is started again after `retryMs`, until the controller stops. */
  function restartOnError(inf: Informer<RawObject>, what: Record<string, string>): void {
    inf.on("error", (err: unknown) => {
      if (stopped) return;
      logger.warn({ err, ...what }, "informer failed: restarting");
      setTimeout(() => {
        if (!stopped) inf.start().catch((e: unknown) => logger.warn({ err: e, ...what }, "informer restart failed"));
      }, retryMs);
    });
  }

  // One informer per kind, or per kind and watched namespace (ClusterEventBuses: one).
  const informers = {} as Record<Kind, Array<Informer<RawObject> & ObjectCache<RawObject>>>;
  for (const kind of Object.keys(KINDS) as Kind[]) {
    informers[kind] = [];
    const scopes = KINDS[kind].namespaced && watched !== undefined ? watched : [undefined];
    for (const scope of scopes) {
      const path = kindPath(kind, scope);
      const inf = makeInformer<RawObject>(
        kubeConfig,
        path,
        async () => (await api.request("GET", path)) as KubernetesListObject<RawObject>,
      );
      const onObject = (o: RawObject): void => {
        if (!leader) return;
        queue.add(keyOf(kind, o));
        if (kind === "EventBus" || kind === "ClusterEventBus") enqueueUsers(kind, o);
      };
      inf.on("add", onObject);
      inf.on("update", onObject);
      inf.on("delete", onObject);
      restartOnError(inf, { kind, ...(scope === undefined ? {} : { namespace: scope }) });
      informers[kind].push(inf);
    }
  }
  const list = (kind: Kind): RawObject[] => informers[kind].flatMap((inf) => inf.list());

  // What it owns, for the kinds every cluster has: a Deployment, ConfigMap or Service that is
  // changed or deleted by hand re-queues its owner, which applies it again.
  const ownedInformers: Array<Informer<RawObject>> = [];
  const ownedPaths = [
    ["/apis/apps/v1", "deployments"],
    ["/api/v1", "configmaps"],
    ["/api/v1", "services"],
  ].flatMap(([prefix, plural]) =>
    watched === undefined ? [`${prefix}/${plural}`] : watched.map((ns) => `${prefix}/namespaces/${ns}/${plural}`),
  );
  for (const path of ownedPaths) {
    const selector = `${MANAGED_BY_LABEL}=${MANAGED_BY}`;
    const inf = makeInformer<RawObject>(
      kubeConfig,
      path,
      async () =>
        (await api.request(
          "GET",
          `${path}?labelSelector=${encodeURIComponent(selector)}`,
        )) as KubernetesListObject<RawObject>,
      selector,
    );
    const onOwned = (o: RawObject): void => {
      if (!leader) return;
      for (const ref of o.metadata?.ownerReferences ?? []) {
        if (ref.controller !== true || !(ref.kind in KINDS)) continue;
        const kind = ref.kind as Kind;
        queue.add(key(kind, KINDS[kind].namespaced ? o.metadata?.namespace : undefined, ref.name));
      }
    };
    inf.on("update", onOwned);
    inf.on("delete", onOwned);
    restartOnError(inf, { path });
    ownedInformers.push(inf);
  }

  function keyOf(kind: Kind, o: RawObject): string {
    return key(kind, o.metadata?.namespace, o.metadata?.name);
  }

  /** Requeues the EventSources and Triggers that name a bus that appeared, changed or went. */
  function enqueueUsers(kind: "EventBus" | "ClusterEventBus", bus: RawObject): void {
    const name = bus.metadata?.name;
    for (const userKind of ["EventSource", "Trigger"] as const) {
      for (const o of list(userKind)) {
        if (o.spec?.["eventBus"] !== name) continue;
        if (kind === "EventBus" && o.metadata?.namespace !== bus.metadata?.namespace) continue;
        queue.add(keyOf(userKind, o));
      }
    }
  }

  function enqueueAll(): void {
    for (const kind of Object.keys(KINDS) as Kind[]) for (const o of list(kind)) queue.add(keyOf(kind, o));
  }

  function catalog(): BusCatalog {
    const parse = (raw: RawObject): AnyEventBus | undefined => validateEventBus(raw, { options }).resource;
    return {
      eventBuses: list("EventBus")
        .map(parse)
        .filter((b): b is EventBus => b?.kind === "EventBus"),
      clusterEventBuses: list("ClusterEventBus")
        .map(parse)
        .filter((b): b is ClusterEventBus => b?.kind === "ClusterEventBus"),
    };
  }

  async function writeStatus(
    kind: Kind,
    raw: RawObject,
    cond: { status: "True" | "False"; reason: string; message: string },
  ): Promise<void> {
    const generation = raw.metadata?.generation;
    const prev = raw.status?.conditions?.find((c) => c.type === "Ready");
    const same =
      prev !== undefined &&
      prev.status === cond.status &&
      prev.reason === cond.reason &&
      prev.message === cond.message &&
      prev.observedGeneration === generation &&
      raw.status?.observedGeneration === generation;
    if (same) return;
    const condition: StatusCondition = {
      type: "Ready",
      ...cond,
      lastTransitionTime:
        prev !== undefined && prev.status === cond.status ? prev.lastTransitionTime : new Date().toISOString(),
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    };
    await api.request(
      "PATCH",
      `${kindPath(kind, raw.metadata?.namespace, raw.metadata?.name)}/status`,
      { status: { conditions: [condition], ...(generation === undefined ? {} : { observedGeneration: generation }) } },
      "application/merge-patch+json",
    );
  }

  /**
   * Server-side applies `objects` with strict field validation (a field the installed CRD does not
   * know fails the reconcile instead of being dropped), then deletes what `owner` owns by label
   * and no longer renders.
   */
  async function applyAndPrune(
    ownerKind: Kind,
    ownerName: string,
    namespace: string,
    objects: readonly { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }[],
  ): Promise<void> {
    const wanted = new Set<string>();
    for (const o of objects) {
      await api.request(
        "PATCH",
        `${objectPath(o)}?fieldManager=${FIELD_MANAGER}&force=true&fieldValidation=Strict`,
        o,
        "application/apply-patch+yaml",
      );
      wanted.add(`${o.apiVersion}/${o.kind}/${o.metadata.name}`);
    }
    const selector = encodeURIComponent(
      `${MANAGED_BY_LABEL}=${MANAGED_BY},${kindLabel(ownerKind)}=${labelValue(ownerName)}`,
    );
    for (const [type, t] of Object.entries(OWNED)) {
      let list: { items?: { metadata: { name: string } }[] };
      try {
        list = (await api.request(
          "GET",
          `${t.prefix}/namespaces/${namespace}/${t.plural}?labelSelector=${selector}`,
        )) as typeof list;
      } catch (err) {
        if (isStatus(err, 404)) continue; // that kind's CRD is not installed
        throw err;
      }
      for (const item of list.items ?? []) {
        if (wanted.has(`${type}/${item.metadata.name}`)) continue;
        try {
          await api.request("DELETE", `${t.prefix}/namespaces/${namespace}/${t.plural}/${item.metadata.name}`);
          logger.info({ type, name: item.metadata.name, namespace }, "pruned");
        } catch (err) {
          if (!isStatus(err, 404)) throw err;
        }
      }
    }
  }

  /**
   * {@link applyAndPrune}; when the API server refuses a rendered object (400, 404: its kind is
   * not installed, 422: strict field validation, a value of the wrong type), `Ready` says so
   * before the error requeues the key (a CRD installed or upgraded later is picked up).
   */
  async function applyOrReport(
    kind: Kind,
    raw: RawObject,
    name: string,
    namespace: string,
    objects: Parameters<typeof applyAndPrune>[3],
  ): Promise<void> {
    try {
      await applyAndPrune(kind, name, namespace, objects);
    } catch (err) {
      // Server-side apply answers 500 "failed to create typed patch object" for a value of the
      // wrong type (the CRD's schema, not the server, is at fault): a refusal like a 422.
      const refused =
        err instanceof KubeApiError &&
        ([400, 404, 422].includes(err.status) ||
          (err.status === 500 && err.message.includes("failed to create typed patch object")));
      if (refused) {
        await writeStatus(kind, raw, {
          status: "False",
          reason: Reason.RenderRejected,
          message:
            err.status === 404
              ? `the API server does not serve a kind the controller renders (is its CRD installed?): ${err.message.trim()}`
              : `the API server refused a rendered object: ${err.message.trim()}`,
        });
      }
      throw err;
    }
  }

  /** Reconciles one key; "success" also for an object that is gone (nothing to do). */
  async function reconcile(key: string): Promise<Exclude<ReconcileResult, "error">> {
    const [kindText, ns, name] = key.split("/") as [Kind, string, string];
    const kind = kindText;
    let raw: RawObject;
    try {
      raw = (await api.request("GET", kindPath(kind, ns === "" ? undefined : ns, name))) as RawObject;
    } catch (err) {
      // Gone: owner references and the garbage collector remove what it created.
      if (isStatus(err, 404)) return "success";
      throw err;
    }
    if (raw.metadata?.deletionTimestamp !== undefined) return "success";
    if (kind === "EventBus" || kind === "ClusterEventBus") {
      const v = validateEventBus(raw, { options });
      if (v.ok && kind === "EventBus") {
        await applyOrReport(kind, raw, name, ns, renderEventBus({ bus: v.resource, options }));
      }
      await writeStatus(kind, raw, v.condition);
      return v.ok ? "success" : "invalid";
    }
    const ctx = { buses: catalog(), options };
    if (kind === "EventSource") {
      const v = validateEventSource(raw, ctx);
      if (v.ok) {
        const r = renderEventSource({ eventSource: v.resource, bus: v.bus, options });
        await applyOrReport(kind, raw, name, ns, r.objects);
      }
      await writeStatus(kind, raw, v.condition);
      return v.ok ? "success" : "invalid";
    } else {
      const v = validateTrigger(raw, ctx);
      if (v.ok) {
        const r = renderTrigger({ trigger: v.resource, bus: v.bus, options });
        await applyOrReport(kind, raw, name, ns, r.objects);
      }
      await writeStatus(kind, raw, v.condition);
      return v.ok ? "success" : "invalid";
    }
  }

  async function work(): Promise<void> {
    for (;;) {
      const key = await queue.next(stopping.signal);
      if (key === undefined) return;
      if (!leader) continue;
      const kind = key.slice(0, key.indexOf("/"));
      try {
        count(kind, await reconcile(key));
        queue.forget(key);
      } catch (err) {
        count(kind, "error");
        logger.warn({ err, key }, "reconcile failed: requeued");
        queue.addRateLimited(key);
      }
    }
  }

  // Leader election, as client-go's: create or take over an expired Lease, renew while held.
  const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${leaseName}`;
  async function tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = (await api.request("GET", leasePath)) as Lease;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: leaseSeconds,
      renewTime: microTime(now),
    };
    if (lease === undefined) {
      await api.request("POST", `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: leaseName, namespace },
        spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return true;
    }
    const holder = lease.spec.holderIdentity ?? "";
    const renewed = Date.parse(lease.spec.renewTime ?? lease.spec.acquireTime ?? "") || 0;
    const expired = renewed + (lease.spec.leaseDurationSeconds ?? leaseSeconds) * 1000 < now.getTime();
    if (holder !== identity && holder !== "" && !expired) return false;
    const takeover = holder !== identity;
    await api.request("PUT", leasePath, {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: lease.metadata,
      spec: {
        ...lease.spec,
        ...spec,
        ...(takeover ? { acquireTime: microTime(now), leaseTransitions: (lease.spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    });
    return true;
  }

  async function release(): Promise<void> {
    try {
      const lease = (await api.request("GET", leasePath)) as Lease;
      if (lease.spec.holderIdentity !== identity) return;
      await api.request("PUT", leasePath, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: lease.metadata,
        spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
      });
    } catch (err) {
      logger.warn({ err }, "releasing the lease failed");
    }
  }

  let electionTimer: NodeJS.Timeout | undefined;
  let electing: Promise<void> = Promise.resolve();
  async function elect(): Promise<void> {
    let held: boolean;
    try {
      held = await tryAcquireOrRenew();
    } catch (err) {
      // A conflict means another replica wrote first; any failure counts as not holding it.
      if (!isStatus(err, 409)) logger.warn({ err }, "lease update failed");
      held = false;
    }
    if (stopped) return;
    if (held && !leader) {
      leader = true;
      logger.info({ identity, lease: `${namespace}/${leaseName}` }, "acquired the lease: reconciling");
      enqueueAll();
    } else if (!held && leader) {
      leader = false;
      logger.warn({ identity }, "lost the lease: passive");
    }
    electionTimer = setTimeout(() => {
      electing = elect();
    }, retryMs);
  }

  try {
    for (const kind of Object.keys(KINDS) as Kind[]) for (const inf of informers[kind]) await inf.start();
    for (const inf of ownedInformers) await inf.start();
  } catch (err) {
    stopped = true;
    await closeServers();
    throw err;
  }
  synced = true;
  electing = elect();
  const worker = work();
  logger.info({ identity, group: API_GROUP, namespaces: watched ?? "all", healthPort }, "controller started");

  return {
    isLeader: () => leader,
    healthPort,
    metricsPort,
    metricsText,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(electionTimer);
      await electing;
      clearTimeout(electionTimer);
      stopping.abort();
      queue.close();
      await worker;
      for (const kind of Object.keys(KINDS) as Kind[]) for (const inf of informers[kind]) await inf.stop();
      for (const inf of ownedInformers) await inf.stop();
      if (leader) {
        leader = false;
        await release();
      }
      await closeServers();
    },
  };
}
