/**
 * Structured logging (pino). The logger is injected everywhere (`logger.child({ component })`);
 * nothing logs through a global. `format: "pretty"` prints one readable line per record for
 * people running `ofevents run`; `json` is for machines and containers.
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
const SKIP = new Set(["level", "time", "msg", "pid", "hostname", "component"]);

function prettyLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const t = new Date(typeof rec["time"] === "number" ? rec["time"] : Date.now()).toISOString().slice(11, 23);
  const lvl = LEVEL_NAMES[rec["level"] as number] ?? String(rec["level"]);
  const comp = typeof rec["component"] === "string" ? ` [${rec["component"]}]` : "";
  const fields = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => {
      if (k === "err" && typeof v === "object" && v !== null) {
        const e = v as Record<string, unknown>;
        return `err=${JSON.stringify(e["message"] ?? e)}${typeof e["code"] === "string" ? ` code=${e["code"]}` : ""}`;
      }
      return `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`;
    });
  return `${t} ${lvl}${comp} ${String(rec["msg"] ?? "")}${fields.length > 0 ? `  ${fields.join(" ")}` : ""}\n`;
}

/** Creates the root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = toLogLevel(options.level);
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const pretty = (options.format ?? "json") === "pretty";
  return pino(
    { level, base: null, timestamp: pino.stdTimeFunctions.epochTime, formatters: { level: (_l, n) => ({ level: n }) } },
    { write: (line: string) => write(pretty ? prettyLine(line) : line) },
  );
}

/** A logger that drops everything (tests). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

/**
 * The logger of one EventSource or Trigger: a child of `logger` bound to the resource's kind,
 * namespace and name, at the level its `spec.logLevel` names (OpenFunction's "1".."3" or
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
  const bindings = {
    kind: resource.kind,
    namespace: resource.metadata.namespace ?? "default",
    name: resource.metadata.name,
  };
  const level = resource.spec.logLevel;
  if (level === undefined || level === "") return logger.child(bindings);
  return logger.child(bindings, { level: toLogLevel(level) });
}
