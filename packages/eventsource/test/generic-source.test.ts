// The generic source (SinkBinding idea) over real HTTP on 127.0.0.1: a plain Node process, which
// knows nothing of this project, reads K_SINK and K_CE_OVERRIDES from its environment and POSTs
// CloudEvents in binary, structured and batch mode, retrying on anything but 2xx (the Knative
// sender contract). The bus refuses some publishes; every event still arrives, with the overrides.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import {
  API_VERSION,
  ceOverridesEnv,
  createInstrumentation,
  createSecretResolver,
  loadManifests,
  silentLogger,
  type CloudEvent,
  type EventSource,
} from "@ofevents/core";
import { createMemoryBus, type EventBus } from "@ofevents/eventbus";
import {
  createWebhookServers,
  startEventSource,
  validateEventSource,
  type EventSourceRuntime,
  type SourceEvents,
  type WebhookServers,
} from "../src/index.js";
import { FlakyPublisher } from "./support.js";
import { waitFor } from "../../../test/helpers/wait.js";

const logger = silentLogger();
const OVERRIDES = { team: "platform", region: "eu1" };

function genericSource(port: number, extra: Record<string, unknown> = {}): EventSource {
  return {
    apiVersion: API_VERSION,
    kind: "EventSource",
    metadata: { name: "apps", namespace: "ns1" },
    spec: {
      eventBus: "default",
      generic: {
        ingest: {
          port: String(port),
          path: "/ingest",
          subject: { deployment: "my-app" },
          ceOverrides: { extensions: OVERRIDES },
          ...extra,
        },
      },
    },
  } as EventSource;
}

/**
 * The sender: plain Node (global fetch), no import of this project. Sends N events: index % 3 == 0
 * in binary mode, == 1 structured, == 2 collected into batches of 3. It applies K_CE_OVERRIDES as a
 * Knative source does, except to every 5th event, which carries team=wrong (the source overrides
 * it). Each request is retried on anything but 2xx (at most 100 tries, 20 ms apart). Prints a JSON
 * summary: the ids sent and the statuses seen.
 */
