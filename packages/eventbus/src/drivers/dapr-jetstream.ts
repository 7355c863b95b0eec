/**
 * Dapr's pubsub.jetstream component never creates streams. With the dapr driver on a JetStream bus,
 * this creates the stream of each Dapr topic before its first use: the same stream the direct
 * driver uses (`{token(prefix)}-{token(topic)}`, subject = the topic; core's jetStreamNames), so
 * Dapr-side and direct publishers and subscribers share it. Idempotent: an existing stream is used.
 */
import {
  BusError,
  DEFAULT_JETSTREAM_STREAM_PREFIX,
  ErrorCode,
  daprJetStreamStreamName,
  silentLogger,
  type JetStreamBusSpec,
  type Logger,
} from "@ofevents/core";
import { connect, type JetStreamManager, type NatsConnection } from "nats";
import { ensureTopicStream } from "./jetstream-streams.js";
import { natsOptions, type NatsAuth } from "../clients.js";

export interface JetStreamTopicPreparer {
  /**
   * Resolves once the topic's stream exists. Rejects with a CONFIG BusError for a topic that is
   * not a NATS subject or a stream of that name with other subjects, else a retriable BusError.
   */
  prepareTopic(daprTopic: string): Promise<void>;
  close(): Promise<void>;
}

export { daprJetStreamStreamName };

/**
 * A preparer for the JetStream bus `bus` (its `url`, and the `stream` prefix, `replicas` and
 * `maxAge` the streams are created with), or for the server at a URL with the default prefix
 * (`ofevents`). `auth` carries the bus's credentials (its `credentialsSecret`, resolved).
 */
export function createJetStreamTopicPreparer(
  bus: string | Pick<JetStreamBusSpec, "url" | "stream" | "replicas" | "maxAge">,
  logger: Logger = silentLogger(),
  auth: NatsAuth = {},
): JetStreamTopicPreparer {
  const spec = typeof bus === "string" ? { url: bus, stream: DEFAULT_JETSTREAM_STREAM_PREFIX } : bus;
  const log = logger.child({ component: "bus.dapr.jetstream-streams" });
  let conn: Promise<{ nc: NatsConnection; jsm: JetStreamManager }> | undefined;
  const manager = (): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> => {
    conn ??= (async () => {
      const servers = spec.url
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
      const nc = await connect(natsOptions(servers, "ofevents-streams", auth));
      return { nc, jsm: await nc.jetstreamManager() };
    })();
    conn.catch(() => (conn = undefined));
    return conn;
  };
  return {
    async prepareTopic(daprTopic) {
      const { jsm } = await manager();
      await ensureTopicStream(
        jsm,
        spec,
        daprTopic,
        log,
        (what, err) =>
          new BusError(ErrorCode.BusPublish, `${what}: ${err instanceof Error ? err.message : String(err)}`, {
            cause: err,
            topic: daprTopic,
          }),
      );
    },
    async close() {
      if (conn === undefined) return;
      const { nc } = await conn;
      await nc.drain().catch(() => nc.close());
    },
  };
}
