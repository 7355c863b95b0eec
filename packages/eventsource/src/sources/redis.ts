/**
 * The Redis source. OpenFunction turned a `redis` event into a Dapr `bindings.redis` component used
 * as the input of its event-source function, but Dapr registers that binding as output only, so
 * those events never fired; OpenFunction defines no key, channel or stream to read. Here an event
 * reads what its extension field names (an event with neither loads, with a warning, and its start
 * throws a CONFIG SourceError saying why, so the other events of the resource keep running):
 *
 * - `stream`: a consumer group (XREADGROUP). An entry is acknowledged (XACK) only after dispatch
 *   resolved; a failed dispatch is retried with backoff while the entry stays pending. On start the
 *   consumer first re-reads its own pending entries (what was read but not acknowledged before a
 *   crash), and every `redeliverInterval` it claims entries that other consumers left pending longer
 *   than `processingTimeout` (XAUTOCLAIM), as Dapr's Redis Streams pub/sub does. Event id
 *   `{stream}/{entryId}`: a redelivery keeps its id. At-least-once.
 * - `channel`: pub/sub (PSUBSCRIBE when the name contains `*`). Redis keeps nothing for a subscriber,
 *   so what arrives while the source is down or disconnected is lost: at-most-once.
 *
 * OpenFunction's connection fields keep their Dapr meaning where ioredis has one (see
 * docs/eventsources/redis.md).
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import {
  ErrorCode,
  SourceError,
  SourceKind,
  backoffDelay,
  isoTime,
  parseDuration,
  sleep,
  type Logger,
  type RedisSourceSpec,
  type ValidationIssue,
  sourceConsumerName,
} from "@ofevents/core";
import { untilTaken } from "@ofevents/delivery";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";
import { decodeData } from "./message.js";

/** Entries read per XREADGROUP / XAUTOCLAIM call: at most this many are pending on this consumer. */
export const STREAM_BATCH = 10;
/** XREADGROUP BLOCK time; the read loop also wakes this often to claim idle entries. */
export const STREAM_BLOCK_MS = 1_000;
/** Pub/sub messages waiting for dispatch, at most; beyond that new messages are dropped (counted). */
export const CHANNEL_MAX_QUEUED = 1_000;

const DEFAULT_PROCESSING_TIMEOUT_MS = 60_000;
const DEFAULT_REDELIVER_INTERVAL_MS = 15_000;
const DEFAULT_DIAL_TIMEOUT_MS = 5_000;
const DEFAULT_PORT = 6379;
// Entry ids are `<ms>-<seq>`; an explicit id far in the past is not a time.
const EARLIEST_ENTRY_TIME = Date.UTC(2000, 0, 1);

const DURATION_FIELDS = [
  "redeliverInterval",
  "processingTimeout",
  "redisMinRetryInterval",
  "redisMaxRetryInterval",
  "dialTimeout",
  "readTimeout",
  "writeTimeout",
  "poolTimeout",
  "maxConnAge",
  "idleCheckFrequency",
  "idleTimeout",
] as const;

/** A duration field in ms: Dapr's "0" and "-1" (disabled) are 0; undefined when absent or invalid. */
function durationField(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === "0" || t === "-1") return 0;
  return parseDuration(t);
}

interface HostPort {
  host: string;
  port: number;
}

