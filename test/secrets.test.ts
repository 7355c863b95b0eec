/**
 * Secrets never reach the output: `ofevents run` (as a child process, debug and trace logs) on
 * EventSources whose credentials come by reference with distinctive random values (webhook bearer
 * token and HMAC key, Kafka SASL password, NATS token, a Kafka EventBus's SASL password), driven
 * through the happy and the failure paths (wrong bearer token, bad signature, wrong broker and
 * server passwords); then `ofevents validate` on good and broken manifests. Every byte written to
 * stdout and stderr is searched for the values and their base64.
 */
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { Kafka, Partitioners, logLevel, type Producer } from "kafkajs";
import { envNameFor } from "@ofevents/core";
import { KafkaBroker } from "./helpers/kafka.js";
import { NatsServer } from "./helpers/nats.js";
import { freePort } from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = `${root}packages/cli/bin/ofevents.js`;

/** A value nobody else writes: easy to find in the output if it leaks. */
const distinctive = (what: string): string => `${what}-${randomBytes(12).toString("hex")}`;

const SECRET_NAME = "leak-test";
const secret = {
  webhookToken: distinctive("webhooktoken"),
  hmacKey: distinctive("hmackey"),
  kafkaUser: "ofevents",
  kafkaPassword: distinctive("kafkapw"),
  wrongKafkaPassword: distinctive("wrongkafkapw"),
  natsToken: distinctive("natstoken"),
  wrongNatsToken: distinctive("wrongnatstoken"),
  // Presented by callers and clients, also never to be echoed.
  wrongWebhookToken: distinctive("wrongwebhooktoken"),
  // Given inline (OpenFunction's saslPassword) and in a Secret manifest.
  inlinePassword: distinctive("inlinepw"),
  manifestSecret: distinctive("manifestsecret"),
};
/** Every secret value whose text, or base64, must not appear. The username is not secret. */
const SECRET_VALUES = Object.entries(secret)
  .filter(([k]) => k !== "kafkaUser")
  .map(([, v]) => v);

const keyRef = (key: string) => ({ name: SECRET_NAME, key });
const env = (key: string, value: string): [string, string] => [envNameFor(keyRef(key)), value];
const SECRET_ENV: Record<string, string> = Object.fromEntries([
  env("webhook-token", secret.webhookToken),
  env("hmac-key", secret.hmacKey),
  env("kafka-user", secret.kafkaUser),
  env("kafka-password", secret.kafkaPassword),
  env("wrong-kafka-password", secret.wrongKafkaPassword),
  env("nats-token", secret.natsToken),
  env("wrong-nats-token", secret.wrongNatsToken),
]);

interface Run {
  code: number | null;
  output: string;
}

/** Every way a secret could show in the output: as is, and base64 (padded or not, url-safe or not). */
function leaks(output: string): string[] {
  const found: string[] = [];
  for (const v of SECRET_VALUES) {
    const b = Buffer.from(v);
    for (const form of [v, b.toString("base64"), b.toString("base64").replace(/=+$/, ""), b.toString("base64url")])
      if (output.includes(form)) found.push(form === v ? v : `${v} (as ${form})`);
  }
  return found;
}

function yaml(docs: object[]): string {
  // JSON is YAML; one document per resource.
  return docs.map((d) => JSON.stringify(d, null, 2)).join("\n---\n");
}

/** Spawns `ofevents`, collecting all of stdout and stderr (interleaved). */
function ofevents(args: string[], extraEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: root,
    env: { ...process.env, ...SECRET_ENV, ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    child,
    output: () => output,
    exited,
    /** SIGTERM, SIGKILL after 15 s; resolves with the exit code and everything written. */
    async stop(): Promise<Run> {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
      return { code: await exited, output };
    },
    /** Waits for the exit (bounded), killing the process if it does not come. */
    async done(timeoutMs: number): Promise<Run> {
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return { code, output };
    },
  };
}

const ES = (name: string, spec: object) => ({
  apiVersion: "events.openfunction.io/v1alpha1",
  kind: "EventSource",
  metadata: { name, namespace: "default" },
  spec,
});

let broker: KafkaBroker;
let nats: NatsServer;
let producer: Producer;
let dir: string;

beforeAll(async () => {
  if (!existsSync(`${root}packages/cli/dist/main.js`)) throw new Error("packages are not built: run `npx tsc -b`");
  [broker, nats] = await Promise.all([
    KafkaBroker.start({ saslUsers: { [secret.kafkaUser]: secret.kafkaPassword } }),
    NatsServer.start({ config: `authorization { token: "${secret.natsToken}" }\n` }),
  ]);
  producer = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  dir = await mkdtemp(join(tmpdir(), "ofevents-secrets-"));
});

