/**
 * Structured logging (pino). The logger is injected everywhere (`logger.child({ component })`);
 * nothing logs through a global. `format: "pretty"` prints one readable line per record for
 * people running `ofevents run` (coloured on a terminal); `json` is for machines and containers.
 */
import { pino, type Logger as PinoLogger, type LevelWithSilent } from "pino";

export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;
export type LogFormat = "json" | "pretty";

export interface LoggerOptions {
  level?: string | undefined;
  format?: LogFormat | undefined;
  /** Where lines go (default process.stdout). */
  write?: ((line: string) => void) | undefined;
  /** Colour the pretty format (default: stdout is a terminal and NO_COLOR is unset or empty). */
  color?: boolean | undefined;
}

const LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);
// OpenFunction's logLevel is klog verbosity "1".."3".
const KLOG: Record<string, LogLevel> = { "0": "info", "1": "info", "2": "debug", "3": "trace" };

/** Maps a level name or OpenFunction's "1".."3" to a pino level; throws on anything else. */
export function toLogLevel(level: string | undefined, fallback: LogLevel = "info"): LogLevel {
  if (level === undefined || level === "") return fallback;
  const l = level.toLowerCase();
  if (LEVELS.has(l)) return l as LogLevel;
  const k = KLOG[l];
  if (k !== undefined) return k;
  throw new TypeError(`unknown log level "${level}" (use ${[...LEVELS].join(", ")} or "1".."3")`);
}

const LEVEL_NAMES: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO ",
  40: "WARN ",
  50: "ERROR",
  60: "FATAL",
};
// ANSI SGR colours per level: grey, cyan, green, yellow, red, white on red.
const LEVEL_COLORS: Record<number, string> = { 10: "90", 20: "36", 30: "32", 40: "33", 50: "31", 60: "97;41" };
const DIM = "2";
const SKIP = new Set(["level", "time", "msg", "pid", "hostname", "component"]);

function paint(color: boolean, sgr: string | undefined, text: string): string {
  return color && sgr !== undefined ? `\u001b[${sgr}m${text}\u001b[0m` : text;
}

function isCloudEvent(v: unknown): v is Record<string, unknown> {
  return (
    typeof v === "object" &&
    v !== null &&
    "specversion" in v &&
    typeof (v as Record<string, unknown>)["id"] === "string"
  );
}

/** An event in a pretty line without its data: `event(id=… type=… subject=…)`. */
function shortEvent(ev: Record<string, unknown>): string {
  const parts = ["id", "type", "subject"].filter((k) => typeof ev[k] === "string").map((k) => `${k}=${String(ev[k])}`);
  return `event(${parts.join(" ")})`;
}

interface PrettyOptions {
  color: boolean;
  /** Print whole CloudEvents, data included (at debug and trace); otherwise their id, type and subject. */
  eventData: boolean;
}

function prettyLine(json: string, o: PrettyOptions): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const t = new Date(typeof rec["time"] === "number" ? rec["time"] : Date.now()).toISOString().slice(11, 23);
  const level = rec["level"] as number;
  const lvl = paint(o.color, LEVEL_COLORS[level], LEVEL_NAMES[level] ?? String(level));
  const comp = typeof rec["component"] === "string" ? ` ${paint(o.color, DIM, `[${rec["component"]}]`)}` : "";
  const fields = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => {
      if (k === "err" && typeof v === "object" && v !== null) {
        const e = v as Record<string, unknown>;
        return `err=${JSON.stringify(e["message"] ?? e)}${typeof e["code"] === "string" ? ` code=${e["code"]}` : ""}`;
      }
      if (!o.eventData && isCloudEvent(v)) return `${k}=${shortEvent(v)}`;
      return `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`;
    });
  const rest = fields.length > 0 ? `  ${paint(o.color, DIM, fields.join(" "))}` : "";
  return `${paint(o.color, DIM, t)} ${lvl}${comp} ${String(rec["msg"] ?? "")}${rest}\n`;
}

/** Colour by default on a terminal, unless NO_COLOR is set to something (https://no-color.org). */
function colorByDefault(): boolean {
  const noColor = process.env["NO_COLOR"];
  return process.stdout.isTTY === true && (noColor === undefined || noColor === "");
}

/**
 * Creates the root logger. `json` writes pino's records unchanged. `pretty` writes one line per
 * record; its level is coloured when `color` is true (default: stdout is a terminal and NO_COLOR
 * is not set), and a CloudEvent in a field is shortened to its id, type and subject unless the
 * level is debug or trace.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = toLogLevel(options.level);
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const pretty = (options.format ?? "json") === "pretty";
  const o: PrettyOptions = {
    color: options.color ?? colorByDefault(),
    eventData: level === "debug" || level === "trace",
  };
  return pino(
    { level, base: null, timestamp: pino.stdTimeFunctions.epochTime, formatters: { level: (_l, n) => ({ level: n }) } },
    { write: (line: string) => write(pretty ? prettyLine(line, o) : line) },
  );
}

/** A logger that drops everything (tests). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

/**
 * The logger of one EventSource or Trigger: a child of `logger` at the level its `spec.logLevel` names (OpenFunction's "1".."3" or
 * debug/info/warn/error; see toLogLevel), or at `logger`'s level when it names none. Throws a
 * TypeError for an unknown level (validation reports it first).
 */
export function resourceLogger(
  logger: Logger,
  resource: {
    kind: string;
    metadata: { name: string; namespace?: string | undefined };
    spec: { logLevel?: string | undefined };
  },
): Logger {
  // The runtimes bind the resource's name themselves (`eventSource` / `trigger`).
  const bindings = {};
  const level = resource.spec.logLevel;
  if (level === undefined || level === "") return logger.child(bindings);
  return logger.child(bindings, { level: toLogLevel(level) });
}