/** Parses `host`, `host:port` or `[v6]:port`; undefined when malformed. */
export function parseHostPort(text: string): HostPort | undefined {
  const t = text.trim();
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(t);
  if (m === null) return undefined;
  const port = m[3] === undefined ? DEFAULT_PORT : Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

function hostsOf(spec: RedisSourceSpec): HostPort[] {
  return spec.redisHost
    .split(",")
    .filter((h) => h.trim() !== "")
    .map((h) => parseHostPort(h)!);
}

function validate(spec: RedisSourceSpec): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const add = (path: string, message: string): void => void issues.push({ code: "invalid_value", path, message });

  const hasStream = spec.stream !== undefined;
  const hasChannel = spec.channel !== undefined;
  // Neither is OpenFunction's redis event: it loads (core's compatibility() warns) and start
  // refuses it, so the other events of the EventSource still run.
  if (hasStream && hasChannel) add("", 'set either "stream" or "channel", not both');
  if (spec.stream !== undefined && spec.stream.trim() === "") add("stream", "must not be empty");
  if (spec.channel !== undefined && spec.channel.trim() === "") add("channel", "must not be empty");
  if (!hasStream) {
    for (const f of ["consumerGroup", "consumerName", "startFrom"] as const) {
      if (spec[f] !== undefined) add(f, `applies to "stream" only`);
    }
  }
  if (spec.consumerGroup !== undefined && spec.consumerGroup.trim() === "") add("consumerGroup", "must not be empty");
  if (spec.consumerName !== undefined && spec.consumerName.trim() === "") add("consumerName", "must not be empty");

  const hosts = spec.redisHost.split(",").filter((h) => h.trim() !== "");
  if (hosts.length === 0) add("redisHost", 'expected "host:port"');
  for (const h of hosts) {
    if (parseHostPort(h) === undefined) add("redisHost", `"${h.trim()}" is not "host:port" (port 1-65535)`);
  }
  const type = spec.redisType ?? "node";
  if (type !== "node" && type !== "cluster") add("redisType", `"${type}": expected "node" or "cluster"`);
  if (type === "node" && spec.failover !== true && hosts.length > 1) {
    add("redisHost", 'several hosts need redisType "cluster" or failover: true (Sentinel)');
  }
  if (spec.failover === true) {
    if (spec.sentinelMasterName === undefined || spec.sentinelMasterName === "") {
      add("sentinelMasterName", "required when failover is true");
    }
    if (type === "cluster") add("failover", 'Sentinel failover does not apply to redisType "cluster"');
  }
  if (spec.redisDB !== undefined && spec.redisDB < 0) add("redisDB", "must be 0 or more");
  if (spec.redisMaxRetries !== undefined && spec.redisMaxRetries < -1) add("redisMaxRetries", "must be -1 or more");
  if (spec.passwordSecret !== undefined && spec.redisPassword !== "") {
    add("passwordSecret", "set either redisPassword or passwordSecret, not both");
  }
  for (const f of DURATION_FIELDS) {
    const v = spec[f];
    if (v !== undefined && durationField(v) === undefined) {
      add(f, `"${v}" is not a duration (e.g. "500ms", "15s", "1m"; "0" or "-1" to disable)`);
    }
  }
  return issues;
}

/** A reply error whose first word (the RESP error code) is `code`, e.g. BUSYGROUP or NOGROUP. */
function isReplyError(err: unknown, code: string): boolean {
  return err instanceof Error && err.name === "ReplyError" && err.message.startsWith(`${code} `);
}

export interface StreamEntry {
  id: string;
  /** Field/value pairs; null when the entry was deleted from the stream while pending. */
  fields: [Buffer, Buffer][] | null;
}

function parseEntry(raw: unknown): StreamEntry | undefined {
  if (!Array.isArray(raw) || !Buffer.isBuffer(raw[0])) return undefined;
  const id = raw[0].toString("utf8");
  const list: unknown = raw[1];
  if (!Array.isArray(list)) return { id, fields: null };
  const fields: [Buffer, Buffer][] = [];
  for (let i = 0; i + 1 < list.length; i += 2) {
    const k: unknown = list[i];
    const v: unknown = list[i + 1];
    if (Buffer.isBuffer(k) && Buffer.isBuffer(v)) fields.push([k, v]);
  }
  return { id, fields };
}

function parseEntries(raw: unknown): StreamEntry[] {
  if (!Array.isArray(raw)) return [];
  return raw.map(parseEntry).filter((e): e is StreamEntry => e !== undefined);
}

