// Property-based fuzzing of manifest loading (parseManifestText, the text entry point of the
// loader): random YAML text, random JSON values, and mutations of the example manifests. A
// manifest either loads, or its problems come back as issues with a path (what
// loadManifestsOrThrow turns into a ManifestError); no other exception escapes, and an alias bomb
// is refused instead of expanded. Seeded: a failure prints fast-check's seed and path to replay.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { ErrorCode, ManifestError, type ValidationIssue } from "../src/errors.js";
import { parseManifestText, type Manifests } from "../src/loader.js";
import { schemas } from "../src/schemas.js";
import { toYaml } from "../src/yaml.js";

const SEED = 20_250_601;
const FILE = "fuzz.yaml";
/** Inputs per generator; they add up to 100,000. */
const RUNS = { text: 40_000, json: 30_000, mutation: 25_000, bomb: 1_500, nesting: 3_500 } as const;

const EXAMPLES = join(import.meta.dirname, "../../../examples");

function exampleDocuments(): Record<string, unknown>[] {
  const docs: Record<string, unknown>[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".yaml")) {
        for (const doc of parseAllDocuments(readFileSync(path, "utf8")))
          docs.push(doc.toJS() as Record<string, unknown>);
      }
    }
  };
  walk(EXAMPLES);
  return docs;
}

const examples = exampleDocuments();

class PropertyFailure extends Error {}

function fail(message: string): never {
  throw new PropertyFailure(message);
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.constructor.name}: ${err.message.slice(0, 300)}` : String(err);
}

function checkIssue(issue: ValidationIssue): void {
  if (typeof issue.path !== "string") fail(`issue without a path: ${JSON.stringify(issue)}`);
  if (typeof issue.code !== "string" || issue.code === "") fail(`issue without a code: ${JSON.stringify(issue)}`);
  if (typeof issue.message !== "string" || issue.message === "")
    fail(`issue without a message: ${JSON.stringify(issue)}`);
  if (issue.file !== FILE) fail(`issue names file ${String(issue.file)}`);
  if (!Number.isInteger(issue.docIndex)) fail(`issue without a document index: ${JSON.stringify(issue)}`);
}

const kinds: (keyof Manifests)[] = [
  "eventSources",
  "eventBuses",
  "clusterEventBuses",
  "triggers",
  "functions",
  "secrets",
];

/**
 * The property: loads (and what loaded is schema-valid and reloads unchanged from its YAML), or
 * every problem is an issue with a path. Returns what was parsed, for the callers' extra checks.
 */
function checkManifest(text: string): Manifests | undefined {
  let m: Manifests;
  try {
    m = parseManifestText(text, FILE);
  } catch (err) {
    if (err instanceof PropertyFailure) throw err;
    // The loader's one typed failure is a ManifestError whose issues carry their paths.
    if (err instanceof ManifestError) {
      err.issues.forEach(checkIssue);
      return undefined;
    }
    return fail(`parseManifestText threw ${describeError(err)}`);
  }
  m.issues.forEach(checkIssue);
  if (m.issues.length > 0) {
    const err = new ManifestError(m.issues);
    if (err.code !== ErrorCode.ManifestInvalid || err.message === "") fail("ManifestError without code or message");
    return m;
  }
  for (const list of kinds) {
    if (list === "skipped" || list === "issues") continue;
    for (const located of m[list] as { resource: { kind: string } }[]) {
      const r = located.resource;
      const schema = Object.hasOwn(schemas, r.kind) ? schemas[r.kind as keyof typeof schemas] : undefined;
      if (schema !== undefined && !schema.safeParse(r).success) fail(`loaded ${r.kind} fails its own schema`);
      // What loaded prints as YAML that loads back to the same resource.
      const again = parseManifestText(toYaml(r), FILE);
      const back = (again[list] as { resource: unknown }[])[0]?.resource;
      if (again.issues.length > 0 || !isDeepStrictEqual(back, r)) {
        fail(`${r.kind} does not reload from its YAML: ${JSON.stringify(again.issues[0] ?? back).slice(0, 300)}`);
      }
    }
  }
  return m;
}

function isDeepStrictEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return (
    ka.length === kb.length &&
    ka.every(
      (k) =>
        Object.hasOwn(b, k) && isDeepStrictEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
    )
  );
}

// ---- generators ----

const yamlChars = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ...":-[]{}&*!|>'\"#%@`,?~=<.$/\\_",
  " ",
  " ",
  " ",
  "\n",
  "\n",
  "\t",
  "\r",
  "\u00e9",
  "\u{1F600}",
  "\u0000",
  "\uFEFF",
  "\u2028",
  "\uD800",
];

