// Property-based fuzzing of the webhook source over real HTTP on 127.0.0.1: a webhook EventSource
// runs in-process on an in-memory bus; fast-check sends it batches of 32 requests at once over 32
// keep-alive connections (undici), plus malformed HTTP over raw sockets. Properties: no 5xx for a
// client's mistake (4xx), a 2xx only for a valid event and then the event is on the bus intact,
// nothing of a refused request reaches the bus, no unhandled rejection, and the server still
// serves a valid event at the end. Seeded: a failure prints fast-check's seed and path to replay.
import { connect } from "node:net";
import fc from "fast-check";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  EventError,
  createSecretResolver,
  silentLogger,
  type CloudEvent,
  type EventSource,
} from "@ofevents/core";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import { waitFor } from "../../../test/helpers/wait.js";
import { createWebhookServers, startEventSource, type EventSourceRuntime, type WebhookServers } from "../src/index.js";
import { MAX_JSON_DEPTH, decodeRequest } from "../src/sources/webhook.js";

const SEED = 20_250_603;
/** 3,080 batches of 32 requests over HTTP plus 1,440 raw-socket inputs: 100,000 inputs. */
const CONCURRENCY = 32;
const HTTP_BATCHES = 3_080;
const RAW_RUNS = 1_440;
const TIMEOUT = 180_000;
const LIMIT = 262_144;
const NAMESPACE = "fz";
const SOURCE = `/apis/v1/namespaces/${NAMESPACE}/eventsources/hooks`;

const logger = silentLogger();

class PropertyFailure extends Error {}

function fail(message: string): never {
  throw new PropertyFailure(message);
}

// ---- the independent oracle: what the CloudEvents spec calls a valid event ----

const CORE = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64",
]);
// RFC 4648 base64 with padding (non-zero pad bits allowed, as §3.5 lets decoders accept).
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i;

/** Why `ev` is not a valid CloudEvent 1.0, or undefined when it is. */
function invalidity(ev: unknown): string | undefined {
  if (typeof ev !== "object" || ev === null || Array.isArray(ev)) return "not an object";
  const e = ev as Record<string, unknown>;
  if (e["specversion"] !== "1.0") return "specversion";
  for (const a of ["id", "source", "type"]) if (typeof e[a] !== "string" || e[a] === "") return a;
  for (const [k, v] of Object.entries(e)) {
    if (k === "data" || k === "specversion" || k === "id" || k === "source" || k === "type") continue;
    if (k === "subject" || k === "datacontenttype" || k === "dataschema") {
      if (typeof v !== "string" || v === "") return k;
    } else if (k === "time") {
      if (typeof v !== "string" || !RFC3339.test(v) || Number.isNaN(Date.parse(v))) return k;
    } else if (k === "data_base64") {
      if (typeof v !== "string" || !BASE64.test(v) || "data" in e) return k;
    } else if (!/^[a-z0-9]{1,20}$/.test(k)) return `name ${k}`;
    else if (!(
      typeof v === "string" ||
      typeof v === "boolean" ||
      (Number.isInteger(v) && (v as number) >= -(2 ** 31) && (v as number) < 2 ** 31)
    ))
      return `extension ${k}`;
  }
  return undefined;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return (
    ka.length === kb.length &&
    ka.every(
      (k) => Object.hasOwn(b, k) && sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
    )
  );
}

// ---- requests ----

/** A body described by data, so counterexamples stay readable: the bytes are built when sent. */
type Body =
  | { kind: "none" }
  | { kind: "bytes"; bytes: number[] }
  | { kind: "text"; text: string }
  | { kind: "json"; value: unknown }
  | { kind: "deep"; depth: number; open: "[" | '{"a":' }
  | { kind: "big"; size: number };

/** What the answer must be: `ok` a 2xx with the event(s) given, `refused` a 4xx, `any` either. */
type Expect =
  | { kind: "ok"; events: Record<string, unknown>[] }
  | { kind: "plain" }
  | { kind: "refused"; ids: string[] }
  | { kind: "any" }
  | { kind: "status"; status: number };

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Body;
  expect: Expect;
}

function bodyBytes(body: Body): Buffer | undefined {
  switch (body.kind) {
    case "none":
      return undefined;
    case "bytes":
      return Buffer.from(body.bytes);
    case "text":
      return Buffer.from(body.text, "utf8");
    case "json":
      return Buffer.from(JSON.stringify(body.value) ?? "null");
    case "deep":
      return Buffer.from(
        body.open === "["
          ? "[".repeat(body.depth) + "]".repeat(body.depth)
          : body.open.repeat(body.depth) + "1" + "}".repeat(body.depth),
      );
    case "big":
      return Buffer.alloc(body.size, 0x78);
  }
}

