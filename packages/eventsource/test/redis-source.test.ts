// The redis source against a real redis-server: streams through a consumer group (ack after publish,
// redelivery of pending entries, claiming from dead consumers) and pub/sub channels, run through the
// real EventSource runtime onto the in-memory bus.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import {
  ErrorCode,
  SourceError,
  createSecretResolver,
  silentLogger,
  type RedisSourceSpec,
  type SecretResolver,
} from "@ofevents/core";
import { createMemoryBus, type EventPublisher } from "@ofevents/eventbus";
import { commandTimeouts, connectionOptions, reconnectDelay, redisAdapter } from "../src/sources/redis.js";
import { RedisServer } from "../../../test/helpers/redis.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { FlakyPublisher, UUID, sourceHarness, type RunningSource } from "./support.js";

const NS = "redis-test";
const EVENT = "orders";
const harness = sourceHarness({ namespace: NS, kind: "redis", event: EVENT });
const { collect } = harness;

let server: RedisServer;
let producer: Redis;

beforeAll(async () => {
  server = await RedisServer.start();
  producer = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
  await producer.connect();
});

afterAll(async () => {
  producer?.disconnect();
  await server?.stop();
});

function baseSpec(): Pick<RedisSourceSpec, "redisHost" | "redisPassword"> {
  return { redisHost: `127.0.0.1:${server.port}`, redisPassword: "" };
}

/** Starts an EventSource with one redis event through the runtime; fails on a start error. */
async function startSource(
  spec: Partial<RedisSourceSpec>,
  publisher: EventPublisher,
  o: { name?: string; secrets?: SecretResolver } = {},
): Promise<RunningSource & { name: string }> {
  const name = o.name ?? `es-${randomSuffix()}`;
  return { name, ...(await harness.start(name, { ...baseSpec(), ...spec }, publisher, o.secrets)) };
}

async function pendingCount(stream: string, group: string): Promise<number> {
  const summary = (await producer.xpending(stream, group)) as [number, ...unknown[]];
  return summary[0];
}

