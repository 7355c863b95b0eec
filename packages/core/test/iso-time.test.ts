import { describe, expect, it } from "vitest";
import { isoTime, newEvent } from "../src/index.js";

describe("isoTime - an event's time", () => {
  it("isoTime - formats exactly as Date does, for a repeated and a new millisecond alike", () => {
    const times = [0, 1, 1, 1_700_000_000_123, 1_700_000_000_123, 1_700_000_000_124, 1, 8.64e15, -1];
    for (const ms of times) expect(isoTime(ms)).toBe(new Date(ms).toISOString());
  });

  it("isoTime - a time Date cannot format throws as Date does, and the next call is not affected", () => {
    expect(() => isoTime(8.64e15 + 1)).toThrow(RangeError);
    expect(() => isoTime(Number.NaN)).toThrow(RangeError);
    expect(isoTime(5)).toBe("1970-01-01T00:00:00.005Z");
  });

  it("isoTime - newEvent stamps the current time", () => {
    const before = Date.now();
    const t = Date.parse(newEvent({ source: "/s", type: "t" }).time!);
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });
});
