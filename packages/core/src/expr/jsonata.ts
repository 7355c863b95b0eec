/**
 * JSONata expressions for filters and transforms, with bounds on each evaluation.
 *
 * A filter or transform comes from a manifest, so one bad expression must fail only its own
 * evaluation: jsonata's guardrails bound the evaluation depth (D1011) and wall-clock time
 * (D1012), its `sequence` option bounds the sequences an evaluation builds (D2015, and D2014
 * for ranges over 1e7), and all of them surface as `ExpressionError` with code
 * `EXPRESSION_LIMIT`.
 *
 * Expressions in the common subset (field paths, literals, comparisons, arithmetic, `and`/`or`,
 * `in`, `&`, `?:`, a few built-ins; see fastpath.ts) also get a synchronous closure that gives
 * exactly jsonata's result, and hands an input it cannot reproduce (an array on a path, a type
 * error) back to jsonata. Callers see the same results and errors either way.
 */
import jsonata from "jsonata";
import { ErrorCode, ExpressionError, OfEventsError } from "../errors.js";
import { compileFastPath, FALLBACK, type Bindings, type FastPath } from "./fastpath.js";

export interface ExpressionEngineOptions {
  /** Wall-clock budget of one evaluation, in milliseconds. Default 100. */
  timeoutMs?: number;
  /**
   * Deepest nesting of jsonata evaluation frames (expression nesting plus function calls) in
   * one evaluation. Default 200.
   */
  maxDepth?: number;
  /** How many compiled expressions are kept, least recently used evicted first; 0 keeps none. Default 1000. */
  cacheSize?: number;
  /**
   * Most items in one sequence an evaluation builds (ranges, path results). Default 1,000,000.
   * Built-ins such as `$sum` or `$sort` run as one uninterruptible step over a sequence, so
   * this bound is also what bounds their time.
   */
  maxSequence?: number;
}

/** One problem found by `validateFilter` or `validateTransform`; the caller adds the manifest path. */
export interface ExpressionIssue {
  code: ErrorCode;
  message: string;
  /** 1-based character offset of the problem in the expression text, where known. */
  column?: number;
}

/** An expression compiled once; safe to evaluate any number of times, also concurrently. */
export interface CompiledExpression {
  /** The expression text it was compiled from. */
  readonly source: string;
  /**
   * Evaluates against `input`, with each key of `bindings` visible as `$key` for this call only.
   * Resolves to the result, or `undefined` when the expression matches nothing. The result may
   * share objects with `input` and `bindings`; treat it as read-only. Rejects with an
   * `ExpressionError`: `EXPRESSION_LIMIT` when the evaluation ran out of time, depth or sequence
   * size, `EXPRESSION_EVALUATION` for any other runtime error.
   */
  evaluate(input: unknown, bindings?: Readonly<Record<string, unknown>>): Promise<unknown>;
}

/**
 * Compiles and evaluates JSONata. Evaluations run one at a time per engine, in call order:
 * evaluation is CPU-bound, so interleaving would gain nothing and would let one evaluation's
 * time count against another's budget.
 */
export interface ExpressionEngine {
  /**
   * Returns the compiled expression for `expr`, from the cache when it is there. Throws an
   * `ExpressionError` with code `EXPRESSION_SYNTAX` (and the column) when it does not parse, or
   * `EXPRESSION_LIMIT` when it is nested too deeply to parse.
   */
  compile(expr: string): CompiledExpression;
  /** `compile(expr).evaluate(input, bindings)`; a syntax error becomes a rejection. */
  evaluate(expr: string, input: unknown, bindings?: Readonly<Record<string, unknown>>): Promise<unknown>;
  /**
   * Evaluates a filter. Resolves to its boolean result; `undefined` (the expression matched
   * nothing, e.g. a filter over a missing field) resolves to `false`, not an error. Rejects with
   * `EXPRESSION_TYPE` when the result is anything else, or as `evaluate` does.
   */
  evaluateBoolean(expr: string, input: unknown, bindings?: Readonly<Record<string, unknown>>): Promise<boolean>;
  /**
   * Checks a filter without evaluating it: syntax, and a top-level expression that can never be
   * a boolean (a literal, an object, arithmetic, string `&`). Returns every problem; never throws.
   */
  validateFilter(expr: string): ExpressionIssue[];
  /** Checks a transform's syntax without evaluating it. Returns every problem; never throws. */
  validateTransform(expr: string): ExpressionIssue[];
}

