/**
 * The AMQP 0-9-1 source (RabbitMQ, through amqplib): consumes a queue, either an existing one or
 * one it declares and binds to an exchange with a binding key (Argo Events' amqp source, in
 * smaller form).
 *
 * Delivery is at-least-once. The broker hands out at most `prefetch` unacknowledged messages
 * (basic.qos); each is acknowledged (basic.ack) only after `dispatch` resolved. A message the bus
 * or sink does not take is retried with backoff while it stays unacknowledged, holding its
 * prefetch slot; when the source stops, or the connection drops, it is rejected with requeue
 * (basic.nack, or implicitly by the broker when the connection is gone), so the broker hands it out
 * again with the `redelivered` flag, which becomes the extension `amqpredelivered: true`. A
 * malformed CloudEvent message, or an event the sink refused (4xx), is logged and acknowledged.
 * Up to `prefetch` dispatches run at once, so the order on the bus can differ from the queue's.
 *
 * Events: subject = the routing key the message was published with; extension `amqpexchange` =
 * the exchange it was published to (absent for the default exchange); header names that are valid
 * CloudEvents extension names become extensions. The id is the message's `message-id` property
 * when set; otherwise a random UUID, as for MQTT: AMQP 0-9-1 has no position that outlives a
 * delivery, and an id derived from the content would give two identical messages one id, which
 * the JetStream bus (its `Nats-Msg-Id` duplicate window) and a Trigger's `dedup` would drop as a
 * duplicate. A redelivered message is told apart by `amqpredelivered: true` instead.
 * `time` is the `timestamp` property when set. A message that is a CloudEvent (structured mode,
 * `cloudEvents_`/`cloudEvents:` headers in binary mode, or a JSON CloudEvent body) keeps its
 * attributes.
 *
 * When the connection or channel closes while running, the source reconnects with backoff and
 * declares its topology again.
 */
import { randomUUID } from "node:crypto";
import type { ConnectionOptions } from "node:tls";
import { connect, credentials, type Channel, type ChannelModel, type ConsumeMessage } from "amqplib";
import {
  ErrorCode,
  EventError,
  SourceError,
  SourceKind,
  sleep,
  type AmqpSourceSpec,
  type CloudEvent,
  type SecretKeySelector,
  type ValidationIssue,
  mediaType,
  sourceConsumerName,
  withoutCredentials,
} from "@ofevents/core";
import { SOURCE_RETRY, retryDelay, untilTaken } from "@ofevents/delivery";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";
import {
  CE_BATCH,
  CE_STRUCTURED,
  asCloudEvent,
  binaryEvent,
  decodeData,
  headerExtensions,
  isBinaryEvent,
  structuredEvents,
  type HeaderEntry,
} from "./message.js";

/** Unacknowledged messages per source when `prefetch` is not set. */
export const DEFAULT_PREFETCH = 16;
/** Extension attributes this source sets. */
export const AmqpExtension = {
  /** The broker handed the message out before (AMQP `redelivered`): it may have been dispatched. */
  Redelivered: "amqpredelivered",
  /** The exchange the message was published to (absent for the default exchange). */
  Exchange: "amqpexchange",
} as const;

/** Header prefixes of a binary-mode CloudEvent (CloudEvents AMQP binding; `_` as JMS and RabbitMQ tools write it). */
const CE_PREFIXES = ["cloudevents_", "cloudevents:"] as const;
const CONNECT_TIMEOUT_MS = 10_000;
const HEARTBEAT_S = 30;

type ReadSecret = (ref: SecretKeySelector) => string;

function urlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "not a URL (e.g. amqp://broker:5672/vhost)";
  }
  if (u.protocol !== "amqp:" && u.protocol !== "amqps:") return `scheme "${u.protocol}//" is not amqp:// or amqps://`;
  if (u.hostname === "") return "the URL names no host";
  return undefined;
}

/** The queue consumed: `queue.name`, else (with an exchange) `ofevents-{namespace}-{eventSource}-{event}`. */
export function queueName(
  ctx: Pick<SourceContext, "namespace" | "eventSource" | "eventName">,
  spec: AmqpSourceSpec,
): string {
  return spec.queue?.name ?? sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName);
}

/** The binding key: `routingKey`, else `#` (everything) on a topic exchange, `""` on others. */
export function bindingKey(spec: AmqpSourceSpec): string {
  return spec.routingKey ?? ((spec.exchange?.type ?? "topic") === "topic" ? "#" : "");
}

