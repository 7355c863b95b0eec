// Property-based fuzzing of the expression engine: generated JSONata-like expressions, condition
// strings and raw text. Compiling succeeds or throws an ExpressionError with a column; evaluating
// gives a boolean (filters) or an ExpressionError; pathological expressions stop at the engine's
// bounds; and where the fast path answers, it answers what jsonata itself does (the differential
// test in jsonata-fastpath.test.ts covers a fixed list of expressions; this one generates them).
// Seeded: a failure prints fast-check's seed and path to replay.
import fc from "fast-check";
import jsonata from "jsonata";
import { describe, expect, it } from "vitest";
import { ErrorCode, ExpressionError } from "../src/errors.js";
import {
  evaluateCondition,
  formatCondition,
  parseCondition,
  satisfyingInputs,
  type ConditionAst,
} from "../src/expr/condition.js";
import { createExpressionEngine, usesFastPath } from "../src/expr/jsonata.js";

const SEED = 20_250_602;
/** Inputs per property; they add up to 100,000. */
const RUNS = { jsonata: 35_000, raw: 25_000, condition: 38_000, pathological: 2_000 } as const;
const TIMEOUT = 120_000;

class PropertyFailure extends Error {}

function fail(message: string): never {
  throw new PropertyFailure(message);
}

function describeError(err: unknown): string {
  return err instanceof Error
    ? `${err.constructor.name} ${String((err as { code?: unknown }).code)}: ${err.message.slice(0, 200)}`
    : String(err);
}

/** A compile failure must be an ExpressionError of a compile code, a syntax error with its column. */
function checkCompileError(expr: string, err: unknown): void {
  if (!(err instanceof ExpressionError)) fail(`compile threw ${describeError(err)}`);
  if (err.code !== ErrorCode.ExpressionSyntax && err.code !== ErrorCode.ExpressionLimit)
    fail(`compile failed with code ${err.code}`);
  if (err.expression !== expr) fail("the error does not carry the expression");
  if (err.code === ErrorCode.ExpressionSyntax) {
    const c = err.column;
    if (c === undefined || !Number.isInteger(c) || c < 1 || c > expr.length + 1)
      fail(`syntax error without a column in the expression: ${String(c)} (${err.message.slice(0, 200)})`);
  }
}

const evaluationCodes = new Set<string>([
  ErrorCode.ExpressionEvaluation,
  ErrorCode.ExpressionLimit,
  ErrorCode.ExpressionType,
]);

// ---- generators ----

const names = ["a", "b", "n", "s", "x", "ok", "data", "items", "type", "subject", "order", "amount"];
const name = fc.constantFrom(...names);

const stringLit = fc
  .constantFrom("", "a", "abc", "gold", "x y", "ord", "1", 'q"uote', "é", "\u{1F600}")
  .map((s) => JSON.stringify(s));
const numberLit = fc.constantFrom("0", "1", "2", "-1", "0.5", "100", "1e3", "1e400", "3.14");
const literal = fc.oneof(stringLit, numberLit, fc.constantFrom("true", "false", "null"));
const regexLit = fc.constantFrom("/a/", "/^ord/i", "/[0-9]+/", "/x|y/", "/(ab)*c/", "/./");

const binaryOps = ["=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&", "and", "or", "in", "~>"];
const functions: [string, number][] = [
  ["$not", 1],
  ["$exists", 1],
  ["$string", 1],
  ["$boolean", 1],
  ["$lowercase", 1],
  ["$uppercase", 1],
  ["$contains", 2],
  ["$count", 1],
  ["$sum", 1],
  ["$length", 1],
  ["$substring", 2],
  ["$number", 1],
  ["$keys", 1],
  ["$match", 2],
  ["$split", 2],
  ["$join", 1],
  ["$max", 1],
  ["$abs", 1],
  ["$append", 2],
  ["$reverse", 1],
];

