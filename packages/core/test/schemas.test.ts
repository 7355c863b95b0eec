import { fileURLToPath } from "node:url";
import { describe, expect, expectTypeOf, it } from "vitest";
import {
  API_VERSION,
  busTopic,
  eventSourceSchema,
  eventBusSchema,
  loadManifests,
  parseManifestText,
  triggerSchema,
  type Trigger,
} from "../src/index.js";

const samples = fileURLToPath(new URL("./fixtures/openfunction/samples.yaml", import.meta.url));

describe("schemas - OpenFunction's documented samples", () => {
  it("schemas - every sample of OpenFunction's events docs loads unchanged", async () => {
    const m = await loadManifests([samples]);
    expect(m.issues).toEqual([]);
    expect(m.eventSources.map((e) => e.resource.metadata.name)).toEqual([
      "my-eventsource",
      "my-eventsource-two",
      "my-eventsource-three",
      "eventsource-a",
      "eventsource-b",
    ]);
    expect(m.eventBuses).toHaveLength(1);
    expect(m.clusterEventBuses).toHaveLength(1);
    expect(m.triggers.map((t) => t.resource.spec.subscribers.map((s) => s.condition))).toEqual([
      ["inputDemo"],
      ["eventB", "eventA && eventB"],
    ]);
    expect(m.functions.map((f) => f.resource.metadata.name)).toEqual(["sink"]);
    expect(m.skipped).toEqual([expect.objectContaining({ kind: "Deployment", name: "unrelated", docIndex: 10 })]);
    const three = m.eventSources[2]!.resource;
    expect(three.spec.cron?.["sample-three"]?.schedule).toBe("@every 5s");
    expect(three.spec.kafka?.["sample-three"]?.authRequired).toBe(false);
  });

  it("schemas - types are inferred from the schemas", () => {
    expectTypeOf<Trigger["spec"]["subscribers"][number]["condition"]>().toEqualTypeOf<string>();
    expectTypeOf<Trigger["spec"]["inputs"]>().toEqualTypeOf<Record<string, Trigger["spec"]["inputs"][string]>>();
  });

  it("schemas - bus topic naming is OpenFunction's {namespace}-{eventSource}-{event}", () => {
    expect(busTopic("default", "my-eventsource", "sample-two")).toBe("default-my-eventsource-sample-two");
  });
});

const base = { apiVersion: API_VERSION, metadata: { name: "x" } };

