/**
 * The kubernetes source: watches one resource (group/version and a plural resource or a kind
 * found by discovery) in one namespace or all, with label and field selectors, and turns each
 * ADDED / MODIFIED / DELETED into an event whose data is the object or a JSONata projection of
 * `{type, object}`. The event id is `{uid}/{resourceVersion}`.
 *
 * Events are dispatched one at a time, in watch order. The resume state (the last
 * resourceVersion, plus uid → resourceVersion of every object accounted for) advances only after
 * dispatch resolved, and is saved (coalesced) to a ConfigMap or a file when `state` says where.
 * A restart resumes the watch from the saved resourceVersion. When the API server answers
 * `410 Gone` (the version was compacted away), the source lists the objects and compares them
 * with what it already accounted for: an object whose resourceVersion is unchanged is not sent
 * again, a new one is ADDED, a changed one MODIFIED, and an object that disappeared during the
 * gap gets a synthesized DELETED (metadata only, extension `k8ssynthetic: true`). A dispatch that
 * fails stops the watch; it restarts, after a backoff, from the last resourceVersion dispatched.
 */
import { readFile, rename, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest, type RequestOptions } from "node:https";
import type { IncomingMessage } from "node:http";
import { StringDecoder } from "node:string_decoder";
import { KubeConfig } from "@kubernetes/client-node";
import {
  ErrorCode,
  OfEventsError,
  SourceError,
  SourceKind,
  backoffDelay,
  createExpressionEngine,
  sleep,
  type CompiledExpression,
  type KubernetesSourceSpec,
  type ValidationIssue,
} from "@ofevents/core";
import type { Dispatch, RunningSource, SourceAdapter, SourceContext } from "../types.js";

type EventType = "ADDED" | "MODIFIED" | "DELETED";
const ALL_TYPES: readonly EventType[] = ["ADDED", "MODIFIED", "DELETED"];

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { uid?: string; name?: string; namespace?: string; resourceVersion?: string } & Record<string, unknown>;
  [key: string]: unknown;
}

/** What the source has accounted for (sent, or deliberately not sent because of `eventTypes`). */
export interface ResumeState {
  resourceVersion: string;
  /** uid → [resourceVersion, namespace, name] */
  objects: Record<string, [string, string, string]>;
}

/** Where the resume state lives. */
export interface StateStore {
  readonly where: string;
  load(): Promise<ResumeState | undefined>;
  save(state: ResumeState): Promise<void>;
}

/** The watched collection, as discovery describes it. */
export interface WatchTarget {
  /** `/api/v1` or `/apis/{group}/{version}`. */
  base: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  apiVersion: string;
}

const RETRY = { policy: "exponential", delayMs: 500, maxDelayMs: 30_000 } as const;
/** A watch request ends after this long (the API server's own timeout); it is then resumed. */
const WATCH_TIMEOUT_S = 290;

class KubeRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "KubeRequestError";
  }
}

/** Raw JSON requests and streams with a kubeconfig's credentials. */
export class KubeClient {
  constructor(readonly kc: KubeConfig) {}

  static load(path?: string): KubeClient {
    const kc = new KubeConfig();
    if (path === undefined) kc.loadFromDefault();
    else kc.loadFromFile(path);
    return new KubeClient(kc);
  }

  private async open(method: string, path: string, body?: string, contentType?: string, signal?: AbortSignal) {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new OfEventsError(ErrorCode.Config, "kubeconfig has no current cluster");
    const url = new URL(path, cluster.server);
    const opts: RequestOptions = { method, headers: { accept: "application/json" } };
    await this.kc.applyToHTTPSOptions(opts);
    const headers = opts.headers as Record<string, string>;
    if (body !== undefined) headers["content-type"] = contentType ?? "application/json";
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { ...opts, ...(signal === undefined ? {} : { signal }) }, resolve);
      req.on("error", reject);
      req.end(body);
    });
  }

  /** Resolves with the parsed answer; rejects with a KubeRequestError on a non-2xx status. */
  async json(method: string, path: string, body?: unknown, contentType?: string): Promise<unknown> {
    const res = await this.open(method, path, body === undefined ? undefined : JSON.stringify(body), contentType);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300)
      throw new KubeRequestError(status, `${method} ${path}: ${status} ${text.trim()}`);
    return text === "" ? undefined : (JSON.parse(text) as unknown);
  }

  /** Opens a watch; rejects with a KubeRequestError on a non-2xx status. */
  async stream(path: string, signal: AbortSignal): Promise<IncomingMessage> {
    const res = await this.open("GET", path, undefined, undefined, signal);
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      throw new KubeRequestError(status, `GET ${path}: ${status} ${Buffer.concat(chunks).toString("utf8").trim()}`);
    }
    return res;
  }
}

