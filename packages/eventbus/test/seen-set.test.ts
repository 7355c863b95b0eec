/**
 * The seen sets of the memory, JetStream and Kafka buses, the durable ones against a real
 * nats-server with JetStream and a real Kafka broker (one each for this file). Each test owns its
 * set names (random suffix); windows are short and expiry is awaited with waitFor.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import kafkajs from "kafkajs";
import { connect, nanos } from "nats";
import { BusError, ErrorCode, kafkaName, silentLogger } from "@ofevents/core";
import { KafkaBroker } from "../../../test/helpers/kafka.js";
import { NatsServer } from "../../../test/helpers/nats.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { createJetStreamBus } from "../src/drivers/jetstream.js";
import { seenBucketName } from "../src/drivers/jetstream-seen.js";
import { createKafkaBus, type KafkaBusTuning } from "../src/drivers/kafka.js";
import { MemorySeenSet, createMemoryBus, type EventBus, type SeenSet } from "../src/index.js";
import { uniq } from "./contract.js";

const WINDOW_MS = 1_500;

/** Awaits the end of `set`'s window for `key`: no fixed sleep, a poll of `has`. */
async function expired(set: SeenSet, key: string): Promise<void> {
  await waitFor(async () => !(await set.has(key)), { timeoutMs: WINDOW_MS + 10_000, message: `${key} expired` });
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.fail("expected a rejection"),
    (err: unknown) => err,
  );
}

interface Driver {
  kind: string;
  /** A new bus: a fresh connection, as after a process restart. */
  open(): Promise<EventBus>;
}

/** What every bus's seen set does; `durable` adds what survives a new bus instance. */
function seenSetContract(name: string, driver: () => Driver, durable: boolean): void {
  describe(`${name} seen set`, () => {
    const buses: EventBus[] = [];
    const open = async (): Promise<EventBus> => {
      const bus = await driver().open();
      buses.push(bus);
      return bus;
    };
    afterEach(async () => {
      await Promise.allSettled(buses.splice(0).map((b) => b.close()));
    });

    it(`${name} seen set - a key added is seen, an unknown key is not`, async () => {
      const set = await (await open()).seenSet!(uniq("dedup"), WINDOW_MS);
      expect(set.kind).toBe(driver().kind);
      await set.add("ev-1");
      expect(await set.has("ev-1")).toBe(true);
      expect(await set.has("ev-2")).toBe(false);
      await set.close();
      await set.close();
    });

    it(`${name} seen set - any string is a key: spaces, slashes, dots, UTF-8, long`, async () => {
      const set = await (await open()).seenSet!(uniq("dedup"), 60_000);
      const keys = ["a b", "/src/x.y", ".", "héllo ✓", "k".repeat(2_000), "a*b>c"];
      for (const k of keys) await set.add(k);
      for (const k of keys) expect(await set.has(k)).toBe(true);
      expect(await set.has("a b ")).toBe(false);
    });

    it(`${name} seen set - a key is no longer seen after the window; adding it again starts a new window`, async () => {
      const set = await (await open()).seenSet!(uniq("dedup"), WINDOW_MS);
      await set.add("ev-1");
      const added = Date.now();
      expect(await set.has("ev-1")).toBe(true);
      await expired(set, "ev-1");
      expect(Date.now() - added).toBeGreaterThanOrEqual(WINDOW_MS - 100);
      await set.add("ev-1");
      expect(await set.has("ev-1")).toBe(true);
    });

    it(`${name} seen set - sets of different names do not share keys`, async () => {
      const bus = await open();
      const a = await bus.seenSet!(uniq("dedup"), 60_000);
      const b = await bus.seenSet!(uniq("dedup"), 60_000);
      await a.add("ev-1");
      expect(await a.has("ev-1")).toBe(true);
      expect(await b.has("ev-1")).toBe(false);
    });

    it(`${name} seen set - a window that is not positive is a CONFIG error`, async () => {
      const bus = await open();
      for (const w of [0, -1, Number.NaN]) {
        const err = await rejection(bus.seenSet!(uniq("dedup"), w));
        expect(err).toBeInstanceOf(BusError);
        expect((err as BusError).code).toBe(ErrorCode.Config);
        expect((err as BusError).retriable).toBe(false);
      }
    });

    it(`${name} seen set - a closed bus gives no set`, async () => {
      const bus = await open();
      await bus.close();
      const err = await rejection(bus.seenSet!(uniq("dedup"), WINDOW_MS));
      expect((err as BusError).code).toBe(ErrorCode.BusClosed);
    });

    if (durable) {
      it(`${name} seen set - a new bus instance with the same name sees the keys added, not the expired ones`, async () => {
        const name = uniq("dedup");
        const first = await open();
        const before = await first.seenSet!(name, WINDOW_MS);
        await before.add("old");
        await expired(before, "old");
        await before.add("fresh");
        await before.close();
        await first.close();

        const after = await (await open()).seenSet!(name, WINDOW_MS);
        expect(await after.has("fresh")).toBe(true);
        expect(await after.has("old")).toBe(false);
        expect(await after.has("never")).toBe(false);
        // The new instance counts the window from when the key was added, not from its start.
        await expired(after, "fresh");
      });
    }
  });
}

