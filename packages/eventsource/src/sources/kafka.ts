/**
 * The Kafka source (kafkajs): OpenFunction's fields (brokers, topic, authRequired, saslUsername,
 * saslPassword, maxMessageBytes; scaleOption is KEDA's business) plus a consumer group, the start
 * position of a new group, SASL by reference and TLS.
 *
 * Delivery is at-least-once. Each partition is handled in order, one record at a time (up to
 * {@link PARTITIONS_CONCURRENTLY} partitions at once); a record's offset is committed only after
 * `dispatch` resolved, so commits are contiguous per partition; commits go at most every
 * {@link COMMIT_INTERVAL_MS}, each covering what was taken since the last. A record the bus or
 * sink does not take is retried with backoff, the partition waiting, until it is taken or the
 * source stops: it is never skipped. Event ids are `{topic}/{partition}/{offset}`, so a
 * redelivered record is recognisable downstream. Only a malformed record or an event the sink refused (4xx) is logged
 * and skipped.
 */
import { isUtf8 } from "node:buffer";
import { performance } from "node:perf_hooks";
import {
  Kafka,
  type Admin,
  type Consumer,
  type EachMessagePayload,
  type IHeaders,
  type KafkaMessage,
  type SASLOptions,
} from "kafkajs";
import {
  ErrorCode,
  EventError,
  SourceError,
  SourceKind,
  type KafkaSourceSpec,
  type Logger,
  type SecretKeySelector,
  type ValidationIssue,
  sourceConsumerName,
  isoTime,
  mediaType,
} from "@ofevents/core";
import { untilTaken } from "@ofevents/delivery";
import { kafkaLogging, kafkaSasl, kafkaTls } from "@ofevents/eventbus";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";
import {
  CE_BATCH,
  CE_STRUCTURED,
  asCloudEvent,
  binaryEvent,
  decodeData,
  headerExtensions,
  headerValue,
  isBinaryEvent,
  structuredEvents,
  type HeaderEntry,
} from "./message.js";

export const DEFAULT_CLIENT_ID = "ofevents";
/** Partitions one source handles at the same time (each one in order). */
export const PARTITIONS_CONCURRENTLY = 4;
/** Longest fetch long-poll: also bounds how long stopping waits for a fetch (kafkajs default 5 s). */
const FETCH_MAX_WAIT_MS = 500;
/** Heartbeats while a dispatch is pending, so a slow sink does not cost the group membership. */
const HEARTBEAT_MS = 3_000;
/**
 * Least time between the starts of two offset commits: marks in between go together in the next
 * one. Each commit is a request to the group coordinator and an append to its offsets log; without
 * the interval a busy source committed back to back, a commit for every record or two.
 */
export const COMMIT_INTERVAL_MS = 100;
/** How long start() waits for the consumer to join its group. */
const JOIN_TIMEOUT_MS = 60_000;

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?):(\d{1,5})$/;
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

/** `ofevents-{namespace}-{eventSource}-{event}` */
export function defaultConsumerGroup(ctx: Pick<SourceContext, "namespace" | "eventSource" | "eventName">): string {
  return sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName);
}

/** Splits OpenFunction's comma-separated `brokers` into host:port entries and the invalid ones. */
export function parseBrokers(list: string): { brokers: string[]; invalid: string[] } {
  const brokers: string[] = [];
  const invalid: string[] = [];
  for (const raw of list.split(",")) {
    const b = raw.trim();
    if (b === "") continue;
    const m = HOST_PORT.exec(b);
    const port = m === null ? NaN : Number(m[3]);
    if (port >= 1 && port <= 65535) brokers.push(b);
    else invalid.push(b);
  }
  return { brokers, invalid };
}

function headerEntries(headers: IHeaders | undefined): HeaderEntry[] {
  const out: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    const texts: string[] = [];
    for (const v of Array.isArray(value) ? value : [value]) {
      if (typeof v === "string") texts.push(v);
      else if (isUtf8(v)) texts.push(v.toString("utf8"));
    }
    // A header given several times becomes one comma-separated value, as HTTP folds them.
    if (texts.length > 0) out.push([name, texts.join(",")]);
  }
  return out;
}

/**
 * Turns a record into dispatch inputs: a CloudEvent it carries (structured or batch mode by
 * content-type, binary mode by `ce_*` headers: the CloudEvents Kafka binding), or its value as data
 * with id `{topic}/{partition}/{offset}`, time = the record's timestamp, subject = the topic, valid
 * header names as extensions and the key as `partitionkey`. Throws EventError for a record that
 * claims to be a CloudEvent and is not a valid one.
 */
