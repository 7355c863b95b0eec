/**
 * The condition language of Trigger subscribers: input names joined by `&&`, `||`, `!` and
 * parentheses, as in OpenFunction's `eventA && eventB` or Argo's `(dep01 || dep02) && dep03`.
 * Precedence `!` > `&&` > `||`; binary operators are left-associative.
 *
 * An input name starts with an ASCII letter or `_` and goes on with letters, digits, `_`, `-`
 * and `.` (there is no arithmetic, so `a-b` is one name). Parsed by a hand-written tokenizer and
 * recursive descent; nothing is ever evaluated as code.
 */
import { ErrorCode, ExpressionError } from "../errors.js";

/** A parsed condition: a union on `type`. Nodes carry no positions, so equal text gives equal trees. */
export type ConditionAst =
  | { readonly type: "input"; readonly name: string }
  | { readonly type: "not"; readonly operand: ConditionAst }
  | { readonly type: "and"; readonly left: ConditionAst; readonly right: ConditionAst }
  | { readonly type: "or"; readonly left: ConditionAst; readonly right: ConditionAst };

/** Longest condition accepted; it bounds the depth of `&&`/`||` chains and so every walk of the tree. */
export const MAX_CONDITION_LENGTH = 4096;
/** Deepest nesting of parentheses and `!` accepted. */
export const MAX_CONDITION_NESTING = 64;

const TokenKind = {
  Name: "name",
  And: "&&",
  Or: "||",
  Not: "!",
  Open: "(",
  Close: ")",
  End: "end",
} as const;
type TokenKind = (typeof TokenKind)[keyof typeof TokenKind];

interface Token {
  kind: TokenKind;
  /** The name, for `name` tokens; the symbol otherwise. */
  text: string;
  /** 1-based. */
  column: number;
}

/**
 * Parses `text`. When `knownInputs` is given, every name must be one of them.
 *
 * Throws an `ExpressionError` with the 1-based `column` of the problem: `CONDITION_SYNTAX` for
 * the first syntax error (including an empty condition), or `CONDITION_UNKNOWN_INPUT` naming
 * every unknown input at once and listing the known ones (the column is the first unknown's).
 */
export function parseCondition(text: string, knownInputs?: readonly string[]): ConditionAst {
  if (typeof text !== "string") {
    throw new ExpressionError(
      ErrorCode.ConditionSyntax,
      `condition must be a string, got ${text === null ? "null" : typeof text}`,
      String(text),
    );
  }
  if (text.length > MAX_CONDITION_LENGTH) {
    throw syntaxError(
      text,
      `condition is ${text.length} characters long, more than the limit of ${MAX_CONDITION_LENGTH}`,
      MAX_CONDITION_LENGTH + 1,
    );
  }
  const parser = new Parser(text);
  const ast = parser.parse();
  if (knownInputs !== undefined) checkKnown(text, parser.firstColumn, knownInputs);
  return ast;
}

/** Distinct input names in order of first appearance. */
export function conditionInputs(ast: ConditionAst): string[] {
  const names = new Set<string>();
  walk(ast, false, (name) => names.add(name));
  return [...names];
}

/**
 * Distinct names that appear under an even number of negations (at least once), in order of
 * first appearance: the inputs whose pending events may be consumed when the condition fires.
 */
export function positiveInputs(ast: ConditionAst): string[] {
  const names = new Set<string>();
  walk(ast, false, (name, negated) => {
    if (!negated) names.add(name);
  });
  return [...names];
}

/** Evaluates with `truth(name)` as the value of each input; `&&` and `||` short-circuit. */
export function evaluateCondition(ast: ConditionAst, truth: (name: string) => boolean): boolean {
  switch (ast.type) {
    case "input":
      return truth(ast.name);
    case "not":
      return !evaluateCondition(ast.operand, truth);
    case "and":
      return evaluateCondition(ast.left, truth) && evaluateCondition(ast.right, truth);
    case "or":
      return evaluateCondition(ast.left, truth) || evaluateCondition(ast.right, truth);
  }
}

/**
 * When the condition is true, the positive inputs whose truth made it so, distinct and in order
 * of first appearance; `undefined` when it is false. `a && b` gives both; `a || b` gives its
 * first true branch only; negated parts give nothing (`a && !b` gives `a`) unless negated twice
 * (`!(!a || c)` gives `a`). These are the inputs whose pending events to consume on firing.
 */
