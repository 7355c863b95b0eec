import { describe, expect, it } from "vitest";
import { ErrorCode, ExpressionError, OfEventsError } from "../src/errors.js";
import { createExpressionEngine, type ExpressionIssue } from "../src/expr/jsonata.js";

interface ErrorSpec {
  code: ErrorCode;
  column?: number;
  /** Substrings the message must contain. */
  message?: string[];
}

interface Row<I, O> {
  name: string;
  input: I;
  expected?: O;
  expectedError?: ErrorSpec;
}

interface EvalInput {
  expr: string;
  data?: unknown;
  bindings?: Record<string, unknown>;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

async function outcome(run: () => unknown): Promise<Outcome> {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    return { ok: false, error };
  }
}

function expectOutcome<O>(got: Outcome, row: Row<unknown, O>): void {
  if (row.expectedError === undefined) {
    if (!got.ok) throw got.error;
    expect(got.value).toEqual(row.expected);
    return;
  }
  expect(got.ok, "expected an error").toBe(false);
  if (got.ok) return;
  expect(got.error).toBeInstanceOf(ExpressionError);
  const error = got.error as ExpressionError;
  expect(error.code).toBe(row.expectedError.code);
  if (row.expectedError.column !== undefined) expect(error.column).toBe(row.expectedError.column);
  for (const part of row.expectedError.message ?? []) expect(error.message).toContain(part);
}

const engine = createExpressionEngine();

const filterRows: Row<EvalInput, boolean>[] = [
  {
    name: "true comparison",
    input: { expr: 'type = "order.created"', data: { type: "order.created" } },
    expected: true,
  },
  {
    name: "false comparison",
    input: { expr: 'type = "order.created"', data: { type: "order.paid" } },
    expected: false,
  },
  {
    name: "and/or over fields",
    input: { expr: "a > 1 and (b or c)", data: { a: 2, b: false, c: true } },
    expected: true,
  },
  { name: "missing field is false, not an error", input: { expr: "missing.field", data: { a: 1 } }, expected: false },
  { name: "comparison over a missing field is false", input: { expr: "missing > 3", data: {} }, expected: false },
  { name: "boolean field", input: { expr: "data.ok", data: { data: { ok: true } } }, expected: true },
  {
    name: "array predicate with $exists",
    input: { expr: "$exists(items[price > 10])", data: { items: [{ price: 5 }, { price: 20 }] } },
    expected: true,
  },
  {
    name: "binding visible as $name",
    input: { expr: "$inputs.a.data.x = 1", data: {}, bindings: { inputs: { a: { data: { x: 1 } } } } },
    expected: true,
  },
  { name: "literal true", input: { expr: "true", data: null }, expected: true },
  {
    name: "number result is a type error",
    input: { expr: "count", data: { count: 3 } },
    expectedError: {
      code: ErrorCode.ExpressionType,
      message: ['"count"', "must produce a boolean", "got a number (3)"],
    },
  },
  {
    name: "string result is a type error",
    input: { expr: "name", data: { name: "x" } },
    expectedError: { code: ErrorCode.ExpressionType, message: ['got a string ("x")'] },
  },
  {
    name: "null result is a type error",
    input: { expr: "v", data: { v: null } },
    expectedError: { code: ErrorCode.ExpressionType, message: ["got null"] },
  },
  {
    name: "object result is a type error",
    input: { expr: "v", data: { v: { a: 1 } } },
    expectedError: { code: ErrorCode.ExpressionType, message: ["got an object"] },
  },
  {
    name: "sequence of booleans is a type error",
    input: { expr: "items.ok", data: { items: [{ ok: true }, { ok: false }] } },
    expectedError: { code: ErrorCode.ExpressionType, message: ["got an array"] },
  },
  {
    name: "syntax error rejects",
    input: { expr: "a = ", data: {} },
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 5 },
  },
  {
    name: "runtime error rejects",
    input: { expr: 'a + "x" = 1', data: { a: 1 } },
    expectedError: { code: ErrorCode.ExpressionEvaluation, column: 3, message: ['"+" operator', "jsonata T2002"] },
  },
];

