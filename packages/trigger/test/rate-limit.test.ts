import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../../../test/helpers/wait.js";
import { TokenBucket } from "../src/rate-limit.js";
import { A, Rig, ev, trigger } from "./shaping-support.js";
import { busiest } from "./support.js";

describe("rate-limit - TokenBucket", () => {
  it("rate-limit - a burst passes at once, then one token per interval; a pause holds every taker", async () => {
    let now = 0;
    const bucket = new TokenBucket(10, 3, () => now);
    // With the clock standing still, the first 3 need no wait.
    expect(await bucket.take()).toBe(0);
    expect(await bucket.take()).toBe(0);
    expect(await bucket.take()).toBe(0);
    now = 100;
    expect(await bucket.take()).toBe(0); // one token refilled after 100 ms
    const ac = new AbortController();
    const waiting = bucket.take(ac.signal);
    ac.abort(new Error("stop"));
    await expect(waiting).rejects.toThrow("stop");
  });

  it("rate-limit - real time: 20 takes at 50/s with burst 5 last about (20 - 5) / 50 s", async () => {
    const bucket = new TokenBucket(50, 5);
    const t0 = performance.now();
    const at: number[] = [];
    for (let i = 0; i < 20; i++) {
      await bucket.take();
      at.push(performance.now() - t0);
    }
    expect(at[4]!).toBeLessThan(100);
    expect(at[19]!).toBeGreaterThanOrEqual(290);
    expect(busiest(at, 1000)).toBeLessThanOrEqual(55);
  });
});

describe("rate-limit - a subscriber with delivery.rateLimit", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("rate-limit - the sink never sees more than perSecond + burst requests in any 1-second window, and every event arrives", async () => {
    await rig.start(
      trigger({ sink: { uri: rig.sink.url }, delivery: { rateLimit: { perSecond: 20, burst: 4 }, concurrency: 8 } }),
    );
    const events = Array.from({ length: 50 }, (_, i) => ev({ i }));
    for (const e of events) await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 50, { timeoutMs: 20_000 });
    const at = rig.sink.received.map((r) => r.at);
    expect(busiest(at, 1000)).toBeLessThanOrEqual(24);
    // (50 - 4) tokens at 20/s: at least about 2.3 s from the first request to the last.
    expect(Math.max(...at) - Math.min(...at)).toBeGreaterThan(2_000);
    expect(new Set(rig.sink.ids()).size).toBe(50);
    expect(rig.count("throttled")).toBeGreaterThan(0);
  });

  it("rate-limit - a sink's Retry-After pauses the whole subscriber, not only the event it answered", async () => {
    rig.sink.status = (n) => (n === 0 ? 429 : 200);
    rig.sink.answerHeaders = (n) => (n === 0 ? { "retry-after": "1" } : {});
    await rig.start(
      trigger({
        sink: { uri: rig.sink.url },
        delivery: { rateLimit: { perSecond: 100, burst: 10 }, backoffDelay: "10ms", concurrency: 4 },
      }),
    );
    await rig.bus.publish(A, ev({ i: 0 }));
    await waitFor(() => rig.sink.received.length === 1, { timeoutMs: 10_000 });
    const answered = rig.sink.received[0]!.at;
    for (let i = 1; i <= 5; i++) await rig.bus.publish(A, ev({ i }));
    await waitFor(() => rig.sink.received.length === 7, { timeoutMs: 10_000 });
    // Nothing reached the sink within the second it asked for (small slack for timers).
    for (const r of rig.sink.received.slice(1)) expect(r.at - answered).toBeGreaterThan(950);
  });
});
