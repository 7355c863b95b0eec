/**
 * The embedded runner behind `ofevents run`: every EventSource, Trigger and local Function found
 * in the manifests, in one process. An `eventBus` name that no loaded EventBus/ClusterEventBus
 * defines runs on an in-memory bus, and the runner says so.
 */
import {
  MODULE_ANNOTATION,
  ManifestError,
  ceOverridesEnv,
  formatIssue,
  genericEndpoint,
  isSyncFunction,
  namespaceOf,
  startMetricsServer,
  type ExpressionEngine,
  type FunctionResource,
  type Logger,
  type Manifests,
  type Metrics,
  type MetricsServer,
  type Sink,
} from "@ofevents/core";
import type { EventBus } from "@ofevents/eventbus";
import type { EventSourceRuntime } from "@ofevents/eventsource";
import type { TriggerRuntime } from "@ofevents/trigger";
import { isLocalFunction, validateAll } from "./check.js";
import { Journal } from "./journal.js";
import { createComposition, type FlowObserver } from "./compose.js";
import { FlowStats } from "./flow.js";
import { startFunctionHost, type FunctionHost } from "./functions.js";
import { startUi, type Listener, type UiServer } from "./ui.js";

export interface EmbeddedOptions {
  paths: string[];
  logger: Logger;
  /** Address webhooks and sync functions bind to (default 127.0.0.1). */
  host?: string | undefined;
  /** Port of the sync function host (default 8080; 0 picks a free one). */
  functionsPort?: number | undefined;
  /** Serve `GET /metrics` (Prometheus text format) on this port of `host` (0 picks a free one). */
  metricsPort?: number | undefined;
  /** Where the runtimes' metrics go (default: a new registry). */
  metrics?: Metrics | undefined;
  /** Serve the live page and its API (`ofevents tail`) on this port of `host` (0 picks a free one). */
  uiPort?: number | undefined;
  /** When `uiPort` is taken, serve the page on a free port instead of failing (run's default port). */
  uiFallback?: boolean | undefined;
  /** Import the Functions' modules anew, as this version (`run --watch` after a change). */
  moduleVersion?: number | undefined;
  /**
   * How long shutdown waits for the in-memory bus to finish what it took before it reports the
   * rest (default 10 s; with the triggers' own grace, shutdown stays within Kubernetes' 30 s).
   */
  drainTimeoutMs?: number | undefined;
  /**
   * What compiles and evaluates the Triggers' expressions (default: the JSONata engine of
   * `createExpressionEngine`). The manifests are checked with the JSONata engine either way.
   */
  engine?: ExpressionEngine | undefined;
}

export interface Embedded {
  manifests: Manifests;
  buses: Map<string, EventBus>;
  sources: EventSourceRuntime[];
  triggers: TriggerRuntime[];
  functions: FunctionHost;
  metrics: Metrics;
  /** The port serving /metrics (and the journal, /events), when `metricsPort` was given. */
  metricsPort: number | undefined;
  /** What happened to each of the latest events (`ofevents events <id>`), with `metricsPort` or `uiPort`. */
  journal: Journal | undefined;
  /** The live page, when `uiPort` was given. */
  ui: UiServer | undefined;
  /** What listens where: webhooks, sync functions, metrics, the page. */
  listeners(): Listener[];
  /** Events of the sources that do not run now (still connecting, or not supported), with why. */
  notRunning(): Array<{ eventSource: string; event: string; reason: string }>;
  stop(): Promise<void>;
}

