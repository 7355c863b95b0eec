/**
 * CPU per event of single parts of E1's path, each against the plainest code that does the same
 * job, so a change to one part shows without the noise of the whole pipeline (E1's throughput
 * moves by a tenth between runs; these figures by a few %):
 *
 * - `ingest`: the webhook source publishing to the memory bus (no subscriber), against a node
 *   HTTP server that parses the JSON body and answers `{ accepted, ids }` with a random id. The
 *   server runs in a child process; its CPU per request is measured, the load generator's not.
 * - `trigger`: memory bus → trigger (E1's filter, half pass) → a stub sink client that answers at
 *   once: everything between the publish and the HTTP request, in this process, per published
 *   event. No plain counterpart: the figure is compared between commits.
 * - `sink`: the sink client's delivery of an event (binary mode, retries policy, cancel signal)
 *   against undici with the baseline's headers, to a plain HTTP server in a child process; this
 *   process's CPU per request.
 *
 * Run: `npx tsx bench/parts.ts [ingest] [trigger] [sink] [--quick]` (after `npm run build`; all
 * three by default). Each figure is the median of 5 rounds after a warm-up round. Traffic stays on
 * 127.0.0.1; every loop is bounded by its count.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { Agent, request } from "undici";
import { freePort } from "./lib/load.js";

const CONCURRENCY = 64;
const ROUNDS = 5;

interface Sizes {
  requests: number;
  events: number;
}
const FULL: Sizes = { requests: 30_000, events: 100_000 };
const QUICK: Sizes = { requests: 300, events: 2_000 };

function cpuMicros(): number {
  const c = process.cpuUsage();
  return c.user + c.system;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The child side: a server that reports its own CPU time (µs) when asked over IPC. */
async function serve(kind: string, port: number): Promise<void> {
  if (kind === "webhook") {
    const { createMemoryBus } = await import("@ofevents/eventbus");
    const { startEventSource, createWebhookServers } = await import("@ofevents/eventsource");
    const { API_VERSION, createSecretResolver, silentLogger } = await import("@ofevents/core");
    const logger = silentLogger();
    await startEventSource(
      {
        apiVersion: API_VERSION,
        kind: "EventSource",
        metadata: { name: "parts", namespace: "default" },
        spec: {
          eventBus: "default",
          webhook: { orders: { port: String(port), endpoint: "/orders", method: "POST" } },
        },
      },
      {
        logger,
        bus: createMemoryBus({ logger }),
        secrets: createSecretResolver(),
        webhooks: createWebhookServers({ logger }),
      },
    );
  } else {
    const plainIngest = kind === "plain-ingest";
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (!plainIngest) return void res.writeHead(200, { "content-length": "0" }).end();
        JSON.parse(Buffer.concat(chunks).toString("utf8"));
        const body = JSON.stringify({ accepted: 1, ids: [randomUUID()] });
        res
          .writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) })
          .end(body);
      });
    });
    await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  }
  process.on("message", () => process.send!(cpuMicros()));
  process.on("SIGTERM", () => process.exit(0));
  process.send!("ready");
}

interface Server {
  url: string;
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

async function startServer(kind: string, path: string): Promise<Server> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", fileURLToPath(import.meta.url), "--serve", kind, String(port)],
    { stdio: ["ignore", "inherit", "inherit", "ipc"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`${kind} server exited (${code}) before it was ready`)));
  });
  return {
    url: `http://127.0.0.1:${port}${path}`,
    cpu: () =>
      new Promise<number>((resolve) => {
        child.once("message", (m) => resolve(m as number));
        child.send("cpu");
      }),
    async stop() {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** `send` `count` times with CONCURRENCY in flight; CPU µs per send, of `cpu`. */
async function closedLoop(count: number, send: (i: number) => Promise<unknown>, cpu: () => Promise<number>) {
  let next = 0;
  const before = await cpu();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) await send(next++);
    }),
  );
  return ((await cpu()) - before) / count;
}

async function rounds(measure: () => Promise<number>): Promise<number[]> {
  await measure();
  const out: number[] = [];
  for (let i = 0; i < ROUNDS; i++) out.push(await measure());
  return out;
}

function report(name: string, us: number[]): number {
  const m = median(us);
  console.log(`${name.padEnd(58)} ${m.toFixed(2).padStart(7)} µs   (rounds: ${us.map((x) => x.toFixed(2)).join(" ")})`);
  return m;
}

