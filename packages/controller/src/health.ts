/** The controller's `/healthz`, `/readyz` and `/metrics`, and the `/metrics`-only server. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { sendBody } from "@ofevents/core";

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
      sendBody(res, 405, undefined, { allow: "GET, HEAD" });
    } else if (path === "/metrics") {
      sendBody(res, 200, metricsText(), { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
    } else if (metricsOnly) {
      sendBody(res, 404);
    } else if (path === "/healthz") {
      sendBody(res, stopped ? 503 : 200, stopped ? "stopping\n" : "ok\n", { "content-type": "text/plain" });
    } else if (path === "/readyz") {
      // Ready once the informers listed their objects; the body says whether it reconciles.
      const ok = synced && !stopped;
      const body = !ok ? "informers not synced\n" : leader ? "ready: leader\n" : "ready: standby\n";
      sendBody(res, ok ? 200 : 503, body, { "content-type": "text/plain" });
    } else {
      sendBody(res, 404);
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
