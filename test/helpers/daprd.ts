import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MissingBinaryError, requireExecutable, ServerProcess, type ServerProcessOptions } from "./server.js";

/**
 * A Dapr resource (Component, Subscription, Resiliency, ...) as YAML text, or as an object that is
 * written as JSON (valid YAML, so daprd's loader reads it the same way).
 */
export type DaprResource = string | Readonly<Record<string, unknown>>;

/**
 * Which daprd endpoint must answer 204 before start()/restart() resolve.
 * - "healthz" (`GET /v1.0/healthz`): fully initialised. With an app port, daprd first waits (forever)
 *   until the app port accepts TCP, calls `GET /dapr/subscribe` and starts those subscriptions, and
 *   only then reports ready; so the app must already listen.
 * - "outbound" (`GET /v1.0/healthz/outbound`): components are loaded and the publish API works;
 *   the app may not be reachable yet and subscriptions may not be running.
 */
export type DaprdReadiness = "healthz" | "outbound";

export interface DaprdOptions {
  /** `--app-id`; also the default consumer group / consumer id of the pub/sub components. */
  appId: string;
  /** `--app-port`: where the app listens on 127.0.0.1. Omit for a publish-only sidecar. */
  appPort?: number;
  /** `--app-protocol` (default "http"). */
  appProtocol?: "http" | "https" | "grpc" | "grpcs" | "h2c";
  /** Resources written into `<temp dir>/resources` (one file each), passed as `--resources-path`. */
  resources?: readonly DaprResource[];
  /** Existing resource dirs, passed as further `--resources-path` flags (read, never written). */
  resourcesPath?: string | readonly string[];
  /** `--log-level` (default "info"; "debug" shows every delivery and subscription decision). */
  logLevel?: "debug" | "info" | "warn" | "error" | "fatal";
  /** Default "healthz"; see {@link DaprdReadiness}. */
  readiness?: DaprdReadiness;
  /** `--dapr-graceful-shutdown-seconds` (default 1: tests stop sidecars often; daprd's own is 5). */
  gracefulShutdownSeconds?: number;
  /** Extra command-line arguments, appended last. */
  args?: readonly string[];
  /** Extra environment variables (e.g. `APP_API_TOKEN`). */
  env?: Readonly<Record<string, string>>;
  /** From spawn to ready (default 60 s: component init plus the app handshake on 2 busy cores). */
  startTimeoutMs?: number;
}

/** Headers and query for {@link Daprd.publish}. */
export interface DaprdPublishOptions {
  /** Request Content-Type; default "application/cloudevents+json" for objects, none otherwise. */
  contentType?: string;
  /** Sent as `?metadata.<key>=<value>` (e.g. `rawPayload`, `ttlInSeconds`, `cloudevent.id`). */
  metadata?: Readonly<Record<string, string>>;
  /** Further request headers (e.g. `traceparent`). */
  headers?: Readonly<Record<string, string>>;
}

let located: { path: string; version: string } | undefined;

/** `$DAPR_BIN`, else `daprd` from `<cacheDir>/bin` or PATH (scripts/test-setup.sh builds it). */
function locateDaprd(): { path: string; version: string } {
  if (located) return located;
  const path = process.env["DAPR_BIN"] || requireExecutable("daprd");
  let out: string;
  try {
    out = execFileSync(path, ["--version"], { encoding: "utf8", timeout: 30_000 });
  } catch (err) {
    throw new MissingBinaryError("daprd", `${path} --version failed`, { cause: err });
  }
  located = { path, version: out.trim() };
  return located;
}

/** Ports, in the order picked: HTTP API, gRPC API, internal (sidecar-to-sidecar) gRPC. */
const PORTS = { http: 0, grpc: 1, internalGrpc: 2 } as const;

/**
 * A standalone daprd sidecar on 127.0.0.1: Dapr HTTP and gRPC APIs and the internal gRPC server on
 * free ports, metrics off, no placement or scheduler (no actors, workflows or jobs), name
 * resolution left at the standalone default (mdns; only service invocation would use it).
 * Resources go into its temp dir. restart() keeps ports and resources, so the app's
 * `GET /dapr/subscribe` is called again.
 */
export class Daprd extends ServerProcess {
  /** `daprd --version` output, e.g. "1.18.2". */
  readonly version: string;
  readonly appId: string;

  private constructor(version: string, appId: string, options: ServerProcessOptions) {
    super(options);
    this.version = version;
    this.appId = appId;
  }

