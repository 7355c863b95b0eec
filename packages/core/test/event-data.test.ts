import { describe, expect, it } from "vitest";
import { EventError, MAX_JSON_DEPTH, parseJsonBody } from "../src/index.js";

const nested = (levels: number, pad = 0): string => `${"[".repeat(levels)}${" ".repeat(pad)}${"]".repeat(levels)}`;

describe("parseJsonBody", () => {
  it("event data - accepts JSON nested exactly MAX_JSON_DEPTH levels, the shortest such text too", () => {
    expect(() => parseJsonBody(Buffer.from(nested(MAX_JSON_DEPTH)), "body")).not.toThrow();
    expect(() => parseJsonBody(nested(MAX_JSON_DEPTH, 5_000), "body")).not.toThrow();
  });

  it("event data - refuses one level deeper, from the shortest text that can nest that deep", () => {
    const shortest = nested(MAX_JSON_DEPTH + 1);
    expect(shortest.length).toBe(2 * MAX_JSON_DEPTH + 2);
    expect(() => parseJsonBody(shortest, "body")).toThrow(EventError);
    expect(() => parseJsonBody(shortest, "body")).toThrow(/deeper than 512/);
    expect(() => parseJsonBody(`{"a":${nested(MAX_JSON_DEPTH)}}`, "body")).toThrow(/deeper than/);
  });

  it("event data - refuses text that is not UTF-8 or not JSON, naming what was read", () => {
    expect(() => parseJsonBody(Buffer.from([0x7b, 0xff, 0x7d]), "the body")).toThrow(
      /the body is not valid JSON: not UTF-8/,
    );
    expect(() => parseJsonBody("{", "the body")).toThrow(/the body is not valid JSON/);
  });
});
