/**
 * The NATS source (nats.js), in one of two modes.
 *
 * Core NATS (no `jetstream`): a subscription, optionally in a queue group (members share the
 * messages). Core NATS has no acknowledgement and no redelivery, so this mode is at-most-once: a
 * message the bus or sink does not take (after the runtime's retries) is logged and lost, as is
 * one that arrives while the source is down or overloaded (beyond {@link CORE_MAX_PENDING} waiting
 * messages). Event ids are random.
 *
 * JetStream (`jetstream: { stream, ... }`): a durable pull consumer on the stream, filtered to the
 * subject, with explicit acks. Each message is acked only after `dispatch` resolved; when it
 * rejects the message is nak'd with a backoff delay and redelivered; a slow dispatch keeps it in
 * progress (`working()`) so it is not redelivered meanwhile. At-least-once: event ids are
 * `{stream}/{streamSequence}`, so a redelivered message is recognisable. A malformed message is
 * logged and terminated (`term`); an event the sink refused (4xx) is logged and acked.
 *
 * Both modes pass CloudEvents through: binary mode (`ce-*` headers, the CloudEvents NATS binding),
 * structured mode (`content-type: application/cloudevents+json`), or a JSON CloudEvent without
 * headers (the NATS binding 1.0.0). Up to {@link MAX_IN_FLIGHT} dispatches run at once, so the
 * order of events on the bus can differ from the order on the subject.
 */
import {
  AckPolicy,
  DeliverPolicy,
  NatsError,
  connect,
  nanos,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
} from "nats";
import {
  ErrorCode,
  EventError,
  SourceError,
  SourceKind,
  parseDuration,
  type Logger,
  type NatsSourceSpec,
  type SecretKeySelector,
  type ValidationIssue,
  natsSourceDurable,
  sourceConsumerName,
  withoutCredentials,
  isoTime,
  mediaType,
} from "@ofevents/core";
import { SOURCE_RETRY, refused, retryDelay } from "@ofevents/delivery";
import { logNatsStatus, natsOptions, type NatsAuth } from "@ofevents/eventbus";
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

/** Dispatches one source runs at the same time (and JetStream messages pulled ahead). */
export const MAX_IN_FLIGHT = 16;
/** Core NATS messages waiting for a dispatch slot before new ones are dropped (and logged). */
export const CORE_MAX_PENDING = 10_000;
/** JetStream's default ack wait, used when `ackWait` is not set. */
export const DEFAULT_ACK_WAIT_MS = 30_000;

/** JetStream API error codes this source tells apart. */
const JsApiCode = { ConsumerNotFound: 10014 } as const;

const SUBJECT_TOKEN = /^[^\s.]+$/;
const NAME = /^[^\s.*>/\\]+$/;

/** `ofevents-{namespace}-{eventSource}-{event}`, with characters a durable name cannot hold as `_`. */
export function defaultDurable(ctx: Pick<SourceContext, "namespace" | "eventSource" | "eventName">): string {
  return natsSourceDurable(ctx.namespace, ctx.eventSource, ctx.eventName);
}

/** Checks a subject to subscribe to: dot-separated tokens, `*` as a whole token, `>` only last. */
export function subjectProblem(subject: string): string | undefined {
  const tokens = subject.split(".");
  for (const [i, t] of tokens.entries()) {
    if (!SUBJECT_TOKEN.test(t)) return `"${subject}": empty token or whitespace`;
    if (t.includes(">") && (t !== ">" || i !== tokens.length - 1))
      return `"${subject}": ">" must be the whole last token`;
    if (t.includes("*") && t !== "*") return `"${subject}": "*" must be a whole token`;
  }
  return undefined;
}

/** Splits `url` (comma-separated) into server URLs; returns the invalid entries too. */
export function parseServers(url: string): { servers: string[]; invalid: string[] } {
  const servers: string[] = [];
  const invalid: string[] = [];
  for (const raw of url.split(",")) {
    const s = raw.trim();
    if (s === "") continue;
    let u: URL | undefined;
    try {
      u = new URL(s.includes("://") ? s : `nats://${s}`);
    } catch {
      u = undefined;
    }
    if (
      u !== undefined &&
      (u.protocol === "nats:" || u.protocol === "tls:") &&
      u.hostname !== "" &&
      (u.pathname === "" || u.pathname === "/")
    ) {
      servers.push(s);
    } else invalid.push(s);
  }
  return { servers, invalid };
}