const defaults = { timeoutMs: 100, maxDepth: 200, cacheSize: 1000, maxSequence: 1_000_000 } as const;

/** The jsonata error codes that mean "ran out of a bound", not "the expression is wrong". */
const JsonataLimitCode = {
  StackDepth: "D1011",
  Timeout: "D1012",
  RangeTooLarge: "D2014",
  SequenceTooLarge: "D2015",
} as const;

/** jsonata throws plain objects, not `Error`s. */
interface JsonataFailure {
  code: string;
  message?: string;
  position?: number;
  token?: unknown;
  value?: unknown;
}

/** The part of jsonata's AST the static filter check reads. */
interface AstNode {
  type: string;
  value?: unknown;
  expressions?: AstNode[];
}

/** One compiled expression with what the engine keeps beside it. */
interface Entry {
  readonly compiled: CompiledExpression;
  /** jsonata's object stays private: its `assign` and `registerFunction` would change every caller's view. */
  readonly parsed: jsonata.Expression;
  /** The synchronous closure for the common subset, when the whole expression is in it. */
  readonly fast: FastPath | undefined;
}

/** The compiled expressions that have a fast path; for tests (`usesFastPath`). */
const withFastPath = new WeakSet<CompiledExpression>();

/**
 * Whether `compiled` has the synchronous fast path (it may still hand a given input to jsonata).
 * Internal, for tests; not part of the package's surface.
 */
export function usesFastPath(compiled: CompiledExpression): boolean {
  return withFastPath.has(compiled);
}

