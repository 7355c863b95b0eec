/** The controller's `/healthz`, `/readyz` and `/metrics`, and the `/metrics`-only server. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface HealthState {
  stopped: boolean;
  synced: boolean;
  leader: boolean;
}

export interface HealthServers {
  /** Listens on `at`; `metricsOnly` serves `/metrics` alone. Resolves to the port. */
  listen(at: { port: number; host?: string | undefined }, metricsOnly: boolean): Promise<number>;
  close(): Promise<void>;
}

export function healthServers(state: () => HealthState, metricsText: () => string): HealthServers {
  function handle(req: IncomingMessage, res: ServerResponse, metricsOnly: boolean): void {
    const path = (req.url ?? "/").split("?")[0];
    const { stopped, synced, leader } = state();
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
    } else if (path === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(metricsText());
    } else if (metricsOnly) {
      res.writeHead(404).end();
    } else if (path === "/healthz") {
      res.writeHead(stopped ? 503 : 200, { "content-type": "text/plain" }).end(stopped ? "stopping\n" : "ok\n");
    } else if (path === "/readyz") {
      // Ready once the informers listed their objects; the body says whether it reconciles.
      const ok = synced && !stopped;
      const body = !ok ? "informers not synced\n" : leader ? "ready: leader\n" : "ready: standby\n";
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(body);
    } else {
      res.writeHead(404).end();
    }
  }

  const servers: Server[] = [];
  return {
    async listen(at, metricsOnly) {
      const srv = createServer((req, res) => handle(req, res, metricsOnly));
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(at.port, at.host ?? "0.0.0.0", () => {
          srv.off("error", reject);
          resolve();
        });
      });
      servers.push(srv);
      return (srv.address() as AddressInfo).port;
    },
    async close() {
      await Promise.all(
        servers.map(
          (srv) =>
            new Promise<void>((resolve) => {
              srv.close(() => resolve());
              srv.closeAllConnections();
            }),
        ),
      );
    },
  };
}