describe("schemas - bad manifests give the exact path", () => {
  it.each([
    {
      name: "EventSource without eventBus or sink",
      schema: eventSourceSchema,
      input: { ...base, kind: "EventSource", spec: { cron: { t: { schedule: "@every 1s" } } } },
      expected: [{ path: "spec", message: "set spec.eventBus or spec.sink" }],
    },
    {
      name: "EventSource without events",
      schema: eventSourceSchema,
      input: { ...base, kind: "EventSource", spec: { eventBus: "default" } },
      expected: [{ path: "spec", message: expect.stringContaining("define at least one event") }],
    },
    {
      name: "kafka event missing brokers",
      schema: eventSourceSchema,
      input: {
        ...base,
        kind: "EventSource",
        spec: { eventBus: "d", kafka: { e1: { topic: "t", authRequired: false } } },
      },
      expected: [{ path: "spec.kafka.e1.brokers", message: expect.any(String) }],
    },
    {
      name: "typo in a field name",
      schema: eventSourceSchema,
      input: { ...base, kind: "EventSource", spec: { eventBus: "d", cron: { e1: { schedul: "@every 1s" } } } },
      expected: [
        { path: "spec.cron.e1.schedule", message: expect.any(String) },
        { path: "spec.cron.e1", message: expect.stringContaining("schedul") },
      ],
    },
    {
      name: "sink with neither ref nor uri",
      schema: eventSourceSchema,
      input: {
        ...base,
        kind: "EventSource",
        spec: { cron: { e1: { schedule: "@every 1s" } }, sink: {} },
      },
      expected: [{ path: "spec.sink", message: "set sink.uri or sink.ref" }],
    },
    {
      name: "natsStreaming subscriptionType other than topic or queue",
      schema: eventBusSchema,
      input: {
        ...base,
        kind: "EventBus",
        spec: { natsStreaming: { natsURL: "nats://x", natsStreamingClusterID: "stan", subscriptionType: "fanout" } },
      },
      expected: [{ path: "spec.natsStreaming.subscriptionType", message: expect.stringContaining('"topic"') }],
    },
    {
      name: "jetstream deliverPolicy sequence without startSequence",
      schema: eventBusSchema,
      input: { ...base, kind: "EventBus", spec: { jetstream: { url: "nats://x", deliverPolicy: "sequence" } } },
      expected: [{ path: "spec.jetstream.startSequence", message: 'deliverPolicy "sequence" needs startSequence' }],
    },
    {
      name: "webhook endpoint without a leading slash",
      schema: eventSourceSchema,
      input: {
        ...base,
        kind: "EventSource",
        spec: { eventBus: "d", webhook: { w: { port: "12000", endpoint: "orders" } } },
      },
      expected: [{ path: "spec.webhook.w.endpoint", message: 'must start with "/"' }],
    },
    {
      name: "EventBus with two backends",
      schema: eventBusSchema,
      input: { ...base, kind: "EventBus", spec: { jetstream: { url: "nats://x" }, memory: {} } },
      expected: [{ path: "spec", message: "set only one bus backend, got jetstream, memory" }],
    },
    {
      name: "subscriber with neither sink nor topic",
      schema: triggerSchema,
      input: {
        ...base,
        kind: "Trigger",
        spec: { eventBus: "d", inputs: { a: { eventSource: "s", event: "e" } }, subscribers: [{ condition: "a" }] },
      },
      expected: [{ path: "spec.subscribers.0", message: "set sink or topic" }],
    },
    {
      name: "delivery with a bad duration",
      schema: triggerSchema,
      input: {
        ...base,
        kind: "Trigger",
        spec: {
          eventBus: "d",
          inputs: { a: { eventSource: "s", event: "e" } },
          subscribers: [{ condition: "a", topic: "t", delivery: { backoffDelay: "soon" } }],
        },
      },
      expected: [{ path: "spec.subscribers.0.delivery.backoffDelay", message: expect.stringContaining("duration") }],
    },
  ])("schemas - $name", ({ schema, input, expected }) => {
    const r = schema.safeParse(input);
    expect(r.success).toBe(false);
    const got = r.error!.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
    expect(got).toEqual(expected);
  });
});

describe("loader - semantic problems and locations", () => {
  it("loader - reports every problem at once with file, document, resource and field path", () => {
    const text = `
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: t1 }
spec:
  eventBus: default
  inputs:
    a: { eventSource: s, event: e, filter: "data.x >" }
  subscribers:
    - condition: a && missing
      topic: out
    - condition: "a &&"
      topic: out
      transform: "{ 'x': }"
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: Bad_Name }
spec: { eventBus: default, cron: { t: { schedule: "@every 1s" } } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Sensor
metadata: { name: s }
---
: : not yaml
`;
    const m = parseManifestText(text, "/tmp/m.yaml");
    const rows = m.issues.map((i) => `${i.docIndex} ${i.kind ?? ""}/${i.name ?? ""} ${i.path}`);
    expect(rows).toEqual([
      "0 Trigger/t1 spec.inputs.a.filter",
      "0 Trigger/t1 spec.subscribers.0.condition",
      "0 Trigger/t1 spec.subscribers.1.condition",
      "0 Trigger/t1 spec.subscribers.1.transform",
      "1 EventSource/Bad_Name metadata.name",
      "2 Sensor/s kind",
      "3 / ",
    ]);
    expect(m.issues.every((i) => i.file === "/tmp/m.yaml")).toBe(true);
    expect(m.issues[1]!.message).toContain("missing");
    expect(m.issues[5]!.message).toContain("unknown kind");
  });

  it("loader - folders load recursively and duplicates are reported", async () => {
    const dir = fileURLToPath(new URL("./fixtures/openfunction", import.meta.url));
    const once = await loadManifests([dir]);
    expect(once.issues).toEqual([]);
    const twice = await loadManifests([dir, samples]);
    expect(twice.issues.length).toBeGreaterThan(0);
    expect(twice.issues.every((i) => i.code === "duplicate")).toBe(true);
  });

  it("loader - a missing path is an issue, not a crash", async () => {
    const m = await loadManifests(["/nonexistent/path.yaml"]);
    expect(m.issues).toEqual([
      expect.objectContaining({ code: "MANIFEST_UNREADABLE", file: "/nonexistent/path.yaml" }),
    ]);
  });
});
