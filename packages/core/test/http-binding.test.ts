import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CE_JSON_CONTENT_TYPE,
  EventError,
  decodeHeaderValue,
  encodeBinary,
  encodeHeaderValue,
  encodeStructured,
  newEvent,
  type CloudEvent,
} from "../src/index.js";

describe("http binding - header values", () => {
  it("http binding - the spec's example: space, euro sign and emoji are percent-encoded as UTF-8", () => {
    const text = "Euro \u20ac \u{1f600}";
    expect(encodeHeaderValue(text)).toBe("Euro%20%E2%82%AC%20%F0%9F%98%80");
    expect(decodeHeaderValue("Euro%20%E2%82%AC%20%F0%9F%98%80")).toBe(text);
    expect(decodeHeaderValue("Euro%20%e2%82%ac%20%f0%9f%98%80")).toBe(text);
  });

  it("http binding - double-quote and percent are encoded; other printable ASCII is kept", () => {
    expect(encodeHeaderValue('a"b%c')).toBe("a%22b%25c");
    const printable = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i))
      .filter((c) => c !== '"' && c !== "%")
      .join("");
    expect(encodeHeaderValue(printable)).toBe(printable);
    expect(encodeHeaderValue("\t\n\u007f")).toBe("%09%0A%7F");
  });

  it("http binding - any string survives encode then decode, and the encoded form is a valid header value", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (s) => {
        const encoded = encodeHeaderValue(s);
        expect(encoded).toMatch(/^[\x21-\x7e]*$/);
        expect(decodeHeaderValue(encoded)).toBe(s);
      }),
      { numRuns: 5_000, seed: 20261122 },
    );
  });

  it("http binding - decoding unquotes quoted strings, keeps a stray percent and refuses bytes that are not UTF-8", () => {
    expect(decodeHeaderValue('"a \\"quoted\\" value"')).toBe('a "quoted" value');
    expect(decodeHeaderValue("100%")).toBe("100%");
    expect(decodeHeaderValue("50%zz")).toBe("50%zz");
    for (const bad of ["%C0%A0", "%FF", "%E2%82"]) {
      expect(() => decodeHeaderValue(bad), bad).toThrow(EventError);
    }
  });
});

describe("http binding - messages", () => {
  const base = {
    specversion: "1.0",
    id: "e 1",
    source: "/s",
    type: "t",
    time: "2026-11-22T10:00:00.123456789+02:00",
  };

  it("http binding - binary mode: every attribute a ce- header, time kept exactly, JSON data as the body", () => {
    const ev = {
      ...base,
      subject: "caf\u00e9",
      datacontenttype: "application/json",
      data: { n: 1 },
      flag: true,
      count: 7,
    };
    const m = encodeBinary(ev as unknown as CloudEvent);
    expect(m.headers).toEqual({
      "ce-specversion": "1.0",
      "ce-id": "e%201",
      "ce-source": "/s",
      "ce-type": "t",
      "ce-time": "2026-11-22T10:00:00.123456789+02:00",
      "ce-subject": "caf%C3%A9",
      "ce-flag": "true",
      "ce-count": "7",
      "content-type": "application/json",
    });
    expect(JSON.parse(String(m.body))).toEqual({ n: 1 });
  });

  it("http binding - binary mode: data_base64 travels as raw bytes, text as itself, no data as no body", () => {
    const bytes = Buffer.from([0, 1, 2, 255]);
    const b = encodeBinary(newEvent({ source: "/s", type: "t", data: bytes }));
    expect(Buffer.from(b.body as Uint8Array)).toEqual(bytes);
    expect(b.headers["content-type"]).toBe("application/octet-stream");
    expect(b.headers["ce-data_base64"]).toBeUndefined();
    const t = encodeBinary(newEvent({ source: "/s", type: "t", data: "hello", datacontenttype: "text/plain" }));
    expect(t.body).toBe("hello");
    expect(t.headers["content-type"]).toBe("text/plain");
    const none = encodeBinary(base as unknown as CloudEvent);
    expect(none.body).toBeUndefined();
  });

  it("http binding - structured mode: the whole event as one JSON document", () => {
    const ev = { ...base, data: { n: 1 } } as unknown as CloudEvent;
    const m = encodeStructured(ev);
    expect(m.headers["content-type"]).toBe(CE_JSON_CONTENT_TYPE);
    expect(JSON.parse(String(m.body))).toEqual(ev);
  });
});
