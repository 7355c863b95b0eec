import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import kafkajs from "kafkajs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, createLogger, newEvent, silentLogger, type CloudEvent, type KafkaBusSpec } from "@ofevents/core";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { createKafkaBus, kafkaName, type KafkaBusTuning } from "../src/drivers/kafka.js";
import { DeadLetterExtension, type EventBus } from "../src/index.js";
import { busContract, uniq } from "./contract.js";

// Short group timings: joins and rebalances take a few hundred ms instead of seconds.
const TUNING: KafkaBusTuning = {
  sessionTimeoutMs: 6_000,
  heartbeatIntervalMs: 300,
  rebalanceTimeoutMs: 10_000,
  maxWaitTimeMs: 100,
  joinTimeoutMs: 30_000,
};

let broker: KafkaBroker;
let admin: kafkajs.Admin;

beforeAll(async () => {
  broker = await KafkaBroker.start({
    properties: {
      // The driver must create every topic itself.
      "auto.create.topics.enable": false,
      // Lets the crash test use a 2 s session timeout.
      "group.min.session.timeout.ms": 1_000,
    },
  });
  admin = new kafkajs.Kafka({ brokers: broker.brokers, logCreator: () => () => {} }).admin();
  await admin.connect();
});

afterAll(async () => {
  await admin?.disconnect();
  await broker?.stop();
});

function spec(extra: Partial<KafkaBusSpec> = {}): KafkaBusSpec {
  return { brokers: broker.brokers.join(","), ...extra };
}

const buses: EventBus[] = [];
async function open(extra: Partial<KafkaBusSpec> = {}): Promise<EventBus> {
  const bus = await createKafkaBus(spec(extra), { logger: silentLogger() }, TUNING);
  buses.push(bus);
  return bus;
}
afterEach(async () => {
  await Promise.allSettled(buses.splice(0).map((b) => b.close()));
});

function ev(n: number): CloudEvent {
  return newEvent({ source: "/kafka/test", type: "io.ofevents.test", data: { n } });
}

function nOf(e: CloudEvent): number {
  return (e.data as { n: number }).n;
}

/** Sum of the group's committed offsets on a Kafka topic (-1 counts as 0). */
async function committed(groupId: string, topic: string): Promise<number[]> {
  const [t] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return (t?.partitions ?? []).sort((a, b) => a.partition - b.partition).map((p) => Math.max(0, Number(p.offset)));
}