function validate(spec: AmqpSourceSpec): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const add = (path: string, message: string, code = "invalid_value"): void =>
    void issues.push({ code, path, message });
  if ((spec.url === undefined) === (spec.urlSecret === undefined)) {
    add("url", "set either url or urlSecret", spec.url === undefined ? "invalid_value" : "conflict");
  }
  if (spec.url !== undefined) {
    const problem = urlProblem(spec.url);
    if (problem !== undefined) add("url", `"${withoutCredentials(spec.url)}": ${problem}`);
    else if (spec.tls !== undefined && spec.tls.enabled !== false && new URL(spec.url).protocol === "amqp:") {
      add("tls", "TLS needs an amqps:// URL");
    }
  }
  const ex = spec.exchange;
  if (ex === undefined && spec.queue?.name === undefined) {
    add("queue", "set queue.name (an existing or declared queue) or exchange (with routingKey)");
  }
  if (ex === undefined && spec.routingKey !== undefined) {
    add("routingKey", "a binding key needs an exchange to bind to");
  }
  if (ex !== undefined) {
    if (ex.type === "direct" && spec.routingKey === undefined) {
      add("routingKey", "required with a direct exchange (the exact key to receive)");
    }
    if (
      ex.name.startsWith("amq.") &&
      ex.declare !== false &&
      !/^amq\.(direct|fanout|topic|headers|match)$/.test(ex.name)
    ) {
      add("exchange.name", 'names starting with "amq." are reserved; declare: false to use an existing one');
    }
  }
  const q = spec.queue;
  if (q?.name !== undefined && q.name.startsWith("amq.") && q.declare !== false) {
    add("queue.name", 'names starting with "amq." are reserved for the broker');
  }
  if (q?.declare === false && ex !== undefined && q.name === undefined) {
    add("queue.name", "required when the queue is not declared");
  }
  if (spec.tls !== undefined && (spec.tls.certSecret === undefined) !== (spec.tls.keySecret === undefined)) {
    add("tls", "set both certSecret and keySecret for a client certificate, or neither");
  }
  return issues;
}

function headerText(value: unknown): string {
  if (typeof value === "string") return value;
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (value instanceof Date) return value.toISOString();
  return JSON.stringify(value) ?? "";
}

function headerEntries(msg: ConsumeMessage): HeaderEntry[] {
  const out: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(msg.properties.headers ?? {})) {
    if (value !== undefined && value !== null) out.push([name, headerText(value)]);
  }
  return out;
}

/**
 * What to dispatch for one message (see the module comment for the mapping). Throws EventError for
 * a message that claims to be a CloudEvent and is not a valid one.
 */
export function messageToDispatch(msg: ConsumeMessage): DispatchInit[] {
  const headers = headerEntries(msg);
  const contentType = typeof msg.properties.contentType === "string" ? msg.properties.contentType : undefined;
  const redelivered = msg.fields.redelivered;
  const withFlag = (event: CloudEvent): DispatchInit => ({
    event: redelivered ? ({ ...event, [AmqpExtension.Redelivered]: true } as CloudEvent) : event,
  });
  const type = mediaType(contentType);
  if (type === CE_STRUCTURED || type === CE_BATCH) {
    return structuredEvents(msg.content, type === CE_BATCH).map(withFlag);
  }
  for (const prefix of CE_PREFIXES) {
    if (isBinaryEvent(headers, prefix)) {
      const withType: HeaderEntry[] = contentType === undefined ? headers : [["content-type", contentType], ...headers];
      return [withFlag(binaryEvent(withType, prefix, msg.content))];
    }
  }

  const messageId = msg.properties.messageId as unknown;
  const timestamp = msg.properties.timestamp as unknown;
  const init: DispatchInit = {
    id: typeof messageId === "string" && messageId !== "" ? messageId : undefined,
    subject: msg.fields.routingKey === "" ? undefined : msg.fields.routingKey,
  };
  // AMQP timestamps are seconds since the epoch (amqplib decodes them as numbers).
  if (typeof timestamp === "number" && Number.isFinite(timestamp)) init.time = new Date(timestamp * 1000).toISOString();
  if (msg.content.length > 0) {
    const { data, datacontenttype } = decodeData(msg.content, contentType);
    const event = datacontenttype === "application/json" ? asCloudEvent(data) : undefined;
    if (event !== undefined) return [withFlag(event)];
    init.data = data;
    init.datacontenttype = datacontenttype;
  }
  const extensions: Record<string, string | boolean> = { ...headerExtensions(headers) };
  if (msg.fields.exchange !== "") extensions[AmqpExtension.Exchange] = msg.fields.exchange;
  if (redelivered) extensions[AmqpExtension.Redelivered] = true;
  if (Object.keys(extensions).length > 0) init.extensions = extensions;
  return [init];
}

