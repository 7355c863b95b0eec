/**
 * Faults on the JetStream bus (`jetstream` driver), every part a real process on 127.0.0.1:
 * Kafka → `ofevents run` (Kafka EventSource) → nats-server JetStream → `ofevents run` (Trigger) →
 * HTTP sink. Each test prints one figures line; the machinery is in ./harness.ts.
 */
import { afterAll, beforeAll, describe, it } from "vitest";
import { ReliabilityEnv, brokerRestart, failingSink, sourceSigkill, stalledSink, triggerSigkill } from "./harness.js";

const MiB = 1024 * 1024;

describe("reliability jetstream - faults on the JetStream bus with real processes", () => {
  let env: ReliabilityEnv;

  beforeAll(async () => {
    env = await ReliabilityEnv.start("jetstream");
  }, 180_000);

  afterAll(async () => {
    await env?.stop();
  }, 120_000);

  it("reliability jetstream - the trigger killed with SIGKILL mid-flow and restarted loses nothing", async () => {
    await triggerSigkill(env, { events: 4_000 });
  }, 300_000);

  it("reliability jetstream - the eventsource killed with SIGKILL mid-flow and restarted loses nothing", async () => {
    await sourceSigkill(env, { events: 4_000, perSecond: 500 });
  }, 300_000);

  it("reliability jetstream - nats-server restarted mid-flow: source and trigger reconnect, nothing lost", async () => {
    await brokerRestart(env, { events: 4_000, perSecond: 1_000 });
  }, 300_000);

  it("reliability jetstream - a sink failing 30 % at random: each event delivered or dead-lettered, exactly once", async () => {
    await failingSink(env, { events: 2_000, seed: 0x5eed });
  }, 300_000);

  it("reliability jetstream - a stalled sink under a 20,000-event backlog keeps the trigger's memory bounded", async () => {
    await stalledSink(env, { backlog: 20_000, payloadBytes: 4_096, maxRss: 256 * MiB, growthMargin: 32 * MiB });
  }, 300_000);
});
