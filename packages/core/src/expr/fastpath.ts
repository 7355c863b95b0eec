/**
 * A synchronous fast path for the common subset of JSONata: field paths, literals, comparisons,
 * arithmetic, `and`/`or`, `in` over an array literal, `&`, `?:`, a few built-in functions and
 * regular-expression tests in a boolean position.
 *
 * jsonata evaluates every node through an async function, so even `data.n % 2 = 0` costs several
 * microseconds and a trail of promises. `compileFastPath` walks jsonata's AST once and, when every
 * node is in the subset, builds plain closures that give exactly what jsonata gives. Whatever the
 * closures cannot reproduce cheaply for a given input (a path that meets an array, so jsonata's
 * sequence semantics; a value that makes jsonata throw, so its error; a built-in shadowed by a
 * binding; an absent binding) makes them return `FALLBACK`, and the caller evaluates the same
 * input with jsonata. The closures never throw on their own account (a getter in the input may)
 * and cannot loop or recurse, so they need none of the interpreter's time or depth bounds.
 *
 * The semantics reproduced here are those of jsonata 2.2 (jsonata.js: `evaluatePath`, `lookup`,
 * `evaluateNumericExpression`, `evaluateEqualityExpression`, `evaluateComparisonExpression`,
 * `evaluateIncludesExpression`, `evaluateBooleanExpression`, `boolean`, `string`); the
 * differential test (test/jsonata-fastpath.test.ts) holds them to the library.
 */

/** Returned by a fast path when jsonata itself must evaluate this input. */
export const FALLBACK: unique symbol = Symbol("jsonata fallback");

export type Bindings = Readonly<Record<string, unknown>> | undefined;

/** `(input, bindings) => result`, or `FALLBACK` when jsonata must evaluate this input. */
export type FastPath = (input: unknown, bindings: Bindings) => unknown;

/** A compiled sub-expression: its value, or `FALLBACK`. */
type Ev = (input: unknown, bindings: Bindings) => unknown;

/** A compiled sub-expression's effective boolean value (jsonata's `$boolean`): `true`, `false`, `undefined` or `FALLBACK`. */
type Truth = (input: unknown, bindings: Bindings) => boolean | undefined | typeof FALLBACK;

/** The parts of a jsonata AST node read here; every other key makes the node unsupported. */
interface Node {
  type: string;
  value?: unknown;
  position?: unknown;
  steps?: unknown;
  lhs?: unknown;
  rhs?: unknown;
  expression?: unknown;
  expressions?: unknown;
  condition?: unknown;
  then?: unknown;
  else?: unknown;
  arguments?: unknown;
  procedure?: unknown;
}

/**
 * The keys each supported node type may have. A key outside the list (`predicate`, `stages`,
 * `group`, `focus`, `index`, `tuple`, `keepArray`, `keepSingletonArray`, `consarray`, ...) means
 * a feature outside the subset.
 */
const allowedKeys: Readonly<Record<string, readonly string[]>> = {
  string: ["type", "value", "position"],
  number: ["type", "value", "position"],
  value: ["type", "value", "position"],
  name: ["type", "value", "position"],
  variable: ["type", "value", "position"],
  regex: ["type", "value", "position"],
  path: ["type", "steps", "position"],
  binary: ["type", "value", "position", "lhs", "rhs"],
  apply: ["type", "value", "position", "lhs", "rhs"],
  unary: ["type", "value", "position", "expression", "expressions"],
  condition: ["type", "position", "condition", "then", "else"],
  block: ["type", "position", "expressions"],
  function: ["type", "value", "position", "arguments", "procedure"],
};

const hasOwn = Object.prototype.hasOwnProperty;
const isEnumerable = Object.prototype.propertyIsEnumerable;

/**
 * Builds the fast path for a parsed expression (`jsonata(expr).ast()`), or returns `undefined`
 * when some part of it is outside the subset (the caller then always uses jsonata).
 *
 * `maxDepth` is the interpreter's depth bound (its `stack` option): an expression nested more
 * deeply than that fails in jsonata with D1011, so it gets no fast path and fails the same way.
 */
export function compileFastPath(ast: unknown, maxDepth = Infinity): FastPath | undefined {
  try {
    if (depth(ast, 1, maxDepth) > maxDepth) return undefined;
    return value(ast);
  } catch {
    // An AST shape this walker does not expect: leave the expression to jsonata.
    return undefined;
  }
}

