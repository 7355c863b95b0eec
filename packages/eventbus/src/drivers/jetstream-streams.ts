/**
 * The stream of a bus topic on JetStream, created or found the same way by the direct driver and
 * by the dapr driver's `prepareTopic` (Dapr's pubsub.jetstream never creates streams): stream
 * `{token(prefix)}-{token(topic)}` with subject = the topic (core's jetStreamNames), so both paths
 * publish to and consume from one stream (docs/eventbus/jetstream.md, "Names").
 */
import {
  DiscardPolicy,
  NatsError,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type StreamConfig,
} from "nats";
import {
  BusError,
  DEFAULT_JETSTREAM_STREAM_PREFIX,
  ErrorCode,
  OfEventsError,
  durationMs,
  jetStreamNames,
  legacyJetStreamSubject,
  type JetStreamBusSpec,
  type Logger,
} from "@ofevents/core";

export const DEFAULT_MAX_AGE = "168h";
/** JetStream's default duplicate window; shortened to maxAge when that is shorter. */
const DUPLICATE_WINDOW_MS = 120_000;

/** JetStream API error codes (nats-server `jetstream_errors_generated.go`). */
export const JsErr = {
  StreamNotFound: 10059,
  ConsumerNotFound: 10014,
  StreamNameInUse: 10058,
  StreamSubjectOverlap: 10065,
  ConsumerAlreadyExists: 10148,
  ConsumerNameExists: 10013,
  NoMessageFound: 10037,
} as const;

export function jsErrCode(err: unknown): number | undefined {
  return err instanceof NatsError ? err.api_error?.err_code : undefined;
}

/** Where a topic's events are stored and published. */
export interface StreamEntry {
  stream: string;
  subject: string;
}

/** What the stream of a topic is created with (an existing stream is used as it is). */
export function topicStreamConfig(
  spec: Pick<JetStreamBusSpec, "stream" | "replicas" | "maxAge">,
  topic: string,
): Partial<StreamConfig> & { name: string } {
  const { stream, subject } = jetStreamNames(spec.stream ?? DEFAULT_JETSTREAM_STREAM_PREFIX, topic);
  const maxAgeMs = durationMs(spec.maxAge ?? DEFAULT_MAX_AGE);
  return {
    name: stream,
    subjects: [subject],
    description: `ofevents bus topic ${topic}`,
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    num_replicas: spec.replicas ?? 1,
    max_age: nanos(maxAgeMs),
    duplicate_window: nanos(maxAgeMs > 0 ? Math.min(DUPLICATE_WINDOW_MS, maxAgeMs) : DUPLICATE_WINDOW_MS),
  };
}

/**
 * The stream of `topic`, created unless it exists. A stream of that name with only the previous
 * version's subject (`{prefix}.{token(topic)}`) gets the topic added as a subject, keeping its
 * events and consumers. When another stream already captures the subject (e.g. one made by hand
 * for Dapr), that stream is used, with a warning. A stream of that name with other subjects is a
 * CONFIG BusError. Other failures reject with a BusError of `code` (`wrap` classifies them).
 */
export async function ensureTopicStream(
  jsm: JetStreamManager,
  spec: Pick<JetStreamBusSpec, "stream" | "replicas" | "maxAge">,
  topic: string,
  log: Logger,
  wrap: (what: string, err: unknown) => BusError,
): Promise<StreamEntry> {
  let config: ReturnType<typeof topicStreamConfig>;
  try {
    config = topicStreamConfig(spec, topic);
  } catch (err) {
    if (err instanceof OfEventsError) throw new BusError(ErrorCode.Config, err.message, { topic, retriable: false });
    throw err;
  }
  const stream = config.name;
  const subject = config.subjects![0]!;
  const legacy = legacyJetStreamSubject(spec.stream ?? DEFAULT_JETSTREAM_STREAM_PREFIX, topic);

  const existing = async (subjects: readonly string[] | undefined): Promise<StreamEntry> => {
    const have = subjects ?? [];
    if (have.includes(subject)) return { stream, subject };
    if (have.length === 1 && have[0] === legacy) {
      const info = await jsm.streams.info(stream);
      try {
        await jsm.streams.update(stream, { ...info.config, subjects: [legacy, subject] });
      } catch (err) {
        if (jsErrCode(err) === JsErr.StreamSubjectOverlap) return captured();
        throw wrap(`adding subject ${subject} to stream ${stream}`, err);
      }
      log.info({ topic, stream, subject, legacy }, "stream of the previous naming now also captures the topic");
      return { stream, subject };
    }
    throw new BusError(
      ErrorCode.Config,
      `stream ${stream} exists with subjects [${have.join(", ")}], not ${subject}: another bus with an overlapping stream prefix uses it`,
      { topic, retriable: false },
    );
  };
  const captured = async (): Promise<StreamEntry> => {
    const other = await jsm.streams.find(subject).catch((err: unknown) => {
      throw wrap(`finding the stream of subject ${subject}`, err);
    });
    log.warn({ topic, stream: other, expected: stream }, "another stream captures the topic's subject; using it");
    return { stream: other, subject };
  };

  try {
    const info = await jsm.streams.info(stream);
    return await existing(info.config.subjects);
  } catch (err) {
    if (err instanceof BusError) throw err;
    if (jsErrCode(err) !== JsErr.StreamNotFound) throw wrap(`looking up stream ${stream}`, err);
  }
  try {
    const info = await jsm.streams.add(config);
    log.info({ topic, stream, subject }, "created stream");
    return await existing(info.config.subjects);
  } catch (err) {
    if (err instanceof BusError) throw err;
    const code = jsErrCode(err);
    if (code === JsErr.StreamSubjectOverlap) return captured();
    // Created meanwhile by another process (with another config: keep theirs).
    if (code === JsErr.StreamNameInUse) {
      const info = await jsm.streams.info(stream).catch((e: unknown) => {
        throw wrap(`looking up stream ${stream}`, e);
      });
      return existing(info.config.subjects);
    }
    throw wrap(`creating stream ${stream}`, err);
  }
}
