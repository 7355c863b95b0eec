/**
 * JetStream publishes of one connection, their PubAcks matched by reply subject on one inbox
 * subscription. nats.js's `js.publish` makes a request per publish, and every request, once
 * answered, builds an error with a stack trace that nobody reads (its `RequestOne.cancel`
 * rejects the promise it has just resolved): 6–8 % of a publishing process's CPU in E5's
 * profile, on top of a `Promise.race` and a timer promise per request. Here a publish costs a
 * map entry with its deadline; one timer, set for the earliest deadline, fails those past theirs
 * (a timer set and cleared per publish cost 0.4–0.6 µs). The answers and failures are nats.js's own (`NatsError` with its
 * codes, `api_error` from the server), so callers read them as they read `js.publish`'s:
 *
 * - no stream on the subject: `ErrorCode.NoResponders` (the server's 503 status);
 * - no answer within the timeout: `ErrorCode.Timeout`;
 * - an error from JetStream (e.g. a message larger than the stream allows): its code and `api_error`;
 * - a publish the account may not make: `ErrorCode.PermissionsViolation`, as soon as the server says so;
 * - the connection closed: `ErrorCode.ConnectionClosed`, at once for every publish waiting.
 */
import {
  ErrorCode,
  Events,
  NatsError,
  createInbox,
  headers,
  type ApiError,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "nats";

/** What the stream answered. */
export interface PubAck {
  stream: string;
  seq: number;
  /** The stream had a message with this Nats-Msg-Id within its duplicate window. */
  duplicate: boolean;
}

interface Waiting {
  subject: string;
  resolve: (ack: PubAck) => void;
  reject: (err: NatsError) => void;
  /** Date.now() after which it fails with Timeout. */
  deadline: number;
}

interface PubAckBody {
  stream?: unknown;
  seq?: unknown;
  duplicate?: unknown;
  error?: ApiError;
}

export class JetStreamPublisher {
  readonly #nc: NatsConnection;
  /** `<inbox>.`: a publish's reply subject is this plus its token. */
  readonly #inbox: string;
  readonly #waiting = new Map<string, Waiting>();
  #next = 0;
  #sub: Subscription | undefined;
  /** Set for #timerAt, the earliest deadline known when it was set. */
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    this.#inbox = `${createInbox()}.`;
    void nc.closed().then(() => this.#failAll(NatsError.errorForCode(ErrorCode.ConnectionClosed)));
    void this.#watchPermissions();
  }

  /** Publishes `data` with `msgId` as Nats-Msg-Id; resolves on the stream's PubAck. */
  publish(subject: string, data: Uint8Array, msgId: string, timeoutMs: number): Promise<PubAck> {
    return new Promise<PubAck>((resolve, reject) => {
      const token = (this.#next++).toString(36);
      try {
        if (this.#sub === undefined)
          this.#sub = this.#nc.subscribe(`${this.#inbox}*`, { callback: (err, msg) => this.#answer(err, msg) });
        const h = headers();
        h.set("Nats-Msg-Id", msgId);
        const deadline = Date.now() + timeoutMs;
        this.#waiting.set(token, { subject, resolve, reject, deadline });
        if (deadline < this.#timerAt) this.#arm(deadline);
        this.#nc.publish(subject, data, { reply: this.#inbox + token, headers: h });
      } catch (err) {
        // Closed or draining connection, payload over the server's limit, an invalid subject.
        this.#settled(token);
        reject(err);
      }
    });
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, at - Date.now()));
  }

  /** Fails the publishes past their deadline; sets the timer for the next one. */
  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const [token, w] of this.#waiting) {
      if (w.deadline <= now) {
        this.#waiting.delete(token);
        w.reject(NatsError.errorForCode(ErrorCode.Timeout));
      } else if (w.deadline < next) next = w.deadline;
    }
    if (next !== Infinity) this.#arm(next);
  }

  /** Forgets a publish; with none left waiting, the timer goes too (it would hold the process). */
  #settled(token: string): void {
    this.#waiting.delete(token);
    if (this.#waiting.size === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
    }
  }

  /** Publishes waiting for an answer (for tests and diagnostics). */
  get waiting(): number {
    return this.#waiting.size;
  }

  #answer(err: NatsError | null, msg: Msg): void {
    if (err !== null) {
      // The inbox subscription itself failed (e.g. not allowed): nothing will be answered.
      this.#sub = undefined;
      this.#failAll(err);
      return;
    }
    const token = msg.subject.slice(this.#inbox.length);
    const w = this.#waiting.get(token);
    if (w === undefined) return; // answered after its timeout
    this.#settled(token);
    if (msg.data.length === 0) {
      const code = msg.headers?.code ?? 0;
      w.reject(
        code === 503
          ? NatsError.errorForCode(ErrorCode.NoResponders)
          : new NatsError(msg.headers?.description || "an empty answer to a JetStream publish", String(code)),
      );
      return;
    }
    let body: PubAckBody;
    try {
      const text = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString("utf8");
      body = JSON.parse(text) as PubAckBody;
    } catch (e) {
      w.reject(new NatsError("the answer to a JetStream publish is not JSON", ErrorCode.BadJson, e as Error));
      return;
    }
    if (typeof body.error === "object" && body.error !== null) {
      const e = new NatsError(body.error.description || ErrorCode.Unknown, String(body.error.code));
      e.api_error = body.error;
      w.reject(e);
      return;
    }
    if (typeof body.stream !== "string" || body.stream === "") {
      w.reject(NatsError.errorForCode(ErrorCode.JetStreamInvalidAck));
      return;
    }
    w.resolve({ stream: body.stream, seq: Number(body.seq), duplicate: body.duplicate === true });
  }

  #failAll(err: NatsError, subject?: string): void {
    for (const [token, w] of this.#waiting) {
      if (subject !== undefined && w.subject !== subject) continue;
      this.#settled(token);
      w.reject(err);
    }
  }

  /** The server refuses a publish with a -ERR and no answer: fail the publishes to that subject. */
  async #watchPermissions(): Promise<void> {
    for await (const s of this.#nc.status()) {
      const ctx = s.permissionContext;
      if (s.type !== Events.Error || ctx?.operation !== "publish") continue;
      this.#failAll(
        new NatsError(`Permissions Violation for Publish to "${ctx.subject}"`, ErrorCode.PermissionsViolation),
        ctx.subject,
      );
    }
  }
}
