/** Packages are layers and imports go one way (README, "Packages"); nobody reaches into src/. */
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));

const MAY_IMPORT: Record<string, string[]> = {
  core: [],
  eventbus: ["core"],
  delivery: ["core", "eventbus"],
  eventsource: ["core", "eventbus", "delivery"],
  trigger: ["core", "eventbus", "delivery"],
  controller: ["core"],
  cli: ["core", "eventbus", "delivery", "eventsource", "trigger", "controller"],
};

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (/\.(ts|js|mjs)$/.test(e.name)) out.push(p);
  }
  return out;
}

const IMPORT = /(?:from\s+|import\s*\()\s*["']([^"']+)["']/g;

describe("layers - imports go one way", () => {
  it.each(Object.keys(MAY_IMPORT))("layers - packages/%s imports only what it may", async (pkg) => {
    const problems: string[] = [];
    for (const file of await sources(join(root, "packages", pkg, "src"))) {
      const text = await readFile(file, "utf8");
      for (const m of text.matchAll(IMPORT)) {
        const spec = m[1]!;
        const own = /^@ofevents\/([^/]+)(\/.*)?$/.exec(spec);
        if (own !== null) {
          if (own[2] !== undefined) problems.push(`${file}: deep import ${spec}`);
          else if (!MAY_IMPORT[pkg]!.includes(own[1]!)) problems.push(`${file}: ${pkg} may not import ${spec}`);
        }
        if (/^(\.\.\/){2,}/.test(spec) || /packages\/[^/]+\/src/.test(spec))
          problems.push(`${file}: reaches outside its package: ${spec}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it("layers - each package lists its siblings at one exact version", async () => {
    for (const pkg of Object.keys(MAY_IMPORT)) {
      const json = JSON.parse(await readFile(join(root, "packages", pkg, "package.json"), "utf8")) as {
        dependencies?: Record<string, string>;
      };
      const siblings = Object.entries(json.dependencies ?? {}).filter(([n]) => n.startsWith("@ofevents/"));
      expect(siblings.map(([n]) => n.slice("@ofevents/".length)).sort()).toEqual([...MAY_IMPORT[pkg]!].sort());
      for (const [, v] of siblings) expect(v).toMatch(/^\d+\.\d+\.\d+$/);
    }
  });
});
