/**
 * The Dapr bus (@dapr/dapr 3.x): events go through the Dapr sidecar to whatever broker its
 * pub/sub Component names (renderDaprComponents in @ofevents/core renders one per EventBus).
 * Every contract of the memory bus holds (docs/eventbus/dapr.md):
 *
 * - `publish` resolves on daprd's 2xx, which daprd gives once the broker took the event. The
 *   CloudEvent is sent structured (`application/cloudevents+json`), so daprd passes it through
 *   instead of wrapping it. What daprd adds on the way (`topic`, `pubsubname`, the trace
 *   attributes, `time`) is listed in the `ofdapr` extension and taken off again on delivery, so
 *   a handler sees exactly the published event. Concurrent publishes to one topic share bulk
 *   requests.
 * - `subscribe` opens a streaming subscription (gRPC `SubscribeTopicEventsAlpha1`, Dapr ≥ 1.14)
 *   per topic: no app port, subscriptions can come and go at any time, and `subscribe` resolves
 *   once daprd started the broker subscription. It asks for `rawPayload`, so the event arrives
 *   as the bytes the broker holds (daprd's gRPC envelope would drop data of some content types).
 * - The consumer group of the broker is the app's (`{appID}` in the Component): replicas of an
 *   app share the events. Within one bus, every subscribed group gets each event and the
 *   members of a group share them; daprd's delivery is answered once all groups settled it.
 * - A handler that throws gets the event again after an exponential backoff, in process, up
 *   to `maxDeliver` deliveries; then the event is published to the dead-letter topic with the
 *   reason, and only then answered SUCCESS. An undecodable message is answered DROP (daprd
 *   moves it to the subscription's dead-letter topic). Nothing is answered RETRY: with Redis
 *   that would be acked unless a Resiliency policy applies, with JetStream redelivered at once.
 *   A message still unanswered when the subscription closes is redelivered by the broker.
 */
import { randomUUID } from "node:crypto";
import { CommunicationProtocolEnum, DaprClient, GRPCClient, LogLevel, type LoggerService } from "@dapr/dapr";
import type {
  TopicEventRequest,
  TopicEventResponse_TopicEventResponseStatus,
} from "@dapr/dapr/proto/dapr/proto/runtime/v1/appcallback_pb.js";
import {
  BusError,
  ErrorCode,
  OfEventsError,
  assertCloudEvent,
  backoffDelay,
  createInstrumentation,
  daprTopicName,
  sleep,
  type CloudEvent,
  type EventBusSpec,
  type Logger,
  within,
} from "@ofevents/core";
import { ConsumerEngine } from "../consumer.js";
import { DAPR_MARKER, fromDapr, toDapr } from "../envelope.js";
import { pingWithin } from "../ping.js";
import {
  DEFAULT_MAX_DELIVER,
  RESUBSCRIBE_BACKOFF,
  DEFAULT_MAX_IN_FLIGHT,
  deadLetterTopicFor,
  type BusEvents,
  type EventBus,
  type MessageHandler,
  type SubscribeOptions,
  type Subscription,
  type Tail,
  type TailedEvent,
} from "../types.js";

export { DAPR_MARKER, fromDapr, toDapr };

export interface DaprBusOptions {
  /** Name of the pub/sub Component that carries the bus (renderDaprComponents: the bus's name). */
  pubsubName: string;
  /** Sidecar host (default 127.0.0.1). */
  host?: string | undefined;
  /** Dapr HTTP API port, for publishing (default `$DAPR_HTTP_PORT`, else 3500). */
  httpPort?: number | undefined;
  /** Dapr gRPC API port, for subscriptions (default `$DAPR_GRPC_PORT`, else 50001). */
  grpcPort?: number | undefined;
  /** Dapr API token (default `$DAPR_API_TOKEN`). */
  apiToken?: string | undefined;
  /** Prepended to each bus topic to name the Dapr topic (default: the kafka spec's topicPrefix). */
  topicPrefix?: string | undefined;
  /** Deliveries before dead-lettering unless a subscription sets its own (default: the spec's, else 5). */
  maxDeliver?: number | undefined;
  /**
   * Called once per Dapr topic before its first publish or subscription, e.g. to create the
   * JetStream stream, which Dapr's jetstream component never does. A rejection fails that
   * publish or subscribe (the next one calls it again).
   */
  prepareTopic?: ((daprTopic: string) => Promise<void>) | undefined;
  /** How long creating the bus waits for the sidecar, ms (30,000). */
  sidecarTimeoutMs?: number | undefined;
  /** How long a publish waits for daprd's answer, ms (10,000). */
  publishTimeoutMs?: number | undefined;
  /** Most events in one bulk publish request (100); 1 sends each event alone. */
  maxBulkPublish?: number | undefined;
}