/** The dispatch input of a stream entry: a single `data` or `value` field is the payload, else the field map. */
export function entryToDispatch(stream: string, entry: StreamEntry & { fields: [Buffer, Buffer][] }): DispatchInit {
  const ms = Number(entry.id.split("-")[0]);
  const time = Number.isSafeInteger(ms) && ms >= EARLIEST_ENTRY_TIME ? isoTime(ms) : undefined;
  const base = { id: `${stream}/${entry.id}`, subject: stream, time };
  const [only] = entry.fields;
  if (entry.fields.length === 1 && only !== undefined) {
    const name = only[0].toString("utf8");
    if (name === "data" || name === "value") return { ...base, ...decodeData(only[1]) };
  }
  const data: Record<string, string> = {};
  for (const [k, v] of entry.fields) data[k.toString("utf8")] = v.toString("utf8");
  return { ...base, data, datacontenttype: "application/json" };
}

type Client = Redis | Cluster;

/** ioredis's Redis and Cluster share their command methods; TypeScript cannot call through the union. */
function commands(c: Client): Redis {
  return c as Redis;
}

/** Reconnect delay: exponential between redisMinRetryInterval and redisMaxRetryInterval, never below 10 ms. */
/** The reconnect backoff: exponential from redisMinRetryInterval (50ms) to redisMaxRetryInterval (2s). */
export function reconnectDelay(spec: RedisSourceSpec): (times: number) => number {
  const min = Math.max(durationField(spec.redisMinRetryInterval) ?? 50, 1);
  const max = Math.max(durationField(spec.redisMaxRetryInterval) ?? 2_000, 10);
  return (times) => Math.max(10, Math.min(min * 2 ** (times - 1), max));
}

/** OpenFunction's connection fields as ioredis options (docs/eventsources/redis.md). */
export function connectionOptions(
  ctx: Pick<SourceContext, "namespace" | "eventSource" | "eventName">,
  spec: RedisSourceSpec,
  password: string | undefined,
): RedisOptions {
  const o: RedisOptions = {
    connectionName: `ofevents:${ctx.namespace}/${ctx.eventSource}/${ctx.eventName}`,
    connectTimeout: durationField(spec.dialTimeout) || DEFAULT_DIAL_TIMEOUT_MS,
  };
  if (password !== undefined) o.password = password;
  if (spec.redisDB !== undefined) o.db = spec.redisDB;
  if (spec.redisMaxRetries !== undefined)
    o.maxRetriesPerRequest = spec.redisMaxRetries < 0 ? null : spec.redisMaxRetries;
  if (spec.enableTLS === true) o.tls = {};
  return o;
}

function createClient(
  ctx: SourceContext,
  spec: RedisSourceSpec,
  password: string | undefined,
  extra: RedisOptions,
): Client {
  const base = { ...connectionOptions(ctx, spec, password), ...extra };
  const hosts = hostsOf(spec);
  const retry = reconnectDelay(spec);
  if (spec.redisType === "cluster") {
    const o: ClusterOptions = { redisOptions: base, clusterRetryStrategy: retry };
    return new Cluster(hosts, o);
  }
  if (spec.failover === true) {
    return new Redis({ ...base, retryStrategy: retry, sentinels: hosts, name: spec.sentinelMasterName! });
  }
  const [first] = hosts;
  return new Redis({ ...base, retryStrategy: retry, host: first!.host, port: first!.port });
}

/**
 * Command timeouts from readTimeout: none by default for commands; a blocking read gets its BLOCK
 * time plus readTimeout (default 3s).
 */
export function commandTimeouts(spec: RedisSourceSpec): { command: number | undefined; blocking: number } {
  const readTimeout = durationField(spec.readTimeout);
  return { command: readTimeout || undefined, blocking: STREAM_BLOCK_MS + (readTimeout || 3_000) };
}

