/**
 * `read` of the JetStream bus: an ordered consumer (ephemeral, no acks, created and removed by the
 * client) on the topic's stream, filtered to the topic's subject, from the oldest message or the
 * first at or after `from`, up to the sequence of the subject's last message when the read began.
 */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "nats";
import { ErrorCode, type BusError, type Logger } from "@ofevents/core";
import { decodeBusEvent } from "../envelope.js";
import { JsErr, jsErrCode, type StreamEntry } from "./jetstream-streams.js";
import type { ReadOptions, RetainedEvent, Tail, TailedEvent } from "../types.js";

export interface JetStreamReadContext {
  js: JetStreamClient;
  jsm: JetStreamManager;
  log: Logger;
  ensureStream(topic: string): Promise<StreamEntry>;
  busError(code: ErrorCode, what: string, err: unknown): BusError;
}

/** Messages asked for per fetch. */
const FETCH_BATCH = 256;
/** How long one fetch waits for messages the stream has (they are there: this only bounds a stall). */
const FETCH_EXPIRES_MS = 5_000;

export async function* readJetStream(
  ctx: JetStreamReadContext,
  topic: string,
  o: ReadOptions = {},
): AsyncGenerator<RetainedEvent> {
  const { stream, subject } = await ctx.ensureStream(topic);
  let end: number;
  try {
    end = (await ctx.jsm.streams.getMessage(stream, { last_by_subj: subject })).seq;
  } catch (err) {
    if (jsErrCode(err) === JsErr.NoMessageFound) return;
    throw ctx.busError(ErrorCode.BusSubscribe, `reading topic ${topic}: the last message`, err);
  }
  const consumer = await ctx.js.consumers
    .get(stream, {
      filterSubjects: subject,
      // (An explicit DeliverPolicy.All makes nats.js's ordered consumer wait forever: it is the default.)
      ...(o.from === undefined
        ? {}
        : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: o.from.toISOString() }),
    })
    .catch((err: unknown) => {
      throw ctx.busError(ErrorCode.BusSubscribe, `reading topic ${topic}`, err);
    });
  try {
    for (;;) {
      o.signal?.throwIfAborted();
      const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
      let got = 0;
      for await (const m of batch) {
        got++;
        const seq = m.seq;
        const time = new Date(m.info.timestampNanos / 1e6);
        if (o.to !== undefined && time > o.to) return;
        const event = decode(ctx, topic, m);
        if (event !== undefined) yield { event, topic, position: `${stream}:${seq}`, time };
        // The read ends where the subject ended when it began, or where nothing follows.
        if (seq >= end || m.info.pending === 0) return;
        o.signal?.throwIfAborted();
      }
      // Nothing came within the fetch: the rest was removed meanwhile (age, limits, deletes).
      if (got === 0) return;
    }
  } finally {
    await consumer.delete().catch(() => undefined);
  }
}

function decode(ctx: JetStreamReadContext, topic: string, m: JsMsg) {
  try {
    return decodeBusEvent(m.data);
  } catch (err) {
    ctx.log.warn(
      { topic, seq: m.seq, err: (err as Error).message },
      "read: a message that is not a CloudEvent skipped",
    );
    return undefined;
  }
}

/**
 * `tail` of the JetStream bus: per topic an ordered consumer (ephemeral, no acks, removed on
 * close) on the topic's subject, starting with the next message.
 */
export async function tailJetStream(
  ctx: JetStreamReadContext,
  topics: readonly string[],
  onEvent: (e: TailedEvent) => void,
): Promise<Tail> {
  const running: Array<{ stop: () => Promise<void>; done: Promise<void> }> = [];
  const close = async (): Promise<void> => {
    await Promise.all(running.splice(0).map((r) => r.stop().then(() => r.done)));
  };
  try {
    for (const topic of topics) {
      const { stream, subject } = await ctx.ensureStream(topic);
      const consumer = await ctx.js.consumers
        .get(stream, { filterSubjects: subject, deliver_policy: DeliverPolicy.New })
        .catch((err: unknown) => {
          throw ctx.busError(ErrorCode.BusSubscribe, `tailing topic ${topic}`, err);
        });
      const messages = await consumer.consume();
      const done = (async () => {
        for await (const m of messages) {
          const event = decode(ctx, topic, m);
          if (event !== undefined) onEvent({ topic, event });
        }
      })().catch((err: unknown) => ctx.log.warn({ err, topic }, "tail ended"));
      running.push({
        stop: async () => {
          await messages.close().catch(() => undefined);
          await consumer.delete().catch(() => undefined);
        },
        done,
      });
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { close };
}
