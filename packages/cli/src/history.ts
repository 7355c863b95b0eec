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
  type Logger,
} from "@ofevents/core";
import { createSinkClient } from "@ofevents/delivery";
import { redrive, replay, type RedriveResult, type ReplayResult } from "@ofevents/trigger";
import { validateAll } from "./check.js";
import { createComposition } from "./compose.js";
import { clusterSinkUrl, pick } from "./single.js";

export interface RedriveCommandOptions {
  paths: string[];
  /** `name` or `namespace/name`; required when the files hold several Triggers. */
  trigger?: string | undefined;
  subscriber?: number | undefined;
  filter?: string | undefined;
  limit?: number | undefined;
  dryRun?: boolean | undefined;
  logger: Logger;
  signal?: AbortSignal | undefined;
}

export async function runRedrive(o: RedriveCommandOptions): Promise<RedriveResult & { trigger: string }> {
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
    const r = await redrive({
      trigger,
      bus,
      engine,
      logger: o.logger,
      sinks,
      resolveSink: clusterSinkUrl,
      subscriber: o.subscriber,
      filter: o.filter,
      limit: o.limit,
      dryRun: o.dryRun,
      signal: o.signal,
    });
    return { trigger: `${namespace}/${trigger.metadata.name}`, ...r };
  } finally {
    await sinks.close();
    await c.stop();
  }
}

export interface ReplayCommandOptions {
  paths: string[];
  trigger?: string | undefined;
  from: Date;
  to?: Date | undefined;
  filter?: string | undefined;
  dryRun?: boolean | undefined;
  logger: Logger;
  signal?: AbortSignal | undefined;
}

export async function runReplay(o: ReplayCommandOptions): Promise<ReplayResult & { trigger: string }> {
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
    const r = await replay({
      trigger,
      bus,
      engine,
      logger: o.logger,
      sinks,
      resolveSink: clusterSinkUrl,
      from: o.from,
      to: o.to,
      filter: o.filter,
      dryRun: o.dryRun,
      signal: o.signal,
    });
    return { trigger: `${namespace}/${trigger.metadata.name}`, ...r };
  } finally {
    await sinks.close();
    await c.stop();
  }
}
