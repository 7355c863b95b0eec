import { describe, expect, it } from "vitest";
import { ErrorCode, ExpressionError } from "../src/errors.js";
import {
  type ConditionAst,
  conditionInputs,
  evaluateCondition,
  formatCondition,
  MAX_CONDITION_LENGTH,
  MAX_CONDITION_NESTING,
  parseCondition,
  positiveInputs,
  satisfyingInputs,
} from "../src/expr/condition.js";

interface ErrorSpec {
  code: ErrorCode;
  column: number;
  /** The whole message. */
  message: string;
}

interface Row<I, O> {
  name: string;
  input: I;
  expected?: O;
  expectedError?: ErrorSpec;
}

const input = (name: string): ConditionAst => ({ type: "input", name });
const not = (operand: ConditionAst): ConditionAst => ({ type: "not", operand });
const and = (left: ConditionAst, right: ConditionAst): ConditionAst => ({ type: "and", left, right });
const or = (left: ConditionAst, right: ConditionAst): ConditionAst => ({ type: "or", left, right });
const [a, b, c, d] = [input("a"), input("b"), input("c"), input("d")];

/** Truth from the set of names that are true. */
const truthOf = (trueNames: string) => {
  const set = new Set(trueNames.split(/\s+/).filter(Boolean));
  return (name: string) => set.has(name);
};

const parseRows: Row<string, ConditionAst>[] = [
  { name: "single input", input: "a", expected: a },
  { name: "&& binds tighter than ||", input: "a || b && c", expected: or(a, and(b, c)) },
  { name: "&& binds tighter than || on the left too", input: "a && b || c", expected: or(and(a, b), c) },
  { name: "! binds tighter than &&", input: "!a && b", expected: and(not(a), b) },
  { name: "&& is left-associative", input: "a && b && c", expected: and(and(a, b), c) },
  { name: "|| is left-associative", input: "a || b || c", expected: or(or(a, b), c) },
  { name: "parentheses override precedence", input: "(a || b) && c", expected: and(or(a, b), c) },
  { name: "parentheses on the right are kept in the tree", input: "a && (b && c)", expected: and(a, and(b, c)) },
  {
    name: "Argo example",
    input: "(dep01 || dep02) && dep03",
    expected: and(or(input("dep01"), input("dep02")), input("dep03")),
  },
  { name: "OpenFunction example", input: "eventA && eventB", expected: and(input("eventA"), input("eventB")) },
  { name: "double negation", input: "!!a", expected: not(not(a)) },
  { name: "negated group", input: "!(a || b)", expected: not(or(a, b)) },
  { name: "redundant parentheses vanish", input: "((a))", expected: a },
  { name: "whitespace is optional", input: "a&&!b||c", expected: or(and(a, not(b)), c) },
  { name: "tabs and newlines are whitespace", input: "\ta &&\n  b ", expected: and(a, b) },
  {
    name: "names with digits, _, - and .",
    input: "_in1 && kafka-orders && http.v2",
    expected: and(and(input("_in1"), input("kafka-orders")), input("http.v2")),
  },
  { name: "names are case-sensitive", input: "A && a", expected: and(input("A"), a) },
  { name: "not alone is an input name", input: "not && a", expected: and(input("not"), a) },
  { name: "and alone is an input name", input: "and", expected: input("and") },
];

describe("condition parser", () => {
  it.each(parseRows)("condition parser - $name", (row) => {
    expect(parseCondition(row.input)).toEqual(row.expected);
  });
});

const syntaxError = (column: number, message: string): ErrorSpec => ({
  code: ErrorCode.ConditionSyntax,
  column,
  message,
});

