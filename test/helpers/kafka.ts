import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  cacheDir,
  MissingBinaryError,
  type Parsed,
  ProbeSocket,
  requireExecutable,
  ServerProcess,
  ServerProcessError,
  type ServerProcessOptions,
} from "./server.js";

const execFileAsync = promisify(execFile);

export interface KafkaBrokerOptions {
  /** JVM max heap (default "512m"). */
  heap?: string;
  /** Extra JVM arguments, appended after the defaults. */
  jvmArgs?: readonly string[];
  /** server.properties entries added to, or overriding, the defaults. */
  properties?: Readonly<Record<string, string | number | boolean>>;
  /** From spawn to ready (default 90 s: a cold JVM on 2 busy cores). */
  startTimeoutMs?: number;
  /**
   * Adds a SASL_PLAINTEXT listener ({@link KafkaBroker.saslBrokers}) accepting these users (name →
   * password) with PLAIN and SCRAM-SHA-256 (SCRAM credentials are stored at format time). Names and
   * passwords: letters, digits, "_" and "-".
   */
  saslUsers?: Readonly<Record<string, string>>;
  /**
   * Adds an SSL listener ({@link KafkaBroker.tlsBrokers}) with a PEM key store: a server certificate
   * for 127.0.0.1 signed by a throwaway CA made with openssl in the temp dir ({@link KafkaBroker.caPem}).
   */
  tls?: boolean;
}

/** The Kafka jars scripts/test-setup.sh fetched: `<cacheDir>/kafka/libs`. */
export function kafkaLibsDir(): string {
  return join(cacheDir(), "kafka", "libs");
}

function locateKafka(): { java: string; libs: string } {
  const libs = kafkaLibsDir();
  if (!existsSync(join(libs, ".complete"))) {
    throw new MissingBinaryError("Kafka broker jars", `no complete jar set in ${libs}`);
  }
  const javaHome = process.env["JAVA_HOME"];
  const fromHome = javaHome ? join(javaHome, "bin", "java") : undefined;
  const java = fromHome && existsSync(fromHome) ? fromHome : requireExecutable("java");
  return { java, libs };
}

/** A cluster id as `kafka-storage random-uuid` makes them: 16 random bytes, base64url, no leading "-". */
function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString("base64url");
    if (!id.startsWith("-")) return id;
  }
}