describe("redis source - streams", () => {
  it("redis source - turns stream entries into CloudEvents (JSON, text, field map) with stream positions as ids", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const stream = `s-${randomSuffix()}`;
    const src = await startSource({ stream }, bus);
    const got = await collect(bus, src.name);
    const id1 = (await producer.xadd(stream, "*", "data", JSON.stringify({ order: 1, items: ["a"] })))!;
    const id2 = (await producer.xadd(stream, "*", "value", "hello"))!;
    const id3 = (await producer.xadd(stream, "*", "customer", "c-7", "total", "42.5"))!;
    const id4 = (await producer.xadd(stream, "*", "data", Buffer.from([0xff, 0xfe, 0x00])))!;
    await waitFor(() => got.length === 4, { message: "four events" });
    await src.stop();
    await bus.close();

    const source = `/apis/v1/namespaces/${NS}/eventsources/${src.name}`;
    expect(got[0]).toMatchObject({
      specversion: "1.0",
      id: `${stream}/${id1}`,
      source,
      type: "io.openfunction.events.redis",
      subject: stream,
      datacontenttype: "application/json",
      data: { order: 1, items: ["a"] },
      time: new Date(Number(id1.split("-")[0])).toISOString(),
    });
    expect(got[1]).toMatchObject({ id: `${stream}/${id2}`, datacontenttype: "text/plain", data: "hello" });
    expect(got[2]).toMatchObject({
      id: `${stream}/${id3}`,
      datacontenttype: "application/json",
      data: { customer: "c-7", total: "42.5" },
    });
    expect(got[3]).toMatchObject({
      id: `${stream}/${id4}`,
      datacontenttype: "application/octet-stream",
      data_base64: Buffer.from([0xff, 0xfe, 0x00]).toString("base64"),
    });
    const group = `ofevents-${NS}-${src.name}-${EVENT}`;
    expect(await pendingCount(stream, group)).toBe(0);
  });

  it("redis source - acknowledges an entry only after the bus took it, retrying without skipping", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const stream = `s-${randomSuffix()}`;
    const group = `grp-${randomSuffix()}`;
    const pendingWhileFailing: number[] = [];
    const flaky = new FlakyPublisher(bus, {
      failNext: 3,
      onReject: async () => {
        pendingWhileFailing.push(await pendingCount(stream, group));
      },
    });
    const src = await startSource({ stream, consumerGroup: group, consumerName: "c1" }, flaky);
    const got = await collect(bus, src.name);
    const first = (await producer.xadd(stream, "*", "data", '{"n":1}'))!;
    const second = (await producer.xadd(stream, "*", "data", '{"n":2}'))!;
    await waitFor(() => got.length === 2, { message: "both entries published" });
    await waitFor(async () => (await pendingCount(stream, group)) === 0, { message: "both acknowledged" });
    await src.stop();
    await bus.close();

    // Three failed publishes of the first entry, each while it was pending (read, not acknowledged).
    expect(pendingWhileFailing).toHaveLength(3);
    for (const n of pendingWhileFailing) expect(n).toBeGreaterThanOrEqual(1);
    expect(flaky.calls).toBe(5);
    // In order, each once: the failing entry was retried, not skipped.
    expect(got.map((e) => e.id)).toEqual([`${stream}/${first}`, `${stream}/${second}`]);
  });

  it("redis source - after a crash, re-dispatches the entries this consumer read but never acknowledged", async () => {
    const stream = `s-${randomSuffix()}`;
    const group = `grp-${randomSuffix()}`;
    const spec = { stream, consumerGroup: group, consumerName: "worker-1" };
    const name = `es-${randomSuffix()}`;

    // First run: the bus never takes the event, so the entry stays pending on worker-1.
    const down = new FlakyPublisher(createMemoryBus({ logger: silentLogger() }), { failNext: Number.MAX_SAFE_INTEGER });
    const first = await startSource(spec, down, { name });
    const entryId = (await producer.xadd(stream, "*", "data", '{"crash":true}'))!;
    await waitFor(() => down.calls >= 2, { message: "publish attempts" });
    await first.stop();
    const pending = (await producer.xpending(stream, group, "-", "+", 10)) as [string, string, number, number][];
    expect(pending.map(([id, consumer]) => [id, consumer])).toEqual([[entryId, "worker-1"]]);

    // Second run, same consumer: the pending entry is dispatched first, then new ones.
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const second = await startSource(spec, bus, { name });
    const later = (await producer.xadd(stream, "*", "data", '{"crash":false}'))!;
    await waitFor(() => got.length === 2, { message: "pending and new entry" });
    await waitFor(async () => (await pendingCount(stream, group)) === 0, { message: "all acknowledged" });
    await second.stop();
    await bus.close();
    expect(got.map((e) => e.id)).toEqual([`${stream}/${entryId}`, `${stream}/${later}`]);
    expect(got[0]!.data).toEqual({ crash: true });
  });

  it("redis source - claims entries left pending by a dead consumer after processingTimeout", async () => {
    const stream = `s-${randomSuffix()}`;
    const group = `grp-${randomSuffix()}`;
    await producer.xgroup("CREATE", stream, group, "$", "MKSTREAM");
    const entryId = (await producer.xadd(stream, "*", "data", '{"orphan":1}'))!;
    // A consumer that read the entry and died without acknowledging it.
    await producer.xreadgroup("GROUP", group, "dead", "COUNT", 10, "STREAMS", stream, ">");

    const bus = createMemoryBus({ logger: silentLogger() });
    const name = `es-${randomSuffix()}`;
    const got = await collect(bus, name);
    const src = await startSource(
      { stream, consumerGroup: group, consumerName: "alive", processingTimeout: "300ms", redeliverInterval: "100ms" },
      bus,
      { name },
    );
    await waitFor(() => got.length === 1, { message: "claimed entry published" });
    await waitFor(async () => (await pendingCount(stream, group)) === 0, { message: "claimed entry acknowledged" });
    await src.stop();
    await bus.close();
    expect(got[0]).toMatchObject({ id: `${stream}/${entryId}`, data: { orphan: 1 } });
  });

  it("redis source - a new group starts at the oldest entry with startFrom oldest", async () => {
    const stream = `s-${randomSuffix()}`;
    const old = (await producer.xadd(stream, "*", "data", '"before"'))!;
    const bus = createMemoryBus({ logger: silentLogger() });
    const name = `es-${randomSuffix()}`;
    const got = await collect(bus, name);
    const src = await startSource({ stream, startFrom: "oldest" }, bus, { name });
    await waitFor(() => got.length === 1, { message: "old entry" });
    await src.stop();
    await bus.close();
    expect(got[0]).toMatchObject({ id: `${stream}/${old}`, data: "before", datacontenttype: "application/json" });
  });

  it("redis source - authenticates with passwordSecret", async () => {
    const stream = `s-${randomSuffix()}`;
    await producer.config("SET", "requirepass", "s3cret");
    try {
      const secrets = createSecretResolver([
        {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: "redis", namespace: NS },
          stringData: { password: "s3cret" },
        },
      ]);
      const bus = createMemoryBus({ logger: silentLogger() });
      const name = `es-${randomSuffix()}`;
      const got = await collect(bus, name);
      const src = await startSource({ stream, passwordSecret: { name: "redis", key: "password" } }, bus, {
        name,
        secrets,
      });
      await producer.xadd(stream, "*", "data", '{"auth":true}');
      await waitFor(() => got.length === 1, { message: "event through an authenticated connection" });
      await src.stop();
      await bus.close();
      expect(got[0]!.data).toEqual({ auth: true });
    } finally {
      await producer.config("SET", "requirepass", "");
    }
  });
});

