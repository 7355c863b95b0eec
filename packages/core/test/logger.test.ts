import { afterEach, describe, expect, it, vi } from "vitest";
import { createLogger, type LogFormat } from "../src/index.js";

const EVENT = {
  specversion: "1.0",
  id: "o-1",
  source: "/apis/v1/namespaces/default/eventsources/orders",
  type: "com.example.order",
  subject: "created",
  datacontenttype: "application/json",
  data: { id: "o-1", amount: 300, note: "a long payload that makes every line long" },
};

function capture(options: { level?: string; format?: LogFormat; color?: boolean }): {
  lines: string[];
  log: ReturnType<typeof createLogger>;
} {
  const lines: string[] = [];
  return { lines, log: createLogger({ ...options, write: (l) => void lines.push(l) }) };
}

const ESC = "\u001b[";

describe("logger - pretty format", () => {
  const isTTY = Object.getOwnPropertyDescriptor(process.stdout, "isTTY");
  afterEach(() => {
    vi.unstubAllEnvs();
    if (isTTY === undefined) delete (process.stdout as { isTTY?: boolean }).isTTY;
    else Object.defineProperty(process.stdout, "isTTY", isTTY);
  });

  it("logger - colour colours the level (and dims the rest); without it there are no escape codes", () => {
    const coloured = capture({ format: "pretty", color: true });
    coloured.log.warn({ port: 1 }, "careful");
    coloured.log.error("broken");
    expect(coloured.lines[0]).toContain(`${ESC}33mWARN ${ESC}0m`);
    expect(coloured.lines[1]).toContain(`${ESC}31mERROR${ESC}0m`);
    const plain = capture({ format: "pretty", color: false });
    plain.log.warn({ port: 1 }, "careful");
    expect(plain.lines[0]).not.toContain(ESC);
    expect(plain.lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN {2}careful {2}port=1\n$/);
  });

  it.each([
    { name: "on a terminal", tty: true, noColor: undefined, colour: true },
    { name: "on a terminal with NO_COLOR=1", tty: true, noColor: "1", colour: false },
    { name: "on a terminal with an empty NO_COLOR", tty: true, noColor: "", colour: true },
    { name: "not on a terminal", tty: false, noColor: undefined, colour: false },
  ])("logger - by default, pretty lines are coloured $name: $colour", ({ tty, noColor, colour }) => {
    Object.defineProperty(process.stdout, "isTTY", { value: tty, configurable: true, writable: true });
    if (noColor === undefined) vi.stubEnv("NO_COLOR", undefined);
    else vi.stubEnv("NO_COLOR", noColor);
    const { lines, log } = capture({ format: "pretty" });
    log.info("hello");
    expect(lines[0]!.includes(ESC)).toBe(colour);
  });

  it("logger - an event in a field shows its id, type and subject at info, and its data only at debug", () => {
    const info = capture({ format: "pretty", color: false, level: "info" });
    info.log.info({ fn: "big-orders", received: EVENT }, "big order");
    expect(info.lines[0]).toContain("received=event(id=o-1 type=com.example.order subject=created)");
    expect(info.lines[0]).not.toContain("long payload");
    const debug = capture({ format: "pretty", color: false, level: "debug" });
    debug.log.info({ fn: "big-orders", received: EVENT }, "big order");
    expect(debug.lines[0]).toContain(`received=${JSON.stringify(EVENT)}`);
  });

  it("logger - the JSON format is pino's record, unchanged: no colour, the whole event", () => {
    Object.defineProperty(process.stdout, "isTTY", { value: true, configurable: true, writable: true });
    const { lines, log } = capture({ format: "json", color: true });
    log.info({ received: EVENT }, "big order");
    expect(lines[0]).not.toContain(ESC);
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(rec).toEqual({ level: 30, time: expect.any(Number), received: EVENT, msg: "big order" });
  });
});
