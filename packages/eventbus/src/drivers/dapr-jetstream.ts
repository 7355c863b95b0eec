/**
 * Dapr's pubsub.jetstream component never creates streams. With the dapr driver on a JetStream bus,
 * this creates one stream per Dapr topic, whose only subject is the topic, before its first use
 * (idempotent: an existing stream is fine).
 */
import { daprJetStreamStreamName } from "@ofevents/core";
import { connect, type JetStreamManager, type NatsConnection } from "nats";

export interface JetStreamTopicPreparer {
  prepareTopic(daprTopic: string): Promise<void>;
  close(): Promise<void>;
}

export { daprJetStreamStreamName };

export function createJetStreamTopicPreparer(url: string): JetStreamTopicPreparer {
  let conn: Promise<{ nc: NatsConnection; jsm: JetStreamManager }> | undefined;
  const manager = (): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> => {
    conn ??= (async () => {
      const nc = await connect({ servers: url.split(",").map((s) => s.trim()), maxReconnectAttempts: -1 });
      return { nc, jsm: await nc.jetstreamManager() };
    })();
    conn.catch(() => (conn = undefined));
    return conn;
  };
  return {
    async prepareTopic(daprTopic) {
      const { jsm } = await manager();
      const name = daprJetStreamStreamName(daprTopic);
      try {
        await jsm.streams.add({ name, subjects: [daprTopic] });
      } catch (err) {
        // Already there (same or compatible config) is fine; anything else is the caller's error.
        await jsm.streams.info(name).catch(() => {
          throw err;
        });
      }
    },
    async close() {
      if (conn === undefined) return;
      const { nc } = await conn;
      await nc.drain().catch(() => nc.close());
    },
  };
}
