/**
 * The live page of `ofevents run` and its local API (also what `ofevents tail` talks to):
 *
 * - `GET /`: the page (plain HTML, CSS and a module script from packages/cli/ui; nothing fetched
 *   from the network).
 * - `GET /api/graph`: the flow graph and what listens where.
 * - `GET /api/stats`: the counters; `GET /api/stream`: the same as server-sent events (`stats`,
 *   at most every 250 ms while something moves).
 * - `GET /api/nodes/<node>`: the latest events of a node with their journey, and a subscriber's
 *   dead letters.
 * - `POST /api/redrive` `{node, id}`: redrives one dead letter of a subscriber.
 * - `POST /api/send` `{node, data, id?, subject?}`: sends a test event through a source's event.
 * - `GET /api/tail?topic=…|trigger=ns/name|source=ns/name`: the CloudEvents passing, as
 *   server-sent events (`event`), from a throwaway tail on the bus.
 * - `GET /events[/<id>]`: the journal (as on the metrics port).
 */
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  createExpressionEngine,
  namespaceOf,
  sendBody,
  sendJson,
  type CloudEvent,
  type Logger,
  type Manifests,
  type Sink,
  type Trigger,
} from "@ofevents/core";
import { createSinkClient, type SinkClient } from "@ofevents/delivery";
import { DeadLetterExtension, type EventBus, type Tail, type TailedEvent } from "@ofevents/eventbus";
import type { EventSourceRuntime } from "@ofevents/eventsource";
import { redrive, redriveOne } from "@ofevents/trigger";
import { buildGraph, type FlowGraph, type FlowStats } from "./flow.js";
import type { Journal } from "./journal.js";
import { tailTopics, type TailWhat } from "./tail.js";

/** What the page lists as listening: webhooks, functions, metrics, the page itself. */
export interface Listener {
  what: string;
  url: string;
}

export interface UiOptions {
  manifests: Manifests;
  stats: FlowStats;
  journal: Journal;
  logger: Logger;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** When `port` is taken: pick a free one instead of failing (the default port of `run`). */
  fallback?: boolean | undefined;
  /** The bus a resource in a namespace means by a name (opened by the runner). */
  busFor(name: string, namespace: string): Promise<EventBus>;
  /** The key a bus name resolves to, for the graph (`memory:default`, `EventBus:ns/name`). */
  busKey(name: string, namespace: string): string;
  source(namespace: string, name: string): EventSourceRuntime | undefined;
  resolveSink(sink: Sink, namespace: string): string;
  listeners(): Listener[];
}

export interface UiServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

const ASSETS: Record<string, string> = {
  "/": "index.html",
  "/index.html": "index.html",
  "/app.js": "app.js",
  "/style.css": "style.css",
};
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};
/** Largest request body the API takes (a test event). */
const MAX_BODY = 1 << 20;
const STREAM_EVERY_MS = 250;
const HEARTBEAT_MS = 15_000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new HttpError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(c);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v as Record<string, unknown>;
  } catch (err) {
    throw new HttpError(400, `the body must be a JSON object: ${(err as Error).message}`);
  }
}

function text(v: unknown, field: string): string {
  if (typeof v !== "string" || v === "") throw new HttpError(400, `${field} must be a non-empty string`);
  return v;
}