export interface CreateDaprBusOptions extends DaprBusOptions {
  logger: Logger;
  /** The EventBus spec, for defaults (kafka topicPrefix, maxDeliver). */
  spec?: EventBusSpec | undefined;
}

const CE_CONTENT_TYPE = "application/cloudevents+json";
/** Publish requests in flight per topic; more publishes wait and go together in a bulk request. */
const PUBLISH_CONCURRENCY = 4;
/** Characters of a topic that travel unchanged in the publish URL path. */
const SAFE_TOPIC = /^[A-Za-z0-9._~:/-]+$/;

const Status = { Success: 0, Retry: 1, Drop: 2 } as const;
type Status = (typeof Status)[keyof typeof Status];

function portFrom(option: number | undefined, env: string, fallback: number): number {
  if (option !== undefined) return option;
  const v = process.env[env];
  if (v !== undefined && v !== "") {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0 || n > 65_535)
      throw new OfEventsError(ErrorCode.Config, `$${env} is not a port: "${v}"`);
    return n;
  }
  return fallback;
}

/** The SDK logs through this, at debug: the driver reports what matters itself. */
function sdkLogger(log: Logger): { level: LogLevel; service: LoggerService } {
  const write = (message: unknown, ...rest: unknown[]) =>
    log.debug({ sdk: "@dapr/dapr" }, [message, ...rest].map(String).join(" "));
  return { level: LogLevel.Warn, service: { error: write, warn: write, info: write, verbose: write, debug: write } };
}

/** What the SDK's HTTP client throws for a non-2xx answer: `Error(JSON.stringify({status, error_msg}))`. */
function httpAnswer(err: unknown): { status: number; body: string } | undefined {
  if (!(err instanceof Error)) return undefined;
  try {
    const p = JSON.parse(err.message) as { status?: unknown; error_msg?: unknown };
    if (typeof p.status === "number")
      return { status: p.status, body: typeof p.error_msg === "string" ? p.error_msg : "" };
  } catch {
    return undefined;
  }
  return undefined;
}

function publishError(err: unknown, topic: string): BusError {
  if (err instanceof BusError) return err;
  const answer = httpAnswer(err);
  if (answer === undefined) {
    const reason = err instanceof Error ? err.message : String(err);
    return new BusError(ErrorCode.BusPublish, `publishing to ${topic} through the Dapr sidecar: ${reason}`, {
      cause: err,
      topic,
    });
  }
  let detail = answer.body;
  try {
    const b = JSON.parse(answer.body) as { message?: unknown; errorCode?: unknown };
    if (typeof b.message === "string") detail = `${String(b.errorCode ?? "")} ${b.message}`.trim();
  } catch {
    // not JSON: keep the text
  }
  // 4xx: unknown component, forbidden topic, bad metadata: retrying will not help.
  const retriable = answer.status >= 500 || answer.status === 408 || answer.status === 429;
  return new BusError(ErrorCode.BusPublish, `publishing to ${topic}: daprd answered ${answer.status}: ${detail}`, {
    cause: err,
    retriable,
    topic,
  });
}

/**
 * The Dapr topic of a bus topic on the bus `spec` (core's daprTopicName: the name the direct
 * driver of the same bus uses), with `topicPrefix` in place of the kafka spec's when given.
 * Throws a non-retriable BusError: CONFIG for a topic the broker cannot name, BUS_PUBLISH for
 * one a Dapr publish URL cannot carry.
 */
export function daprTopicOf(topic: string, spec: EventBusSpec | undefined, topicPrefix?: string): string {
  let t: string;
  try {
    t = daprTopicName(spec, topic, topicPrefix);
  } catch (err) {
    throw new BusError(ErrorCode.Config, (err as Error).message, { topic, retriable: false, cause: err });
  }
  if (!SAFE_TOPIC.test(t)) {
    throw new BusError(
      ErrorCode.BusPublish,
      `topic "${t}" has characters a Dapr publish URL cannot carry (allowed: A-Z a-z 0-9 . _ ~ : / -)`,
      { topic, retriable: false },
    );
  }
  return t;
}