/** Logs connection errors once per outage (ioredis reports every failed reconnect). */
function watchConnection(c: Client, log: Logger, role: string): void {
  let down = false;
  c.on("error", (err: Error) => {
    if (down) return log.debug({ err: err.message, connection: role }, "redis still unreachable");
    down = true;
    log.warn({ err: err.message, connection: role }, "redis connection error; reconnecting");
  });
  c.on("ready", () => {
    if (down) log.info({ connection: role }, "redis connection restored");
    down = false;
  });
}

/** True when `p` resolved within `ms`; false when it rejected or took longer. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

async function closeClient(c: Client): Promise<void> {
  if (!(await settlesWithin(commands(c).quit(), 1_000))) c.disconnect();
}

interface Loop {
  /** Resolves once the group exists (stream) or the subscription is active (channel). */
  ready: Promise<void>;
  stop(): Promise<void>;
}

function streamLoop(
  ctx: SourceContext,
  spec: RedisSourceSpec & { stream: string },
  dispatch: Dispatch,
  password: string | undefined,
): Loop {
  const log = ctx.logger;
  const stream = spec.stream;
  const group = spec.consumerGroup ?? sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName);
  const consumer = spec.consumerName ?? hostname();
  const minIdle = durationField(spec.processingTimeout) ?? DEFAULT_PROCESSING_TIMEOUT_MS;
  const redeliverEvery = durationField(spec.redeliverInterval) ?? DEFAULT_REDELIVER_INTERVAL_MS;
  const timeouts = commandTimeouts(spec);
  const stopper = new AbortController();
  const onAbort = (): void => stopper.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const stopped = (): boolean => stopper.signal.aborted;

  const cmd = createClient(
    ctx,
    spec,
    password,
    timeouts.command === undefined ? {} : { commandTimeout: timeouts.command },
  );
  // Blocking reads get their own connection, so XACK and XAUTOCLAIM never wait behind a BLOCK.
  const blocking = createClient(ctx, spec, password, { commandTimeout: timeouts.blocking });
  watchConnection(cmd, log, "commands");
  watchConnection(blocking, log, "blocking reads");

  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));

  async function ensureGroup(): Promise<void> {
    try {
      await commands(cmd).call("XGROUP", "CREATE", stream, group, spec.startFrom === "oldest" ? "0" : "$", "MKSTREAM");
      log.info({ stream, group, startFrom: spec.startFrom ?? "newest" }, "created redis stream consumer group");
    } catch (err) {
      if (!isReplyError(err, "BUSYGROUP")) throw err;
    }
  }

  async function read(from: string, block: boolean): Promise<StreamEntry[]> {
    const args: (string | number)[] = ["GROUP", group, consumer, "COUNT", STREAM_BATCH];
    if (block) args.push("BLOCK", STREAM_BLOCK_MS);
    args.push("STREAMS", stream, from);
    const reply = await commands(blocking).callBuffer("XREADGROUP", args);
    if (!Array.isArray(reply)) return [];
    const first: unknown = reply[0];
    return Array.isArray(first) ? parseEntries(first[1]) : [];
  }

  async function ack(id: string): Promise<void> {
    await commands(cmd).call("XACK", stream, group, id);
  }

  /** Dispatches one entry, retrying with backoff; acks it once dispatched. Returns false when stopped first. */
  async function handle(entry: StreamEntry): Promise<boolean> {
    if (entry.fields === null) {
      log.warn({ stream, entryId: entry.id }, "pending entry no longer in the stream; acknowledged");
      await ack(entry.id);
      return true;
    }
    const init = entryToDispatch(stream, { id: entry.id, fields: entry.fields });
    const outcome = await untilTaken(() => dispatch(init), {
      signal: stopper.signal,
      alive: () => !stopped(),
      onRefused: (err) =>
        log.error({ err, id: init.id }, "event refused by the bus or sink; entry acknowledged and skipped"),
      onRetry: async ({ attempt, error, delayMs }) => {
        log.warn(
          { err: error, id: init.id, attempt, retryInMs: delayMs },
          "dispatch failed; entry stays pending, retrying",
        );
        // Reset the entry's idle time so other consumers do not claim it while this one retries.
        await commands(cmd)
          .call("XCLAIM", stream, group, consumer, "0", entry.id, "JUSTID")
          .catch(() => undefined);
      },
    });
    if (outcome === "stopped") return false;
    await ack(entry.id);
    return true;
  }

  /** Claims entries idle longer than processingTimeout (from consumers that died) and dispatches them. */
  async function claimIdle(): Promise<void> {
    let start = "0-0";
    for (let round = 0; round < 10 && !stopped(); round++) {
      const reply = await commands(cmd).callBuffer("XAUTOCLAIM", [
        stream,
        group,
        consumer,
        minIdle,
        start,
        "COUNT",
        STREAM_BATCH,
      ]);
      if (!Array.isArray(reply) || !Buffer.isBuffer(reply[0])) return;
      const entries = parseEntries(reply[1]);
      if (entries.length > 0)
        log.info({ stream, count: entries.length }, "claimed entries left pending by other consumers");
      for (const e of entries) if (!(await handle(e))) return;
      start = reply[0].toString("utf8");
      if (start === "0-0") return;
    }
  }

  async function run(): Promise<void> {
    let groupReady = false;
    // Start with this consumer's pending entries: read (or claimed) earlier, never acknowledged.
    let pendingFrom: string | undefined = "0";
    let lastClaim = 0;
    let failures = 0;
    while (!stopped()) {
      try {
        if (!groupReady) {
          await ensureGroup();
          groupReady = true;
          markReady();
        }
        if (pendingFrom !== undefined) {
          const entries = await read(pendingFrom, false);
          if (entries.length === 0) {
            pendingFrom = undefined;
            continue;
          }
          log.info({ stream, count: entries.length }, "re-dispatching entries pending since an earlier run");
          for (const e of entries) {
            if (!(await handle(e))) return;
            pendingFrom = e.id;
          }
          continue;
        }
        if (minIdle > 0 && redeliverEvery > 0 && Date.now() - lastClaim >= redeliverEvery) {
          lastClaim = Date.now();
          await claimIdle();
        }
        for (const e of await read(">", true)) if (!(await handle(e))) return;
        failures = 0;
      } catch (err) {
        if (stopped()) return;
        failures++;
        if (isReplyError(err, "NOGROUP")) groupReady = false; // the stream or group was deleted
        // An ack may have failed: re-read this consumer's pending entries before new ones.
        pendingFrom = "0";
        const delay = backoffDelay(failures, { policy: "exponential", delayMs: 200, maxDelayMs: 10_000 });
        log.warn({ err, stream, group, retryInMs: delay }, "redis stream read failed; retrying");
        await sleep(delay, stopper.signal);
      }
    }
  }

  const done = run().catch((err: unknown) => log.error({ err }, "redis stream loop ended unexpectedly"));
  log.info({ stream, group, consumer }, "reading redis stream");
  return {
    ready,
    async stop() {
      stopper.abort();
      ctx.signal.removeEventListener("abort", onAbort);
      // Interrupts a blocking XREADGROUP; entries it delivered stay pending and are re-read next start.
      blocking.disconnect();
      await done;
      await closeClient(cmd);
    },
  };
}