/**
 * How deep jsonata's `evaluate` calls nest for `x` when it starts at `level`: one level per node,
 * path steps one below their path. Stops counting past `limit`.
 */
function depth(x: unknown, level: number, limit: number): number {
  if (level > limit) return level;
  if (typeof x !== "object" || x === null) return level - 1;
  const n = x as Node;
  let deepest = level;
  for (const child of [
    n.steps,
    n.lhs,
    n.rhs,
    n.expression,
    n.expressions,
    n.condition,
    n.then,
    n.else,
    n.procedure,
    n.arguments,
  ]) {
    if (child === undefined) continue;
    for (const item of Array.isArray(child) ? (child as unknown[]) : [child]) {
      deepest = Math.max(deepest, depth(item, level + 1, limit));
      if (deepest > limit) return deepest;
    }
  }
  return deepest;
}

function node(x: unknown): Node | undefined {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return undefined;
  const type = (x as { type?: unknown }).type;
  if (typeof type !== "string") return undefined;
  const allowed = hasOwn.call(allowedKeys, type) ? allowedKeys[type] : undefined;
  if (allowed === undefined) return undefined;
  for (const [key, v] of Object.entries(x)) {
    if (allowed.includes(key)) continue;
    // The parser leaves some keys present but undefined (`name` on calls, `keepArray` on `~>`);
    // jsonata tests `predicate` and `group` for presence, not value.
    if (v === undefined && key !== "predicate" && key !== "group") continue;
    return undefined;
  }
  return x as Node;
}

function nodes(x: unknown): Node[] | undefined {
  if (!Array.isArray(x)) return undefined;
  const out: Node[] = [];
  for (const item of x) {
    const n = node(item);
    if (n === undefined) return undefined;
    out.push(n);
  }
  return out;
}

/** Compiles `x` for its value. */
function value(x: unknown): Ev | undefined {
  const n = node(x);
  if (n === undefined) return undefined;
  switch (n.type) {
    case "string":
      return typeof n.value === "string" ? constant(n.value) : undefined;
    case "number":
      return typeof n.value === "number" ? constant(n.value) : undefined;
    case "value":
      return typeof n.value === "boolean" || n.value === null ? constant(n.value) : undefined;
    case "path":
      return path(n);
    case "variable": {
      const start = variable(n);
      if (start === undefined) return undefined;
      return (input, bindings) => leaf(start(input, bindings));
    }
    case "binary":
      return binary(n);
    case "unary":
      return negation(n);
    case "condition":
      return condition(n);
    case "block":
      return block(n);
    case "function":
      return call(n);
    default:
      // `apply` (~>) is supported only where just its truth is read; see `truth`.
      return undefined;
  }
}

function constant(v: unknown): Ev {
  return () => v;
}

/**
 * A value as jsonata would hand it on, or `FALLBACK`: arrays carry jsonata's sequence semantics
 * (mapping, flattening, singleton unwrapping), and functions are wrapped or called by jsonata.
 */
function leaf(v: unknown): unknown {
  if (typeof v === "object") {
    if (v !== null && (Array.isArray(v) || isJsonataFunction(v))) return FALLBACK;
    return v;
  }
  return typeof v === "function" ? FALLBACK : v;
}

/** jsonata's `isFunction` for objects: its own function and lambda objects carry a marker. */
function isJsonataFunction(v: object): boolean {
  const marked = v as { _jsonata_function?: unknown; _jsonata_lambda?: unknown };
  return marked._jsonata_function === true || marked._jsonata_lambda === true;
}

/**
 * A variable as the first step of a path or on its own: `$` and `$$` are the input (a top-level
 * array input then falls back via `leaf`), anything else is a binding. A name absent from the
 * bindings falls back: jsonata would look it up among its built-in functions.
 */
function variable(n: Node): Ev | undefined {
  const name = n.value;
  if (typeof name !== "string") return undefined;
  if (name === "" || name === "$") return (input) => input;
  return (_input, bindings) => binding(bindings, name);
}

/** The value jsonata binds for `$name` from the evaluation's bindings, or `FALLBACK`. */
function binding(bindings: Bindings, name: string): unknown {
  // jsonata binds the bindings' own enumerable string keys (Object.keys).
  if (typeof bindings === "object" && bindings !== null && isEnumerable.call(bindings, name)) return bindings[name];
  return FALLBACK;
}

