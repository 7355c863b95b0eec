import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTestCertificates } from "./kafka.js";
import { randomSuffix } from "./wait.js";
import { type Parsed, ProbeSocket, requireExecutable, ServerProcess, type ServerProcessOptions } from "./server.js";

export interface RabbitMqServerOptions {
  /** The default user created on first boot (default guest/guest). */
  user?: { name: string; password: string };
  /**
   * Adds an AMQPS listener ({@link RabbitMqServer.tlsUrl}) with a server certificate for 127.0.0.1
   * signed by a throwaway CA made with openssl in the temp dir ({@link RabbitMqServer.caPem}).
   */
  tls?: boolean;
  /** Extra lines for rabbitmq.conf (sysctl format). */
  config?: readonly string[];
  startTimeoutMs?: number;
}

/**
 * The start script Debian's rabbitmq-server ships: /usr/sbin/rabbitmq-server is a wrapper that
 * switches to the rabbitmq user and sends the output to /var/log; this one `exec`s erl, which
 * `exec`s beam.smp, so the pid spawned is the Erlang VM's (with `detached` set, see below).
 */
const RABBITMQ_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/** An epmd of our own on a free port, so parallel brokers (and a system epmd) never meet. */
class Epmd extends ServerProcess {
  private constructor(options: ServerProcessOptions) {
    super(options);
  }

  static async start(): Promise<Epmd> {
    const command = requireExecutable("epmd");
    // Without -daemon epmd stays in the foreground: the pid spawned is epmd's.
    const epmd = new Epmd({
      name: "epmd",
      startTimeoutMs: 10_000,
      configure: ({ ports }) => ({ command, args: ["-port", String(ports[0]!), "-address", "127.0.0.1"] }),
    });
    await epmd.boot();
    return epmd;
  }
}

/**
 * A RabbitMQ broker (Debian's rabbitmq-server) on 127.0.0.1: AMQP on a free port, its own node
 * name, mnesia and log dirs in its temp dir, its own epmd. `stop()` kills the Erlang VM by its
 * pid, then the epmd it started.
 */
export class RabbitMqServer extends ServerProcess {
  #epmd: Epmd | undefined;
  #user: { name: string; password: string } = { name: "guest", password: "guest" };
  #caPem: string | undefined;

  private constructor(options: ServerProcessOptions) {
    super(options);
  }

  /** Resolves once the broker answers the AMQP 0-9-1 protocol header with connection.start. */
  static async start(options: RabbitMqServerOptions = {}): Promise<RabbitMqServer> {
    requireExecutable("rabbitmq-server");
    const command = RABBITMQ_SCRIPT;
    const epmd = await Epmd.start();
    const user = options.user ?? { name: "guest", password: "guest" };
    const node = `ofevents-${randomSuffix()}@localhost`;
    const server = new RabbitMqServer({
      name: "rabbitmq",
      portCount: options.tls === true ? 3 : 2,
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      stopGraceMs: 20_000,
      configure: async ({ ports, dir }) => {
        const [amqp, dist, amqps] = ports as [number, number, number | undefined];
        const tls: string[] = [];
        if (amqps !== undefined) {
          const certs = await makeTestCertificates(dir);
          server.#caPem = await readFile(certs.caCert, "utf8");
          tls.push(
            `listeners.ssl.default = 127.0.0.1:${amqps}`,
            `ssl_options.cacertfile = ${certs.caCert}`,
            `ssl_options.certfile = ${certs.serverCert}`,
            `ssl_options.keyfile = ${certs.serverKey}`,
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
          );
        }
        await writeFile(
          join(dir, "rabbitmq.conf"),
          [
            `listeners.tcp.default = 127.0.0.1:${amqp}`,
            // The default user may connect from 127.0.0.1 only anyway; allow it to be renamed.
            "loopback_users = none",
            `default_user = ${user.name}`,
            `default_pass = ${user.password}`,
            "log.console = true",
            "log.console.level = info",
            "log.file = false",
            ...tls,
            ...(options.config ?? []),
            "",
          ].join("\n"),
        );
        await writeFile(join(dir, "enabled_plugins"), "[].\n");
        return {
          command,
          args: [],
          env: {
            ...process.env,
            HOME: dir, // the Erlang cookie goes here
            ERL_EPMD_PORT: String(epmd.port),
            ERL_EPMD_ADDRESS: "127.0.0.1",
            RABBITMQ_NODENAME: node,
            RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
            RABBITMQ_NODE_PORT: String(amqp),
            RABBITMQ_DIST_PORT: String(dist),
            RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
            RABBITMQ_LOG_BASE: join(dir, "log"),
            RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE: join(dir, "rabbitmq-env.conf"), // absent: /etc's is not read
            // Makes the script exec the VM instead of waiting on it in a shell that traps signals.
            detached: "true",
          },
          readyLine: /Server startup complete/,
          probe: (signal) => amqpAnswers(amqp, signal),
        };
      },
    });
    server.#epmd = epmd;
    server.#user = user;
    try {
      await server.boot();
    } catch (err) {
      await epmd.stop();
      throw err;
    }
    return server;
  }

  /** `amqp://user:password@127.0.0.1:<port>` (the default vhost). */
  get url(): string {
    return `amqp://${encodeURIComponent(this.#user.name)}:${encodeURIComponent(this.#user.password)}@127.0.0.1:${this.port}`;
  }

  /** `amqps://user:password@127.0.0.1:<port>`; needs `tls: true`. */
  get tlsUrl(): string {
    const port = this.ports[2];
    if (port === undefined) throw new Error("RabbitMqServer: started without tls");
    return `amqps://${encodeURIComponent(this.#user.name)}:${encodeURIComponent(this.#user.password)}@127.0.0.1:${port}`;
  }

  /** The PEM CA certificate that signed the AMQPS listener's certificate; needs `tls: true`. */
  get caPem(): string {
    if (this.#caPem === undefined) throw new Error("RabbitMqServer: started without tls");
    return this.#caPem;
  }

  /** The port of the epmd this broker registers with. */
  get epmdPort(): number {
    return this.#epmd!.port;
  }

  /** `amqp://127.0.0.1:<port>`, without credentials. */
  get bareUrl(): string {
    return `amqp://127.0.0.1:${this.port}`;
  }

  override async stop(): Promise<void> {
    try {
      await super.stop();
    } finally {
      await this.#epmd?.stop();
    }
  }
}

/** AMQP 0-9-1 protocol header (AMQP 0-9-1 §4.2.2). */
const PROTOCOL_HEADER = Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1]);

/** A {@link ProbeSocket} parser for a frame header: type, channel, size. */
function parseFrameHeader(buf: Buffer): Parsed<{ type: number; channel: number }> | undefined {
  if (buf.length < 7) return undefined;
  return { value: { type: buf[0]!, channel: buf.readUInt16BE(1) }, size: buf.length };
}

/** Resolves true when the broker answers the protocol header with a method frame (connection.start). */
export async function amqpAnswers(port: number, signal?: AbortSignal): Promise<boolean> {
  const socket = await ProbeSocket.connect(port, { timeoutMs: 1_000, ...(signal ? { signal } : {}) });
  try {
    socket.write(PROTOCOL_HEADER);
    const frame = await socket.read(parseFrameHeader, 2_000);
    return frame.type === 1 && frame.channel === 0;
  } finally {
    socket.close();
  }
}
