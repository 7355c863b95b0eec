/**
 * `ofevents redrive` and `ofevents replay`: the dead letters a trigger kept, delivered again to the
 * subscriber they failed for; a trigger's subscribers fed again with a time range of its inputs
 * (see @ofevents/trigger redrive and replay). The trigger's bus is reached with the broker's own
 * client (reading history needs it); sink refs resolve as the trigger entrypoint resolves them.
 */
import {
  ErrorCode,
  ManifestError,
  OfEventsError,
  createExpressionEngine,
  namespaceOf,
  type ExpressionEngine,
  type Logger,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import type { EventBus } from "@ofevents/eventbus";
import { redrive, replay, type RedriveResult, type ReplayResult } from "@ofevents/trigger";
import { validateAll } from "./check.js";
import { createComposition } from "./compose.js";
import { clusterSinkUrl, pick } from "./single.js";

interface HistoryCommandOptions {
  paths: string[];
  /** `name` or `namespace/name`; required when the files hold several Triggers. */
  trigger?: string | undefined;
  /** A JSONata expression choosing events (checked before anything connects). */
  filter?: string | undefined;
  dryRun?: boolean | undefined;
  logger: Logger;
  signal?: AbortSignal | undefined;
}

export interface RedriveCommandOptions extends HistoryCommandOptions {
  subscriber?: number | undefined;
  limit?: number | undefined;
}

export interface ReplayCommandOptions extends HistoryCommandOptions {
  from: Date;
  to?: Date | undefined;
}

interface TriggerAccess {
  trigger: Trigger;
  bus: EventBus;
  engine: ExpressionEngine;
  sinks: SinkClient;
  resolveSink: (sink: Sink, namespace: string) => string;
}

/** Loads the manifests, picks the trigger, opens its bus (direct driver) and a sink client for `fn`. */
async function withTrigger<T>(
  o: HistoryCommandOptions,
  fn: (a: TriggerAccess) => Promise<T>,
): Promise<T & { trigger: string }> {
  const { manifests, issues } = await validateAll(o.paths, { peersElsewhere: true });
  if (issues.length > 0) throw new ManifestError(issues);
  const trigger = pick(
    "Trigger",
    manifests.triggers.map((t) => t.resource),
    o.trigger,
  );
  const namespace = namespaceOf(trigger);
  const engine = createExpressionEngine();
  if (o.filter !== undefined) {
    try {
      engine.compile(o.filter);
    } catch (err) {
      throw new OfEventsError(ErrorCode.Config, `--filter: ${(err as Error).message}`);
    }
  }
  const c = createComposition({
    manifests,
    logger: o.logger,
    host: "127.0.0.1",
    peers: "elsewhere",
    busAccess: { driver: "direct" },
    processMetrics: false,
  });
  const sinks = createSinkClient();
  try {
    const bus = await c.busFor(trigger.spec.eventBus, namespace);
    const r = await fn({ trigger, bus, engine, sinks, resolveSink: clusterSinkUrl });
    return { ...r, trigger: `${namespace}/${trigger.metadata.name}` };
  } finally {
    await sinks.close();
    await c.stop();
  }
}

export function runRedrive(o: RedriveCommandOptions): Promise<RedriveResult & { trigger: string }> {
  return withTrigger(o, (a) =>
    redrive({
      ...a,
      logger: o.logger,
      subscriber: o.subscriber,
      filter: o.filter,
      limit: o.limit,
      dryRun: o.dryRun,
      signal: o.signal,
    }),
  );
}

export function runReplay(o: ReplayCommandOptions): Promise<ReplayResult & { trigger: string }> {
  return withTrigger(o, (a) =>
    replay({
      ...a,
      logger: o.logger,
      from: o.from,
      to: o.to,
      filter: o.filter,
      dryRun: o.dryRun,
      signal: o.signal,
    }),
  );
}
