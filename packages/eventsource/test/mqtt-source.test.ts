// The mqtt source against a real mosquitto: payload decoding, PUBACK only after the bus took the
// event, redelivery through the persistent session, run through the real EventSource runtime onto
// the in-memory bus.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectAsync, type MqttClient } from "mqtt";
import { silentLogger, type MqttSourceSpec } from "@ofevents/core";
import { createMemoryBus, type EventPublisher } from "@ofevents/eventbus";
import { mqttAdapter } from "../src/sources/mqtt.js";
import { MosquittoServer } from "../../../test/helpers/mosquitto.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { FlakyPublisher, UUID, sourceHarness, type RunningSource } from "./support.js";

const NS = "mqtt-test";
const EVENT = "readings";
const harness = sourceHarness({ namespace: NS, kind: "mqtt", event: EVENT });
const { collect } = harness;

let server: MosquittoServer;
let publisher: MqttClient;

beforeAll(async () => {
  server = await MosquittoServer.start();
  publisher = await connectAsync(server.url, {
    protocolVersion: 5,
    clientId: `pub-${randomSuffix()}`,
    reconnectPeriod: 0,
  });
});

afterAll(async () => {
  await publisher?.endAsync();
  await server?.stop();
});

async function publish(topic: string, payload: string | Buffer, properties?: Record<string, unknown>): Promise<void> {
  await publisher.publishAsync(topic, payload, { qos: 1, ...(properties === undefined ? {} : { properties }) });
}

/** Starts an EventSource with one mqtt event through the runtime; fails on a start error. */
const startSource = (
  spec: Partial<MqttSourceSpec> & { topic: string },
  bus: EventPublisher,
  name: string,
): Promise<RunningSource> => harness.start(name, { url: server.url.replace("mqtt:", "tcp:"), ...spec }, bus);

describe("mqtt source - events", () => {
  it("mqtt source - QoS 1 payloads become CloudEvents: JSON, text, bytes, MQTT 5 content type", async () => {
    const base = `plant-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const runtime = await startSource({ topic: `${base}/#` }, bus, name);
    await publish(`${base}/json`, JSON.stringify({ temp: 21.5 }));
    await publish(`${base}/text`, "door open");
    await publish(`${base}/bytes`, Buffer.from([0xff, 0x00, 0xfe]));
    await publish(`${base}/csv`, "a,b\n1,2", { contentType: "text/csv" });
    await publish(`${base}/declared-json`, "[1,2]", { contentType: "application/json; charset=utf-8" });
    await waitFor(() => got.length === 5, { message: "five events" });
    await runtime.stop();
    await bus.close();

    expect(got[0]).toMatchObject({
      specversion: "1.0",
      source: `/apis/v1/namespaces/${NS}/eventsources/${name}`,
      type: "io.openfunction.events.mqtt",
      subject: `${base}/json`,
      datacontenttype: "application/json",
      data: { temp: 21.5 },
    });
    expect(got[0]!.id).toMatch(UUID);
    expect(got[0]).not.toHaveProperty("mqttdup");
    expect(got[1]).toMatchObject({ subject: `${base}/text`, datacontenttype: "text/plain", data: "door open" });
    expect(got[2]).toMatchObject({
      subject: `${base}/bytes`,
      datacontenttype: "application/octet-stream",
      data_base64: Buffer.from([0xff, 0x00, 0xfe]).toString("base64"),
    });
    expect(got[3]).toMatchObject({ subject: `${base}/csv`, datacontenttype: "text/csv", data: "a,b\n1,2" });
    expect(got[4]).toMatchObject({ datacontenttype: "application/json; charset=utf-8", data: [1, 2] });
    expect(new Set(got.map((e) => e.id)).size).toBe(5);
  });

  it("mqtt source - keeps the attributes of a CloudEvent in MQTT 5 binary mode", async () => {
    const topic = `ce-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const runtime = await startSource({ topic }, bus, name);
    await publish(topic, JSON.stringify({ n: 1 }), {
      contentType: "application/json",
      userProperties: {
        specversion: "1.0",
        id: "order-17",
        source: "/shop",
        type: "shop.order.created",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Not-An-Attribute": "ignored",
      },
    });
    await waitFor(() => got.length === 1, { message: "one event" });
    await runtime.stop();
    await bus.close();
    expect(got[0]).toMatchObject({
      id: "order-17",
      source: "/shop",
      type: "shop.order.created",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      datacontenttype: "application/json",
      data: { n: 1 },
    });
    expect(got[0]).not.toHaveProperty("X-Not-An-Attribute");
  });
});

describe("mqtt source - acknowledgement", () => {
  it("mqtt source - a message the bus does not take is not acknowledged and comes back after a restart", async () => {
    const topic = `alarm-${randomSuffix()}`;
    const consumerID = `c-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const down = new FlakyPublisher(createMemoryBus({ logger: silentLogger() }), { failNext: Number.MAX_SAFE_INTEGER });
    const first = await startSource({ topic, consumerID }, down, name);
    await publish(topic, JSON.stringify({ level: "high" }));
    await waitFor(() => down.calls >= 3, { message: "publish retried" });
    await first.stop();

    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const second = await startSource({ topic, consumerID }, bus, name);
    await waitFor(() => got.length === 1, { message: "redelivered message" });
    await second.stop();
    await bus.close();
    expect(got[0]).toMatchObject({ subject: topic, data: { level: "high" }, mqttdup: true });
  });

  it("mqtt source - acknowledges once a retried publish succeeded, so a restart does not redeliver", async () => {
    const topic = `alarm-${randomSuffix()}`;
    const consumerID = `c-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const flaky = new FlakyPublisher(bus, { failNext: 2 });
    const first = await startSource({ topic, consumerID }, flaky, name);
    await publish(topic, "first");
    await waitFor(() => got.length === 1, { message: "published after two failures" });
    await first.stop();
    expect(flaky.calls).toBe(3);

    const second = await startSource({ topic, consumerID }, bus, name);
    await publish(topic, "marker");
    await waitFor(() => got.length >= 2, { message: "marker" });
    await second.stop();
    await bus.close();
    // Had "first" stayed unacknowledged, the broker would have re-sent it before the marker.
    expect(got.map((e) => e.data)).toEqual(["first", "marker"]);
  });

  it("mqtt source - messages published while the source is stopped arrive after a restart (persistent session)", async () => {
    const topic = `meter-${randomSuffix()}`;
    const consumerID = `c-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    await (await startSource({ topic, consumerID }, bus, name)).stop();
    await publish(topic, "1");
    await publish(topic, "2");
    const runtime = await startSource({ topic, consumerID }, bus, name);
    await waitFor(() => got.length === 2, { message: "queued messages" });
    await runtime.stop();
    await bus.close();
    expect(got.map((e) => e.data)).toEqual([1, 2]);
  });
});

