/**
 * The composition root of the runtimes, shared by `ofevents run` (every resource in one process)
 * and the entrypoints `ofevents eventsource` / `ofevents trigger` (one resource, its peers in other
 * processes). Decided here and nowhere else: what a resource's `eventBus` name means, how the
 * metrics observe buses and runtimes, and the order in which things start and stop.
 */
import type { Server } from "node:http";
import {
  ErrorCode,
  OfEventsError,
  createExpressionEngine,
  createInstrumentation,
  type Instrumentation,
  createMetrics,
  createSecretResolver,
  daprTopicName,
  namespaceOf,
  resolveEventBus,
  resourceLogger,
  type EventSource,
  type ExpressionEngine,
  type Logger,
  type Manifests,
  type Metrics,
  type ResolvedBus,
  type SecretResolver,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient } from "@ofevents/delivery";
import { createEventBus, createJetStreamTopicPreparer, type EventBus } from "@ofevents/eventbus";
import {
  createWebhookServers,
  startEventSource,
  type EventSourceRuntime,
  type SourceEvents,
} from "@ofevents/eventsource";
import { startTrigger, type TriggerEvents, type TriggerRuntime } from "@ofevents/trigger";

/**
 * How the entrypoints reach a bus: `direct` (the broker's own client), `dapr` (through the
 * sidecar), or `auto`: Dapr when the sidecar's variables DAPR_HTTP_PORT / DAPR_GRPC_PORT are set
 * or the bus is a generic `dapr` one.
 */
