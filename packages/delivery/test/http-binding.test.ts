import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventError, newEvent, type CloudEvent } from "@ofevents/core";
import {
  CE_BATCH_CONTENT_TYPE,
  CE_JSON_CONTENT_TYPE,
  decodeHeaderValue,
  encodeBatch,
  encodeBinary,
  encodeHeaderValue,
  encodeStructured,
  httpMode,
  toEvent,
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

describe("http binding - the mode of a message", () => {
  it("http binding - httpMode matches header names in any case", () => {
    expect(httpMode({ "Content-Type": "application/cloudevents+json; charset=utf-8" })).toBe("structured");
    expect(httpMode({ "CONTENT-TYPE": "application/cloudevents-batch+json" })).toBe("batch");
    expect(httpMode({ "CE-SpecVersion": "1.0", "content-type": "application/json" })).toBe("binary");
    expect(httpMode({ "Ce-Specversion": ["1.0", "1.0"] })).toBe("binary");
    // An undefined value is no header; a plain request has no mode.
    expect(httpMode({ "ce-specversion": undefined, "content-type": "application/json" })).toBeUndefined();
    expect(httpMode({})).toBeUndefined();
  });
});

describe("http binding - JSON string data", () => {
  it.each([
    { name: "application/json", datacontenttype: "application/json", body: '"a json string"' },
    {
      name: "a +json type with parameters",
      datacontenttype: "application/vnd.x+json; charset=utf-8",
      body: '"a json string"',
    },
    { name: "no content type (JSON by default)", datacontenttype: undefined, body: '"a json string"' },
    { name: "text/plain stays raw", datacontenttype: "text/plain", body: "a json string" },
    { name: "text/csv stays raw", datacontenttype: "text/csv", body: "a json string" },
  ])("http binding - binary mode writes string data as $name", ({ datacontenttype, body }) => {
    const ev: Record<string, unknown> = { specversion: "1.0", id: "1", source: "/s", type: "t", data: "a json string" };
    if (datacontenttype !== undefined) ev["datacontenttype"] = datacontenttype;
    const m = encodeBinary(ev as unknown as CloudEvent);
    expect(m.body).toBe(body);
    const back = toEvent(m.headers, m.body) as CloudEvent;
    expect(back.data).toBe("a json string");
  });
});

describe("http binding - toEvent decodes what the encoders write", () => {
  const bytes = Buffer.from([0x00, 0x01, 0x02, 0xff]);
  const events: Array<{ name: string; event: Record<string, unknown> }> = [
    {
      name: "non-ASCII and percent signs in extensions, time with nanoseconds and an offset",
      event: {
        specversion: "1.0",
        id: "e 1",
        source: "/s",
        type: "t",
        subject: "caf\u00e9 ok%",
        time: "2024-01-02T03:04:05.123456789+02:00",
        note: 'flaky answered 503: {"error":"down"} 100%',
        datacontenttype: "application/json",
        data: { n: 1 },
      },
    },
    {
      name: "no time (none is invented)",
      event: { specversion: "1.0", id: "2", source: "/s", type: "t", data: { n: 2 } },
    },
    {
      name: "binary data 00 01 02 ff",
      event: {
        specversion: "1.0",
        id: "3",
        source: "/s",
        type: "t",
        datacontenttype: "application/octet-stream",
        data_base64: bytes.toString("base64"),
      },
    },
    {
      name: "a JSON string",
      event: { specversion: "1.0", id: "4", source: "/s", type: "t", datacontenttype: "application/json", data: "abc" },
    },
    {
      name: "text",
      event: {
        specversion: "1.0",
        id: "5",
        source: "/s",
        type: "t",
        datacontenttype: "text/plain",
        data: "h\u00e9llo",
      },
    },
  ];

  it.each(events)("http binding - structured mode round trip: $name", ({ event }) => {
    const m = encodeStructured(event as unknown as CloudEvent);
    expect(httpMode(m.headers)).toBe("structured");
    expect(toEvent(m.headers, Buffer.from(m.body as string))).toEqual(event);
  });

  it.each(events)("http binding - binary mode round trip: $name", ({ event }) => {
    const m = encodeBinary(event as unknown as CloudEvent);
    expect(httpMode(m.headers)).toBe("binary");
    const expected = { datacontenttype: "application/json", ...event };
    expect(toEvent(m.headers, m.body === undefined ? undefined : Buffer.from(m.body))).toEqual(expected);
  });

  it("http binding - binary mode: ce- values are percent-decoded, time is kept, bytes stay bytes", () => {
    const ev = toEvent(
      {
        "ce-specversion": "1.0",
        "ce-id": "x",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "order%2042",
        "ce-note": "caf%C3%A9%20ok%25",
        "ce-time": "2024-01-02T03:04:05.123456789+02:00",
        "content-type": "application/octet-stream",
      },
      bytes,
    ) as Record<string, unknown>;
    expect(ev["subject"]).toBe("order 42");
    expect(ev["note"]).toBe("caf\u00e9 ok%");
    expect(ev["time"]).toBe("2024-01-02T03:04:05.123456789+02:00");
    expect(Buffer.from(String(ev["data_base64"]), "base64")).toEqual(bytes);
    expect(ev["data"]).toBeUndefined();
  });

  it.each([
    {
      name: "no CloudEvents mode",
      headers: { "content-type": "application/json" },
      body: "{}",
      error: "not a CloudEvent",
    },
    {
      name: "a header that percent-decodes to bytes that are not UTF-8",
      headers: { "ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s", "ce-type": "t", "ce-foo": "%FF%FE" },
      body: "",
      error: "invalid CloudEvent: header ce-foo",
    },
    {
      name: "a binary event without ce-type",
      headers: { "ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s" },
      body: "",
      error: 'invalid CloudEvent: CloudEvent attribute "type" is required',
    },
    {
      name: "a structured event with a malformed time",
      headers: { "content-type": "application/cloudevents+json" },
      body: '{"specversion":"1.0","id":"x","source":"/s","type":"t","time":"yesterday"}',
      error: "RFC 3339",
    },
    {
      name: "a batch that is not an array",
      headers: { "content-type": "application/cloudevents-batch+json" },
      body: "{}",
      error: "must be a JSON array",
    },
  ])("http binding - toEvent refuses $name with an EventError", ({ headers, body, error }) => {
    expect(() => toEvent(headers, body)).toThrow(EventError);
    expect(() => toEvent(headers, body)).toThrow(error);
  });

  it("http binding - a batch decodes to an array of events", () => {
    const a = { specversion: "1.0", id: "a", source: "/s", type: "t" };
    const b = { ...a, id: "b", data_base64: bytes.toString("base64") };
    expect(toEvent({ "content-type": "application/cloudevents-batch+json" }, JSON.stringify([a, b]))).toEqual([a, b]);
  });

  it("http binding - encodeBatch writes the batched mode; non-ASCII attributes, JSON and binary data decode back exactly", () => {
    const a = newEvent({
      id: "a",
      source: "/s",
      type: "t",
      subject: "für Zoë ✓",
      time: "2026-12-05T10:00:00.123456789+01:00",
      data: { text: "grüße 🇪🇺", n: 1 },
    });
    const b = {
      specversion: "1.0",
      id: "b",
      source: "/s",
      type: "t",
      region: "ß 🇪🇺",
      data_base64: bytes.toString("base64"),
    };
    const { headers, body } = encodeBatch([a, b as CloudEvent]);
    expect(headers["content-type"]).toBe(CE_BATCH_CONTENT_TYPE);
    expect(httpMode(headers)).toBe("batch");
    expect(toEvent(headers, Buffer.from(String(body), "utf8"))).toEqual([a, b]);
  });
});