async function ingest(s: Sizes): Promise<void> {
  const agent = new Agent({ connections: CONCURRENCY });
  const body = (i: number) => JSON.stringify({ n: i, order: `o-${i}`, amount: 12.5 });
  const results: number[] = [];
  try {
    for (const [name, kind] of [
      ["ingest: webhook source", "webhook"],
      ["ingest: plain node server", "plain-ingest"],
    ] as const) {
      const server = await startServer(kind, "/orders");
      try {
        const us = await rounds(() =>
          closedLoop(
            s.requests,
            async (i) => {
              const res = await request(server.url, {
                method: "POST",
                dispatcher: agent,
                headers: { "content-type": "application/json" },
                body: body(i),
              });
              if (res.statusCode !== 200) throw new Error(`${name}: answered ${res.statusCode}`);
              await res.body.dump();
            },
            server.cpu,
          ),
        );
        results.push(report(`${name} (server CPU/request)`, us));
      } finally {
        await server.stop();
      }
    }
    console.log(`ingest: webhook / plain ${(results[0]! / results[1]!).toFixed(2)}x`);
  } finally {
    await agent.close();
  }
}

async function trigger(s: Sizes): Promise<void> {
  const { API_VERSION, createExpressionEngine, newEvent, silentLogger } = await import("@ofevents/core");
  const { createMemoryBus } = await import("@ofevents/eventbus");
  const { startTrigger } = await import("@ofevents/trigger");
  const { PIPELINE_FILTER } = await import("./lib/pipeline.js");
  const logger = silentLogger();
  const bus = createMemoryBus({ logger });
  let delivered = 0;
  const answer = { status: 200, headers: {}, body: Buffer.alloc(0) };
  const sinks = {
    send: async () => answer,
    deliver: async () => {
      delivered++;
      return answer;
    },
    close: async () => undefined,
  };
  const t = await startTrigger(
    {
      apiVersion: API_VERSION,
      kind: "Trigger",
      metadata: { name: "parts", namespace: "default" },
      spec: {
        eventBus: "default",
        inputs: { orders: { eventSource: "parts", event: "orders", filter: PIPELINE_FILTER } },
        subscribers: [{ condition: "orders", sink: { uri: "http://127.0.0.1:9/" } }],
      },
    },
    { bus, logger, engine: createExpressionEngine(), sinks },
  );
  const topic = "default-parts-orders";
  try {
    const us = await rounds(async () => {
      const target = delivered + s.events / 2;
      const before = cpuMicros();
      const waiting: Promise<void>[] = [];
      for (let i = 0; i < s.events; i++) {
        waiting.push(bus.publish(topic, newEvent({ source: "/parts", type: "t", data: { n: i, order: `o-${i}` } })));
        if (waiting.length === 256) await Promise.all(waiting.splice(0));
      }
      await Promise.all(waiting);
      // Bounded: every passing event is delivered at once by the stub, so this ends within a few turns.
      for (let turns = 0; delivered < target && turns < 1_000_000; turns++) await new Promise((r) => setImmediate(r));
      if (delivered < target) throw new Error(`trigger: ${target - delivered} events not delivered`);
      return (cpuMicros() - before) / s.events;
    });
    report("trigger: bus → trigger → stub (CPU/published event)", us);
  } finally {
    await t.stop();
    await bus.close();
  }
}

async function sink(s: Sizes): Promise<void> {
  const { newEvent } = await import("@ofevents/core");
  const { createSinkClient, deliveryPolicy } = await import("@ofevents/delivery");
  const { createForwarder } = await import("./lib/pipeline.js");
  const server = await startServer("plain-sink", "/");
  // E1's baseline forwarder: undici with the binary-mode headers the baseline sends.
  const forwarder = createForwarder(server.url, CONCURRENCY);
  const client = createSinkClient();
  const policy = deliveryPolicy();
  // One cancel signal for every delivery in flight, as a trigger has.
  const cancel = new AbortController();
  setMaxListeners(CONCURRENCY * 2, cancel.signal);
  const local = async () => cpuMicros();
  const event = (i: number) => newEvent({ source: "/parts", type: "t", data: { n: i, order: `o-${i}` } });
  try {
    const results: number[] = [];
    for (const [name, send] of [
      ["sink: sink client", (i: number) => client.deliver(server.url, event(i), policy, { signal: cancel.signal })],
      [
        "sink: undici, the baseline's headers",
        async (i: number) => {
          if ((await forwarder.send(JSON.stringify(event(i).data))) !== 200) throw new Error("sink: not taken");
        },
      ],
    ] as const) {
      results.push(report(`${name} (client CPU/request)`, await rounds(() => closedLoop(s.requests, send, local))));
    }
    console.log(`sink: client / undici ${(results[0]! / results[1]!).toFixed(2)}x`);
  } finally {
    await client.close();
    await forwarder.close();
    await server.stop();
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === "--serve") return serve(args[1]!, Number(args[2]));
  const sizes = args.includes("--quick") ? QUICK : FULL;
  const parts = args.filter((a) => !a.startsWith("--"));
  const unknown = parts.filter((p) => !["ingest", "trigger", "sink"].includes(p));
  if (unknown.length > 0) throw new Error(`unknown part(s): ${unknown.join(", ")} (ingest, trigger, sink)`);
  const want = (p: string) => parts.length === 0 || parts.includes(p);
  if (want("ingest")) await ingest(sizes);
  if (want("trigger")) await trigger(sizes);
  if (want("sink")) await sink(sizes);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