const SENDER = String.raw`
const sink = process.env.K_SINK;
const overrides = JSON.parse(process.env.K_CE_OVERRIDES || "{}").extensions || {};
const n = Number(process.env.N);
const statuses = {};
const sent = [];
async function post(headers, body) {
  for (let attempt = 1; attempt <= 100; attempt++) {
    const res = await fetch(sink, { method: "POST", headers, body });
    await res.text();
    statuses[res.status] = (statuses[res.status] || 0) + 1;
    if (res.status >= 200 && res.status < 300) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("gave up on " + body);
}
function event(i) {
  const ext = i % 5 === 0 ? { team: "wrong" } : overrides;
  return { specversion: "1.0", id: "evt-" + i, source: "/my-app", type: "com.example.tick", ...ext, datacontenttype: "application/json", data: { i, text: "héllo " + i } };
}
(async () => {
  let batch = [];
  for (let i = 0; i < n; i++) {
    const ev = event(i);
    sent.push(ev.id);
    if (i % 3 === 0) {
      const headers = { "content-type": "application/json" };
      for (const [k, v] of Object.entries(ev)) if (k !== "data" && k !== "datacontenttype") headers["ce-" + k] = String(v);
      await post(headers, JSON.stringify(ev.data));
    } else if (i % 3 === 1) {
      await post({ "content-type": "application/cloudevents+json" }, JSON.stringify(ev));
    } else {
      batch.push(ev);
      if (batch.length === 3) {
        await post({ "content-type": "application/cloudevents-batch+json" }, JSON.stringify(batch));
        batch = [];
      }
    }
  }
  if (batch.length > 0) await post({ "content-type": "application/cloudevents-batch+json" }, JSON.stringify(batch));
  process.stdout.write(JSON.stringify({ sent, statuses }));
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;

/** Runs the sender with `env`; resolves with its summary, rejects on a non-zero exit or after 60 s. */
function runSender(env: Record<string, string>): Promise<{ sent: string[]; statuses: Record<string, number> }> {
  return new Promise((resolve, reject) => {
    // Only what a container would get: K_SINK, K_CE_OVERRIDES, N (and PATH to find nothing else).
    const child = spawn(process.execPath, ["-e", SENDER], { env: { PATH: process.env["PATH"] ?? "", ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as { sent: string[]; statuses: Record<string, number> });
      else reject(new Error(`sender exited ${code}: ${err}`));
    });
  });
}

describe("generic-source - a plain process sends CloudEvents to K_SINK", () => {
  let bus: EventBus;
  let flaky: FlakyPublisher;
  let webhooks: WebhookServers;
  let runtime: EventSourceRuntime;
  let sink: string;
  const got: CloudEvent[] = [];
  const published: string[] = [];

  beforeAll(async () => {
    bus = createMemoryBus({ logger });
    await bus.subscribe(["ns1-apps-ingest"], async (e) => void got.push(e), { group: "test" });
    flaky = new FlakyPublisher(bus);
    webhooks = createWebhookServers({ logger });
    // Port 0 opens a listener on a free port; the generic event then joins it by that port.
    const port = await webhooks.register(0, {
      method: "GET",
      endpoint: "/probe",
      handle: async (_q, s) => void s.end(),
    });
    const instrumentation = createInstrumentation<SourceEvents>();
    instrumentation.on("published", (e) => published.push(e.id));
    runtime = await startEventSource(genericSource(port), {
      logger,
      bus: flaky,
      webhooks,
      instrumentation,
      secrets: createSecretResolver([], {}),
      // One publish attempt: a refused publish answers 503 to the sender at once.
      publishAttempts: 1,
    });
    sink = `http://127.0.0.1:${port}/ingest`;
  });
  afterAll(async () => {
    await runtime.stop();
    await webhooks.close();
    await bus.close();
  });

  it("generic-source - every event arrives on the bus with the overrides, though the bus refused some publishes", async () => {
    const N = 30;
    flaky.failNext = 7;
    const spec = genericSource(0).spec.generic!["ingest"]!;
    const summary = await runSender({ K_SINK: sink, K_CE_OVERRIDES: ceOverridesEnv(spec)!, N: String(N) });
    expect(summary.sent).toHaveLength(N);
    // The refused publishes were answered 503 and sent again.
    expect(summary.statuses["503"]).toBe(7);
    expect(flaky.rejected).toBe(7);
    await waitFor(() => new Set(got.map((e) => e.id)).size >= N, {
      timeoutMs: 10_000,
      message: "all events on the bus",
    });
    const byId = new Map(got.map((e) => [e.id, e as Record<string, unknown>]));
    expect([...byId.keys()].sort()).toEqual([...summary.sent].sort());
    for (const id of summary.sent) {
      const ev = byId.get(id)!;
      const i = Number(id.slice(4));
      expect(ev).toMatchObject({
        specversion: "1.0",
        source: "/my-app",
        type: "com.example.tick",
        team: "platform",
        region: "eu1",
        data: { i, text: `héllo ${i}` },
      });
    }
    // At least once: a batch whose publish failed part-way is sent again, so it may repeat an
    // event; anything else arrives once per 2xx.
    await waitFor(() => got.length === published.length, { timeoutMs: 5_000, message: "every publish delivered" });
    expect(got.length).toBeGreaterThanOrEqual(N);
  }, 90_000);

  it("generic-source - 2xx only after the bus took the event: while it is down, 503 and nothing published", async () => {
    const before = got.length;
    flaky.down = true;
    try {
      const res = await request(sink, {
        method: "POST",
        headers: { "content-type": "application/cloudevents+json" },
        body: JSON.stringify({ specversion: "1.0", id: "down-1", source: "/x", type: "t" }),
      });
      await res.body.text();
      expect(res.statusCode).toBe(503);
      expect(res.headers["retry-after"]).toBe("1");
    } finally {
      flaky.down = false;
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(got.length).toBe(before);
    expect(got.map((e) => e.id)).not.toContain("down-1");
  });

  it("generic-source - what is not a CloudEvent is refused: 415 for plain JSON, 400 without an id, 405 for GET", async () => {
    const before = got.length;
    const plain = await request(sink, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(plain.statusCode).toBe(415);
    expect(((await plain.body.json()) as { error: string }).error).toContain("expected a CloudEvent");
    const noId = await request(sink, {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json" },
      body: JSON.stringify({ specversion: "1.0", source: "/x", type: "t" }),
    });
    await noId.body.text();
    expect(noId.statusCode).toBe(400);
    const get = await request(sink, { method: "GET" });
    await get.body.text();
    expect(get.statusCode).toBe(405);
    expect(got.length).toBe(before);
  });

  it("generic-source - a bad override name is a validation issue", async () => {
    const issues = await validateEventSource(genericSource(8080, { ceOverrides: { extensions: { "Bad-Name": "x" } } }));
    expect(issues.map((i) => i.path)).toEqual(["spec.generic.ingest.ceOverrides.extensions.Bad-Name"]);
  });

  it("generic-source - examples/eventsources/generic.yaml loads and validates", async () => {
    const file = fileURLToPath(new URL("../../../examples/eventsources/generic.yaml", import.meta.url));
    expect(await readFile(file, "utf8")).toContain("generic:");
    const m = await loadManifests([file]);
    expect(m.issues).toEqual([]);
    const es = m.eventSources[0]!.resource;
    expect(Object.keys(es.spec.generic ?? {})).toEqual(["app"]);
    expect(await validateEventSource(es)).toEqual([]);
  });
});
