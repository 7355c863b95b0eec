import { request as httpsRequest, type RequestOptions } from "node:https";
import { request as httpRequest } from "node:http";
import { readFileSync } from "node:fs";
import { KubeConfig as KubeConfigClass, type KubeConfig } from "@kubernetes/client-node";

/**
 * The kubeconfig at `path`, else the default one (`$KUBECONFIG`, `~/.kube/config`, or the
 * in-cluster ServiceAccount).
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfigClass();
  if (path === undefined) kc.loadFromDefault();
  else kc.loadFromFile(path);
  return kc;
}

/** The namespace the controller runs in: `$POD_NAMESPACE`, the in-cluster one, else `default`. */
export function ownNamespace(): string {
  const env = process.env["POD_NAMESPACE"];
  if (env !== undefined && env !== "") return env;
  try {
    return readFileSync("/var/run/secrets/kubernetes.io/serviceaccount/namespace", "utf8").trim() || "default";
  } catch {
    return "default";
  }
}

/** A failed API request (`status` is the HTTP status). */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

export function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
}

/** Raw requests with the kubeconfig's credentials. */
export class KubeApi {
  constructor(private readonly kc: KubeConfig) {}

  async request(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<unknown> {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new KubeApiError(0, "kubeconfig has no current cluster");
    const url = new URL(path, cluster.server);
    const opts: RequestOptions = { method, headers: { accept: "application/json" } };
    await this.kc.applyToHTTPSOptions(opts);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers = opts.headers as Record<string, string>;
    if (text !== undefined) headers["content-type"] = contentType;
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    return await new Promise<unknown>((resolve, reject) => {
      const req = send(url, { ...opts, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const out = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          let json: unknown;
          try {
            json = out === "" ? undefined : JSON.parse(out);
          } catch {
            json = undefined;
          }
          if (status >= 200 && status < 300) resolve(json);
          else {
            const msg = (json as { message?: string } | undefined)?.message ?? out;
            reject(new KubeApiError(status, `${method} ${path}: ${status} ${msg}`));
          }
        });
      });
      req.on("timeout", () => req.destroy(new KubeApiError(0, `${method} ${path}: timed out`)));
      req.on("error", reject);
      if (text !== undefined) req.write(text);
      req.end();
    });
  }
}
