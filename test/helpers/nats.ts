import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { nkeys } from "nats";
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
  /**
   * A configuration file's text (written to the temp dir, passed with `-c`): e.g.
   * `authorization { token: "..." }`, nkey users, or {@link NatsOperator.config}. Host, port and
   * JetStream come from the command line and win over the file.
   */
  config?: string;
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
        const configFile = join(dir, "nats.conf");
        if (options.config !== undefined) writeFileSync(configFile, options.config);
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
            ...(options.config !== undefined ? ["-c", configFile] : []),
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

// ---- decentralized auth (operator mode): JWTs and creds files made here, without nsc -----------

type NKeyPair = ReturnType<typeof nkeys.createUser>;

const enc = new TextEncoder();

function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

/** A NATS JWT (v2 claims): `header.payload.signature`, ed25519 by the issuer's nkey. */
export function natsJwt(issuer: NKeyPair, subject: string, name: string, nats: Record<string, unknown>): string {
  const claims = {
    jti: randomBytes(20).toString("hex").toUpperCase(),
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats: { ...nats, version: 2 },
  };
  const signed = `${b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }))}.${b64url(JSON.stringify(claims))}`;
  return `${signed}.${b64url(issuer.sign(enc.encode(signed)))}`;
}

/** The text of a `.creds` file: the user's JWT and nkey seed, as `nsc` writes it. */
export function natsCreds(jwt: string, seed: Uint8Array): string {
  return `-----BEGIN NATS USER JWT-----
${jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
${new TextDecoder().decode(seed)}
------END USER NKEY SEED------
`;
}

const UNLIMITED_ACCOUNT = {
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  conn: -1,
  leaf: -1,
  // JetStream for the account: without these an operator-mode account has none.
  mem_storage: -1,
  disk_storage: -1,
  streams: -1,
  consumer: -1,
};

/**
 * An operator with one account (JetStream enabled, no limits) for a nats-server in operator mode
 * (`config`, a MEMORY resolver preloaded with the account), and creds files for its users.
 */
export class NatsOperator {
  readonly operator = nkeys.createOperator();
  readonly account = nkeys.createAccount();
  /** JetStream in operator mode needs a system account. */
  readonly systemAccount = nkeys.createAccount();
  readonly config: string;

  constructor() {
    const operatorJwt = natsJwt(this.operator, this.operator.getPublicKey(), "ofevents-test-operator", {
      type: "operator",
    });
    const accountJwt = natsJwt(this.operator, this.account.getPublicKey(), "ofevents-test", {
      type: "account",
      limits: UNLIMITED_ACCOUNT,
      default_permissions: { pub: {}, sub: {} },
    });
    const systemJwt = natsJwt(this.operator, this.systemAccount.getPublicKey(), "SYS", { type: "account" });
    this.config = `operator: ${operatorJwt}
system_account: ${this.systemAccount.getPublicKey()}
resolver: MEMORY
resolver_preload: {
  ${this.account.getPublicKey()}: ${accountJwt}
  ${this.systemAccount.getPublicKey()}: ${systemJwt}
}
`;
  }

  /** A creds file for a new user of the account (or, with `signer`, one signed by another account: refused). */
  userCreds(name = "ofevents", signer: NKeyPair = this.account): string {
    const user = nkeys.createUser();
    const jwt = natsJwt(signer, user.getPublicKey(), name, {
      type: "user",
      pub: {},
      sub: {},
      subs: -1,
      data: -1,
      payload: -1,
    });
    return natsCreds(jwt, user.getSeed());
  }
}
