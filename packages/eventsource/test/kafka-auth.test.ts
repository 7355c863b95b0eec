// The kafka source and the kafka bus against a real broker with a SASL_PLAINTEXT listener (PLAIN
// and SCRAM-SHA-256) and an SSL listener (a throwaway CA made with openssl). Credentials and the CA
// come by reference (env-style secret resolver); records are produced on the plaintext listener.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kafka as KafkaClient, Partitioners, logLevel, type Admin, type Producer } from "kafkajs";
import {
  BusError,
  ErrorCode,
  SourceError,
  createSecretResolver,
  envNameFor,
  newEvent,
  silentLogger,
  type CloudEvent,
  type KafkaSourceSpec,
  type SecretKeySelector,
  type SecretResolver,
} from "@ofevents/core";
import { createEventBus, createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { sourceHarness } from "./support.js";

const NS = "kafka-auth";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "kafka", event: EVENT });

const USER = "ofevents";
const PASSWORD = `pw-${randomSuffix(12)}`;
const WRONG_PASSWORD = `wrong-${randomSuffix(12)}`;

const ref = (name: string, key: string): SecretKeySelector => ({ name, key });
const USERNAME_REF = ref("kafka-creds", "username");
const PASSWORD_REF = ref("kafka-creds", "password");
const WRONG_REF = ref("kafka-creds", "wrong-password");
const CA_REF = ref("kafka-tls", "ca.crt");

let broker: KafkaBroker;
let producer: Producer;
let admin: Admin;
let bus: EventBus;
let secrets: SecretResolver;

beforeAll(async () => {
  broker = await KafkaBroker.start({ saslUsers: { [USER]: PASSWORD }, tls: true });
  const client = new KafkaClient({ clientId: "kafka-auth-test", brokers: broker.brokers, logLevel: logLevel.NOTHING });
  producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  admin = client.admin();
  await Promise.all([producer.connect(), admin.connect()]);
  bus = createMemoryBus({ logger: silentLogger() });
  secrets = createSecretResolver([], {
    [envNameFor(USERNAME_REF)]: USER,
    [envNameFor(PASSWORD_REF)]: PASSWORD,
    [envNameFor(WRONG_REF)]: WRONG_PASSWORD,
    [envNameFor(CA_REF)]: broker.caPem,
  });
});

afterAll(async () => {
  await bus?.close();
  await producer?.disconnect();
  await admin?.disconnect();
  await broker?.stop();
});

