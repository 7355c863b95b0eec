/**
 * The consumer engine every driver plugs into. A driver keeps its broker mechanics (pull loops,
 * partition state, streams, groups) and hands each delivery here as an {@link InboundMessage}
 * with the broker's primitives; the engine decides what happens to it, the same way on every
 * driver:
 *
 * - the handler resolves: `ack`;
 * - it throws before `maxDeliver` deliveries: `redelivery` is emitted, then `redeliver` after
 *   `backoffDelay(deliveries)`;
 * - it throws on delivery `maxDeliver` or later: the event goes to the dead-letter topic with the
 *   reason attributes; once the broker has it, `term` and `dead_lettered`;
 * - a message that is not a CloudEvent is wrapped as an `io.ofevents.bus.undecodable` event (its
 *   bytes as data) and dead-lettered at once: the handler cannot do anything with it, and the
 *   bytes stay visible on the dead-letter topic (the Dapr driver leaves these to daprd, which
 *   dead-letters them unchanged: see dapr.ts);
 * - a dead-letter publish that fails leaves the message on its topic: `redelivery` (with the
 *   publish error), then `redeliver` after the backoff. Nothing is dropped and `dead_lettered`
 *   only ever follows a dead letter the broker took.
 */
import { backoffDelay, newEvent, type CloudEvent, type Instrumentation, type Logger } from "@ofevents/core";
import { withDeadLetterReason } from "./deadletter.js";
import {
  DEFAULT_BACKOFF_MS,
  MAX_BACKOFF_MS,
  deadLetterTopicFor,
  type BusEvents,
  type MessageHandler,
  type SubscribeOptions,
} from "./types.js";

/** The type of the event that carries a message that is not a CloudEvent to the dead-letter topic. */
export const UNDECODABLE_EVENT_TYPE = "io.ofevents.bus.undecodable";

/** One delivery of a broker message, with the broker's primitives to settle it. */
export interface InboundMessage {
  /** The bus topic it was delivered on. */
  readonly topic: string;
  /** 1 on the first delivery, 2 on the first redelivery... */
  readonly deliveryCount: number;
  /**
   * Reading `deliveryCount` costs a parse (JetStream's reply subject): the handler then gets it as
   * a getter, read only if asked. Otherwise as a plain value: an object literal with a getter costs
   * about 0.5 µs to make, more than most handlers' own work on the bus.
   */
  readonly countIsLazy?: boolean | undefined;
  /** A fresh copy of the event (handlers never share one); throws when it is not a CloudEvent. */
  decode(): CloudEvent;
  /** The bytes as the broker holds them, carried by the undecodable envelope. */
  raw(): Uint8Array;
  /**
   * Where the message sits on the broker: `id` and `source` of the undecodable envelope (stable
   * across redeliveries), `fields` for the log line (stream sequence, partition and offset...).
   */
  position(): { id: string; source: string; fields?: Record<string, unknown> };
  /** Done with: handled. */
  ack(): void;
  /** Done with: on the dead-letter topic (JetStream `term`); `ack` where the broker has no such answer. */
  term?(): void;
  /** Deliver it again after `delayMs` (nak with delay, or a timer of the driver). */
  redeliver(delayMs: number): void;
}

export interface ConsumerOptions {
  group: string;
  /** The subscription's options: `maxDeliver`, `backoffMs`, `deadLetterTopic`. */
  options: SubscribeOptions;
  /** The bus's default `maxDeliver`, when the subscription sets none. */
  maxDeliver: number;
  handler: MessageHandler;
  events: Instrumentation<BusEvents>;
  log: Logger;
  /** Publishes a dead letter; resolves only once the broker took it. */
  publishDeadLetter(topic: string, event: CloudEvent): Promise<void>;
}

/** One subscription's consumer: the handler call and every ack / redeliver / dead-letter decision. */
export class ConsumerEngine {
  readonly maxDeliver: number;
  private readonly backoffMs: number;

  constructor(private readonly o: ConsumerOptions) {
    this.maxDeliver = Math.max(1, o.options.maxDeliver ?? o.maxDeliver);
    this.backoffMs = o.options.backoffMs ?? DEFAULT_BACKOFF_MS;
  }

  /** Redelivery delay after `deliveries` failed deliveries. */
  delay(deliveries: number): number {
    return backoffDelay(deliveries, { policy: "exponential", delayMs: this.backoffMs, maxDelayMs: MAX_BACKOFF_MS });
  }

  /** Delivers the message to the handler and settles it through exactly one primitive. Never rejects. */
  async deliver(msg: InboundMessage): Promise<void> {
    let event: CloudEvent;
    try {
      event = msg.decode();
    } catch (err) {
      const at = msg.position();
      this.o.log.error(
        { err, topic: msg.topic, group: this.o.group, ...at.fields, bytes: msg.raw().length },
        "undecodable message: dead-lettered as %s",
        UNDECODABLE_EVENT_TYPE,
      );
      const wrapped = newEvent({ id: at.id, source: at.source, type: UNDECODABLE_EVENT_TYPE, data: msg.raw() });
      await this.deadLetter(msg, wrapped, err);
      return;
    }
    try {
      await this.o.handler(
        event,
        msg.countIsLazy === true
          ? {
              topic: msg.topic,
              group: this.o.group,
              get deliveryCount() {
                return msg.deliveryCount;
              },
            }
          : { topic: msg.topic, group: this.o.group, deliveryCount: msg.deliveryCount },
      );
    } catch (err) {
      if (msg.deliveryCount >= this.maxDeliver) await this.deadLetter(msg, event, err);
      else this.redeliver(msg, event.id, err);
      return;
    }
    msg.ack();
  }

  private redeliver(msg: InboundMessage, id: string, error: unknown): void {
    const { topic, deliveryCount } = msg;
    this.o.events.emit("redelivery", { topic, group: this.o.group, id, deliveryCount, error });
    msg.redeliver(this.delay(deliveryCount));
  }

  private async deadLetter(msg: InboundMessage, event: CloudEvent, error: unknown): Promise<void> {
    const { topic, deliveryCount } = msg;
    const dlt = deadLetterTopicFor(topic, this.o.options);
    try {
      await this.o.publishDeadLetter(dlt, withDeadLetterReason(event, error, topic, deliveryCount));
    } catch (err) {
      this.o.log.error(
        { err, topic, group: this.o.group, id: event.id, deadLetterTopic: dlt },
        "dead-letter publish failed; the event stays on its topic",
      );
      this.redeliver(msg, event.id, err);
      return;
    }
    if (msg.term !== undefined) msg.term();
    else msg.ack();
    this.o.log.warn(
      { topic, group: this.o.group, id: event.id, deadLetterTopic: dlt, err: error },
      "dead-lettered after %d deliveries",
      deliveryCount,
    );
    this.o.events.emit("dead_lettered", { topic, group: this.o.group, id: event.id, deadLetterTopic: dlt, error });
  }
}
