// An OpenTelemetry Collector between the code under test and the test itself: spans go in over
// OTLP (HTTP or gRPC) and come out as OTLP/HTTP JSON to a receiver in the test process, so a test
// reads what a real collector accepted and forwarded, not what an SDK meant to send.
// scripts/test-setup.sh builds the collector (otlp receiver, otlp_http and debug exporters only).
import { execFileSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  MissingBinaryError,
  requireExecutable,
  ServerProcess,
  type ServerProcessOptions,
  tcpConnects,
} from "./server.js";

export interface OtelCollectorOptions {
  /**
   * Base URL (`http://127.0.0.1:<port>`) of an OTLP/HTTP server in the test process, e.g.
   * {@link OtlpJsonReceiver.url}: the collector posts traces to `<exportTo>/v1/traces` as JSON.
   */
  exportTo: string;
  /** The debug exporter's verbosity in the log tail (default "basic": one line per export). */
  debugVerbosity?: "basic" | "normal" | "detailed";
  /** From spawn to both receiver ports listening (default 30 s). */
  startTimeoutMs?: number;
}

let located: { path: string; version: string } | undefined;

/** `otelcol` from `<cacheDir>/bin` or PATH, and the version it reports. */
function locateOtelcol(): { path: string; version: string } {
  if (located) return located;
  const path = requireExecutable("otelcol");
  let out: string;
  try {
    out = execFileSync(path, ["--version"], { encoding: "utf8", timeout: 30_000 });
  } catch (err) {
    throw new MissingBinaryError("otelcol", `${path} --version failed`, { cause: err });
  }
  located = { path, version: /version (\S+)/.exec(out)?.[1] ?? out.trim() };
  return located;
}

/** Ports, in the order picked. */
const PORTS = { http: 0, grpc: 1 } as const;

/**
 * An OpenTelemetry Collector on 127.0.0.1 with one traces pipeline: the OTLP receiver (HTTP and
 * gRPC, each on a free port) to an otlp_http exporter (`encoding: json`, no compression) and the
 * debug exporter. Nothing is buffered: the exporter's sending queue and retries are off, so an OTLP
 * export to the collector returns only once the collector's own export to `exportTo` is done, and a
 * failing `exportTo` fails the sender's request instead of retrying behind its back (the collector
 * logs why). Its own metrics are off, so no fixed port (8888) is bound and collectors run side by
 * side.
 */
export class OtelCollector extends ServerProcess {
  /** What `otelcol --version` reports, e.g. "0.165.0". */
  readonly version: string;
  /** The base URL the exporter posts to. */
  readonly exportTo: string;

  private constructor(version: string, exportTo: string, options: ServerProcessOptions) {
    super(options);
    this.version = version;
    this.exportTo = exportTo;
  }

  /**
   * Resolves once the collector logged that it is ready and both receiver ports accept TCP;
   * rejects with its log tail if it exits first (a config it refuses) or is not ready in time.
   */
  static async start(options: OtelCollectorOptions): Promise<OtelCollector> {
    const { path, version } = locateOtelcol();
    const exportTo = options.exportTo.replace(/\/+$/, "");
    if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(exportTo)) {
      throw new Error(`OtelCollector: exportTo must be http://127.0.0.1:<port>, got ${options.exportTo}`);
    }
    const collector = new OtelCollector(version, exportTo, {
      name: "otelcol",
      portCount: 2,
      startTimeoutMs: options.startTimeoutMs ?? 30_000,
      stopGraceMs: 5_000,
      configure: async ({ ports, dir }) => {
        const configFile = join(dir, "otelcol.yaml");
        // JSON is YAML: no quoting rules to get wrong.
        await writeFile(configFile, `${JSON.stringify(collectorConfig(ports, exportTo, options), null, 2)}\n`);
        return {
          command: path,
          args: ["--config", configFile],
          readyLine: /Everything is ready/,
          probe: async (signal) =>
            (await tcpConnects(ports[PORTS.http]!, signal)) && (await tcpConnects(ports[PORTS.grpc]!, signal)),
        };
      },
    });
    await collector.boot();
    return collector;
  }

  /** `http://127.0.0.1:<port>`: OTLP/HTTP, what OTEL_EXPORTER_OTLP_ENDPOINT takes (+ `/v1/traces`). */
  get otlpHttpEndpoint(): string {
    return `http://127.0.0.1:${this.ports[PORTS.http]}`;
  }

  /** `http://127.0.0.1:<port>`: OTLP/gRPC (plaintext), for OTEL_EXPORTER_OTLP_PROTOCOL=grpc. */
  get otlpGrpcEndpoint(): string {
    return `http://127.0.0.1:${this.ports[PORTS.grpc]}`;
  }
}

function collectorConfig(
  ports: readonly number[],
  exportTo: string,
  options: OtelCollectorOptions,
): Record<string, unknown> {
  return {
    receivers: {
      otlp: {
        protocols: {
          http: { endpoint: `127.0.0.1:${ports[PORTS.http]}` },
          grpc: { endpoint: `127.0.0.1:${ports[PORTS.grpc]}` },
        },
      },
    },
    exporters: {
      otlp_http: {
        traces_endpoint: `${exportTo}/v1/traces`,
        encoding: "json",
        compression: "none",
        sending_queue: { enabled: false },
        retry_on_failure: { enabled: false },
        // Under the tests' 30 s timeout, so a hung receiver fails with the collector's error.
        timeout: "10s",
      },
      debug: { verbosity: options.debugVerbosity ?? "basic" },
    },
    service: {
      telemetry: {
        metrics: { level: "none" },
        logs: { encoding: "console" },
      },
      pipelines: {
        traces: { receivers: ["otlp"], exporters: ["otlp_http", "debug"] },
      },
    },
  };
}

