/**
 * Error classes shared by every package. Each error has a stable `code` (documented in
 * docs/errors.md), a `retriable` flag that retry and dead-letter logic branch on, and an
 * optional `cause`. Never branch on `message`.
 */

/** Stable error codes. A test checks that each one is documented in docs/errors.md. */
export const ErrorCode = {
  ManifestInvalid: "MANIFEST_INVALID",
  ManifestUnreadable: "MANIFEST_UNREADABLE",
  ExpressionSyntax: "EXPRESSION_SYNTAX",
  ExpressionEvaluation: "EXPRESSION_EVALUATION",
  ExpressionLimit: "EXPRESSION_LIMIT",
  ExpressionType: "EXPRESSION_TYPE",
  ConditionSyntax: "CONDITION_SYNTAX",
  ConditionUnknownInput: "CONDITION_UNKNOWN_INPUT",
  EventInvalid: "EVENT_INVALID",
  BusClosed: "BUS_CLOSED",
  BusPublish: "BUS_PUBLISH",
  BusSubscribe: "BUS_SUBSCRIBE",
  BusUnreachable: "BUS_UNREACHABLE",
  DeliveryFailed: "DELIVERY_FAILED",
  DeliveryRejected: "DELIVERY_REJECTED",
  DeliveryTimeout: "DELIVERY_TIMEOUT",
  SourceStart: "SOURCE_START",
  SourceUnsupported: "SOURCE_UNSUPPORTED",
  FunctionLoad: "FUNCTION_LOAD",
  Config: "CONFIG",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface OfEventsErrorOptions extends ErrorOptions {
  retriable?: boolean;
}

/** Base class of every error this project throws on purpose. */
export class OfEventsError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;

  constructor(code: ErrorCode, message: string, options: OfEventsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** One problem found in a manifest or an expression: data with a path, printed one per line. */
export interface ValidationIssue {
  code: string;
  /** Dotted field path inside the resource, e.g. `spec.subscribers.0.condition`. */
  path: string;
  message: string;
  /** The file as it was named (relative when given relative). */
  file?: string;
  /** 1-based line of the field where known, else of the document's start. */
  line?: number;
  /** 0-based index of the document in the file. */
  docIndex?: number;
  kind?: string;
  name?: string;
}

/**
 * Formats an issue as `file:line Kind/name: path: message`. Without a line, a document index is
 * printed 1-based as `file (document n)`.
 */
export function formatIssue(issue: ValidationIssue): string {
  const where: string[] = [];
  if (issue.file !== undefined)
    where.push(
      issue.line !== undefined
        ? `${issue.file}:${issue.line}`
        : issue.docIndex === undefined
          ? issue.file
          : `${issue.file} (document ${issue.docIndex + 1})`,
    );
  if (issue.kind !== undefined || issue.name !== undefined) where.push(`${issue.kind ?? "?"}/${issue.name ?? "?"}`);
  const prefix = where.length > 0 ? `${where.join(" ")}: ` : "";
  return `${prefix}${issue.path === "" ? "" : `${issue.path}: `}${issue.message}`;
}

/** A manifest (or set of manifests) failed validation; `issues` lists every problem found. */
export class ManifestError extends OfEventsError {
  readonly issues: ValidationIssue[];
  constructor(issues: ValidationIssue[], options: OfEventsErrorOptions = {}) {
    super(
      ErrorCode.ManifestInvalid,
      issues.length === 1
        ? formatIssue(issues[0]!)
        : `${issues.length} problems:\n${issues.map(formatIssue).join("\n")}`,
      options,
    );
    this.issues = issues;
  }
}

/** A JSONata expression or a condition could not be compiled or evaluated. */
export class ExpressionError extends OfEventsError {
  readonly expression: string;
  /** 1-based column of the problem, where known. */
  readonly column: number | undefined;
  constructor(
    code: ErrorCode,
    message: string,
    expression: string,
    options: OfEventsErrorOptions & { column?: number } = {},
  ) {
    super(code, message, options);
    this.expression = expression;
    this.column = options.column;
  }
}

/** The bus could not take or hand out an event. Retriable unless the bus was closed. */
export class BusError extends OfEventsError {
  readonly topic: string | undefined;
  constructor(code: ErrorCode, message: string, options: OfEventsErrorOptions & { topic?: string } = {}) {
    super(code, message, { retriable: code !== ErrorCode.BusClosed, ...options });
    this.topic = options.topic;
  }
  static closed(topic?: string): BusError {
    return new BusError(ErrorCode.BusClosed, "event bus is closed", topic === undefined ? {} : { topic });
  }
}

/** Delivery to a sink failed. `status` is the HTTP status where there was an answer. */
export class DeliveryError extends OfEventsError {
  readonly sink: string;
  readonly status: number | undefined;
  /** Milliseconds the sink asked us to wait (Retry-After), where it did. */
  readonly retryAfterMs: number | undefined;
  constructor(
    code: ErrorCode,
    message: string,
    sink: string,
    options: OfEventsErrorOptions & { status?: number; retryAfterMs?: number } = {},
  ) {
    super(code, message, options);
    this.sink = sink;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** An incoming event is malformed (a client's error: answered 4xx, never fatal). */
export class EventError extends OfEventsError {
  constructor(message: string, options: OfEventsErrorOptions = {}) {
    super(ErrorCode.EventInvalid, message, options);
  }
}

/** An EventSource adapter could not be configured or started. */
export class SourceError extends OfEventsError {
  readonly source: string;
  constructor(code: ErrorCode, message: string, source: string, options: OfEventsErrorOptions = {}) {
    super(code, message, options);
    this.source = source;
  }
}

/** Returns true when `err` is one of ours with the given code. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof OfEventsError && err.code === code;
}