export function satisfyingInputs(ast: ConditionAst, truth: (name: string) => boolean): string[] | undefined {
  const seen = new Map<string, boolean>();
  const value = (name: string): boolean => {
    let v = seen.get(name);
    if (v === undefined) {
      v = truth(name);
      seen.set(name, v);
    }
    return v;
  };
  // whyTrue: the true inputs that make `node` true; whyFalse: the true inputs that keep it false
  // (only a double negation can make a true input hold a negated part false).
  const whyTrue = (node: ConditionAst): string[] | undefined => {
    switch (node.type) {
      case "input":
        return value(node.name) ? [node.name] : undefined;
      case "not":
        return whyFalse(node.operand);
      case "and": {
        const left = whyTrue(node.left);
        if (left === undefined) return undefined;
        const right = whyTrue(node.right);
        return right === undefined ? undefined : [...left, ...right];
      }
      case "or":
        return whyTrue(node.left) ?? whyTrue(node.right);
    }
  };
  const whyFalse = (node: ConditionAst): string[] | undefined => {
    switch (node.type) {
      case "input":
        return value(node.name) ? undefined : [];
      case "not":
        return whyTrue(node.operand);
      case "and":
        return whyFalse(node.left) ?? whyFalse(node.right);
      case "or": {
        const left = whyFalse(node.left);
        if (left === undefined) return undefined;
        const right = whyFalse(node.right);
        return right === undefined ? undefined : [...left, ...right];
      }
    }
  };
  const names = whyTrue(ast);
  return names === undefined ? undefined : [...new Set(names)];
}

/**
 * Canonical text: one space around `&&` and `||`, parentheses only where precedence or
 * left-associativity needs them. `parseCondition(formatCondition(ast))` deep-equals `ast`.
 */
export function formatCondition(ast: ConditionAst): string {
  switch (ast.type) {
    case "input":
      return ast.name;
    case "not":
      return `!${ast.operand.type === "input" || ast.operand.type === "not" ? formatCondition(ast.operand) : `(${formatCondition(ast.operand)})`}`;
    case "and":
    case "or": {
      const op = ast.type === "and" ? "&&" : "||";
      const left =
        precedence(ast.left) < precedence(ast) ? `(${formatCondition(ast.left)})` : formatCondition(ast.left);
      // Same precedence on the right means the text had parentheses: `a && (b && c)`.
      const right =
        precedence(ast.right) <= precedence(ast) ? `(${formatCondition(ast.right)})` : formatCondition(ast.right);
      return `${left} ${op} ${right}`;
    }
  }
}

function precedence(node: ConditionAst): number {
  switch (node.type) {
    case "or":
      return 1;
    case "and":
      return 2;
    case "not":
      return 3;
    case "input":
      return 4;
  }
}

function walk(node: ConditionAst, negated: boolean, visit: (name: string, negated: boolean) => void): void {
  switch (node.type) {
    case "input":
      visit(node.name, negated);
      return;
    case "not":
      walk(node.operand, !negated, visit);
      return;
    case "and":
    case "or":
      walk(node.left, negated, visit);
      walk(node.right, negated, visit);
      return;
  }
}

function isNameStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f; // a-z A-Z _
}

