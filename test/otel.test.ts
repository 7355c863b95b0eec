/**
 * The journey of one event in OpenTelemetry, against a real OpenTelemetry Collector (built by
 * test:setup) that forwards OTLP to a receiver here: `ofevents run` (webhook source, JetStream
 * bus, trigger) exports over OTLP/HTTP, configured by the standard OTEL_* variables only; the
 * event fails at its sink and is dead-lettered, then `ofevents redrive` (also exporting) delivers
 * it. Every span of that is in one trace, the one the webhook's caller started.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_VERSION } from "@ofevents/core";
import { Sink } from "../packages/trigger/test/support.js";
import { NatsServer } from "./helpers/nats.js";
import { OfeventsProcess } from "./helpers/ofevents.js";
import { OtelCollector, startOtlpJsonReceiver, type FlatSpan, type OtlpJsonReceiver } from "./helpers/otelcol.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";
import { redriveCli } from "./redrive-durable.js";

describe("otel - the journey of an event as OpenTelemetry spans", () => {
  let nats: NatsServer;
  let receiver: OtlpJsonReceiver;
  let collector: OtelCollector;
  let sink: Sink;
  let dir: string;
  let run: OfeventsProcess | undefined;
  let otelEnv: Record<string, string>;

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: true });
    receiver = await startOtlpJsonReceiver();
    collector = await OtelCollector.start({ exportTo: receiver.url });
    sink = await new Sink().start();
    dir = await mkdtemp(join(tmpdir(), "ofevents-otel-"));
    otelEnv = {
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.otlpHttpEndpoint,
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_SERVICE_NAME: "otel-test",
    };
  }, 120_000);

  afterAll(async () => {
    await run?.stop();
    await sink?.stop();
    await collector?.stop();
    await receiver?.stop();
    await nats?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("otel - webhook → bus → trigger → failing sink → dead letter, then redrive → sink: one trace, each step a span with the event id, the sink gets traceparent", async () => {
    const port = await freePort();
    await writeFile(
      join(dir, "flow.yaml"),
      `apiVersion: ${API_VERSION}
kind: EventBus
metadata: { name: default }
spec: { jetstream: { url: "${nats.url}" } }
---
apiVersion: ${API_VERSION}
kind: EventSource
metadata: { name: orders }
spec:
  eventBus: default
  webhook: { created: { port: "${port}", endpoint: /orders, method: POST } }
---
apiVersion: ${API_VERSION}
kind: Trigger
metadata: { name: billing }
spec:
  eventBus: default
  inputs: { order: { eventSource: orders, event: created, filter: "data.amount > 10" } }
  subscribers:
    - condition: order
      sink: { uri: "${sink.url}" }
      transform: '$merge([data, { "billed": true }])'
      delivery: { retry: 1, backoffDelay: 10ms }
`,
    );
    let down = true;
    sink.status = () => (down ? 503 : 200);
    run = await OfeventsProcess.start({ command: "run", files: [dir], name: "ofevents run (otel)", env: otelEnv });

    // The caller's own trace: the journey continues it.
    const traceId = randomBytes(16).toString("hex");
    const callerSpan = randomBytes(8).toString("hex");
    const res = await fetch(`http://127.0.0.1:${port}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-${callerSpan}-01` },
      body: JSON.stringify({ amount: 42 }),
    });
    expect(res.status).toBe(200);
    const id = ((await res.json()) as { ids: string[] }).ids[0]!;
    const inTrace = (): FlatSpan[] => receiver.spans().filter((s) => s.traceId === traceId);
    await waitFor(() => inTrace().some((s) => s.name.startsWith("dead-letter ")), {
      timeoutMs: 30_000,
      message: () =>
        `the dead-letter span; spans so far: ${inTrace()
          .map((s) => s.name)
          .join(", ")}\n${run!.output()}`,
    });
    await run.stop();
    run = undefined;

    down = false;
    const before = sink.received.length;
    const r = await redriveCliWithEnv([dir], ["--trigger", "default/billing"], otelEnv);
    expect(r.report.delivered).toBe(1);
    await waitFor(
      () =>
        inTrace().some((s) => s.name.startsWith("redrive ")) && inTrace().filter((s) => s.name === "POST").length >= 3,
      {
        timeoutMs: 30_000,
        message: () =>
          `the redrive spans; spans so far: ${inTrace()
            .map((s) => s.name)
            .join(", ")}`,
      },
    );

    const spans = inTrace();
    const names = spans.map((s) => s.name);
    // Each step of the journey, in this one trace.
    for (const want of [
      "receive default/orders/created",
      "publish default-orders-created",
      "process default-orders-created",
      "filter order",
      "condition order",
      "transform",
      `deliver ${sink.url}`,
      `dead-letter ${sink.url}`,
      "publish default.billing.deadletters",
      "redrive default/billing",
    ])
      expect(names, `a "${want}" span among ${names.join(", ")}`).toContain(want);
    // Each HTTP attempt is a span with its status: two 503s, then the redrive's 200.
    const posts = spans.filter((s) => s.name === "POST").map((s) => s.attributes["http.response.status_code"]);
    expect(posts.sort()).toEqual([200, 503, 503]);
    // Every span carries the event id, and hangs from another span of the trace (or the caller's).
    const ids = new Set(spans.map((s) => s.spanId));
    for (const s of spans) {
      expect(s.attributes["cloudevents.event_id"], `${s.name} carries the event id`).toBe(id);
      expect(
        s.parentSpanId === callerSpan || ids.has(s.parentSpanId ?? ""),
        `${s.name} has its parent in the trace`,
      ).toBe(true);
    }
    expect(spans.find((s) => s.name.startsWith("receive "))!.parentSpanId).toBe(callerSpan);
    expect(new Set(spans.map((s) => s.resource["service.name"]))).toEqual(new Set(["otel-test"]));
    // The sink got W3C trace context headers of that trace on every attempt.
    const attempts = sink.received.slice(0);
    expect(attempts).toHaveLength(3);
    for (const a of attempts)
      expect(String(a.headers["traceparent"])).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(sink.received.slice(before)[0]!.headers["ce-ofredriven"]).toBeDefined();
  }, 180_000);
});

/** `ofevents redrive` with extra environment (the OTEL_* variables). */
async function redriveCliWithEnv(files: string[], args: string[], env: Record<string, string>) {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    return await redriveCli(files, args);
  } finally {
    for (const k of Object.keys(env)) if (saved[k] === undefined) delete process.env[k];
  }
}
