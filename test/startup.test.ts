/**
 * What a command loads when it starts. The Kubernetes client (@kubernetes/client-node, through
 * the controller package) cost every process that loaded it 55–65 MiB of memory and 0.4 s of
 * start-up; only the `controller` command needs it, so `run`, `eventsource`, `trigger` and the
 * rest must not load it.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OFEVENTS_BIN } from "./helpers/ofevents.js";

const ROOT = join(import.meta.dirname, "..");

const HEAVY = ["@kubernetes/client-node", "@ofevents/controller"];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ofevents-startup-"));
  // A module resolution hook that writes every bare specifier it resolves to the file it is given.
  await writeFile(
    join(dir, "hooks.mjs"),
    `import { appendFileSync } from "node:fs";
let file;
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, next) {
  if (/^[@a-z]/.test(specifier) && !specifier.startsWith("node:")) appendFileSync(file, specifier + "\\n");
  return next(specifier, context);
}
`,
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs `ofevents <args>` and returns the packages it imported. */
async function importsOf(
  args: string[],
  name: string,
): Promise<{ status: number | null; stderr: string; specifiers: Set<string> }> {
  const file = join(dir, `${name}.txt`);
  await writeFile(file, "");
  const register = join(dir, `${name}.mjs`);
  await writeFile(
    register,
    `import { register } from "node:module";
register(${JSON.stringify(pathToFileURL(join(dir, "hooks.mjs")).href)}, { data: { file: ${JSON.stringify(file)} } });
`,
  );
  const r = spawnSync(process.execPath, ["--import", pathToFileURL(register).href, OFEVENTS_BIN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60_000,
  });
  const specifiers = new Set((await readFile(file, "utf8")).split("\n").filter((s) => s !== ""));
  return { status: r.status, stderr: r.stderr, specifiers };
}

describe("startup", () => {
  it("startup - validate, and everything else main loads, leaves the Kubernetes client unloaded", async () => {
    const r = await importsOf(["validate", "-f", "examples/quickstart"], "validate");
    expect(r.status, r.stderr).toBe(0);
    // The hook saw the packages a run needs, so it was in place ...
    expect(r.specifiers).toContain("@ofevents/core");
    expect(r.specifiers).toContain("@ofevents/eventsource");
    // ... and the Kubernetes client was not among them.
    for (const heavy of HEAVY) expect([...r.specifiers]).not.toContain(heavy);
  });

  it("startup - the controller command loads the controller and its Kubernetes client", async () => {
    // A bad option is refused after the controller package is loaded (it checks the options),
    // before any connection.
    const r = await importsOf(
      ["controller", "--image", "x", "--dapr-enabled", "false", "--bus-driver", "dapr"],
      "controller",
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("busDriver dapr needs dapr.enabled");
    for (const heavy of HEAVY) expect(r.specifiers).toContain(heavy);
  });
});