const yamlTokens = [
  "apiVersion: events.openfunction.io/v1alpha1",
  "apiVersion: v1",
  "apiVersion: core.openfunction.io/v1beta1",
  "kind: EventSource",
  "kind: Trigger",
  "kind: EventBus",
  "kind: ClusterEventBus",
  "kind: Secret",
  "kind: Function",
  "kind: constructor",
  "kind: __proto__",
  "metadata:",
  "  name: x",
  "  namespace: ns",
  "spec:",
  "  eventBus: default",
  "  webhook:",
  "    e:",
  '      port: "8080"',
  "      endpoint: /e",
  "  inputs:",
  "    a: {eventSource: s, event: e}",
  "  subscribers:",
  "    - condition: a && (b || !c)",
  "      topic: t",
  "      filter: data.n > 1",
  "---",
  "...",
  "%YAML 1.2",
  "%TAG ! tag:x,2024:",
  "&a",
  "*a",
  "<<: *a",
  "!!str",
  "!!binary",
  "!!map",
  "!!int",
  "!custom",
  "? complex",
  ": value",
  "- ",
  "|",
  ">-",
  "[",
  "]",
  "{",
  "}",
  ",",
  "#",
  "'",
  '"',
  "\n",
  "  ",
  "null",
  "~",
  "true",
  "0x1F",
  "1e400",
  ".nan",
  "-.inf",
];

const randomYamlText = fc.oneof(
  fc.string({ unit: fc.constantFrom(...yamlChars), maxLength: 200 }),
  fc.array(fc.constantFrom(...yamlTokens), { maxLength: 40 }).map((t) => t.join("")),
  fc.array(fc.constantFrom(...yamlTokens), { maxLength: 30 }).map((t) => t.join("\n")),
  fc.string({ unit: "binary", maxLength: 100 }),
);

/** JSON values that look like manifests more often than chance would make them. */
const manifestLike = fc.record(
  {
    apiVersion: fc.oneof(
      fc.constantFrom("events.openfunction.io/v1alpha1", "v1", "core.openfunction.io/v1beta1", "x/y", ""),
      fc.jsonValue({ maxDepth: 1 }),
    ),
    kind: fc.oneof(
      fc.constantFrom(
        "EventSource",
        "Trigger",
        "EventBus",
        "ClusterEventBus",
        "Secret",
        "Function",
        "toString",
        "hasOwnProperty",
        "constructor",
        "__proto__",
        "valueOf",
      ),
      fc.jsonValue({ maxDepth: 1 }),
    ),
    metadata: fc.oneof(
      fc.record({ name: fc.string({ maxLength: 10 }), namespace: fc.string({ maxLength: 10 }) }, { requiredKeys: [] }),
      fc.jsonValue({ maxDepth: 2 }),
    ),
    spec: fc.jsonValue({ maxDepth: 4 }),
    stringData: fc.jsonValue({ maxDepth: 2 }),
  },
  { requiredKeys: [] },
);

const randomJsonText = fc
  .tuple(fc.oneof(fc.jsonValue({ maxDepth: 4 }), manifestLike), fc.boolean())
  .map(([v, pretty]) => JSON.stringify(v, null, pretty ? 2 : undefined) ?? "null");

// ---- mutations of the example manifests ----

type Path = (string | number)[];

function pathsOf(value: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix);
  if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) pathsOf(v, [...prefix, Array.isArray(value) ? Number(k) : k], out);
  }
  return out;
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function getAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const k of path) v = (v as Record<string | number, unknown>)[k];
  return v;
}

function setAt(root: unknown, path: Path, value: unknown): unknown {
  if (path.length === 0) return value;
  const parent = getAt(root, path.slice(0, -1)) as Record<string | number, unknown>;
  parent[path.at(-1)!] = value;
  return root;
}

function dropAt(root: unknown, path: Path): unknown {
  if (path.length === 0) return undefined;
  const parent = getAt(root, path.slice(0, -1));
  const key = path.at(-1)!;
  if (Array.isArray(parent)) parent.splice(Number(key), 1);
  else delete (parent as Record<string | number, unknown>)[key];
  return root;
}

const odd = fc.constantFrom(
  "",
  " ",
  "\u0000",
  "\u{1F600}\u0301",
  "\uD800",
  "e\u0301",
  "\u202Eevil",
  "名前",
  "a".repeat(10_000),
  "x: y",
  "*a",
  "&a b",
  "- [",
  "'",
  '"',
  "@",
  "`",
  "0o17",
  "1_000",
  "NaN",
  "null",
  "yes",
  "-",
  "a && (b || !c)",
  "&&",
  "$",
  "(",
  "[1..10000000]",
);

