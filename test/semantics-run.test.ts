/**
 * End to end through `ofevents run` on examples/semantics: a webhook source, the in-memory bus, one
 * trigger whose five subscribers batch, debounce, deduplicate, order and rate-limit the same
 * readings, and local functions that log what they get (the test reads the JSON log lines).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { busiest } from "../packages/trigger/test/support.js";
import { OfeventsProcess } from "./helpers/ofevents.js";
import { waitFor } from "./helpers/wait.js";

const WEBHOOK = "http://127.0.0.1:12100/readings";

interface Reading {
  sensor: string;
  seq: number;
  reading: string;
}
interface Received {
  id: string;
  data: Reading;
}
interface FnLine {
  fn: string;
  time: number;
  received: Received | Received[];
}

describe("semantics - ofevents run on examples/semantics", () => {
  let p: OfeventsProcess;
  const lines: FnLine[] = [];
  /** What was posted, in order: the event id the webhook answered and the reading. */
  const posted: Array<{ id: string; data: Reading }> = [];
  const got = (fn: string) => lines.filter((l) => l.fn === fn);
  const single = (fn: string) => got(fn).map((l) => l.received as Received);

  beforeAll(async () => {
    p = await OfeventsProcess.start({
      command: "run",
      files: ["examples/semantics"],
      name: "ofevents run examples/semantics",
      onLine: (line) => {
        if (!line.startsWith("{") || !line.includes('"fn":')) return;
        const l = JSON.parse(line) as Partial<FnLine>;
        if (typeof l.fn === "string" && l.received !== undefined) lines.push(l as FnLine);
      },
    });
    // Sensors a, b and c, 10 readings each, interleaved; then sensor a sends its first 5 again
    // (new events with the same `reading`). Each post is answered once the bus took the event.
    const readings: Reading[] = [];
    for (let seq = 0; seq < 10; seq++)
      for (const sensor of ["a", "b", "c"]) readings.push({ sensor, seq, reading: `${sensor}-${seq}` });
    for (let seq = 0; seq < 5; seq++) readings.push({ sensor: "a", seq: 10 + seq, reading: `a-${seq}` });
    for (const data of readings) {
      const res = await request(WEBHOOK, {
        method: "POST",
        body: JSON.stringify(data),
        headers: { "content-type": "application/json" },
      });
      const body = (await res.body.json()) as { ids: string[] };
      expect(res.statusCode).toBe(200);
      posted.push({ id: body.ids[0]!, data });
    }
    // The rate-limited subscriber is the slowest (35 events at 10/s after a burst of 2).
    await waitFor(() => single("notify").length >= posted.length, {
      timeoutMs: 30_000,
      message: () => `notify to get all ${posted.length} readings (got ${single("notify").length})\n${p.output()}`,
    });
    await waitFor(() => got("latest").length >= 3, { timeoutMs: 10_000, message: () => p.output() });
    // Let stray extra deliveries show up before counting exactly.
    await new Promise((r) => setTimeout(r, 1_500));
  }, 120_000);

  afterAll(async () => {
    await p?.stop();
  });

  it("batch - the archive function gets every reading once, in requests of at most 10, as an array of events", () => {
    const batches = got("archive").map((l) => l.received as Received[]);
    for (const b of batches) {
      expect(Array.isArray(b)).toBe(true);
      expect(b.length).toBeGreaterThan(0);
      expect(b.length).toBeLessThanOrEqual(10);
    }
    expect(batches.length).toBeGreaterThanOrEqual(4);
    expect(batches.flat().map((e) => e.id)).toEqual(posted.map((e) => e.id));
  });

  it("debounce - the latest function gets only the last reading of each sensor's burst", () => {
    const last = new Map(posted.map((e) => [e.data.sensor, e.id]));
    const latest = single("latest");
    expect(latest.map((e) => e.id).sort()).toEqual([...last.values()].sort());
  });

  it("dedup - the alerts function gets each reading once: the 5 sent again are not delivered", () => {
    const alerts = single("alerts");
    expect(alerts).toHaveLength(30);
    expect(new Set(alerts.map((e) => e.data.reading)).size).toBe(30);
    // The first event of each reading is the one delivered.
    const first = new Map<string, string>();
    for (const e of posted) if (!first.has(e.data.reading)) first.set(e.data.reading, e.id);
    expect(alerts.map((e) => e.id).sort()).toEqual([...first.values()].sort());
  });

  it("ordering - the ledger function (random latency) gets each sensor's readings in the order they were posted", () => {
    const ledger = single("ledger");
    expect(ledger).toHaveLength(posted.length);
    for (const sensor of ["a", "b", "c"]) {
      const want = posted.filter((e) => e.data.sensor === sensor).map((e) => e.id);
      expect(ledger.filter((e) => e.data.sensor === sensor).map((e) => e.id)).toEqual(want);
    }
  });

  it("rate-limit - the notify function gets every reading, never more than 10 + 2 in any 1-second window", () => {
    const notify = got("notify");
    expect(new Set(notify.map((l) => (l.received as Received).id)).size).toBe(posted.length);
    expect(
      busiest(
        notify.map((l) => l.time),
        1000,
      ),
    ).toBeLessThanOrEqual(12);
    // (35 - 2) calls at 10/s: more than 3 s from the first to the last.
    const times = notify.map((l) => l.time);
    expect(Math.max(...times) - Math.min(...times)).toBeGreaterThan(3_000);
  });
});