// Quiet by default; the lifecycle lines of the KRaft server stay at INFO (the ready line is one).
const LOG4J_PROPERTIES = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
log4j.logger.kafka.server.SharedServer=INFO
`;

const SAFE_CREDENTIAL = /^[A-Za-z0-9_-]+$/;

/** PEM files of a throwaway CA and a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost). */
export interface TestCertificates {
  caCert: string;
  caKey: string;
  serverCert: string;
  /** Unencrypted PKCS#8 key. */
  serverKey: string;
}

/** Makes (once per dir) a CA and a server certificate with openssl, valid for two days. */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  const files: TestCertificates = {
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
  };
  if (existsSync(files.serverCert)) return files;
  const openssl = requireExecutable("openssl");
  const run = (args: string[]) => execFileAsync(openssl, args, { cwd: dir, timeout: 60_000 });
  const csr = join(dir, "server.csr");
  const ext = join(dir, "server.ext");
  await writeFile(
    ext,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  try {
    await run(
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files.caKey, "-out", files.caCert, "-days", "2"]
        .concat(["-subj", "/CN=ofevents-test-ca", "-addext", "basicConstraints=critical,CA:TRUE"])
        .concat(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    await run([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      files.serverKey,
      "-out",
      csr,
      "-subj",
      "/CN=127.0.0.1",
    ]);
    await run(
      ["x509", "-req", "-in", csr, "-CA", files.caCert, "-CAkey", files.caKey, "-CAcreateserial"].concat([
        "-out",
        files.serverCert,
        "-days",
        "2",
        "-extfile",
        ext,
      ]),
    );
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ServerProcessError(`openssl: making test certificates failed: ${e.message}`, "openssl", e.stderr ?? "", {
      cause: err,
    });
  }
  return files;
}

/**
 * A single-node Kafka (KRaft, combined broker and controller, no ZooKeeper) on 127.0.0.1, from
 * the jars in {@link kafkaLibsDir}. Starting takes seconds: share one broker per test file and
 * give each test its own topics (randomSuffix()). restart() keeps the data dir and ports.
 */
export class KafkaBroker extends ServerProcess {
  readonly clusterId: string;
  readonly #saslIndex: number | undefined;
  readonly #tlsIndex: number | undefined;
  #caPem: string | undefined;

  private constructor(clusterId: string, listeners: { sasl: boolean; tls: boolean }, options: ServerProcessOptions) {
    super(options);
    this.clusterId = clusterId;
    // Ports: client, controller, then the SASL and SSL listeners that were asked for.
    this.#saslIndex = listeners.sasl ? 2 : undefined;
    this.#tlsIndex = listeners.tls ? (listeners.sasl ? 3 : 2) : undefined;
  }

  /**
   * Formats the storage, starts the broker and resolves once it logs "Kafka Server started" and
   * answers a Metadata request listing itself (what a client's connect + listTopics does).
   */
  static async start(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
    const { java, libs } = locateKafka();
    const clusterId = newClusterId();
    const classpath = join(libs, "*");
    const users = Object.entries(options.saslUsers ?? {});
    for (const [name, password] of users) {
      if (!SAFE_CREDENTIAL.test(name) || !SAFE_CREDENTIAL.test(password))
        throw new Error(`KafkaBroker: SASL user ${JSON.stringify(name)}: use letters, digits, "_" and "-" only`);
    }
    const sasl = options.saslUsers !== undefined;
    const tls = options.tls === true;
    let certs: TestCertificates | undefined;
    const broker = new KafkaBroker(
      clusterId,
      { sasl, tls },
      {
        name: "kafka",
        portCount: 2 + (sasl ? 1 : 0) + (tls ? 1 : 0),
        startTimeoutMs: options.startTimeoutMs ?? 90_000,
        stopGraceMs: 20_000,
        configure: async ({ ports, dir }) => {
          const port = ports[0]!;
          const controllerPort = ports[1]!;
          const log4j = join(dir, "log4j.properties");
          const serverProperties = join(dir, "server.properties");
          // Extra listeners: SASL_PLAINTEXT and SSL, each named after its protocol.
          const extra: { name: string; port: number }[] = [];
          const secured: Record<string, string> = {};
          if (sasl) {
            extra.push({ name: "SASL_PLAINTEXT", port: ports[2]! });
            const plainUsers = users.map(([name, password]) => ` user_${name}="${password}"`).join("");
            secured["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = "PLAIN,SCRAM-SHA-256";
            secured["listener.name.sasl_plaintext.plain.sasl.jaas.config"] =
              `org.apache.kafka.common.security.plain.PlainLoginModule required${plainUsers};`;
            secured["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"] =
              "org.apache.kafka.common.security.scram.ScramLoginModule required;";
          }
          if (tls) {
            extra.push({ name: "SSL", port: ports[sasl ? 3 : 2]! });
            certs = await makeTestCertificates(dir);
            const keyStore = join(dir, "server-keystore.pem");
            await writeFile(
              keyStore,
              `${await readFile(certs.serverKey, "utf8")}${await readFile(certs.serverCert, "utf8")}`,
            );
            secured["listener.name.ssl.ssl.keystore.type"] = "PEM";
            secured["listener.name.ssl.ssl.keystore.location"] = keyStore;
            secured["listener.name.ssl.ssl.client.auth"] = "none";
          }
          const listeners = [
            `PLAINTEXT://127.0.0.1:${port}`,
            `CONTROLLER://127.0.0.1:${controllerPort}`,
            ...extra.map((l) => `${l.name}://127.0.0.1:${l.port}`),
          ];
          const properties: Record<string, string | number | boolean> = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": `1@127.0.0.1:${controllerPort}`,
            listeners: listeners.join(","),
            "advertised.listeners": listeners.filter((l) => !l.startsWith("CONTROLLER:")).join(","),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
              .concat(extra.map((l) => `${l.name}:${l.name}`))
              .join(","),
            ...secured,
            "log.dirs": join(dir, "data"),
            "num.partitions": 1,
            "auto.create.topics.enable": true,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            ...options.properties,
          };
          await writeFile(log4j, LOG4J_PROPERTIES);
          await writeFile(
            serverProperties,
            Object.entries(properties)
              .map(([k, v]) => `${k}=${String(v)}\n`)
              .join(""),
          );
          const log4jArg = `-Dlog4j.configuration=file:${log4j}`;
          try {
            await execFileAsync(
              java,
              [
                log4jArg,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                clusterId,
                "-c",
                serverProperties,
                "--ignore-formatted",
                ...users.flatMap(([name, password]) => [
                  "--add-scram",
                  `SCRAM-SHA-256=[name=${name},password=${password}]`,
                ]),
              ],
              { timeout: 60_000 },
            );
          } catch (err) {
            const e = err as { stdout?: string; stderr?: string; message: string };
            throw new ServerProcessError(
              `kafka: formatting the storage failed: ${e.message}`,
              "kafka-storage",
              `${e.stdout ?? ""}${e.stderr ?? ""}`.split("\n").slice(-200).join("\n"),
              { cause: err },
            );
          }
          return {
            command: java,
            args: [
              "-Xms128m",
              `-Xmx${options.heap ?? "512m"}`,
              "-XX:+UseG1GC",
              "-XX:MaxGCPauseMillis=20",
              "-XX:+ExitOnOutOfMemoryError",
              // C1 only: a much shorter JVM warm-up on 2 cores; pass jvmArgs to change for perf runs.
              "-XX:TieredStopAtLevel=1",
              "-Djava.awt.headless=true",
              log4jArg,
              ...(options.jvmArgs ?? []),
              "-cp",
              classpath,
              "kafka.Kafka",
              serverProperties,
            ],
            readyLine: /Kafka Server started/,
            probe: async (signal) => {
              const md = await kafkaMetadata(port, signal);
              return md.controllerId >= 0 && md.brokers.some((b) => b.port === port);
            },
          };
        },
      },
    );
    await broker.boot();
    if (certs !== undefined) broker.#caPem = await readFile(certs.caCert, "utf8");
    return broker;
  }

  /** `["127.0.0.1:<port>"]`, for `new Kafka({ brokers })`. */
  get brokers(): string[] {
    return [`127.0.0.1:${this.port}`];
  }

  /** The SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256); needs `saslUsers`. */
  get saslBrokers(): string[] {
    if (this.#saslIndex === undefined) throw new Error("KafkaBroker: started without saslUsers");
    return [`127.0.0.1:${this.ports[this.#saslIndex]!}`];
  }

  /** The SSL listener; needs `tls: true`. */
  get tlsBrokers(): string[] {
    if (this.#tlsIndex === undefined) throw new Error("KafkaBroker: started without tls");
    return [`127.0.0.1:${this.ports[this.#tlsIndex]!}`];
  }

  /** PEM of the CA that signed the SSL listener's certificate; needs `tls: true`. */
  get caPem(): string {
    if (this.#caPem === undefined) throw new Error("KafkaBroker: started without tls");
    return this.#caPem;
  }

  get controllerPort(): number {
    return this.ports[1]!;
  }
}

// ---- a minimal Kafka wire client, for probes and client-library-free smoke tests ---------------

/** Kafka API keys used here. */
export const KafkaApi = { Metadata: 3, ApiVersions: 18 } as const;

let correlationId = 0;

/** Sends one request (header v1, non-flexible versions only) and returns the response body. */
export async function kafkaRequest(
  port: number,
  apiKey: number,
  apiVersion: number,
  body: Buffer,
  signal?: AbortSignal,
): Promise<Buffer> {
  const id = ++correlationId;
  const clientId = Buffer.from("ofevents-probe");
  const header = Buffer.alloc(10);
  header.writeInt16BE(apiKey, 0);
  header.writeInt16BE(apiVersion, 2);
  header.writeInt32BE(id, 4);
  header.writeInt16BE(clientId.length, 8);
  const payload = Buffer.concat([header, clientId, body]);
  const size = Buffer.alloc(4);
  size.writeInt32BE(payload.length);
  const socket = await ProbeSocket.connect(port, { timeoutMs: 2_000, ...(signal ? { signal } : {}) });
  try {
    socket.write(Buffer.concat([size, payload]));
    const frame = await socket.read(parseSizePrefixed, 5_000);
    const got = frame.readInt32BE(0);
    if (got !== id) throw new Error(`correlation id ${got}, expected ${id}`);
    return frame.subarray(4);
  } finally {
    socket.close();
  }
}

function parseSizePrefixed(buf: Buffer): Parsed<Buffer> | undefined {
  if (buf.length < 4) return undefined;
  const size = buf.readInt32BE(0);
  if (buf.length < 4 + size) return undefined;
  return { value: buf.subarray(4, 4 + size), size: 4 + size };
}

class Reader {
  #pos = 0;
  constructor(private readonly buf: Buffer) {}
  int8(): number {
    return this.buf.readInt8((this.#pos += 1) - 1);
  }
  int16(): number {
    return this.buf.readInt16BE((this.#pos += 2) - 2);
  }
  int32(): number {
    return this.buf.readInt32BE((this.#pos += 4) - 4);
  }
  string(): string | null {
    const len = this.int16();
    if (len < 0) return null;
    const s = this.buf.toString("utf8", this.#pos, this.#pos + len);
    this.#pos += len;
    return s;
  }
  array<T>(item: () => T): T[] {
    const n = this.int32();
    return Array.from({ length: Math.max(n, 0) }, item);
  }
}

/** ApiVersions v0: the API keys the broker supports, with their version ranges. */
export async function kafkaApiVersions(
  port: number,
  signal?: AbortSignal,
): Promise<{ errorCode: number; apis: { apiKey: number; min: number; max: number }[] }> {
  const r = new Reader(await kafkaRequest(port, KafkaApi.ApiVersions, 0, Buffer.alloc(0), signal));
  const errorCode = r.int16();
  const apis = r.array(() => ({ apiKey: r.int16(), min: r.int16(), max: r.int16() }));
  return { errorCode, apis };
}

export interface KafkaMetadata {
  brokers: { nodeId: number; host: string; port: number }[];
  clusterId: string | null;
  controllerId: number;
  topics: { errorCode: number; name: string; partitions: number }[];
}

/** Metadata v4 for all topics (v4 is served by Kafka 1.0 through 4.x). */
export async function kafkaMetadata(port: number, signal?: AbortSignal): Promise<KafkaMetadata> {
  const body = Buffer.alloc(5);
  body.writeInt32BE(-1, 0); // null topic array: all topics
  body.writeInt8(0, 4); // allow_auto_topic_creation = false
  const r = new Reader(await kafkaRequest(port, KafkaApi.Metadata, 4, body, signal));
  r.int32(); // throttle_time_ms
  const brokers = r.array(() => {
    const nodeId = r.int32();
    const host = r.string() ?? "";
    const brokerPort = r.int32();
    r.string(); // rack
    return { nodeId, host, port: brokerPort };
  });
  const clusterId = r.string();
  const controllerId = r.int32();
  const topics = r.array(() => {
    const errorCode = r.int16();
    const name = r.string() ?? "";
    r.int8(); // is_internal
    const partitions = r.array(() => {
      r.int16(); // error_code
      r.int32(); // partition_index
      r.int32(); // leader_id
      r.array(() => r.int32()); // replica_nodes
      r.array(() => r.int32()); // isr_nodes
    });
    return { errorCode, name, partitions: partitions.length };
  });
  return { brokers, clusterId, controllerId, topics };
}
