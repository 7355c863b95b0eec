import { execFileSync } from "node:child_process";
import { join } from "node:path";
import {
  MissingBinaryError,
  parseLine,
  ProbeSocket,
  requireExecutable,
  ServerProcess,
  type ServerProcessOptions,
} from "./server.js";

export interface NatsServerOptions {
  /** Enables JetStream (`-js`), storing in `<temp dir>/jetstream`. Default false, like nats-server. */
  jetstream?: boolean;
  /** Extra command-line arguments. */
  args?: readonly string[];
  startTimeoutMs?: number;
}

/**
 * The oldest nats-server the tests accept: nats.js 3.x needs 2.10 for `filter_subjects` and
 * stream/consumer `metadata`. Debian 12 ships 2.9.10; scripts/test-setup.sh builds a newer one.
 */
export const MIN_NATS_SERVER_VERSION = "2.10.0";

let located: { path: string; version: string } | undefined;

function locateNatsServer(): { path: string; version: string } {
  if (located) return located;
  const path = requireExecutable("nats-server");
  const out = execFileSync(path, ["--version"], { encoding: "utf8" });
  const version = /v?(\d+\.\d+\.\d+)/.exec(out)?.[1] ?? "0.0.0";
  if (compareVersions(version, MIN_NATS_SERVER_VERSION) < 0) {
    throw new MissingBinaryError(`nats-server >= ${MIN_NATS_SERVER_VERSION}`, `${path} is ${version}`);
  }
  located = { path, version };
  return located;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * A nats-server on 127.0.0.1 (client port, plus an HTTP monitoring port), optionally with
 * JetStream; data lives in its temp dir, so a restart() keeps streams and consumers.
 */
export class NatsServer extends ServerProcess {
  /** The server's version, e.g. "2.15.2". */
  readonly version: string;
  readonly jetstream: boolean;

  private constructor(version: string, jetstream: boolean, options: ServerProcessOptions) {
    super(options);
    this.version = version;
    this.jetstream = jetstream;
  }

  /** Resolves once the server sends its INFO line (with `"jetstream":true` when enabled). */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const { path, version } = locateNatsServer();
    const jetstream = options.jetstream ?? false;
    const server = new NatsServer(version, jetstream, {
      name: "nats-server",
      portCount: 2,
      startTimeoutMs: options.startTimeoutMs ?? 15_000,
      configure: ({ ports, dir }) => {
        const port = ports[0]!;
        return {
          command: path,
          args: [
            "-a",
            "127.0.0.1",
            "-p",
            String(port),
            "--http_port",
            String(ports[1]),
            ...(jetstream ? ["-js", "-sd", join(dir, "jetstream")] : []),
            ...(options.args ?? []),
          ],
          readyLine: /Server is ready/,
          probe: async (signal) => {
            const info = await readNatsInfo(port, signal);
            return !jetstream || info["jetstream"] === true;
          },
        };
      },
    });
    await server.boot();
    return server;
  }

  /** `nats://127.0.0.1:<port>` */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** `http://127.0.0.1:<port>`: /healthz, /varz, /jsz. */
  get monitorUrl(): string {
    return `http://127.0.0.1:${this.ports[1]}`;
  }

  /** The JetStream store dir (`-sd`), inside the temp dir. */
  get storeDir(): string {
    return join(this.dir, "jetstream");
  }
}

/** Connects and returns the server's INFO object. */
export async function readNatsInfo(port: number, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const socket = await ProbeSocket.connect(port, { timeoutMs: 1_000, ...(signal ? { signal } : {}) });
  try {
    const line = await socket.read(parseLine, 2_000);
    if (!line.startsWith("INFO ")) throw new Error(`expected INFO, got ${line.slice(0, 80)}`);
    return JSON.parse(line.slice(5)) as Record<string, unknown>;
  } finally {
    socket.close();
  }
}

/** One NATS protocol operation from the server; for MSG, the payload too. */
export type NatsOp =
  | { op: "MSG"; subject: string; sid: string; replyTo: string | undefined; payload: Buffer }
  | { op: "INFO" | "PING" | "PONG" | "+OK" | "-ERR"; line: string };

/** A {@link ProbeSocket} frame parser for the NATS client protocol (no headers: HMSG not parsed). */
export function parseNatsOp(buf: Buffer): { value: NatsOp; size: number } | undefined {
  const line = parseLine(buf);
  if (!line) return undefined;
  const [op, ...rest] = line.value.split(" ");
  if (op === "MSG") {
    // MSG <subject> <sid> [reply-to] <#bytes>
    const bytes = Number(rest[rest.length - 1]);
    const end = line.size + bytes + 2;
    if (buf.length < end) return undefined;
    return {
      value: {
        op: "MSG",
        subject: rest[0] ?? "",
        sid: rest[1] ?? "",
        replyTo: rest.length === 4 ? rest[2] : undefined,
        payload: buf.subarray(line.size, line.size + bytes),
      },
      size: end,
    };
  }
  if (op === "INFO" || op === "PING" || op === "PONG" || op === "+OK" || op === "-ERR") {
    return { value: { op, line: line.value }, size: line.size };
  }
  throw new Error(`unexpected NATS protocol line: ${line.value.slice(0, 120)}`);
}
