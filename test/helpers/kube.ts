// A real Kubernetes control plane for controller tests: etcd plus kube-apiserver on 127.0.0.1,
// started the way controller-runtime's envtest starts them (no kubelet, controller-manager or
// scheduler: no Pods run, no garbage collection, namespaces never finish terminating, no default
// ServiceAccounts). scripts/test-setup.sh builds both binaries (or links ones it finds).
// kube-controller-manager.ts and keda.ts start those two servers against a ControlPlane.
import { execFile, execFileSync } from "node:child_process";
import { generateKeyPair, randomBytes } from "node:crypto";
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { promisify } from "node:util";
import { MissingBinaryError, requireExecutable, ServerProcess } from "./server.js";

const run = promisify(execFile);
const generateKeyPairAsync = promisify(generateKeyPair);

/** How a kubeconfig authenticates: a client certificate, or a bearer token (ServiceAccounts). */
export type KubeCredentials =
  | { readonly user: string; readonly certPem: string; readonly keyPem: string }
  | { readonly user: string; readonly token: string };

export interface ControlPlaneOptions {
  /** Extra kube-apiserver flags, appended last (a later `--flag=` overrides an earlier one). */
  apiServerArgs?: readonly string[];
  /** Extra etcd flags, appended last. */
  etcdArgs?: readonly string[];
  /** kube-apiserver's spawn-to-/readyz time (default 120 s; 4-7 s measured on 2 busy cores). */
  startTimeoutMs?: number;
}

/** Options of {@link ControlPlane.request}. */
export interface KubeRequestOptions {
  /** A JSON body (sent as `application/json` unless `contentType` says otherwise). */
  body?: unknown;
  contentType?: string;
  /** Default `application/json`; e.g. `application/json;as=Table;g=meta.k8s.io;v=v1`. */
  accept?: string;
  /** Who sends it (default: the admin, in `system:masters`). */
  credentials?: KubeCredentials;
  timeoutMs?: number;
}

export interface KubeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** `text` parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

export interface Binary {
  path: string;
  version: string;
}

const located = new Map<string, Binary>();

/**
 * `$KUBEBUILDER_ASSETS/<name>` (setup-envtest's layout) when that variable is set, else `<name>`
 * from `<cacheDir>/bin` or PATH (scripts/test-setup.sh links its builds there). Throws
 * {@link MissingBinaryError} (naming the setup command) when it is missing or prints no version.
 */
export function locateKubeBinary(
  name: "etcd" | "kube-apiserver" | "kube-controller-manager",
  versionPattern: RegExp,
): Binary {
  const cached = located.get(name);
  if (cached) return cached;
  const assets = process.env["KUBEBUILDER_ASSETS"];
  const path = (assets && findExecutableIn(assets, name)) || requireExecutable(name);
  let out: string;
  try {
    out = execFileSync(path, ["--version"], { encoding: "utf8", timeout: 30_000 });
  } catch (err) {
    throw new MissingBinaryError(name, `${path} --version failed`, { cause: err });
  }
  const version = versionPattern.exec(out)?.[1];
  if (!version) throw new MissingBinaryError(name, `${path} --version printed no version: ${out.trim()}`);
  const found = { path, version };
  located.set(name, found);
  return found;
}

/** `dir/name` if it is an executable file. */
function findExecutableIn(dir: string, name: string): string | undefined {
  const candidate = join(dir, name);
  try {
    accessSync(candidate, fsConstants.X_OK);
    return statSync(candidate).isFile() ? candidate : undefined;
  } catch {
    return undefined;
  }
}

let etcdNoFsync: boolean | undefined;

/** `--unsafe-no-fsync` exists since etcd 3.5; ask the binary rather than trust the version. */
function etcdSupportsNoFsync(path: string): boolean {
  if (etcdNoFsync === undefined) {
    const help = execFileSync(path, ["--help"], { encoding: "utf8", timeout: 30_000, stdio: "pipe" });
    etcdNoFsync = help.includes("--unsafe-no-fsync");
  }
  return etcdNoFsync;
}

