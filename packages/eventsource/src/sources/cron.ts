/**
 * The cron source: OpenFunction's `schedule` syntax (`@every 2s`, macros such as `@hourly`, and
 * 5- or 6-field cron expressions through croner). Each tick's event id is derived from the
 * scheduled time, so a tick dispatched twice is recognisable downstream.
 */
import { Cron } from "croner";
import { SourceKind, parseDuration, type CronSpec, type ValidationIssue } from "@ofevents/core";
import type { Dispatch, RunningSource, SourceAdapter, SourceContext } from "../types.js";

const EVERY = /^@every\s+(\S+)$/;

/** Returns the interval of an `@every` schedule in ms, or undefined for a cron expression. */
export function everyInterval(schedule: string): number | undefined {
  const m = EVERY.exec(schedule.trim());
  if (m === null) return undefined;
  return parseDuration(m[1]!);
}

function checkTimezone(tz: string): string | undefined {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return undefined;
  } catch {
    return `"${tz}" is not an IANA time zone (e.g. Europe/Berlin, UTC)`;
  }
}

function checkSchedule(spec: CronSpec): string | undefined {
  const s = spec.schedule.trim();
  if (s.startsWith("@every")) {
    const ms = everyInterval(s);
    if (ms === undefined) return `"${s}": @every needs a duration such as "2s" or "1m30s"`;
    if (ms < 10) return `"${s}": interval below 10ms`;
    return undefined;
  }
  const fields = s.split(/\s+/).length;
  if (!s.startsWith("@") && fields !== 5 && fields !== 6) return `"${s}": expected 5 or 6 fields, got ${fields}`;
  try {
    new Cron(s, { paused: true, ...(spec.timezone === undefined ? {} : { timezone: spec.timezone }) }).stop();
  } catch (err) {
    return `"${s}": ${(err as Error).message}`;
  }
  return undefined;
}

export const cronAdapter: SourceAdapter<CronSpec> = {
  kind: SourceKind.Cron,

  validate(spec) {
    const issues: ValidationIssue[] = [];
    const tz = spec.timezone === undefined ? undefined : checkTimezone(spec.timezone);
    if (tz !== undefined) return [{ code: "invalid_value", path: "timezone", message: tz }];
    const problem = checkSchedule(spec);
    if (problem !== undefined) issues.push({ code: "invalid_value", path: "schedule", message: problem });
    return issues;
  },

  async start(ctx: SourceContext, spec: CronSpec, dispatch: Dispatch): Promise<RunningSource> {
    const inFlight = new Set<Promise<unknown>>();
    const idBase = `${ctx.namespace}/${ctx.eventSource}/${ctx.eventName}`;
    const tick = (scheduled: Date): void => {
      if (ctx.signal.aborted) return;
      const time = scheduled.toISOString();
      const p = dispatch({
        id: `${idBase}@${time}`,
        time,
        data: spec.data ?? { scheduledTime: time },
      }).catch((err: unknown) => ctx.logger.error({ err, scheduledTime: time }, "cron tick not delivered"));
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    };

    const every = everyInterval(spec.schedule);
    let stopTimer: () => void;
    if (every !== undefined) {
      // Aligned to the start, without drift: tick n is due at start + n·interval.
      const start = Date.now();
      let n = 1;
      let timer: NodeJS.Timeout;
      const schedule = (): void => {
        const due = start + n * every;
        timer = setTimeout(
          () => {
            tick(new Date(due));
            n = Math.max(n + 1, Math.floor((Date.now() - start) / every) + 1);
            schedule();
          },
          Math.max(0, due - Date.now()),
        );
      };
      schedule();
      stopTimer = () => clearTimeout(timer);
    } else {
      const job = new Cron(
        spec.schedule,
        { ...(spec.timezone === undefined ? {} : { timezone: spec.timezone }) },
        (self: Cron) => {
          const prev = self.currentRun() ?? new Date();
          tick(prev);
        },
      );
      stopTimer = () => job.stop();
    }
    return {
      async stop() {
        stopTimer();
        await Promise.allSettled([...inFlight]);
      },
    };
  },
};
