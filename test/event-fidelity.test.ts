/**
 * An event reaches a local function exactly as it reaches an external sink: through `ofevents run`
 * (`startEmbedded`) from a webhook, over the bus, through a trigger, to local sync functions in
 * binary and structured mode, to dead-letter functions, and to an external HTTP sink. Percent-
 * encoded and non-ASCII extension values, `time` with nanoseconds and an offset, an absent `time`,
 * binary data and JSON string data all arrive as sent.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomSuffix } from "./helpers/wait.js";
import { silentLogger, type CloudEvent } from "@ofevents/core";
import { toEvent } from "@ofevents/delivery";
import { startEmbedded, type Embedded } from "@ofevents/cli";
import { freePorts } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

/** What the recording functions received, by function name; shared through globalThis with their modules. */
const KEY = `__ofeventsFidelity_${randomSuffix()}`;
type Recorded = Array<{ fn: string; event: Record<string, unknown> }>;
const recorded = ((globalThis as Record<string, unknown>)[KEY] = []) as Recorded;

const recorder = (fn: string, fail: boolean): string => `
export default async function (event) {
  globalThis[${JSON.stringify(KEY)}].push({ fn: ${JSON.stringify(fn)}, event });
  ${fail ? 'throw Object.assign(new Error("down"), { status: 503 });' : "return { ok: true };"}
}
`;

const functions = [
  "rec-binary",
  "rec-structured",
  "failing-binary",
  "failing-structured",
  "dl-binary",
  "dl-structured",
];

function fn(name: string): string {
  return `apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata:
  name: ${name}
  annotations: { ofevents.io/module: ./${name}.mjs }
spec: { version: v1.0.0, image: example/${name}:latest, serving: { runtime: knative } }
`;
}

const ref = (name: string): string =>
  `{ ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: ${name} } }`;

