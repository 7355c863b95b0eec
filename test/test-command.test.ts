/**
 * `ofevents test` as a user runs it: the built CLI as a child process on the examples' cases files,
 * and on a copy of the quickstart's cases with a wrong expectation.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = `${root}packages/cli/bin/ofevents.js`;
const QUICKSTART_CASES = "examples/quickstart/tests/orders.cases.yaml";

function ofevents(args: string[]): Promise<{ code: number; out: string; err: string }> {
  if (!existsSync(`${root}packages/cli/dist/main.js`)) throw new Error("packages are not built: run `npm run build`");
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: root, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, out: stdout, err: stderr });
    });
  });
}

describe("test command - the ofevents process", () => {
  it("test command - the quickstart's cases pass: exit 0, one ok line per case", async () => {
    const r = await ofevents(["test", "-f", "examples/quickstart", QUICKSTART_CASES]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines.filter((l) => l.startsWith("ok "))).toHaveLength(7);
    expect(r.out).toContain("ok   a tick 12s after the order is outside the 10s window");
    expect(r.out).toContain("ok   the flaky sink ends in the dead-letter sink with the reason");
    expect(lines.at(-1)).toBe("7 passed, 0 failed");
  });

  it("test command - the semantics example's cases pass", async () => {
    const r = await ofevents(["test", "-f", "examples/semantics", "examples/semantics/tests/meters.cases.yaml"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/6 passed, 0 failed\n$/);
  });

  it("test command - a failing case exits 1 and prints the difference", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ofevents-test-command-"));
    try {
      const text = await readFile(join(root, QUICKSTART_CASES), "utf8");
      const wrong = text.replace("reason: answered 503", "reason: answered 404");
      expect(wrong).not.toBe(text);
      await writeFile(join(dir, "wrong.cases.yaml"), wrong);
      const r = await ofevents(["test", "-f", "examples/quickstart", join(dir, "wrong.cases.yaml")]);
      expect(r.code).toBe(1);
      expect(r.out).toContain("FAIL the flaky sink ends in the dead-letter sink with the reason");
      expect(r.out).toContain("  subscriber 2 (order -> sink flaky), deadLetters:");
      expect(r.out).toContain(
        `    ~ [0] reason: expected to contain "answered 404", got "http://flaky.default.svc.cluster.local answered 503"`,
      );
      expect(r.out).toMatch(/6 passed, 1 failed\n$/);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it("test command - run and validate skip the cases files beside the manifests", async () => {
    const r = await ofevents(["validate", "-f", "examples/quickstart"]);
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(r.out).toContain("1 file that is not a manifest skipped");
  });
});
