import jsonata from "jsonata";
import { describe, expect, it } from "vitest";
import { ErrorCode, ExpressionError } from "../src/errors.js";
import { compileFastPath, FALLBACK, type FastPath } from "../src/expr/fastpath.js";
import { createExpressionEngine, usesFastPath } from "../src/expr/jsonata.js";

/** jsonata's own result for `expr`, or the code of the error it throws: the oracle. */
type Oracle = { ok: true; value: unknown } | { ok: false; code: string };

async function oracle(parsed: jsonata.Expression, input: unknown, bindings?: Record<string, unknown>): Promise<Oracle> {
  try {
    return { ok: true, value: await parsed.evaluate(input, bindings) };
  } catch (err) {
    return { ok: false, code: String((err as { code?: unknown }).code) };
  }
}

function fastPathOf(expr: string): FastPath {
  const fast = compileFastPath(jsonata(expr).ast());
  if (fast === undefined) throw new Error(`no fast path for ${expr}`);
  return fast;
}

/** Expressions of the subset; the differential test runs each against jsonata. */
const subset = [
  "data.n % 2 = 0",
  "data.order.amount >= 100",
  'type = "io.openfunction.events.webhook" and subject ~> /^ord/',
  'data.order.tier in ["gold", "platinum"]',
  "a > 1 and (b or ok)",
  "n + 1",
  "n * 2 - x / 4",
  "n % 3",
  "1 / n",
  "-n",
  "a = b",
  "a != b",
  "null = a",
  's & "-" & n',
  '"prefix" & s & ok',
  "$string(n) & $string(ok)",
  "n < x",
  's <= "m"',
  "a >= 0 or s > a",
  'ok ? "yes" : "no"',
  "n > 2 ? n * 10 : s",
  "ok ? n",
  "$not(ok)",
  "$not(data.ok) or $exists(data.x)",
  "$exists(subject)",
  "$boolean(s) and $boolean(data)",
  '$lowercase(s) = "abc"',
  "$uppercase(type)",
  '$contains(subject, "ord")',
  "$contains(s, /^a/i)",
  "subject ~> /ORD/i ? 1 : 0",
  "$exists(s ~> /a/)",
  "$not(s ~> /^$/)",
  "$inputs.a.data.x = 1",
  "$inputs.a.data.x + $inputs.b.data.x",
  "$.data.n",
  "$$.n = n",
  "$",
  "data",
  "data.order",
  "(n; s)",
  "()",
  "true and n",
  'n in [1, 2, "1", null, true]',
  "n in x",
  "a or b",
  '(n = 0 or n = 1) and s != ""',
  "data.amount > data.n",
  "items.n > 1",
  "data.items = items",
  "- (n + x)",
  "$not(a) ? $string(b) : -x",
];

/** Outside the subset: always jsonata. */
const outside = [
  "$sum(items)",
  "items[0]",
  "items[n > 1]",
  "a.b[]",
  '{ "x": a }',
  "[a, b]",
  "($x := 1; $x)",
  "a.(b)",
  "**.a",
  "*.a",
  "a ~> $f",
  "subject ~> /x/",
  "$not()",
  "$not(a, b)",
  "$string()",
  "$count(a)",
  "$now()",
  "a.$x",
  "a.$",
  "[1..3]",
  "a in [[1]]",
  "a in [b]",
  'a in ["x"][0]',
  "$f(a)",
  "function($x) { $x }",
  "a@$x.b",
  "a#$i.b",
  "a ? b : c ~> /x/",
  "a ~> /x/ = true",
  "$exists(a, b)",
  '$contains(a, "x", 1)',
  "$contains(a, b)",
  "not(a)",
  "a{ b: c }",
];