function headerEntries(headers: MsgHdrs | undefined): HeaderEntry[] {
  const out: HeaderEntry[] = [];
  if (headers === undefined) return out;
  for (const [name, values] of headers) out.push([name, values.join(",")]);
  return out;
}

/**
 * Turns a NATS message into dispatch inputs: a CloudEvent it carries (binary, structured or batch
 * mode, or a JSON CloudEvent), or its payload as data, subject = the NATS subject, valid header
 * names as extensions. `id` and `time` come from the caller (JetStream position), or the runtime
 * (a random id and now). Throws EventError for a message that claims to be a CloudEvent and is
 * not a valid one.
 */
export function decodeNatsMessage(
  msg: { subject: string; data: Uint8Array; headers?: MsgHdrs | undefined },
  position: { id?: string | undefined; time?: string | undefined } = {},
): DispatchInit[] {
  const headers = headerEntries(msg.headers);
  const contentType = headerValue(headers, "content-type");
  const type = mediaType(contentType);
  if (type === CE_STRUCTURED || type === CE_BATCH)
    return structuredEvents(msg.data, type === CE_BATCH).map((event) => ({ event }));
  if (isBinaryEvent(headers, "ce-")) return [{ event: binaryEvent(headers, "ce-", msg.data) }];

  const init: DispatchInit = { id: position.id, time: position.time, subject: msg.subject };
  if (msg.data.length > 0) {
    const { data, datacontenttype } = decodeData(msg.data, contentType);
    const event = datacontenttype === "application/json" ? asCloudEvent(data) : undefined;
    if (event !== undefined) return [{ event }];
    init.data = data;
    init.datacontenttype = datacontenttype;
  }
  const extensions = headerExtensions(headers);
  if (Object.keys(extensions).length > 0) init.extensions = extensions;
  return [init];
}

/** A counting semaphore: bounds the dispatches in flight. */
class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(size: number) {
    this.#free = size;
  }
  acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }
  release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next();
    else this.#free++;
  }
}

function auth(ctx: SourceContext, spec: NatsSourceSpec): NatsAuth {
  const secret = (ref: SecretKeySelector | undefined) =>
    ref === undefined ? undefined : ctx.secrets.resolve(ref, ctx.namespace);
  // tokenSecret and credentialsSecret are exclusive (validate says so).
  return { token: secret(spec.tokenSecret), creds: secret(spec.credentialsSecret) };
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof NatsError && err.api_error?.err_code === code;
}

/**
 * Creates the durable pull consumer, or checks and updates an existing one: its filter subject and
 * ack wait follow the spec; `deliverPolicy` only applies when it is created.
 */
async function ensureConsumer(
  jsm: JetStreamManager,
  spec: NatsSourceSpec,
  durable: string,
  log: Logger,
): Promise<ConsumerInfo> {
  const js = spec.jetstream!;
  const ackWait = nanos(js.ackWait === undefined ? DEFAULT_ACK_WAIT_MS : parseDuration(js.ackWait)!);
  let info: ConsumerInfo | undefined;
  try {
    info = await jsm.consumers.info(js.stream, durable);
  } catch (err) {
    if (!isApiError(err, JsApiCode.ConsumerNotFound)) throw err;
  }
  if (info === undefined) {
    const config: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: (js.deliverPolicy ?? "new") as DeliverPolicy,
      filter_subject: spec.subject,
      ack_wait: ackWait,
      max_deliver: -1,
    };
    log.info({ stream: js.stream, durable }, "creating the durable consumer");
    return await jsm.consumers.add(js.stream, config);
  }
  if (info.config.deliver_subject !== undefined && info.config.deliver_subject !== "") {
    throw new Error(`consumer ${durable} on stream ${js.stream} is a push consumer; name another durable`);
  }
  if (info.config.ack_policy !== AckPolicy.Explicit) {
    throw new Error(`consumer ${durable} on stream ${js.stream} does not use explicit acks; name another durable`);
  }
  if (info.config.filter_subject !== spec.subject || info.config.ack_wait !== ackWait) {
    log.info({ stream: js.stream, durable }, "updating the durable consumer (filter subject, ack wait)");
    return await jsm.consumers.update(js.stream, durable, { filter_subject: spec.subject, ack_wait: ackWait });
  }
  return info;
}

