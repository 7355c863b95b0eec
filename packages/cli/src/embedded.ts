/**
 * The embedded runner behind `ofevents run`: every EventSource, Trigger and local Function found
 * in the manifests, in one process. An `eventBus` name that no loaded EventBus/ClusterEventBus
 * defines runs on an in-memory bus, and the runner says so.
 */
import {
  ErrorCode,
  ManifestError,
  OfEventsError,
  createExpressionEngine,
  createInstrumentation,
  createMetrics,
  createSecretResolver,
  createSinkClient,
  formatIssue,
  loadManifests,
  namespaceOf,
  resolveEventBus,
  startMetricsServer,
  type FunctionResource,
  type Logger,
  type Manifests,
  type Metrics,
  type MetricsServer,
  type Sink,
  type ValidationIssue,
} from "@ofevents/core";
import { createEventBus, type EventBus } from "@ofevents/eventbus";
import {
  createWebhookServers,
  startEventSource,
  validateEventSource,
  type EventSourceRuntime,
  type SourceEvents,
} from "@ofevents/eventsource";
import { startTrigger, type TriggerEvents, type TriggerRuntime } from "@ofevents/trigger";
import { startFunctionHost, type FunctionHost } from "./functions.js";

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
}

export interface Embedded {
  manifests: Manifests;
  buses: Map<string, EventBus>;
  sources: EventSourceRuntime[];
  triggers: TriggerRuntime[];
  functions: FunctionHost;
  metrics: Metrics;
  /** The port serving /metrics, when `metricsPort` was given. */
  metricsPort: number | undefined;
  stop(): Promise<void>;
}

/** Loads and checks manifests, including adapter-level checks; returns every issue. */
export async function validateAll(
  paths: string[],
): Promise<{ manifests: Manifests; issues: ValidationIssue[]; warnings: ValidationIssue[] }> {
  const manifests = await loadManifests(paths);
  const issues = [...manifests.issues];
  const warnings = [...manifests.warnings];
  for (const es of manifests.eventSources) {
    for (const i of await validateEventSource(es.resource)) {
      issues.push({
        ...i,
        file: es.file,
        line: es.line,
        docIndex: es.docIndex,
        kind: es.resource.kind,
        name: es.resource.metadata.name,
      });
    }
  }
  return { manifests, issues, warnings };
}

export async function startEmbedded(o: EmbeddedOptions): Promise<Embedded> {
  const log = o.logger.child({ component: "runner" });
  const { manifests, issues, warnings } = await validateAll(o.paths);
  if (issues.length > 0) throw new ManifestError(issues);
  for (const w of warnings) log.warn(formatIssue(w));
  for (const s of manifests.skipped)
    log.debug({ file: s.file, doc: s.docIndex, kind: s.kind, name: s.name }, "skipped a kind this runner does not run");
  for (const f of manifests.ignoredFiles)
    log.debug({ file: f.file, reason: f.reason }, "skipped a file that is not a manifest");
  const host = o.host ?? "127.0.0.1";
  const secrets = createSecretResolver(manifests.secrets.map((s) => s.resource));
  const engine = createExpressionEngine();
  const sinks = createSinkClient();
  const webhooks = createWebhookServers({ host, logger: o.logger });
  const buses = new Map<string, EventBus>();
  const sources: EventSourceRuntime[] = [];
  const triggers: TriggerRuntime[] = [];
  let functions: FunctionHost | undefined;
  const metrics = o.metrics ?? createMetrics(undefined, { processMetrics: o.metricsPort !== undefined });
  let metricsServer: MetricsServer | undefined;

  const busLists = {
    eventBuses: manifests.eventBuses.map((b) => b.resource),
    clusterEventBuses: manifests.clusterEventBuses.map((b) => b.resource),
  };
  async function busFor(name: string, namespace: string): Promise<EventBus> {
    const r = resolveEventBus(name, namespace, busLists);
    let bus = buses.get(r.key);
    if (bus !== undefined) return bus;
    if (r.resource === undefined) log.info({ eventBus: name }, `no EventBus "${name}" loaded: using an in-memory bus`);
    if (r.warning !== undefined) log.warn({ eventBus: name }, r.warning);
    bus = await createEventBus(r.spec, { logger: o.logger, secrets, namespace });
    metrics.observeBus(bus.events, { bus: r.key, driver: bus.driver });
    buses.set(r.key, bus);
    return bus;
  }

  const stop = async (): Promise<void> => {
    // Sources first (no new events), then triggers (return pending, finish in-flight), then functions.
    await Promise.allSettled(sources.map((s) => s.stop()));
    await webhooks.close();
    await Promise.allSettled(triggers.map((t) => t.stop()));
    await functions?.stop();
    await Promise.allSettled([...buses.values()].map((b) => b.close()));
    await sinks.close();
    await metricsServer?.close();
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
      functions: manifests.functions,
      busFor: (fn, component) => fnBuses.get(fn)!.get(component) ?? fnBuses.get(fn)!.get(undefined)!,
      logger: o.logger,
      host,
      port: o.functionsPort ?? 8080,
    });
    const fh = functions;
    const resolveSink = (sink: Sink, namespace: string): string => {
      if (sink.uri !== undefined) return sink.uri;
      const ref = sink.ref!;
      if (ref.kind === "Function") {
        const url = fh.urlOf(ref.namespace ?? namespace, ref.name);
        if (url !== undefined) return url;
      }
      throw new OfEventsError(
        ErrorCode.Config,
        `sink.ref ${ref.kind} ${ref.namespace ?? namespace}/${ref.name}: only local sync Functions can be referenced off Kubernetes (or use sink.uri)`,
      );
    };

    for (const t of manifests.triggers) {
      const bus = await busFor(t.resource.spec.eventBus, namespaceOf(t.resource));
      // Observed before it starts, so no event goes uncounted.
      const instrumentation = createInstrumentation<TriggerEvents>();
      metrics.observeTrigger(instrumentation, {
        namespace: namespaceOf(t.resource),
        trigger: t.resource.metadata.name,
      });
      triggers.push(
        await startTrigger(t.resource, { bus, logger: o.logger, engine, sinks, resolveSink, instrumentation }),
      );
    }
    for (const es of manifests.eventSources) {
      const r = es.resource;
      const bus =
        r.spec.sink === undefined && r.spec.eventBus !== undefined
          ? await busFor(r.spec.eventBus, namespaceOf(r))
          : undefined;
      const instrumentation = createInstrumentation<SourceEvents>();
      metrics.observeSource(instrumentation, { namespace: namespaceOf(r), eventSource: r.metadata.name });
      sources.push(
        await startEventSource(r, { logger: o.logger, bus, sinks, resolveSink, secrets, webhooks, instrumentation }),
      );
    }
    if (o.metricsPort !== undefined) metricsServer = await startMetricsServer(metrics, { port: o.metricsPort, host });
  } catch (err) {
    await stop();
    throw err;
  }
  log.info(
    {
      eventSources: sources.length,
      triggers: triggers.length,
      functions: manifests.functions.length,
      buses: [...buses.keys()],
      ...(metricsServer === undefined ? {} : { metrics: `http://${host}:${metricsServer.port}/metrics` }),
    },
    "running",
  );
  return { manifests, buses, sources, triggers, functions, metrics, metricsPort: metricsServer?.port, stop };
}