/** True when the bindings shadow a built-in function of that name. */
function shadowed(bindings: Bindings, name: string): boolean {
  return typeof bindings === "object" && bindings !== null && isEnumerable.call(bindings, name);
}

/** `a.b.c`, `$.a.b`, `$$.a`, `$name.a.b`: names after an optional leading variable. */
function path(n: Node): Ev | undefined {
  const steps = nodes(n.steps);
  if (steps === undefined || steps.length === 0) return undefined;
  let start: Ev | undefined;
  const keys: string[] = [];
  for (const [i, step] of steps.entries()) {
    if (i === 0 && step.type === "variable") {
      start = variable(step);
      if (start === undefined) return undefined;
    } else if (step.type === "name" && typeof step.value === "string") {
      keys.push(step.value);
    } else {
      return undefined;
    }
  }
  if (start === undefined) {
    // A relative path starts at the input; an array input is mapped over, which `lookup` refuses.
    if (keys.length === 1) {
      const key = keys[0]!;
      return (input) => leaf(lookup(input, key));
    }
    if (keys.length === 2) {
      const [k0, k1] = keys as [string, string];
      return (input) => {
        const v = lookup(input, k0);
        return v === undefined || v === FALLBACK ? v : leaf(lookup(v, k1));
      };
    }
    return (input) => walk(input, keys);
  }
  const from = start;
  return (input, bindings) => walk(from(input, bindings), keys);
}

function walk(from: unknown, keys: readonly string[]): unknown {
  let v = from;
  for (const key of keys) {
    if (v === undefined || v === FALLBACK) return v;
    v = lookup(v, key);
  }
  return v === FALLBACK ? v : leaf(v);
}

/**
 * jsonata's `lookup` of one name in one value: an own property of an object, `undefined` for
 * anything else; an array (mapped over by jsonata) falls back.
 */
function lookup(v: unknown, key: string): unknown {
  if (typeof v !== "object" || v === null) return v === FALLBACK ? v : undefined;
  if (Array.isArray(v)) return FALLBACK;
  if (!hasOwn.call(v, key)) return undefined;
  // jsonata's own function objects are not looked into; leave that corner to it.
  if (isJsonataFunction(v)) return FALLBACK;
  return (v as Record<string, unknown>)[key];
}

function binary(n: Node): Ev | undefined {
  const op = n.value;
  if (op === "and" || op === "or") {
    const lhs = truth(n.lhs);
    const rhs = truth(n.rhs);
    if (lhs === undefined || rhs === undefined) return undefined;
    return op === "and"
      ? (input, bindings) => {
          const l = lhs(input, bindings);
          if (l !== true) return l === FALLBACK ? l : false;
          const r = rhs(input, bindings);
          return r === FALLBACK ? r : r === true;
        }
      : (input, bindings) => {
          const l = lhs(input, bindings);
          if (l === true || l === FALLBACK) return l;
          const r = rhs(input, bindings);
          return r === FALLBACK ? r : r === true;
        };
  }
  if (op === "in") return includes(n);
  const lhs = value(n.lhs);
  const rhs = value(n.rhs);
  if (lhs === undefined || rhs === undefined) return undefined;
  switch (op) {
    case "+":
    case "-":
    case "*":
    case "/":
    case "%":
      return arithmetic(op, lhs, rhs);
    case "=":
      return (input, bindings) => {
        const l = lhs(input, bindings);
        if (l === FALLBACK) return l;
        const r = rhs(input, bindings);
        if (r === FALLBACK) return r;
        return equal(l, r);
      };
    case "!=":
      return (input, bindings) => {
        const l = lhs(input, bindings);
        if (l === FALLBACK) return l;
        const r = rhs(input, bindings);
        if (r === FALLBACK) return r;
        // Either side undefined: false for "!=" too.
        if (l === undefined || r === undefined) return false;
        const eq = equal(l, r);
        return eq === FALLBACK ? eq : !eq;
      };
    case "<":
    case "<=":
    case ">":
    case ">=":
      return comparison(op, lhs, rhs);
    case "&":
      return (input, bindings) => {
        const l = lhs(input, bindings);
        if (l === FALLBACK) return l;
        const r = rhs(input, bindings);
        if (r === FALLBACK) return r;
        const ls = text(l);
        if (ls === FALLBACK) return ls;
        const rs = text(r);
        if (rs === FALLBACK) return rs;
        return ls + rs;
      };
    default:
      // `..` (ranges) and anything else.
      return undefined;
  }
}