const mutation = fc.oneof(
  fc.record({ op: fc.constant("drop" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("retype" as const), at: fc.nat(), value: fc.jsonValue({ maxDepth: 2 }) }),
  fc.record({ op: fc.constant("odd" as const), at: fc.nat(), value: odd }),
  fc.record({
    op: fc.constant("unicode" as const),
    at: fc.nat(),
    value: fc.string({ unit: "grapheme", maxLength: 30 }),
  }),
  fc.record({
    op: fc.constant("huge" as const),
    at: fc.nat(),
    size: fc.oneof(
      { weight: 9, arbitrary: fc.integer({ min: 1000, max: 5000 }) },
      fc.integer({ min: 5000, max: 200_000 }),
    ),
  }),
  fc.record({ op: fc.constant("copy" as const), at: fc.nat(), to: fc.nat() }),
  fc.record({ op: fc.constant("alias" as const), at: fc.nat(), to: fc.nat() }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

/** Applies `ops` to a copy of an example; returns the value and the anchors/aliases to splice into its text. */
function mutate(doc: unknown, ops: Mutation[]): { value: unknown; alias: boolean } {
  let value = clone(doc);
  let alias = false;
  for (const op of ops) {
    const paths = pathsOf(value);
    const path = paths[op.at % paths.length]!;
    switch (op.op) {
      case "drop":
        value = dropAt(value, path);
        break;
      case "retype":
      case "odd":
      case "unicode":
        value = setAt(value, path, op.value);
        break;
      case "huge":
        value = setAt(value, path, "x".repeat(op.size));
        break;
      case "copy": {
        const to = paths[op.to % paths.length]!;
        const moved = clone(getAt(value, path));
        if (!to.slice(0, path.length).every((k, i) => k === path[i])) value = setAt(value, to, moved);
        break;
      }
      case "alias": {
        const to = paths[op.to % paths.length]!;
        const prefix = (a: Path, b: Path): boolean => a.every((k, i) => k === b[i]);
        if (path.length > 0 && to.length > 0 && !alias && !prefix(path, to) && !prefix(to, path)) {
          value = setAt(value, path, "__ANCHOR__");
          value = setAt(value, to, "__ALIAS__");
          alias = true;
        }
        break;
      }
    }
  }
  return { value, alias };
}

const formats = ["yaml", "json", "yaml-dup"] as const;

const mutatedExample = fc
  .record({
    doc: fc.nat({ max: examples.length - 1 }),
    ops: fc.array(mutation, { minLength: 1, maxLength: 4 }),
    format: fc.constantFrom(...formats),
    anchorTo: fc.constantFrom("value", "[a, b]", "{k: v}", "&inner x"),
    extra: fc.option(fc.constantFrom(...examples.keys()), { nil: undefined }),
  })
  .map(({ doc, ops, format, anchorTo, extra }) => {
    const { value, alias } = mutate(examples[doc], ops);
    let text = (format === "json" ? JSON.stringify(value) : toYaml(value)) ?? "";
    if (format === "yaml-dup") {
      // A duplicated key: the first line with a key, twice.
      const lines = text.split("\n");
      const i = lines.findIndex((l) => /^\s*[A-Za-z]+:/.test(l));
      if (i >= 0) lines.splice(i, 0, lines[i]!);
      text = lines.join("\n");
    }
    if (alias) text = text.replace("__ANCHOR__", `&a1 ${anchorTo}`).replace("__ALIAS__", "*a1");
    if (extra !== undefined) text += `\n---\n${toYaml(examples[extra])}`;
    return text;
  });

/** "Billion laughs": each level aliases the one before it `fanout` times. */
const aliasBomb = fc
  .record({
    depth: fc.integer({ min: 2, max: 14 }),
    fanout: fc.integer({ min: 2, max: 12 }),
    flow: fc.boolean(),
    asManifest: fc.boolean(),
  })
  .map(({ depth, fanout, flow, asManifest }) => {
    const lines = [`l0: &l0 ["lol", "lol"]`];
    for (let i = 1; i <= depth; i++) {
      const refs = Array.from({ length: fanout }, () => `*l${i - 1}`);
      lines.push(
        flow ? `l${i}: &l${i} [${refs.join(", ")}]` : `l${i}: &l${i}\n${refs.map((r) => `  - ${r}`).join("\n")}`,
      );
    }
    if (!asManifest) return lines.join("\n");
    return [
      "apiVersion: events.openfunction.io/v1alpha1",
      "kind: EventSource",
      "metadata: {name: bomb}",
      "x-bomb:",
      ...lines.map((l) => `  ${l.replace(/\n/g, "\n  ")}`),
      "spec:",
      "  eventBus: default",
      "  webhook:",
      `    e: {port: "1", endpoint: /e, metadata: *l${depth}}`,
    ].join("\n");
  });

const deepNesting = fc
  .record({
    depth: fc.integer({ min: 1, max: 100_000 }),
    style: fc.constantFrom("flow-seq", "flow-map", "block", "json"),
  })
  .map(({ depth, style }) => {
    switch (style) {
      case "flow-seq":
        return `spec: ${"[".repeat(depth)}${"]".repeat(depth)}`;
      case "flow-map":
        return `spec: ${"{a: ".repeat(depth)}1${"}".repeat(depth)}`;
      case "json":
        return `{"spec": ${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`;
      default: {
        const levels = Math.min(depth, 400);
        return Array.from({ length: levels }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n");
      }
    }
  });

/** Gives the event loop a turn now and then, so a long synchronous run does not starve vitest's RPC. */
let sinceYield = 0;
async function breathe(): Promise<void> {
  if (++sinceYield % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
}

async function run(
  arb: fc.Arbitrary<string>,
  numRuns: number,
  offset: number,
  extra?: (text: string, m: Manifests | undefined) => void,
): Promise<void> {
  await fc.assert(
    fc.asyncProperty(arb, async (text) => {
      await breathe();
      const m = checkManifest(text);
      extra?.(text, m);
    }),
    { seed: SEED + offset, numRuns },
  );
}

describe("manifest fuzz", () => {
  it("manifest fuzz - random YAML text loads or reports issues with paths", async () => {
    await run(randomYamlText, RUNS.text, 1);
  }, 120_000);

  it("manifest fuzz - random JSON values load or report issues with paths", async () => {
    await run(randomJsonText, RUNS.json, 2);
  }, 120_000);

  it("manifest fuzz - mutated example manifests load or report issues with paths", async () => {
    await run(mutatedExample, RUNS.mutation, 3);
  }, 120_000);

  it("manifest fuzz - alias bombs are refused, not expanded", async () => {
    await run(aliasBomb, RUNS.bomb, 4, (text, m) => {
      // Expanded, the largest of these is 2 * 12^14 nodes; the loader must stop at its bound.
      if (m !== undefined && m.issues.length === 0 && text.includes("*l5")) fail("an alias bomb loaded");
    });
  }, 120_000);

  it("manifest fuzz - deep nesting loads or reports issues with paths", async () => {
    await run(deepNesting, RUNS.nesting, 5);
  }, 120_000);

  it("manifest fuzz - the generators reach valid manifests too", () => {
    // Not a property: a check that the mutations leave enough valid manifests to test the loaded path.
    const samples = fc.sample(mutatedExample, { seed: SEED, numRuns: 500 });
    const loaded = samples.filter((t) => {
      const m = parseManifestText(t, FILE);
      return m.issues.length === 0 && kinds.some((k) => (m[k] as unknown[]).length > 0);
    });
    expect(loaded.length).toBeGreaterThan(50);
  });
});

describe("manifest fuzz regressions", () => {
  it("manifest fuzz regressions - a kind named after an Object.prototype member is an unknown kind", () => {
    for (const kind of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const m = parseManifestText(`apiVersion: events.openfunction.io/v1alpha1\nkind: ${kind}\n`, FILE);
      expect(m.issues).toMatchObject([{ code: "invalid_value", path: "kind", file: FILE, docIndex: 0 }]);
    }
  });

  it("manifest fuzz regressions - YAML nested 20,000 deep is an issue; composing it could abort the process", () => {
    for (const text of [`spec: ${"[".repeat(20_000)}${"]".repeat(20_000)}`, `${"- ".repeat(20_000)}x`]) {
      const m = parseManifestText(text, FILE);
      expect(m.issues).toMatchObject([{ code: "yaml", path: "", file: FILE, docIndex: 0 }]);
    }
  });

  it("manifest fuzz regressions - an alias bomb is an issue, not an exception", () => {
    const text = [
      "a: &a [x, x]",
      "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
      "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
    ].join("\n");
    const m = parseManifestText(text, FILE);
    expect(m.issues).toMatchObject([{ code: "yaml", path: "", file: FILE, docIndex: 0 }]);
  });
});