describe("jsonata fast path", () => {
  const engine = createExpressionEngine();

  it.each(subset)("jsonata fast path - %s takes the fast path", (expr) => {
    expect(usesFastPath(engine.compile(expr))).toBe(true);
  });

  it.each(outside)("jsonata fast path - %s is left to jsonata", (expr) => {
    expect(usesFastPath(engine.compile(expr))).toBe(false);
  });

  it("jsonata fast path - an input it cannot reproduce is handed back", () => {
    const filter = fastPathOf("data.n % 2 = 0");
    expect(filter({ data: { n: 4 } }, undefined)).toBe(true);
    expect(filter({ data: {} }, undefined)).toBe(false);
    expect(filter({ data: [{ n: 4 }] }, undefined)).toBe(FALLBACK); // a sequence to jsonata
    expect(filter([{ data: { n: 4 } }], undefined)).toBe(FALLBACK);
    expect(filter({ data: { n: "4" } }, undefined)).toBe(FALLBACK); // jsonata's T2001
    expect(fastPathOf("a < 1")({ a: "x" }, undefined)).toBe(FALLBACK); // T2009
    expect(fastPathOf("$x.a")({}, { y: 1 })).toBe(FALLBACK); // $x may be a built-in
    expect(fastPathOf("$not(a)")({ a: true }, { not: () => 1 })).toBe(FALLBACK); // shadowed
    expect(fastPathOf("$not(a)")({ a: true }, { other: 1 })).toBe(false);
  });

  it("jsonata fast path - missing paths and undefined follow jsonata", async () => {
    const rows: [string, unknown][] = [
      ["missing = 1", false],
      ["missing != 1", false],
      ["missing > 1", undefined],
      ["missing + 1", undefined],
      ["missing and true", false],
      ["$not(missing)", undefined],
      ['missing & "x"', "x"],
    ];
    for (const [expr, expected] of rows) {
      expect(fastPathOf(expr)({ a: 1 }, undefined), expr).toBe(expected);
      await expect(engine.evaluate(expr, { a: 1 })).resolves.toBe(expected);
    }
  });

  it("jsonata fast path - errors are jsonata's, through the interpreter", async () => {
    await expect(engine.evaluate('a + "x"', { a: 1 })).rejects.toMatchObject({
      code: ErrorCode.ExpressionEvaluation,
      column: 3,
      cause: { code: "T2002" },
    });
    await expect(engine.evaluateBoolean("a < 1", { a: "x" })).rejects.toMatchObject({
      code: ErrorCode.ExpressionEvaluation,
      cause: { code: "T2009" },
    });
    await expect(engine.evaluateBoolean("n", { n: 3 })).rejects.toMatchObject({ code: ErrorCode.ExpressionType });
  });

  it("jsonata fast path - a binding that shadows a built-in is called as jsonata would", async () => {
    await expect(engine.evaluate("$not(a)", { a: true }, { not: (v: unknown) => `custom ${String(v)}` })).resolves.toBe(
      "custom true",
    );
    await expect(engine.evaluate("$not(a)", { a: true }, { not: 1 })).rejects.toMatchObject({
      code: ErrorCode.ExpressionEvaluation,
      cause: { code: "T1006" },
    });
  });

  it("jsonata fast path - a getter that throws is reported as before", async () => {
    const input = {
      get n(): number {
        throw new Error("kaput");
      },
    };
    for (const run of [() => engine.evaluate("n + 1", input), () => engine.evaluateBoolean("n = 1", input)]) {
      const err: unknown = await run().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ExpressionError);
      expect(err).toMatchObject({ code: ErrorCode.ExpressionEvaluation, message: expect.stringContaining("kaput") });
    }
  });

  it("jsonata fast path - results still settle in call order behind a queued evaluation", async () => {
    const order: string[] = [];
    const slow = engine.evaluate("[1..3000].($ * 2) ~> $sum()", {}).then(() => order.push("slow"));
    const fast = engine.evaluateBoolean("n = 1", { n: 1 }).then(() => order.push("fast"));
    const fastToo = engine.evaluate("n", { n: 1 }).then(() => order.push("fast too"));
    await Promise.all([slow, fast, fastToo]);
    expect(order).toEqual(["slow", "fast", "fast too"]);
    // With nothing queued, the fast path does not wait for the queue.
    await expect(engine.evaluateBoolean("n = 1", { n: 1 })).resolves.toBe(true);
  });

  it("jsonata fast path - an expression nested deeper than maxDepth fails as the interpreter does", async () => {
    const shallow = createExpressionEngine({ maxDepth: 5 });
    const expr = "((((((a))))))";
    expect(usesFastPath(shallow.compile(expr))).toBe(false);
    expect(usesFastPath(engine.compile(expr))).toBe(true);
    await expect(shallow.evaluate(expr, { a: 1 })).rejects.toMatchObject({ code: ErrorCode.ExpressionLimit });
    await expect(engine.evaluate(expr, { a: 1 })).resolves.toBe(1);
  });

  it("jsonata fast path - the depth it counts is jsonata's", async () => {
    const input = { n: 1, x: 2, s: "a", data: { ok: true, order: { tier: "gold" } } };
    const exprs = [
      "((((((a))))))",
      "n * 2 - x / 4",
      "$not(data.ok)",
      "- (n + x)",
      'data.order.tier in ["gold"]',
      "$exists(s ~> /a/)",
      "(n; s)",
      "n > 1 ? $string(n) : s & x",
    ];
    for (const expr of exprs) {
      const ast = jsonata(expr).ast();
      let fastFrom = 0;
      let jsonataFrom = 0;
      for (let d = 12; d >= 1; d--) {
        if (compileFastPath(ast, d) !== undefined) fastFrom = d;
        const o = await oracle(jsonata(expr, { stack: d }), input);
        if (o.ok || o.code !== "D1011") jsonataFrom = d;
      }
      expect(fastFrom, expr).toBe(jsonataFrom);
      expect(fastFrom, expr).toBeGreaterThan(1);
    }
  });

  it("jsonata fast path - an object result is the input's, as jsonata returns it", async () => {
    const input = { data: { order: { id: "o1" } } };
    await expect(engine.evaluate("data.order", input)).resolves.toBe(input.data.order);
    await expect(engine.evaluate("$", input)).resolves.toBe(input);
  });
});