function channelLoop(
  ctx: SourceContext,
  spec: RedisSourceSpec & { channel: string },
  dispatch: Dispatch,
  password: string | undefined,
): Loop {
  const log = ctx.logger;
  const channel = spec.channel;
  const pattern = channel.includes("*");
  const stopper = new AbortController();
  const onAbort = (): void => stopper.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const sub = createClient(ctx, spec, password, {});
  watchConnection(sub, log, "subscriber");

  const queue: { channel: string; message: Buffer }[] = [];
  let wake: (() => void) | undefined;
  let dropped = 0;

  function enqueue(ch: Buffer, message: Buffer): void {
    if (stopper.signal.aborted) return;
    if (queue.length >= CHANNEL_MAX_QUEUED) {
      // Pub/sub is at-most-once; bounded memory beats an unbounded backlog.
      if (dropped++ % 1_000 === 0) log.warn({ channel, dropped }, "dispatch is behind; pub/sub messages dropped");
      return;
    }
    queue.push({ channel: ch.toString("utf8"), message });
    wake?.();
  }
  sub.on("messageBuffer", (ch: Buffer, message: Buffer) => enqueue(ch, message));
  sub.on("pmessageBuffer", (_p: string, ch: Buffer, message: Buffer) => enqueue(ch, message));

  async function run(): Promise<void> {
    while (!stopper.signal.aborted) {
      const next = queue.shift();
      if (next === undefined) {
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
        continue;
      }
      const init: DispatchInit = { id: randomUUID(), subject: next.channel, ...decodeData(next.message) };
      await untilTaken(() => dispatch(init), {
        signal: stopper.signal,
        onRefused: (err) => log.error({ err, id: init.id }, "event refused by the bus or sink; message skipped"),
        onRetry: ({ attempt, error, delayMs }) =>
          log.warn(
            { err: error, id: init.id, attempt, retryInMs: delayMs },
            "dispatch failed; retrying the pub/sub message",
          ),
      });
    }
  }

  // ioredis re-subscribes after a reconnect, but only to what was subscribed once: retry until then.
  async function subscribe(): Promise<void> {
    for (let attempt = 1; !stopper.signal.aborted; attempt++) {
      try {
        await (pattern ? commands(sub).psubscribe(channel) : commands(sub).subscribe(channel));
        log.info({ channel, pattern }, "subscribed to redis channel");
        return;
      } catch (err) {
        const delay = backoffDelay(attempt, { policy: "exponential", delayMs: 200, maxDelayMs: 10_000 });
        log.warn({ err, channel, retryInMs: delay }, "redis subscribe failed; retrying");
        await sleep(delay, stopper.signal);
      }
    }
  }

  const ready = subscribe();
  const done = run().catch((err: unknown) => log.error({ err }, "redis channel loop ended unexpectedly"));
  return {
    ready,
    async stop() {
      stopper.abort();
      ctx.signal.removeEventListener("abort", onAbort);
      wake?.();
      await done;
      if (queue.length > 0) log.warn({ channel, lost: queue.length }, "stopped with pub/sub messages not dispatched");
      await closeClient(sub);
    },
  };
}

