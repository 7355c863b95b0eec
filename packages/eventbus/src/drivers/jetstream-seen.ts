/**
 * The JetStream bus's SeenSet: one KV bucket per name, `{token(prefix)}-dedup-{token(name)}`
 * (stream `KV_{bucket}`), keeping one value per key for the window (the bucket's TTL, its stream's
 * `max_age`). A key is stored as the base64url SHA-256 of its UTF-8, as KV keys allow only
 * `[-/_=.A-Za-z0-9]`; the value is empty, the entry's server timestamp is when it was added.
 */
import { createHash } from "node:crypto";
import { nanos, type JetStreamClient, type JetStreamManager, type KV } from "nats";
import { BusError, ErrorCode, natsToken, type Logger } from "@ofevents/core";
import { checkWindow } from "../seen.js";
import type { SeenSet } from "../types.js";

const EMPTY = new Uint8Array(0);

/** The KV bucket of the seen set `name` on a bus of stream prefix `prefix`. */
export function seenBucketName(prefix: string, name: string): string {
  return `${natsToken(prefix)}-dedup-${natsToken(name)}`;
}

function kvKey(key: string): string {
  return createHash("sha256").update(key).digest("base64url");
}

/** What the seen set needs of its bus. */
export interface JetStreamSeenContext {
  js: JetStreamClient;
  jsm: JetStreamManager;
  prefix: string;
  replicas: number;
  log: Logger;
  closed(): boolean;
  /** Classifies a NATS failure as the bus does (closed, retriable or not). */
  busError(code: ErrorCode, what: string, err: unknown): BusError;
}

/**
 * Opens (creating unless it exists) the bucket of `name`. An existing bucket with another TTL gets
 * the window as its TTL, so what it holds expires as this set counts it. Rejects with a BusError.
 */
export async function openJetStreamSeenSet(
  ctx: JetStreamSeenContext,
  name: string,
  windowMs: number,
): Promise<SeenSet> {
  checkWindow(windowMs);
  const ttlMs = Math.ceil(windowMs);
  const bucket = seenBucketName(ctx.prefix, name);
  let kv: KV;
  try {
    kv = await ctx.js.views.kv(bucket, {
      ttl: ttlMs,
      history: 1,
      replicas: ctx.replicas,
      description: `ofevents seen set ${name}`,
    });
    const { config } = (await kv.status()).streamInfo;
    if (config.max_age !== nanos(ttlMs)) {
      await ctx.jsm.streams.update(config.name, {
        ...config,
        max_age: nanos(ttlMs),
        // The server refuses a duplicate window longer than the max age.
        duplicate_window: Math.min(config.duplicate_window, nanos(ttlMs)),
      });
      ctx.log.info({ bucket, ttlMs, previousTtlMs: config.max_age / 1e6 }, "seen set bucket TTL set to the window");
    }
  } catch (err) {
    throw ctx.busError(ErrorCode.BusSubscribe, `opening seen set ${name} (KV bucket ${bucket})`, err);
  }
  return new KvSeenSet(ctx, kv, name, bucket, ttlMs);
}

class KvSeenSet implements SeenSet {
  readonly kind = "jetstream-kv";

  constructor(
    private readonly ctx: JetStreamSeenContext,
    private readonly kv: KV,
    private readonly name: string,
    private readonly bucket: string,
    private readonly windowMs: number,
  ) {}

  /** Checks the entry's age too: the bucket removes it only after its TTL, and on its own schedule. */
  async has(key: string): Promise<boolean> {
    if (this.ctx.closed()) throw BusError.closed();
    try {
      const entry = await this.kv.get(kvKey(key));
      return entry !== null && entry.operation === "PUT" && Date.now() - entry.created.getTime() < this.windowMs;
    } catch (err) {
      throw this.ctx.busError(ErrorCode.BusSubscribe, `reading seen set ${this.name} (KV bucket ${this.bucket})`, err);
    }
  }

  /** Resolves on the stream's PubAck. */
  async add(key: string): Promise<void> {
    if (this.ctx.closed()) throw BusError.closed();
    try {
      await this.kv.put(kvKey(key), EMPTY);
    } catch (err) {
      throw this.ctx.busError(ErrorCode.BusPublish, `adding to seen set ${this.name} (KV bucket ${this.bucket})`, err);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