describe("jsonata filter", () => {
  it.each(filterRows)("jsonata filter - $name", async (row) => {
    const { expr, data, bindings } = row.input;
    expectOutcome(await outcome(() => engine.evaluateBoolean(expr, data, bindings)), row);
  });
});

const transformRows: Row<EvalInput, unknown>[] = [
  {
    name: "object constructor",
    input: {
      expr: '{ "id": order.id, "total": $sum(order.items.price) }',
      data: { order: { id: "o1", items: [{ price: 2 }, { price: 3 }] } },
    },
    expected: { id: "o1", total: 5 },
  },
  { name: "path over an array", input: { expr: "a.b", data: { a: [{ b: 1 }, { b: 2 }] } }, expected: [1, 2] },
  {
    name: "path inside an object constructor",
    input: { expr: '{ "xs": a.b, "n": 1 }', data: { a: [{ b: 1 }, { b: 2 }] } },
    expected: { xs: [1, 2], n: 1 },
  },
  { name: "no match stays undefined", input: { expr: "nothing.here", data: { a: 1 } }, expected: undefined },
  { name: "whole input", input: { expr: "$", data: { a: 1 } }, expected: { a: 1 } },
  { name: "array input", input: { expr: "$sum($)", data: [1, 2, 3] }, expected: 6 },
  { name: "string functions", input: { expr: "$uppercase(name) & '!'", data: { name: "ab" } }, expected: "AB!" },
  {
    name: "bindings of several inputs",
    input: {
      expr: "$inputs.a.data.x + $inputs.b.data.x",
      data: null,
      bindings: { inputs: { a: { data: { x: 1 } }, b: { data: { x: 2 } } } },
    },
    expected: 3,
  },
  { name: "unknown binding is undefined", input: { expr: "$nope", data: {} }, expected: undefined },
  {
    name: "local variables and functions",
    input: { expr: "($double := function($v) { $v * 2 }; $double(n))", data: { n: 21 } },
    expected: 42,
  },
  {
    name: "calling a non-function is an evaluation error",
    input: { expr: "$nope()", data: {} },
    expectedError: { code: ErrorCode.ExpressionEvaluation, message: ['"$nope()"', "non-function", "jsonata T1006"] },
  },
  {
    name: "D-code runtime error is an evaluation error",
    input: { expr: "$string(1/0)", data: {} },
    expectedError: { code: ErrorCode.ExpressionEvaluation, message: ["Infinity", "jsonata D3001"] },
  },
  {
    name: "error thrown by a bound function is an evaluation error",
    input: {
      expr: "$boom()",
      data: {},
      bindings: {
        boom: () => {
          throw new Error("kaput");
        },
      },
    },
    expectedError: { code: ErrorCode.ExpressionEvaluation, message: ["kaput"] },
  },
];

describe("jsonata transform", () => {
  it.each(transformRows)("jsonata transform - $name", async (row) => {
    const { expr, data, bindings } = row.input;
    expectOutcome(await outcome(() => engine.compile(expr).evaluate(data, bindings)), row);
  });
});

const syntaxRows: Row<string, never>[] = [
  {
    name: "unexpected end",
    input: "a +",
    expectedError: {
      code: ErrorCode.ExpressionSyntax,
      column: 4,
      message: ['"a +"', "column 4", "unexpected end of expression", "S0207"],
    },
  },
  {
    name: "unclosed parenthesis",
    input: "(a",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 3, message: ['expected ")"'] },
  },
  {
    name: "stray bracket",
    input: "a]",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 2, message: ['"]"'] },
  },
  {
    name: "operator misplaced",
    input: "a ++ b",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 4, message: ['"+" cannot be used as a unary operator'] },
  },
  {
    name: "&& gets a hint",
    input: "a && b",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 4, message: ['JSONata writes "and" and "or"'] },
  },
  {
    name: "|| gets a hint",
    input: "a || b",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 3, message: ['JSONata writes "and" and "or"'] },
  },
  {
    name: "== gets a hint",
    input: "a == 1",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 4, message: ['compares with "="'] },
  },
  { name: "empty", input: "", expectedError: { code: ErrorCode.ExpressionSyntax, column: 1, message: ["empty"] } },
  {
    name: "whitespace only",
    input: "  \n ",
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 1, message: ["empty"] },
  },
  {
    name: "multi-line reports line and column",
    input: '{\n  "a": x +\n}',
    expectedError: { code: ErrorCode.ExpressionSyntax, column: 14, message: ["line 3, column 1 (character 14)"] },
  },
  {
    name: "nesting too deep to parse is a limit",
    input: `${"(".repeat(20_000)}1${")".repeat(20_000)}`,
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["nested too deeply"] },
  },
];

