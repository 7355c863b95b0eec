import { describe, expect, it } from "vitest";
import {
  API_VERSION,
  eventBusSchema,
  natsStreamingToJetStream,
  parseGoTime,
  resolveEventBus,
  type EventBus,
  type JetStreamBusSpec,
  type NatsStreamingBusSpec,
} from "../src/index.js";

const BASE: NatsStreamingBusSpec = {
  natsURL: "nats://nats:4222",
  natsStreamingClusterID: "stan",
  subscriptionType: "queue",
  durableSubscriptionName: "ImDurable",
};

function natsBus(extra: Partial<NatsStreamingBusSpec> = {}): EventBus {
  return eventBusSchema.parse({
    apiVersion: API_VERSION,
    kind: "EventBus",
    metadata: { name: "default", namespace: "shop" },
    spec: { natsStreaming: { ...BASE, ...extra } },
  });
}

describe("buses - natsStreaming runs as JetStream", () => {
  it.each<{ name: string; input: Partial<NatsStreamingBusSpec>; expected: Partial<JetStreamBusSpec> }>([
    {
      name: "OpenFunction's sample: url, queue, durable prefix, new events",
      input: {},
      expected: {
        url: "nats://nats:4222",
        subscriptionType: "queue",
        durablePrefix: "ImDurable",
        deliverPolicy: "new",
      },
    },
    { name: "ackWaitTime is the ack wait", input: { ackWaitTime: "20s" }, expected: { ackWait: "20s" } },
    { name: "maxInFlight is max ack pending", input: { maxInFlight: 10 }, expected: { maxAckPending: 10 } },
    { name: "subscriptionType topic", input: { subscriptionType: "topic" }, expected: { subscriptionType: "topic" } },
    {
      name: "startAtSequence",
      input: { startAtSequence: 7 },
      expected: { deliverPolicy: "sequence", startSequence: 7 },
    },
    { name: "startWithLastReceived", input: { startWithLastReceived: true }, expected: { deliverPolicy: "last" } },
    { name: "deliverAll", input: { deliverAll: true }, expected: { deliverPolicy: "all" } },
    { name: "deliverNew", input: { deliverNew: true }, expected: { deliverPolicy: "new" } },
    {
      name: "startAtTimeDelta",
      input: { startAtTimeDelta: "10m" },
      expected: { deliverPolicy: "time", startTimeDelta: "10m" },
    },
    {
      name: "startAtTime (RFC 3339 without a format)",
      input: { startAtTime: "2024-05-01T10:00:00+02:00" },
      expected: { deliverPolicy: "time", startTime: "2024-05-01T08:00:00.000Z" },
    },
    {
      name: "startAtTime with startAtTimeFormat",
      input: { startAtTime: "May 1, 2024 at 10:30am (UTC)", startAtTimeFormat: "Jan 2, 2006 at 3:04pm (MST)" },
      expected: { deliverPolicy: "time", startTime: "2024-05-01T10:30:00.000Z" },
    },
    {
      name: "several start options: Dapr's precedence (startAtSequence first)",
      input: { startAtSequence: 3, deliverAll: true, startAtTime: "2024-05-01T10:00:00Z" },
      expected: { deliverPolicy: "sequence", startSequence: 3 },
    },
    {
      name: "no durableSubscriptionName (OpenFunction 0.5): no prefix",
      input: { durableSubscriptionName: undefined },
      expected: { url: "nats://nats:4222", deliverPolicy: "new" },
    },
  ])("buses - $name", ({ input, expected }) => {
    const spec = { ...BASE, ...input };
    if (input.durableSubscriptionName === undefined && "durableSubscriptionName" in input)
      delete spec.durableSubscriptionName;
    expect(natsStreamingToJetStream(spec)).toMatchObject(expected);
    if (spec.durableSubscriptionName === undefined)
      expect(natsStreamingToJetStream(spec)).not.toHaveProperty("durablePrefix");
  });

  it("buses - resolveEventBus maps a natsStreaming bus and says so", () => {
    const bus = natsBus({ maxInFlight: 5, deliverAll: true });
    const r = resolveEventBus("default", "shop", { eventBuses: [bus], clusterEventBuses: [] });
    expect(r.key).toBe("EventBus:shop/default");
    expect(r.spec).toEqual({
      jetstream: {
        url: "nats://nats:4222",
        subscriptionType: "queue",
        durablePrefix: "ImDurable",
        maxAckPending: 5,
        deliverPolicy: "all",
      },
    });
    expect(r.warning).toContain("end-of-life");
  });
});

describe("buses - Go time layouts (startAtTimeFormat)", () => {
  it.each([
    { value: "2024-05-01T10:00:00Z", layout: undefined, expected: "2024-05-01T10:00:00.000Z" },
    { value: "2024-05-01T10:00:00.250-01:30", layout: undefined, expected: "2024-05-01T11:30:00.250Z" },
    { value: "2024-05-01 10:00:00", layout: "2006-01-02 15:04:05", expected: "2024-05-01T10:00:00.000Z" },
    { value: "01/05/24 07:08", layout: "02/01/06 15:04", expected: "2024-05-01T07:08:00.000Z" },
    {
      value: "Wed, 01 May 2024 10:00:00 +0200",
      layout: "Mon, 02 Jan 2006 15:04:05 -0700",
      expected: "2024-05-01T08:00:00.000Z",
    },
    { value: "1 January 2024 12:00am", layout: "2 January 2006 3:04pm", expected: "2024-01-01T00:00:00.000Z" },
    { value: "2024-05-01T10:00:00.123", layout: "2006-01-02T15:04:05.000", expected: "2024-05-01T10:00:00.123Z" },
  ])("buses - $value read with $layout", ({ value, layout, expected }) => {
    expect(parseGoTime(value, layout)?.toISOString()).toBe(expected);
  });

  it.each([
    { value: "yesterday", layout: undefined },
    { value: "2024-02-30T10:00:00Z", layout: undefined },
    { value: "2024-05-01", layout: "2006-01-02 15:04" },
    { value: "2024-13-01 10:00", layout: "2006-01-02 15:04" },
  ])("buses - $value does not match $layout", ({ value, layout }) => {
    expect(parseGoTime(value, layout)).toBeUndefined();
  });
});