// Header values as undici sends them: visible ASCII, no surrounding whitespace.
const token = fc.string({
  unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789-._~"),
  minLength: 1,
  maxLength: 12,
});
const headerValue = fc
  .string({ unit: fc.constantFrom(..."abcXYZ019 -_./:;,=+*!?#@$%&'()[]{}<>\"\\`^|~"), minLength: 1, maxLength: 40 })
  .map((s) => s.trim())
  .filter((s) => s !== "");
const isoTime = fc
  .date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2200-01-01T00:00:00Z"), noInvalidDate: true })
  .map((d) => d.toISOString());
const extName = fc
  .string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789"), minLength: 1, maxLength: 20 })
  .filter((n) => !CORE.has(n));
const json = fc.jsonValue({ maxDepth: 3 });

/** Attributes of a valid CloudEvent (structured mode: any JSON strings). */
const attributes = fc.record(
  {
    id: fc.string({ minLength: 1, maxLength: 20 }),
    source: fc.string({ minLength: 1, maxLength: 20 }),
    type: fc.string({ minLength: 1, maxLength: 20 }),
    subject: fc.string({ minLength: 1, maxLength: 20 }),
    time: isoTime,
    dataschema: fc.constantFrom("https://example.com/s.json", "urn:x"),
    datacontenttype: fc.constantFrom("application/json", "text/plain"),
  },
  { requiredKeys: ["id", "source", "type"] },
);
const extensions = fc.dictionary(
  extName,
  fc.oneof(fc.string({ maxLength: 10 }), fc.boolean(), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
  { maxKeys: 3 },
);
const structuredEvent = fc
  .tuple(
    attributes,
    extensions,
    fc.oneof(
      fc.record({ data: json }),
      fc.record({ data_base64: fc.base64String({ maxLength: 40 }) }),
      fc.constant({}),
    ),
  )
  .map(([attrs, ext, data]) => ({ ...ext, ...data, ...attrs, specversion: "1.0" }) as Record<string, unknown>);

/** One change that makes a structured event invalid. */
const breakEvent = fc.oneof(
  fc.record({ drop: fc.constantFrom("specversion", "id", "source", "type") }),
  fc.record({
    set: fc.constantFrom("specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype"),
    to: fc.constantFrom<unknown>("", null, 1, true, [], {}),
  }),
  fc.record({
    set: fc.constantFrom("time"),
    to: fc.constantFrom("nope", "2024-13-45T00:00:00Z", "2024-01-01", "1700000000"),
  }),
  fc.record({ set: fc.constantFrom("specversion"), to: fc.constantFrom("1", "1.0.0", " 1.0", "2.0", "0.3") }),
  fc.record({
    set: fc.constantFrom("Foo", "a_b", "toolongextensionname1", "", "__proto__", "é"),
    to: fc.constant("x"),
  }),
  fc.record({ set: extName, to: fc.constantFrom<unknown>(null, 1.5, 2 ** 31, {}, [1]) }),
  fc.record({ set: fc.constantFrom("data_base64"), to: fc.constantFrom<unknown>("%%%", 5, "YQ") }),
  fc.record({ both: fc.constant(true) }),
);

function broken(
  ev: Record<string, unknown>,
  b: { drop?: string; set?: string; to?: unknown; both?: boolean },
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...ev };
  if (b.drop !== undefined) delete out[b.drop];
  if (b.set !== undefined)
    Object.defineProperty(out, b.set, { value: b.to, enumerable: true, writable: true, configurable: true });
  if (b.both === true) Object.assign(out, { data: 1, data_base64: "YQ==" });
  return out;
}

const plainBody = fc.oneof(
  fc.record({
    type: fc.constantFrom(
      "application/json",
      "application/json; charset=utf-8",
      "application/vnd.x+json",
      "APPLICATION/JSON",
    ),
    body: json.map((value) => ({ kind: "json", value }) as Body),
  }),
  fc.record({
    type: fc.constantFrom("text/plain", "text/csv; charset=utf-8", "application/x-www-form-urlencoded", ""),
    body: fc.string({ unit: "grapheme", maxLength: 60 }).map((text) => ({ kind: "text", text }) as Body),
  }),
  fc.record({
    type: fc.constantFrom("application/octet-stream", "image/png", "application/x-custom"),
    body: fc.array(fc.nat({ max: 255 }), { maxLength: 64 }).map((bytes) => ({ kind: "bytes", bytes }) as Body),
  }),
);