async function newTopic(): Promise<string> {
  const topic = `auth-${randomSuffix()}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  return topic;
}

/** Starts a source on `brokers` with `spec`, produces one record and waits for it on the bus. */
async function consumesOne(brokers: string[], spec: Partial<KafkaSourceSpec>): Promise<CloudEvent> {
  const topic = await newTopic();
  const name = `es-${randomSuffix()}`;
  const got = await harness.collect(bus, name);
  const src = await harness.start(
    name,
    { brokers: brokers.join(","), topic, startFrom: "oldest", authRequired: false, ...spec },
    bus,
    secrets,
  );
  try {
    await producer.send({ topic, messages: [{ value: JSON.stringify({ topic }) }] });
    await waitFor(() => got.length >= 1, { timeoutMs: 20_000, message: "the record on the bus" });
  } finally {
    await src.stop();
  }
  expect(got[0]?.data).toEqual({ topic });
  return got[0]!;
}

/** Starts a source that must fail; returns its start error, which names the resource and the brokers. */
async function startFailure(brokers: string[], spec: Partial<KafkaSourceSpec>): Promise<SourceError> {
  const topic = await newTopic();
  const name = `es-${randomSuffix()}`;
  const err: unknown = await harness
    .start(name, { brokers: brokers.join(","), topic, authRequired: false, ...spec }, bus, secrets)
    .then(
      async (src) => {
        await src.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(SourceError);
  expect((err as SourceError).code).toBe(ErrorCode.SourceStart);
  expect((err as SourceError).message).toContain(`EventSource ${NS}/${name} event ${EVENT}`);
  expect((err as SourceError).message).toContain(brokers.join(","));
  return err as SourceError;
}

/** The messages and codes of an error and its causes, for assertions on what a user gets to read. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 10; depth++) {
    parts.push(String(e), JSON.stringify(e, Object.getOwnPropertyNames(e as object)));
    e = (e as { cause?: unknown }).cause;
  }
  return parts.join("\n");
}

describe("kafka source - SASL", () => {
  it("kafka source - SASL PLAIN with credentials by reference consumes", async () => {
    await consumesOne(broker.saslBrokers, {
      authRequired: true,
      sasl: { mechanism: "plain", usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
    });
  });

  it("kafka source - SASL SCRAM-SHA-256 with credentials by reference consumes", async () => {
    await consumesOne(broker.saslBrokers, {
      authRequired: true,
      sasl: { mechanism: "scram-sha-256", usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
    });
  });

  it("kafka source - OpenFunction's inline saslUsername/saslPassword consume (PLAIN)", async () => {
    await consumesOne(broker.saslBrokers, { authRequired: true, saslUsername: USER, saslPassword: PASSWORD });
  });

  it.each(["plain", "scram-sha-256"] as const)(
    "kafka source - a wrong password (%s) fails start() with SOURCE_START, without the password in the error",
    async (mechanism) => {
      const err = await startFailure(broker.saslBrokers, {
        authRequired: true,
        sasl: { mechanism, usernameSecret: USERNAME_REF, passwordSecret: WRONG_REF },
      });
      expect(err.source).toBe("kafka");
      expect(err.message).toMatch(/SASL/);
      expect(err.message).toMatch(/authentication failed/i);
      const text = errorText(err);
      expect(text).not.toContain(WRONG_PASSWORD);
      expect(text).not.toContain(PASSWORD);
    },
  );

  it("kafka source - SASL against the plaintext listener fails start(), not hangs", async () => {
    await startFailure(broker.brokers, {
      authRequired: true,
      sasl: { mechanism: "plain", usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
    });
  });
});

describe("kafka source - TLS", () => {
  it("kafka source - TLS with the CA by reference consumes", async () => {
    await consumesOne(broker.tlsBrokers, { tls: { caSecret: CA_REF } });
  });

  it("kafka source - TLS without the CA is refused with a certificate error", async () => {
    const err = await startFailure(broker.tlsBrokers, { tls: {} });
    expect(errorText(err)).toMatch(/certificate|SELF_SIGNED|UNABLE_TO_VERIFY/i);
  });

  it("kafka source - TLS without the CA consumes with insecureSkipVerify", async () => {
    await consumesOne(broker.tlsBrokers, { tls: { insecureSkipVerify: true } });
  });
});

describe("kafka bus - SASL and TLS", () => {
  async function roundTrip(b: EventBus): Promise<void> {
    const topic = `bus-${randomSuffix()}`;
    const got: CloudEvent[] = [];
    const sub = await b.subscribe([topic], async (ev) => void got.push(ev), { group: `g-${randomSuffix()}` });
    const ev = newEvent({ source: "/kafka-auth", type: "io.ofevents.test", data: { n: 1 } });
    await b.publish(topic, ev);
    await waitFor(() => got.length >= 1, { timeoutMs: 20_000, message: "the event back from the bus" });
    expect(got[0]?.id).toBe(ev.id);
    await sub.close();
  }

  it("kafka bus - SCRAM-SHA-256 by reference publishes and subscribes", async () => {
    const b = await createEventBus(
      {
        kafka: {
          brokers: broker.saslBrokers.join(","),
          sasl: { mechanism: "scram-sha-256", usernameSecret: USERNAME_REF, passwordSecret: PASSWORD_REF },
        },
      },
      { logger: silentLogger(), secrets, namespace: NS },
    );
    try {
      await roundTrip(b);
    } finally {
      await b.close();
    }
  });

  it("kafka bus - TLS with the CA by reference publishes and subscribes", async () => {
    const b = await createEventBus(
      { kafka: { brokers: broker.tlsBrokers.join(","), tls: { caSecret: CA_REF } } },
      { logger: silentLogger(), secrets, namespace: NS },
    );
    try {
      await roundTrip(b);
    } finally {
      await b.close();
    }
  });

  it("kafka bus - a wrong password is a non-retriable BusError without the password", async () => {
    const err: unknown = await createEventBus(
      {
        kafka: {
          brokers: broker.saslBrokers.join(","),
          sasl: { mechanism: "plain", usernameSecret: USERNAME_REF, passwordSecret: WRONG_REF },
        },
      },
      { logger: silentLogger(), secrets, namespace: NS },
    ).then(
      async (b) => {
        await b.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).retriable).toBe(false);
    expect(errorText(err)).not.toContain(WRONG_PASSWORD);
  });
});