/** JSONata-like expressions from a small grammar, deep enough to reach most of the language. */
const { expr: jsonataExpr } = fc.letrec<{ expr: string; path: string }>((tie) => ({
  path: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    name,
    fc.tuple(name, name).map(([p, q]) => `${p}.${q}`),
    fc.tuple(name, name, name).map(([p, q, r]) => `${p}.${q}.${r}`),
    fc.constantFrom("$", "$$", "$.data", "$inputs.a.data", "$inputs.b"),
    fc.tuple(name, tie("expr")).map(([p, e]) => `${p}[${e}]`),
    fc.tuple(name, fc.integer({ min: -2, max: 3 })).map(([p, i]) => `${p}[${i}]`),
  ),
  expr: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    literal,
    tie("path"),
    tie("path"),
    fc.tuple(tie("expr"), fc.constantFrom(...binaryOps), tie("expr")).map(([l, op, r]) => `${l} ${op} ${r}`),
    tie("expr").map((e) => `(${e})`),
    tie("expr").map((e) => `-${e}`),
    fc.tuple(tie("expr"), tie("expr"), tie("expr")).map(([c, t, e]) => `${c} ? ${t} : ${e}`),
    fc
      .tuple(fc.constantFrom(...functions), tie("expr"), fc.oneof(tie("expr"), regexLit))
      .map(([[f, arity], x, y]) => (arity === 1 ? `${f}(${x})` : `${f}(${x}, ${y})`)),
    fc.array(tie("expr"), { maxLength: 3 }).map((items) => `[${items.join(", ")}]`),
    fc.tuple(fc.integer({ min: -3, max: 20 }), fc.integer({ min: -3, max: 50 })).map(([lo, hi]) => `[${lo}..${hi}]`),
    fc.tuple(stringLit, tie("expr")).map(([k, v]) => `{${k}: ${v}}`),
    fc.tuple(tie("expr"), tie("expr")).map(([p, q]) => `(${p}; ${q})`),
    fc.tuple(tie("expr"), tie("expr")).map(([v, body]) => `($v := ${v}; ${body} and $v)`),
    fc.tuple(tie("path"), regexLit).map(([p, r]) => `${p} ~> ${r}`),
    tie("expr").map((e) => `function($x) { ${e} }($$)`),
  ),
}));

/** A generated expression, sometimes damaged: a character inserted, removed or the text cut. */
const maybeBroken = fc
  .tuple(
    jsonataExpr,
    fc.option(
      fc.record({
        at: fc.nat(),
        edit: fc.constantFrom("insert", "delete", "cut"),
        char: fc.constantFrom(..."()[]{}.,;:?!=<>&|$\"'`/\\#@^~*+- \n0aZ"),
      }),
      { nil: undefined, freq: 3 },
    ),
  )
  .map(([e, damage]) => {
    if (damage === undefined) return e;
    const i = damage.at % (e.length + 1);
    if (damage.edit === "insert") return e.slice(0, i) + damage.char + e.slice(i);
    if (damage.edit === "delete") return e.slice(0, i) + e.slice(i + 1);
    return e.slice(0, i);
  });

const rawExpr = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: fc.constantFrom(..."()[]{}.,;:?!=<>&|$\"'`/\\#@^~*+-%\n\t 0123456789abcxyz"), maxLength: 80 }),
  fc.string({ unit: "binary", maxLength: 40 }),
);

const scalar = fc.oneof(
  fc.constantFrom(null, true, false, 0, 1, -1, 2, 0.5, 100, 1e21, -0, "", "a", "abc", "gold", "ord-1", "1", "x y"),
  fc.double(),
  fc.string({ maxLength: 8 }),
);

/** Event-like data: objects over the generator's names, with arrays and nesting. */
const { value: eventValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    scalar,
    fc.dictionary(name, tie("value"), { maxKeys: 5 }),
    fc.array(tie("value"), { maxLength: 3 }),
  ),
}));
const eventData = fc.oneof(
  { weight: 5, arbitrary: fc.dictionary(name, eventValue, { maxKeys: 8 }) },
  eventValue,
  fc.constant(undefined),
);
const bindings = fc.option(
  fc.record({ inputs: fc.record({ a: fc.dictionary(name, eventValue, { maxKeys: 4 }), b: eventValue }) }),
  { nil: undefined },
);

// ---- the oracle: jsonata itself ----

type Outcome = { ok: true; value: unknown } | { ok: false; code: string };

async function oracle(
  parsed: jsonata.Expression,
  input: unknown,
  b: Record<string, unknown> | undefined,
): Promise<Outcome> {
  try {
    return { ok: true, value: await parsed.evaluate(input, b) };
  } catch (err) {
    return { ok: false, code: failureCode(err) };
  }
}

/** jsonata's error code, or the class of a JavaScript error it let through (e.g. a TypeError). */
function failureCode(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === "string") return code;
  return `native ${err instanceof Error ? err.constructor.name : typeof err}`;
}

async function settle(p: Promise<unknown>): Promise<Outcome | { thrown: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    if (!(err instanceof ExpressionError)) return { thrown: err };
    if (err.code === ErrorCode.ExpressionType) return { ok: false, code: err.code };
    return { ok: false, code: err.cause === undefined ? err.code : failureCode(err.cause) };
  }
}

