/**
 * Faults on the Kafka bus (`kafka` driver), every part a real process on 127.0.0.1:
 * Kafka topic → `ofevents run` (Kafka EventSource) → Kafka bus topic (same broker) →
 * `ofevents run` (Trigger) → HTTP sink. A killed member's partitions come back after the group's
 * session timeout (30 s), so the SIGKILL tests take that long. Machinery: ./harness.ts.
 */
import { afterAll, beforeAll, describe, it } from "vitest";
import { ReliabilityEnv, brokerRestart, failingSink, sourceSigkill, stalledSink, triggerSigkill } from "./harness.js";

const MiB = 1024 * 1024;

describe("reliability kafka - faults on the Kafka bus with real processes", () => {
  let env: ReliabilityEnv;

  beforeAll(async () => {
    env = await ReliabilityEnv.start("kafka");
  }, 180_000);

  afterAll(async () => {
    await env?.stop();
  }, 120_000);

  it("reliability kafka - the trigger killed with SIGKILL mid-flow and restarted loses nothing", async () => {
    await triggerSigkill(env, { events: 3_000 });
  }, 300_000);

  it("reliability kafka - the eventsource killed with SIGKILL mid-flow and restarted loses nothing", async () => {
    await sourceSigkill(env, { events: 3_000, perSecond: 500 });
  }, 300_000);

  it("reliability kafka - the broker restarted mid-flow: source and trigger reconnect, nothing lost", async () => {
    // Every record is in Kafka first: the test's own producer would fail while the broker is down.
    await brokerRestart(env, { events: 3_000 });
  }, 300_000);

  it("reliability kafka - a sink failing 30 % at random: each event delivered or dead-lettered, exactly once", async () => {
    await failingSink(env, { events: 2_000, seed: 0x5eed });
  }, 300_000);

  it("reliability kafka - a stalled sink under a 10,000-event backlog keeps the trigger's memory bounded", async () => {
    // 10,000, not 20,000: publishing and draining a backlog through kafkajs is the slow part here.
    await stalledSink(env, { backlog: 10_000, payloadBytes: 4_096, maxRss: 256 * MiB, growthMargin: 32 * MiB });
  }, 300_000);
});