const errorRows: Row<{ text: string; known?: readonly string[] }, never>[] = [
  {
    name: "empty",
    input: { text: "" },
    expectedError: syntaxError(1, "empty condition: expected input names joined by &&, || or !"),
  },
  {
    name: "whitespace only",
    input: { text: "   " },
    expectedError: syntaxError(1, "empty condition: expected input names joined by &&, || or !"),
  },
  {
    name: "operand missing before )",
    input: { text: "a && )" },
    expectedError: syntaxError(6, 'unexpected ")" at column 6 in "a && )": expected an input name, "!" or "("'),
  },
  {
    name: "operand missing at the end",
    input: { text: "a &&" },
    expectedError: syntaxError(5, 'expected an input name at column 5 in "a &&", got the end of the condition'),
  },
  {
    name: "! at the end",
    input: { text: "a && !" },
    expectedError: syntaxError(7, 'expected an input name at column 7 in "a && !", got the end of the condition'),
  },
  {
    name: "leading operator",
    input: { text: "|| a" },
    expectedError: syntaxError(1, 'unexpected "||" at column 1 in "|| a": expected an input name, "!" or "("'),
  },
  {
    name: "two operators",
    input: { text: "a && || b" },
    expectedError: syntaxError(6, 'unexpected "||" at column 6 in "a && || b": expected an input name, "!" or "("'),
  },
  {
    name: "empty parentheses",
    input: { text: "()" },
    expectedError: syntaxError(2, 'unexpected ")" at column 2 in "()": expected an input name, "!" or "("'),
  },
  {
    name: "unmatched )",
    input: { text: "a)" },
    expectedError: syntaxError(2, 'unexpected ")" at column 2 in "a)": no "(" to close'),
  },
  {
    name: "unclosed (",
    input: { text: "(a && b" },
    expectedError: syntaxError(1, 'unclosed "(" opened at column 1 in "(a && b"'),
  },
  {
    name: "inner unclosed (",
    input: { text: "a && (b || (c)" },
    expectedError: syntaxError(6, 'unclosed "(" opened at column 6 in "a && (b || (c)"'),
  },
  {
    name: "missing operator",
    input: { text: "a b" },
    expectedError: syntaxError(3, 'unexpected input name "b" at column 3 in "a b": expected && or || before it'),
  },
  {
    name: "missing operator before (",
    input: { text: "a (b)" },
    expectedError: syntaxError(3, 'unexpected "(" at column 3 in "a (b)": expected && or || before it'),
  },
  {
    name: "missing operator before !",
    input: { text: "a !b" },
    expectedError: syntaxError(3, 'unexpected "!" at column 3 in "a !b": expected && or || before it'),
  },
  {
    name: "missing operator inside ()",
    input: { text: "(a b)" },
    expectedError: syntaxError(4, 'unexpected input name "b" at column 4 in "(a b)": expected && or || before it'),
  },
  {
    name: "single &",
    input: { text: "a & b" },
    expectedError: syntaxError(3, 'unexpected "&" at column 3 in "a & b": use && instead of &'),
  },
  {
    name: "single |",
    input: { text: "a | b" },
    expectedError: syntaxError(3, 'unexpected "|" at column 3 in "a | b": use || instead of |'),
  },
  {
    name: "triple &",
    input: { text: "a &&& b" },
    expectedError: syntaxError(5, 'unexpected "&" at column 5 in "a &&& b": use && instead of &'),
  },
  {
    name: "word and",
    input: { text: "a and b" },
    expectedError: syntaxError(3, 'unexpected "and" at column 3 in "a and b": use && instead of and'),
  },
  {
    name: "word OR",
    input: { text: "a OR b" },
    expectedError: syntaxError(3, 'unexpected "OR" at column 3 in "a OR b": use || instead of OR'),
  },
  {
    name: "word not",
    input: { text: "a && not b" },
    expectedError: syntaxError(6, 'unexpected "not" at column 6 in "a && not b": use ! instead of not'),
  },
  {
    name: "name starting with a digit",
    input: { text: "1a" },
    expectedError: syntaxError(1, 'unexpected "1" at column 1 in "1a": an input name starts with a letter or "_"'),
  },
  {
    name: "name starting with -",
    input: { text: "a && -b" },
    expectedError: syntaxError(6, 'unexpected "-" at column 6 in "a && -b": an input name starts with a letter or "_"'),
  },
  {
    name: "other character",
    input: { text: "a == b" },
    expectedError: syntaxError(3, 'unexpected character "=" at column 3 in "a == b"'),
  },
  {
    name: "non-ASCII letter",
    input: { text: "a && é" },
    expectedError: syntaxError(6, 'unexpected character "é" at column 6 in "a && é"'),
  },
  {
    name: "the leftmost error wins",
    input: { text: "a && ) & b" },
    expectedError: syntaxError(6, 'unexpected ")" at column 6 in "a && ) & b": expected an input name, "!" or "("'),
  },
  {
    name: "syntax errors come before unknown inputs",
    input: { text: "x &&", known: ["a"] },
    expectedError: syntaxError(5, 'expected an input name at column 5 in "x &&", got the end of the condition'),
  },
  {
    name: "nesting too deep",
    input: { text: `${"(".repeat(MAX_CONDITION_NESTING + 1)}a${")".repeat(MAX_CONDITION_NESTING + 1)}` },
    expectedError: syntaxError(
      MAX_CONDITION_NESTING + 1,
      `condition nests "(" and "!" more than ${MAX_CONDITION_NESTING} deep at column ${MAX_CONDITION_NESTING + 1} in "${"(".repeat(MAX_CONDITION_NESTING + 1)}a${")".repeat(120 - MAX_CONDITION_NESTING - 2)}…"`,
    ),
  },
  {
    name: "too long",
    input: { text: `a${" ".repeat(MAX_CONDITION_LENGTH)}` },
    expectedError: syntaxError(
      MAX_CONDITION_LENGTH + 1,
      `condition is ${MAX_CONDITION_LENGTH + 1} characters long, more than the limit of ${MAX_CONDITION_LENGTH}`,
    ),
  },
  {
    name: "one unknown input",
    input: { text: "a && c", known: ["a", "b"] },
    expectedError: {
      code: ErrorCode.ConditionUnknownInput,
      column: 6,
      message: 'unknown input "c" in "a && c"; known inputs: "a", "b"',
    },
  },
  {
    name: "all unknown inputs in one message, column of the first",
    input: { text: "a && (d || c) && !d", known: ["a", "b"] },
    expectedError: {
      code: ErrorCode.ConditionUnknownInput,
      column: 7,
      message: 'unknown inputs "d", "c" in "a && (d || c) && !d"; known inputs: "a", "b"',
    },
  },
  {
    name: "no known inputs",
    input: { text: "a", known: [] },
    expectedError: {
      code: ErrorCode.ConditionUnknownInput,
      column: 1,
      message: 'unknown input "a" in "a"; no inputs are defined',
    },
  },
];