/** amqplib socket options: TLS material by reference, PLAIN credentials by reference, a connection name. */
function socketOptions(ctx: SourceContext, spec: AmqpSourceSpec, secret: ReadSecret): Record<string, unknown> {
  const o: Record<string, unknown> & ConnectionOptions = {
    timeout: CONNECT_TIMEOUT_MS,
    clientProperties: { connection_name: sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName) },
  };
  const tls = spec.tls;
  if (tls !== undefined && tls.enabled !== false) {
    if (tls.caSecret !== undefined) o.ca = [secret(tls.caSecret)];
    if (tls.certSecret !== undefined) o.cert = secret(tls.certSecret);
    if (tls.keySecret !== undefined) o.key = secret(tls.keySecret);
    if (tls.insecureSkipVerify === true) o.rejectUnauthorized = false;
  }
  if (spec.auth !== undefined) {
    o["credentials"] = credentials.plain(secret(spec.auth.usernameSecret), secret(spec.auth.passwordSecret));
  }
  return o;
}

/** The URL with a heartbeat (unless it sets one), so a dead peer is noticed within about a minute. */
function withHeartbeat(url: string): string {
  const u = new URL(url);
  if (!u.searchParams.has("heartbeat")) u.searchParams.set("heartbeat", String(HEARTBEAT_S));
  return u.toString();
}

/** One connection with its channel and consumer; `signal` aborts when it closes. */
interface Session {
  model: ChannelModel;
  channel: Channel;
  signal: AbortSignal;
  closed: Promise<void>;
  consumerTag: string;
}

