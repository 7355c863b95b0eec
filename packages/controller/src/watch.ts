/**
 * The informers: one per watched kind (per watched namespace when the controller is limited to
 * some), and one per kind it renders that every cluster has (Deployments, Jobs, ConfigMaps,
 * Services), so that a change by hand to what it owns, or a Job that ran, brings its owner back to
 * the queue.
 */
import {
  makeInformer,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type ObjectCache,
} from "@kubernetes/client-node";
import type { Logger } from "@ofevents/core";
import type { KubeApi } from "./kube/api.js";
import { MANAGED_BY, MANAGED_BY_LABEL } from "./labels.js";
import { KINDS, KIND_NAMES, kindPath, type Kind, type RawObject } from "./resources.js";

export interface WatchInput {
  kubeConfig: KubeConfig;
  api: KubeApi;
  logger: Logger;
  /** Namespaces watched, or undefined for all. */
  namespaces: readonly string[] | undefined;
  /** How long after a failure an informer starts again. */
  retryMs: number;
  /** Whether the controller stopped: a failed informer then stays stopped. */
  stopped: () => boolean;
  /** A watched resource was added, changed or deleted. */
  onObject: (kind: Kind, o: RawObject) => void;
  /** An object it owns, of `ownerKind` named `ownerName` in `namespace`, was changed or deleted. */
  onOwned: (ownerKind: Kind, namespace: string | undefined, ownerName: string) => void;
}

export interface Watch {
  /** The cached objects of a kind, across the watched namespaces. */
  list(kind: Kind): RawObject[];
  /** Resolves once every informer listed its objects. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function watchResources(w: WatchInput): Watch {
  /** An informer that fails is started again after `retryMs`, until the controller stops. */
  function restartOnError(inf: Informer<RawObject>, what: Record<string, string>): void {
    inf.on("error", (err: unknown) => {
      if (w.stopped()) return;
      w.logger.warn({ err, ...what }, "informer failed: restarting");
      setTimeout(() => {
        if (!w.stopped())
          inf.start().catch((e: unknown) => w.logger.warn({ err: e, ...what }, "informer restart failed"));
      }, w.retryMs);
    });
  }

  const informers = {} as Record<Kind, Array<Informer<RawObject> & ObjectCache<RawObject>>>;
  for (const kind of KIND_NAMES) {
    informers[kind] = [];
    const scopes = KINDS[kind].namespaced && w.namespaces !== undefined ? w.namespaces : [undefined];
    for (const scope of scopes) {
      const path = kindPath(kind, scope);
      const inf = makeInformer<RawObject>(
        w.kubeConfig,
        path,
        async () => (await w.api.request("GET", path)) as KubernetesListObject<RawObject>,
      );
      const onObject = (o: RawObject): void => w.onObject(kind, o);
      inf.on("add", onObject);
      inf.on("update", onObject);
      inf.on("delete", onObject);
      restartOnError(inf, { kind, ...(scope === undefined ? {} : { namespace: scope }) });
      informers[kind].push(inf);
    }
  }

  const owned: Array<Informer<RawObject>> = [];
  const ownedPaths = [
    ["/apis/apps/v1", "deployments"],
    ["/apis/batch/v1", "jobs"],
    ["/api/v1", "configmaps"],
    ["/api/v1", "services"],
  ].flatMap(([prefix, plural]) =>
    w.namespaces === undefined
      ? [`${prefix}/${plural}`]
      : w.namespaces.map((ns) => `${prefix}/namespaces/${ns}/${plural}`),
  );
  for (const path of ownedPaths) {
    const selector = `${MANAGED_BY_LABEL}=${MANAGED_BY}`;
    const inf = makeInformer<RawObject>(
      w.kubeConfig,
      path,
      async () =>
        (await w.api.request(
          "GET",
          `${path}?labelSelector=${encodeURIComponent(selector)}`,
        )) as KubernetesListObject<RawObject>,
      selector,
    );
    const onOwned = (o: RawObject): void => {
      for (const ref of o.metadata?.ownerReferences ?? []) {
        if (ref.controller !== true || !(ref.kind in KINDS)) continue;
        const kind = ref.kind as Kind;
        w.onOwned(kind, KINDS[kind].namespaced ? o.metadata?.namespace : undefined, ref.name);
      }
    };
    inf.on("update", onOwned);
    inf.on("delete", onOwned);
    restartOnError(inf, { path });
    owned.push(inf);
  }

  return {
    list: (kind) => informers[kind].flatMap((inf) => inf.list()),
    async start() {
      for (const kind of KIND_NAMES) for (const inf of informers[kind]) await inf.start();
      for (const inf of owned) await inf.start();
    },
    async stop() {
      for (const kind of KIND_NAMES) for (const inf of informers[kind]) await inf.stop();
      for (const inf of owned) await inf.stop();
    },
  };
}
