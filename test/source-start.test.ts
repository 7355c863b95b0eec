/**
 * Events of an EventSource start independently: one whose server is down at start is retried with
 * backoff (logged, counted in ofevents_eventsource_start_failures_total), never delays the others,
 * and starts once its server is back; the entrypoint's /readyz says not ready until then.
 * Real nats-server, stopped during start-up and restarted on the same port.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbedded, startSingle } from "@ofevents/cli";
import { silentLogger } from "@ofevents/core";
import { NatsServer } from "./helpers/nats.js";
import { metricValue } from "./helpers/prometheus.js";
import { freePorts } from "./helpers/server.js";
import { RecordingSink } from "./helpers/sink.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

describe("eventsource start - a source that cannot connect is retried and delays no other", () => {
  let nats: NatsServer;
  let dir: string;
  let sink: RecordingSink;
  let sinkUrl: string;
  let seen: string[];

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: true });
    dir = await mkdtemp(join(tmpdir(), "ofevents-start-"));
    sink = await RecordingSink.start();
    sinkUrl = sink.url;
    seen = sink.ids;
  }, 60_000);

  afterAll(async () => {
    await nats?.stop();
    await sink?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("eventsource start - run: the webhook serves while the NATS event retries; the NATS event starts when its server is back", async () => {
    const subject = `orders-${randomSuffix()}`;
    const hookPort = (await freePorts(1))[0]!;
    const file = join(dir, "run.yaml");
    await writeFile(
      file,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: mixed }
spec:
  eventBus: default
  nats: { orders: { url: "${nats.url}", subject: ${subject} } }
  webhook: { hook: { port: "${hookPort}", endpoint: /hook } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { o: { eventSource: mixed, event: orders }, h: { eventSource: mixed, event: hook } }
  subscribers: [{ condition: o || h, sink: { uri: "${sinkUrl}" } }]
`,
    );
    await nats.restart(async () => {
      const embedded = await startEmbedded({ paths: [file], logger: silentLogger(), functionsPort: 0 });
      try {
        expect(embedded.notRunning().map((n) => n.event)).toEqual(["orders"]);
        // The webhook event runs meanwhile.
        const res = await fetch(`http://127.0.0.1:${hookPort}/hook`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "h-1",
            "ce-source": "/t",
            "ce-type": "t",
          },
          body: "{}",
        });
        expect(res.status).toBe(200);
        await waitFor(() => seen.includes("h-1"), { message: "the webhook event delivered" });
        const text = await embedded.metrics.text();
        const labels = { namespace: "default", eventsource: "mixed", event: "orders" };
        expect(metricValue(text, "ofevents_eventsource_start_failures_total", labels)).toBeGreaterThanOrEqual(1);
        expect(metricValue(text, "ofevents_eventsource_up", labels)).toBe(0);
        stopLater.push(embedded);
      } catch (err) {
        await embedded.stop();
        throw err;
      }
    });
    const embedded = stopLater.pop()!;
    try {
      await waitFor(() => embedded.notRunning().length === 0, {
        timeoutMs: 20_000,
        message: "the NATS event started after its server came back",
      });
      const nc = await connect({ servers: nats.url });
      nc.publish(subject, JSON.stringify({ n: 1 }));
      await nc.flush();
      await nc.close();
      await waitFor(() => seen.length >= 2, { message: "the NATS event delivered" });
    } finally {
      await embedded.stop();
    }
  }, 60_000);

  it("eventsource start - entrypoint: /readyz is 503 naming the event until it runs", async () => {
    const [hookPort, healthPort, deadPort] = await freePorts(3);
    const file = join(dir, "single.yaml");
    await writeFile(
      file,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: js }
spec: { jetstream: { url: "${nats.url}" } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: mixed }
spec:
  eventBus: js
  nats: { orders: { url: "nats://127.0.0.1:${deadPort}", subject: x } }
  webhook: { hook: { port: "${hookPort}", endpoint: /hook } }
`,
    );
    // The NATS event points at a port where nothing listens.
    const single = await startSingle({
      kind: "EventSource",
      paths: [file],
      logger: silentLogger(),
      host: "127.0.0.1",
      healthHost: "127.0.0.1",
      healthPort,
    });
    try {
      const res = await fetch(`http://127.0.0.1:${healthPort}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/event orders: .*/);
    } finally {
      await single.stop();
    }
  }, 30_000);
});

const stopLater: Array<Awaited<ReturnType<typeof startEmbedded>>> = [];
