// The nats source and the JetStream bus against nats-servers that require credentials: a token
// (`authorization { token }`) and operator mode (decentralized JWT auth: an operator, an account
// with JetStream, user creds files made at test time). Credentials come by reference; wrong ones
// fail with a typed error that does not carry them. One server at a time: the token one, then the
// operator one (an auth mode is server-wide).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, credsAuthenticator, nkeys, type NatsConnection } from "nats";
import {
  BusError,
  ErrorCode,
  SourceError,
  createSecretResolver,
  envNameFor,
  newEvent,
  silentLogger,
  type CloudEvent,
  type NatsSourceSpec,
  type SecretKeySelector,
  type SecretResolver,
} from "@ofevents/core";
import {
  createEventBus,
  createJetStreamTopicPreparer,
  createMemoryBus,
  daprJetStreamStreamName,
  type EventBus,
} from "@ofevents/eventbus";
import { NatsOperator, NatsServer } from "../../../test/helpers/nats.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { sourceHarness } from "./support.js";

const NS = "nats-auth";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "nats", event: EVENT });
const enc = new TextEncoder();

const ref = (key: string): SecretKeySelector => ({ name: "nats-auth", key });
const TOKEN_REF = ref("token");
const WRONG_TOKEN_REF = ref("wrong-token");
const CREDS_REF = ref("creds");
const WRONG_CREDS_REF = ref("wrong-creds");
const BAD_CREDS_REF = ref("bad-creds");

const TOKEN = `tok-${randomSuffix(12)}`;
const WRONG_TOKEN = `wrong-${randomSuffix(12)}`;
const operator = new NatsOperator();
const CREDS = operator.userCreds();
/** A user signed by an account the server does not know. */
const WRONG_CREDS = operator.userCreds("intruder", nkeys.createAccount());
const BAD_CREDS = `not a creds file ${randomSuffix(12)}`;

const secrets: SecretResolver = createSecretResolver([], {
  [envNameFor(TOKEN_REF)]: TOKEN,
  [envNameFor(WRONG_TOKEN_REF)]: WRONG_TOKEN,
  [envNameFor(CREDS_REF)]: CREDS,
  [envNameFor(WRONG_CREDS_REF)]: WRONG_CREDS,
  [envNameFor(BAD_CREDS_REF)]: BAD_CREDS,
});

/** The parts of a creds file that must never show: the seed and the JWT. */
function credsParts(creds: string): string[] {
  return [...creds.matchAll(/-{3,}[^\n]*-{3,}\n(.+)\n/g)].map((m) => m[1]!.trim());
}

/** The messages and fields of an error and its causes: everything a log line could show. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 10; depth++) {
    parts.push(String(e), JSON.stringify(e, Object.getOwnPropertyNames(e as object)));
    e = (e as { cause?: unknown }).cause;
  }
  return parts.join("\n");
}

let bus: EventBus;

beforeAll(() => {
  bus = createMemoryBus({ logger: silentLogger() });
});

afterAll(async () => {
  await bus?.close();
});

/** Starts a source on `url`, publishes one message with `publisher`, waits for it on the bus. */
async function consumesOne(
  url: string,
  publisher: NatsConnection,
  spec: Partial<NatsSourceSpec>,
  publish: (subject: string, data: Uint8Array) => Promise<unknown> = async (s, d) => publisher.publish(s, d),
  subject = `auth.${randomSuffix()}`,
): Promise<void> {
  const name = `es-${randomSuffix()}`;
  const got = await harness.collect(bus, name);
  const src = await harness.start(name, { url, subject, ...spec }, bus, secrets);
  try {
    const body = { name };
    // Core NATS does not keep messages: publish until the subscription has seen one.
    await waitFor(
      async () => {
        await publish(subject, enc.encode(JSON.stringify(body)));
        await publisher.flush();
        return got.length >= 1;
      },
      { timeoutMs: 15_000, intervalMs: 200, message: "the message on the bus" },
    );
    expect(got[0]?.data).toEqual(body);
  } finally {
    await src.stop();
  }
}