/** Deep equality with Object.is at the leaves; jsonata's sequences compare as plain arrays. */
function sameValue(got: unknown, want: unknown): boolean {
  if (Object.is(got, want)) return true;
  if (typeof got !== "object" || typeof want !== "object" || got === null || want === null) return false;
  if (Array.isArray(got) !== Array.isArray(want)) return false;
  if (Array.isArray(got) && Array.isArray(want))
    return got.length === want.length && want.every((item, i) => sameValue(got[i], item));
  const gk = Object.keys(got);
  const wk = Object.keys(want);
  return (
    gk.length === wk.length &&
    wk.every(
      (k) =>
        Object.hasOwn(got, k) && sameValue((got as Record<string, unknown>)[k], (want as Record<string, unknown>)[k]),
    )
  );
}

let sinceYield = 0;
/** Gives the event loop a macrotask turn now and then (fast paths resolve without one). */
async function breathe(): Promise<void> {
  if (++sinceYield % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
}

describe("expression fuzz", () => {
  it(
    "expression fuzz - generated expressions compile or fail typed; filters give a boolean or a typed error; the fast path agrees with jsonata",
    async () => {
      const engine = createExpressionEngine();
      await fc.assert(
        fc.asyncProperty(maybeBroken, eventData, bindings, async (expr, input, b) => {
          await breathe();
          let compiled;
          try {
            compiled = engine.compile(expr);
          } catch (err) {
            checkCompileError(expr, err);
            return;
          }
          // A filter: a boolean, or a typed error.
          try {
            const result = await engine.evaluateBoolean(expr, input, b);
            if (typeof result !== "boolean") fail(`evaluateBoolean gave ${typeof result}`);
          } catch (err) {
            if (!(err instanceof ExpressionError) || !evaluationCodes.has(err.code))
              fail(`evaluateBoolean rejected with ${describeError(err)}`);
          }
          // Where the fast path exists, the engine gives jsonata's own result or error.
          if (usesFastPath(compiled)) {
            const want = await oracle(jsonata(expr), input, b);
            const got = await settle(compiled.evaluate(input, b));
            if ("thrown" in got) return fail(`evaluate rejected with ${describeError(got.thrown)}`);
            if (
              got.ok !== want.ok ||
              (got.ok && want.ok && !sameValue(got.value, want.value)) ||
              (!got.ok && !want.ok && got.code !== want.code)
            )
              fail(`engine ${JSON.stringify(got)} but jsonata ${JSON.stringify(want)}`);
          }
        }),
        { seed: SEED, numRuns: RUNS.jsonata },
      );
    },
    TIMEOUT,
  );

  it(
    "expression fuzz - raw strings compile or fail with a typed error and a column",
    async () => {
      const engine = createExpressionEngine({ cacheSize: 0 });
      await fc.assert(
        fc.asyncProperty(rawExpr, eventData, async (expr, input) => {
          await breathe();
          try {
            engine.compile(expr);
          } catch (err) {
            checkCompileError(expr, err);
            return;
          }
          try {
            const result = await engine.evaluateBoolean(expr, input);
            if (typeof result !== "boolean") fail(`evaluateBoolean gave ${typeof result}`);
          } catch (err) {
            if (!(err instanceof ExpressionError) || !evaluationCodes.has(err.code))
              fail(`evaluateBoolean rejected with ${describeError(err)}`);
          }
        }),
        { seed: SEED + 1, numRuns: RUNS.raw },
      );
    },
    TIMEOUT,
  );

  it(
    "expression fuzz - pathological expressions stop at the engine's bounds",
    async () => {
      const engine = createExpressionEngine({ timeoutMs: 20, maxSequence: 100_000 });
      const pathological = fc.oneof(
        fc.integer({ min: 100_001, max: 100_000_000 }).map((n) => `[1..${n}]`),
        fc.integer({ min: 100_001, max: 10_000_000 }).map((n) => `$count([1..${n}])`),
        fc.integer({ min: 100_001, max: 10_000_000 }).map((n) => `$sum([1..${n}].($ * 2))`),
        fc.constantFrom(
          "($f := function($x) { $f($x) }; $f(1))",
          "($f := function($x) { 1 + $f($x) }; $f(1))",
          "($f := function($x) { $f($x + 1) }; $f(0))",
          "($f := function($x) { [$f($x), $f($x)] }; $f(0))",
          "($f := function($n) { $n > 0 ? $f($n - 1) + $f($n - 1) : 1 }; $f(40))",
          "[1..10000].[1..10000]",
          "$sort([1..100001])",
        ),
      );
      await fc.assert(
        fc.asyncProperty(pathological, async (expr) => {
          const err = await engine.evaluate(expr, {}).then(
            () => fail(`${expr} finished`),
            (e: unknown) => e,
          );
          if (!(err instanceof ExpressionError) || err.code !== ErrorCode.ExpressionLimit)
            fail(`${expr} was not stopped by a limit: ${describeError(err)}`);
        }),
        { seed: SEED + 2, numRuns: RUNS.pathological },
      );
    },
    TIMEOUT,
  );
});

// ---- conditions ----

const inputNames = fc.constantFrom("a", "b", "c", "order", "tick", "x_1", "in-put", "a.b", "_");
const { cond: conditionText } = fc.letrec<{ cond: string }>((tie) => ({
  cond: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    inputNames,
    inputNames,
    tie("cond").map((c) => `!${c}`),
    tie("cond").map((c) => `(${c})`),
    fc
      .tuple(tie("cond"), fc.constantFrom("&&", "||", " && ", " || "), tie("cond"))
      .map(([l, op, r]) => `${l}${op}${r}`),
  ),
}));
const conditionLike = fc.oneof(
  { weight: 4, arbitrary: conditionText },
  fc.tuple(conditionText, fc.nat(), fc.constantFrom(..."()!&|= \tab1-.$~")).map(([c, at, ch]) => {
    const i = at % (c.length + 1);
    return c.slice(0, i) + ch + c.slice(i);
  }),
  fc.string({ unit: fc.constantFrom(..."()!&| abc\n"), maxLength: 40 }),
  fc.string({ maxLength: 30 }),
  fc.integer({ min: 60, max: 5000 }).map((n) => `${"(".repeat(n)}a${")".repeat(n)}`),
  fc.integer({ min: 60, max: 5000 }).map((n) => `${"!".repeat(n)}a`),
  fc.integer({ min: 1000, max: 3000 }).map((n) => Array.from({ length: n }, () => "a").join(" && ")),
);