describe("memory seen set - in-process", () => {
  seenSetContract(
    "memory",
    () => ({ kind: "memory", open: async () => createMemoryBus({ logger: silentLogger() }) }),
    false,
  );

  it("memory seen set - sets of one name in one bus share their keys (a restarted trigger in the process)", async () => {
    const bus = createMemoryBus({ logger: silentLogger() });
    const name = uniq("dedup");
    const first = await bus.seenSet!(name, 60_000);
    await first.add("ev-1");
    await first.close();
    const second = await bus.seenSet!(name, 60_000);
    expect(await second.has("ev-1")).toBe(true);
    await second.add("ev-2");
    expect(await first.has("ev-2")).toBe(true);
    // Another bus (another process) shares nothing.
    const other = createMemoryBus({ logger: silentLogger() });
    expect(await (await other.seenSet!(name, 60_000)).has("ev-1")).toBe(false);
    await Promise.all([bus.close(), other.close()]);
  });

  it("memory seen set - holds only the keys added within the window: expired ones go on the next add", async () => {
    const set = new MemorySeenSet(200);
    for (let i = 0; i < 1_000; i++) await set.add(`ev-${i}`);
    expect(set.size).toBe(1_000);
    await expired(set, "ev-999");
    await set.add("late");
    expect(set.size).toBe(1);
    expect(await set.has("late")).toBe(true);
  });

  it("memory seen set - a key remembered with an old time counts from that time", async () => {
    const set = new MemorySeenSet(60_000);
    set.remember("old", Date.now() - 61_000);
    set.remember("recent", Date.now() - 59_000);
    expect(await set.has("old")).toBe(false);
    expect(await set.has("recent")).toBe(true);
    expect(set.size).toBe(1);
  });
});

describe("jetstream seen set - KV bucket", () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true });
  });
  afterAll(async () => {
    await server?.stop();
  });
  const openBus = (): Promise<EventBus> =>
    createJetStreamBus(
      { url: server.url },
      { logger: silentLogger() },
      { publishTimeoutMs: 2_000, drainTimeoutMs: 2_000 },
    );

  seenSetContract("jetstream", () => ({ kind: "jetstream-kv", open: openBus }), true);

  it("jetstream seen set - the bucket is named from the stream prefix and the name, its TTL is the window", async () => {
    const bus = await openBus();
    const name = `${uniq("dedup")}.odd name/ü`;
    await bus.seenSet!(name, WINDOW_MS);
    const bucket = seenBucketName("ofevents", name);
    expect(bucket).toMatch(/^ofevents-dedup-[A-Za-z0-9_-]+$/);
    const nc = await connect({ servers: server.url });
    try {
      const info = await (await nc.jetstreamManager()).streams.info(`KV_${bucket}`);
      expect(info.config.max_age).toBe(nanos(WINDOW_MS));
      expect(info.config.max_msgs_per_subject).toBe(1);
    } finally {
      await nc.close();
      await bus.close();
    }
  });

  it("jetstream seen set - a bucket made for a longer window gets this window: older entries are not seen", async () => {
    const name = uniq("dedup");
    const bus = await openBus();
    try {
      const long = await bus.seenSet!(name, 60_000);
      await long.add("ev-1");
      const added = Date.now();
      await waitFor(() => Date.now() - added > 1_000, { timeoutMs: 5_000, message: "1 s passed" });
      const short = await bus.seenSet!(name, 1_000);
      expect(await short.has("ev-1")).toBe(false);
      const nc = await connect({ servers: server.url });
      try {
        const info = await (await nc.jetstreamManager()).streams.info(`KV_${seenBucketName("ofevents", name)}`);
        expect(info.config.max_age).toBe(nanos(1_000));
      } finally {
        await nc.close();
      }
    } finally {
      await bus.close();
    }
  });

  it("jetstream seen set - a set of a closed bus rejects with BUS_CLOSED", async () => {
    const bus = await openBus();
    const set = await bus.seenSet!(uniq("dedup"), WINDOW_MS);
    await bus.close();
    for (const err of [await rejection(set.add("ev-1")), await rejection(set.has("ev-1"))]) {
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusClosed);
    }
  });
});