// ---- differential test: the fast path and the engine against jsonata itself ----

/** mulberry32: a small seeded generator, so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const keys = ["a", "b", "n", "s", "x", "ok", "type", "subject", "items", "data", "order", "amount", "tier"];
const containers = new Set(["data", "order"]);
const strings = [
  "",
  "a",
  "abc",
  "ABC",
  "gold",
  "platinum",
  "1",
  "ord-1",
  "orders",
  "io.openfunction.events.webhook",
  "m",
];
const numbers = [0, 1, 2, 3, -1, 4, 100, 250, 0.5, 1.1, -0, 1e21, 7];

function generator(seed: number) {
  const next = rng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;

  function scalar(): unknown {
    const r = next();
    if (r < 0.05) return null;
    if (r < 0.15) return next() < 0.5;
    if (r < 0.55) return pick(numbers);
    if (r < 0.57) return pick([NaN, Infinity, -Infinity]);
    return pick(strings);
  }

  function value(key: string, depth: number): unknown {
    const r = next();
    if (depth < 3 && (containers.has(key) ? r < 0.75 : r < 0.08)) return object(depth + 1);
    if (depth < 3 && r > 0.92) {
      const length = Math.floor(next() * 3);
      return Array.from({ length }, () => (next() < 0.5 ? scalar() : object(depth + 1)));
    }
    return scalar();
  }

  function object(depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const key of keys) if (next() < 0.55) out[key] = value(key, depth);
    return out;
  }

  function input(): unknown {
    const r = next();
    if (r < 0.86) return object(0);
    if (r < 0.91) return [object(1), object(1)];
    if (r < 0.96) return scalar();
    return r < 0.98 ? undefined : {};
  }

  function bindings(): Record<string, unknown> | undefined {
    const r = next();
    if (r < 0.1) return undefined;
    if (r < 0.15) return {};
    const b: Record<string, unknown> = { inputs: { a: object(0), b: object(0) } };
    if (next() < 0.03) b[pick(["not", "exists", "string", "contains", "lowercase", "boolean"])] = pick([1, "x", null]);
    return b;
  }

  return { input, bindings };
}

/** What `evaluateBoolean` must give for jsonata's outcome. */
function booleanOutcome(o: Oracle): { ok: true; value: boolean } | { ok: false; code: string } {
  if (!o.ok) return o;
  if (o.value === undefined) return { ok: true, value: false };
  if (typeof o.value === "boolean") return { ok: true, value: o.value };
  return { ok: false, code: ErrorCode.ExpressionType };
}

