import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newEvent } from "@ofevents/core";
import { startTrigger } from "../src/index.js";
import { waitFor } from "../../../test/helpers/wait.js";
import { A, Rig, engine, ev, logger, trigger } from "./shaping-support.js";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("dedup - a subscriber with dedup", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("dedup - a repeat of a delivered event (same source and id) is acknowledged without delivery and counted", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, dedup: { window: "1m" } }));
    const e = ev({ i: 1 });
    const other = newEvent({ id: e.id, source: "/elsewhere", type: "t", data: { i: 2 } });
    await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 1, { timeoutMs: 10_000 });
    await rig.bus.publish(A, { ...e });
    await rig.bus.publish(A, other);
    await waitFor(() => rig.count("deduplicated") === 1 && rig.sink.received.length === 2, { timeoutMs: 10_000 });
    expect(rig.sink.received.map((r) => r.data)).toEqual([{ i: 1 }, { i: 2 }]);
    expect(rig.sink.received[0]!.headers["idempotency-key"]).toBe(`/src ${e.id}`);
    expect(rig.sink.received[1]!.headers["idempotency-key"]).toBe(`/elsewhere ${e.id}`);
    expect(await rig.bus.drain!({ timeoutMs: 2_000 })).toBe(true);
  });

  it("dedup - with a key expression; repeats in flight at once are delivered once; after the window a key is delivered again", async () => {
    rig.sink.delayMs = 100;
    await rig.start(trigger({ sink: { uri: rig.sink.url }, dedup: { window: "600ms", key: "data.order" } }));
    await Promise.all([1, 2, 3].map((i) => rig.bus.publish(A, ev({ order: "o-1", i }))));
    await waitFor(() => rig.count("deduplicated") === 2, { timeoutMs: 10_000 });
    expect(rig.sink.received.length).toBe(1);
    await pause(800);
    await rig.bus.publish(A, ev({ order: "o-1", i: 4 }));
    await waitFor(() => rig.sink.received.length === 2, { timeoutMs: 10_000 });
  });

  it("dedup - an event that was dead-lettered, not delivered, does not suppress its repeat", async () => {
    rig.sink.status = (n) => (n === 0 ? 400 : 200);
    await rig.start(
      trigger({ sink: { uri: rig.sink.url }, deadLetterSink: { uri: rig.dls.url }, dedup: { window: "1m" } }),
    );
    const e = ev({ i: 1 });
    await rig.bus.publish(A, e);
    await waitFor(() => rig.dls.received.length === 1, { timeoutMs: 10_000 });
    await rig.bus.publish(A, { ...e });
    await waitFor(() => rig.sink.received.length === 2, { timeoutMs: 10_000 });
    expect(rig.count("deduplicated")).toBe(0);
  });

  it("dedup - a restarted trigger on the same bus still knows the keys it delivered", async () => {
    const t = trigger({ sink: { uri: rig.sink.url }, dedup: { window: "1m" } });
    await rig.start(t);
    const e = ev({ i: 1 });
    await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 1, { timeoutMs: 10_000 });
    await rig.rt!.stop();
    const again = await startTrigger(t, { bus: rig.bus, logger, engine, sinks: rig.sinks });
    let deduplicated = 0;
    again.events.on("deduplicated", () => void deduplicated++);
    rig.rt = again;
    await rig.bus.publish(A, { ...e });
    await waitFor(() => deduplicated === 1, { timeoutMs: 10_000 });
    expect(rig.sink.received.length).toBe(1);
  });
});