describe("jsonata results", () => {
  it("jsonata results - sequences come back as plain arrays, untouched input parts are shared", async () => {
    const data = { a: [{ b: 1 }, { b: 2 }], keep: { deep: [1, 2] } };
    const result = (await engine.evaluate('{ "xs": a.b, "keep": keep }', data)) as { xs: number[]; keep: unknown };
    expect(Object.getOwnPropertyNames(result.xs)).toEqual(["0", "1", "length"]);
    expect(result.keep).toBe(data.keep);
    const top = (await engine.evaluate("a.b", data)) as number[];
    expect(Object.getOwnPropertyNames(top)).toEqual(["0", "1", "length"]);
    top.push(3);
    expect(top).toEqual([1, 2, 3]);
  });
});

describe("jsonata compile", () => {
  it.each(syntaxRows)("jsonata compile - $name", async (row) => {
    expectOutcome(await outcome(() => engine.compile(row.input)), row);
  });

  it("jsonata compile - the error keeps the expression and the jsonata cause", () => {
    const got = outcome(() => engine.compile("a +"));
    return got.then((o) => {
      expect(o.ok).toBe(false);
      if (o.ok) return;
      expect(o.error).toMatchObject({
        name: "ExpressionError",
        expression: "a +",
        retriable: false,
        cause: { code: "S0207" },
      });
    });
  });
});

const validateRows: Row<{ kind: "filter" | "transform"; expr: string }, ExpressionIssue[]>[] = [
  { name: "valid filter", input: { kind: "filter", expr: 'type = "a" and data.n > 1' }, expected: [] },
  { name: "valid filter over a path", input: { kind: "filter", expr: "data.enabled" }, expected: [] },
  {
    name: "filter syntax error",
    input: { kind: "filter", expr: "a =" },
    expected: [
      {
        code: ErrorCode.ExpressionSyntax,
        column: 4,
        message: 'syntax error at column 4 in "a =": unexpected end of expression (jsonata S0207)',
      },
    ],
  },
  {
    name: "filter that is a string literal",
    input: { kind: "filter", expr: '"yes"' },
    expected: [
      {
        code: ErrorCode.ExpressionType,
        column: 1,
        message: 'filter "\\"yes\\"" always produces a string, never a boolean',
      },
    ],
  },
  {
    name: "filter that joins strings with &",
    input: { kind: "filter", expr: "(a = 1) & (b = 2)" },
    expected: [
      {
        code: ErrorCode.ExpressionType,
        column: 1,
        message:
          'filter "(a = 1) & (b = 2)" always produces a string, never a boolean; "&" joins strings in JSONata, use "and" to combine conditions',
      },
    ],
  },
  {
    name: "filter that is arithmetic",
    input: { kind: "filter", expr: "price * 2" },
    expected: [
      {
        code: ErrorCode.ExpressionType,
        column: 1,
        message: 'filter "price * 2" always produces a number, never a boolean',
      },
    ],
  },
  {
    name: "filter block ending in an object",
    input: { kind: "filter", expr: '($x := 1; { "a": $x })' },
    expected: [
      {
        code: ErrorCode.ExpressionType,
        column: 1,
        message: 'filter "($x := 1; { \\"a\\": $x })" always produces an object, never a boolean',
      },
    ],
  },
  { name: "valid transform", input: { kind: "transform", expr: '{ "id": id }' }, expected: [] },
  { name: "transform may be any type", input: { kind: "transform", expr: '"constant"' }, expected: [] },
  {
    name: "transform syntax error",
    input: { kind: "transform", expr: "{ id: }" },
    expected: [
      {
        code: ErrorCode.ExpressionSyntax,
        column: 7,
        message:
          'syntax error at column 7 in "{ id: }": the symbol "}" cannot be used as a unary operator (jsonata S0211)',
      },
    ],
  },
  {
    name: "empty transform",
    input: { kind: "transform", expr: "" },
    expected: [{ code: ErrorCode.ExpressionSyntax, column: 1, message: "expression is empty" }],
  },
];