afterAll(async () => {
  await producer?.disconnect();
  await Promise.allSettled([broker?.stop(), nats?.stop()]);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe("secrets - ofevents run", () => {
  it("secrets - no secret value (nor its base64) in debug logs, through happy and failure paths", async () => {
    const port = await freePort();
    const topic = `leak-${randomSuffix()}`;
    const admin = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true }).finally(() => admin.disconnect());
    const sasl = (password: string) => ({
      mechanism: "scram-sha-256",
      usernameSecret: keyRef("kafka-user"),
      passwordSecret: keyRef(password),
    });
    const file = join(dir, `run-${randomSuffix()}.yaml`);
    await writeFile(
      file,
      yaml([
        {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: "from-manifest", namespace: "default" },
          data: { value: Buffer.from(secret.manifestSecret).toString("base64") },
        },
        {
          apiVersion: "events.openfunction.io/v1alpha1",
          kind: "EventBus",
          metadata: { name: "kafka", namespace: "default" },
          spec: { kafka: { brokers: broker.saslBrokers.join(","), sasl: sasl("kafka-password") } },
        },
        ES("hooks", {
          eventBus: "default",
          webhook: {
            bearer: { port: String(port), endpoint: "/bearer", authSecret: keyRef("webhook-token") },
            signed: { port: String(port), endpoint: "/signed", hmac: { secret: keyRef("hmac-key") } },
            manifest: {
              port: String(port),
              endpoint: "/manifest",
              authSecret: { name: "from-manifest", key: "value" },
            },
          },
        }),
        ES("kafka-ok", {
          eventBus: "kafka",
          kafka: {
            orders: {
              brokers: broker.saslBrokers.join(","),
              topic,
              authRequired: true,
              sasl: sasl("kafka-password"),
              startFrom: "oldest",
            },
          },
        }),
        ES("kafka-wrong", {
          eventBus: "default",
          kafka: {
            orders: {
              brokers: broker.saslBrokers.join(","),
              topic,
              authRequired: true,
              sasl: sasl("wrong-kafka-password"),
            },
          },
        }),
        ES("kafka-inline", {
          eventBus: "default",
          kafka: {
            orders: {
              brokers: broker.saslBrokers.join(","),
              topic,
              authRequired: true,
              saslUsername: secret.kafkaUser,
              saslPassword: secret.inlinePassword,
            },
          },
        }),
        ES("nats-ok", {
          eventBus: "default",
          nats: { events: { url: nats.url, subject: "leak.ok", tokenSecret: keyRef("nats-token") } },
        }),
        ES("nats-wrong", {
          eventBus: "default",
          nats: { events: { url: nats.url, subject: "leak.wrong", tokenSecret: keyRef("wrong-nats-token") } },
        }),
      ]),
    );

    const run = ofevents(["run", "-f", file, "--log-format", "json", "--log-level", "debug", "--functions-port", "0"]);
    try {
      await waitFor(() => /"msg":"running"/.test(run.output()) || run.child.exitCode !== null, {
        timeoutMs: 90_000,
        message: "ofevents run to start",
      });
      expect(run.child.exitCode, run.output()).toBeNull();
      // The three failing sources said so, and are retried (the others did not stop).
      for (const name of ["kafka-wrong", "kafka-inline", "nats-wrong"])
        expect(run.output()).toMatch(new RegExp(`"eventSource":"default/${name}".*cannot start yet; retrying`));

      const post = async (path: string, body: string, headers: Record<string, string>) =>
        (await request(`http://127.0.0.1:${port}${path}`, { method: "POST", body, headers })).body
          .text()
          .then(() => undefined);
      const status = async (path: string, body: string, headers: Record<string, string>) => {
        const res = await request(`http://127.0.0.1:${port}${path}`, { method: "POST", body, headers });
        await res.body.text();
        return res.statusCode;
      };
      const json = { "content-type": "application/json" };
      const body = JSON.stringify({ order: 1 });
      const sign = (key: string, signed = body) => `sha256=${createHmac("sha256", key).update(signed).digest("hex")}`;
      expect(await status("/bearer", body, { ...json, authorization: `Bearer ${secret.webhookToken}` })).toBe(200);
      expect(await status("/bearer", body, { ...json, authorization: `Bearer ${secret.wrongWebhookToken}` })).toBe(401);
      expect(await status("/bearer", body, json)).toBe(401);
      expect(await status("/signed", body, { ...json, "x-hub-signature-256": sign(secret.hmacKey) })).toBe(200);
      expect(await status("/signed", body, { ...json, "x-hub-signature-256": sign(secret.wrongWebhookToken) })).toBe(
        401,
      );
      expect(
        await status("/signed", "{not json", { ...json, "x-hub-signature-256": sign(secret.hmacKey, "{not json") }),
      ).toBe(400);
      expect(await status("/manifest", body, { ...json, authorization: `Bearer ${secret.manifestSecret}` })).toBe(200);
      await post("/manifest", body, { ...json, authorization: "Bearer nope" });

      // A record through the SASL source onto the SASL bus; a NATS message through the token source.
      await producer.send({ topic, messages: [{ value: JSON.stringify({ leak: "test" }) }] });
      await waitFor(() => /"eventSource":"default\/kafka-ok".*"msg":"published"/.test(run.output()), {
        timeoutMs: 30_000,
        message: "the kafka record published onto the kafka bus",
      });
      const { connect } = await import("nats");
      const nc = await connect({ servers: nats.url, token: secret.natsToken });
      try {
        await waitFor(
          async () => {
            nc.publish("leak.ok", JSON.stringify({ leak: "nats" }));
            await nc.flush();
            return /"eventSource":"default\/nats-ok".*"msg":"published"/.test(run.output());
          },
          { timeoutMs: 15_000, intervalMs: 200, message: "the nats message published" },
        );
      } finally {
        await nc.close();
      }
    } finally {
      const { output } = await run.stop();
      expect(output).toMatch(/"level":20,/); // debug lines were written
      expect(leaks(output), output).toEqual([]);
    }
  }, 180_000);

  it("secrets - a Kafka EventBus with a wrong password stops `run` with an error that carries no secret (trace logs)", async () => {
    const file = join(dir, `bus-${randomSuffix()}.yaml`);
    await writeFile(
      file,
      yaml([
        {
          apiVersion: "events.openfunction.io/v1alpha1",
          kind: "EventBus",
          metadata: { name: "default", namespace: "default" },
          spec: {
            kafka: {
              brokers: broker.saslBrokers.join(","),
              sasl: {
                mechanism: "plain",
                usernameSecret: keyRef("kafka-user"),
                passwordSecret: keyRef("wrong-kafka-password"),
              },
            },
          },
        },
        ES("cron", { eventBus: "default", cron: { tick: { schedule: "@every 1h" } } }),
      ]),
    );
    const run = ofevents([
      "run",
      "-f",
      file,
      "--log-format",
      "pretty",
      "--log-level",
      "trace",
      "--functions-port",
      "0",
    ]);
    const { code, output } = await run.done(90_000);
    expect(code, output).not.toBe(0);
    expect(output).toMatch(/authentication failed/i);
    expect(output).toMatch(/ TRACE /); // kafkajs's own debug lines were written
    expect(leaks(output), output).toEqual([]);
  }, 120_000);
});