// Two partitions, so that two members of a group share the work.
busContract("kafka", () => createKafkaBus(spec({ partitions: 2 }), { logger: silentLogger() }, TUNING), {
  timeoutMs: 20_000,
  publishRaw: async (_bus, topic, bytes) => {
    const producer = new kafkajs.Kafka({ brokers: broker.brokers, logCreator: () => () => {} }).producer({
      createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    try {
      await producer.send({ topic: kafkaName(topic), messages: [{ value: Buffer.from(bytes) }] });
    } finally {
      await producer.disconnect();
    }
  },
});

describe("kafka bus - offsets", () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill("SIGKILL");
    child = undefined;
  });

  it("kafka bus - commits only after the handler resolved: a crash redelivers the unresolved message, not the acked ones", async () => {
    const topic = uniq("t");
    const group = uniq("g");
    // The first member runs in a child process that is killed (SIGKILL) while its handler of
    // message 3 hangs; 1, 2, 4 and 5 resolved.
    const driver = fileURLToPath(new URL("../src/drivers/kafka.ts", import.meta.url));
    const code = `
      const { createKafkaBus } = await import(${JSON.stringify(driver)});
      const { silentLogger } = await import("@ofevents/core");
      const cfg = JSON.parse(process.env.OF_CFG);
      const bus = await createKafkaBus(cfg.spec, { logger: silentLogger() }, cfg.tuning);
      await bus.subscribe([cfg.topic], async (e) => {
        process.stdout.write("start " + e.data.n + "\\n");
        if (e.data.n === 3) await new Promise(() => {});
        process.stdout.write("done " + e.data.n + "\\n");
      }, { group: cfg.group });
      process.stdout.write("ready\\n");
    `;
    const cfg = {
      spec: spec(),
      tuning: { ...TUNING, sessionTimeoutMs: 2_000, rebalanceTimeoutMs: 3_000 },
      topic,
      group,
    };
    const lines: string[] = [];
    let output = "";
    child = spawn(
      process.execPath,
      ["--conditions=@ofevents/source", "--import", "tsx", "--input-type=module", "-e", code],
      {
        cwd: fileURLToPath(new URL("../../..", import.meta.url)),
        env: { ...process.env, OF_CFG: JSON.stringify(cfg) },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    child.stdout!.on("data", (d: Buffer) => {
      output += d.toString();
      lines.push(...d.toString().split("\n").filter(Boolean));
    });
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<void>((r) => child!.once("exit", () => r()));
    await waitFor(() => lines.includes("ready") || child!.exitCode !== null, {
      timeoutMs: 60_000,
      intervalMs: 10,
      message: "child subscribed",
    });
    expect(lines, output).toContain("ready");

    const bus = await open();
    for (let n = 1; n <= 5; n++) await bus.publish(topic, ev(n));
    await waitFor(() => ["done 1", "done 2", "start 3", "done 4", "done 5"].every((l) => lines.includes(l)), {
      timeoutMs: 20_000,
      intervalMs: 10,
      message: "child handled 1, 2, 4, 5",
    });
    expect(lines).not.toContain("done 3");
    // The watermark stops at message 3 (offset 2), although 4 and 5 resolved.
    await waitFor(async () => (await committed(groupId(group), kafkaName(topic)))[0] === 2, {
      timeoutMs: 10_000,
      message: "commit of offset 2",
    });
    child.kill("SIGKILL");
    await exited;

    const got: number[] = [];
    await bus.subscribe([topic], async (e) => void got.push(nOf(e)), { group });
    await waitFor(() => got.length >= 3, {
      timeoutMs: 20_000,
      intervalMs: 10,
      message: "redelivery to the new member",
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(got).toEqual([3, 4, 5]);
    await waitFor(async () => (await committed(groupId(group), kafkaName(topic)))[0] === 5, {
      timeoutMs: 10_000,
      message: "commit of offset 5",
    });
  }, 90_000);

  it("kafka bus - a failing message does not hold back later ones, and is dead-lettered before the commit passes it", async () => {
    const bus = await open();
    const topic = uniq("t");
    const group = uniq("g");
    const dead: CloudEvent[] = [];
    await bus.subscribe([`${topic}.deadletter`], async (e) => void dead.push(e), { group: uniq("dl") });
    const order: string[] = [];
    bus.events.on("dead_lettered", (p) => order.push(`dead ${p.id}`));
    const events = [1, 2, 3, 4, 5].map(ev);
    await bus.subscribe(
      [topic],
      async (e) => {
        if (nOf(e) === 1) throw new Error("poison");
        order.push(`ok ${nOf(e)}`);
      },
      { group, maxDeliver: 3, backoffMs: 300 },
    );
    for (const e of events) await bus.publish(topic, e);
    await waitFor(() => dead.length === 1 && order.length === 5, {
      timeoutMs: 20_000,
      intervalMs: 10,
      message: "dead letter and deliveries",
    });
    // 2..5 went through while 1 was being retried.
    expect(order.slice(0, 4).sort()).toEqual(["ok 2", "ok 3", "ok 4", "ok 5"]);
    expect(order[4]).toBe(`dead ${events[0]!.id}`);
    expect(dead[0]!.id).toBe(events[0]!.id);
    expect(dead[0]![DeadLetterExtension.Reason]).toBe("poison");
    await waitFor(async () => (await committed(groupId(group), kafkaName(topic)))[0] === 5, {
      timeoutMs: 10_000,
      message: "commit past the dead letter",
    });
  });

  it("kafka bus - with maxInFlight 1 a failing message holds its partition until it is dead-lettered, then the rest follows in order", async () => {
    const bus = await open();
    const topic = uniq("t");
    const order: string[] = [];
    bus.events.on("dead_lettered", () => order.push("dead 1"));
    await bus.subscribe(
      [topic],
      async (e) => {
        if (nOf(e) === 1) throw new Error("poison");
        order.push(`ok ${nOf(e)}`);
      },
      { group: uniq("g"), maxDeliver: 2, backoffMs: 50, maxInFlight: 1 },
    );
    for (let n = 1; n <= 4; n++) await bus.publish(topic, ev(n));
    await waitFor(() => order.length === 4, { timeoutMs: 20_000, intervalMs: 10, message: "all settled" });
    expect(order).toEqual(["dead 1", "ok 2", "ok 3", "ok 4"]);
  });

  it("kafka bus - several partitions are consumed with maxInFlight > 1, each event once, every offset committed", async () => {
    const prefix = `${uniq("ofe")}.`;
    const bus = await open({ partitions: 4, topicPrefix: prefix });
    const topic = uniq("t");
    const group = uniq("g");
    const seen = new Map<string, number>();
    let inFlight = 0;
    let peak = 0;
    await bus.subscribe(
      [topic],
      async (e) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
        seen.set(e.id, (seen.get(e.id) ?? 0) + 1);
        inFlight--;
      },
      { group, maxInFlight: 5 },
    );
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const e = ev(i);
        ids.push(e.id);
        await bus.publish(topic, e);
      }),
    );
    await waitFor(() => seen.size === 60, { timeoutMs: 20_000, intervalMs: 10, message: "60 deliveries" });
    expect([...seen.keys()].sort()).toEqual([...ids].sort());
    expect([...seen.values()].every((c) => c === 1)).toBe(true);
    expect(peak).toBeLessThanOrEqual(5);
    expect(peak).toBeGreaterThan(1);
    const kt = kafkaName(`${prefix}${topic}`);
    const [meta] = (await admin.fetchTopicMetadata({ topics: [kt] })).topics;
    expect(meta?.partitions).toHaveLength(4);
    await waitFor(async () => (await committed(groupId(group, prefix), kt)).reduce((a, b) => a + b, 0) === 60, {
      timeoutMs: 10_000,
      message: "60 committed",
    });
    const perPartition = await committed(groupId(group, prefix), kt);
    expect(perPartition.filter((c) => c > 0).length).toBeGreaterThan(1);
  });

  it("kafka bus - a group that subscribes after events were published starts at the end, not the beginning", async () => {
    const bus = await open();
    const topic = uniq("t");
    await bus.publish(topic, ev(1));
    const got: number[] = [];
    await bus.subscribe([topic], async (e) => void got.push(nOf(e)), { group: uniq("g") });
    await bus.publish(topic, ev(2));
    await waitFor(() => got.length >= 1, { timeoutMs: 20_000, intervalMs: 10, message: "delivery" });
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([2]);
  });

  it("kafka bus - a partition added to a topic the group reads starts at the records published since the group began", async () => {
    const bus = await open();
    const topic = uniq("t");
    const group = uniq("g");
    const kt = kafkaName(topic);
    const first = await bus.subscribe([topic], async () => {}, { group });
    await first.close();
    await admin.createPartitions({ topicPartitions: [{ topic: kt, count: 2 }] });
    const producer = new kafkajs.Kafka({ brokers: broker.brokers, logCreator: () => () => {} }).producer({
      createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const old = { ...ev(1), time: "2020-01-01T00:00:00.000Z" };
    const fresh = ev(2);
    await producer.send({
      topic: kt,
      messages: [
        { partition: 1, value: JSON.stringify(old), timestamp: String(Date.now() - 3_600_000) },
        { partition: 1, value: JSON.stringify(fresh) },
      ],
    });
    await producer.disconnect();
    const got: number[] = [];
    await bus.subscribe([topic], async (e) => void got.push(nOf(e)), { group });
    await waitFor(() => got.length >= 1, {
      timeoutMs: 20_000,
      intervalMs: 10,
      message: "delivery from the new partition",
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([2]);
  });

  it("kafka bus - a rebalance while messages are in flight loses none of them", async () => {
    const bus = await open({ partitions: 4 });
    const topic = uniq("t");
    const group = uniq("g");
    const seen = new Set<number>();
    let count = 0;
    const slow = async (e: CloudEvent): Promise<void> => {
      await new Promise((r) => setTimeout(r, 30));
      seen.add(nOf(e));
      count++;
    };
    const a = await bus.subscribe([topic], slow, { group, maxInFlight: 4 });
    for (let n = 0; n < 40; n++) await bus.publish(topic, ev(n));
    await waitFor(() => count >= 5, { timeoutMs: 20_000, intervalMs: 10, message: "first deliveries" });
    const b = await bus.subscribe([topic], slow, { group, maxInFlight: 4 });
    for (let n = 40; n < 80; n++) await bus.publish(topic, ev(n));
    await waitFor(() => count >= 45, { timeoutMs: 20_000, intervalMs: 10, message: "deliveries after the join" });
    await a.close();
    for (let n = 80; n < 100; n++) await bus.publish(topic, ev(n));
    await waitFor(() => seen.size === 100, { timeoutMs: 20_000, intervalMs: 10, message: "every event" });
    await b.close();
    // Duplicates are allowed only for messages unsettled at a revocation.
    expect(count - seen.size).toBeLessThanOrEqual(16);
    const offsets = await committed(groupId(group), kafkaName(topic));
    expect(offsets.reduce((x, y) => x + y, 0)).toBe(100);
  });

  it("kafka bus - a record that is not a CloudEvent goes to the dead-letter topic wrapped", async () => {
    const bus = await open();
    const topic = uniq("t");
    const dead: CloudEvent[] = [];
    await bus.subscribe([`${topic}.deadletter`], async (e) => void dead.push(e), { group: uniq("dl") });
    let called = 0;
    await bus.subscribe([topic], async () => void called++, { group: uniq("g") });
    const producer = new kafkajs.Kafka({ brokers: broker.brokers, logCreator: () => () => {} }).producer({
      createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    await producer.send({ topic: kafkaName(topic), messages: [{ value: "not json" }] });
    await producer.disconnect();
    await waitFor(() => dead.length === 1, { timeoutMs: 20_000, intervalMs: 10, message: "dead letter" });
    expect(called).toBe(0);
    expect(dead[0]!.type).toBe("io.ofevents.bus.undecodable");
    expect(Buffer.from(String(dead[0]!.data_base64), "base64").toString()).toBe("not json");
  });
});

describe("kafka bus - configuration", () => {
  it("kafka bus - kafkaName keeps valid names and makes others valid and distinct", () => {
    expect(kafkaName("default-src-ev.deadletter_1")).toBe("default-src-ev.deadletter_1");
    const a = kafkaName("a/b");
    const b = kafkaName("a:b");
    expect(a).toMatch(/^[a-zA-Z0-9._-]+$/);
    expect(a).not.toBe(b);
    expect(kafkaName("x".repeat(300))).toHaveLength(249);
  });

  it("kafka bus - kafkajs logs through the injected logger, its info as debug", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({
      level: "debug",
      write: (l) => void lines.push(JSON.parse(l) as Record<string, unknown>),
    });
    const bus = await createKafkaBus(spec(), { logger }, TUNING);
    await bus.subscribe([uniq("t")], async () => {}, { group: uniq("g") });
    await bus.close();
    const fromKafkajs = lines.filter((l) => typeof l["kafkajs"] === "string");
    expect(fromKafkajs.length).toBeGreaterThan(0);
    expect(fromKafkajs.every((l) => l["component"] === "bus.kafka")).toBe(true);
    expect(fromKafkajs.some((l) => l["level"] === 30)).toBe(false);
  });

  it("kafka bus - an unreachable broker rejects with a retriable BusError", async () => {
    const err = await createKafkaBus(
      { brokers: "127.0.0.1:1" },
      { logger: silentLogger() },
      {
        connectionTimeoutMs: 200,
        retries: 0,
      },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "BusError", retriable: true });
  });
});

describe("kafka bus - credentials", () => {
  it("kafka bus - a SASL secret without a resolver is a CONFIG error naming the reference", async () => {
    const sasl = {
      mechanism: "plain" as const,
      usernameSecret: { name: "kafka", key: "user" },
      passwordSecret: { name: "kafka", key: "pass" },
    };
    const err = await createKafkaBus(spec({ sasl }), { logger: silentLogger(), namespace: "prod" }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: ErrorCode.Config });
    expect((err as Error).message).toContain("prod/kafka");
  });

  it("kafka bus - SASL and TLS secrets are resolved in the bus's namespace", async () => {
    const asked: string[] = [];
    const secrets = {
      resolve: (ref: { name: string; key: string }, namespace: string): string => {
        asked.push(`${namespace}/${ref.name}/${ref.key}`);
        return "x";
      },
    };
    const sasl = {
      mechanism: "scram-sha-256" as const,
      usernameSecret: { name: "kafka", key: "user" },
      passwordSecret: { name: "kafka", key: "pass" },
    };
    const tls = { caSecret: { name: "tls", key: "ca.crt" }, insecureSkipVerify: true };
    // The broker speaks neither: creation fails, after the secrets were looked up.
    const err = await createKafkaBus(
      spec({ sasl, tls }),
      { logger: silentLogger(), secrets, namespace: "prod" },
      {
        connectionTimeoutMs: 500,
        retries: 0,
      },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "BusError" });
    expect(asked.sort()).toEqual(["prod/kafka/pass", "prod/kafka/user", "prod/tls/ca.crt"]);
  });
});

function groupId(group: string, prefix = ""): string {
  return kafkaName(`${prefix}${group}`);
}
