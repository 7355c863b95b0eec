/**
 * The raw clients the baselines use instead of our bus drivers: the same libraries (nats@2,
 * kafkajs, @dapr/dapr), the plainest code that does the job (publish and wait for the broker's
 * acknowledgement; consume and acknowledge after the handler), no framework. Loaded lazily, so a
 * child that does not use a client never loads it.
 */
import type { Consumer as KafkaConsumer, Producer } from "kafkajs";
import type { NatsConnection } from "nats";

export interface RawJetStreamOptions {
  url: string;
  /** Unique per baseline: names the stream, its subject and the durable consumer. */
  tag: string;
  /** Unacknowledged messages the consumer may have out: bounds the handlers running at once. */
  maxAckPending?: number;
  /** nats.js `noAsyncTraces`: no stack captured per request (default true, as our driver connects). */
  noAsyncTraces?: boolean;
}

export interface RawJetStream {
  /** Publishes and waits for the stream's PubAck. */
  publish(data: Uint8Array): Promise<void>;
  /** Runs `handler` per message (concurrently, up to maxAckPending), acks after it resolved. */
  consume(handler: (data: Uint8Array) => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

/** One stream (file storage, as the bus creates) with one subject and one durable pull consumer. */
export async function rawJetStream(o: RawJetStreamOptions): Promise<RawJetStream> {
  const nats = await import("nats");
  const nc: NatsConnection = await nats.connect({
    servers: o.url,
    noAsyncTraces: o.noAsyncTraces ?? true,
  });
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const stream = `raw-${o.tag}`;
  const subject = `raw.${o.tag}`;
  await jsm.streams.add({ name: stream, subjects: [subject], storage: nats.StorageType.File });
  await jsm.consumers.add(stream, {
    durable_name: "raw",
    ack_policy: nats.AckPolicy.Explicit,
    deliver_policy: nats.DeliverPolicy.All,
    max_ack_pending: o.maxAckPending ?? 64,
  });
  let messages: { stop(): void } | undefined;
  let loop: Promise<void> | undefined;
  return {
    async publish(data) {
      await js.publish(subject, data);
    },
    async consume(handler) {
      const consumer = await js.consumers.get(stream, "raw");
      const iter = await consumer.consume({ max_messages: o.maxAckPending ?? 64 });
      messages = iter;
      loop = (async () => {
        for await (const m of iter) {
          void handler(m.data).then(
            () => m.ack(),
            () => m.nak(),
          );
        }
      })();
    },
    async close() {
      messages?.stop();
      await loop?.catch(() => undefined);
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.drain().catch(() => nc.close());
    },
  };
}

export interface RawKafka {
  producer: Producer;
  /** Starts a consumer of `topic` from the oldest offset in group `group`; resolves once it joined. */
  consume(
    topic: string,
    group: string,
    handler: (value: Buffer) => Promise<void>,
    partitionsConsumedConcurrently: number,
  ): Promise<void>;
  close(): Promise<void>;
}

/** A kafkajs producer (acks all) and, on demand, one consumer (eachMessage, auto-commit). */
export async function rawKafka(brokers: string[]): Promise<RawKafka> {
  const { Kafka, logLevel } = await import("kafkajs");
  const kafka = new Kafka({ brokers, clientId: "bench-raw", logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const consumers: KafkaConsumer[] = [];
  return {
    producer,
    async consume(topic, group, handler, partitionsConsumedConcurrently) {
      const consumer = kafka.consumer({ groupId: group, maxWaitTimeInMs: 500 });
      consumers.push(consumer);
      let timer: NodeJS.Timeout | undefined;
      const joined = new Promise<void>((resolve, reject) => {
        consumer.on(consumer.events.GROUP_JOIN, () => resolve());
        timer = setTimeout(() => reject(new Error(`not joined to group ${group} after 60 s`)), 60_000);
      });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        partitionsConsumedConcurrently,
        eachMessage: async ({ message }) => {
          if (message.value !== null) await handler(message.value);
        },
      });
      // Resolves once the group gave this consumer its partitions, as the framework's source does.
      await joined.finally(() => clearTimeout(timer));
    },
    async close() {
      for (const c of consumers.splice(0)) await c.disconnect().catch(() => undefined);
      await producer.disconnect().catch(() => undefined);
    },
  };
}
