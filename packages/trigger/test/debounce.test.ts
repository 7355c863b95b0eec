import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../../../test/helpers/wait.js";
import { Debouncer } from "../src/shaping.js";
import { A, Rig, ev, trigger } from "./shaping-support.js";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("debounce - Debouncer", () => {
  it("debounce - leading: the first of a burst passes, the rest of the burst does not, a quiet window ends it", async () => {
    const d = new Debouncer<string>(
      80,
      () => undefined,
      () => undefined,
    );
    expect(d.lead("k")).toBe(true);
    expect(d.lead("k")).toBe(false);
    expect(d.lead("other")).toBe(true);
    await pause(40);
    expect(d.lead("k")).toBe(false); // still in the burst: the window restarts at each event
    await pause(120);
    expect(d.lead("k")).toBe(true);
    d.drain();
  });

  it("debounce - trailing: each newer event supersedes the held one; the last is due after the window", async () => {
    const due: string[] = [];
    const superseded: string[] = [];
    const d = new Debouncer<string>(
      60,
      (e) => {
        due.push(e.item);
        e.resolve();
      },
      (e) => {
        superseded.push(e.item);
        e.resolve();
      },
    );
    const all = ["1", "2", "3"].map((x) => d.hold("k", x));
    await Promise.all(all);
    expect(superseded).toEqual(["1", "2"]);
    expect(due).toEqual(["3"]);
  });
});

describe("debounce - a subscriber with debounce", () => {
  const rig = new Rig();
  beforeEach(() => rig.open());
  afterEach(() => rig.close());

  it("debounce - trailing (default): of a burst per key only the last is delivered; the others are acknowledged and counted", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, debounce: { window: "300ms", key: "data.k" } }));
    const x = [1, 2, 3, 4].map((i) => ev({ k: "x", i }));
    const y = [1, 2].map((i) => ev({ k: "y", i }));
    for (const e of [x[0]!, y[0]!, x[1]!, x[2]!, y[1]!, x[3]!]) await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 2 && rig.count("debounced") === 4, { timeoutMs: 10_000 });
    expect(rig.sink.ids().sort()).toEqual([x[3]!.id, y[1]!.id].sort());
    expect(await rig.bus.drain!({ timeoutMs: 2_000 })).toBe(true);
    // A later burst of x delivers again.
    const later = ev({ k: "x", i: 5 });
    await rig.bus.publish(A, later);
    await waitFor(() => rig.sink.received.length === 3, { timeoutMs: 10_000 });
    expect(rig.sink.ids()[2]).toBe(later.id);
  });

  it("debounce - leading: the first of a burst is delivered at once, the rest acknowledged and counted", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, debounce: { window: "1s", edge: "leading" } }));
    const events = [1, 2, 3].map((i) => ev({ i }));
    for (const e of events) await rig.bus.publish(A, e);
    await waitFor(() => rig.sink.received.length === 1 && rig.count("debounced") === 2, { timeoutMs: 10_000 });
    expect(rig.sink.ids()).toEqual([events[0]!.id]);
  });

  it("debounce - events further apart than the window are all delivered", async () => {
    await rig.start(trigger({ sink: { uri: rig.sink.url }, debounce: { window: "50ms" } }));
    const events = [1, 2, 3].map((i) => ev({ i }));
    for (const e of events) {
      await rig.bus.publish(A, e);
      await waitFor(() => rig.sink.ids().includes(e.id), { timeoutMs: 10_000 });
    }
    expect(rig.count("debounced")).toBe(0);
  });
});