export async function startEmbedded(o: EmbeddedOptions): Promise<Embedded> {
  const log = o.logger.child({ component: "runner" });
  const { manifests, issues, warnings } = await validateAll(o.paths, { mode: "run" });
  if (issues.length > 0) throw new ManifestError(issues);
  for (const w of warnings) log.warn(formatIssue(w));
  for (const s of manifests.skipped)
    log.debug({ file: s.file, doc: s.docIndex, kind: s.kind, name: s.name }, "skipped a kind this runner does not run");
  for (const f of manifests.ignoredFiles)
    log.debug({ file: f.file, reason: f.reason }, "skipped a file that is not a manifest");
  const remote = manifests.functions.filter((f) => !isLocalFunction(f.resource));
  if (remote.length > 0)
    log.info(
      { functions: remote.map((f) => `${namespaceOf(f.resource)}/${f.resource.metadata.name}`) },
      `Function${remote.length === 1 ? "" : "s"} without ${MODULE_ANNOTATION}: deployed elsewhere, not run here`,
    );
  const host = o.host ?? "127.0.0.1";
  // Kept only where it can be read: it is served on the metrics port and the page.
  const journal = o.metricsPort === undefined && o.uiPort === undefined ? undefined : new Journal();
  const stats = o.uiPort === undefined ? undefined : new FlowStats();
  const observers: FlowObserver[] = [journal, stats].filter((x) => x !== undefined);
  const c = createComposition({
    manifests,
    logger: o.logger,
    host,
    peers: "here",
    metrics: o.metrics,
    processMetrics: o.metricsPort !== undefined,
    drainTimeoutMs: o.drainTimeoutMs,
    observers,
    engine: o.engine,
  });
  const { metrics, buses, sources, triggers, busFor } = c;
  let functions: FunctionHost | undefined;
  let metricsServer: MetricsServer | undefined;
  let ui: UiServer | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await ui?.close();
      await c.stop();
      await metricsServer?.close();
    })());
  const runtimes = new Map<string, EventSourceRuntime>();
  const listeners = (): Listener[] => {
    const l: Listener[] = [];
    for (const { resource: es } of manifests.eventSources)
      for (const [event, spec] of Object.entries(es.spec.webhook ?? {}))
        l.push({
          what: `webhook ${namespaceOf(es)}/${es.metadata.name}/${event} (${spec.method ?? "POST"})`,
          url: `http://${host}:${spec.port}${spec.endpoint ?? "/"}`,
        });
    // A generic event's ingest URL: what a process gets as K_SINK on a cluster.
    for (const { resource: es } of manifests.eventSources)
      for (const [event, spec] of Object.entries(es.spec.generic ?? {})) {
        const { port, path } = genericEndpoint(event, spec);
        const overrides = ceOverridesEnv(spec);
        l.push({
          what: `generic ${namespaceOf(es)}/${es.metadata.name}/${event} (K_SINK${overrides === undefined ? "" : `; K_CE_OVERRIDES='${overrides}'`})`,
          url: `http://${host}:${port}${path}`,
        });
      }
    for (const { resource: f } of manifests.functions)
      if (functions !== undefined && isLocalFunction(f) && isSyncFunction(f))
        l.push({
          what: `function ${namespaceOf(f)}/${f.metadata.name}`,
          url: functions.urlOf(namespaceOf(f), f.metadata.name),
        });
    if (metricsServer !== undefined) l.push({ what: "metrics", url: `http://${host}:${metricsServer.port}/metrics` });
    if (ui !== undefined) l.push({ what: "live page", url: ui.url });
    return l;
  };

  try {
    // Buses for functions: by component name when it names a bus, else "default".
    const fnBuses = new Map<FunctionResource, Map<string | undefined, EventBus>>();
    for (const f of manifests.functions) {
      const m = new Map<string | undefined, EventBus>();
      const ns = namespaceOf(f.resource);
      for (const input of f.resource.spec.serving?.inputs ?? []) {
        m.set(input.component, await busFor(input.component ?? "default", ns));
      }
      if (!m.has(undefined)) m.set(undefined, await busFor("default", ns));
      fnBuses.set(f.resource, m);
    }
    functions = await startFunctionHost({
      functions: manifests.functions.filter((f) => isLocalFunction(f.resource)),
      elsewhere: remote,
      serveUnreachable: needsUnreachable(manifests),
      busFor: (fn, component) => fnBuses.get(fn)!.get(component) ?? fnBuses.get(fn)!.get(undefined)!,
      logger: o.logger,
      host,
      port: o.functionsPort ?? 8080,
      moduleVersion: o.moduleVersion,
    });
    const fh = functions;
    c.stopBeforeBuses(() => fh.stop());
    // uri wins over ref (OpenFunction's rule); a ref `run` cannot call resolves to an address of
    // the function host that answers 404 with the reason, so it fails when used, not at start.
    const resolveSink = (sink: Sink, namespace: string): string =>
      sink.uri ?? fh.urlOf(sink.ref!.namespace ?? namespace, sink.ref!.name, sink.ref!.kind);

    // Triggers subscribe before the sources publish: a new consumer group starts with what comes next.
    for (const t of manifests.triggers) await c.startTrigger(t.resource, resolveSink);
    for (const es of manifests.eventSources)
      runtimes.set(
        `${namespaceOf(es.resource)}/${es.resource.metadata.name}`,
        await c.startEventSource(es.resource, resolveSink),
      );
    if (o.metricsPort !== undefined)
      metricsServer = await startMetricsServer(metrics, {
        port: o.metricsPort,
        host,
        also: (req, res) => journal!.serve(req, res),
      });
    if (o.uiPort !== undefined)
      ui = await startUi({
        manifests,
        stats: stats!,
        journal: journal!,
        logger: o.logger,
        host,
        port: o.uiPort,
        fallback: o.uiFallback,
        busFor,
        busKey: c.busKey,
        source: (ns, name) => runtimes.get(`${ns}/${name}`),
        resolveSink,
        listeners,
      });
  } catch (err) {
    await stop();
    throw err;
  }
  const notRunning = (): Array<{ eventSource: string; event: string; reason: string }> =>
    sources.flatMap((s) => s.notRunning().map((n) => ({ eventSource: s.name, ...n })));
  for (const n of notRunning())
    log.warn(n, "event source not running yet: retried in the background (see the lines above)");
  log.info(
    {
      eventSources: sources.length,
      triggers: triggers.length,
      functions: manifests.functions.length,
      buses: [...buses.keys()],
      ...(metricsServer === undefined
        ? {}
        : {
            metrics: `http://${host}:${metricsServer.port}/metrics`,
            journal: `http://${host}:${metricsServer.port}/events/<id>`,
          }),
      ...(ui === undefined ? {} : { page: ui.url }),
    },
    "running",
  );
  return {
    manifests,
    buses,
    sources,
    triggers,
    functions,
    metrics,
    metricsPort: metricsServer?.port,
    journal,
    ui,
    listeners,
    notRunning,
    stop,
  };
}

/** Whether a sink names, by ref and without a uri, something other than a local sync Function. */
function needsUnreachable(m: Manifests): boolean {
  const local = new Set(
    m.functions
      .filter((f) => isLocalFunction(f.resource) && isSyncFunction(f.resource))
      .map((f) => `${namespaceOf(f.resource)}/${f.resource.metadata.name}`),
  );
  const cannot = (sink: Sink | undefined, ns: string): boolean =>
    sink?.ref !== undefined &&
    sink.uri === undefined &&
    (sink.ref.kind !== "Function" || !local.has(`${sink.ref.namespace ?? ns}/${sink.ref.name}`));
  return (
    m.eventSources.some((e) => cannot(e.resource.spec.sink, namespaceOf(e.resource))) ||
    m.triggers.some((t) =>
      t.resource.spec.subscribers.some(
        (s) => cannot(s.sink, namespaceOf(t.resource)) || cannot(s.deadLetterSink, namespaceOf(t.resource)),
      ),
    )
  );
}