export async function startUi(o: UiOptions): Promise<UiServer> {
  const log = o.logger.child({ component: "ui" });
  const graph: FlowGraph = buildGraph(o.manifests, o.busKey);
  const engine = createExpressionEngine();
  let sinks: SinkClient | undefined;
  const tails = new Set<Tail>();
  const streams = new Set<ServerResponse>();

  const triggerOf = (ns: string, name: string): Trigger => {
    const t = o.manifests.triggers.find((x) => namespaceOf(x.resource) === ns && x.resource.metadata.name === name);
    if (t === undefined) throw new HttpError(404, `no trigger ${ns}/${name}`);
    return t.resource;
  };
  /** `subscriber:ns/name/i` → the trigger and the index. */
  const subscriberOf = (node: string): { trigger: Trigger; index: number } => {
    const m = /^subscriber:([^/]+)\/(.+)\/(\d+)$/.exec(node);
    if (m === null) throw new HttpError(400, `${node} is not a subscriber node`);
    const trigger = triggerOf(m[1]!, m[2]!);
    const index = Number(m[3]);
    if (index >= trigger.spec.subscribers.length) throw new HttpError(404, `no subscriber ${node}`);
    return { trigger, index };
  };

  /** The bus and topics of `?topic=` (with `bus`, `namespace`), `?trigger=ns/name` or `?source=ns/name`. */
  async function tailTarget(q: URLSearchParams): Promise<{ bus: EventBus; topics: string[] }> {
    const what: TailWhat = {};
    for (const k of ["topic", "trigger", "source", "bus", "namespace"] as const) what[k] = q.get(k) ?? undefined;
    let t;
    try {
      t = tailTopics(o.manifests, what);
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
    return { bus: await o.busFor(t.bus, t.namespace), topics: t.topics };
  }

  async function nodeInfo(node: string): Promise<unknown> {
    const n = graph.nodes.find((x) => x.id === node);
    if (n === undefined) throw new HttpError(404, `no node ${node}`);
    const events = o.stats.latestOf(node).map((id) => o.journal.get(id) ?? { id, steps: [], omitted: 0 });
    return {
      node: n,
      counters: o.stats.snapshot()[node] ?? {},
      events,
      deadLetters: n.kind === "subscriber" ? o.stats.deadLettersOf(node) : [],
    };
  }

  async function doRedrive(req: IncomingMessage): Promise<unknown> {
    const b = await body(req);
    const node = text(b["node"], "node");
    const id = text(b["id"], "id");
    const { trigger, index } = subscriberOf(node);
    const ns = namespaceOf(trigger);
    const kept = o.stats.deadLetter(node, id);
    const bus = await o.busFor(trigger.spec.eventBus, ns);
    sinks ??= createSinkClient();
    const access = { trigger, bus, engine, logger: o.logger, sinks, resolveSink: o.resolveSink };
    // On a bus that keeps the trigger's dead letters, the kept one is redriven (and settled for
    // `ofevents redrive`); else the copy this run saw.
    if (bus.read !== undefined && bus.seenSet !== undefined) {
      const r = await redrive({ ...access, subscriber: index, filter: `id = ${JSON.stringify(id)}`, limit: 1 });
      if (r.matched > 0) {
        if (r.delivered > 0 && r.deadLettered === 0) o.stats.forget(node, id);
        return { id, delivered: r.delivered, deadLettered: r.deadLettered };
      }
    }
    if (kept === undefined) throw new HttpError(404, `no dead letter ${id} of ${node} in this run`);
    const r = await redriveOne({
      ...access,
      deadLetter: {
        ...kept.event,
        [DeadLetterExtension.Subscriber]: index,
        [DeadLetterExtension.Destination]: kept.target,
      },
    });
    if (r.delivered > 0 && r.deadLettered === 0) o.stats.forget(node, id);
    return { id, ...r };
  }

  async function doSend(req: IncomingMessage): Promise<unknown> {
    const b = await body(req);
    const node = text(b["node"], "node");
    const m = /^source:([^/]+)\/([^/]+)\/(.+)$/.exec(node);
    if (m === null) throw new HttpError(400, `${node} is not a source event node (source:ns/name/event)`);
    const rt = o.source(m[1]!, m[2]!);
    if (rt === undefined) throw new HttpError(404, `event source ${m[1]}/${m[2]} is not running`);
    const str = (k: string): string | undefined => (typeof b[k] === "string" && b[k] !== "" ? b[k] : undefined);
    try {
      const { id } = await rt.inject(m[3]!, {
        data: b["data"],
        id: str("id"),
        subject: str("subject"),
        datacontenttype: "application/json",
        extensions: { oftest: true },
      });
      return { id };
    } catch (err) {
      throw new HttpError(502, (err as Error).message);
    }
  }

  function stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
      connection: "keep-alive",
    });
    let sent = -1;
    const send = (): void => {
      if (o.stats.version === sent) return;
      sent = o.stats.version;
      res.write(`event: stats\ndata: ${JSON.stringify(o.stats.snapshot())}\n\n`);
    };
    send();
    const every = setInterval(send, STREAM_EVERY_MS);
    const beat = setInterval(() => res.write(": keep-alive\n\n"), HEARTBEAT_MS);
    streams.add(res);
    req.on("close", () => {
      clearInterval(every);
      clearInterval(beat);
      streams.delete(res);
    });
  }

  async function tail(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): Promise<void> {
    const { bus, topics } = await tailTarget(q);
    if (bus.tail === undefined) throw new HttpError(400, `the ${bus.driver} bus cannot be tailed`);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
    res.write(`event: tailing\ndata: ${JSON.stringify({ topics })}\n\n`);
    const t = await bus.tail(topics, (e: TailedEvent) =>
      res.write(`event: event\ndata: ${JSON.stringify({ topic: e.topic, event: e.event as CloudEvent })}\n\n`),
    );
    tails.add(t);
    streams.add(res);
    const beat = setInterval(() => res.write(": keep-alive\n\n"), HEARTBEAT_MS);
    req.on("close", () => {
      clearInterval(beat);
      streams.delete(res);
      tails.delete(t);
      void t.close();
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    const json = (status: number, v: unknown): void => sendJson(res, status, v, { "cache-control": "no-store" });
    const asset = ASSETS[path];
    if (asset !== undefined && req.method === "GET") {
      const file = new URL(`../ui/${asset}`, import.meta.url);
      const type = TYPES[asset.slice(asset.lastIndexOf(".") + 1)]!;
      sendBody(res, 200, await readFile(file), { "content-type": type, "cache-control": "no-store" });
      return;
    }
    if (o.journal.serve(req, res)) return;
    const route = `${req.method} ${path}`;
    if (route === "GET /api/graph") return json(200, { ...graph, listening: o.listeners() });
    if (route === "GET /api/stats") return json(200, o.stats.snapshot());
    if (route === "GET /api/stream") return stream(req, res);
    if (route === "GET /api/tail") return tail(req, res, url.searchParams);
    if (route === "POST /api/redrive") return json(200, await doRedrive(req));
    if (route === "POST /api/send") return json(200, await doSend(req));
    if (req.method === "GET" && path.startsWith("/api/nodes/"))
      return json(200, await nodeInfo(decodeURIComponent(path.slice("/api/nodes/".length))));
    json(404, { error: `no ${route}` });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) log.warn({ err, url: req.url }, "page request failed");
      if (res.headersSent) res.end();
      else sendJson(res, status, { error: (err as Error).message });
    });
  });
  const listen = (port: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, o.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  try {
    await listen(o.port);
  } catch (err) {
    if (o.fallback !== true || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    log.info({ port: o.port }, "the page's default port is taken: using a free one");
    await listen(0);
  }
  const port = (server.address() as AddressInfo).port;
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;
  return {
    port,
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}/`,
    close: async () => {
      await Promise.all([...tails].map((t) => t.close()));
      tails.clear();
      for (const s of streams) s.end();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await sinks?.close();
    },
  };
}