// ---- a receiver for the collector's OTLP/HTTP JSON exports -------------------------------------

/** An OTLP AnyValue in its JSON form. */
export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  /** int64: a decimal string in OTLP/JSON (a number is accepted too). */
  intValue?: string | number;
  doubleValue?: number;
  bytesValue?: string;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
}

export interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano?: string;
  endTimeUnixNano?: string;
  attributes?: OtlpKeyValue[];
  status?: { code?: number; message?: string };
  [field: string]: unknown;
}

/** An ExportTraceServiceRequest in OTLP/JSON (ids are hex, as OTLP/JSON specifies). */
export interface ExportTraceServiceRequest {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { scope?: { name?: string; version?: string }; spans?: OtlpSpan[] }[];
  }[];
}

/** One span with its context, attributes as a plain object. */
export interface FlatSpan {
  name: string;
  traceId: string;
  spanId: string;
  /** Undefined for a root span (OTLP/JSON leaves the field out or empty). */
  parentSpanId: string | undefined;
  kind: number | undefined;
  attributes: Record<string, unknown>;
  /** The resource's attributes (`service.name`, ...). */
  resource: Record<string, unknown>;
  /** The instrumentation scope's name. */
  scope: string | undefined;
}

/** An OTLP/JSON AnyValue as a plain value; int64 becomes a number (exact up to 2^53). */
export function anyValue(value: OtlpAnyValue | undefined): unknown {
  if (value === undefined) return undefined;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.bytesValue !== undefined) return value.bytesValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(anyValue);
  if (value.kvlistValue !== undefined) return attributesObject(value.kvlistValue.values);
  return undefined;
}

export function attributesObject(attributes: readonly OtlpKeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of attributes ?? []) out[key] = anyValue(value);
  return out;
}

/** Every span of `requests`, in the order they arrived. */
export function flattenSpans(requests: readonly ExportTraceServiceRequest[]): FlatSpan[] {
  const out: FlatSpan[] = [];
  for (const request of requests) {
    for (const rs of request.resourceSpans ?? []) {
      const resource = attributesObject(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? []) {
        for (const span of ss.spans ?? []) {
          out.push({
            name: span.name,
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId || undefined,
            kind: span.kind,
            attributes: attributesObject(span.attributes),
            resource,
            scope: ss.scope?.name,
          });
        }
      }
    }
  }
  return out;
}

/**
 * A node:http server on 127.0.0.1 that takes OTLP/HTTP JSON trace exports (`POST /v1/traces`),
 * keeps each parsed request body and answers 200 `{}` (a full success). Anything else (another
 * path, protobuf, a body that is not JSON) is answered 4xx and recorded in `rejected`, so a test
 * can tell "nothing sent" from "sent in a form this receiver does not read".
 */
export class OtlpJsonReceiver implements AsyncDisposable {
  /** Parsed ExportTraceServiceRequest bodies, in arrival order. */
  readonly requests: ExportTraceServiceRequest[] = [];
  /** Requests it refused: "<METHOD> <path> <status>: <reason>". */
  readonly rejected: string[] = [];
  #server: Server | undefined;
  #url = "";

  private constructor() {}

  static async start(): Promise<OtlpJsonReceiver> {
    const receiver = new OtlpJsonReceiver();
    const server = createServer((req, res) => {
      void readBody(req).then(
        (body) => {
          const refuse = (status: number, reason: string): void => {
            receiver.rejected.push(`${req.method} ${req.url} ${status}: ${reason}`);
            res.writeHead(status, { "content-type": "text/plain" }).end(reason);
          };
          if (req.method !== "POST" || req.url !== "/v1/traces") return refuse(404, "only POST /v1/traces");
          const type = req.headers["content-type"] ?? "";
          if (!type.startsWith("application/json")) return refuse(415, `OTLP/JSON only, got ${type || "no type"}`);
          let parsed: unknown;
          try {
            const raw = req.headers["content-encoding"] === "gzip" ? gunzipSync(body) : body;
            parsed = JSON.parse(raw.toString("utf8"));
          } catch (err) {
            return refuse(400, `not JSON: ${(err as Error).message}`);
          }
          receiver.requests.push(parsed as ExportTraceServiceRequest);
          res.writeHead(200, { "content-type": "application/json" }).end("{}");
        },
        () => res.destroy(),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    receiver.#server = server;
    receiver.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return receiver;
  }

  /** `http://127.0.0.1:<port>` (no trailing slash): what {@link OtelCollectorOptions.exportTo} takes. */
  get url(): string {
    return this.#url;
  }

  /** Every span received so far, flat. */
  spans(): FlatSpan[] {
    return flattenSpans(this.requests);
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

export function startOtlpJsonReceiver(): Promise<OtlpJsonReceiver> {
  return OtlpJsonReceiver.start();
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