export function decodeRecord(
  topic: string,
  partition: number,
  message: Pick<KafkaMessage, "key" | "value" | "headers" | "timestamp" | "offset">,
): DispatchInit[] {
  const headers = headerEntries(message.headers);
  const contentType = headerValue(headers, "content-type");
  const type = mediaType(contentType);
  if (type === CE_STRUCTURED || type === CE_BATCH)
    return structuredEvents(message.value, type === CE_BATCH).map((event) => ({ event }));
  if (isBinaryEvent(headers, "ce_")) return [{ event: binaryEvent(headers, "ce_", message.value) }];

  const init: DispatchInit = { id: `${topic}/${partition}/${message.offset}`, subject: topic };
  const ts = Number(message.timestamp);
  if (Number.isFinite(ts) && ts >= 0) init.time = isoTime(ts);
  if (message.value !== null) {
    const { data, datacontenttype } = decodeData(message.value, contentType);
    const event = datacontenttype === "application/json" ? asCloudEvent(data) : undefined;
    if (event !== undefined) return [{ event }];
    init.data = data;
    init.datacontenttype = datacontenttype;
  }
  const extensions: Record<string, string> = headerExtensions(headers);
  if (message.key !== null && message.key.length > 0 && isUtf8(message.key))
    extensions["partitionkey"] = message.key.toString("utf8");
  if (Object.keys(extensions).length > 0) init.extensions = extensions;
  return [init];
}

function saslOptions(ctx: SourceContext, spec: KafkaSourceSpec): SASLOptions | undefined {
  if (!spec.authRequired) return undefined;
  if (spec.sasl === undefined) return kafkaSasl("plain", spec.saslUsername ?? "", spec.saslPassword ?? "");
  const secret = (ref: SecretKeySelector) => ctx.secrets.resolve(ref, ctx.namespace);
  return kafkaSasl(spec.sasl.mechanism, secret(spec.sasl.usernameSecret), secret(spec.sasl.passwordSecret));
}

/**
 * Commits "everything before offset n of partition p was taken", coalescing: while a commit is on
 * its way, and for {@link COMMIT_INTERVAL_MS} after one started, later marks wait and go together
 * in the next one. A failed commit is logged; the next one covers it (commits are cumulative), and
 * at worst records are delivered again. `flush` commits what is marked without waiting.
 */
export class OffsetCommitter {
  readonly #pending = new Map<number, bigint>();
  #running: Promise<void> | undefined;
  #lastStart = -Infinity;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly consumer: Consumer,
    private readonly topic: string,
    private readonly log: Logger,
  ) {}

  mark(partition: number, next: bigint): void {
    const current = this.#pending.get(partition);
    if (current === undefined || next > current) this.#pending.set(partition, next);
    this.#kick(false);
  }

  /** Resolves once every mark so far was committed (or failed to). */
  async flush(): Promise<void> {
    while (this.#running !== undefined || this.#pending.size > 0) {
      this.#kick(true);
      await this.#running;
    }
  }

  #kick(now: boolean): void {
    if (this.#running !== undefined || this.#pending.size === 0) return;
    const wait = this.#lastStart + COMMIT_INTERVAL_MS - performance.now();
    if (!now && wait > 0) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#kick(false);
      }, wait).unref();
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#lastStart = performance.now();
    this.#running = this.#commitAll().finally(() => {
      this.#running = undefined;
      this.#kick(false);
    });
  }

  async #commitAll(): Promise<void> {
    const offsets = [...this.#pending].map(([partition, next]) => ({
      topic: this.topic,
      partition,
      offset: next.toString(),
    }));
    this.#pending.clear();
    try {
      await this.consumer.commitOffsets(offsets);
      this.log.trace({ offsets }, "offsets committed");
    } catch (err) {
      this.log.warn({ err, offsets }, "offset commit failed; records after the last commit may be delivered again");
    }
  }
}

/** The high watermark of each partition: where a new group starts with `startFrom: newest`. */
async function highWatermarks(admin: Admin, topic: string): Promise<Map<number, bigint>> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
}