/** jsonata's `=`: false when either side is undefined; deep equality of objects is left to jsonata. */
function equal(l: unknown, r: unknown): boolean | typeof FALLBACK {
  if (l === undefined || r === undefined) return false;
  if (typeof l === "object" && l !== null && typeof r === "object" && r !== null) return l === r ? true : FALLBACK;
  return l === r;
}

/** A finite number, the only operand jsonata's arithmetic takes (NaN is T2001/T2002, ±Infinity D1001). */
function isFiniteNumber(v: unknown): v is number {
  return typeof v === "number" && v - v === 0;
}

function arithmetic(op: "+" | "-" | "*" | "/" | "%", lhs: Ev, rhs: Ev): Ev {
  const compute =
    op === "+"
      ? (a: number, b: number) => a + b
      : op === "-"
        ? (a: number, b: number) => a - b
        : op === "*"
          ? (a: number, b: number) => a * b
          : op === "/"
            ? (a: number, b: number) => a / b
            : (a: number, b: number) => a % b;
  return (input, bindings) => {
    const l = lhs(input, bindings);
    if (l === FALLBACK) return l;
    const r = rhs(input, bindings);
    if (r === FALLBACK) return r;
    if (isFiniteNumber(l)) {
      if (isFiniteNumber(r)) return compute(l, r);
      return r === undefined ? undefined : FALLBACK;
    }
    // Undefined with undefined or a number is undefined; anything else is jsonata's type error.
    return l === undefined && (r === undefined || isFiniteNumber(r)) ? undefined : FALLBACK;
  };
}

function comparison(op: "<" | "<=" | ">" | ">=", lhs: Ev, rhs: Ev): Ev {
  const compare =
    op === "<"
      ? (a: number | string, b: number | string) => a < b
      : op === "<="
        ? (a: number | string, b: number | string) => a <= b
        : op === ">"
          ? (a: number | string, b: number | string) => a > b
          : (a: number | string, b: number | string) => a >= b;
  return (input, bindings) => {
    const l = lhs(input, bindings);
    if (l === FALLBACK) return l;
    const r = rhs(input, bindings);
    if (r === FALLBACK) return r;
    const lt = typeof l;
    const rt = typeof r;
    // Numbers and strings compare with their own kind; undefined on either side gives undefined;
    // anything else is jsonata's T2009 or T2010, which jsonata itself reports.
    if ((lt === "number" || lt === "string") && lt === rt) return compare(l as number | string, r as number | string);
    if (
      (lt === "undefined" || lt === "number" || lt === "string") &&
      (rt === "undefined" || rt === "number" || rt === "string")
    )
      return lt === "undefined" || rt === "undefined" ? undefined : FALLBACK;
    return FALLBACK;
  };
}

/** `x in [literals]` or `x in y`; an array on the right other than a literal falls back. */
function includes(n: Node): Ev | undefined {
  const lhs = value(n.lhs);
  if (lhs === undefined) return undefined;
  const right = node(n.rhs);
  if (right === undefined) return undefined;
  if (right.type === "unary" && right.value === "[") {
    const items = nodes(right.expressions);
    if (items === undefined || right.expression !== undefined) return undefined;
    const values: unknown[] = [];
    for (const item of items) {
      if (item.type === "string" || item.type === "number" || item.type === "value") {
        const v = value(item);
        if (v === undefined) return undefined;
        values.push(v(undefined, undefined));
      } else {
        return undefined;
      }
    }
    if (values.length === 0) {
      // `[]` evaluates to an empty array; jsonata then finds nothing in it.
      return (input, bindings) => {
        const l = lhs(input, bindings);
        return l === FALLBACK ? l : false;
      };
    }
    return (input, bindings) => {
      const l = lhs(input, bindings);
      if (l === FALLBACK) return l;
      // Strict equality, as jsonata compares; undefined is never a member.
      return l !== undefined && values.includes(l);
    };
  }
  const rhs = value(n.rhs);
  if (rhs === undefined) return undefined;
  return (input, bindings) => {
    const l = lhs(input, bindings);
    if (l === FALLBACK) return l;
    const r = rhs(input, bindings);
    if (r === FALLBACK) return r;
    // A single value on the right is a one-item array to jsonata.
    return l !== undefined && r !== undefined && l === r;
  };
}