/** Starts a source that must fail; returns its typed start error. */
async function startFailure(url: string, spec: Partial<NatsSourceSpec>): Promise<SourceError> {
  const name = `es-${randomSuffix()}`;
  const err: unknown = await harness
    .start(name, { url, subject: `auth.${randomSuffix()}`, ...spec }, bus, secrets)
    .then(
      async (src) => {
        await src.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(SourceError);
  expect((err as SourceError).code).toBe(ErrorCode.SourceStart);
  expect((err as SourceError).source).toBe("nats");
  expect((err as SourceError).message).toContain(`EventSource ${NS}/${name} event ${EVENT}`);
  return err as SourceError;
}

describe("nats source - token", () => {
  let server: NatsServer;
  let nc: NatsConnection;

  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true, config: `authorization { token: "${TOKEN}" }\n` });
    nc = await connect({ servers: server.url, token: TOKEN });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("nats source - a token by reference consumes a core subject", async () => {
    await consumesOne(server.url, nc, { tokenSecret: TOKEN_REF });
  });

  it("nats source - a token by reference consumes through a JetStream durable", async () => {
    const id = randomSuffix();
    await (await nc.jetstreamManager()).streams.add({ name: `S${id}`, subjects: [`js.${id}.>`] });
    const js = nc.jetstream();
    await consumesOne(
      server.url,
      nc,
      { tokenSecret: TOKEN_REF, jetstream: { stream: `S${id}`, deliverPolicy: "all" } },
      (s, d) => js.publish(s, d),
      `js.${id}.orders`,
    );
  });

  it("nats source - a wrong token fails start() with SOURCE_START, without the token in the error", async () => {
    const err = await startFailure(server.url, { tokenSecret: WRONG_TOKEN_REF });
    expect(err.message).toMatch(/authorization violation/i);
    const text = errorText(err);
    expect(text).not.toContain(WRONG_TOKEN);
    expect(text).not.toContain(TOKEN);
  });

  it("nats source - no credentials fail start() on a server that needs them", async () => {
    const err = await startFailure(server.url, {});
    expect(err.message).toMatch(/authorization violation/i);
  });
});

describe("nats source and jetstream bus - creds (operator mode)", () => {
  let server: NatsServer;
  let nc: NatsConnection;

  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true, config: operator.config });
    nc = await connect({ servers: server.url, authenticator: credsAuthenticator(enc.encode(CREDS)) });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("nats source - a creds file by reference consumes a core subject", async () => {
    await consumesOne(server.url, nc, { credentialsSecret: CREDS_REF });
  });

  it("nats source - creds of a user the server does not trust fail start(), without the JWT or seed in the error", async () => {
    const err = await startFailure(server.url, { credentialsSecret: WRONG_CREDS_REF });
    expect(err.message).toMatch(/authorization violation/i);
    const text = errorText(err);
    for (const part of [...credsParts(WRONG_CREDS), ...credsParts(CREDS)]) expect(text).not.toContain(part);
  });

  it("nats source - a malformed creds file fails start() without its content in the error", async () => {
    const err = await startFailure(server.url, { credentialsSecret: BAD_CREDS_REF });
    expect(errorText(err)).not.toContain(BAD_CREDS);
  });

  it("jetstream bus - a creds file by reference publishes and subscribes", async () => {
    const b = await createEventBus(
      { jetstream: { url: server.url, stream: `auth${randomSuffix()}`, credentialsSecret: CREDS_REF } },
      { logger: silentLogger(), secrets, namespace: NS },
    );
    try {
      const topic = `bus-${randomSuffix()}`;
      const got: CloudEvent[] = [];
      const sub = await b.subscribe([topic], async (ev) => void got.push(ev), { group: `g${randomSuffix()}` });
      const ev = newEvent({ source: "/nats-auth", type: "io.ofevents.test", data: { n: 1 } });
      await b.publish(topic, ev);
      await waitFor(() => got.length >= 1, { timeoutMs: 15_000, message: "the event back from the bus" });
      expect(got[0]?.id).toBe(ev.id);
      await sub.close();
    } finally {
      await b.close();
    }
  });

  it("jetstream bus through Dapr - the topic preparer creates a topic's stream with the bus's creds", async () => {
    const prefix = `auth${randomSuffix()}`;
    const topic = `dapr-${randomSuffix()}`;
    const preparer = createJetStreamTopicPreparer({ url: server.url, stream: prefix }, silentLogger(), {
      creds: CREDS,
    });
    try {
      await preparer.prepareTopic(topic);
      const info = await (await nc.jetstreamManager()).streams.info(daprJetStreamStreamName(topic, prefix));
      expect(info.config.subjects).toEqual([topic]);
    } finally {
      await preparer.close();
    }
  });

  it("jetstream bus - untrusted creds are a non-retriable BusError without the JWT or seed", async () => {
    const err: unknown = await createEventBus(
      { jetstream: { url: server.url, credentialsSecret: WRONG_CREDS_REF } },
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
    const text = errorText(err);
    for (const part of credsParts(WRONG_CREDS)) expect(text).not.toContain(part);
  });
});