describe("jsonata validate", () => {
  it.each(validateRows)("jsonata validate - $name", (row) => {
    const { kind, expr } = row.input;
    const issues = kind === "filter" ? engine.validateFilter(expr) : engine.validateTransform(expr);
    expect(issues).toEqual(row.expected);
  });
});

const limitRows: Row<string, never>[] = [
  {
    name: "self-recursive function (tail call) hits the timeout",
    input: "($f := function($x){ $f($x) }; $f(1))",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["exceeded 50 ms"] },
  },
  {
    name: "non-tail recursion hits the depth bound",
    input: "($f := function($x){ 1 + $f($x) }; $f(1))",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["exceeded depth 200"] },
  },
  {
    name: "runaway loop over a large range hits the sequence bound",
    input: "[1..10000000].($ * 2) ~> $sum()",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["sequence of 10000000 items", "limit of 1000000"] },
  },
  {
    name: "slow loop within the sequence bound hits the timeout",
    input: "[1..1000000].($ * 2) ~> $sum()",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["exceeded 50 ms"] },
  },
  {
    name: "countdown recursion hits the timeout",
    input: "($loop := function($n){ $n = 0 ? 0 : $loop($n - 1) }; $loop(100000000))",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["exceeded 50 ms"] },
  },
  {
    name: "range beyond jsonata's own 1e7 limit",
    input: "[1..100000000]",
    expectedError: { code: ErrorCode.ExpressionLimit, message: ["limit of 10000000"] },
  },
];

describe("jsonata limits", () => {
  const limited = createExpressionEngine({ timeoutMs: 50 });

  it.each(limitRows)("jsonata limits - $name, then the engine keeps working", async (row) => {
    const started = performance.now();
    const got = await outcome(() => limited.evaluate(row.input, {}));
    // The bound is the timeout plus one uninterruptible step; generous for slow machines.
    expect(performance.now() - started).toBeLessThan(2000);
    expectOutcome(got, row);
    await expect(limited.evaluate("1 + 1", {})).resolves.toBe(2);
    // The same compiled expression fails the same way again: no state survives the failure.
    expectOutcome(await outcome(() => limited.evaluate(row.input, {})), row);
  });

  it("jsonata limits - a bound function that never settles fails that evaluation only", async () => {
    const never = () => new Promise(() => {});
    await expect(limited.evaluate("$wait()", {}, { wait: never })).rejects.toMatchObject({
      code: ErrorCode.ExpressionLimit,
      message: expect.stringContaining("exceeded 50 ms"),
    });
    await expect(limited.evaluate("2 * 21", {})).resolves.toBe(42);
  });

  it("jsonata limits - depth bound is configurable", async () => {
    const deep = createExpressionEngine({ maxDepth: 2000 });
    const fact = "($f := function($n){ $n <= 1 ? 1 : $n * $f($n - 1) }; $f(100))";
    await expect(engine.evaluate(fact, {})).rejects.toMatchObject({ code: ErrorCode.ExpressionLimit });
    await expect(deep.evaluate(fact, {})).resolves.toBeGreaterThan(1e157);
  });
});

