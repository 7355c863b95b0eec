/**
 * The trigger's kept dead letters (`keepDeadLetters`) and what `redrive` refuses, on the memory
 * bus; redrive itself runs against real brokers in test/redrive-{jetstream,kafka}.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CloudEvent, Trigger } from "@ofevents/core";
import { waitFor } from "../../../test/helpers/wait.js";
import { KEEPS_DEAD_LETTERS, redrive, redrivenEvent, REDRIVEN_EXTENSION } from "../src/index.js";
import { A, Rig, engine, ev, logger, trigger } from "./shaping-support.js";

const KEPT = "default.t.deadletters";

describe("redrive - kept dead letters", () => {
  const rig = new Rig();
  const kept: CloudEvent[] = [];
  beforeEach(async () => {
    kept.length = 0;
    await rig.open();
    await rig.bus.subscribe(
      [KEPT],
      async (e) => {
        kept.push(e);
      },
      { group: "watch" },
    );
  });
  afterEach(() => rig.close());

  const failing = (extra: Partial<Trigger["spec"]> = {}): Trigger => {
    rig.sink.status = () => 500;
    const t = trigger({ sink: { uri: rig.sink.url }, delivery: { retry: 0 } });
    return { ...t, spec: { ...t.spec, ...extra } };
  };

  it("redrive - jetstream and kafka buses keep dead letters by default; memory and dapr do not", () => {
    expect([...KEEPS_DEAD_LETTERS].sort()).toEqual(["jetstream", "kafka"]);
  });

  it("redrive - with keepDeadLetters, a dead letter without any dead-letter target is kept with its reason, trigger and subscriber, not dropped", async () => {
    await rig.start(failing({ keepDeadLetters: true }));
    const e = ev({ i: 1 });
    await rig.bus.publish(A, e);
    await waitFor(() => kept.length === 1, { timeoutMs: 10_000, message: "the kept dead letter" });
    expect(kept[0]).toMatchObject({
      id: e.id,
      oftrigger: "default/t",
      ofsubscriber: 0,
      ofdeliveries: 1,
      oferrordest: rig.sink.url,
    });
    expect(String(kept[0]!["oferrorreason"])).toContain("500");
    expect(rig.count("dead_lettered")).toBe(1);
  });

  it("redrive - with a dead-letter sink too, the sink gets the dead letter and the topic keeps a copy", async () => {
    const t = failing({ keepDeadLetters: true });
    t.spec.subscribers[0]!.deadLetterSink = { uri: rig.dls.url };
    await rig.start(t);
    const e = ev({ i: 2 });
    await rig.bus.publish(A, e);
    await waitFor(() => kept.length === 1 && rig.dls.received.length === 1, { timeoutMs: 10_000 });
    expect(rig.dls.received[0]!.headers["ce-oftrigger"]).toBe("default/t");
    expect(kept[0]!.id).toBe(e.id);
  });

  it("redrive - on the memory bus nothing is kept by default", async () => {
    await rig.start(failing());
    await rig.bus.publish(A, ev({ i: 3 }));
    await waitFor(() => rig.sink.received.length === 1, { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 200));
    expect(kept).toEqual([]);
  });

  it("redrive - refuses a bus that keeps no history it can read, saying where it runs", async () => {
    await expect(
      redrive({ trigger: trigger({ sink: { uri: rig.sink.url } }), bus: rig.bus, engine, logger }),
    ).rejects.toThrow(/memory bus keeps no history that redrive can read/);
  });
});

describe("redrive - the redriven event", () => {
  it("redrive - drops the dead-letter attributes and marks the time it was redriven", () => {
    const at = new Date("2026-12-05T10:00:00Z");
    const out = redrivenEvent(
      {
        ...ev({ x: 1 }, "id-1"),
        oferrorreason: "boom",
        oferrorcode: "DELIVERY_FAILED",
        oferrordest: "http://x",
        ofdeliveries: 3,
        oftrigger: "default/t",
        ofsubscriber: 0,
        partitionkey: "k",
      },
      at,
    );
    expect(out).toMatchObject({
      id: "id-1",
      data: { x: 1 },
      partitionkey: "k",
      [REDRIVEN_EXTENSION]: at.toISOString(),
    });
    for (const a of ["oferrorreason", "oferrorcode", "oferrordest", "ofdeliveries", "oftrigger", "ofsubscriber"])
      expect(out).not.toHaveProperty(a);
  });
});