describe("condition parser errors", () => {
  it.each(errorRows)("condition parser - rejects $name", (row) => {
    let caught: unknown;
    try {
      parseCondition(row.input.text, row.input.known);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ExpressionError);
    expect(caught).toMatchObject({ ...row.expectedError, expression: row.input.text });
  });

  it("condition parser - known inputs that are all used parse", () => {
    expect(parseCondition("a && !b", ["a", "b", "c"])).toEqual(and(a, not(b)));
  });

  it("condition parser - a long && chain within the length limit parses and walks", () => {
    const names = Array.from({ length: 500 }, (_, i) => `i${i}`);
    const ast = parseCondition(names.join("&&"));
    expect(conditionInputs(ast)).toHaveLength(500);
    expect(evaluateCondition(ast, () => true)).toBe(true);
    expect(satisfyingInputs(ast, () => true)).toHaveLength(500);
    expect(parseCondition(formatCondition(ast))).toEqual(ast);
  });
});

const evaluateRows: Row<{ text: string; trueNames: string }, boolean>[] = [
  ...(
    [
      ["", false],
      ["a", false],
      ["b", false],
      ["a b", true],
    ] as const
  ).map(([trueNames, expected]) => ({
    name: `a && b with {${trueNames}}`,
    input: { text: "a && b", trueNames },
    expected,
  })),
  ...(
    [
      ["", false],
      ["a", true],
      ["b", true],
      ["a b", true],
    ] as const
  ).map(([trueNames, expected]) => ({
    name: `a || b with {${trueNames}}`,
    input: { text: "a || b", trueNames },
    expected,
  })),
  { name: "!a with {}", input: { text: "!a", trueNames: "" }, expected: true },
  { name: "!a with {a}", input: { text: "!a", trueNames: "a" }, expected: false },
  { name: "!!a with {a}", input: { text: "!!a", trueNames: "a" }, expected: true },
  { name: "a || b && c with {a} (precedence)", input: { text: "a || b && c", trueNames: "a" }, expected: true },
  { name: "(a || b) && c with {a}", input: { text: "(a || b) && c", trueNames: "a" }, expected: false },
  { name: "(a || b) && c with {b c}", input: { text: "(a || b) && c", trueNames: "b c" }, expected: true },
  { name: "a && !b with {a}", input: { text: "a && !b", trueNames: "a" }, expected: true },
  { name: "a && !b with {a b}", input: { text: "a && !b", trueNames: "a b" }, expected: false },
  { name: "!(a && b) with {a}", input: { text: "!(a && b)", trueNames: "a" }, expected: true },
];

describe("condition evaluate", () => {
  it.each(evaluateRows)("condition evaluate - $name", (row) => {
    expect(evaluateCondition(parseCondition(row.input.text), truthOf(row.input.trueNames))).toBe(row.expected);
  });

  it("condition evaluate - && and || short-circuit", () => {
    const asked: string[] = [];
    const truth = (name: string) => {
      asked.push(name);
      return name === "a";
    };
    evaluateCondition(parseCondition("b && c || a || d"), truth);
    expect(asked).toEqual(["b", "a"]);
  });
});

