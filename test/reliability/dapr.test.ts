/**
 * Faults on the Dapr bus (`dapr` driver) carried by JetStream, every part a real process on
 * 127.0.0.1: Kafka → `ofevents eventsource` (Kafka EventSource) + its daprd → nats-server JetStream
 * → daprd + `ofevents trigger` → HTTP sink. The daprds load the Component and Resiliency that
 * renderDaprComponents makes (JetStream with `concurrency: single`: daprd hands the trigger one
 * message at a time, about 500 events/s). Machinery: ./harness.ts.
 */
import { afterAll, beforeAll, describe, it } from "vitest";
import { ReliabilityEnv, brokerRestart, failingSink, sourceSigkill, stalledSink, triggerSigkill } from "./harness.js";

const MiB = 1024 * 1024;

describe("reliability dapr - faults on the Dapr bus (JetStream behind daprd) with real processes", () => {
  let env: ReliabilityEnv;

  beforeAll(async () => {
    env = await ReliabilityEnv.start("dapr");
  }, 180_000);

  afterAll(async () => {
    await env?.stop();
  }, 120_000);

  it("reliability dapr - the trigger killed with SIGKILL mid-flow and restarted next to its daprd loses nothing", async () => {
    await triggerSigkill(env, { events: 2_000 });
  }, 300_000);

  it("reliability dapr - the eventsource killed with SIGKILL mid-flow and restarted next to its daprd loses nothing", async () => {
    await sourceSigkill(env, { events: 2_000, perSecond: 250 });
  }, 300_000);

  it("reliability dapr - nats-server restarted mid-flow: the daprds and processes carry on, nothing lost", async () => {
    await brokerRestart(env, { events: 2_000, perSecond: 250 });
  }, 300_000);

  it("reliability dapr - a sink failing 30 % at random: each event delivered or dead-lettered, exactly once", async () => {
    await failingSink(env, { events: 1_000, seed: 0x5eed });
  }, 300_000);

  it("reliability dapr - a stalled sink under a 10,000-event backlog keeps the trigger's memory bounded", async () => {
    // 10,000, not 20,000: draining it afterwards goes at daprd's pace (one message at a time).
    await stalledSink(env, { backlog: 10_000, payloadBytes: 4_096, maxRss: 256 * MiB, growthMargin: 32 * MiB });
  }, 300_000);
});