describe("redis source - pub/sub channels", () => {
  it("redis source - publishes channel messages with the channel as subject and a random id", async () => {
    const channel = `ch-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const name = `es-${randomSuffix()}`;
    const got = await collect(bus, name);
    const src = await startSource({ channel }, bus, { name });
    const [, subscribers] = (await producer.pubsub("NUMSUB", channel)) as [string, number];
    expect(subscribers).toBe(1);
    await producer.publish(channel, JSON.stringify({ temp: 21.5 }));
    await producer.publish(channel, "plain words");
    await waitFor(() => got.length === 2, { message: "two channel messages" });
    await src.stop();
    await bus.close();
    expect(got[0]).toMatchObject({
      source: `/apis/v1/namespaces/${NS}/eventsources/${name}`,
      type: "io.openfunction.events.redis",
      subject: channel,
      datacontenttype: "application/json",
      data: { temp: 21.5 },
    });
    expect(got[0]!.id).toMatch(UUID);
    expect(got[1]).toMatchObject({ subject: channel, datacontenttype: "text/plain", data: "plain words" });
    expect(got[1]!.id).not.toBe(got[0]!.id);
  });

  it("redis source - a channel with * is a pattern; the subject is the channel that matched", async () => {
    const prefix = `sensors-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const name = `es-${randomSuffix()}`;
    const got = await collect(bus, name);
    const src = await startSource({ channel: `${prefix}.*` }, bus, { name });
    await producer.publish(`${prefix}.kitchen`, "1");
    await producer.publish(`${prefix}.garage`, "2");
    await producer.publish(`other-${prefix}.garage`, "3");
    await waitFor(() => got.length === 2, { message: "two matching messages" });
    await src.stop();
    await bus.close();
    expect(got.map((e) => [e.subject, e.data])).toEqual([
      [`${prefix}.kitchen`, 1],
      [`${prefix}.garage`, 2],
    ]);
  });
});