export interface BusAccess {
  driver?: "auto" | "direct" | "dapr" | undefined;
  /** Dapr pub/sub component name (default: the bus's name, as the controller renders it). */
  pubsubName?: string | undefined;
  /** How long to wait for the sidecar, ms (default 60,000). */
  sidecarTimeoutMs?: number | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

export interface CompositionOptions {
  manifests: Manifests;
  logger: Logger;
  /** Address webhooks bind to. */
  host: string;
  /**
   * Where the publishers and subscribers of the buses run, which decides what a bus name can mean
   * (see {@link Composition.busFor}): `here` for `ofevents run`, `elsewhere` for an entrypoint.
   */
  peers: "here" | "elsewhere";
  /** With peers elsewhere: how to reach the bus. */
  busAccess?: BusAccess | undefined;
  /** Where the runtimes' and buses' metrics go (default: a new registry). */
  metrics?: Metrics | undefined;
  /** Whether a registry made here carries the process's own metrics (heap, CPU, ...). */
  processMetrics: boolean;
  /** How long shutdown waits for an in-memory bus to finish what it took (default 10 s). */
  drainTimeoutMs?: number | undefined;
  /** Watch what happens to each event from its first one on (`ofevents run`: the journal, the live page). */
  observers?: FlowObserver[] | undefined;
  /** What compiles and evaluates the Triggers' expressions (default: the JSONata engine of `createExpressionEngine`). */
  engine?: ExpressionEngine | undefined;
}

type ResolveSink = (sink: Sink, namespace: string) => string;

/** Something that watches the instrumentation events of every source and trigger started. */
export interface FlowObserver {
  observeSource(resource: EventSource, events: Instrumentation<SourceEvents>): void;
  observeTrigger(resource: Trigger, events: Instrumentation<TriggerEvents>): void;
}

export interface Composition {
  readonly metrics: Metrics;
  /** The buses opened so far, by resolved key (`EventBus:ns/name`, `ClusterEventBus:/name`, `memory:name`). */
  readonly buses: Map<string, EventBus>;
  readonly sources: EventSourceRuntime[];
  readonly triggers: TriggerRuntime[];
  /**
   * The bus a resource in `namespace` means by `name`, opened once per key. A namespaced EventBus
   * wins over a ClusterEventBus. A name no loaded bus defines is an in-memory bus when the peers
   * run here (nothing outside the process needs to reach it), and a configuration error when they
   * run elsewhere (an in-memory bus would reach none of them). A `memory` bus with peers elsewhere
   * and a `dapr` bus with peers here (no sidecar) are configuration errors too.
   */
  busFor(name: string, namespace: string): Promise<EventBus>;
  /** The key of the bus `name` means in `namespace` (as in {@link buses}), without opening it. */
  busKey(name: string, namespace: string): string;
  /** Starts a Trigger on its bus, observed by the metrics before it takes its first event. */
  startTrigger(resource: Trigger, resolveSink: ResolveSink): Promise<TriggerRuntime>;
  /** Starts an EventSource (on its bus, if it names one), observed before its first event. */
  startEventSource(resource: EventSource, resolveSink: ResolveSink): Promise<EventSourceRuntime>;
  /** Adds a step that stops after the runtimes and before the buses (something that uses them). */
  stopBeforeBuses(step: () => Promise<void>): void;
  /**
   * Stops in one order: webhooks answer 503, the sources finish what they took, an in-memory bus
   * gets a bounded time to finish its events, the triggers return what is pending, then the
   * webhook listeners, the added steps, the buses and the sink client close. Idempotent.
   */
  stop(): Promise<void>;
}

/** Default of {@link CompositionOptions.drainTimeoutMs}. */
const DRAIN_TIMEOUT_MS = 10_000;

/** Default of {@link BusAccess.sidecarTimeoutMs}. */
const SIDECAR_TIMEOUT_MS = 60_000;

interface OpenBus {
  bus: EventBus;
  /** Creates the broker's side of a bus topic ahead of its first use (JetStream through Dapr: its stream). */
  prepareTopic: ((topic: string) => Promise<void>) | undefined;
}

export function createComposition(o: CompositionOptions): Composition {
  const log = o.logger.child({ component: o.peers === "here" ? "runner" : "entrypoint" });
  const { manifests } = o;
  const metrics = o.metrics ?? createMetrics(undefined, { processMetrics: o.processMetrics });
  const secrets = createSecretResolver(manifests.secrets.map((s) => s.resource));
  const engine = o.engine ?? createExpressionEngine();
  const sinks = createSinkClient();
  const webhooks = createWebhookServers({ host: o.host, logger: o.logger });
  const busLists = {
    eventBuses: manifests.eventBuses.map((b) => b.resource),
    clusterEventBuses: manifests.clusterEventBuses.map((b) => b.resource),
  };
  const open = new Map<string, Promise<OpenBus>>();
  const buses = new Map<string, EventBus>();
  const sources: EventSourceRuntime[] = [];
  const triggers: TriggerRuntime[] = [];
  const closers: Array<() => Promise<void>> = [];
  const beforeBuses: Array<() => Promise<void>> = [];

  function openBus(name: string, namespace: string): Promise<OpenBus> {
    const r = resolveEventBus(name, namespace, busLists);
    let p = open.get(r.key);
    if (p === undefined) {
      p = create(name, namespace, r);
      open.set(r.key, p);
      p.catch(() => open.delete(r.key));
    }
    return p;
  }

  async function create(name: string, namespace: string, r: ResolvedBus): Promise<OpenBus> {
    const access = o.peers === "elsewhere" ? (o.busAccess ?? {}) : undefined;
    const opened = await connectBus(name, namespace, r, { peers: o.peers, access, logger: o.logger, log, secrets });
    if (opened.closePreparer !== undefined) closers.push(opened.closePreparer);
    metrics.observeBus(opened.bus.events, { bus: r.key, driver: opened.bus.driver });
    buses.set(r.key, opened.bus);
    return opened;
  }

  const busFor = async (name: string, namespace: string): Promise<EventBus> => (await openBus(name, namespace)).bus;

  async function startTriggerHere(resource: Trigger, resolveSink: ResolveSink): Promise<TriggerRuntime> {
    const namespace = namespaceOf(resource);
    const { bus, prepareTopic } = await openBus(resource.spec.eventBus, namespace);
    // An async function subscribes to the Trigger's output topics through its own daprd, which
    // cannot subscribe to a JetStream topic before its stream exists (it retries, with backoff)
    // and then starts with new messages: without the streams made now, at the first publish,
    // what the Trigger publishes before the function's subscription succeeds never reaches it.
    if (prepareTopic !== undefined) {
      const outputs = resource.spec.subscribers.flatMap((s) => [s.topic, s.deadLetterTopic]);
      for (const topic of new Set(outputs.filter((t): t is string => t !== undefined))) await prepareTopic(topic);
    }
    const instrumentation = createInstrumentation<TriggerEvents>();
    metrics.observeTrigger(instrumentation, { namespace, trigger: resource.metadata.name });
    for (const ob of o.observers ?? []) ob.observeTrigger(resource, instrumentation);
    const rt = await startTrigger(resource, {
      bus,
      logger: resourceLogger(o.logger, resource),
      engine,
      sinks,
      resolveSink,
      instrumentation,
    });
    triggers.push(rt);
    return rt;
  }

  async function startEventSourceHere(resource: EventSource, resolveSink: ResolveSink): Promise<EventSourceRuntime> {
    const namespace = namespaceOf(resource);
    const bus = resource.spec.eventBus === undefined ? undefined : await busFor(resource.spec.eventBus, namespace);
    const instrumentation = createInstrumentation<SourceEvents>();
    metrics.observeSource(instrumentation, { namespace, eventSource: resource.metadata.name });
    for (const ob of o.observers ?? []) ob.observeSource(resource, instrumentation);
    const rt = await startEventSource(resource, {
      logger: resourceLogger(o.logger, resource),
      bus,
      sinks,
      resolveSink,
      secrets,
      webhooks,
      instrumentation,
    });
    sources.push(rt);
    return rt;
  }

  /** Runs steps at once and logs the ones that fail: shutdown goes on past a failing part. */
  const settle = async (steps: Array<() => Promise<unknown>>): Promise<void> => {
    const results = await Promise.allSettled(steps.map((s) => s()));
    for (const r of results) if (r.status === "rejected") log.error({ err: r.reason }, "shutdown step failed");
  };

  let stopping: Promise<void> | undefined;
  const shutdown = async (): Promise<void> => {
    // No new events (webhooks answer 503 + Retry-After), then the sources finish what they took.
    webhooks.stopAccepting();
    await settle(sources.map((s) => () => s.stop()));
    // The in-memory bus keeps nothing: let it finish what it holds, within a bound.
    const memory = [...buses.values()].filter((b) => b.drain !== undefined);
    if (memory.length > 0) {
      const held = (): number => triggers.reduce((n, t) => n + t.pending(), 0);
      const timeoutMs = o.drainTimeoutMs ?? DRAIN_TIMEOUT_MS;
      const drained = await Promise.all(memory.map((b) => b.drain!({ timeoutMs, held })));
      if (drained.includes(false))
        log.warn({ waitedMs: timeoutMs }, "in-memory bus not drained in time: stopping with events unfinished");
    }
    // Triggers return pending events and cut retries short; the buses then report what is left.
    await settle(triggers.map((t) => () => t.stop()));
    await settle([() => webhooks.close()]);
    for (const step of beforeBuses) await settle([step]);
    // A bus still opening is waited for, so that it is closed too.
    await Promise.allSettled(open.values());
    await settle([...buses.values()].map((b) => () => b.close()));
    await settle(closers);
    await settle([() => sinks.close()]);
  };

  return {
    metrics,
    buses,
    sources,
    triggers,
    busFor,
    busKey: (name, namespace) => resolveEventBus(name, namespace, busLists).key,
    startTrigger: startTriggerHere,
    startEventSource: startEventSourceHere,
    stopBeforeBuses: (step) => void beforeBuses.push(step),
    stop: () => (stopping ??= shutdown()),
  };
}

/**
 * Connects the bus `r` resolves `name` to, after {@link refuseUnsupported}. With peers elsewhere
 * it may go through the Dapr sidecar (see {@link BusAccess}); JetStream through Dapr also gets a
 * topic preparer, since Dapr creates no streams.
 */
async function connectBus(
  name: string,
  namespace: string,
  r: ResolvedBus,
  c: {
    peers: "here" | "elsewhere";
    access: BusAccess | undefined;
    logger: Logger;
    log: Logger;
    secrets: SecretResolver;
  },
): Promise<OpenBus & { closePreparer: (() => Promise<void>) | undefined }> {
  refuseUnsupported(name, namespace, r, c.peers);
  if (r.resource === undefined) c.log.info({ eventBus: name }, `no EventBus "${name}" loaded: using an in-memory bus`);
  if (r.warning !== undefined) c.log.warn({ eventBus: name }, r.warning);
  const { access } = c;
  const env = access?.env ?? process.env;
  const sidecar = env["DAPR_HTTP_PORT"] !== undefined || env["DAPR_GRPC_PORT"] !== undefined;
  const driver = access?.driver ?? "auto";
  const viaDapr =
    access !== undefined && (driver === "dapr" || (driver === "auto" && (sidecar || r.spec?.dapr !== undefined)));
  let prepareTopic: OpenBus["prepareTopic"];
  let prepareDaprTopic: ((topic: string) => Promise<void>) | undefined;
  let closePreparer: (() => Promise<void>) | undefined;
  const js = r.spec?.jetstream;
  if (viaDapr && js !== undefined) {
    // The streams the direct driver uses too (same prefix): both paths share topics.
    const creds = js.credentialsSecret === undefined ? undefined : c.secrets.resolve(js.credentialsSecret, namespace);
    const preparer = createJetStreamTopicPreparer(js, c.logger, { creds });
    prepareDaprTopic = (t) => preparer.prepareTopic(t);
    prepareTopic = (t) => preparer.prepareTopic(daprTopicName(r.spec, t));
    closePreparer = () => preparer.close();
  }
  const pubsubName = access?.pubsubName ?? name;
  if (viaDapr) c.log.info({ eventBus: name, pubsubName }, "reaching the bus through the Dapr sidecar");
  try {
    const bus = await createEventBus(r.spec, {
      logger: c.logger,
      secrets: c.secrets,
      namespace,
      ...(viaDapr
        ? {
            via: "dapr" as const,
            dapr: {
              pubsubName,
              prepareTopic: prepareDaprTopic,
              sidecarTimeoutMs: access?.sidecarTimeoutMs ?? SIDECAR_TIMEOUT_MS,
            },
          }
        : {}),
    });
    return { bus, prepareTopic, closePreparer };
  } catch (err) {
    await closePreparer?.();
    throw err;
  }
}

/** The one error for a bus name that cannot serve where the resource's peers run. */
function refuseUnsupported(name: string, namespace: string, r: ResolvedBus, peers: "here" | "elsewhere"): void {
  if (peers === "elsewhere" && r.resource === undefined)
    throw new OfEventsError(
      ErrorCode.Config,
      `EventBus "${name}" is not in the manifests (nor a ClusterEventBus of that name): the resource runs alone, and an in-memory bus would reach none of its peers`,
    );
  if (peers === "elsewhere" && r.spec?.memory !== undefined)
    throw new OfEventsError(
      ErrorCode.Config,
      `${r.resource!.kind} ${busName(r, name, namespace)} is a memory bus, which lives inside one process: the resource runs alone and would reach none of its peers (use jetstream, kafka or dapr, or ofevents run)`,
    );
  if (peers === "here" && r.spec?.dapr !== undefined)
    throw new OfEventsError(
      ErrorCode.Config,
      `${r.resource!.kind} ${busName(r, name, namespace)} is a dapr bus, reached through a Dapr sidecar, which ofevents run does not start (run the resources with ofevents eventsource / trigger beside daprd)`,
    );
}

function busName(r: ResolvedBus, name: string, namespace: string): string {
  return r.resource?.kind === "EventBus" ? `${namespace}/${name}` : name;
}

/** Closes a server and the idle keep-alive connections that would hold it open. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((r) => {
    server.close(() => r());
    server.closeIdleConnections();
  });
}