/** Creates an engine; each engine has its own cache and its own evaluation queue. */
export function createExpressionEngine(options: ExpressionEngineOptions = {}): ExpressionEngine {
  const timeoutMs = checkOption("timeoutMs", options.timeoutMs ?? defaults.timeoutMs, false);
  const maxDepth = checkOption("maxDepth", options.maxDepth ?? defaults.maxDepth, true);
  const cacheSize = checkOption("cacheSize", options.cacheSize ?? defaults.cacheSize, true, true);
  const maxSequence = checkOption("maxSequence", options.maxSequence ?? defaults.maxSequence, true);
  const jsonataOptions = { timeout: timeoutMs, stack: maxDepth, sequence: maxSequence };

  // Map iteration order is insertion order, so the first key is the least recently used.
  const cache = new Map<string, Entry>();
  // The cache's last key: using it again needs no reordering.
  let newest: string | undefined;
  // Tail of the evaluation queue; never rejects.
  let queue: Promise<unknown> = Promise.resolve();
  // Evaluations in the queue, not yet settled. A fast path runs at once only when this is 0, so
  // that results still settle in call order.
  let queued = 0;

  function entryOf(expr: string): Entry {
    const hit = cache.get(expr);
    if (hit !== undefined) {
      if (newest !== expr) {
        cache.delete(expr);
        cache.set(expr, hit);
        newest = expr;
      }
      return hit;
    }
    const entry = compileUncached(expr);
    if (cacheSize > 0) {
      cache.set(expr, entry);
      newest = expr;
      for (const oldest of cache.keys()) {
        if (cache.size <= cacheSize) break;
        cache.delete(oldest);
      }
    }
    return entry;
  }

  function compileUncached(expr: string): Entry {
    if (typeof expr !== "string") {
      throw new ExpressionError(
        ErrorCode.ExpressionSyntax,
        `expression must be a string, got ${typeName(expr)}`,
        String(expr),
      );
    }
    if (expr.trim() === "") {
      throw new ExpressionError(ErrorCode.ExpressionSyntax, "expression is empty", expr, { column: 1 });
    }
    let parsed: jsonata.Expression;
    try {
      parsed = jsonata(expr, jsonataOptions);
    } catch (err) {
      throw compileError(expr, err);
    }
    const fast = compileFastPath(parsed.ast(), maxDepth);
    const compiled: CompiledExpression = {
      source: expr,
      evaluate: (input, bindings) => evaluateEntry(entry, input, bindings),
    };
    const entry: Entry = { compiled, parsed, fast };
    Object.freeze(compiled);
    if (fast !== undefined) withFastPath.add(compiled);
    return entry;
  }

  function evaluateEntry(entry: Entry, input: unknown, bindings: Bindings): Promise<unknown> {
    if (entry.fast !== undefined && queued === 0) {
      const result = runFast(entry.fast, input, bindings, true);
      if (result !== FALLBACK) return Promise.resolve(result);
    }
    return enqueue(entry, input, bindings);
  }

  /** Evaluates in the queue, with the fast path first when there is one. */
  function enqueue(entry: Entry, input: unknown, bindings: Bindings): Promise<unknown> {
    // Copied now, not when the queue reaches this call, so later changes by the caller do not leak in.
    const own = bindings === undefined ? undefined : { ...bindings };
    queued++;
    const run = queue.then(() => {
      if (entry.fast !== undefined) {
        const result = runFast(entry.fast, input, own, true);
        if (result !== FALLBACK) return result;
      }
      return evaluateNow(entry.parsed, entry.compiled.source, input, own);
    });
    queue = run.then(settled, settled);
    return run;
  }

  function settled(): void {
    queued--;
  }

  async function evaluateNow(
    parsed: jsonata.Expression,
    expr: string,
    input: unknown,
    bindings: Readonly<Record<string, unknown>> | undefined,
  ): Promise<unknown> {
    // jsonata checks its clock only when it enters a sub-expression, so an evaluation stuck on a
    // promise that never settles (a function passed in bindings) would hold the queue forever;
    // the timer lets the queue move on. A CPU-bound evaluation never yields to the timer and is
    // stopped by jsonata's own check (D1012) instead.
    let timer: NodeJS.Timeout | undefined;
    const watchdog = new Promise<never>((_, reject) => {
      if (timeoutMs > 2 ** 31 - 1) return; // setTimeout cannot wait longer; no bound was asked for.
      timer = setTimeout(() => {
        reject(
          new ExpressionError(
            ErrorCode.ExpressionLimit,
            `expression ${quote(expr)} exceeded ${timeoutMs} ms (waiting on an asynchronous result)`,
            expr,
          ),
        );
      }, timeoutMs);
    });
    try {
      // jsonata binds the keys into a frame of this evaluation only.
      return toPlain(await Promise.race([parsed.evaluate(input, bindings), watchdog]), new Map());
    } catch (err) {
      if (err instanceof ExpressionError) throw err;
      throw evaluationError(expr, err, timeoutMs, maxDepth, maxSequence);
    } finally {
      clearTimeout(timer);
    }
  }

  const engine: ExpressionEngine = {
    compile: (expr) => entryOf(expr).compiled,
    evaluate(expr, input, bindings) {
      let entry: Entry;
      try {
        entry = entryOf(expr);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      return evaluateEntry(entry, input, bindings);
    },
    evaluateBoolean(expr, input, bindings) {
      let entry: Entry;
      try {
        entry = entryOf(expr);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      if (entry.fast !== undefined && queued === 0) {
        // The hot path of a filter: no promise until the result.
        const result = runFast(entry.fast, input, bindings, false);
        if (result !== FALLBACK) {
          return typeof result === "boolean"
            ? Promise.resolve(result)
            : result === undefined
              ? Promise.resolve(false)
              : Promise.reject(notBoolean(expr, result));
        }
      }
      return enqueue(entry, input, bindings).then((result) => {
        if (result === undefined) return false;
        if (typeof result === "boolean") return result;
        throw notBoolean(expr, result);
      });
    },
    validateFilter(expr) {
      const compiled = tryCompile(expr);
      if (!("ast" in compiled)) return compiled.issues;
      const got = staticType(compiled.ast);
      if (got === undefined) return [];
      const hint =
        compiled.ast.type === "binary" && compiled.ast.value === "&"
          ? `; "&" joins strings in JSONata, use "and" to combine conditions`
          : "";
      return [
        {
          code: ErrorCode.ExpressionType,
          message: `filter ${quote(expr)} always produces ${got}, never a boolean${hint}`,
          column: 1,
        },
      ];
    },
    validateTransform(expr) {
      const compiled = tryCompile(expr);
      return "ast" in compiled ? [] : compiled.issues;
    },
  };

  function tryCompile(expr: string): { ast: AstNode } | { issues: ExpressionIssue[] } {
    let entry: Entry;
    try {
      entry = entryOf(expr);
    } catch (err) {
      if (!(err instanceof ExpressionError)) throw err;
      return {
        issues: [
          err.column === undefined
            ? { code: err.code, message: err.message }
            : { code: err.code, message: err.message, column: err.column },
        ],
      };
    }
    return { ast: entry.parsed.ast() as unknown as AstNode };
  }

  return Object.freeze(engine);
}

/**
 * Runs a fast path; `FALLBACK` when jsonata must evaluate this input, also when reading the
 * input threw (a getter): jsonata then reports that as it always does. `plain` applies the
 * interpreter path's `toPlain` to an object result.
 */
function runFast(fast: FastPath, input: unknown, bindings: Bindings, plain: boolean): unknown {
  try {
    const result = fast(input, bindings);
    return plain && typeof result === "object" && result !== null ? toPlain(result, new Map()) : result;
  } catch {
    return FALLBACK;
  }
}

function notBoolean(expr: string, result: unknown): ExpressionError {
  return new ExpressionError(
    ErrorCode.ExpressionType,
    `filter ${quote(expr)} must produce a boolean, got ${typeName(result)}`,
    expr,
  );
}

function checkOption(name: string, value: number, integer: boolean, zeroAllowed = false): number {
  const ok =
    typeof value === "number" &&
    !Number.isNaN(value) &&
    (zeroAllowed ? value >= 0 : value > 0) &&
    (!integer || Number.isInteger(value) || value === Infinity);
  if (!ok) {
    const want = `${zeroAllowed ? "zero or a positive" : "a positive"} ${integer ? "integer" : "number"}`;
    throw new OfEventsError(ErrorCode.Config, `expression engine option ${name} must be ${want}, got ${String(value)}`);
  }
  return value;
}

function isJsonataFailure(err: unknown): err is JsonataFailure {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "string";
}

function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && /call stack/i.test(err.message);
}

function compileError(expr: string, err: unknown): ExpressionError {
  if (isStackOverflow(err)) {
    return new ExpressionError(
      ErrorCode.ExpressionLimit,
      `expression ${quote(expr)} is nested too deeply to compile`,
      expr,
      { cause: err },
    );
  }
  if (!isJsonataFailure(err)) {
    // jsonata builds regex literals while it scans, so an invalid one surfaces as JavaScript's
    // SyntaxError, without a position.
    const column = (err instanceof SyntaxError ? invalidRegexColumn(expr) : undefined) ?? 1;
    return new ExpressionError(
      ErrorCode.ExpressionSyntax,
      `cannot compile expression ${quote(expr)}${at(expr, column)}: ${String(err)}`,
      expr,
      { cause: err, column },
    );
  }
  // A few errors about the whole expression (S0217 at the top level) come without a position.
  const column = columnOf(expr, err) ?? 1;
  const problem = lowerFirst(err.message ?? `jsonata error ${err.code}`);
  const message = `syntax error${at(expr, column)} in ${quote(expr, column)}: ${problem}${syntaxHint(expr, column, err)} (jsonata ${err.code})`;
  return new ExpressionError(ErrorCode.ExpressionSyntax, message, expr, { cause: err, column });
}

/**
 * The 1-based column of the first regex literal in `expr` that JavaScript refuses, found the way
 * jsonata's scanner delimits one (to the next unescaped `/` outside brackets); undefined if none.
 */
function invalidRegexColumn(expr: string): number | undefined {
  for (let start = expr.indexOf("/"); start >= 0; start = expr.indexOf("/", start + 1)) {
    let depth = 0;
    for (let i = start + 1; i < expr.length; i++) {
      const c = expr[i];
      const escaped = expr[i - 1] === "\\";
      if (c === "/" && depth === 0) {
        let backslashes = 0;
        while (expr[i - 1 - backslashes] === "\\") backslashes++;
        if (backslashes % 2 === 0) {
          let end = i + 1;
          while (expr[end] === "i" || expr[end] === "m") end++;
          try {
            new RegExp(expr.slice(start + 1, i), `${expr.slice(i + 1, end)}g`);
          } catch {
            return start + 1;
          }
          break;
        }
      }
      if ((c === "(" || c === "[" || c === "{") && !escaped) depth++;
      if ((c === ")" || c === "]" || c === "}") && !escaped) depth--;
    }
  }
  return undefined;
}

/** Hints for operators people bring from other languages; jsonata's own message names only the symbol. */
function syntaxHint(expr: string, column: number | undefined, err: JsonataFailure): string {
  if (column === undefined) return "";
  const here = expr[column - 1];
  const before = expr[column - 2];
  const after = expr[column];
  if (err.token === "&" && before === "&") return `; JSONata writes "and" and "or", not "&&" and "||"`;
  if (err.token === "|" && (after === "|" || before === "|"))
    return `; JSONata writes "and" and "or", not "&&" and "||"`;
  if (err.token === "=" && before === "=" && here === "=") return `; JSONata compares with "=", not "=="`;
  return "";
}

function evaluationError(
  expr: string,
  err: unknown,
  timeoutMs: number,
  maxDepth: number,
  maxSequence: number,
): ExpressionError {
  if (isStackOverflow(err)) {
    return new ExpressionError(
      ErrorCode.ExpressionLimit,
      `expression ${quote(expr)} exceeded the JavaScript stack; check for non-terminating recursion`,
      expr,
      { cause: err },
    );
  }
  if (!isJsonataFailure(err)) {
    const detail = err instanceof Error ? err.message : String(err);
    return new ExpressionError(ErrorCode.ExpressionEvaluation, `evaluation of ${quote(expr)} failed: ${detail}`, expr, {
      cause: err,
    });
  }
  const column = columnOf(expr, err);
  const options = column === undefined ? { cause: err } : { cause: err, column };
  switch (err.code) {
    case JsonataLimitCode.Timeout:
      return new ExpressionError(
        ErrorCode.ExpressionLimit,
        `expression ${quote(expr)} exceeded ${timeoutMs} ms; check for an infinite loop`,
        expr,
        options,
      );
    case JsonataLimitCode.StackDepth:
      return new ExpressionError(
        ErrorCode.ExpressionLimit,
        `expression ${quote(expr)} exceeded depth ${maxDepth}; check for non-terminating recursion`,
        expr,
        options,
      );
    case JsonataLimitCode.RangeTooLarge:
    case JsonataLimitCode.SequenceTooLarge: {
      const limit = err.code === JsonataLimitCode.RangeTooLarge ? 1e7 : maxSequence;
      const size = typeof err.value === "number" && err.value !== limit ? `${err.value} items, ` : "";
      return new ExpressionError(
        ErrorCode.ExpressionLimit,
        `expression ${quote(expr)} built a sequence of ${size}more than the limit of ${limit}`,
        expr,
        options,
      );
    }
    default: {
      const problem = lowerFirst(err.message ?? `jsonata error ${err.code}`);
      return new ExpressionError(
        ErrorCode.ExpressionEvaluation,
        `evaluation failed${at(expr, column)} in ${quote(expr, column)}: ${problem} (jsonata ${err.code})`,
        expr,
        options,
      );
    }
  }
}

/**
 * jsonata's `position` is the offset just past the offending token; this returns the 1-based
 * offset of the token's first character (one past the end for "(end)").
 */
function columnOf(expr: string, err: JsonataFailure): number | undefined {
  const position = err.position;
  if (typeof position !== "number" || !Number.isInteger(position) || position < 0) return undefined;
  if (err.token === "(end)") return Math.min(position, expr.length) + 1;
  const length = typeof err.token === "string" ? err.token.length : 1;
  return Math.min(Math.max(1, position - length + 1), expr.length + 1);
}

/** " at column 4", or " at line 2, column 5 (character 17)" for a multi-line expression. */
function at(expr: string, column: number | undefined): string {
  if (column === undefined) return "";
  const before = expr.slice(0, column - 1);
  const lineStart = before.lastIndexOf("\n");
  if (lineStart < 0 && !expr.includes("\n")) return ` at column ${column}`;
  const line = before.split("\n").length;
  return ` at line ${line}, column ${column - 1 - lineStart} (character ${column})`;
}

const maxQuoted = 120;

/** The expression as a JSON string, long text cut to a window around `column`. */
function quote(expr: string, column?: number): string {
  let text = expr;
  if (text.length > maxQuoted) {
    const centre = column === undefined ? 0 : column - 1;
    const start = Math.max(0, Math.min(centre - maxQuoted / 2, text.length - maxQuoted));
    text = `${start > 0 ? "…" : ""}${text.slice(start, start + maxQuoted)}${start + maxQuoted < expr.length ? "…" : ""}`;
  }
  return JSON.stringify(text);
}

function lowerFirst(text: string): string {
  return text.length > 0 ? text[0]!.toLowerCase() + text.slice(1) : text;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "string":
      return `a string (${value.length > 40 ? `"${value.slice(0, 40)}…"` : JSON.stringify(value)})`;
    case "number":
      return `a number (${value})`;
    case "object":
      return "an object";
    case "function":
      return "a function";
    case "undefined":
      return "undefined";
    default:
      return `a ${typeof value}`;
  }
}