describe("redis source - resilience", () => {
  it("redis source - recovers when the server restarts empty: reconnects and re-creates its group", async () => {
    const stream = `s-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const name = `es-${randomSuffix()}`;
    const got = await collect(bus, name);
    const src = await startSource({ stream, startFrom: "oldest" }, bus, { name });
    await producer.xadd(stream, "*", "data", '"before"');
    await waitFor(() => got.length === 1, { message: "event before the restart" });
    await server.restart();
    await waitFor(async () => (await producer.ping()) === "PONG", { message: "producer reconnected" });
    await producer.xadd(stream, "*", "data", '"after"');
    await waitFor(() => got.length === 2, { timeoutMs: 20_000, message: "event after the restart" });
    await src.stop();
    await bus.close();
    expect(got.map((e) => e.data)).toEqual(["before", "after"]);
  });
});

describe("redis source - validate", () => {
  const base = { redisHost: "127.0.0.1:6379", redisPassword: "" };
  it.each([
    { name: "both stream and channel", spec: { stream: "s", channel: "c" }, path: "", message: /not both/ },
    {
      name: "consumer group on a channel",
      spec: { channel: "c", consumerGroup: "g" },
      path: "consumerGroup",
      message: /stream/,
    },
    { name: "bad host", spec: { stream: "s", redisHost: "redis:99999" }, path: "redisHost", message: /host:port/ },
    { name: "bad redisType", spec: { stream: "s", redisType: "ring" }, path: "redisType", message: /node.*cluster/ },
    {
      name: "failover without master",
      spec: { stream: "s", failover: true },
      path: "sentinelMasterName",
      message: /required/,
    },
    {
      name: "bad duration",
      spec: { stream: "s", processingTimeout: "soon" },
      path: "processingTimeout",
      message: /duration/,
    },
    {
      name: "password twice",
      spec: { stream: "s", redisPassword: "x", passwordSecret: { name: "a", key: "b" } },
      path: "passwordSecret",
      message: /not both/,
    },
  ])("redis source - validate rejects $name", ({ spec, path, message }) => {
    const issues = redisAdapter.validate({ ...base, ...spec } as RedisSourceSpec);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe(path);
    expect(issues[0]!.message).toMatch(message);
  });

  it.each([
    { name: "OpenFunction's event (no stream, no channel: it loads, start refuses it)", spec: {} },
    { name: "a stream", spec: { stream: "s", processingTimeout: "30s", redeliverInterval: "0" } },
    {
      name: "a channel with Dapr's fields",
      spec: { channel: "c.*", dialTimeout: "5s", readTimeout: "-1", poolSize: 10 },
    },
    { name: "a host without port", spec: { stream: "s", redisHost: "redis" } },
    { name: "a cluster", spec: { stream: "s", redisType: "cluster", redisHost: "a:7000,b:7001" } },
  ])("redis source - validate accepts $name", ({ spec }) => {
    expect(redisAdapter.validate({ ...base, ...spec } as RedisSourceSpec)).toEqual([]);
  });
});

describe("redis source - OpenFunction's fields", () => {
  it("redis source - OpenFunction's redis event (no stream, no channel) loads, and its start says why it does not run", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    try {
      const err = await startSource({}, bus).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SourceError);
      expect((err as SourceError).code).toBe(ErrorCode.SourceUnsupported);
      expect((err as SourceError).retriable).toBe(false);
      expect((err as Error).message).toMatch(
        /^redis event "orders" does not run: OpenFunction made it a Dapr redis binding, which cannot receive .*set "stream"/,
      );
    } finally {
      await bus.close();
    }
  });

  it("redis source - OpenFunction's connection fields become ioredis options", () => {
    const ctx = { namespace: "ns", eventSource: "es", eventName: "e" };
    const spec: RedisSourceSpec = {
      redisHost: "127.0.0.1:6379",
      redisPassword: "pw",
      enableTLS: true,
      redisDB: 2,
      redisMaxRetries: -1,
      dialTimeout: "2s",
      readTimeout: "500ms",
      redisMinRetryInterval: "100ms",
      redisMaxRetryInterval: "1s",
      stream: "s",
    };
    expect(connectionOptions(ctx, spec, "pw")).toEqual({
      connectionName: "ofevents:ns/es/e",
      connectTimeout: 2_000,
      password: "pw",
      db: 2,
      maxRetriesPerRequest: null,
      tls: {},
    });
    expect(connectionOptions(ctx, { ...spec, redisMaxRetries: 3 }, undefined).maxRetriesPerRequest).toBe(3);
    expect(commandTimeouts(spec)).toEqual({ command: 500, blocking: 1_500 });
    expect(commandTimeouts({ ...spec, readTimeout: undefined })).toEqual({ command: undefined, blocking: 4_000 });
    const delay = reconnectDelay(spec);
    expect([1, 2, 3, 4, 5, 6].map(delay)).toEqual([100, 200, 400, 800, 1_000, 1_000]);
  });
});
