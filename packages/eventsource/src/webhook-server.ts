/**
 * Shared HTTP listeners for webhook sources: several events (of one or more EventSources) may
 * listen on one port with different endpoints. `GET /health` answers 200 on every port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { sendBody, sendJson, type Logger } from "@ofevents/core";

/** The most bytes of request line and headers a webhook port reads; more is answered 431. */
export const MAX_HEADER_SIZE = 16 * 1024;

export interface WebhookRoute {
  method: string;
  endpoint: string;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

export interface WebhookServers {
  /** Registers a route and starts the port's listener if needed; resolves with the bound port. */
  register(port: number, route: WebhookRoute): Promise<number>;
  unregister(port: number, route: WebhookRoute): Promise<void>;
  /**
   * Shutdown has begun: from now on every webhook request is answered 503 with `Retry-After`
   * (the caller retries elsewhere or later; nothing is taken that could not be finished), while
   * the listeners stay open until `close()`.
   */
  stopAccepting(): void;
  /** Closes every listener. */
  close(): Promise<void>;
}

/** `Retry-After` (seconds) of the 503 answered while shutting down. */
const SHUTDOWN_RETRY_AFTER_S = 5;

interface Listener {
  server: Server;
  routes: WebhookRoute[];
  port: number;
}

export function createWebhookServers(options: { host?: string | undefined; logger: Logger }): WebhookServers {
  const host = options.host ?? "127.0.0.1";
  const log = options.logger.child({ component: "webhook" });
  const listeners = new Map<number, Promise<Listener>>();
  let accepting = true;

  function dispatch(l: Listener, req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path === "/health" && req.method === "GET") {
      sendBody(res, 200, "ok", { "content-type": "text/plain" });
      return;
    }
    if (!accepting) {
      sendJson(
        res,
        503,
        { error: "shutting down: not accepting events; retry later" },
        { "retry-after": String(SHUTDOWN_RETRY_AFTER_S), connection: "close" },
      );
      req.resume();
      return;
    }
    const routes = l.routes.filter((r) => r.endpoint === path);
    if (routes.length === 0) {
      sendJson(res, 404, { error: `no webhook at ${path}` });
      req.resume();
      return;
    }
    const route = routes.find((r) => r.method === req.method);
    if (route === undefined) {
      const allow = routes.map((r) => r.method).join(", ");
      sendJson(res, 405, { error: `method ${req.method} not allowed; use ${allow}` }, { allow });
      req.resume();
      return;
    }
    route.handle(req, res).catch((err: unknown) => {
      log.error({ err, path }, "webhook handler failed");
      if (!res.headersSent) sendJson(res, 500, { error: "internal error" });
      else res.end();
    });
  }

  async function listen(port: number): Promise<Listener> {
    const server = createServer({ maxHeaderSize: MAX_HEADER_SIZE });
    const l: Listener = { server, routes: [], port };
    server.on("request", (req, res) => dispatch(l, req, res));
    server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return;
      // Headers above maxHeaderSize: 431 (RFC 6585 §5) with the reason, not a bare 400.
      if (err.code === "HPE_HEADER_OVERFLOW") {
        const body = JSON.stringify({ error: `request headers larger than ${MAX_HEADER_SIZE} bytes` });
        socket.end(
          `HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
        return;
      }
      socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    l.port = (server.address() as AddressInfo).port;
    return l;
  }

  return {
    async register(port, route) {
      let p = listeners.get(port);
      if (p === undefined) {
        p = listen(port);
        listeners.set(port, p);
        p.catch(() => listeners.delete(port));
      }
      const l = await p;
      // A listener opened on port 0 is also found by the port it got.
      if (!listeners.has(l.port)) listeners.set(l.port, p);
      if (l.routes.some((r) => r.endpoint === route.endpoint && r.method === route.method)) {
        throw new Error(`another webhook already serves ${route.method} ${route.endpoint} on port ${l.port}`);
      }
      l.routes.push(route);
      return l.port;
    },
    async unregister(port, route) {
      const p = listeners.get(port);
      if (p === undefined) return;
      const l = await p;
      l.routes = l.routes.filter((r) => r !== route);
      // While shutting down the listener stays (answering 503) until close().
      if (l.routes.length === 0 && accepting) {
        for (const [k, v] of listeners) if (v === p) listeners.delete(k);
        await closeServer(l.server);
      }
    },
    stopAccepting() {
      accepting = false;
    },
    async close() {
      const all = await Promise.allSettled([...listeners.values()]);
      listeners.clear();
      await Promise.all(all.map((r) => (r.status === "fulfilled" ? closeServer(r.value.server) : undefined)));
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
