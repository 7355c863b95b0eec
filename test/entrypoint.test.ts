/**
 * The container entrypoints (`ofevents eventsource` / `ofevents trigger`): one resource each, with a
 * real JetStream bus between them, health endpoints, and a graceful stop.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "nats";
import { OfEventsError, daprJetStreamStreamName, silentLogger } from "@ofevents/core";
import { startSingle } from "@ofevents/cli";
import { NatsServer } from "./helpers/nats.js";
import { freePorts } from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

/** POSTs a binary-mode CloudEvent with `id` to the webhook on `port` (path /in); resolves with the status. */
async function postEvent(port: number, id: string): Promise<number> {
  const res = await request(`http://127.0.0.1:${port}/in`, {
    method: "POST",
    body: "{}",
    headers: {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": id,
      "ce-source": "/t",
      "ce-type": "t",
    },
  });
  await res.body.text();
  return res.statusCode;
}

describe("entrypoint - single resources over a real JetStream bus", () => {
  let nats: NatsServer;
  let dir: string;
  let sink: Server;
  let sinkUrl: string;
  const received: string[] = [];

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: true });
    dir = await mkdtemp(join(tmpdir(), "ofevents-entry-"));
    sink = createServer((req, res) => {
      received.push(String(req.headers["ce-id"]));
      req.resume();
      req.on("end", () => res.writeHead(200).end());
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    sink?.close();
    await nats?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  /**
   * Writes `bus` plus a webhook EventSource and a forwarding Trigger on it, starts the two
   * entrypoints, and returns them with a function that posts one CloudEvent and waits for the sink.
   */
  async function startPair(tag: string, busName: string, bus: string) {
    const [webhookPort, esHealth, trHealth] = (await freePorts(3)) as [number, number, number];
    const file = join(dir, `pair-${tag}.yaml`);
    await writeFile(
      file,
      `${bus}
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: hooks-${tag} }
spec:
  eventBus: ${busName}
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: fwd-${tag} }
spec:
  eventBus: ${busName}
  inputs: { i: { eventSource: hooks-${tag}, event: in } }
  subscribers: [{ condition: i, sink: { uri: "${sinkUrl}" } }]
`,
    );
    const logger = silentLogger();
    const trigger = await startSingle({
      kind: "Trigger",
      paths: [file],
      logger,
      healthHost: "127.0.0.1",
      healthPort: trHealth,
    });
    const source = await startSingle({
      kind: "EventSource",
      paths: [file],
      logger,
      host: "127.0.0.1",
      healthHost: "127.0.0.1",
      healthPort: esHealth,
    });
    const deliver = async (id: string): Promise<void> => {
      expect(await postEvent(webhookPort, id)).toBe(200);
      await waitFor(() => received.includes(id), { timeoutMs: 10_000, message: `delivery of ${id} through the bus` });
    };
    const stop = async (): Promise<void> => {
      await source.stop();
      await trigger.stop();
    };
    return { esHealth, trHealth, deliver, stop };
  }

  it("entrypoint - eventsource and trigger processes pass events through the bus; /healthz and /readyz answer", async () => {
    const tag = randomSuffix();
    const bus = `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: default }
spec: { jetstream: { url: "${nats.url}", stream: "e${tag}" } }`;
    const pair = await startPair(tag, "default", bus);
    try {
      for (const port of [pair.esHealth, pair.trHealth]) {
        for (const path of ["/healthz", "/readyz"]) {
          const r = await request(`http://127.0.0.1:${port}${path}`);
          await r.body.text();
          expect(r.statusCode, `${port}${path}`).toBe(200);
        }
      }
      await pair.deliver(`x-${tag}`);
    } finally {
      await pair.stop();
    }
    const after = await request(`http://127.0.0.1:${pair.trHealth}/healthz`).catch((e: unknown) => e);
    expect(after).toBeInstanceOf(Error);
  });

  it("entrypoint - /readyz answers 503 with the reason while the bus's server is down, 200 again after", async () => {
    const tag = randomSuffix();
    const bus = `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: default }
spec: { jetstream: { url: "${nats.url}", stream: "r${tag}" } }`;
    const pair = await startPair(tag, "default", bus);
    const readyz = async (port: number): Promise<{ status: number; text: string }> => {
      const r = await request(`http://127.0.0.1:${port}/readyz`);
      return { status: r.statusCode, text: await r.body.text() };
    };
    try {
      await pair.deliver(`before-${tag}`);
      await nats.restart(async () => {
        for (const port of [pair.esHealth, pair.trHealth]) {
          const down = await waitFor(
            async () => {
              const r = await readyz(port);
              return r.status === 503 ? r : undefined;
            },
            { timeoutMs: 10_000, message: `/readyz on ${port} turning 503 while NATS is down` },
          );
          expect(down.text).toContain("not ready");
          expect(down.text).toContain("not reachable");
          // Liveness is not readiness: the process itself still serves.
          const live = await request(`http://127.0.0.1:${port}/healthz`);
          await live.body.text();
          expect(live.statusCode).toBe(200);
        }
      });
      for (const port of [pair.esHealth, pair.trHealth]) {
        await waitFor(async () => (await readyz(port)).status === 200, {
          timeoutMs: 20_000,
          message: `/readyz on ${port} back to 200 after NATS restarted`,
        });
      }
      await pair.deliver(`after-${tag}`);
    } finally {
      await pair.stop();
    }
  });

  it("entrypoint - OpenFunction's natsStreaming ClusterEventBus runs on JetStream", async () => {
    const tag = randomSuffix();
    const bus = `apiVersion: events.openfunction.io/v1alpha1
kind: ClusterEventBus
metadata: { name: stan }
spec:
  natsStreaming:
    natsURL: "${nats.url}"
    natsStreamingClusterID: "stan"
    subscriptionType: "queue"
    durableSubscriptionName: "ImDurable"`;
    const pair = await startPair(tag, "stan", bus);
    try {
      await pair.deliver(`stan-${tag}`);
    } finally {
      await pair.stop();
    }
  });

  it("entrypoint - an event that cannot run here (OpenFunction's redis event) does not hold /readyz; the other event runs", async () => {
    const [webhookPort, health] = (await freePorts(2)) as [number, number];
    const file = join(dir, `redis-${randomSuffix()}.yaml`);
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
  redis:
    sample-three: { redisHost: "redis-leader.default.svc.cluster.local:6379", redisPassword: "", enableTLS: false }
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
`,
    );
    const source = await startSingle({
      kind: "EventSource",
      paths: [file],
      logger: silentLogger(),
      host: "127.0.0.1",
      healthHost: "127.0.0.1",
      healthPort: health,
    });
    try {
      const ready = await waitFor(
        async () => {
          const r = await request(`http://127.0.0.1:${health}/readyz`);
          const text = await r.body.text();
          return r.statusCode === 200 ? text : undefined;
        },
        { timeoutMs: 10_000, message: "/readyz 200 with the redis event not running" },
      );
      expect(ready).toBe("ready");
      const res = await request(`http://127.0.0.1:${webhookPort}/in`, {
        method: "POST",
        body: "{}",
        headers: { "content-type": "application/json" },
      });
      await res.body.text();
      expect(res.statusCode).toBe(200);
    } finally {
      await source.stop();
    }
  });

  it("entrypoint - a source with eventBus and sink: the caller gets 502 until both took the event; the bus keeps one copy", async () => {
    const tag = randomSuffix();
    const [webhookPort, health] = (await freePorts(2)) as [number, number];
    let sinkUp = false;
    const sinkGot: string[] = [];
    const flaky = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        if (!sinkUp) return void res.writeHead(503).end();
        sinkGot.push(String(req.headers["ce-id"]));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => flaky.listen(0, "127.0.0.1", r));
    const file = join(dir, `both-${tag}.yaml`);
    await writeFile(
      file,
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: js }
spec: { jetstream: { url: "${nats.url}" } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: both-${tag} }
spec:
  eventBus: js
  sink: { uri: "http://127.0.0.1:${(flaky.address() as AddressInfo).port}/" }
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
`,
    );
    const source = await startSingle({
      kind: "EventSource",
      paths: [file],
      logger: silentLogger(),
      host: "127.0.0.1",
      healthHost: "127.0.0.1",
      healthPort: health,
    });
    const nc = await connect({ servers: nats.url });
    try {
      const id = `both-${tag}`;
      const post = (): Promise<number> => postEvent(webhookPort, id);
      // The bus took it, the sink did not (after its retries): not acknowledged.
      expect(await post()).toBe(502);
      expect(sinkGot).toEqual([]);
      sinkUp = true;
      // The caller's retry reaches both; the bus keeps the one copy (its duplicate window).
      expect(await post()).toBe(200);
      expect(sinkGot).toEqual([id]);
      const jsm = await nc.jetstreamManager();
      const info = await jsm.streams.info(daprJetStreamStreamName(`default-both-${tag}-in`));
      expect(info.state.messages).toBe(1);
    } finally {
      await nc.close();
      await source.stop();
      flaky.close();
    }
  });

  it("entrypoint - a missing bus or an ambiguous resource is a clear error", async () => {
    const file = join(dir, "two.yaml");
    await writeFile(
      file,
      `apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: a }
spec: { eventBus: nowhere, inputs: { i: { eventSource: s, event: e } }, subscribers: [{ condition: i, topic: t }] }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: b }
spec: { eventBus: nowhere, inputs: { i: { eventSource: s, event: e } }, subscribers: [{ condition: i, topic: t }] }
`,
    );
    const logger = silentLogger();
    const [p1, p2] = await freePorts(2);
    const ambiguous = await startSingle({
      kind: "Trigger",
      paths: [file],
      logger,
      healthHost: "127.0.0.1",
      healthPort: p1,
    }).catch((e: unknown) => e);
    expect(ambiguous).toBeInstanceOf(OfEventsError);
    expect((ambiguous as Error).message).toContain("choose one with --name");
    const noBus = await startSingle({
      kind: "Trigger",
      paths: [file],
      name: "a",
      logger,
      healthHost: "127.0.0.1",
      healthPort: p2,
    }).catch((e: unknown) => e);
    expect((noBus as Error).message).toContain('EventBus "nowhere" is not in the manifests');
  });
});