/** Unary minus (a negative literal is already a number node). */
function negation(n: Node): Ev | undefined {
  if (n.value !== "-" || n.expressions !== undefined) return undefined;
  const operand = value(n.expression);
  if (operand === undefined) return undefined;
  return (input, bindings) => {
    const v = operand(input, bindings);
    if (v === undefined || v === FALLBACK) return v;
    // jsonata: D1001 for ±Infinity, D1002 for anything not a number.
    return isFiniteNumber(v) ? -v : FALLBACK;
  };
}

function condition(n: Node): Ev | undefined {
  const test = truth(n.condition);
  const then = value(n.then);
  if (test === undefined || then === undefined) return undefined;
  if (n.else === undefined) {
    return (input, bindings) => {
      const t = test(input, bindings);
      if (t === FALLBACK) return t;
      return t === true ? then(input, bindings) : undefined;
    };
  }
  const otherwise = value(n.else);
  if (otherwise === undefined) return undefined;
  return (input, bindings) => {
    const t = test(input, bindings);
    if (t === FALLBACK) return t;
    return t === true ? then(input, bindings) : otherwise(input, bindings);
  };
}

/** `(a; b; c)` without assignments: each part in turn, the last one's value. */
function block(n: Node): Ev | undefined {
  const parts = nodes(n.expressions);
  if (parts === undefined) return undefined;
  const compiled: Ev[] = [];
  for (const part of parts) {
    const c = value(part);
    if (c === undefined) return undefined;
    compiled.push(c);
  }
  if (compiled.length === 0) return constant(undefined);
  if (compiled.length === 1) return compiled[0];
  return (input, bindings) => {
    let v: unknown;
    for (const c of compiled) {
      v = c(input, bindings);
      if (v === FALLBACK) return v;
    }
    return v;
  };
}

/** Built-ins reproduced here, by name; each is used only when no binding shadows it. */
function call(n: Node): Ev | undefined {
  const procedure = node(n.procedure);
  if (procedure?.type !== "variable" || typeof procedure.value !== "string") return undefined;
  const name = procedure.value;
  const args = nodes(n.arguments);
  if (args === undefined) return undefined;
  const impl = builtin(name, args);
  if (impl === undefined) return undefined;
  return (input, bindings) => (shadowed(bindings, name) ? FALLBACK : impl(input, bindings));
}

function builtin(name: string, args: Node[]): Ev | undefined {
  // With no argument jsonata substitutes the context; with two, several report a signature error.
  if (name === "contains") return args.length === 2 ? contains(args[0]!, args[1]!) : undefined;
  if (args.length !== 1) return undefined;
  const arg = args[0]!;
  switch (name) {
    case "not": {
      const t = truth(arg);
      if (t === undefined) return undefined;
      return (input, bindings) => {
        const b = t(input, bindings);
        return b === undefined || b === FALLBACK ? b : !b;
      };
    }
    case "boolean":
      return truth(arg);
    case "exists": {
      if (regexTest(arg) !== undefined) {
        const t = truth(arg)!;
        return (input, bindings) => {
          const b = t(input, bindings);
          return b === FALLBACK ? b : b !== undefined;
        };
      }
      const v = value(arg);
      if (v === undefined) return undefined;
      return (input, bindings) => {
        const x = v(input, bindings);
        return x === FALLBACK ? x : x !== undefined;
      };
    }
    case "string": {
      const v = value(arg);
      if (v === undefined) return undefined;
      return (input, bindings) => {
        const x = v(input, bindings);
        return x === undefined ? undefined : text(x);
      };
    }
    case "lowercase":
    case "uppercase": {
      const v = value(arg);
      if (v === undefined) return undefined;
      const lower = name === "lowercase";
      return (input, bindings) => {
        const x = v(input, bindings);
        if (typeof x === "string") return lower ? x.toLowerCase() : x.toUpperCase();
        // undefined stays undefined; anything else is jsonata's signature error (T0410).
        return x === undefined || x === FALLBACK ? x : FALLBACK;
      };
    }
    default:
      return undefined;
  }
}