const POST = { method: "POST", path: "/orders" } as const;

const validPlain = plainBody.map(({ type, body }): Req => {
  // Without a content type, a body that starts like JSON is read as JSON (and may not be JSON).
  const sniffed = type === "" && body.kind === "text" && /^[[{]/.test(body.text);
  return {
    ...POST,
    headers: type === "" ? {} : { "content-type": type },
    body,
    expect: { kind: sniffed ? "any" : "plain" },
  };
});

/** What a binary-mode event carries for a body of media type `type`: JSON, text, or bytes. */
function binaryData(type: string, body: Body): Record<string, unknown> {
  const bytes = bodyBytes(body);
  if (bytes === undefined || bytes.length === 0) return {};
  const media = type.split(";")[0]!.trim().toLowerCase();
  if (media === "application/json" || media.endsWith("+json"))
    return { data: JSON.parse(bytes.toString("utf8")) as unknown };
  if (media.startsWith("text/") || media === "application/x-www-form-urlencoded")
    return { data: bytes.toString("utf8") };
  return { data_base64: bytes.toString("base64") };
}

const validStructured = structuredEvent.map((ev): Req => ({
  ...POST,
  headers: { "content-type": "application/cloudevents+json" },
  body: { kind: "json", value: ev },
  expect: { kind: "ok", events: [ev] },
}));

// Distinct ids within a batch: the test finds each event on the bus by its id.
const validBatch = fc.uniqueArray(structuredEvent, { maxLength: 4, selector: (ev) => ev["id"] }).map((evs): Req => ({
  ...POST,
  headers: { "content-type": "application/cloudevents-batch+json" },
  body: { kind: "json", value: evs },
  expect: { kind: "ok", events: evs },
}));

/**
 * A `ce-` header value as the HTTP binding (§3.1.3.2) has senders write it: space, `"`, `%` and
 * everything outside U+0021..U+007E percent-encoded as UTF-8. Written here from the spec, not
 * imported, so the receiver's decoding is checked against an independent encoder.
 */
function pct(value: string): string {
  let out = "";
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x21 && c <= 0x7e && c !== 0x22 && c !== 0x25) out += ch;
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

const attributeText = fc.string({ unit: "grapheme", minLength: 1, maxLength: 16 });
const binaryAttributes = fc.record(
  {
    id: attributeText,
    source: attributeText,
    type: attributeText,
    subject: attributeText,
    time: isoTime,
    dataschema: fc.constantFrom("https://example.com/s.json", "urn:x"),
  },
  { requiredKeys: ["id", "source", "type"] },
);
const validBinary = fc
  .tuple(binaryAttributes, fc.dictionary(extName, attributeText, { maxKeys: 3 }), plainBody)
  .map(([attrs, ext, { type, body }]): Req => {
    const all: Record<string, string> = { ...ext, ...attrs, specversion: "1.0" };
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(all)) headers[`ce-${k}`] = pct(v);
    if (type !== "") headers["content-type"] = type;
    const event = { ...all, ...(type === "" ? {} : { datacontenttype: type }), ...binaryData(type, body) };
    return { ...POST, headers, body, expect: { kind: "ok", events: [event] } };
  });

const invalidStructured = fc.tuple(structuredEvent, breakEvent, fc.boolean()).map(([ev, b, inBatch]): Req => {
  const bad = broken(ev, b);
  return inBatch
    ? {
        ...POST,
        headers: { "content-type": "application/cloudevents-batch+json" },
        body: { kind: "json", value: [ev, bad] },
        expect: { kind: "refused", ids: [ev["id"] as string] },
      }
    : {
        ...POST,
        headers: { "content-type": "application/cloudevents+json" },
        body: { kind: "json", value: bad },
        expect: { kind: "refused", ids: [] },
      };
});

const invalidBinary = fc
  .tuple(
    binaryAttributes,
    fc.oneof(
      fc.record({ drop: fc.constantFrom("ce-id", "ce-source", "ce-type") }),
      fc.record({ set: fc.constantFrom("ce-specversion"), to: fc.constantFrom("0.3", "1", "x", "1.0, 1.0") }),
      fc.record({ set: fc.constantFrom("ce-time"), to: fc.constantFrom("nope", "2024-13-45T00:00:00Z", "yesterday") }),
      fc.record({
        set: fc.constantFrom(
          "ce-data",
          "ce-data_base64",
          "ce-datacontenttype",
          "ce-a_b",
          "ce-toolongextensionname1",
          "ce-",
        ),
        to: fc.constant("x"),
      }),
    ),
  )
  .map(([attrs, b]): Req => {
    const headers: Record<string, string> = { "content-type": "application/json", "ce-specversion": "1.0" };
    for (const [k, v] of Object.entries(attrs)) headers[`ce-${k}`] = pct(v);
    if ("drop" in b) delete headers[b.drop];
    else headers[b.set] = b.to;
    return { ...POST, headers, body: { kind: "text", text: "{}" }, expect: { kind: "refused", ids: [] } };
  });

const deepJson = fc
  .record({
    depth: fc.oneof(fc.integer({ min: 1, max: 2 * MAX_JSON_DEPTH }), fc.integer({ min: 1, max: 100_000 })),
    open: fc.constantFrom<"[" | '{"a":'>("[", '{"a":'),
    mode: fc.constantFrom("plain", "structured", "binary"),
  })
  .map(({ depth, open, mode }): Req => {
    const body: Body = { kind: "deep", depth, open };
    if (mode === "plain")
      return {
        ...POST,
        headers: { "content-type": "application/json" },
        body,
        expect: depth > MAX_JSON_DEPTH ? { kind: "refused", ids: [] } : { kind: "plain" },
      };
    if (mode === "binary")
      return {
        ...POST,
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-id": "deep",
          "ce-source": "/s",
          "ce-type": "t",
        },
        body,
        expect: depth > MAX_JSON_DEPTH ? { kind: "refused", ids: [] } : { kind: "any" },
      };
    // Structured: a deep `data`, the envelope adding one level.
    return {
      ...POST,
      headers: { "content-type": "application/cloudevents+json" },
      body: {
        kind: "text",
        text: `{"specversion":"1.0","id":"d","source":"/s","type":"t","data":${"[".repeat(depth)}${"]".repeat(depth)}}`,
      },
      expect: depth + 1 > MAX_JSON_DEPTH ? { kind: "refused", ids: [] } : { kind: "any" },
    };
  });