describe("secrets - ofevents validate", () => {
  it("secrets - validate prints no secret, for valid manifests and for broken ones", async () => {
    const good = join(dir, `good-${randomSuffix()}.yaml`);
    await writeFile(
      good,
      yaml([
        ES("ok", {
          eventBus: "default",
          kafka: {
            orders: {
              brokers: "127.0.0.1:9092",
              topic: "orders",
              authRequired: true,
              saslUsername: "u",
              saslPassword: secret.inlinePassword,
            },
          },
        }),
      ]),
    );
    const ok = await ofevents(["validate", "-f", good]).done(60_000);
    expect(ok.code, ok.output).toBe(0);
    expect(leaks(ok.output), ok.output).toEqual([]);

    const bad = join(dir, `bad-${randomSuffix()}.yaml`);
    await writeFile(
      bad,
      yaml([
        ES("kafka-bad", {
          eventBus: "default",
          kafka: {
            // No topic; inline and by-reference credentials together.
            orders: {
              brokers: "127.0.0.1:9092",
              authRequired: true,
              saslUsername: "u",
              saslPassword: secret.inlinePassword,
              sasl: { mechanism: "plain", usernameSecret: keyRef("u"), passwordSecret: keyRef("p") },
            },
          },
        }),
        ES("kafka-typo", {
          eventBus: "default",
          kafka: {
            orders: { brokers: "127.0.0.1:9092", topic: "t", authRequired: "yes", saslPassword: secret.inlinePassword },
          },
        }),
        ES("nats-bad", {
          eventBus: "default",
          // Credentials in the URL of a server that is not valid (a path): the issue must not echo them.
          nats: { events: { url: `nats://user:${secret.manifestSecret}@127.0.0.1:4222/path`, subject: "a b" } },
        }),
        ES("webhook-bad", {
          eventBus: "default",
          webhook: { hook: { port: "x", endpoint: "no-slash", authSecret: { name: "no-key" } } },
        }),
      ]),
    );
    const failed = await ofevents(["validate", "-f", bad]).done(60_000);
    expect(failed.code, failed.output).toBe(1);
    expect(failed.output).toMatch(/kafka-bad/);
    expect(failed.output).toMatch(/nats-bad/);
    expect(leaks(failed.output), failed.output).toEqual([]);
  }, 120_000);
});
