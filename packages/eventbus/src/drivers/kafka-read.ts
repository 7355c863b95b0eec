/**
 * `read` of the Kafka bus. kafkajs has no manual assignment, so the read runs in a consumer group
 * of its own (`<prefix>read.<uuid>`) that commits nothing and is deleted afterwards; each
 * partition is read from its low watermark (or the first offset at or after `from`) to the high
 * watermark it had when the read began. Records are handed over one at a time through a
 * one-slot channel, so a slow reader holds the fetch (no unbounded buffering).
 */
import { randomUUID } from "node:crypto";
import type kafkajs from "kafkajs";
import type { Admin, KafkaMessage } from "kafkajs";
import { ErrorCode, kafkaName, type BusError, type Logger } from "@ofevents/core";
import { decodeBusEvent } from "../envelope.js";
import type { ReadOptions, RetainedEvent, Tail, TailedEvent } from "../types.js";

export interface KafkaReadContext {
  kafka: InstanceType<typeof kafkajs.Kafka>;
  admin: Admin;
  topicPrefix: string;
  log: Logger;
  maxWaitTimeMs: number;
  /** The Kafka topic of a bus topic, created unless it exists. */
  ensureTopic(topic: string): Promise<string>;
  busError(code: ErrorCode, what: string, err: unknown): BusError;
}

type Item = { value: RetainedEvent; taken: () => void } | { done: true } | { error: unknown };

export async function* readKafka(
  ctx: KafkaReadContext,
  topic: string,
  o: ReadOptions = {},
): AsyncGenerator<RetainedEvent> {
  const kt = await ctx.ensureTopic(topic);
  const ends = new Map<number, bigint>();
  const starts = new Map<number, bigint>();
  try {
    for (const p of await ctx.admin.fetchTopicOffsets(kt)) {
      if (BigInt(p.high) > BigInt(p.low)) {
        ends.set(p.partition, BigInt(p.high));
        starts.set(p.partition, BigInt(p.low));
      }
    }
    if (o.from !== undefined && ends.size > 0) {
      for (const p of await ctx.admin.fetchTopicOffsetsByTimestamp(kt, o.from.getTime())) {
        // -1: no record at or after the time in this partition.
        const at = BigInt(p.offset);
        const end = ends.get(p.partition);
        if (end === undefined) continue;
        if (at < 0n || at >= end) ends.delete(p.partition);
        else if (at > starts.get(p.partition)!) starts.set(p.partition, at);
      }
    }
  } catch (err) {
    throw ctx.busError(ErrorCode.BusSubscribe, `reading topic ${topic}: its offsets`, err);
  }
  if (ends.size === 0) return;

  const groupId = kafkaName(`${ctx.topicPrefix}read.${randomUUID()}`);
  const consumer = ctx.kafka.consumer({ groupId, maxWaitTimeInMs: ctx.maxWaitTimeMs, allowAutoTopicCreation: false });
  // One slot: the consumer waits until the reader took the record before it goes on.
  let slot: Item | undefined;
  let wake: (() => void) | undefined;
  const put = (item: Item): void => {
    slot = item;
    wake?.();
  };
  const offCrash = consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) put({ error: e.payload.error });
  });
  const pending = new Map(ends);
  let stopped = false;
  /** The record the reader holds (yielded, not yet released). */
  let held: (() => void) | undefined;
  const onAbort = (): void => wake?.();
  o.signal?.addEventListener("abort", onAbort);
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [kt], fromBeginning: true });
    consumer.on(consumer.events.GROUP_JOIN, () => {
      for (const [partition, offset] of starts) consumer.seek({ topic: kt, partition, offset: String(offset) });
    });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        if (stopped) return;
        const end = pending.get(partition);
        const offset = BigInt(message.offset);
        if (end === undefined || offset >= end || offset < (starts.get(partition) ?? 0n)) return;
        const time = new Date(Number(message.timestamp));
        if (o.to !== undefined && time > o.to) pending.delete(partition);
        else {
          const event = decode(ctx, topic, partition, message);
          if (event !== undefined) {
            await new Promise<void>((taken) =>
              put({ value: { event, topic, position: `${kt}:${partition}:${message.offset}`, time }, taken }),
            );
          }
          if (offset >= end - 1n) pending.delete(partition);
        }
        if (pending.size === 0) put({ done: true });
      },
    });
    for (;;) {
      o.signal?.throwIfAborted();
      if (slot === undefined) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      const item = slot;
      slot = undefined;
      if ("done" in item) return;
      if ("error" in item) throw ctx.busError(ErrorCode.BusSubscribe, `reading topic ${topic}`, item.error);
      held = item.taken;
      yield item.value;
      held = undefined;
      item.taken();
    }
  } finally {
    stopped = true;
    o.signal?.removeEventListener("abort", onAbort);
    held?.();
    if (slot !== undefined && "taken" in slot) slot.taken();
    offCrash();
    await consumer
      .disconnect()
      .catch((err: unknown) => ctx.log.warn({ err, topic }, "read: consumer disconnect failed"));
    await ctx.admin
      .deleteGroups([groupId])
      .catch((err: unknown) => ctx.log.debug({ err, groupId }, "read: deleting the reader's group failed"));
  }
}