export const natsAdapter: SourceAdapter<NatsSourceSpec> = {
  kind: SourceKind.Nats,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    const { servers, invalid } = parseServers(spec.url);
    if (invalid.length > 0) {
      issues.push({
        code: "invalid_value",
        path: "url",
        message: `not a nats:// or tls:// server URL: ${invalid.map((s) => JSON.stringify(withoutCredentials(s))).join(", ")}`,
      });
    } else if (servers.length === 0) issues.push({ code: "invalid_value", path: "url", message: "no server given" });
    const problem = subjectProblem(spec.subject);
    if (problem !== undefined) issues.push({ code: "invalid_value", path: "subject", message: problem });
    if (spec.queueGroup !== undefined && !/^\S+$/.test(spec.queueGroup)) {
      issues.push({ code: "invalid_value", path: "queueGroup", message: "must be non-empty, without whitespace" });
    }
    if (spec.tokenSecret !== undefined && spec.credentialsSecret !== undefined) {
      issues.push({
        code: "conflict",
        path: "tokenSecret",
        message: "set either tokenSecret or credentialsSecret, not both",
      });
    }
    const js = spec.jetstream;
    if (js !== undefined) {
      if (spec.queueGroup !== undefined) {
        issues.push({
          code: "conflict",
          path: "queueGroup",
          message: "queueGroup is for core NATS; JetStream sources sharing a durable already share its messages",
        });
      }
      if (!NAME.test(js.stream))
        issues.push({
          code: "invalid_value",
          path: "jetstream.stream",
          message: `"${js.stream}" is not a stream name (no ".", "*", ">", "/", whitespace)`,
        });
      if (js.durable !== undefined && !NAME.test(js.durable)) {
        issues.push({
          code: "invalid_value",
          path: "jetstream.durable",
          message: `"${js.durable}" is not a consumer name (no ".", "*", ">", "/", whitespace)`,
        });
      }
      if (js.ackWait !== undefined && (parseDuration(js.ackWait) ?? 0) < 1_000) {
        issues.push({ code: "invalid_value", path: "jetstream.ackWait", message: "must be at least 1s" });
      }
    }
    return issues;
  },

  async start(ctx: SourceContext, spec: NatsSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const log = ctx.logger.child({
      subject: spec.subject,
      ...(spec.jetstream === undefined ? {} : { stream: spec.jetstream.stream }),
    });
    let nc: NatsConnection;
    try {
      nc = await connect(
        natsOptions(
          parseServers(spec.url).servers,
          sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName),
          auth(ctx, spec),
        ),
      );
    } catch (err) {
      // Names the resource and the servers (without any user:password@ in them); nats.js's
      // messages never carry the token or the creds.
      const at = withoutCredentials(parseServers(spec.url).servers.join(","));
      throw new SourceError(
        ErrorCode.SourceStart,
        `nats: EventSource ${ctx.namespace}/${ctx.eventSource} event ${ctx.eventName}: cannot connect to ${at}: ${(err as Error).message}`,
        SourceKind.Nats,
        { cause: err },
      );
    }
    logNatsStatus(nc, log);
    const slots = new Slots(MAX_IN_FLIGHT);
    const inFlight = new Set<Promise<void>>();
    let stopping = false;
    const track = (p: Promise<void>): void => {
      inFlight.add(p);
      void p.finally(() => {
        inFlight.delete(p);
        slots.release();
      });
    };
    const closeConnection = async (): Promise<void> => {
      await nc.drain().catch(() => nc.close());
    };

    if (spec.jetstream === undefined) {
      const sub = nc.subscribe(spec.subject, spec.queueGroup === undefined ? {} : { queue: spec.queueGroup });
      let dropped = 0;
      const handle = async (m: Msg): Promise<void> => {
        let inits: DispatchInit[];
        try {
          inits = decodeNatsMessage(m);
        } catch (err) {
          if (!(err instanceof EventError)) throw err;
          log.error({ err, natsSubject: m.subject }, "malformed message; dropping it");
          return;
        }
        for (const init of inits) {
          try {
            await dispatch(init);
          } catch (err) {
            // Core NATS cannot redeliver: at-most-once.
            log.error(
              { err, natsSubject: m.subject },
              "event not taken and lost (core NATS has no redelivery; use jetstream)",
            );
          }
        }
      };
      const loop = (async () => {
        for await (const m of sub) {
          if (sub.getPending() > CORE_MAX_PENDING) {
            if (dropped++ % 1000 === 0)
              log.warn({ dropped, pending: sub.getPending() }, "too many messages waiting; dropping");
            continue;
          }
          await slots.acquire();
          track(handle(m).catch((err: unknown) => log.error({ err }, "message handling failed")));
        }
      })();
      // Resolve start() only once the server has the subscription: what is published after it arrives.
      await nc.flush();
      log.info({ queueGroup: spec.queueGroup }, "subscribed (core NATS, at-most-once)");
      let stopped: Promise<void> | undefined;
      return {
        stop() {
          stopped ??= (async () => {
            stopping = true;
            // Drain: no new messages; the ones already received are still dispatched.
            await sub.drain().catch(() => {});
            await loop.catch(() => {});
            await Promise.allSettled([...inFlight]);
            await closeConnection();
            log.info("stopped");
          })();
          return stopped;
        },
      };
    }

    const stream = spec.jetstream.stream;
    const durable = spec.jetstream.durable ?? defaultDurable(ctx);
    let messages: ConsumerMessages;
    let ackWaitMs: number;
    try {
      const info = await ensureConsumer(await nc.jetstreamManager(), spec, durable, log);
      ackWaitMs = Math.round((info.config.ack_wait ?? nanos(DEFAULT_ACK_WAIT_MS)) / 1e6);
      const consumer = await nc.jetstream().consumers.get(stream, durable);
      messages = await consumer.consume({ max_messages: MAX_IN_FLIGHT });
    } catch (err) {
      await closeConnection();
      throw new SourceError(ErrorCode.SourceStart, `nats jetstream: ${(err as Error).message}`, SourceKind.Nats, {
        cause: err,
      });
    }
    void (async () => {
      for await (const s of await messages.status())
        log.warn({ status: s.type, data: String(s.data) }, "jetstream consumer");
    })().catch(() => {});

    const handle = async (m: JsMsg): Promise<void> => {
      const position = `${m.info.stream}/${m.info.streamSequence}`;
      let inits: DispatchInit[];
      try {
        inits = decodeNatsMessage(m, {
          id: position,
          time: isoTime(Math.floor(m.info.timestampNanos / 1e6)),
        });
      } catch (err) {
        if (!(err instanceof EventError)) throw err;
        log.error({ err, position }, "malformed message; terminating it");
        m.term(err.message);
        return;
      }
      // In progress while the dispatch lasts: no redelivery to another member meanwhile.
      const working = setInterval(() => m.working(), Math.max(100, Math.floor(ackWaitMs / 3)));
      try {
        for (const init of inits) {
          try {
            await dispatch(init);
          } catch (err) {
            if (!refused(err)) throw err;
            log.error({ err, position }, "event refused; skipping it");
          }
        }
        m.ack();
      } catch (err) {
        if (stopping) {
          // Redeliverable at once, to whichever member runs next.
          m.nak();
          return;
        }
        const delayMs = retryDelay(m.info.deliveryCount, SOURCE_RETRY);
        log.warn(
          { err, position, deliveries: m.info.deliveryCount, retryInMs: delayMs },
          "message not taken; nak'd for redelivery",
        );
        m.nak(delayMs);
      } finally {
        clearInterval(working);
      }
    };

    const loop = (async () => {
      for await (const m of messages) {
        await slots.acquire();
        if (stopping) {
          slots.release();
          m.nak();
          continue;
        }
        track(handle(m).catch((err: unknown) => log.error({ err }, "message handling failed")));
      }
    })();
    log.info({ durable, ackWaitMs }, "consuming (JetStream, at-least-once)");

    let stopped: Promise<void> | undefined;
    return {
      stop() {
        stopped ??= (async () => {
          stopping = true;
          // Messages pulled but not yet handed out are redelivered after ack wait.
          await messages.close().catch(() => {});
          await loop.catch(() => {});
          await Promise.allSettled([...inFlight]);
          await closeConnection();
          log.info("stopped");
        })();
        return stopped;
      },
    };
  },
};