export const amqpAdapter: SourceAdapter<AmqpSourceSpec> = {
  kind: SourceKind.Amqp,

  validate,

  async start(ctx: SourceContext, spec: AmqpSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const queue = queueName(ctx, spec);
    const log = ctx.logger.child({ queue, ...(spec.exchange === undefined ? {} : { exchange: spec.exchange.name }) });
    const secret: ReadSecret = (ref) => ctx.secrets.resolve(ref, ctx.namespace);
    const rawUrl = spec.url ?? secret(spec.urlSecret!).trim();
    const shownUrl = withoutCredentials(spec.url ?? "(urlSecret)");
    const problem = urlProblem(rawUrl);
    if (problem !== undefined) {
      // Said without the URL: one from a secret may carry credentials.
      throw new SourceError(
        ErrorCode.SourceStart,
        `amqp: EventSource ${ctx.namespace}/${ctx.eventSource} event ${ctx.eventName}: the URL ${spec.url === undefined ? "in urlSecret " : ""}is unusable: ${problem}`,
        SourceKind.Amqp,
      );
    }
    const url = withHeartbeat(rawUrl);
    const prefetch = spec.prefetch ?? DEFAULT_PREFETCH;
    const stopper = new AbortController();
    const onAbort = (): void => stopper.abort();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    const inFlight = new Set<Promise<void>>();

    async function handle(msg: ConsumeMessage, s: Session): Promise<void> {
      const tag = msg.fields.deliveryTag;
      let inits: DispatchInit[];
      try {
        inits = messageToDispatch(msg);
      } catch (err) {
        if (!(err instanceof EventError)) throw err;
        log.error({ err, deliveryTag: tag }, "malformed CloudEvent message; acknowledged and skipped");
        settle(s, msg, "ack");
        return;
      }
      for (const init of inits) {
        const outcome = await untilTaken(() => dispatch(init), {
          signal: s.signal,
          onRefused: (err) =>
            log.error(
              { err, routingKey: msg.fields.routingKey },
              "event refused by the bus or sink; acknowledged and skipped",
            ),
          onRetry: ({ attempt, error, delayMs }) =>
            log.warn(
              { err: error, routingKey: msg.fields.routingKey, attempt, retryInMs: delayMs },
              "dispatch failed; message not acknowledged, retrying",
            ),
        });
        if (outcome === "stopped") {
          // Back to the queue, marked redelivered; on a closed connection the broker does this itself.
          settle(s, msg, "requeue");
          return;
        }
      }
      settle(s, msg, "ack");
    }

    function settle(s: Session, msg: ConsumeMessage, how: "ack" | "requeue"): void {
      try {
        if (how === "ack") s.channel.ack(msg);
        else s.channel.nack(msg, false, true);
      } catch (err) {
        // A closed channel: the broker requeues what was not acknowledged.
        log.debug({ err, how }, "could not settle the message; the broker requeues it");
      }
    }

    /** Connects, declares and binds, starts consuming. Rejects (having closed what it opened) on any failure. */
    async function open(): Promise<Session> {
      const model = await connect(url, socketOptions(ctx, spec, secret));
      try {
        const closing = new AbortController();
        const closed = new Promise<void>((resolve) =>
          model.once("close", () => {
            closing.abort();
            resolve();
          }),
        );
        model.on("error", (err: Error) => log.warn({ err: err.message }, "amqp connection error"));
        const channel = await model.createChannel();
        channel.on("error", (err: Error) => log.warn({ err: err.message }, "amqp channel error"));
        // A channel closed by the broker (e.g. its queue deleted) ends this session: reconnect.
        channel.once("close", () => void model.close().catch(() => {}));
        const ex = spec.exchange;
        if (ex !== undefined) {
          if (ex.declare === false) await channel.checkExchange(ex.name);
          else await channel.assertExchange(ex.name, ex.type ?? "topic", { durable: ex.durable ?? true });
        }
        const q = spec.queue;
        if (q?.declare === false) await channel.checkQueue(queue);
        else {
          await channel.assertQueue(queue, {
            durable: q?.durable ?? true,
            autoDelete: q?.autoDelete ?? false,
            ...(q?.arguments === undefined ? {} : { arguments: q.arguments }),
          });
        }
        if (ex !== undefined) await channel.bindQueue(queue, ex.name, bindingKey(spec));
        await channel.prefetch(prefetch);
        const s: Session = {
          model,
          channel,
          signal: AbortSignal.any([stopper.signal, closing.signal]),
          closed,
          consumerTag: `${sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName)}-${randomUUID()}`,
        };
        await channel.consume(
          queue,
          (msg) => {
            if (msg === null) {
              log.warn("the broker cancelled the consumer (queue deleted?); reconnecting");
              void model.close().catch(() => {});
              return;
            }
            const p = handle(msg, s).catch((err: unknown) => log.error({ err }, "amqp message handling failed"));
            inFlight.add(p);
            void p.finally(() => inFlight.delete(p));
          },
          { noAck: false, consumerTag: s.consumerTag },
        );
        return s;
      } catch (err) {
        await model.close().catch(() => {});
        throw err;
      }
    }

    let session: Session;
    try {
      session = await open();
    } catch (err) {
      ctx.signal.removeEventListener("abort", onAbort);
      throw new SourceError(
        ErrorCode.SourceStart,
        `amqp: EventSource ${ctx.namespace}/${ctx.eventSource} event ${ctx.eventName}: cannot consume ${queue} at ${shownUrl}: ${(err as Error).message}`,
        SourceKind.Amqp,
        { cause: err },
      );
    }
    log.info(
      { url: shownUrl, prefetch, bindingKey: spec.exchange === undefined ? undefined : bindingKey(spec) },
      "consuming (at-least-once)",
    );

    // Reconnects with backoff whenever the session closes, until the source stops.
    const stopRequested = new Promise<void>((resolve) => stopper.signal.addEventListener("abort", () => resolve()));
    const keeper = (async () => {
      for (;;) {
        await Promise.race([session.closed, stopRequested]);
        if (stopper.signal.aborted) return;
        log.warn({ url: shownUrl }, "amqp connection closed; reconnecting");
        for (let n = 1; ; n++) {
          await sleep(retryDelay(n, SOURCE_RETRY), stopper.signal);
          if (stopper.signal.aborted) return;
          try {
            session = await open();
            log.info({ url: shownUrl, attempts: n }, "reconnected; consuming again");
            break;
          } catch (err) {
            if (n === 1) log.warn({ err: (err as Error).message }, "amqp reconnect failed; retrying with backoff");
            else log.debug({ err: (err as Error).message, attempt: n }, "amqp reconnect failed");
          }
        }
      }
    })();

    let stopped: Promise<void> | undefined;
    return {
      stop() {
        stopped ??= (async () => {
          stopper.abort();
          ctx.signal.removeEventListener("abort", onAbort);
          await keeper;
          const s = session;
          // No new messages; those in flight finish, and are acked or requeued, before the close.
          await s.channel.cancel(s.consumerTag).catch(() => {});
          await Promise.allSettled([...inFlight]);
          await s.model.close().catch(() => {});
          log.info("stopped");
        })();
        return stopped;
      },
    };
  },
};
