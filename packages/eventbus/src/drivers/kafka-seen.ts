/**
 * The Kafka bus's SeenSet: one single-partition topic per name, `kafkaName({topicPrefix}dedup.{name})`,
 * with `cleanup.policy=compact,delete`: compaction keeps the last record of each key, and
 * `retention.ms` = the window drops segments whose newest record is older than that. A record is
 * key → the time it was added (ms since the epoch, as text). Opening the set reads the topic up
 * to its end into memory (a MemorySeenSet); `has` answers from there, `add` writes then remembers.
 * Keys another process adds after this set was opened are not seen by it.
 */
import { randomUUID } from "node:crypto";
import kafkajs from "kafkajs";
import type { Admin, KafkaMessage, Message } from "kafkajs";
import { BusError, ErrorCode, kafkaName, type Logger } from "@ofevents/core";
import { MemorySeenSet, checkWindow } from "../seen.js";
import type { SeenSet } from "../types.js";

const { ConfigResourceTypes } = kafkajs;

/** Segments roll at least this often, so retention can drop expired keys. */
const MIN_SEGMENT_MS = 60_000;

/** What the seen set needs of its bus. */
export interface KafkaSeenContext {
  kafka: InstanceType<typeof kafkajs.Kafka>;
  admin: Admin;
  topicPrefix: string;
  log: Logger;
  /** Longest fetch wait of the loading consumer. */
  maxWaitTimeMs: number;
  /** How long opening may take: topic creation, joining a group, reading to the end. */
  loadTimeoutMs: number;
  closed(): boolean;
  /** Produces with acks from every in-sync replica; resolves once the broker acked. */
  send(topic: string, message: Message): Promise<void>;
  /** Classifies a kafkajs failure as the bus does (retriable or not). */
  busError(code: ErrorCode, what: string, err: unknown): BusError;
}

/** When a record's key was added: its value, else the record's timestamp. */
function addedAt(message: KafkaMessage): number {
  const at = Number(message.value?.toString("utf8"));
  return Number.isFinite(at) ? at : Number(message.timestamp);
}

/**
 * Opens the seen set `name`: creates its topic unless it exists (an existing one gets this
 * window's configuration), then loads the keys added within the window. Rejects with a BusError,
 * also when that takes longer than `loadTimeoutMs`.
 */
export async function openKafkaSeenSet(ctx: KafkaSeenContext, name: string, windowMs: number): Promise<SeenSet> {
  checkWindow(windowMs);
  const topic = kafkaName(`${ctx.topicPrefix}dedup.${name}`);
  const keys = new MemorySeenSet(windowMs);
  const abort = new AbortController();
  const timedOut = new Promise<never>((_, reject) => {
    abort.signal.addEventListener("abort", () => reject(abort.signal.reason as Error));
  });
  const timer = setTimeout(
    () =>
      abort.abort(
        new BusError(
          ErrorCode.BusSubscribe,
          `kafka bus: opening seen set ${name} (topic ${topic}) did not finish within ${ctx.loadTimeoutMs} ms`,
        ),
      ),
    ctx.loadTimeoutMs,
  );
  try {
    const loaded = await Promise.race([
      timedOut,
      ensureSeenTopic(ctx, topic, Math.ceil(windowMs)).then(() => loadKeys(ctx, topic, abort.signal)),
    ]);
    // Oldest first: MemorySeenSet keeps its keys in order of expiry.
    for (const [key, at] of [...loaded].sort((a, b) => a[1] - b[1])) keys.remember(key, at);
    ctx.log.debug({ topic, keys: keys.size }, "seen set loaded");
  } catch (err) {
    throw ctx.busError(ErrorCode.BusSubscribe, `opening seen set ${name} (topic ${topic})`, err);
  } finally {
    clearTimeout(timer);
  }
  return new KafkaSeenSet(ctx, keys, name, topic);
}