describe("jsonata state", () => {
  it("jsonata state - bindings of one call are not visible to the next", async () => {
    const compiled = engine.compile("$x");
    await expect(compiled.evaluate({}, { x: 1 })).resolves.toBe(1);
    await expect(compiled.evaluate({})).resolves.toBeUndefined();
    await expect(compiled.evaluate({}, { x: 2 })).resolves.toBe(2);
  });

  it("jsonata state - variables assigned by an expression do not survive the call", async () => {
    const compiled = engine.compile('$exists($y) ? "leaked" : ($y := 1; $y)');
    await expect(compiled.evaluate({})).resolves.toBe(1);
    await expect(compiled.evaluate({})).resolves.toBe(1);
    const top = engine.compile("[$exists($z), $z := 1]");
    await expect(top.evaluate({})).resolves.toEqual([false, 1]);
    await expect(top.evaluate({})).resolves.toEqual([false, 1]);
  });

  it("jsonata state - changing the bindings object after the call does not change the result", async () => {
    const bindings: Record<string, unknown> = { x: "before" };
    const pending = Promise.all([
      engine.evaluate("[1..2000].($ * 2) ~> $sum()", {}),
      engine.evaluate("$x", {}, bindings),
    ]);
    bindings["x"] = "after";
    await expect(pending).resolves.toEqual([4002000, "before"]);
  });

  it("jsonata state - concurrent evaluations of one compiled expression each see their own input and bindings", async () => {
    const compiled = engine.compile("($wait := [1..200].($ * 2) ~> $sum(); { 'id': id, 'tag': $tag })");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => compiled.evaluate({ id: i }, { tag: `t${i}` })),
    );
    expect(results).toEqual(Array.from({ length: 50 }, (_, i) => ({ id: i, tag: `t${i}` })));
  });

  it("jsonata state - concurrent evaluations each get the whole time budget", async () => {
    // Each evaluation takes a few ms; if they interleaved, each one's clock would also run while
    // the others work and together they would pass the 100 ms budget.
    const compiled = engine.compile("[1..3000].($ * 2) ~> $sum()");
    const single = performance.now();
    await compiled.evaluate({});
    const each = performance.now() - single;
    const count = Math.min(400, Math.ceil(300 / Math.max(each, 0.5)));
    const results = await Promise.allSettled(Array.from({ length: count }, () => compiled.evaluate({})));
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
  });
});

describe("jsonata cache", () => {
  it("jsonata cache - compiling the same text returns the same compiled object", () => {
    const local = createExpressionEngine();
    const first = local.compile("a.b");
    expect(local.compile("a.b")).toBe(first);
    expect(first.source).toBe("a.b");
    expect(local.compile("a.c")).not.toBe(first);
  });

  it("jsonata cache - least recently used entries are evicted beyond cacheSize", () => {
    const local = createExpressionEngine({ cacheSize: 2 });
    const a = local.compile("a");
    const b = local.compile("b");
    expect(local.compile("a")).toBe(a); // a is now the most recently used
    local.compile("c"); // evicts b
    expect(local.compile("a")).toBe(a);
    expect(local.compile("b")).not.toBe(b);
  });

  it("jsonata cache - cacheSize 0 compiles every time", () => {
    const local = createExpressionEngine({ cacheSize: 0 });
    expect(local.compile("a")).not.toBe(local.compile("a"));
  });

  it("jsonata cache - a syntax error is thrown again on every compile", () => {
    const local = createExpressionEngine();
    expect(() => local.compile("a +")).toThrow(ExpressionError);
    expect(() => local.compile("a +")).toThrow(ExpressionError);
  });

  it("jsonata cache - compiled expressions are frozen", () => {
    const compiled = engine.compile("a");
    expect(Object.isFrozen(compiled)).toBe(true);
    expect(Object.keys(compiled).sort()).toEqual(["evaluate", "source"]);
  });
});

const optionRows: Row<Record<string, number>, never>[] = [
  {
    name: "timeoutMs 0",
    input: { timeoutMs: 0 },
    expectedError: { code: ErrorCode.Config, message: ["timeoutMs must be a positive number, got 0"] },
  },
  {
    name: "negative maxDepth",
    input: { maxDepth: -1 },
    expectedError: { code: ErrorCode.Config, message: ["maxDepth"] },
  },
  {
    name: "fractional maxDepth",
    input: { maxDepth: 1.5 },
    expectedError: { code: ErrorCode.Config, message: ["maxDepth must be a positive integer"] },
  },
  {
    name: "NaN cacheSize",
    input: { cacheSize: Number.NaN },
    expectedError: { code: ErrorCode.Config, message: ["cacheSize must be zero or a positive integer"] },
  },
  {
    name: "zero maxSequence",
    input: { maxSequence: 0 },
    expectedError: { code: ErrorCode.Config, message: ["maxSequence"] },
  },
];

describe("jsonata options", () => {
  it.each(optionRows)("jsonata options - $name is rejected", (row) => {
    let caught: unknown;
    try {
      createExpressionEngine(row.input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(OfEventsError);
    expect(caught).toMatchObject({ code: row.expectedError?.code });
    for (const part of row.expectedError?.message ?? []) expect((caught as Error).message).toContain(part);
  });
});