/** Finds the collection of `spec` by discovery (`/api/v1` or `/apis/{group}/{version}`). */
export async function resolveTarget(client: KubeClient, spec: KubernetesSourceSpec): Promise<WatchTarget> {
  const group = spec.group ?? "";
  const base = group === "" ? `/api/${spec.version}` : `/apis/${group}/${spec.version}`;
  let list: { resources?: Array<{ name: string; kind: string; namespaced: boolean; verbs?: string[] }> };
  try {
    list = (await client.json("GET", base)) as typeof list;
  } catch (err) {
    // An API not (yet) served, e.g. a CRD not installed: worth retrying.
    throw new SourceError(ErrorCode.SourceStart, `discovery of ${base}: ${(err as Error).message}`, "kubernetes", {
      cause: err,
    });
  }
  const found = (list.resources ?? []).find(
    (r) => !r.name.includes("/") && (spec.resource !== undefined ? r.name === spec.resource : r.kind === spec.kind),
  );
  if (found === undefined) {
    throw new SourceError(
      ErrorCode.SourceStart,
      `${base} serves no ${spec.resource !== undefined ? `resource "${spec.resource}"` : `kind "${spec.kind}"`}`,
      "kubernetes",
    );
  }
  if (!(found.verbs ?? ["list", "watch"]).includes("watch"))
    throw new OfEventsError(ErrorCode.Config, `${base}/${found.name} cannot be watched`);
  const namespace = spec.namespace ?? "";
  if (namespace !== "" && !found.namespaced)
    throw new OfEventsError(ErrorCode.Config, `${found.name} is cluster-scoped: leave namespace empty`);
  return {
    base,
    plural: found.name,
    kind: found.kind,
    namespaced: found.namespaced,
    apiVersion: group === "" ? spec.version : `${group}/${spec.version}`,
  };
}

/** The ConfigMap key of one event's state: `{eventSource}.{event}` with other characters as `-`. */
export function stateKey(eventSource: string, event: string): string {
  return `${eventSource}.${event}`.replace(/[^-._a-zA-Z0-9]/g, "-");
}

/** Resume state in a local JSON file, replaced atomically (write then rename). */
export function fileStore(path: string): StateStore {
  return {
    where: `file ${path}`,
    async load() {
      try {
        return parseState(await readFile(path, "utf8"));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    },
    async save(state) {
      const tmp = `${path}.tmp-${process.pid}`;
      await writeFile(tmp, JSON.stringify(state));
      await rename(tmp, path);
    },
  };
}

/**
 * Resume state under one key of a ConfigMap (created when missing); a JSON merge patch touches
 * only that key, so several events can share the ConfigMap.
 */
export function configMapStore(client: KubeClient, namespace: string, name: string, key: string): StateStore {
  const path = `/api/v1/namespaces/${namespace}/configmaps/${name}`;
  return {
    where: `ConfigMap ${namespace}/${name} key ${key}`,
    async load() {
      try {
        const cm = (await client.json("GET", path)) as { data?: Record<string, string> };
        const text = cm.data?.[key];
        return text === undefined ? undefined : parseState(text);
      } catch (err) {
        if (err instanceof KubeRequestError && err.status === 404) return undefined;
        throw err;
      }
    },
    async save(state) {
      const data = { [key]: JSON.stringify(state) };
      try {
        await client.json("PATCH", path, { data }, "application/merge-patch+json");
      } catch (err) {
        if (!(err instanceof KubeRequestError && err.status === 404)) throw err;
        await client.json("POST", `/api/v1/namespaces/${namespace}/configmaps`, {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name, namespace },
          data,
        });
      }
    },
  };
}