export const kafkaAdapter: SourceAdapter<KafkaSourceSpec> = {
  kind: SourceKind.Kafka,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    const { brokers, invalid } = parseBrokers(spec.brokers);
    if (invalid.length > 0) {
      issues.push({
        code: "invalid_value",
        path: "brokers",
        message: `not host:port: ${invalid.map((b) => JSON.stringify(b)).join(", ")}`,
      });
    } else if (brokers.length === 0) {
      issues.push({
        code: "invalid_value",
        path: "brokers",
        message: "no broker given (expected host:port, comma-separated)",
      });
    }
    if (spec.topic === undefined || spec.topic === "") {
      issues.push({ code: "missing", path: "topic", message: "a topic is required: the source consumes one topic" });
    } else if (!TOPIC_NAME.test(spec.topic)) {
      issues.push({
        code: "invalid_value",
        path: "topic",
        message: `"${spec.topic}" is not a Kafka topic name (a-z, A-Z, 0-9, ".", "_", "-")`,
      });
    }
    const inline = spec.saslUsername !== undefined || spec.saslPassword !== undefined;
    if (spec.authRequired) {
      if (spec.sasl !== undefined && inline) {
        issues.push({
          code: "conflict",
          path: "sasl",
          message: "set either sasl (secret references) or saslUsername/saslPassword, not both",
        });
      } else if (spec.sasl === undefined && (spec.saslUsername === undefined || spec.saslPassword === undefined)) {
        issues.push({
          code: "missing",
          path: "authRequired",
          message: "authRequired needs saslUsername and saslPassword, or sasl",
        });
      }
    } else if (spec.sasl !== undefined) {
      issues.push({ code: "conflict", path: "sasl", message: "sasl is set but authRequired is false" });
    }
    if (spec.maxMessageBytes !== undefined && spec.maxMessageBytes <= 0) {
      issues.push({ code: "invalid_value", path: "maxMessageBytes", message: "must be positive" });
    }
    if (spec.consumerGroup === "")
      issues.push({ code: "invalid_value", path: "consumerGroup", message: "must not be empty" });
    if (spec.clientId === "") issues.push({ code: "invalid_value", path: "clientId", message: "must not be empty" });
    if (spec.tls !== undefined && (spec.tls.certSecret === undefined) !== (spec.tls.keySecret === undefined)) {
      issues.push({
        code: "missing",
        path: "tls",
        message: "a client certificate needs both certSecret and keySecret",
      });
    }
    return issues;
  },

  async start(ctx: SourceContext, spec: KafkaSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const topic = spec.topic!;
    const groupId = spec.consumerGroup ?? defaultConsumerGroup(ctx);
    const log = ctx.logger.child({ topic, group: groupId });
    const kafka = new Kafka({
      clientId: spec.clientId ?? DEFAULT_CLIENT_ID,
      brokers: parseBrokers(spec.brokers).brokers,
      ssl: kafkaTls(spec.tls, (ref) => ctx.secrets.resolve(ref, ctx.namespace)),
      ...(spec.authRequired ? { sasl: saslOptions(ctx, spec)! } : {}),
      ...kafkaLogging(log),
    });
    const consumer = kafka.consumer({
      groupId,
      maxWaitTimeInMs: FETCH_MAX_WAIT_MS,
      ...(spec.maxMessageBytes === undefined ? {} : { maxBytesPerPartition: spec.maxMessageBytes }),
    });
    const committer = new OffsetCommitter(consumer, topic, log);
    const stopping = new AbortController();
    const inFlight = new Set<Promise<void>>();

    /** Dispatches until taken or refused for good (true), or until the source stops (false). */
    async function deliver(init: DispatchInit, position: string, heartbeat: () => Promise<void>): Promise<boolean> {
      // Heartbeats go on while the dispatch or the backoff lasts; a failed one (a rebalance)
      // cuts the backoff short, so the group does not wait for this member.
      let wake = new AbortController();
      const beat = setInterval(() => void heartbeat().catch(() => wake.abort()), HEARTBEAT_MS);
      try {
        const outcome = await untilTaken(() => dispatch(init), {
          signal: stopping.signal,
          wake: () => wake.signal,
          onRefused: (err) => log.error({ err, position }, "event refused; skipping it"),
          onRetry: ({ attempt, error, delayMs }) =>
            log.warn(
              { err: error, position, attempt, retryInMs: delayMs },
              "record not taken; retrying it (the partition waits)",
            ),
          // A rebalance throws here: kafkajs rejoins, and the uncommitted record is fetched again.
          afterWait: async () => {
            wake = new AbortController();
            await heartbeat();
          },
        });
        return outcome !== "stopped";
      } finally {
        clearInterval(beat);
      }
    }

    async function handle({ topic: t, partition, message, heartbeat, pause }: EachMessagePayload): Promise<void> {
      // Returning without a commit while stopping: the record is delivered again after a restart.
      if (stopping.signal.aborted) return void pause();
      const position = `${t}/${partition}/${message.offset}`;
      const next = BigInt(message.offset) + 1n;
      let inits: DispatchInit[];
      try {
        inits = decodeRecord(t, partition, message);
      } catch (err) {
        if (!(err instanceof EventError)) throw err;
        log.error({ err, position }, "malformed record; skipping it");
        committer.mark(partition, next);
        return;
      }
      for (const init of inits) {
        if (!(await deliver(init, position, heartbeat))) return void pause();
      }
      committer.mark(partition, next);
    }

    // startFrom newest: pin a new group's start to the high watermarks read now, and commit them,
    // so records produced after start() and before a first commit are never skipped (kafkajs alone
    // resolves "latest" at its first fetch, and again after a crash that came before any commit).
    const pinNewest = spec.startFrom !== "oldest";
    let assignment: number[] = [];
    let joins = 0;
    let onJoined!: () => void;
    let onFatal!: (err: Error) => void;
    const joined = new Promise<void>((resolve, reject) => {
      onJoined = resolve;
      onFatal = reject;
    });
    joined.catch(() => {});
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      assignment = e.payload.memberAssignment[topic] ?? [];
      // Before the first fetch: nothing is read until the start positions are settled.
      if (++joins === 1 && pinNewest) consumer.pause([{ topic }]);
      log.debug({ partitions: assignment, memberId: e.payload.memberId }, "joined the consumer group");
      onJoined();
    });
    consumer.on(consumer.events.CRASH, (e) => {
      const { error, restart } = e.payload;
      if (restart) log.warn({ err: error }, "kafka consumer crashed; kafkajs restarts it");
      else log.error({ err: error }, "kafka consumer crashed and stopped; restart the source");
      if (!restart) onFatal(error);
    });

    const admin = pinNewest ? kafka.admin() : undefined;
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: spec.startFrom === "oldest" });
      let high: Map<number, bigint> | undefined;
      if (admin !== undefined) {
        await admin.connect();
        high = await highWatermarks(admin, topic);
      }
      await consumer.run({
        autoCommit: false,
        partitionsConsumedConcurrently: PARTITIONS_CONCURRENTLY,
        eachMessage: (payload) => {
          const p = handle(payload);
          inFlight.add(p);
          void p.catch(() => {}).finally(() => inFlight.delete(p));
          return p;
        },
      });
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        joined,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`not joined to group ${groupId} after ${JOIN_TIMEOUT_MS} ms`)),
            JOIN_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      if (admin !== undefined && high !== undefined) {
        try {
          const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
          const fresh = (committed?.partitions ?? []).filter(
            (p) => Number(p.offset) < 0 && assignment.includes(p.partition),
          );
          for (const { partition } of fresh) {
            const h = high.get(partition);
            if (h === undefined) continue;
            consumer.seek({ topic, partition, offset: h.toString() });
            committer.mark(partition, h);
          }
          await committer.flush();
          if (fresh.length > 0)
            log.debug({ partitions: fresh.map((p) => p.partition) }, "new group: start positions committed");
        } finally {
          consumer.resume([{ topic }]);
        }
      }
    } catch (err) {
      stopping.abort();
      await consumer.disconnect().catch(() => {});
      // Names the resource and the brokers; kafkajs's messages never carry the credentials.
      throw new SourceError(
        ErrorCode.SourceStart,
        `kafka: EventSource ${ctx.namespace}/${ctx.eventSource} event ${ctx.eventName}: cannot consume ${topic} from ${spec.brokers}: ${(err as Error).message}`,
        SourceKind.Kafka,
        { cause: err },
      );
    } finally {
      await admin?.disconnect().catch(() => {});
    }
    log.info({ brokers: spec.brokers, startFrom: spec.startFrom ?? "newest" }, "consuming");

    let stopped: Promise<void> | undefined;
    return {
      stop() {
        stopped ??= (async () => {
          stopping.abort();
          try {
            consumer.pause([{ topic }]);
          } catch {
            // Not running (it crashed): nothing to pause.
          }
          await Promise.allSettled([...inFlight]);
          await committer.flush();
          await consumer.disconnect();
          log.info("stopped");
        })();
        return stopped;
      },
    };
  },
};