describe("kafka seen set - compacted topic", () => {
  let broker: KafkaBroker;
  let admin: kafkajs.Admin;
  const tuning: KafkaBusTuning = { maxWaitTimeMs: 100, seenSetLoadTimeoutMs: 30_000 };
  beforeAll(async () => {
    broker = await KafkaBroker.start({ properties: { "auto.create.topics.enable": false } });
    admin = new kafkajs.Kafka({ brokers: broker.brokers, logCreator: () => () => {} }).admin();
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.disconnect();
    await broker?.stop();
  });
  const openBus = (extra: KafkaBusTuning = {}): Promise<EventBus> =>
    createKafkaBus({ brokers: broker.brokers.join(",") }, { logger: silentLogger() }, { ...tuning, ...extra });

  seenSetContract("kafka", () => ({ kind: "kafka-compacted-topic", open: () => openBus() }), true);

  it("kafka seen set - the topic is compacted, kept for the window, and the loader's group is gone", async () => {
    const name = uniq("dedup");
    const bus = await openBus();
    try {
      const set = await bus.seenSet!(name, WINDOW_MS);
      await set.add("ev-1");
      // A second open reads the topic through a throwaway group.
      expect(await (await bus.seenSet!(name, WINDOW_MS)).has("ev-1")).toBe(true);
      const topic = kafkaName(`dedup.${name}`);
      const { resources } = await admin.describeConfigs({
        resources: [
          { type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ["cleanup.policy", "retention.ms"] },
        ],
        includeSynonyms: false,
      });
      const config = Object.fromEntries(resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
      expect(config).toEqual({ "cleanup.policy": "compact,delete", "retention.ms": String(WINDOW_MS) });
      const { groups } = await admin.listGroups();
      expect(groups.filter((g) => g.groupId.startsWith("dedup.load."))).toEqual([]);
    } finally {
      await bus.close();
    }
  });

  it("kafka seen set - a topic made for a shorter window is set to this window", async () => {
    const name = uniq("dedup");
    const bus = await openBus();
    try {
      await bus.seenSet!(name, 1_000);
      await bus.seenSet!(name, 3_600_000);
      const { resources } = await admin.describeConfigs({
        resources: [
          { type: kafkajs.ConfigResourceTypes.TOPIC, name: kafkaName(`dedup.${name}`), configNames: ["retention.ms"] },
        ],
        includeSynonyms: false,
      });
      expect(resources[0]!.configEntries[0]?.configValue).toBe("3600000");
    } finally {
      await bus.close();
    }
  });

  it("kafka seen set - opening is bounded in time: a clear retriable BusError", async () => {
    const bus = await openBus({ seenSetLoadTimeoutMs: 1 });
    try {
      const err = await rejection(bus.seenSet!(uniq("dedup"), WINDOW_MS));
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusSubscribe);
      expect((err as BusError).retriable).toBe(true);
      expect((err as Error).message).toMatch(/did not finish within 1 ms/);
    } finally {
      await bus.close();
    }
  });
});