function parseState(text: string): ResumeState | undefined {
  const v = JSON.parse(text) as Partial<ResumeState>;
  if (typeof v.resourceVersion !== "string" || typeof v.objects !== "object" || v.objects === null) return undefined;
  return { resourceVersion: v.resourceVersion, objects: v.objects };
}

/** The query of a list or watch of the collection. */
export function collectionQuery(spec: KubernetesSourceSpec, extra: Record<string, string>): string {
  const q = new URLSearchParams();
  if (spec.filter?.labels !== undefined && spec.filter.labels !== "") q.set("labelSelector", spec.filter.labels);
  if (spec.filter?.fields !== undefined && spec.filter.fields !== "") q.set("fieldSelector", spec.filter.fields);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  const s = q.toString();
  return s === "" ? "" : `?${s}`;
}

const engine = createExpressionEngine();

/**
 * The lines of a stream, read on demand: the stream's own iterator pulls the next chunk only
 * when the lines of the previous one were consumed, so a slow dispatch holds back the watch
 * (TCP backpressure) instead of buffering it in memory.
 */
export async function* linesOf(stream: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  // A decoder keeps a character split across two chunks whole.
  const decoder = new StringDecoder("utf8");
  let rest = "";
  for await (const chunk of stream) {
    rest += typeof chunk === "string" ? chunk : decoder.write(chunk);
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      yield line;
    }
  }
  rest += decoder.end();
  if (rest !== "") yield rest;
}