/** `$contains(str, "literal")` and `$contains(str, /regex/)`. */
function contains(strNode: Node, tokenNode: Node): Ev | undefined {
  const str = value(strNode);
  if (str === undefined) return undefined;
  let test: (s: string) => boolean;
  if (tokenNode.type === "string" && typeof tokenNode.value === "string") {
    const token = tokenNode.value;
    test = (s) => s.includes(token);
  } else if (tokenNode.type === "regex" && tokenNode.value instanceof RegExp) {
    const re = nonGlobal(tokenNode.value);
    test = (s) => re.test(s);
  } else {
    return undefined;
  }
  return (input, bindings) => {
    const s = str(input, bindings);
    if (typeof s === "string") return test(s);
    // undefined gives undefined; anything else is jsonata's signature error (T0410).
    return s === undefined || s === FALLBACK ? s : FALLBACK;
  };
}

/** The regex jsonata built (always with `g`), without `g`, so that `test` keeps no state. */
function nonGlobal(re: RegExp): RegExp {
  return new RegExp(re.source, re.flags.replace("g", ""));
}

/** `x ~> /re/`: the compiled operand and regex, when `n` is that. */
function regexTest(x: unknown): { operand: Ev; re: RegExp } | undefined {
  const n = node(x);
  if (n?.type !== "apply" || n.value !== "~>") return undefined;
  const rhs = node(n.rhs);
  if (rhs?.type !== "regex" || !(rhs.value instanceof RegExp)) return undefined;
  const operand = value(n.lhs);
  if (operand === undefined) return undefined;
  return { operand, re: nonGlobal(rhs.value) };
}

/**
 * Compiles `x` for its effective boolean value, jsonata's `boolean()`: what `and`, `or`, `?:`,
 * `$not` and `$boolean` read. Here `x ~> /re/` is supported too: its value is a match object
 * (true) or undefined.
 */
function truth(x: unknown): Truth | undefined {
  const re = regexTest(x);
  if (re !== undefined) {
    const { operand, re: regex } = re;
    return (input, bindings) => {
      const v = operand(input, bindings);
      if (v === FALLBACK) return v;
      // jsonata passes the value to RegExp#exec as it is, which converts a primitive to a string
      // (undefined to "undefined"); an object's conversion is left to jsonata.
      if (typeof v === "string") return regex.test(v) ? true : undefined;
      if (v === undefined || v === null || typeof v === "number" || typeof v === "boolean")
        return regex.test(String(v)) ? true : undefined;
      return FALLBACK;
    };
  }
  const n = node(x);
  // `and` and `or` already produce a boolean.
  if (n?.type === "binary" && (n.value === "and" || n.value === "or")) {
    return binary(n) as Truth | undefined;
  }
  const v = value(x);
  if (v === undefined) return undefined;
  return (input, bindings) => effectiveBoolean(v(input, bindings));
}

/** jsonata's `boolean()` for the values a fast path produces (never an array or a function). */
function effectiveBoolean(v: unknown): boolean | undefined | typeof FALLBACK {
  switch (typeof v) {
    case "boolean":
      return v;
    case "undefined":
      return undefined;
    case "string":
      return v.length > 0;
    case "number":
      if (v !== v) return false; // NaN
      if (v === Infinity || v === -Infinity) return FALLBACK; // jsonata's D1001
      return v !== 0;
    case "object": {
      if (v === null) return false;
      if (Array.isArray(v)) return FALLBACK;
      if (isJsonataFunction(v)) return false;
      for (const key in v) if (hasOwn.call(v, key)) return true;
      return false;
    }
    default:
      // FALLBACK itself, and anything jsonata would treat otherwise.
      return FALLBACK;
  }
}

/** jsonata's `string()` for `&` and `$string`: primitives only; the rest is left to jsonata. */
function text(v: unknown): string | typeof FALLBACK {
  switch (typeof v) {
    case "string":
      return v;
    case "undefined":
      return "";
    case "boolean":
      return v ? "true" : "false";
    case "number":
      // jsonata rounds non-integers to 15 significant digits; NaN and ±Infinity are its D3001.
      if (v - v !== 0) return FALLBACK;
      return String(Number.isInteger(v) ? v : Number(v.toPrecision(15)));
    case "object":
      return v === null ? "null" : FALLBACK;
    default:
      return FALLBACK;
  }
}
