/**
 * Reads a time written with a Go layout (`time.Parse`), as OpenFunction's natsStreaming
 * `startAtTime` / `startAtTimeFormat` pair is (Dapr's NATS Streaming component parsed it so). The
 * layout's elements are Go's reference time, Mon Jan 2 15:04:05 MST 2006; the common ones are
 * supported, see GO_ELEMENTS. A time without a zone is UTC, as in Go.
 */

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const MONTH_NAMES = [
  "january",
  "february",
  "march",
  "april",
  "may",
  "june",
  "july",
  "august",
  "september",
  "october",
  "november",
  "december",
];

type Field = "year" | "year2" | "month" | "monthName" | "day" | "hour" | "hour12" | "minute" | "second" | "frac";
type Element = { re: string; field?: Field | "ampm" | "zone" };

/** Layout elements, longest first so that "2006" is not read as "2" and "006". */
const GO_ELEMENTS: Array<[string, Element]> = [
  ["January", { re: "[A-Za-z]+", field: "monthName" }],
  ["Monday", { re: "[A-Za-z]+" }],
  ["Z07:00", { re: "Z|[+-]\\d{2}:\\d{2}", field: "zone" }],
  ["-07:00", { re: "[+-]\\d{2}:\\d{2}", field: "zone" }],
  ["Z0700", { re: "Z|[+-]\\d{4}", field: "zone" }],
  ["-0700", { re: "[+-]\\d{4}", field: "zone" }],
  ["2006", { re: "\\d{4}", field: "year" }],
  ["Jan", { re: "[A-Za-z]{3}", field: "monthName" }],
  ["Mon", { re: "[A-Za-z]{3}" }],
  ["MST", { re: "UTC|GMT|Z", field: "zone" }],
  ["_2", { re: " ?\\d{1,2}", field: "day" }],
  ["01", { re: "\\d{2}", field: "month" }],
  ["02", { re: "\\d{2}", field: "day" }],
  ["03", { re: "\\d{2}", field: "hour12" }],
  ["04", { re: "\\d{2}", field: "minute" }],
  ["05", { re: "\\d{2}", field: "second" }],
  ["06", { re: "\\d{2}", field: "year2" }],
  ["15", { re: "\\d{1,2}", field: "hour" }],
  ["PM", { re: "AM|PM", field: "ampm" }],
  ["pm", { re: "am|pm", field: "ampm" }],
  ["1", { re: "\\d{1,2}", field: "month" }],
  ["2", { re: "\\d{1,2}", field: "day" }],
  ["3", { re: "\\d{1,2}", field: "hour12" }],
  ["4", { re: "\\d{1,2}", field: "minute" }],
  ["5", { re: "\\d{1,2}", field: "second" }],
];

/** Go's RFC 3339 layout, used when no layout is given. */
export const GO_RFC3339 = "2006-01-02T15:04:05Z07:00";

/**
 * The instant `value` denotes under the Go `layout` (default RFC 3339, fractional seconds
 * allowed), or undefined when it does not match.
 */
export function parseGoTime(value: string, layout: string = GO_RFC3339): Date | undefined {
  const fields: Array<Element["field"]> = [];
  let re = "";
  let i = 0;
  while (i < layout.length) {
    // Fractional seconds: ".000" (exact digits) or ".999" (optional), after a seconds element.
    const frac = /^[.,](0+|9+)/.exec(layout.slice(i));
    if (frac !== null) {
      re += frac[1]!.startsWith("0") ? `[.,](\\d{${frac[1]!.length}})` : "(?:[.,](\\d+))?";
      fields.push("frac");
      i += frac[0].length;
      continue;
    }
    const hit = GO_ELEMENTS.find(([token]) => layout.startsWith(token, i));
    if (hit !== undefined) {
      const [token, el] = hit;
      re += `(${el.re})`;
      fields.push(el.field);
      i += token.length;
      continue;
    }
    re += layout[i]!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    i++;
  }
  // RFC 3339 accepts fractional seconds even though its layout names none (Go does the same).
  if (layout === GO_RFC3339) {
    re = re.replace("(\\d{2})(Z|", "(\\d{2})(?:[.,](\\d+))?(Z|");
    fields.splice(6, 0, "frac");
  }
  const m = new RegExp(`^${re}$`).exec(value.trim());
  if (m === null) return undefined;
  let year = 0;
  let month = 1;
  let day = 1;
  let hour = 0;
  let minute = 0;
  let second = 0;
  let ms = 0;
  let pm: boolean | undefined;
  let offsetMin = 0;
  for (let k = 0; k < fields.length; k++) {
    const text = m[k + 1];
    const field = fields[k];
    if (text === undefined || field === undefined) continue;
    const n = Number(text.trim());
    switch (field) {
      case "year":
        year = n;
        break;
      case "year2":
        year = n >= 69 ? 1900 + n : 2000 + n;
        break;
      case "month":
        month = n;
        break;
      case "monthName": {
        const t = text.toLowerCase();
        const idx = t.length === 3 ? MONTHS.indexOf(t) : MONTH_NAMES.indexOf(t);
        if (idx < 0) return undefined;
        month = idx + 1;
        break;
      }
      case "day":
        day = n;
        break;
      case "hour":
        hour = n;
        break;
      case "hour12":
        hour = n % 12;
        break;
      case "minute":
        minute = n;
        break;
      case "second":
        second = n;
        break;
      case "frac":
        ms = Math.floor(Number(`0.${text}`) * 1000);
        break;
      case "ampm":
        pm = text.toLowerCase() === "pm";
        break;
      case "zone":
        if (/^[+-]/.test(text)) {
          const digits = text.replace(":", "");
          const sign = digits.startsWith("-") ? -1 : 1;
          offsetMin = sign * (Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5)));
        }
        break;
    }
  }
  if (pm === true) hour += 12;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return undefined;
  const utc = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  const date = new Date(utc - offsetMin * 60_000);
  // Reject days past the month's end (Go does): Feb 30 must not become Mar 2.
  if (new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day) return undefined;
  return date;
}
