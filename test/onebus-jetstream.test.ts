/**
 * One bus, whichever client, on NATS JetStream: Dapr's pubsub.jetstream (the Component core
 * renders for the EventBus, in a real daprd) and the direct JetStream driver publish and
 * subscribe on the same subjects, in the same per-topic streams, with the same envelope.
 */
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_VERSION, jetStreamNames, type AnyEventBus } from "@ofevents/core";
import { createJetStreamTopicPreparer, type JetStreamTopicPreparer } from "@ofevents/eventbus";
import { NatsServer } from "./helpers/nats.js";
import { randomSuffix } from "./helpers/wait.js";
import { runOneBusFlow } from "./onebus-shared.js";

let nats: NatsServer;
let preparer: JetStreamTopicPreparer;
let bus: AnyEventBus;

beforeAll(async () => {
  nats = await NatsServer.start({ jetstream: true });
  bus = {
    apiVersion: API_VERSION,
    kind: "EventBus",
    metadata: { name: `onebus-${randomSuffix()}`, namespace: "default" },
    spec: { jetstream: { url: nats.url, stream: "shop" } },
  } as AnyEventBus;
  preparer = createJetStreamTopicPreparer(bus.spec.jetstream!);
}, 60_000);

afterAll(async () => {
  await preparer?.close();
  await nats?.stop();
});

describe("onebus - JetStream", () => {
  it("onebus jetstream - an app through daprd and a trigger on the direct driver share topics both ways, attributes intact", async () => {
    const { input, output } = await runOneBusFlow({
      bus,
      prepareTopic: (t) => preparer.prepareTopic(t),
      timeoutMs: 30_000,
    });
    // Both paths wrote into the one stream per topic, on subject = topic.
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await nc.jetstreamManager();
      for (const topic of [input, output]) {
        const { stream } = jetStreamNames("shop", topic);
        const info = await jsm.streams.info(stream);
        expect(info.config.subjects).toEqual([topic]);
        expect(info.state.messages).toBeGreaterThanOrEqual(2);
      }
      // No other streams: the Dapr path (prepareTopic) made the direct driver's, no T-<hex> ones.
      const names = await jsm.streams.names().next();
      expect(names.length).toBeGreaterThanOrEqual(2);
      for (const n of names) expect(n).toMatch(/^shop-/);
    } finally {
      await nc.close();
    }
  }, 120_000);
});
