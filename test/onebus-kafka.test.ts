/**
 * One bus, whichever client, on Kafka: Dapr's pubsub.kafka (the Component core renders for the
 * EventBus, in a real daprd) and the direct Kafka driver use the same Kafka topics
 * (`topicPrefix` + topic, core's kafkaBusNames) and the same record value (a JSON CloudEvent).
 */
import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_VERSION, kafkaBusNames, type AnyEventBus } from "@ofevents/core";
import { KafkaBroker } from "./helpers/kafka.js";
import { randomSuffix } from "./helpers/wait.js";
import { runOneBusFlow } from "./onebus-shared.js";

let kafka: KafkaBroker;
let bus: AnyEventBus;
const PREFIX = "shop.";

beforeAll(async () => {
  kafka = await KafkaBroker.start();
  bus = {
    apiVersion: API_VERSION,
    kind: "EventBus",
    metadata: { name: `onebus-${randomSuffix()}`, namespace: "default" },
    spec: { kafka: { brokers: kafka.brokers.join(","), topicPrefix: PREFIX } },
  } as AnyEventBus;
}, 120_000);

afterAll(async () => {
  await kafka?.stop();
});

describe("onebus - Kafka", () => {
  it("onebus kafka - an app through daprd and a trigger on the direct driver share topics both ways, attributes intact", async () => {
    const { input, output, suffix } = await runOneBusFlow({
      bus,
      // A Dapr-side app names the Kafka topic: topicPrefix + topic.
      daprTopic: (t) => kafkaBusNames(PREFIX, t).topic,
      timeoutMs: 60_000,
    });
    // Both paths used the prefixed Kafka topics; daprd's group is the Component's {topicPrefix}{appID}.
    const admin = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const topics = await admin.listTopics();
      for (const t of [input, output]) expect(topics).toContain(kafkaBusNames(PREFIX, t).topic);
      expect(topics.filter((t) => t.includes(suffix) && !t.startsWith(PREFIX))).toEqual([]);
      const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
      expect(groups).toContain(`${PREFIX}app-${suffix}`);
    } finally {
      await admin.disconnect();
    }
  }, 240_000);
});