  static async start(options: DaprdOptions): Promise<Daprd> {
    const { path, version } = locateDaprd();
    const readiness = options.readiness ?? "healthz";
    const extraPaths =
      options.resourcesPath === undefined
        ? []
        : typeof options.resourcesPath === "string"
          ? [options.resourcesPath]
          : options.resourcesPath;
    const daprd = new Daprd(version, options.appId, {
      name: "daprd",
      portCount: 3,
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      stopGraceMs: 15_000,
      tailLines: 300,
      configure: async ({ ports, dir }) => {
        const httpPort = ports[PORTS.http]!;
        const resourcesDir = join(dir, "resources");
        await mkdir(resourcesDir, { recursive: true });
        const resources = options.resources ?? [];
        await Promise.all(
          resources.map((resource, i) =>
            writeFile(
              join(resourcesDir, `${String(i).padStart(2, "0")}.yaml`),
              typeof resource === "string" ? resource : `${JSON.stringify(resource, null, 2)}\n`,
            ),
          ),
        );
        const args = [
          "--app-id",
          options.appId,
          ...(options.appPort === undefined
            ? []
            : ["--app-port", String(options.appPort), "--app-channel-address", "127.0.0.1"]),
          "--app-protocol",
          options.appProtocol ?? "http",
          "--dapr-listen-addresses",
          "127.0.0.1",
          "--dapr-http-port",
          String(httpPort),
          "--dapr-grpc-port",
          String(ports[PORTS.grpc]),
          "--dapr-internal-grpc-port",
          String(ports[PORTS.internalGrpc]),
          "--dapr-internal-grpc-listen-address",
          "127.0.0.1",
          "--enable-metrics=false",
          "--resources-path",
          resourcesDir,
          ...extraPaths.flatMap((p) => ["--resources-path", p]),
          "--log-level",
          options.logLevel ?? "info",
          "--dapr-graceful-shutdown-seconds",
          String(options.gracefulShutdownSeconds ?? 1),
          ...(options.args ?? []),
        ];
        const env: NodeJS.ProcessEnv = { ...process.env, DAPR_HOST_IP: "127.0.0.1", ...options.env };
        const endpoint = readiness === "healthz" ? "/v1.0/healthz" : "/v1.0/healthz/outbound";
        return {
          command: path,
          args,
          env,
          probe: async (signal) => {
            const res = await fetch(`http://127.0.0.1:${httpPort}${endpoint}`, {
              signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]),
            });
            await res.arrayBuffer();
            return res.status === 204;
          },
        };
      },
    });
    await daprd.boot();
    return daprd;
  }

  /** `http://127.0.0.1:<port>`: the Dapr HTTP API (`/v1.0/...`). */
  get httpUrl(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get httpPort(): number {
    return this.ports[PORTS.http]!;
  }

  /** The Dapr gRPC API port (`DAPR_GRPC_PORT` for an SDK client). */
  get grpcPort(): number {
    return this.ports[PORTS.grpc]!;
  }

  /** Resource files written by start(): `<temp dir>/resources`. */
  get resourcesDir(): string {
    return join(this.dir, "resources");
  }

  /**
   * `POST /v1.0/publish/<pubsub>/<topic>`. An object body is sent as JSON with content type
   * `application/cloudevents+json` unless `contentType` says otherwise; daprd answers 204 on success.
   */
  async publish(
    pubsub: string,
    topic: string,
    body: string | Uint8Array | Readonly<Record<string, unknown>>,
    options: DaprdPublishOptions = {},
  ): Promise<Response> {
    const isObject = typeof body === "object" && !(body instanceof Uint8Array);
    const contentType = options.contentType ?? (isObject ? "application/cloudevents+json" : undefined);
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(options.metadata ?? {})) query.set(`metadata.${key}`, value);
    const qs = query.size > 0 ? `?${query.toString()}` : "";
    const url = `${this.httpUrl}/v1.0/publish/${encodeURIComponent(pubsub)}/${topic}${qs}`;
    return fetch(url, {
      method: "POST",
      headers: { ...(contentType ? { "content-type": contentType } : {}), ...options.headers },
      body: isObject ? JSON.stringify(body) : body,
      signal: AbortSignal.timeout(15_000),
    });
  }

  /** `GET /v1.0/metadata`: loaded components, registered subscriptions, ... */
  async metadata(): Promise<Record<string, unknown>> {
    const res = await fetch(`${this.httpUrl}/v1.0/metadata`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`GET /v1.0/metadata: HTTP ${res.status}: ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  }
}

/** A `dapr.io/v1alpha1` Component for a pub/sub type ("pubsub.jetstream", "pubsub.redis", ...). */
export function pubsubComponent(
  name: string,
  type: `pubsub.${string}`,
  metadata: Readonly<Record<string, string | number | boolean>>,
): DaprResource {
  return {
    apiVersion: "dapr.io/v1alpha1",
    kind: "Component",
    metadata: { name },
    spec: {
      type,
      version: "v1",
      metadata: Object.entries(metadata).map(([key, value]) => ({ name: key, value: String(value) })),
    },
  };
}