async function ensureSeenTopic(ctx: KafkaSeenContext, topic: string, windowMs: number): Promise<void> {
  const wanted = new Map([
    ["cleanup.policy", "compact,delete"],
    ["retention.ms", String(windowMs)],
    ["segment.ms", String(Math.max(windowMs, MIN_SEGMENT_MS))],
  ]);
  const configEntries = [...wanted].map(([name, value]) => ({ name, value }));
  const created = await ctx.admin.createTopics({
    topics: [{ topic, numPartitions: 1, configEntries }],
    waitForLeaders: true,
  });
  if (created) {
    ctx.log.debug({ topic, windowMs }, "created seen set topic");
    return;
  }
  const { resources } = await ctx.admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: [...wanted.keys()] }],
    includeSynonyms: false,
  });
  const have = new Map((resources[0]?.configEntries ?? []).map((e) => [e.configName, e.configValue]));
  if ([...wanted].every(([k, v]) => have.get(k) === v)) return;
  // A topic made for another window: a shorter retention would drop keys this window still needs.
  await ctx.admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries }],
  });
  ctx.log.info({ topic, windowMs, previous: Object.fromEntries(have) }, "seen set topic configured for the window");
}

/**
 * Reads `topic` from its beginning to the end offsets it has now, in a consumer group of its own
 * (kafkajs has no manual assignment) that commits nothing and is deleted afterwards. Resolves with
 * the last time each key was added.
 */
async function loadKeys(ctx: KafkaSeenContext, topic: string, signal: AbortSignal): Promise<Map<string, number>> {
  const loaded = new Map<string, number>();
  const ends = new Map<number, bigint>();
  for (const o of await ctx.admin.fetchTopicOffsets(topic)) {
    if (BigInt(o.high) > BigInt(o.low)) ends.set(o.partition, BigInt(o.high));
  }
  if (ends.size === 0 || signal.aborted) return loaded;
  const groupId = kafkaName(`${ctx.topicPrefix}dedup.load.${randomUUID()}`);
  const consumer = ctx.kafka.consumer({ groupId, maxWaitTimeInMs: ctx.maxWaitTimeMs, allowAutoTopicCreation: false });
  let finish!: () => void;
  let fail!: (err: unknown) => void;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const onAbort = (): void => fail(signal.reason);
  signal.addEventListener("abort", onAbort);
  const offCrash = consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) fail(e.payload.error);
  });
  try {
    await Promise.race([
      finished,
      (async () => {
        await consumer.connect();
        await consumer.subscribe({ topics: [topic], fromBeginning: true });
        await consumer.run({
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) {
              if (m.key === null) continue;
              const key = m.key.toString("utf8");
              loaded.delete(key);
              loaded.set(key, addedAt(m));
            }
            const end = ends.get(batch.partition);
            if (end !== undefined && BigInt(batch.lastOffset()) >= end - 1n) ends.delete(batch.partition);
            if (ends.size === 0) finish();
          },
        });
        await finished;
      })(),
    ]);
  } finally {
    signal.removeEventListener("abort", onAbort);
    offCrash();
    await consumer
      .disconnect()
      .catch((err: unknown) => ctx.log.warn({ err, topic }, "seen set loader disconnect failed"));
    await ctx.admin
      .deleteGroups([groupId])
      .catch((err: unknown) => ctx.log.debug({ err, groupId }, "deleting the seen set loader's group failed"));
  }
  return loaded;
}

class KafkaSeenSet implements SeenSet {
  readonly kind = "kafka-compacted-topic";

  constructor(
    private readonly ctx: KafkaSeenContext,
    private readonly keys: MemorySeenSet,
    private readonly name: string,
    private readonly topic: string,
  ) {}

  has(key: string): Promise<boolean> {
    return this.keys.has(key);
  }

  /** Resolves once every in-sync replica has the record; only then does `has` see the key. */
  async add(key: string): Promise<void> {
    if (this.ctx.closed()) throw BusError.closed();
    const at = Date.now();
    try {
      await this.ctx.send(this.topic, { key, value: String(at) });
    } catch (err) {
      throw this.ctx.busError(ErrorCode.BusPublish, `adding to seen set ${this.name} (topic ${this.topic})`, err);
    }
    this.keys.remember(key, at);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
