import { describe, expect, it } from "vitest";
import { createLogger, resourceLogger } from "../src/index.js";

function capture(level = "info") {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level, write: (l) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { logger, lines };
}

const resource = (logLevel: string | undefined, kind = "EventSource") => ({
  kind,
  metadata: { name: "shop", namespace: "prod" },
  spec: logLevel === undefined ? {} : { logLevel },
});

describe("resource logger - spec.logLevel sets the resource's level", () => {
  it.each([
    { name: 'OpenFunction\'s "1" is info', logLevel: "1", kind: "EventSource", logged: ["info", "warn", "error"] },
    {
      name: 'OpenFunction\'s "2" is debug',
      logLevel: "2",
      kind: "Trigger",
      logged: ["debug", "info", "warn", "error"],
    },
    {
      name: 'OpenFunction\'s "3" is trace',
      logLevel: "3",
      kind: "EventSource",
      logged: ["trace", "debug", "info", "warn", "error"],
    },
    { name: "warn", logLevel: "warn", kind: "Trigger", logged: ["warn", "error"] },
    { name: "error", logLevel: "ERROR", kind: "EventSource", logged: ["error"] },
    { name: "absent: the parent's level", logLevel: undefined, kind: "Trigger", logged: ["info", "warn", "error"] },
  ])("resource logger - $name", ({ logLevel, kind, logged }) => {
    const { logger, lines } = capture("info");
    const log = resourceLogger(logger, resource(logLevel, kind));
    for (const l of ["trace", "debug", "info", "warn", "error"] as const) log[l](l);
    expect(lines.map((l) => l["msg"])).toEqual(logged);
    // The parent keeps its own level.
    logger.debug("parent debug");
    expect(lines.map((l) => l["msg"])).not.toContain("parent debug");
  });

  it("resource logger - an unknown level is a TypeError naming it", () => {
    const { logger } = capture();
    expect(() => resourceLogger(logger, resource("loud"))).toThrow(/unknown log level "loud"/);
  });
});