const oversized = fc.integer({ min: LIMIT + 1, max: 2 * LIMIT }).map((size): Req => ({
  ...POST,
  headers: { "content-type": "text/plain" },
  body: { kind: "big", size },
  expect: { kind: "status", status: 413 },
}));

const oddContentType = fc.constantFrom(
  "",
  ";",
  "application/json;;",
  "text/",
  "*/*",
  "multipart/form-data; boundary=x",
  "application/cloudevents+json; charset=utf-8",
  "application/cloudevents-batch+json; x=y",
  "APPLICATION/CLOUDEVENTS+JSON",
  "application/cloudevents",
  "text/plain; charset=latin1",
  "application/json, text/plain",
);
const randomBody = fc.oneof(
  fc.array(fc.nat({ max: 255 }), { maxLength: 200 }).map((bytes): Body => ({ kind: "bytes", bytes })),
  fc
    .string({ unit: fc.constantFrom(...'{}[]":,0123456789.eE+-truefalsn \\u'), maxLength: 60 })
    .map((text): Body => ({ kind: "text", text })),
  json.map((value): Body => ({ kind: "json", value })),
  fc.constant<Body>({ kind: "none" }),
);
const oddHeaders = fc.oneof(
  fc.dictionary(
    token.map((t) => `x-${t}`),
    headerValue,
    { maxKeys: 200 },
  ),
  fc.dictionary(
    token.map((t) => `ce-${t}`),
    headerValue,
    { maxKeys: 8 },
  ),
  fc.record(
    { "ce-specversion": fc.oneof(headerValue, fc.constantFrom("1.0", "0.3")), "ce-id": headerValue },
    { requiredKeys: [] },
  ),
  fc.integer({ min: 1000, max: 40_000 }).map((n) => ({ "x-long": "v".repeat(n) })),
  fc.record(
    {
      traceparent: fc.oneof(headerValue, fc.constant("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
      tracestate: headerValue,
    },
    { requiredKeys: [] },
  ),
  fc.constant({ authorization: "Bearer x", "content-encoding": "gzip" }),
);
const anyRequest = fc
  .tuple(
    fc.oneof(
      { weight: 6, arbitrary: fc.constant("POST") },
      fc.constantFrom("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "post", "SEARCH"),
    ),
    fc.oneof(
      { weight: 6, arbitrary: fc.constant("/orders") },
      fc.constantFrom(
        "/",
        "/orders/",
        "/Orders",
        "/orders?x=1&y",
        "/%6frders",
        "//orders",
        "/orders/../orders",
        "/health",
        "/health?x",
        "/orders;x",
      ),
      token.map((t) => `/${t}`),
    ),
    oddContentType,
    oddHeaders,
    randomBody,
  )
  .map(([method, path, type, headers, body]): Req => {
    const h: Record<string, string> = { ...headers };
    if (type !== "") h["content-type"] = type;
    const noBody = method === "GET" || method === "HEAD";
    return { method, path, headers: h, body: noBody ? { kind: "none" } : body, expect: { kind: "any" } };
  });

const request: fc.Arbitrary<Req> = fc.oneof(
  { weight: 5, arbitrary: validPlain },
  { weight: 3, arbitrary: validStructured },
  { weight: 2, arbitrary: validBatch },
  { weight: 3, arbitrary: validBinary },
  { weight: 3, arbitrary: invalidStructured },
  { weight: 2, arbitrary: invalidBinary },
  { weight: 1, arbitrary: deepJson },
  { weight: 1, arbitrary: oversized },
  { weight: 6, arbitrary: anyRequest },
);

// ---- the harness ----

describe("webhook fuzz", () => {
  let bus: EventBus;
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let pool: Pool;
  let port: number;
  /** Events on the bus by id, until a check takes them. */
  const onBus = new Map<string, CloudEvent>();
  /** Ids of events whose request was refused: none may ever reach the bus. */
  const refused = new Set<string>();
  const leaked: string[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  let seq = 0;

  beforeAll(async () => {
    process.on("unhandledRejection", onUnhandled);
    bus = createMemoryBus({ logger });
    await bus.subscribe(
      [`${NAMESPACE}-hooks-e`],
      async (ev) => {
        if (refused.has(ev.id)) leaked.push(ev.id);
        onBus.set(ev.id, ev);
      },
      { group: "fuzz", maxInFlight: 256 },
    );
    webhooks = createWebhookServers({ logger });
    port = await webhooks.register(0, { method: "GET", endpoint: "/probe", handle: async (_q, s) => void s.end() });
    const es = {
      apiVersion: API_VERSION,
      kind: "EventSource",
      metadata: { name: "hooks", namespace: NAMESPACE },
      spec: {
        eventBus: "default",
        webhook: { e: { port: String(port), endpoint: "/orders", method: "POST", maxPayloadSize: LIMIT } },
      },
    } as EventSource;
    runtime = await startEventSource(es, {
      logger,
      bus,
      secrets: createSecretResolver(),
      webhooks,
      publishAttempts: 1,
    });
    pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONCURRENCY, pipelining: 1 });
  });

  afterAll(async () => {
    process.off("unhandledRejection", onUnhandled);
    await pool?.close();
    await runtime?.stop();
    await webhooks?.close();
    await bus?.close();
  });

  /** Unique ids, so each request's events are found on the bus; the generated id stays a prefix. */
  function uniqueIds(req: Req): { req: Req; n: number } {
    const n = ++seq;
    const tag = (ev: Record<string, unknown>): Record<string, unknown> =>
      typeof ev["id"] === "string" && ev["id"] !== "" ? { ...ev, id: `${ev["id"]}~${n}` } : ev;
    const e = req.expect;
    if (req.headers["ce-id"] === undefined && req.body.kind === "json" && (e.kind === "ok" || e.kind === "refused")) {
      const v = req.body.value;
      const value = Array.isArray(v)
        ? v.map((x) => (typeof x === "object" && x !== null ? tag(x as Record<string, unknown>) : x))
        : typeof v === "object" && v !== null
          ? tagKeepingOwn(v as Record<string, unknown>, n)
          : v;
      const expect: Expect =
        e.kind === "ok"
          ? { kind: "ok", events: e.events.map(tag) }
          : { kind: "refused", ids: e.ids.map((id) => `${id}~${n}`) };
      return { req: { ...req, body: { kind: "json", value }, expect }, n };
    }
    if (req.headers["ce-id"] !== undefined && e.kind === "ok") {
      return {
        req: {
          ...req,
          headers: { ...req.headers, "ce-id": `${req.headers["ce-id"]}~${n}` },
          expect: { kind: "ok", events: e.events.map(tag) },
        },
        n,
      };
    }
    return { req, n };
  }

  /** Sends one request; resolves with the status and body text. */
  async function send(req: Req): Promise<{ status: number; text: string }> {
    const res = await pool.request({
      method: req.method as "POST",
      path: req.path,
      headers: req.headers,
      body: bodyBytes(req.body) ?? null,
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  /** How long accepted events have to reach the bus, polled every 2 ms. */
  const onTheBus = { timeoutMs: 15_000, intervalMs: 2 };

  /** Checks one answer against what the request deserved; returns the ids it must find on the bus. */
  function judge(req: Req, status: number, text: string): { ids: string[]; check: (got: CloudEvent[]) => void } {
    const where = `${JSON.stringify(req).slice(0, 600)} -> ${status} ${text.slice(0, 200)}`;
    if (status >= 500) fail(`a 5xx for a client's request: ${where}`);
    if (status < 200 || (status >= 300 && status < 400)) fail(`unexpected status: ${where}`);
    const e = req.expect;
    const base = req.path.split("?")[0];
    if (e.kind === "refused" && (status < 400 || status >= 500)) fail(`an invalid request was not refused: ${where}`);
    if (e.kind === "status" && status !== e.status) fail(`expected ${e.status}: ${where}`);
    if ((e.kind === "ok" || e.kind === "plain") && status !== 200) fail(`a valid event was refused: ${where}`);
    if (status !== 200) return { ids: [], check: () => undefined };
    if (base === "/health" && req.method === "GET") {
      if (text !== "ok") fail(`health answered ${text}`);
      return { ids: [], check: () => undefined };
    }
    if (base !== "/orders" || req.method !== "POST") fail(`a 2xx from a route that does not exist: ${where}`);
    const answer = JSON.parse(text) as { accepted: number; ids: string[] };
    if (!Array.isArray(answer.ids) || answer.ids.length !== answer.accepted) fail(`answer without ids: ${where}`);
    return {
      ids: answer.ids,
      check: (got) => {
        for (const ev of got) {
          const why = invalidity(ev);
          if (why !== undefined)
            fail(`a 2xx put an invalid event on the bus (${why}): ${JSON.stringify(ev).slice(0, 300)}`);
        }
        if (e.kind === "ok") {
          if (got.length !== e.events.length) fail(`${got.length} events on the bus for ${e.events.length} sent`);
          e.events.forEach((sent, i) => {
            const want = JSON.parse(JSON.stringify(sent)) as unknown;
            if (!sameJson(got[i], want))
              fail(
                `event changed on the way: sent ${JSON.stringify(want).slice(0, 300)}, bus ${JSON.stringify(got[i]).slice(0, 300)}`,
              );
          });
        }
        const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
        const isCe = req.headers["ce-specversion"] !== undefined || type.startsWith("application/cloudevents");
        if (!isCe) checkPlain(req, type, got);
      },
    };
  }

  /** A plain request's event: new id, our source and type, the body intact as JSON, text or bytes. */
  function checkPlain(req: Req, type: string, got: CloudEvent[]): void {
    const ev = got[0] as Record<string, unknown> | undefined;
    if (got.length !== 1 || ev === undefined) return fail(`${got.length} events for one plain request`);
    if (ev["source"] !== SOURCE || ev["type"] !== "io.openfunction.events.webhook" || ev["subject"] !== "e")
      fail(`plain event attributes: ${JSON.stringify(ev).slice(0, 300)}`);
    const bytes = bodyBytes(req.body) ?? Buffer.alloc(0);
    const dct = ev["datacontenttype"];
    if (!("data" in ev) && !("data_base64" in ev)) {
      // An empty JSON or untyped body, or JSON null: an event without data and content type.
      const none = bytes.length === 0 || (dct === undefined && bytes.toString("utf8").trim() === "null");
      if (!none || dct !== undefined || !(type === "" || type === "application/json" || type.endsWith("+json")))
        fail(`no data for ${type} body ${bytes.toString("utf8").slice(0, 100)}`);
    } else if ("data_base64" in ev) {
      if (ev["data_base64"] !== bytes.toString("base64")) fail("bytes changed on the way");
      if (dct !== (type === "" ? "application/octet-stream" : type)) fail(`bytes as ${String(dct)} for ${type}`);
    } else if (dct === "application/json") {
      const text = bytes.toString("utf8");
      const same = JSON.stringify(ev["data"]) === JSON.stringify(JSON.parse(text));
      if (!same) fail(`JSON changed on the way: ${text.slice(0, 100)}`);
    } else {
      if (typeof ev["data"] !== "string" || Buffer.from(ev["data"], "utf8").compare(bytes) !== 0)
        fail("text changed on the way");
      if (dct !== (type === "" ? "text/plain" : type)) fail(`text as ${String(dct)} for ${type}`);
    }
  }

  async function runBatch(batch: Req[]): Promise<void> {
    const reqs = batch.map((r) => uniqueIds(r).req);
    for (const r of reqs) if (r.expect.kind === "refused") for (const id of r.expect.ids) refused.add(id);
    const answers = await Promise.all(reqs.map((r) => send(r)));
    const judged = reqs.map((r, i) => judge(r, answers[i]!.status, answers[i]!.text));
    const ids = judged.flatMap((j) => j.ids);
    const arrived = await waitFor(() => ids.every((id) => onBus.has(id)), onTheBus).catch(() => false);
    if (!arrived) fail(`accepted events missing from the bus: ${ids.filter((id) => !onBus.has(id)).join(", ")}`);
    judged.forEach((j) => j.check(j.ids.map((id) => onBus.get(id)!)));
    for (const id of ids) onBus.delete(id);
    if (leaked.length > 0) fail(`events of refused requests reached the bus: ${leaked.join(", ")}`);
    if (unhandled.length > 0) fail(`unhandled rejection: ${String(unhandled[0])}`);
  }

  it(
    "webhook fuzz - 98,560 requests over keep-alive HTTP, 32 at a time: 4xx for bad input, 2xx only with the event intact on the bus",
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(request, { minLength: CONCURRENCY, maxLength: CONCURRENCY }), async (batch) => {
          await runBatch(batch);
        }),
        { seed: SEED, numRuns: HTTP_BATCHES },
      );
    },
    TIMEOUT,
  );

  it(
    "webhook fuzz - malformed HTTP on raw sockets gets a 4xx or a closed connection, never a 5xx or a hang",
    async () => {
      const rawRequest = fc.oneof(
        fc.array(fc.nat({ max: 255 }), { minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
        fc
          .tuple(
            fc.constantFrom(
              "POST /orders HTTP/1.1",
              "POST /orders HTTP/1.0",
              "POST /orders HTTP/2.0",
              "POST  /orders HTTP/1.1",
              "POST /orders",
              "POST /or ders HTTP/1.1",
              "FOO /orders HTTP/1.1",
              "PRI * HTTP/2.0",
              "GET * HTTP/1.1",
              "POST http://x/orders HTTP/1.1",
              "CONNECT 127.0.0.1:1 HTTP/1.1",
            ),
            fc.array(
              fc.constantFrom(
                "Host: x",
                "Content-Length: abc",
                "Content-Length: -1",
                "Content-Length: 5\r\nContent-Length: 6",
                "Content-Length: 99999999999999999999",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: chunked, identity",
                "Transfer-Encoding: gzip",
                "Content-Type: application/json",
                "ce-specversion: 1.0",
                "ce-id: \u0001",
                "X-Fold: a\r\n b",
                "NoColon",
                ": empty-name",
                "X-Nul: a\u0000b",
                "X-Bad\u00ff: v",
                `X-Huge: ${"h".repeat(20_000)}`,
              ),
              { maxLength: 5 },
            ),
            fc.constantFrom(
              "",
              "{}",
              "5\r\nhello\r\n0\r\n\r\n",
              "zz\r\nhello\r\n0\r\n\r\n",
              "5\r\nhel",
              "\u0000\u0001",
            ),
          )
          .map(([line, headers, body]) =>
            Buffer.from(`${line}\r\n${["Connection: close", ...headers].join("\r\n")}\r\n\r\n${body}`, "latin1"),
          ),
      );
      await fc.assert(
        fc.asyncProperty(rawRequest, async (bytes) => {
          const answer = await raw(port, bytes);
          if (answer === "hang") fail("no answer and no close within 10 s");
          const m = /^HTTP\/1\.[01] (\d{3})/.exec(answer);
          if (m !== null && Number(m[1]) >= 500) fail(`raw request got ${answer.slice(0, 100)}`);
          if (unhandled.length > 0) fail(`unhandled rejection: ${String(unhandled[0])}`);
        }),
        { seed: SEED + 1, numRuns: RAW_RUNS },
      );
    },
    TIMEOUT,
  );

  it("webhook fuzz - after the run the server still takes a valid event", async () => {
    const ev = { specversion: "1.0", id: "after-the-fuzz", source: "/s", type: "t", data: { ok: true } };
    const res = await pool.request({
      method: "POST",
      path: "/orders",
      headers: { "content-type": "application/cloudevents+json" },
      body: JSON.stringify(ev),
    });
    expect(res.statusCode).toBe(200);
    await res.body.text();
    await expect(waitFor(() => onBus.has("after-the-fuzz"), onTheBus)).resolves.toBe(true);
    expect(onBus.get("after-the-fuzz")).toEqual(ev);
    expect(leaked).toEqual([]);
    expect(unhandled).toEqual([]);
  });
});

/** Writes `bytes`, half-closes, and collects the answer until the server closes; "hang" after 10 s. */
function raw(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("hang");
    }, 10_000);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("latin1"));
    });
    socket.end(bytes);
  });
}