const satisfyingRows: Row<{ text: string; trueNames: string }, string[] | undefined>[] = [
  { name: "a && b takes both", input: { text: "a && b", trueNames: "a b" }, expected: ["a", "b"] },
  { name: "a || b with only a true takes a", input: { text: "a || b", trueNames: "a" }, expected: ["a"] },
  { name: "a || b with only b true takes b", input: { text: "a || b", trueNames: "b" }, expected: ["b"] },
  {
    name: "a || b with both true takes the first branch",
    input: { text: "a || b", trueNames: "a b" },
    expected: ["a"],
  },
  { name: "a && !b takes a", input: { text: "a && !b", trueNames: "a" }, expected: ["a"] },
  { name: "!a alone takes nothing", input: { text: "!a", trueNames: "" }, expected: [] },
  { name: "!!a takes a", input: { text: "!!a", trueNames: "a" }, expected: ["a"] },
  { name: "!(!a || c) takes a", input: { text: "!(!a || c)", trueNames: "a" }, expected: ["a"] },
  { name: "(a || b) && c with {b c}", input: { text: "(a || b) && c", trueNames: "b c" }, expected: ["b", "c"] },
  {
    name: "(a || b) && (c || d) with all true",
    input: { text: "(a || b) && (c || d)", trueNames: "a b c d" },
    expected: ["a", "c"],
  },
  { name: "a repeated is listed once", input: { text: "a && (a || b)", trueNames: "a b" }, expected: ["a"] },
  { name: "false condition gives undefined", input: { text: "a && b", trueNames: "a" }, expected: undefined },
  { name: "false negation gives undefined", input: { text: "a && !b", trueNames: "a b" }, expected: undefined },
];

describe("condition satisfyingInputs", () => {
  it.each(satisfyingRows)("condition satisfyingInputs - $name", (row) => {
    const ast = parseCondition(row.input.text);
    const truth = truthOf(row.input.trueNames);
    expect(satisfyingInputs(ast, truth)).toEqual(row.expected);
    expect(satisfyingInputs(ast, truth) !== undefined).toBe(evaluateCondition(ast, truth));
  });

  it("condition satisfyingInputs - asks truth once per name", () => {
    const asked: string[] = [];
    satisfyingInputs(parseCondition("!(!a || c) && a && !c"), (name) => {
      asked.push(name);
      return name === "a";
    });
    expect(asked).toEqual(["a", "c"]);
  });
});

const inputsRows: Row<string, { all: string[]; positive: string[] }>[] = [
  {
    name: "order of first appearance",
    input: "c && (a || c) && b",
    expected: { all: ["c", "a", "b"], positive: ["c", "a", "b"] },
  },
  { name: "negated input is not positive", input: "a && !b", expected: { all: ["a", "b"], positive: ["a"] } },
  { name: "double negation is positive", input: "!!a && !b", expected: { all: ["a", "b"], positive: ["a"] } },
  { name: "negated group flips its inputs", input: "!(a || !b)", expected: { all: ["a", "b"], positive: ["b"] } },
  { name: "an input both negated and not is positive", input: "!a || a", expected: { all: ["a"], positive: ["a"] } },
];

describe("condition inputs", () => {
  it.each(inputsRows)("condition inputs - $name", (row) => {
    const ast = parseCondition(row.input);
    expect({ all: conditionInputs(ast), positive: positiveInputs(ast) }).toEqual(row.expected);
  });
});

const formatRows: Row<string, string>[] = [
  { name: "canonical spacing", input: "a&&b||!c", expected: "a && b || !c" },
  { name: "keeps needed parentheses", input: "(a || b) && c", expected: "(a || b) && c" },
  { name: "drops redundant parentheses", input: "((a && b)) || (c)", expected: "a && b || c" },
  { name: "right-nested same operator keeps parentheses", input: "a && (b && c)", expected: "a && (b && c)" },
  { name: "left-nested same operator drops them", input: "(a || b) || c", expected: "a || b || c" },
  { name: "negated group", input: "!(a && b)", expected: "!(a && b)" },
  { name: "double negation", input: "! ! a", expected: "!!a" },
  { name: "negated negated group", input: "!!(a || b)", expected: "!!(a || b)" },
  { name: "Argo example", input: "(dep01||dep02)&&dep03", expected: "(dep01 || dep02) && dep03" },
];

describe("condition format", () => {
  it.each(formatRows)("condition format - $name", (row) => {
    const ast = parseCondition(row.input);
    const text = formatCondition(ast);
    expect(text).toBe(row.expected);
    expect(parseCondition(text)).toEqual(ast);
  });

  const trees: Row<ConditionAst, ConditionAst>[] = [
    and(or(a, b), or(c, d)),
    or(a, and(b, or(c, not(d)))),
    and(a, and(b, and(c, d))),
    or(or(a, b), or(c, d)),
    not(and(not(or(a, b)), not(c))),
    not(not(not(a))),
    and(not(a), or(not(b), and(c, not(not(d))))),
  ].map((tree) => ({ name: formatCondition(tree), input: tree, expected: tree }));

  it.each(trees)("condition format - round-trips $name", (row) => {
    expect(parseCondition(formatCondition(row.input))).toEqual(row.expected);
  });
});