/** A user name or group must fit into an openssl `-subj` value as is. */
function checkSubjectPart(kind: string, value: string): void {
  if (!/^[A-Za-z0-9:._@-][A-Za-z0-9:._@ -]*$/.test(value)) {
    throw new Error(
      `client certificate ${kind} ${JSON.stringify(value)}: only letters, digits, spaces and :._@- are supported`,
    );
  }
}

/** The small PKI of one control plane: a CA, the serving cert, client certs; made with openssl. */
class Pki {
  private constructor(
    readonly dir: string,
    readonly openssl: string,
    readonly caPem: string,
  ) {}

  static async create(dir: string): Promise<Pki> {
    const openssl = requireExecutable("openssl");
    await writeFile(join(dir, "openssl.cnf"), OPENSSL_CNF);
    await writeKey(join(dir, "ca.key"));
    // prettier-ignore
    await opensslRun(openssl, dir, [
      "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ofevents-test-ca", "-days", "7",
      "-config", "openssl.cnf", "-extensions", "ca_ext", "-out", "ca.crt",
    ]);
    const caPem = (await run(openssl, ["x509", "-in", "ca.crt"], { cwd: dir })).stdout;
    return new Pki(dir, openssl, caPem);
  }

  /** Writes `<base>.key` and `<base>.crt` (signed by the CA) and returns their PEM text. */
  async issue(
    base: string,
    subject: string,
    extensions: "server_ext" | "client_ext",
  ): Promise<{ certPem: string; keyPem: string }> {
    const keyPem = await writeKey(join(this.dir, `${base}.key`));
    // prettier-ignore
    await opensslRun(this.openssl, this.dir, [
      "req", "-new", "-key", `${base}.key`, "-subj", subject, "-config", "openssl.cnf", "-out", `${base}.csr`,
    ]);
    // prettier-ignore
    await opensslRun(this.openssl, this.dir, [
      "x509", "-req", "-in", `${base}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key",
      "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", "7",
      "-extfile", "openssl.cnf", "-extensions", extensions, "-out", `${base}.crt`,
    ]);
    const certPem = (await run(this.openssl, ["x509", "-in", `${base}.crt`], { cwd: this.dir })).stdout;
    return { certPem, keyPem };
  }
}

const OPENSSL_CNF = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
`;

async function opensslRun(openssl: string, cwd: string, args: readonly string[]): Promise<void> {
  try {
    await run(openssl, args, { cwd, timeout: 30_000 });
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    throw new Error(`openssl ${args.join(" ")} failed: ${typeof stderr === "string" ? stderr.trim() : String(err)}`, {
      cause: err,
    });
  }
}

/** An EC P-256 key (PKCS#8 PEM), written with mode 0600; returns the PEM. */
async function writeKey(path: string): Promise<string> {
  const { privateKey } = await generateKeyPairAsync("ec", {
    namedCurve: "prime256v1",
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  await writeFile(path, privateKey, { mode: 0o600 });
  return privateKey;
}

/** A YAML double-quoted scalar (JSON string syntax is a subset of it). */
const q = (s: string): string => JSON.stringify(s);
const b64 = (s: string): string => Buffer.from(s).toString("base64");

/** Ports of the etcd process, in the order picked. */
const ETCD = { client: 0, peer: 1 } as const;

/**
 * etcd + kube-apiserver on free 127.0.0.1 ports, each in its own temp dir, stopped by pid.
 *
 * kube-apiserver serves TLS with a cert from a CA made per instance, trusts client certs from the
 * same CA (`--client-ca-file`), authorizes with RBAC, signs ServiceAccount tokens with a key made
 * here, and runs without the ServiceAccount admission plugin (as envtest). The admin credential is
 * a client cert `CN=admin, O=system:masters` (which RBAC never restricts); {@link userKubeconfig}
 * and {@link serviceAccountKubeconfig} give restricted identities for RBAC tests.
 */
export class ControlPlane implements AsyncDisposable {
  readonly etcd: ServerProcess;
  readonly apiServer: ServerProcess;
  /** e.g. { etcd: "3.6.16", kubeApiServer: "1.36.4" } */
  readonly versions: { readonly etcd: string; readonly kubeApiServer: string };
  readonly #pki: Pki;
  readonly #admin: KubeCredentials & { certPem: string };
  #userCerts = 0;
  #serverCerts = 0;

  private constructor(
    etcd: ServerProcess,
    apiServer: ServerProcess,
    versions: ControlPlane["versions"],
    pki: Pki,
    admin: KubeCredentials & { certPem: string },
  ) {
    this.etcd = etcd;
    this.apiServer = apiServer;
    this.versions = versions;
    this.#pki = pki;
    this.#admin = admin;
  }

  static async start(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const etcdBin = locateKubeBinary("etcd", /etcd Version: (\S+)/);
    const apiBin = locateKubeBinary("kube-apiserver", /Kubernetes v(\S+)/);
    const noFsync = etcdSupportsNoFsync(etcdBin.path);
    const etcd = await ServerProcess.launch({
      name: "etcd",
      portCount: 2,
      startTimeoutMs: 30_000,
      stopGraceMs: 10_000,
      configure: ({ ports, dir }) => {
        const client = `http://127.0.0.1:${ports[ETCD.client]}`;
        const peer = `http://127.0.0.1:${ports[ETCD.peer]}`;
        return {
          command: etcdBin.path,
          args: [
            "--name=default",
            `--data-dir=${join(dir, "data")}`,
            `--listen-client-urls=${client}`,
            `--advertise-client-urls=${client}`,
            `--listen-peer-urls=${peer}`,
            `--initial-advertise-peer-urls=${peer}`,
            `--initial-cluster=default=${peer}`,
            "--log-level=warn",
            ...(noFsync ? ["--unsafe-no-fsync"] : []),
            ...(options.etcdArgs ?? []),
          ],
          probe: async (signal) => {
            const res = await fetch(`${client}/health`, {
              signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]),
            });
            const body = (await res.json()) as { health?: unknown };
            return res.ok && body.health === "true";
          },
        };
      },
    });

    let pki: Pki | undefined;
    let admin: (KubeCredentials & { certPem: string; keyPem: string }) | undefined;
    try {
      const apiServer = await ServerProcess.launch({
        name: "kube-apiserver",
        startTimeoutMs: options.startTimeoutMs ?? 120_000,
        stopGraceMs: 15_000,
        tailLines: 300,
        configure: async ({ ports, dir }) => {
          const port = ports[0]!;
          if (!pki) {
            pki = await Pki.create(dir);
            await pki.issue("apiserver", "/CN=kube-apiserver", "server_ext");
            admin = { user: "admin", ...(await pki.issue("admin", "/O=system:masters/CN=admin", "client_ext")) };
            // The ServiceAccount token signing key pair (envtest: sa-signer.key/.crt).
            const sa = await generateKeyPairAsync("rsa", {
              modulusLength: 2048,
              privateKeyEncoding: { type: "pkcs8", format: "pem" },
              publicKeyEncoding: { type: "spki", format: "pem" },
            });
            await writeFile(join(dir, "sa-signer.key"), sa.privateKey, { mode: 0o600 });
            await writeFile(join(dir, "sa-signer.pub"), sa.publicKey);
          }
          const client = admin!;
          const ca = pki.caPem;
          return {
            command: apiBin.path,
            args: [
              `--etcd-servers=http://127.0.0.1:${etcd.ports[ETCD.client]}`,
              "--bind-address=127.0.0.1",
              `--secure-port=${port}`,
              `--cert-dir=${dir}`,
              `--tls-cert-file=${join(dir, "apiserver.crt")}`,
              `--tls-private-key-file=${join(dir, "apiserver.key")}`,
              `--client-ca-file=${join(dir, "ca.crt")}`,
              "--authorization-mode=RBAC",
              "--service-cluster-ip-range=10.0.0.0/24",
              "--allow-privileged=true",
              "--disable-admission-plugins=ServiceAccount",
              `--service-account-issuer=https://127.0.0.1:${port}/`,
              `--service-account-key-file=${join(dir, "sa-signer.pub")}`,
              `--service-account-signing-key-file=${join(dir, "sa-signer.key")}`,
              // Not envtest's: it leaves the advertise address to the host's default route, and
              // startup fails without one ("no default routes found"). A loopback address is
              // accepted, but the endpoint reconciler would then log every 10 s that it may not
              // put 127.0.0.1 into the `kubernetes` Endpoints, so it is switched off (as kwok does).
              "--advertise-address=127.0.0.1",
              "--endpoint-reconciler-type=none",
              ...(options.apiServerArgs ?? []),
            ],
            probe: async (signal) => {
              const res = await send(port, ca, "GET", "/readyz", { credentials: client, timeoutMs: 2_000 }, signal);
              return res.status === 200 && res.text === "ok";
            },
          };
        },
      });
      return new ControlPlane(etcd, apiServer, { etcd: etcdBin.version, kubeApiServer: apiBin.version }, pki!, admin!);
    } catch (err) {
      await etcd.stop();
      throw err;
    }
  }

  /** `https://127.0.0.1:<port>` */
  get url(): string {
    return `https://127.0.0.1:${this.apiServer.port}`;
  }

  /** `http://127.0.0.1:<port>`: etcd's client URL. */
  get etcdUrl(): string {
    return `http://127.0.0.1:${this.etcd.ports[ETCD.client]}`;
  }

  /** The CA (PEM) that signed the serving cert and every client cert. */
  get caPem(): string {
    return this.#pki.caPem;
  }

  /**
   * A serving certificate for another server of this cluster (kube-controller-manager, the KEDA
   * operator), signed by {@link caPem}, valid for 127.0.0.1 and localhost.
   */
  async serverCertificate(commonName: string): Promise<{ certPem: string; keyPem: string }> {
    checkSubjectPart("common name", commonName);
    return this.#pki.issue(`server-${++this.#serverCerts}`, `/CN=${commonName}`, "server_ext");
  }

  /**
   * The PEM file of the key kube-apiserver signs and verifies ServiceAccount tokens with (what
   * kube-controller-manager's `--service-account-private-key-file` takes); removed by stop().
   */
  get serviceAccountSigningKeyFile(): string {
    return join(this.apiServer.dir, "sa-signer.key");
  }

  /** The admin credential (client cert in `system:masters`). */
  get admin(): KubeCredentials {
    return this.#admin;
  }

  /**
   * A kubeconfig (YAML) for `credentials` (default: the admin), with the server URL and CA data;
   * loadable by `KubeConfig.loadFromString` or as `KUBECONFIG` for kubectl.
   */
  kubeconfig(credentials: KubeCredentials = this.#admin): string {
    const auth =
      "token" in credentials
        ? `    token: ${q(credentials.token)}\n`
        : `    client-certificate-data: ${b64(credentials.certPem)}\n    client-key-data: ${b64(credentials.keyPem)}\n`;
    return [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: ofevents-test",
      "  cluster:",
      `    server: ${q(this.url)}`,
      `    certificate-authority-data: ${b64(this.caPem)}`,
      "users:",
      `- name: ${q(credentials.user)}`,
      "  user:",
      auth.trimEnd(),
      "contexts:",
      "- name: ofevents-test",
      "  context:",
      "    cluster: ofevents-test",
      `    user: ${q(credentials.user)}`,
      "current-context: ofevents-test",
      "",
    ].join("\n");
  }

  /** Writes {@link kubeconfig} to `path` (mode 0600). */
  async writeKubeconfig(path: string, credentials?: KubeCredentials): Promise<void> {
    await writeFile(path, this.kubeconfig(credentials), { mode: 0o600 });
  }

  /**
   * A client cert for user `user` in `groups` (default none; the API server adds
   * `system:authenticated`). RBAC subjects of kind User match `user`, of kind Group the groups.
   */
  async userCredentials(user: string, groups: readonly string[] = []): Promise<KubeCredentials> {
    checkSubjectPart("user", user);
    for (const group of groups) checkSubjectPart("group", group);
    const subject = [...groups.map((g) => `/O=${g}`), `/CN=${user}`].join("");
    const issued = await this.#pki.issue(`user-${++this.#userCerts}`, subject, "client_ext");
    return { user, ...issued };
  }

  /** {@link kubeconfig} for {@link userCredentials}. */
  async userKubeconfig(user: string, groups: readonly string[] = []): Promise<string> {
    return this.kubeconfig(await this.userCredentials(user, groups));
  }

  /**
   * A token of ServiceAccount `namespace/name` from the TokenRequest API (the account is created
   * when missing; the namespace must exist). It authenticates as
   * `system:serviceaccount:<namespace>:<name>`, in the groups `system:serviceaccounts` and
   * `system:serviceaccounts:<namespace>`.
   */
  async serviceAccountCredentials(namespace: string, name: string, expirationSeconds = 3600): Promise<KubeCredentials> {
    const base = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts`;
    const created = await this.request("POST", base, {
      body: { apiVersion: "v1", kind: "ServiceAccount", metadata: { name } },
    });
    if (created.status !== 201 && created.status !== 409) {
      throw new Error(`creating ServiceAccount ${namespace}/${name}: HTTP ${created.status}: ${created.text}`);
    }
    const res = await this.request("POST", `${base}/${encodeURIComponent(name)}/token`, {
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds } },
    });
    const token = (res.json as { status?: { token?: unknown } } | undefined)?.status?.token;
    if (res.status !== 201 || typeof token !== "string") {
      throw new Error(`TokenRequest for ${namespace}/${name}: HTTP ${res.status}: ${res.text}`);
    }
    return { user: `system:serviceaccount:${namespace}:${name}`, token };
  }

  /** {@link kubeconfig} for {@link serviceAccountCredentials}. */
  async serviceAccountKubeconfig(namespace: string, name: string): Promise<string> {
    return this.kubeconfig(await this.serviceAccountCredentials(namespace, name));
  }

  /** A raw HTTPS request to the API server (as the admin unless `credentials` says otherwise). */
  request(method: string, path: string, options: KubeRequestOptions = {}): Promise<KubeResponse> {
    return send(this.apiServer.port, this.caPem, method, path, { credentials: this.#admin, ...options });
  }

  /** Stops kube-apiserver, then etcd (each SIGTERM, SIGKILL after a grace period) and removes their dirs. */
  async stop(): Promise<void> {
    try {
      await this.apiServer.stop();
    } finally {
      await this.etcd.stop();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

function send(
  port: number,
  caPem: string,
  method: string,
  path: string,
  options: KubeRequestOptions,
  signal?: AbortSignal,
): Promise<KubeResponse> {
  const { body, credentials, timeoutMs = 30_000 } = options;
  const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  const headers: Record<string, string> = { accept: options.accept ?? "application/json" };
  if (payload !== undefined) headers["content-type"] = options.contentType ?? "application/json";
  if (credentials && "token" in credentials) headers["authorization"] = `Bearer ${credentials.token}`;
  const tls = credentials && "certPem" in credentials ? { cert: credentials.certPem, key: credentials.keyPem } : {};
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        headers,
        ca: caPem,
        ...tls,
        timeout: timeoutMs,
        ...(signal ? { signal } : {}),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}
