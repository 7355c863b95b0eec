import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { CONTROLLER_METRICS } from "../src/index.js";

describe("controller metrics", () => {
  it("controller metrics - every controller metric is documented in docs/metrics.md, and only those", async () => {
    const doc = await readFile(new URL("../../../docs/metrics.md", import.meta.url), "utf8");
    const start = doc.indexOf("## Controller");
    expect(start).toBeGreaterThan(0);
    const section = doc.slice(start, doc.indexOf("\n## ", start + 1));
    const names = Object.values(CONTROLLER_METRICS).map((m) => m.name);
    expect(names.length).toBeGreaterThanOrEqual(4);
    const documented = [...section.matchAll(/^\| `(ofevents_controller_[a-z_]+)` \| (\w+) \|/gm)].map((m) => [
      m[1],
      m[2],
    ]);
    expect(documented.sort()).toEqual(
      Object.values(CONTROLLER_METRICS)
        .map((m) => [m.name, m.type])
        .sort(),
    );
  });
});
