import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatIssue, loadManifests, parseManifestText } from "../src/index.js";

const SOURCE = `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: s }
spec:
  eventBus: default
  cron: { tick: { schedule: "@every 1s" } }
`;

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ofevents-loader-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(path: string, text: string): Promise<void> {
  await mkdir(join(dir, path, ".."), { recursive: true });
  await writeFile(join(dir, path), text);
}

describe("loader - folders", () => {
  it("loader - a folder skips node_modules and files that are not manifests, without an issue", async () => {
    await put("es.yaml", SOURCE);
    await put("functions/package.json", '{ "type": "module", "dependencies": { "left-pad": "1.3.0" } }\n');
    await put(
      "tsconfig.json",
      '{\n  // comments make this JSONC, which is not YAML either\n  "compilerOptions": {}\n}\n',
    );
    await put("config.yaml", "retries: 3\nname: not a manifest\n");
    await put("node_modules/dep/package.json", '{ "name": "dep" }\n');
    await put("node_modules/dep/x.yaml", "apiVersion: v1\n");
    await put("node_modules/dep/es.yaml", SOURCE);
    const m = await loadManifests([dir]);
    expect(m.issues).toEqual([]);
    expect(m.eventSources.map((e) => e.file)).toEqual([join(dir, "es.yaml")]);
    expect(m.ignoredFiles.map((f) => f.file).sort()).toEqual(
      [join(dir, "config.yaml"), join(dir, "functions/package.json"), join(dir, "tsconfig.json")].sort(),
    );
  });

  it("loader - a file named explicitly must be a manifest, and so must a walked file that has apiVersion", async () => {
    await put("functions/package.json", '{ "type": "module" }\n');
    await put("half.yaml", "apiVersion: events.openfunction.io/v1alpha1\nmetadata: { name: h }\n");
    const named = await loadManifests([join(dir, "functions/package.json")]);
    expect(named.issues).toMatchObject([{ path: "apiVersion", message: "every manifest needs apiVersion and kind" }]);
    const walked = await loadManifests([dir]);
    expect(walked.issues).toMatchObject([{ file: join(dir, "half.yaml"), path: "kind" }]);
    expect(walked.ignoredFiles.map((f) => f.file)).toEqual([join(dir, "functions/package.json")]);
  });

  it("loader - a symlink back to a parent folder is entered once: no ELOOP, no duplicates", async () => {
    await put("a/es.yaml", SOURCE);
    await symlink("..", join(dir, "a", "up"));
    await symlink(join(dir, "a", "es.yaml"), join(dir, "link.yaml"));
    const m = await loadManifests([dir]);
    expect(m.issues).toEqual([]);
    expect(m.eventSources).toHaveLength(1);
  });

  it("loader - files keep the path as named: relative when given relative", async () => {
    await put("bad.yaml", SOURCE.replace("  eventBus: default\n", ""));
    const rel = relative(process.cwd(), dir);
    const m = await loadManifests([rel]);
    expect(m.issues).toHaveLength(1);
    expect(m.issues[0]!.file).toBe(join(rel, "bad.yaml"));
    expect(formatIssue(m.issues[0]!)).toMatch(new RegExp(`^${join(rel, "bad.yaml")}:4 EventSource/s: spec: `));
  });
});

describe("loader - lines", () => {
  it("loader - an issue has the 1-based line of its field, or of its document, and keeps docIndex", () => {
    const text = `# leading comment
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { a: { eventSource: s, event: e } }
  subscribers:
    - topic: x
      condition: a && b
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata:
  name: s
spec:
  eventBus: default
  cron:
    e:
      schedule: 5
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata:
  name: n
spec:
  cron: { e: { schedule: "@every 1s" } }
`;
    const m = parseManifestText(text, "m.yaml");
    const rows = m.issues.map((i) => ({ line: i.line, docIndex: i.docIndex, path: i.path }));
    expect(rows).toEqual([
      { line: 10, docIndex: 0, path: "spec.subscribers.0.condition" },
      { line: 20, docIndex: 1, path: "spec.cron.e.schedule" },
      // A missing field points at its parent's key.
      { line: 26, docIndex: 2, path: "spec" },
    ]);
    expect(formatIssue(m.issues[0]!)).toMatch(/^m\.yaml:10 Trigger\/t: spec\.subscribers\.0\.condition: /);
  });

  it("loader - a Redrive or Replay is checked against its schema and left to the cluster (skipped, not run)", () => {
    const text = `apiVersion: events.openfunction.io/v1alpha1
kind: Redrive
metadata: { name: fix }
spec: { trigger: orders, limit: 10 }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Replay
metadata: { name: again }
spec:
  trigger: orders
  from: yesterday
`;
    const m = parseManifestText(text, "ops.yaml");
    expect(m.skipped.map((s) => `${s.kind}/${s.name}`)).toEqual(["Redrive/fix"]);
    expect(m.issues.map((i) => `${i.line} ${i.path}`)).toEqual(["11 spec.from"]);
    expect(m.issues[0]!.message).toMatch(/RFC 3339/);
  });

  it("loader - a document without a field line is located at its start; a YAML error at its own line", () => {
    const m = parseManifestText("a: 1\n---\n- not a mapping\n---\nkey: value\n\nkey: again\n", "m.yaml");
    expect(m.issues.map((i) => [i.docIndex, i.line, i.code])).toEqual([
      [0, 1, "invalid_type"],
      [1, 3, "invalid_type"],
      [2, 7, "yaml"],
    ]);
  });

  it("loader - a duplicate names the file and line of the first definition", async () => {
    await put("one.yaml", `# one\n${SOURCE}`);
    await put("two.yaml", `---\n${SOURCE}`);
    const m = await loadManifests([dir]);
    expect(m.issues).toHaveLength(1);
    expect(m.issues[0]).toMatchObject({ file: join(dir, "two.yaml"), line: 2, docIndex: 0 });
    expect(m.issues[0]!.message).toContain(`already defined in ${join(dir, "one.yaml")}:2`);
  });

  it("loader - formatIssue without a line prints the document 1-based", () => {
    expect(formatIssue({ code: "yaml", path: "", file: "f.yaml", docIndex: 0, message: "too deep" })).toBe(
      "f.yaml (document 1): too deep",
    );
  });
});