type DaprGrpc = Awaited<ReturnType<GRPCClient["getClient"]>>;
type StreamRequest = Parameters<DaprGrpc["subscribeTopicEventsAlpha1"]>[0] extends AsyncIterable<infer R> ? R : never;
type StreamResponse = ReturnType<DaprGrpc["subscribeTopicEventsAlpha1"]> extends AsyncIterable<infer R> ? R : never;

interface PendingPublish {
  body: Record<string, unknown>;
  resolve: () => void;
  reject: (err: BusError) => void;
}

interface Outbox {
  queue: PendingPublish[];
  running: number;
}

class DaprBus implements EventBus {
  readonly driver = "dapr";
  readonly events = createInstrumentation<BusEvents>();
  readonly log: Logger;
  readonly pubsub: string;
  readonly maxDeliver: number;
  private readonly topicPrefix: string | undefined;
  private readonly spec: EventBusSpec | undefined;
  private readonly prepareTopic: ((t: string) => Promise<void>) | undefined;
  private readonly prepared = new Map<string, Promise<void>>();
  private readonly outboxes = new Map<string, Outbox>();
  private readonly publishing = new Set<Promise<unknown>>();
  private readonly publishTimeoutMs: number;
  private readonly maxBulk: number;
  private readonly topics = new Map<string, TopicStream>();
  private readonly subs = new Set<DaprSubscription>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly http: DaprClient,
    private readonly grpc: GRPCClient,
    options: CreateDaprBusOptions,
    log: Logger,
    private readonly healthUrl: string,
  ) {
    this.log = log;
    this.pubsub = options.pubsubName;
    this.topicPrefix = options.topicPrefix;
    this.spec = options.spec;
    this.maxDeliver =
      options.maxDeliver ??
      options.spec?.kafka?.maxDeliver ??
      options.spec?.jetstream?.maxDeliver ??
      DEFAULT_MAX_DELIVER;
    this.prepareTopic = options.prepareTopic;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.maxBulk = Math.max(1, options.maxBulkPublish ?? 100);
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** The Dapr topic of a bus topic (see {@link daprTopicOf}). */
  daprTopic(topic: string): string {
    return daprTopicOf(topic, this.spec, this.topicPrefix);
  }

  /** Runs prepareTopic once per Dapr topic; a failure is not remembered. */
  prepare(daprTopic: string): Promise<void> {
    if (this.prepareTopic === undefined) return Promise.resolve();
    let p = this.prepared.get(daprTopic);
    if (p === undefined) {
      p = this.prepareTopic(daprTopic);
      this.prepared.set(daprTopic, p);
      p.catch(() => {
        if (this.prepared.get(daprTopic) === p) this.prepared.delete(daprTopic);
      });
    }
    return p;
  }

  grpcClient(): Promise<DaprGrpc> {
    return this.grpc.getClient();
  }

  async publish(topic: string, event: CloudEvent): Promise<void> {
    if (this.closed) throw BusError.closed(topic);
    assertCloudEvent(event);
    const daprTopic = this.daprTopic(topic);
    const p = this.enqueue(daprTopic, toDapr(event));
    this.publishing.add(p);
    try {
      await p;
    } finally {
      this.publishing.delete(p);
    }
    this.events.emit("published", { topic, id: event.id });
  }

  private async enqueue(daprTopic: string, body: Record<string, unknown>): Promise<void> {
    try {
      await this.prepare(daprTopic);
    } catch (err) {
      throw err instanceof BusError
        ? err
        : new BusError(ErrorCode.BusPublish, `preparing topic ${daprTopic}: ${(err as Error).message}`, {
            cause: err,
            topic: daprTopic,
          });
    }
    let box = this.outboxes.get(daprTopic);
    if (box === undefined) this.outboxes.set(daprTopic, (box = { queue: [], running: 0 }));
    const done = new Promise<void>((resolve, reject) => box.queue.push({ body, resolve, reject }));
    this.flush(daprTopic, box);
    return done;
  }

  private flush(daprTopic: string, box: Outbox): void {
    while (box.running < PUBLISH_CONCURRENCY && box.queue.length > 0) {
      const batch = box.queue.splice(0, this.maxBulk);
      box.running++;
      void this.send(daprTopic, batch).finally(() => {
        box.running--;
        if (box.queue.length > 0) this.flush(daprTopic, box);
        else if (box.running === 0) this.outboxes.delete(daprTopic);
      });
    }
  }

  /** One request for the batch; settles every entry of it, never rejects. */
  private async send(daprTopic: string, batch: PendingPublish[]): Promise<void> {
    const timeout = () =>
      new BusError(
        ErrorCode.BusPublish,
        `publishing to ${daprTopic}: no answer from the Dapr sidecar in ${this.publishTimeoutMs} ms`,
        {
          topic: daprTopic,
        },
      );
    if (batch.length === 1) {
      const entry = batch[0]!;
      try {
        // The SDK's HTTP publish never throws: it returns { error } (a trap: unchecked, every
        // failure would look like success).
        const res = await within(
          this.http.pubsub.publish(this.pubsub, daprTopic, entry.body, { contentType: CE_CONTENT_TYPE }),
          this.publishTimeoutMs,
          timeout,
        );
        if (res.error !== undefined) entry.reject(publishError(res.error, daprTopic));
        else entry.resolve();
      } catch (err) {
        entry.reject(publishError(err, daprTopic));
      }
      return;
    }
    // Bulk: the SDK's publishBulk matches failed entries by `entryID` while daprd answers
    // `entryId`, so it reports every broker failure as success. Its HTTP client is used directly.
    const entries = batch.map((p, i) => ({ entryId: String(i), event: p.body, contentType: CE_CONTENT_TYPE }));
    const http = this.http.daprClient as unknown as {
      executeWithApiVersion(version: string, url: string, params: Record<string, unknown>): Promise<unknown>;
    };
    try {
      await within(
        http.executeWithApiVersion("v1.0-alpha1", `/publish/bulk/${this.pubsub}/${daprTopic}`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: entries,
        }),
        this.publishTimeoutMs,
        timeout,
      );
      for (const p of batch) p.resolve();
    } catch (err) {
      const whole = publishError(err, daprTopic);
      const answer = httpAnswer(err);
      let failed: Map<string, string> | undefined;
      if (answer !== undefined) {
        try {
          const body = JSON.parse(answer.body) as { failedEntries?: Array<{ entryId?: string; error?: string }> };
          if (Array.isArray(body.failedEntries))
            failed = new Map(body.failedEntries.map((f) => [String(f.entryId), f.error ?? ""]));
        } catch {
          failed = undefined;
        }
      }
      batch.forEach((p, i) => {
        const reason = failed?.get(String(i));
        if (failed === undefined) p.reject(whole);
        else if (reason === undefined) p.resolve();
        else
          p.reject(
            new BusError(ErrorCode.BusPublish, `publishing to ${daprTopic}: ${reason}`, {
              cause: err,
              topic: daprTopic,
            }),
          );
      });
    }
  }

  async subscribe(
    topics: readonly string[],
    handler: MessageHandler,
    options: SubscribeOptions,
  ): Promise<Subscription> {
    if (this.closed) throw BusError.closed();
    if (options.group === "")
      throw new BusError(ErrorCode.BusSubscribe, "a subscription needs a group", { retriable: false });
    const unique = [...new Set(topics)];
    const member: Member = {
      engine: new ConsumerEngine({
        group: options.group,
        options,
        maxDeliver: this.maxDeliver,
        handler,
        events: this.events,
        log: this.log.child({ group: options.group }),
        publishDeadLetter: (topic, event) => this.publish(topic, event),
      }),
      maxInFlight: Math.max(1, options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT),
      inFlight: 0,
      closed: false,
      idle: [],
    };
    const sub = new DaprSubscription(this, unique, options.group, member);
    this.subs.add(sub);
    try {
      for (const topic of unique) {
        const daprTopic = this.daprTopic(topic);
        let ts = this.topics.get(topic);
        if (ts === undefined) this.topics.set(topic, (ts = new TopicStream(this, topic, daprTopic)));
        sub.streams.push(ts);
        await ts.join(member, options);
      }
    } catch (err) {
      await sub.close();
      if (err instanceof BusError) {
        throw err.code === ErrorCode.BusPublish
          ? new BusError(ErrorCode.BusSubscribe, err.message, {
              cause: err.cause,
              retriable: err.retriable,
              ...(err.topic === undefined ? {} : { topic: err.topic }),
            })
          : err;
      }
      throw new BusError(ErrorCode.BusSubscribe, `subscribing ${options.group}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return sub;
  }

  /**
   * Watches topics through this sidecar: a streaming subscription whose group is the sidecar's
   * app id at the broker (give the tail a sidecar of its own), each event acknowledged as seen.
   */
  async tail(topics: readonly string[], onEvent: (e: TailedEvent) => void): Promise<Tail> {
    const sub = await this.subscribe(
      topics,
      async (event, info) => {
        onEvent({ topic: info.topic, event });
      },
      { group: `tail-${randomUUID()}`, maxDeliver: 1 },
    );
    return { close: () => sub.close() };
  }

  /** A stream whose last group left: forget it (a later subscribe opens a new one). */
  dropTopic(ts: TopicStream): void {
    if (this.topics.get(ts.topic) === ts) this.topics.delete(ts.topic);
  }

  forget(sub: DaprSubscription): void {
    this.subs.delete(sub);
  }

  ping(timeoutMs: number): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(BusError.closed());
    // The outbound check: components loaded and the publish API up (no app channel involved).
    return pingWithin(
      `the Dapr sidecar at ${this.healthUrl}`,
      async () => {
        const res = await fetch(this.healthUrl, { signal: AbortSignal.timeout(timeoutMs) });
        await res.arrayBuffer();
        if (res.status !== 204 && res.status !== 200) throw new Error(`answered ${res.status}`);
      },
      timeoutMs,
    );
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.subs].map((s) => s.close()));
    await Promise.allSettled([...this.topics.values()].map((t) => t.close()));
    await Promise.allSettled([...this.publishing]);
    // The SDK's HTTPClient.stop() destroys the HTTP agents every client of the process shares:
    // not called. Its gRPC transport holds no connection to close.
  }
}

interface Member {
  engine: ConsumerEngine;
  maxInFlight: number;
  inFlight: number;
  closed: boolean;
  idle: Array<() => void>;
}

interface Group {
  name: string;
  members: Member[];
  next: number;
  queue: Task[];
  timers: Set<NodeJS.Timeout>;
  /** Options of the latest subscription of the group. */
  options: SubscribeOptions;
}

/** One delivery by daprd (and its duplicates, redelivered while it is being handled). */
interface Delivery {
  event: CloudEvent;
  /** Envelope ids to answer, each with the connection it came on. */
  answers: Array<{ conn: Conn; id: string }>;
  /** Groups that have not settled it yet. */
  open: Set<Group>;
  done: boolean;
}

interface Task {
  delivery: Delivery;
  group: Group;
  deliveries: number;
}

/** One gRPC stream: the requests we send, and whether it is still the live one. */
class Conn {
  private readonly queue: StreamRequest[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  readonly abort = new AbortController();
  live = true;

  send(req: StreamRequest): void {
    if (this.ended) return;
    this.queue.push(req);
    this.wake?.();
  }

  /** Half-closes: the requests queued so far are still sent. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *requests(): AsyncGenerator<StreamRequest> {
    for (;;) {
      while (this.queue.length > 0) yield this.queue.shift()!;
      if (this.ended) return;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }
}

/**
 * The streaming subscription of one topic, shared by every group of the bus subscribed to it.
 * Reconnects (with backoff) when the stream breaks, until closed.
 */
class TopicStream {
  readonly groups = new Map<string, Group>();
  private readonly byId = new Map<string, Delivery>();
  private readonly log: Logger;
  private conn: Conn | undefined;
  private opening: Promise<void> | undefined;
  private reading: Promise<void> | undefined;
  private closed = false;
  private closingP: Promise<void> | undefined;
  private deadLetterTopic: string | undefined;
  /** Aborted on close: ends back-off pauses at once. */
  private readonly stop = new AbortController();

  constructor(
    private readonly bus: DaprBus,
    readonly topic: string,
    readonly daprTopic: string,
  ) {
    this.log = bus.log.child({ topic });
  }

  /** Adds a member to its group; resolves once the stream is subscribed. */
  async join(member: Member, options: SubscribeOptions): Promise<void> {
    if (this.closed) throw BusError.closed(this.topic);
    let g = this.groups.get(options.group);
    if (g === undefined) {
      g = { name: options.group, members: [], next: 0, queue: [], timers: new Set(), options };
      this.groups.set(options.group, g);
    }
    g.options = options;
    g.members.push(member);
    if (this.deadLetterTopic === undefined) {
      this.deadLetterTopic = this.bus.daprTopic(deadLetterTopicFor(this.topic, options));
    }
    this.opening ??= this.open();
    try {
      await this.opening;
    } catch (err) {
      this.opening = undefined;
      throw err;
    }
    this.pump(g);
  }

  private async open(): Promise<void> {
    await Promise.all([this.bus.prepare(this.daprTopic), this.bus.prepare(this.deadLetterTopic!)]).catch(
      (err: unknown) => {
        throw new BusError(ErrorCode.BusSubscribe, `preparing topic ${this.daprTopic}: ${(err as Error).message}`, {
          cause: err,
          topic: this.topic,
        });
      },
    );
    const { conn, responses } = await this.connect();
    this.reading = this.read(conn, responses);
  }

  /** Opens the stream and waits for daprd's initial answer (the broker subscription is running). */
  private async connect(): Promise<{ conn: Conn; responses: AsyncIterator<StreamResponse> }> {
    const client = await this.bus.grpcClient();
    const conn = new Conn();
    conn.send({
      subscribeTopicEventsRequestType: {
        case: "initialRequest",
        value: {
          pubsubName: this.bus.pubsub,
          topic: this.daprTopic,
          // The broker's bytes as they are (daprd's gRPC envelope drops data of content types
          // it does not know). A map<string,string> here: no JSON-encoding of the value.
          metadata: { rawPayload: "true" },
          deadLetterTopic: this.deadLetterTopic!,
        },
      },
    } as StreamRequest);
    const stream = client.subscribeTopicEventsAlpha1(conn.requests(), { signal: conn.abort.signal });
    const responses = stream[Symbol.asyncIterator]();
    try {
      const first = await responses.next();
      if (first.done === true || first.value.subscribeTopicEventsResponseType.case !== "initialResponse") {
        throw new Error("daprd ended the stream without confirming the subscription");
      }
    } catch (err) {
      conn.live = false;
      conn.abort.abort();
      throw this.subscribeError(err);
    }
    this.conn = conn;
    this.log.debug({ daprTopic: this.daprTopic, pubsub: this.bus.pubsub }, "streaming subscription open");
    return { conn, responses };
  }

  private subscribeError(err: unknown): BusError {
    if (err instanceof BusError) return err;
    const e = err as { code?: unknown; rawMessage?: unknown; message?: unknown };
    const reason =
      typeof e.rawMessage === "string" ? e.rawMessage : typeof e.message === "string" ? e.message : String(err);
    // ConnectRPC codes: 3 InvalidArgument, 5 NotFound, 7 PermissionDenied, 9 FailedPrecondition, 12 Unimplemented.
    const permanent = typeof e.code === "number" && [3, 5, 7, 9, 12, 16].includes(e.code);
    return new BusError(ErrorCode.BusSubscribe, `subscribing to ${this.daprTopic} on ${this.bus.pubsub}: ${reason}`, {
      cause: err,
      retriable: !permanent,
      topic: this.topic,
    });
  }

  /** Reads events until the stream ends, then reconnects unless closed. */
  private async read(first: Conn, firstResponses: AsyncIterator<StreamResponse>): Promise<void> {
    let conn = first;
    let responses = firstResponses;
    for (let failures = 0; ;) {
      try {
        for (;;) {
          const r = await responses.next();
          if (r.done === true) break;
          failures = 0;
          const m = r.value.subscribeTopicEventsResponseType;
          if (m.case === "eventMessage") this.receive(conn, m.value);
        }
        if (!this.closed) this.log.warn("daprd ended the streaming subscription; subscribing again");
      } catch (err) {
        if (!this.closed) this.log.warn({ err }, "streaming subscription broke; subscribing again");
      }
      conn.live = false;
      if (this.closed) return;
      for (;;) {
        failures++;
        await sleep(backoffDelay(failures, RESUBSCRIBE_BACKOFF), this.stop.signal);
        if (this.closed) return;
        try {
          ({ conn, responses } = await this.connect());
          this.log.info("streaming subscription open again");
          break;
        } catch (err) {
          this.log.warn({ err, failures }, "subscribing again failed");
        }
      }
    }
  }

  private receive(conn: Conn, env: TopicEventRequest): void {
    let event: CloudEvent;
    try {
      event = fromDapr(env.data);
    } catch (err) {
      // Not a CloudEvent: nothing a handler could do with it. The one place the engine's rule
      // (dead-letter it wrapped as io.ofevents.bus.undecodable) is not applied: daprd already
      // moves it to the subscription's dead-letter topic with its bytes unchanged, which is what
      // subscribers of that topic through daprd expect.
      this.log.error(
        { err, envelope: env.id, bytes: env.data.length },
        "undecodable message dropped (daprd moves it to %s)",
        this.deadLetterTopic,
      );
      this.answer(conn, env.id, Status.Drop);
      return;
    }
    if (this.groups.size === 0) return; // closing: left unanswered, the broker redelivers it
    const existing = this.byId.get(event.id);
    if (existing !== undefined && !existing.done) {
      // Redelivered while still being handled (ack wait or processing timeout passed): answered with it.
      existing.answers.push({ conn, id: env.id });
      return;
    }
    const delivery: Delivery = {
      event,
      answers: [{ conn, id: env.id }],
      open: new Set(this.groups.values()),
      done: false,
    };
    this.byId.set(event.id, delivery);
    for (const g of delivery.open) {
      g.queue.push({ delivery, group: g, deliveries: 0 });
      this.pump(g);
    }
  }

  private answer(conn: Conn, id: string, status: Status): void {
    if (!conn.live) return; // that stream is gone; the broker redelivers the message
    conn.send({
      subscribeTopicEventsRequestType: {
        case: "eventProcessed",
        value: { id, status: { status: status as TopicEventResponse_TopicEventResponseStatus } },
      },
    } as StreamRequest);
  }

  /** Hands queued tasks to members with free capacity, round-robin. */
  pump(g: Group): void {
    while (g.queue.length > 0) {
      const member = this.pick(g);
      if (member === undefined) return;
      this.run(member, g.queue.shift()!);
    }
  }

  private pick(g: Group): Member | undefined {
    const n = g.members.length;
    for (let i = 0; i < n; i++) {
      const m = g.members[(g.next + i) % n]!;
      if (!m.closed && m.inFlight < m.maxInFlight) {
        g.next = (g.next + i + 1) % n;
        return m;
      }
    }
    return undefined;
  }

  /**
   * Redeliveries are timers in process, never a RETRY answer: with Redis that would be acked
   * unless a Resiliency policy applies, with JetStream redelivered at once.
   */
  private run(member: Member, task: Task): void {
    member.inFlight++;
    task.deliveries++;
    const g = task.group;
    const { event } = task.delivery;
    void member.engine
      .deliver({
        topic: this.topic,
        deliveryCount: task.deliveries,
        // Each delivery gets its own copy: handlers never share an object. Decoded on receipt
        // (an undecodable message is answered DROP there), so `raw` and `position` only name it.
        decode: () => structuredClone(event),
        raw: () => new TextEncoder().encode(JSON.stringify(event)),
        position: () => ({ id: event.id, source: `/ofevents/bus/dapr/${this.daprTopic}` }),
        ack: () => this.groupDone(task),
        redeliver: (delayMs) => this.redeliver(task, delayMs),
      })
      .finally(() => {
        member.inFlight--;
        if (member.inFlight === 0 && member.idle.length > 0) for (const r of member.idle.splice(0)) r();
        this.pump(g);
      });
  }

  /** A group that left, or a closed stream, leaves it unanswered: the broker redelivers it. */
  private redeliver(task: Task, delayMs: number): void {
    const g = task.group;
    if (this.groups.get(g.name) !== g || this.closed) return;
    const t = setTimeout(() => {
      g.timers.delete(t);
      if (this.groups.get(g.name) !== g) return;
      g.queue.unshift(task);
      this.pump(g);
    }, delayMs);
    g.timers.add(t);
  }

  private groupDone(task: Task): void {
    const d = task.delivery;
    d.open.delete(task.group);
    if (d.open.size === 0 && !d.done) this.finish(d, Status.Success);
  }

  private finish(d: Delivery, status: Status): void {
    d.done = true;
    if (this.byId.get(d.event.id) === d) this.byId.delete(d.event.id);
    for (const a of d.answers) this.answer(a.conn, a.id, status);
  }

  /** Removes a member; the last member of the last group closes the stream. */
  async leave(member: Member, group: string): Promise<void> {
    member.closed = true;
    const g = this.groups.get(group);
    if (g !== undefined) {
      g.members = g.members.filter((m) => m !== member);
      if (g.members.length > 0) this.pump(g);
    }
    if (member.inFlight > 0) await new Promise<void>((r) => member.idle.push(r));
    if (g !== undefined && g.members.length === 0 && this.groups.get(group) === g) {
      this.groups.delete(group);
      for (const t of g.timers) clearTimeout(t);
      g.timers.clear();
      g.queue = [];
      if (this.groups.size > 0) {
        // Deliveries only this group still held are done for the others.
        for (const d of this.byId.values()) {
          if (d.open.delete(g) && d.open.size === 0 && !d.done) this.finish(d, Status.Success);
        }
      }
    }
    if (this.groups.size === 0) await this.close();
  }

  /** Ends the stream after the answers queued so far; what is unanswered is redelivered. */
  close(): Promise<void> {
    this.closingP ??= this.shutdown();
    return this.closingP;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.stop.abort();
    this.bus.dropTopic(this);
    for (const g of this.groups.values()) for (const t of g.timers) clearTimeout(t);
    await this.opening?.catch(() => undefined);
    const conn = this.conn;
    if (conn !== undefined) {
      conn.end();
      // daprd ends its side once it unsubscribed; do not wait for a sidecar that is gone.
      await within(this.reading ?? Promise.resolve(), 5_000, () => new Error("timeout")).catch(() => undefined);
      conn.live = false;
      conn.abort.abort();
    }
    this.log.debug("streaming subscription closed");
  }
}

class DaprSubscription implements Subscription {
  readonly streams: TopicStream[] = [];
  private closing: Promise<void> | undefined;

  constructor(
    private readonly bus: DaprBus,
    readonly topics: readonly string[],
    readonly group: string,
    private readonly member: Member,
  ) {}

  close(): Promise<void> {
    this.closing ??= Promise.allSettled(this.streams.map((s) => s.leave(this.member, this.group))).then(() =>
      this.bus.forget(this),
    );
    return this.closing;
  }
}

/**
 * Connects to the Dapr sidecar and returns the bus. Rejects with a retriable BusError when the
 * sidecar does not answer within `sidecarTimeoutMs`. Publishing and subscribing need the
 * Component `pubsubName` loaded in daprd; a subscription to an unknown one rejects.
 */
export async function createDaprBus(options: CreateDaprBusOptions): Promise<EventBus> {
  const log = options.logger.child({ component: "bus.dapr", pubsub: options.pubsubName });
  if (options.pubsubName === "") throw new OfEventsError(ErrorCode.Config, "dapr bus: pubsubName is required");
  const host = options.host ?? "127.0.0.1";
  const httpPort = portFrom(options.httpPort, "DAPR_HTTP_PORT", 3500);
  const grpcPort = portFrom(options.grpcPort, "DAPR_GRPC_PORT", 50001);
  const token = options.apiToken ?? process.env["DAPR_API_TOKEN"];
  const common = {
    daprHost: host,
    logger: sdkLogger(log),
    ...(token === undefined || token === "" ? {} : { daprApiToken: token }),
  };
  const http = new DaprClient({
    ...common,
    daprPort: String(httpPort),
    communicationProtocol: CommunicationProtocolEnum.HTTP,
  });
  const grpc = new GRPCClient({ ...common, daprPort: String(grpcPort) });
  const timeoutMs = options.sidecarTimeoutMs ?? 30_000;
  try {
    await within(
      Promise.all([http.daprClient.start(), grpc.start()]),
      timeoutMs,
      () => new Error(`no answer in ${timeoutMs} ms`),
    );
  } catch (err) {
    throw new BusError(
      ErrorCode.BusSubscribe,
      `the Dapr sidecar at ${host} (HTTP ${httpPort}, gRPC ${grpcPort}) is not reachable: ${(err as Error).message}`,
      { cause: err },
    );
  }
  log.info({ host, httpPort, grpcPort }, "connected to the Dapr sidecar");
  return new DaprBus(http, grpc, options, log, `http://${host}:${httpPort}/v1.0/healthz/outbound`);
}