/** Deep equality with `Object.is` at the leaves (NaN equals NaN, 0 does not equal -0). */
function sameValue(got: unknown, want: unknown): boolean {
  if (Object.is(got, want)) return true;
  if (typeof got !== "object" || typeof want !== "object" || got === null || want === null) return false;
  if (Array.isArray(got) !== Array.isArray(want)) return false;
  // jsonata's sequences carry extra own keys (`sequence`); the engine returns plain arrays.
  if (Array.isArray(got) && Array.isArray(want))
    return got.length === want.length && want.every((item, i) => sameValue(got[i], item));
  const gotKeys = Object.keys(got);
  const wantKeys = Object.keys(want);
  if (gotKeys.length !== wantKeys.length) return false;
  return wantKeys.every(
    (key) =>
      gotKeys.includes(key) && sameValue((got as Record<string, unknown>)[key], (want as Record<string, unknown>)[key]),
  );
}

async function settle(p: Promise<unknown>): Promise<Oracle> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    if (!(err instanceof ExpressionError)) return { ok: false, code: `not an ExpressionError: ${String(err)}` };
    if (err.code === ErrorCode.ExpressionType) return { ok: false, code: err.code };
    return { ok: false, code: String((err.cause as { code?: unknown } | undefined)?.code) };
  }
}

describe("jsonata fast path differential", () => {
  it("jsonata fast path differential - fast path, engine and evaluateBoolean agree with jsonata on generated inputs", async () => {
    const perExpression = 240;
    const gen = generator(20240601);
    const cases = Array.from({ length: perExpression }, () => ({ input: gen.input(), bindings: gen.bindings() }));
    // Semantics only: the wall-clock limit (100 ms by default) is tested elsewhere, and on a loaded
    // machine a pause in one of 37,440 evaluations would pass it and read as a mismatch.
    const engine = createExpressionEngine({ timeoutMs: 60_000 });
    const mismatches: string[] = [];
    let comparisons = 0;
    let fastResults = 0;
    let fallbacks = 0;
    const started = performance.now();

    for (const expr of subset) {
      const parsed = jsonata(expr);
      const fast = fastPathOf(expr);
      let fastHere = 0;
      for (const [i, { input, bindings }] of cases.entries()) {
        const want = await oracle(parsed, input, bindings);
        const where = `${expr} on case ${i}`;

        // The closure itself: jsonata's value, or FALLBACK; never a wrong answer.
        let direct: unknown;
        try {
          direct = fast(input, bindings);
        } catch (err) {
          mismatches.push(`${where}: the fast path threw ${String(err)}`);
          continue;
        }
        if (direct === FALLBACK) {
          fallbacks++;
        } else {
          fastResults++;
          fastHere++;
          if (!want.ok) mismatches.push(`${where}: fast path gave ${String(direct)}, jsonata threw ${want.code}`);
          else if (!sameValue(direct, want.value))
            mismatches.push(`${where}: fast path gave ${String(direct)}, jsonata ${String(want.value)}`);
        }

        // Through the engine, fast path or not.
        const got = await settle(engine.evaluate(expr, input, bindings));
        if (
          got.ok !== want.ok ||
          (got.ok && want.ok && !sameValue(got.value, want.value)) ||
          (!got.ok && !want.ok && got.code !== want.code)
        )
          mismatches.push(`${where}: engine ${JSON.stringify(got)}, jsonata ${JSON.stringify(want)}`);

        const gotBool = await settle(engine.evaluateBoolean(expr, input, bindings));
        const wantBool = booleanOutcome(want);
        if (JSON.stringify(gotBool) !== JSON.stringify(wantBool))
          mismatches.push(`${where}: evaluateBoolean ${JSON.stringify(gotBool)}, expected ${JSON.stringify(wantBool)}`);
        comparisons += 3;
      }
      // The generated inputs reach the fast path of every expression, not only its fallback.
      if (fastHere === 0) mismatches.push(`${expr}: no generated input took the fast path`);
    }

    expect(mismatches.slice(0, 5).map((m) => m.slice(0, 1000))).toEqual([]);
    expect(comparisons).toBeGreaterThanOrEqual(30_000);
    expect(fastResults).toBeGreaterThan(fallbacks);
    expect(fallbacks).toBeGreaterThan(0);
    expect(performance.now() - started).toBeLessThan(25_000);
  });
});