/** What a filter's top-level expression always produces when that is known and not a boolean. */
function staticType(node: AstNode): string | undefined {
  switch (node.type) {
    case "string":
      return "a string";
    case "number":
      return "a number";
    case "value":
      return node.value === null ? "null" : undefined;
    case "regex":
    case "regexp":
      return "a regular expression";
    case "lambda":
      return "a function";
    case "unary":
      if (node.value === "{") return "an object";
      if (node.value === "[") return "an array";
      if (node.value === "-") return "a number";
      return undefined;
    case "binary":
      if (node.value === "&") return "a string";
      if (typeof node.value === "string" && ["+", "-", "*", "/", "%"].includes(node.value)) return "a number";
      return undefined;
    case "block": {
      const last = node.expressions?.at(-1);
      return last === undefined ? undefined : staticType(last);
    }
    default:
      return undefined;
  }
}

/**
 * jsonata returns its sequences as arrays with extra own properties (`sequence`, and with the
 * `sequence` option a `push` that throws jsonata's D2015), also nested inside objects it
 * builds. This copies every such array, and the objects and arrays that hold one, into plain
 * ones; everything else, including parts shared with the input, is returned as it is.
 */
function toPlain(value: unknown, seen: Map<object, unknown>): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (seen.has(value)) return seen.get(value);
  seen.set(value, value); // a cycle resolves to the original until the copy (if any) is made
  if (Array.isArray(value)) {
    const items = value.map((item: unknown) => toPlain(item, seen));
    const isSequence = Object.prototype.hasOwnProperty.call(value, "sequence");
    const result = isSequence || items.some((item, i) => item !== value[i]) ? items : value;
    seen.set(value, result);
    return result;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  let copy: Record<string, unknown> | undefined;
  for (const [key, item] of Object.entries(value)) {
    const plain = toPlain(item, seen);
    if (plain !== item) {
      copy ??= { ...(value as Record<string, unknown>) };
      copy[key] = plain;
    }
  }
  const result = copy ?? value;
  seen.set(value, result);
  return result;
}