function isNamePart(c: number): boolean {
  return isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e; // 0-9 - .
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/**
 * Scans one token at a time, on demand, so the error reported is always the leftmost one
 * (a bad character after a grammar error is never reached).
 */
class Lexer {
  private pos = 0;
  private ahead: Token | undefined;

  constructor(private readonly text: string) {}

  peek(): Token {
    this.ahead ??= this.scan();
    return this.ahead;
  }

  /** Returns the next token and moves past it; at the end it keeps returning the End token. */
  take(): Token {
    const tok = this.peek();
    if (tok.kind !== TokenKind.End) this.ahead = undefined;
    return tok;
  }

  private scan(): Token {
    const text = this.text;
    while (this.pos < text.length && isSpace(text.charCodeAt(this.pos))) this.pos++;
    const i = this.pos;
    const column = i + 1;
    if (i >= text.length) return { kind: TokenKind.End, text: "", column };
    const c = text.charCodeAt(i);
    if (isNameStart(c)) {
      let end = i + 1;
      while (end < text.length && isNamePart(text.charCodeAt(end))) end++;
      this.pos = end;
      return { kind: TokenKind.Name, text: text.slice(i, end), column };
    }
    const ch = text[i]!;
    if ((ch === "&" || ch === "|") && text[i + 1] === ch) {
      this.pos += 2;
      return { kind: ch === "&" ? TokenKind.And : TokenKind.Or, text: ch + ch, column };
    }
    this.pos++;
    switch (ch) {
      case "!":
        return { kind: TokenKind.Not, text: ch, column };
      case "(":
        return { kind: TokenKind.Open, text: ch, column };
      case ")":
        return { kind: TokenKind.Close, text: ch, column };
      case "&":
      case "|":
        throw syntaxError(
          text,
          `unexpected "${ch}" at column ${column} in ${quote(text)}: use ${ch}${ch} instead of ${ch}`,
          column,
        );
      default:
        if (isNamePart(c)) {
          throw syntaxError(
            text,
            `unexpected "${ch}" at column ${column} in ${quote(text)}: an input name starts with a letter or "_"`,
            column,
          );
        }
        throw syntaxError(
          text,
          `unexpected character ${JSON.stringify(ch)} at column ${column} in ${quote(text)}`,
          column,
        );
    }
  }
}

class Parser {
  /** Column of the first appearance of each name, for unknown-input errors. */
  readonly firstColumn = new Map<string, number>();
  private readonly lexer: Lexer;
  private nesting = 0;

  constructor(private readonly text: string) {
    this.lexer = new Lexer(text);
  }

  parse(): ConditionAst {
    if (this.peek().kind === TokenKind.End) {
      throw syntaxError(this.text, `empty condition: expected input names joined by &&, || or !`, 1);
    }
    const ast = this.parseOr();
    const tok = this.peek();
    if (tok.kind === TokenKind.Close) {
      throw syntaxError(
        this.text,
        `unexpected ")" at column ${tok.column} in ${quote(this.text)}: no "(" to close`,
        tok.column,
      );
    }
    if (tok.kind !== TokenKind.End) throw this.afterOperand(tok);
    return ast;
  }

  private peek(): Token {
    return this.lexer.peek();
  }

  private next(): Token {
    return this.lexer.take();
  }

  private parseOr(): ConditionAst {
    let left = this.parseAnd();
    while (this.peek().kind === TokenKind.Or) {
      this.next();
      left = { type: "or", left, right: this.parseAnd() };
    }
    return left;
  }

  private parseAnd(): ConditionAst {
    let left = this.parseUnary();
    while (this.peek().kind === TokenKind.And) {
      this.next();
      left = { type: "and", left, right: this.parseUnary() };
    }
    return left;
  }

  private parseUnary(): ConditionAst {
    const tok = this.next();
    switch (tok.kind) {
      case TokenKind.Not: {
        this.enter(tok);
        const operand = this.parseUnary();
        this.nesting--;
        return { type: "not", operand };
      }
      case TokenKind.Open: {
        this.enter(tok);
        const inner = this.parseOr();
        const close = this.peek();
        if (close.kind === TokenKind.End) {
          throw syntaxError(
            this.text,
            `unclosed "(" opened at column ${tok.column} in ${quote(this.text)}`,
            tok.column,
          );
        }
        if (close.kind !== TokenKind.Close) throw this.afterOperand(close);
        this.next();
        this.nesting--;
        return inner;
      }
      case TokenKind.Name: {
        const after = this.peek().kind;
        if (
          tok.text.toLowerCase() === "not" &&
          (after === TokenKind.Name || after === TokenKind.Not || after === TokenKind.Open)
        ) {
          throw syntaxError(
            this.text,
            `unexpected "${tok.text}" at column ${tok.column} in ${quote(this.text)}: use ! instead of ${tok.text}`,
            tok.column,
          );
        }
        if (!this.firstColumn.has(tok.text)) this.firstColumn.set(tok.text, tok.column);
        return { type: "input", name: tok.text };
      }
      case TokenKind.End:
        throw syntaxError(
          this.text,
          `expected an input name at column ${tok.column} in ${quote(this.text)}, got the end of the condition`,
          tok.column,
        );
      case TokenKind.Close:
      case TokenKind.And:
      case TokenKind.Or:
        throw syntaxError(
          this.text,
          `unexpected "${tok.text}" at column ${tok.column} in ${quote(this.text)}: expected an input name, "!" or "("`,
          tok.column,
        );
    }
  }

  private enter(tok: Token): void {
    this.nesting++;
    if (this.nesting > MAX_CONDITION_NESTING) {
      throw syntaxError(
        this.text,
        `condition nests "(" and "!" more than ${MAX_CONDITION_NESTING} deep at column ${tok.column} in ${quote(this.text)}`,
        tok.column,
      );
    }
  }

  /** The error for a token found where `&&`, `||`, `)` or the end was expected. */
  private afterOperand(tok: Token): ExpressionError {
    const where = `at column ${tok.column} in ${quote(this.text)}`;
    if (tok.kind === TokenKind.Name) {
      const lower = tok.text.toLowerCase();
      if (lower === "and" || lower === "or") {
        return syntaxError(
          this.text,
          `unexpected "${tok.text}" ${where}: use ${lower === "and" ? "&&" : "||"} instead of ${tok.text}`,
          tok.column,
        );
      }
      return syntaxError(
        this.text,
        `unexpected input name "${tok.text}" ${where}: expected && or || before it`,
        tok.column,
      );
    }
    return syntaxError(this.text, `unexpected "${tok.text}" ${where}: expected && or || before it`, tok.column);
  }
}

function checkKnown(text: string, firstColumn: ReadonlyMap<string, number>, knownInputs: readonly string[]): void {
  const known = new Set(knownInputs);
  const unknown = [...firstColumn.keys()].filter((name) => !known.has(name));
  const first = unknown[0];
  if (first === undefined) return;
  const names = unknown.map((n) => `"${n}"`).join(", ");
  const listed =
    knownInputs.length === 0 ? "no inputs are defined" : `known inputs: ${knownInputs.map((n) => `"${n}"`).join(", ")}`;
  throw new ExpressionError(
    ErrorCode.ConditionUnknownInput,
    `unknown input${unknown.length === 1 ? "" : "s"} ${names} in ${quote(text)}; ${listed}`,
    text,
    { column: firstColumn.get(first)! },
  );
}

function syntaxError(text: string, message: string, column: number): ExpressionError {
  return new ExpressionError(ErrorCode.ConditionSyntax, message, text, { column });
}

function quote(text: string): string {
  const shown = text.length > 120 ? `${text.slice(0, 120)}…` : text;
  return JSON.stringify(shown);
}