export const redisAdapter: SourceAdapter<RedisSourceSpec> = {
  kind: SourceKind.Redis,

  validate,

  async start(ctx: SourceContext, spec: RedisSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    if (spec.stream === undefined && spec.channel === undefined) {
      throw new SourceError(
        ErrorCode.SourceUnsupported,
        `redis event "${ctx.eventName}" does not run: OpenFunction made it a Dapr redis binding, which cannot receive ` +
          '(Dapr registers bindings.redis as output only), and it names nothing to read; set "stream" (a consumer ' +
          'group, at-least-once) or "channel" (pub/sub, at-most-once)',
        `${ctx.namespace}/${ctx.eventSource}/redis/${ctx.eventName}`,
        { retriable: false },
      );
    }
    const password =
      spec.passwordSecret !== undefined
        ? ctx.secrets.resolve(spec.passwordSecret, ctx.namespace)
        : spec.redisPassword === ""
          ? undefined
          : spec.redisPassword;
    const loop =
      spec.stream !== undefined
        ? streamLoop(ctx, { ...spec, stream: spec.stream }, dispatch, password)
        : channelLoop(ctx, { ...spec, channel: spec.channel! }, dispatch, password);
    // Wait for the group or subscription briefly; an unreachable server is retried in the background.
    const wait = durationField(spec.dialTimeout) || DEFAULT_DIAL_TIMEOUT_MS;
    if (!(await settlesWithin(loop.ready, wait)))
      ctx.logger.warn({ redisHost: spec.redisHost }, "redis not ready yet; still connecting in the background");
    return { stop: () => loop.stop() };
  },
};