function tagKeepingOwn(ev: Record<string, unknown>, n: number): Record<string, unknown> {
  // defineProperty keeps keys such as "__proto__" as data, the way JSON.parse would read them.
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev))
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  if (typeof out["id"] === "string" && out["id"] !== "") out["id"] = `${out["id"]}~${n}`;
  return out;
}

describe("webhook fuzz regressions", () => {
  const decode = (headers: Record<string, string>, body: string | Buffer): unknown =>
    decodeRequest(headers, Buffer.isBuffer(body) ? body : Buffer.from(body), {});

  it("webhook fuzz regressions - JSON nested 100,000 deep is a 400 (EventError), not a 500 from the bus encoder", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    expect(() => decode({ "content-type": "application/json" }, deep)).toThrow(EventError);
    const structured = `{"specversion":"1.0","id":"a","source":"/s","type":"t","data":${deep}}`;
    expect(() => decode({ "content-type": "application/cloudevents+json" }, structured)).toThrow(EventError);
    const binary = {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": "a",
      "ce-source": "/s",
      "ce-type": "t",
    };
    expect(() => decode(binary, deep)).toThrow(EventError);
    expect(() => decode({ "content-type": "application/cloudevents-batch+json" }, `[${structured}]`)).toThrow(
      EventError,
    );
  });

  it("webhook fuzz regressions - a structured event with a __proto__ attribute is refused, not stripped", () => {
    const body = '{"specversion":"1.0","id":"a","source":"/s","type":"t","__proto__":{"a":1}}';
    expect(() => decode({ "content-type": "application/cloudevents+json" }, body)).toThrow(EventError);
  });

  it("webhook fuzz regressions - attributes of the wrong type are refused", () => {
    const base = { specversion: "1.0", id: "a", source: "/s", type: "t" };
    for (const bad of [
      { time: "nope" },
      { time: 5 },
      { subject: 7 },
      { datacontenttype: 5 },
      { myext: { a: 1 } },
      { myext: 1.5 },
      { data: 1, data_base64: "YQ==" },
    ]) {
      const body = JSON.stringify({ ...base, ...bad });
      expect(() => decode({ "content-type": "application/cloudevents+json" }, body), body).toThrow(EventError);
      expect(() => decode({ "content-type": "application/cloudevents-batch+json" }, `[${body}]`), body).toThrow(
        EventError,
      );
    }
    const binary = {
      "content-type": "text/plain",
      "ce-specversion": "1.0",
      "ce-id": "a",
      "ce-source": "/s",
      "ce-type": "t",
    };
    expect(() => decode({ ...binary, "ce-time": "nope" }, "x")).toThrow(EventError);
  });

  it("webhook fuzz regressions - JSON that is not UTF-8 is refused; text that is not UTF-8 stays bytes", () => {
    expect(() => decode({ "content-type": "application/json" }, Buffer.from([0x22, 0xff, 0x22]))).toThrow(EventError);
    expect(decode({ "content-type": "text/plain" }, Buffer.from([0x61, 0xff]))).toEqual([
      { data: new Uint8Array([0x61, 0xff]), datacontenttype: "text/plain" },
    ]);
  });

  it("webhook fuzz regressions - binary-mode JSON with a charset parameter is parsed as JSON", () => {
    const headers = {
      "content-type": "application/json; charset=utf-8",
      "ce-specversion": "1.0",
      "ce-id": "a",
      "ce-source": "/s",
      "ce-type": "t",
    };
    expect(decode(headers, '{"x":1}')).toMatchObject([{ event: { data: { x: 1 } } }]);
  });
});
