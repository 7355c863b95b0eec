import { describe, expect, it } from "vitest";
import { API_VERSION, createSecretResolver, silentLogger, type CloudEvent, type EventSource } from "@ofevents/core";
import { createMemoryBus } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource } from "../src/index.js";
import { cronAdapter, everyInterval } from "../src/sources/cron.js";

describe("cron source - schedules", () => {
  it.each([
    { name: "@every 2s", input: "@every 2s", expected: [] },
    { name: "@every 1m30s", input: "@every 1m30s", expected: [] },
    { name: "5 fields", input: "*/5 * * * *", expected: [] },
    { name: "6 fields", input: "*/10 * * * * *", expected: [] },
    { name: "@hourly", input: "@hourly", expected: [] },
    { name: "@every without duration", input: "@every soon", expected: ["schedule"] },
    { name: "4 fields", input: "* * * *", expected: ["schedule"] },
    { name: "bad minute", input: "61 * * * *", expected: ["schedule"] },
  ])("cron source - validates $name", ({ input, expected }) => {
    expect(cronAdapter.validate({ schedule: input }).map((i) => i.path)).toEqual(expected);
  });

  it("cron source - @every durations", () => {
    expect(everyInterval("@every 2s")).toBe(2000);
    expect(everyInterval("@every 1m30s")).toBe(90_000);
    expect(everyInterval("*/5 * * * *")).toBeUndefined();
  });

  it("cron source - @every 100ms ticks publish events with ids derived from the scheduled time", async () => {
    const logger = silentLogger();
    const bus = createMemoryBus({ logger });
    const got: CloudEvent[] = [];
    await bus.subscribe(["default-clock-tick"], async (e) => void got.push(e), { group: "g" });
    const es = {
      apiVersion: API_VERSION,
      kind: "EventSource",
      metadata: { name: "clock" },
      spec: { eventBus: "default", cron: { tick: { schedule: "@every 100ms" } } },
    } as EventSource;
    const webhooks = createWebhookServers({ logger });
    const rt = await startEventSource(es, { logger, bus, secrets: createSecretResolver(), webhooks });
    for (let i = 0; i < 100 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    await rt.stop();
    expect(got.length).toBeGreaterThanOrEqual(3);
    const times = got.map((e) => Date.parse(e.time!));
    expect(times[1]! - times[0]!).toBe(100);
    expect(got[0]!.id).toBe(`default/clock/tick@${got[0]!.time}`);
    expect(got[0]).toMatchObject({
      type: "io.openfunction.events.cron",
      subject: "tick",
      data: { scheduledTime: got[0]!.time },
    });
    const count = got.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(got.length).toBe(count);
    await bus.close();
  });
});
