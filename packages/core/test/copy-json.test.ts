/**
 * copyJson: the copy an event gets by crossing a bus, without the JSON text in between. It must
 * equal JSON.parse(JSON.stringify(v)) for every value (the memory bus's events are what a
 * durable bus would hand over) and share nothing with the original.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { copyJson } from "../src/index.js";

const viaText = (v: unknown): unknown => {
  const t = JSON.stringify(v) as string | undefined;
  return t === undefined ? undefined : JSON.parse(t);
};

/** Deep equality that tells -0 from 0, own "__proto__" from a prototype, and checks prototypes. */
function same(a: unknown, b: unknown): boolean {
  if (typeof a !== "object" || a === null || typeof b !== "object" || b === null) return Object.is(a, b);
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Reflect.ownKeys(a);
  const kb = Reflect.ownKeys(b);
  if (ka.length !== kb.length || ka.some((k, i) => k !== kb[i])) return false;
  return ka.every((k) => same((a as Record<string | symbol, unknown>)[k], (b as Record<string | symbol, unknown>)[k]));
}

describe("copyJson", () => {
  it("copy json - equals the JSON round trip for values JSON treats specially", () => {
    const proto = JSON.parse('{"__proto__": {"x": 1}, "a": 2}') as unknown;
    class Point {
      constructor(
        readonly x: number,
        readonly y: number,
      ) {}
    }
    const cases: unknown[] = [
      { a: -0, b: [-0], c: NaN, d: Infinity, e: -Infinity },
      { zero: -0 },
      [-0, 1],
      { a: undefined, b: [undefined, 1], c: () => 1, d: Symbol("s") },
      [1, , 3], // eslint-disable-line no-sparse-arrays
      { when: new Date(0), buf: Buffer.from("hi"), bytes: new Uint8Array([1, 2]) },
      { boxed: new String("s"), n: new Number(2), b: new Boolean(false) },
      Object.assign(Object.create(null) as object, { a: 1 }),
      { custom: { toJSON: () => "custom" } },
      { toJSON: "just a field" },
      proto,
      { 2: "b", 1: "a", z: 1, y: 2 },
      { s: "\ud800 lone surrogate, \u0000 nul, emoji \u{1f600}" },
      new Point(1, 2),
      { map: new Map([[1, 2]]), set: new Set([1]) },
      "text",
      12.5,
      null,
      true,
    ];
    for (const v of cases) expect(same(copyJson(v), viaText(v)), JSON.stringify(viaText(v))).toBe(true);
    expect(copyJson(undefined)).toBeUndefined();
    // JSON.parse makes "__proto__" an own property; the copy must not set a prototype instead.
    expect(Object.getPrototypeOf(copyJson(proto))).toBe(Object.prototype);
    expect(Object.keys(copyJson(proto) as object)).toEqual(["__proto__", "a"]);
  });

  it("copy json - throws what JSON.stringify throws: a cycle, a BigInt", () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic["self"] = cyclic;
    expect(() => copyJson(cyclic)).toThrow(TypeError);
    expect(() => copyJson({ n: 1n })).toThrow(TypeError);
  });

  it("copy json - shares nothing with the original", () => {
    const ev = { id: "1", data: { order: { items: [{ sku: "a" }] } } };
    const c = copyJson(ev);
    expect(c).toEqual(ev);
    c.data.order.items[0]!.sku = "changed";
    expect(ev.data.order.items[0]!.sku).toBe("a");
    expect(c.data).not.toBe(ev.data);
  });

  it("copy json - deep nesting past the walk's limit still copies (through JSON)", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 1500; i++) deep = { d: deep };
    expect(same(copyJson(deep), viaText(deep))).toBe(true);
  });

  it("copy json - equals the JSON round trip for any JSON-like value (property)", () => {
    const anyValue = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        fc.constantFrom(null, true, false, undefined, -0, NaN, Infinity),
        fc.double(),
        fc.string({ unit: "binary" }),
        fc.array(tie("value"), { maxLength: 5 }),
        fc.dictionary(fc.string(), tie("value"), { maxKeys: 5 }),
        fc.date({ noInvalidDate: true }),
      ),
    })).value;
    fc.assert(
      fc.property(anyValue, (v) => same(copyJson(v), viaText(v))),
      { numRuns: 2000 },
    );
  });
});