function decode(ctx: KafkaReadContext, topic: string, partition: number, m: KafkaMessage) {
  try {
    if (m.value === null) throw new Error("no value");
    return decodeBusEvent(m.value);
  } catch (err) {
    ctx.log.warn(
      { topic, partition, offset: m.offset, err: (err as Error).message },
      "read: a record that is not a CloudEvent skipped",
    );
    return undefined;
  }
}

/**
 * `tail` of the Kafka bus: a consumer group of its own (`<prefix>tail.<uuid>`) that starts each
 * partition at the high watermark it had when the tail began, commits nothing, and is deleted on
 * close.
 */
export async function tailKafka(
  ctx: KafkaReadContext,
  topics: readonly string[],
  onEvent: (e: TailedEvent) => void,
): Promise<Tail> {
  const byKafka = new Map<string, string>();
  const starts = new Map<string, Map<number, string>>();
  try {
    for (const topic of topics) {
      const kt = await ctx.ensureTopic(topic);
      byKafka.set(kt, topic);
      starts.set(kt, new Map((await ctx.admin.fetchTopicOffsets(kt)).map((p) => [p.partition, p.high])));
    }
  } catch (err) {
    throw ctx.busError(ErrorCode.BusSubscribe, `tailing ${topics.join(", ")}: their offsets`, err);
  }
  const groupId = kafkaName(`${ctx.topicPrefix}tail.${randomUUID()}`);
  const consumer = ctx.kafka.consumer({ groupId, maxWaitTimeInMs: ctx.maxWaitTimeMs, allowAutoTopicCreation: false });
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await consumer.disconnect().catch((err: unknown) => ctx.log.warn({ err }, "tail: consumer disconnect failed"));
      await ctx.admin
        .deleteGroups([groupId])
        .catch((err: unknown) => ctx.log.debug({ err, groupId }, "tail: deleting the tail's group failed"));
    })());
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [...byKafka.keys()], fromBeginning: false });
    consumer.on(consumer.events.GROUP_JOIN, () => {
      for (const [topic, partitions] of starts)
        for (const [partition, offset] of partitions) consumer.seek({ topic, partition, offset });
      // A rejoin later resumes where the tail is: nothing committed, so seek only once.
      starts.clear();
    });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic: kt, partition, message }) => {
        const topic = byKafka.get(kt) ?? kt;
        const event = decode(ctx, topic, partition, message);
        if (event !== undefined) onEvent({ topic, event });
      },
    });
  } catch (err) {
    await close();
    throw ctx.busError(ErrorCode.BusSubscribe, `tailing ${topics.join(", ")}`, err);
  }
  return { close };
}
