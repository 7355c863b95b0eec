import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ErrorCode, loadManifests, withReference } from "@ofevents/core";

const root = fileURLToPath(new URL("..", import.meta.url));

describe("docs - match the code", () => {
  it("docs - every error code is documented in docs/errors.md", async () => {
    const doc = await readFile(`${root}docs/errors.md`, "utf8");
    const missing = Object.values(ErrorCode).filter((c) => !doc.includes(`\`${c}\``));
    expect(missing).toEqual([]);
  });

  it("docs - the README's resource reference is what the schemas generate (run `npm run docs`)", async () => {
    const readme = await readFile(`${root}README.md`, "utf8");
    expect(withReference(readme)).toBe(readme);
  });

  it("docs - every example manifest loads through the schemas", async () => {
    const m = await loadManifests([`${root}examples`]);
    expect(m.issues).toEqual([]);
    expect(m.eventSources.length).toBeGreaterThanOrEqual(4);
  });
});