describe("mqtt source - resilience", () => {
  it("mqtt source - reconnects and subscribes again after the broker restarts without its sessions", async () => {
    const topic = `grid-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const runtime = await startSource({ topic }, bus, name);
    await publish(topic, "before");
    await waitFor(() => got.length === 1, { message: "message before the restart" });
    await publisher.endAsync(true);
    await server.restart();
    publisher = await connectAsync(server.url, {
      protocolVersion: 5,
      clientId: `pub-${randomSuffix()}`,
      reconnectPeriod: 0,
    });
    // The broker forgot the subscription; publish until the source has subscribed again.
    await waitFor(
      async () => {
        await publish(topic, "after");
        return got.length >= 2;
      },
      { timeoutMs: 20_000, intervalMs: 250, message: "message after the restart" },
    );
    await runtime.stop();
    await bus.close();
    expect(got[0]!.data).toBe("before");
    expect(got[1]!.data).toBe("after");
  });
});

describe("mqtt source - validate", () => {
  const base = { url: "tcp://broker:1883", topic: "sensors/+/temp" };
  it.each([
    { name: "an unknown scheme", spec: { url: "http://broker:1883" }, path: "url", message: /scheme/ },
    { name: "a non-URL", spec: { url: "//broker" }, path: "url", message: /not a URL/ },
    { name: "a host without scheme", spec: { url: "broker:1883" }, path: "url", message: /scheme "broker:\/\/"/ },
    { name: "# not last", spec: { topic: "a/#/b" }, path: "topic", message: /topic filter/ },
    { name: "+ inside a level", spec: { topic: "a/b+/c" }, path: "topic", message: /topic filter/ },
    { name: "a CA that is not PEM", spec: { caCert: "not a cert" }, path: "caCert", message: /PEM/ },
    {
      name: "a client cert without key",
      spec: { clientCert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----" },
      path: "clientKey",
      message: /required/,
    },
  ])("mqtt source - validate rejects $name", ({ spec, path, message }) => {
    const issues = mqttAdapter.validate({ ...base, ...spec } as MqttSourceSpec);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe(path);
    expect(issues[0]!.message).toMatch(message);
  });

  it.each([
    { name: "OpenFunction's fields", spec: { consumerID: "c1", qos: 2, retain: false, cleanSession: true } },
    { name: "mqtt:// with credentials", spec: { url: "mqtts://user:pw@broker", topic: "#" } },
    { name: "a shared subscription", spec: { topic: "$share/workers/jobs/#" } },
  ])("mqtt source - validate accepts $name", ({ spec }) => {
    expect(mqttAdapter.validate({ ...base, ...spec } as MqttSourceSpec)).toEqual([]);
  });
});