function equalAst(x: ConditionAst, y: ConditionAst): boolean {
  return JSON.stringify(x) === JSON.stringify(y);
}

describe("condition fuzz", () => {
  it(
    "condition fuzz - parse or a typed error with a column; what parses formats back to itself and evaluates to a boolean",
    async () => {
      await fc.assert(
        fc.asyncProperty(conditionLike, fc.func(fc.boolean()), fc.boolean(), async (text, truth, known) => {
          await breathe();
          let ast: ConditionAst;
          try {
            ast = parseCondition(text, known ? ["a", "b", "c", "order", "tick"] : undefined);
          } catch (err) {
            if (!(err instanceof ExpressionError)) return fail(`parseCondition threw ${describeError(err)}`);
            if (err.code !== ErrorCode.ConditionSyntax && err.code !== ErrorCode.ConditionUnknownInput)
              fail(`parseCondition failed with code ${err.code}`);
            if (err.code === ErrorCode.ConditionUnknownInput && !known) fail("unknown input without known inputs");
            const c = err.column;
            if (c === undefined || !Number.isInteger(c) || c < 1 || c > text.length + 1)
              fail(`condition error without a column in the text: ${String(c)}`);
            return;
          }
          const again = parseCondition(formatCondition(ast));
          if (!equalAst(again, ast)) fail(`formatCondition does not round-trip: ${formatCondition(ast)}`);
          const value = (n: string): boolean => truth(n);
          const result = evaluateCondition(ast, value);
          if (typeof result !== "boolean") fail("evaluateCondition gave a non-boolean");
          const why = satisfyingInputs(ast, value);
          if ((why !== undefined) !== result)
            fail(`satisfyingInputs ${JSON.stringify(why)} but the condition is ${result}`);
          if (why !== undefined && why.some((n) => !value(n))) fail("satisfyingInputs names an input that is false");
        }),
        { seed: SEED + 3, numRuns: RUNS.condition },
      );
    },
    TIMEOUT,
  );
});

describe("expression fuzz regressions", () => {
  it("expression fuzz regressions - an invalid regex literal is a syntax error at the regex's column", () => {
    const engine = createExpressionEngine();
    expect(() => engine.compile("data.data.a ~> /[0--9]+/")).toThrow(
      expect.objectContaining({ code: ErrorCode.ExpressionSyntax, column: 16 }),
    );
  });

  it("expression fuzz regressions - an error jsonata reports without a position gets column 1", () => {
    const engine = createExpressionEngine();
    expect(() => engine.compile("%")).toThrow(expect.objectContaining({ code: ErrorCode.ExpressionSyntax, column: 1 }));
  });

  it("expression fuzz regressions - the pathological examples of the brief are stopped by limits", async () => {
    const engine = createExpressionEngine();
    for (const expr of ["[1..10000000]", "($f := function($x) { $f($x) }; $f(1))"]) {
      await expect(engine.evaluate(expr, {})).rejects.toMatchObject({ code: ErrorCode.ExpressionLimit });
    }
  });
});