describe("event fidelity - webhook to local functions and sinks", () => {
  let dir: string;
  let embedded: Embedded;
  let sink: Server;
  let webhook: string;
  const external = new Map<string, Array<{ headers: IncomingHttpHeaders; body: Buffer }>>();

  const of = (fnName: string, id: string): Array<Record<string, unknown>> =>
    recorded.filter((r) => r.fn === fnName && r.event["id"] === id).map((r) => r.event);

  /** Posts, waits for every recipient, returns the id. */
  async function post(body: Buffer | string, headers: Record<string, string>): Promise<string> {
    const res = await request(webhook, { method: "POST", body, headers });
    const answer = (await res.body.json()) as { ids: string[] };
    expect(res.statusCode, JSON.stringify(answer)).toBe(200);
    const id = answer.ids[0]!;
    await waitFor(
      () =>
        external.has(id) &&
        functions.every((f) => of(f, id).length >= (f.startsWith("failing") ? 2 : 1)) &&
        of("dl-binary", id).length === 1 &&
        of("dl-structured", id).length === 1,
      { timeoutMs: 15_000, message: `event ${id} everywhere` },
    );
    return id;
  }

  /** The event as the external sink got it, decoded per the binding. */
  const externalEvent = (id: string): CloudEvent => {
    const r = external.get(id)![0]!;
    return toEvent(r.headers, r.body) as CloudEvent;
  };

  /** Every local function got the event as the external sink did (dead-letter ones, plus the reason). */
  function expectSameEverywhere(id: string): Record<string, unknown> {
    const ext = externalEvent(id) as unknown as Record<string, unknown>;
    for (const f of ["rec-binary", "rec-structured", "failing-binary", "failing-structured"])
      for (const got of of(f, id)) expect(got, f).toEqual(ext);
    for (const f of ["dl-binary", "dl-structured"]) {
      const got = of(f, id)[0]!;
      const { oferrorreason, oferrorcode, oferrordest, ofdeliveries, oftrigger, ofsubscriber, ...rest } = got;
      expect(rest, f).toEqual(ext);
      // Which trigger and subscriber dead-lettered it (what redrive goes by).
      expect(oftrigger).toBe("default/fwd");
      expect(String(ofsubscriber)).toBe(f === "dl-binary" ? "3" : "4");
      const failing = f === "dl-binary" ? "failing-binary" : "failing-structured";
      expect(oferrordest).toBe(embedded.functions.urlOf("default", failing));
      // The reason has spaces, quotes and braces: it must arrive decoded, whatever the format.
      expect(oferrorreason).toBe(`${embedded.functions.urlOf("default", failing)} answered 503: {"error":"down"}`);
      expect(oferrorcode).toBe("DELIVERY_FAILED");
      expect(String(ofdeliveries)).toBe("2");
    }
    return ext;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-fidelity-"));
    sink = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const id = decodeURIComponent(String(req.headers["ce-id"]));
        external.set(id, [...(external.get(id) ?? []), { headers: req.headers, body: Buffer.concat(chunks) }]);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
    const [port] = await freePorts(1);
    webhook = `http://127.0.0.1:${port}/in`;
    for (const f of functions) await writeFile(join(dir, `${f}.mjs`), recorder(f, f.startsWith("failing")));
    const delivery = (format: string): string => `{ retry: 1, backoffDelay: PT0.01S, format: ${format} }`;
    await writeFile(
      join(dir, "all.yaml"),
      `${functions.map(fn).join("---\n")}---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: hooks }
spec:
  eventBus: default
  webhook: { in: { port: "${port}", endpoint: /in } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: fwd }
spec:
  eventBus: default
  inputs: { i: { eventSource: hooks, event: in } }
  subscribers:
    - { condition: i, sink: { uri: "${sinkUrl}" } }
    - { condition: i, sink: ${ref("rec-binary")} }
    - { condition: i, sink: ${ref("rec-structured")}, delivery: { format: structured } }
    - condition: i
      sink: ${ref("failing-binary")}
      deadLetterSink: ${ref("dl-binary")}
      delivery: ${delivery("binary")}
    - condition: i
      sink: ${ref("failing-structured")}
      deadLetterSink: ${ref("dl-structured")}
      delivery: ${delivery("structured")}
`,
    );
    embedded = await startEmbedded({ paths: [dir], logger: silentLogger(), functionsPort: 0 });
  });
  afterAll(async () => {
    await embedded?.stop();
    await new Promise((r) => sink?.close(r));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    delete (globalThis as Record<string, unknown>)[KEY];
  });

  it("event fidelity - percent-encoded and non-ASCII extensions, subject and a time with nanoseconds and an offset arrive as sent", async () => {
    const id = await post(JSON.stringify({ n: 1 }), {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": `bin-${randomSuffix()}`,
      "ce-source": "/client",
      "ce-type": "com.example.t",
      "ce-subject": "order%2042",
      "ce-note": "caf%C3%A9%20ok%25",
      "ce-time": "2024-01-02T03:04:05.123456789+02:00",
    });
    const ev = expectSameEverywhere(id);
    expect(ev["subject"]).toBe("order 42");
    expect(ev["note"]).toBe("caf\u00e9 ok%");
    expect(ev["time"]).toBe("2024-01-02T03:04:05.123456789+02:00");
    expect(ev["data"]).toEqual({ n: 1 });
  });

  it("event fidelity - binary data 00 01 02 ff and no time: bytes intact, no time invented on any attempt", async () => {
    const id = await post(Buffer.from([0x00, 0x01, 0x02, 0xff]), {
      "content-type": "application/octet-stream",
      "ce-specversion": "1.0",
      "ce-id": `bytes-${randomSuffix()}`,
      "ce-source": "/client",
      "ce-type": "com.example.t",
    });
    const ev = expectSameEverywhere(id);
    expect(ev["time"]).toBeUndefined();
    expect(Buffer.from(String(ev["data_base64"]), "base64")).toEqual(Buffer.from([0x00, 0x01, 0x02, 0xff]));
    expect(ev["data"]).toBeUndefined();
    expect(ev["datacontenttype"]).toBe("application/octet-stream");
  });

  it("event fidelity - a structured-mode CloudEvent keeps its time and extensions", async () => {
    const id = await post(
      JSON.stringify({
        specversion: "1.0",
        id: `str-${randomSuffix()}`,
        source: "/client",
        type: "com.example.t",
        time: "2024-01-02T03:04:05.987654321-05:30",
        note: "\u00fcber 100% \u20ac",
        datacontenttype: "text/plain",
        data: "hello",
      }),
      { "content-type": "application/cloudevents+json" },
    );
    const ev = expectSameEverywhere(id);
    expect(ev["time"]).toBe("2024-01-02T03:04:05.987654321-05:30");
    expect(ev["note"]).toBe("\u00fcber 100% \u20ac");
    expect(ev["data"]).toBe("hello");
  });

  it("event fidelity - a JSON string posted as application/json reaches the sink as JSON text and functions as the string", async () => {
    const res = await request(webhook, {
      method: "POST",
      body: '"a json string"',
      headers: { "content-type": "application/json" },
    });
    const { ids } = (await res.body.json()) as { ids: string[] };
    const id = ids[0]!;
    await waitFor(() => external.get(id) !== undefined && of("rec-binary", id).length === 1, {
      timeoutMs: 15_000,
      message: "the JSON string everywhere",
    });
    const r = external.get(id)![0]!;
    expect(r.headers["content-type"]).toBe("application/json");
    expect(r.body.toString("utf8")).toBe('"a json string"');
    expect(of("rec-binary", id)[0]!["data"]).toBe("a json string");
  });
});
