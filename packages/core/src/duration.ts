/**
 * Durations in manifests: ISO-8601 (`PT0.5S`, `PT5M`, as in Knative's delivery spec) or Go-style
 * (`500ms`, `2s`, `5m`, `1h30m`, as in Dapr metadata and OpenFunction's `@every 2s`).
 */

const GO_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const GO_RE = /^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$/;
const GO_PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const ISO_RE = /^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

/** Parses a duration to milliseconds; returns undefined when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (t === "") return undefined;
  if (GO_RE.test(t)) {
    let ms = 0;
    for (const m of t.matchAll(GO_PART_RE)) ms += Number(m[1]) * GO_UNITS[m[2]!]!;
    return ms;
  }
  const iso = ISO_RE.exec(t);
  if (iso !== null && t !== "P" && !t.endsWith("T")) {
    const [, d, h, m, s] = iso;
    return Number(d ?? 0) * 86_400_000 + Number(h ?? 0) * 3_600_000 + Number(m ?? 0) * 60_000 + Number(s ?? 0) * 1000;
  }
  return undefined;
}

/** Like parseDuration, but throws a TypeError naming the text. */
export function durationMs(text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) throw new TypeError(`"${text}" is not a duration (use e.g. "500ms", "2s", "5m" or "PT5M")`);
  return ms;
}

/**
 * A point in a bus's history, as `replay --from/--to` and a Replay's spec take it: an RFC 3339
 * time, or a duration counted back from `reference` (`90m` → 90 minutes before it). Undefined
 * for anything else.
 */
export function parseHistoryTime(text: string, reference: Date): Date | undefined {
  const ago = parseDuration(text);
  if (ago !== undefined) return new Date(reference.getTime() - ago);
  if (/^\d{4}-\d\d-\d\dT/.test(text) && !Number.isNaN(Date.parse(text))) return new Date(text);
  return undefined;
}
