import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { API_VERSION, type Trigger } from "@ofevents/core";
import { waitFor } from "../../../test/helpers/wait.js";
import { A, Rig, ev } from "./shaping-support.js";

const B = "default-src-b";

function joinTrigger(sink: string, reset: { cron?: string; after?: string }): Trigger {
  return {
    apiVersion: API_VERSION,
    kind: "Trigger",
    metadata: { name: "join" },
    spec: {
      eventBus: "default",
      inputs: { a: { eventSource: "src", event: "a" }, b: { eventSource: "src", event: "b" } },
      subscribers: [{ condition: "a && b", sink: { uri: sink }, correlation: { window: "1h", reset } }],
    },
  } as Trigger;
}

describe("correlation-reset - a multi-input condition with correlation.reset", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("correlation-reset - after: a key's pending events are released together, acknowledged and counted; a later b does not join them", async () => {
    const rt = await rig.start(joinTrigger(rig.sink.url, { after: "300ms" }));
    await rig.bus.publish(A, ev({ n: 1 }));
    await rig.bus.publish(A, ev({ n: 2 }));
    await waitFor(() => rt.pending() === 2, { timeoutMs: 5_000 });
    await waitFor(() => rig.count("reset") === 2, { timeoutMs: 5_000 });
    expect(rt.pending()).toBe(0);
    expect(await rig.bus.drain!({ timeoutMs: 2_000 })).toBe(true);
    await rig.bus.publish(B, ev({ n: 3 }));
    await waitFor(() => rt.pending() === 1, { timeoutMs: 5_000 });
    expect(rig.sink.received.length).toBe(0);
  });

  it("correlation-reset - cron: every pending event is released at the scheduled time", async () => {
    const rt = await rig.start(joinTrigger(rig.sink.url, { cron: "* * * * * *" }));
    await rig.bus.publish(A, ev({ n: 1 }));
    await waitFor(() => rt.pending() === 1, { timeoutMs: 5_000 });
    await waitFor(() => rig.count("reset") === 1, { timeoutMs: 3_000 });
    expect(rt.pending()).toBe(0);
  });
});