export const kubernetesAdapter: SourceAdapter<KubernetesSourceSpec> = {
  kind: SourceKind.Kubernetes,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    if ((spec.resource === undefined) === (spec.kind === undefined))
      issues.push({ code: "invalid_value", path: "resource", message: "set resource or kind (one of them)" });
    if (spec.projection !== undefined) {
      for (const i of engine.validateTransform(spec.projection))
        issues.push({ code: "invalid_value", path: "projection", message: i.message });
    }
    if (spec.state !== undefined && (spec.state.configMap === undefined) === (spec.state.file === undefined))
      issues.push({ code: "invalid_value", path: "state", message: "set configMap or file" });
    return issues;
  },

  async start(ctx: SourceContext, spec: KubernetesSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const log = ctx.logger;
    let client: KubeClient;
    try {
      client = KubeClient.load(spec.kubeconfig);
    } catch (err) {
      throw new OfEventsError(ErrorCode.Config, `kubeconfig: ${(err as Error).message}`, { cause: err });
    }
    const target = await resolveTarget(client, spec);
    const namespace = target.namespaced ? (spec.namespace ?? "") : "";
    const collection = `${target.base}${namespace === "" ? "" : `/namespaces/${namespace}`}/${target.plural}`;
    const types = new Set<EventType>(spec.eventTypes ?? ALL_TYPES);
    const projection: CompiledExpression | undefined =
      spec.projection === undefined ? undefined : engine.compile(spec.projection);
    const store: StateStore | undefined =
      spec.state?.configMap !== undefined
        ? configMapStore(client, ctx.namespace, spec.state.configMap, stateKey(ctx.eventSource, ctx.eventName))
        : spec.state?.file !== undefined
          ? fileStore(spec.state.file)
          : undefined;

    const objects = new Map<string, [string, string, string]>();
    let resourceVersion: string | undefined;
    // A first start takes its snapshot before start resolves, so what changes afterwards is watched.
    let snapshot: { items: KubeObject[]; resourceVersion: string } | undefined;
    try {
      const stored = await store?.load();
      for (const [uid, o] of Object.entries(stored?.objects ?? {})) objects.set(uid, o);
      resourceVersion = stored?.resourceVersion;
      if (resourceVersion === undefined) snapshot = await list();
      // Resuming: one small list, so missing access fails the start as it does on a first start.
      else await client.json("GET", collection + collectionQuery(spec, { limit: "1" }));
    } catch (err) {
      // The API server busy or failing: retried; refused (401, 403, 404...): a configuration error.
      if (err instanceof KubeRequestError && (err.status >= 500 || err.status === 429 || err.status === 0))
        throw new SourceError(ErrorCode.SourceStart, err.message, "kubernetes", { cause: err });
      throw err;
    }
    log.info(
      { collection, resumeFrom: resourceVersion, state: store?.where ?? "none" },
      resourceVersion === undefined ? "kubernetes source listed" : "kubernetes source resumes",
    );

    // Saves are coalesced: at most one in flight, the latest state is written after it.
    let saving: Promise<void> | undefined;
    let dirty = false;
    const save = (): void => {
      if (store === undefined || resourceVersion === undefined) return;
      dirty = true;
      if (saving !== undefined) return;
      saving = (async () => {
        while (dirty) {
          dirty = false;
          const state: ResumeState = { resourceVersion: resourceVersion!, objects: Object.fromEntries(objects) };
          try {
            await store.save(state);
          } catch (err) {
            log.warn({ err, state: store.where }, "resume state not saved; a restart may send events again");
          }
        }
      })().finally(() => (saving = undefined));
    };

    async function list(): Promise<{ items: KubeObject[]; resourceVersion: string }> {
      const items: KubeObject[] = [];
      let cont: string | undefined;
      let rv = "";
      for (let page = 0; page < 100_000; page++) {
        const res = (await client.json(
          "GET",
          collection + collectionQuery(spec, { limit: "500", ...(cont === undefined ? {} : { continue: cont }) }),
        )) as { items?: KubeObject[]; metadata?: { resourceVersion?: string; continue?: string } };
        for (const o of res.items ?? []) items.push({ apiVersion: target.apiVersion, kind: target.kind, ...o });
        rv = res.metadata?.resourceVersion ?? rv;
        cont = res.metadata?.continue;
        if (cont === undefined || cont === "") break;
      }
      return { items, resourceVersion: rv };
    }

    /** Dispatches one change (when its type is wanted) and records it; rejects when dispatch did. */
    async function emit(type: EventType, obj: KubeObject, id: string, synthetic = false): Promise<void> {
      const md = obj.metadata ?? {};
      const uid = md.uid ?? "";
      if (types.has(type)) {
        let data: unknown = obj;
        let send = true;
        if (projection !== undefined) {
          try {
            data = await projection.evaluate({ type, object: obj });
            send = data !== undefined;
          } catch (err) {
            send = false;
            log.warn({ err, id }, "projection failed; event skipped");
          }
        }
        if (send) {
          const subject = md.namespace === undefined || md.namespace === "" ? md.name : `${md.namespace}/${md.name}`;
          await dispatch({
            id,
            subject,
            data,
            datacontenttype: "application/json",
            extensions: { k8seventtype: type, ...(synthetic ? { k8ssynthetic: true } : {}) },
          });
        }
      }
      if (type === "DELETED") objects.delete(uid);
      else objects.set(uid, [md.resourceVersion ?? "", md.namespace ?? "", md.name ?? ""]);
    }

    /** Sends what a list shows that was not accounted for; then resumes from the list's version. */
    async function sync(snap: { items: KubeObject[]; resourceVersion: string }, firstStart: boolean): Promise<void> {
      const seen = new Set<string>();
      for (const obj of snap.items) {
        if (ctx.signal.aborted) return;
        const uid = obj.metadata?.uid ?? "";
        const rv = obj.metadata?.resourceVersion ?? "";
        seen.add(uid);
        const known = objects.get(uid);
        if (known?.[0] === rv) continue;
        if (firstStart && spec.filter?.afterStart === true) {
          objects.set(uid, [rv, obj.metadata?.namespace ?? "", obj.metadata?.name ?? ""]);
          continue;
        }
        await emit(known === undefined ? "ADDED" : "MODIFIED", obj, `${uid}/${rv}`);
        save();
      }
      for (const [uid, [rv, ns, name]] of [...objects]) {
        if (ctx.signal.aborted) return;
        if (seen.has(uid)) continue;
        // Deleted while the watch was away: its last state is gone, so metadata only.
        const gone: KubeObject = {
          apiVersion: target.apiVersion,
          kind: target.kind,
          metadata: { uid, name, ...(ns === "" ? {} : { namespace: ns }), resourceVersion: rv },
        };
        await emit("DELETED", gone, `${uid}/${snap.resourceVersion}`, true);
        save();
      }
      resourceVersion = snap.resourceVersion;
      save();
    }

    /** One watch request from `resourceVersion` until it ends; "gone" when the version expired. */
    async function watchOnce(signal: AbortSignal): Promise<"ended" | "gone"> {
      const query = collectionQuery(spec, {
        watch: "1",
        allowWatchBookmarks: "true",
        timeoutSeconds: String(WATCH_TIMEOUT_S),
        resourceVersion: resourceVersion!,
      });
      let res: IncomingMessage;
      try {
        res = await client.stream(collection + query, signal);
      } catch (err) {
        if (err instanceof KubeRequestError && err.status === 410) return "gone";
        throw err;
      }
      try {
        // One line at a time: the next is read only after this one's dispatch resolved.
        for await (const line of linesOf(res)) {
          if (line.trim() === "") continue;
          const ev = JSON.parse(line) as { type: string; object: KubeObject & { code?: number } };
          if (ev.type === "ERROR") {
            if (ev.object.code === 410) return "gone";
            throw new KubeRequestError(ev.object.code ?? 0, `watch error: ${JSON.stringify(ev.object)}`);
          }
          const rv = ev.object.metadata?.resourceVersion;
          if (ev.type === "BOOKMARK") {
            if (rv !== undefined) resourceVersion = rv;
            save();
            continue;
          }
          if (ev.type !== "ADDED" && ev.type !== "MODIFIED" && ev.type !== "DELETED") continue;
          const uid = ev.object.metadata?.uid ?? "";
          // Replayed after a restart or a failed dispatch: already accounted for.
          if (ev.type !== "DELETED" && objects.get(uid)?.[0] === rv) {
            resourceVersion = rv;
            continue;
          }
          // The set of objects is complete from the first list on, so an unknown uid was deleted already.
          if (ev.type === "DELETED" && !objects.has(uid)) {
            if (rv !== undefined) resourceVersion = rv;
            continue;
          }
          await emit(ev.type, ev.object, `${uid}/${rv ?? ""}`);
          if (rv !== undefined) resourceVersion = rv;
          save();
        }
        return "ended";
      } finally {
        res.destroy();
      }
    }

    const abort = new AbortController();
    const onStop = (): void => abort.abort();
    ctx.signal.addEventListener("abort", onStop, { once: true });

    async function run(): Promise<void> {
      let failures = 0;
      let first = snapshot !== undefined;
      while (!abort.signal.aborted) {
        try {
          if (snapshot !== undefined) {
            await sync(snapshot, first);
            snapshot = undefined;
            first = false;
          }
          const outcome = await watchOnce(abort.signal);
          failures = 0;
          if (outcome === "gone") {
            log.info({ collection, resourceVersion }, "resourceVersion expired (410 Gone); relisting");
            snapshot = await list();
          }
        } catch (err) {
          if (abort.signal.aborted) break;
          failures++;
          const delayMs = backoffDelay(failures, RETRY);
          log.warn({ err, collection, resourceVersion, retryInMs: delayMs }, "kubernetes watch interrupted; resuming");
          try {
            await sleep(delayMs, abort.signal);
          } catch {
            break;
          }
          // A failure during a relist's sync: list again rather than resume from the old version.
          if (snapshot !== undefined) snapshot = undefined;
          if (resourceVersion === undefined) {
            try {
              snapshot = await list();
            } catch {
              // Retried on the next turn.
            }
          }
        }
      }
    }
    const loop = run();

    return {
      async stop() {
        abort.abort();
        ctx.signal.removeEventListener("abort", onStop);
        await loop;
        while (saving !== undefined) await saving;
      },
    };
  },
};
