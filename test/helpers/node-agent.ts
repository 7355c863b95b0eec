// A node agent standing in for kubelet in platform tests: it registers a Node in a test
// ControlPlane, binds pending Pods to it (no scheduler runs), runs each container's command as a
// local process, follows restartPolicy, writes Pod status with readiness from the probes, starts a
// real daprd for a Pod annotated `dapr.io/enabled` (what Dapr's injector and operator do), and
// serves an HTTP proxy through which `<service>.<namespace>.svc.cluster.local` reaches the local
// ports of the Service's Pods. docs/platform-tests.md describes the mechanisms.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { connect as netConnect, type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Daprd, type DaprResource } from "./daprd.js";
import type { ControlPlane, KubeResponse } from "./kube.js";
import { OFEVENTS_BIN } from "./ofevents.js";
import { freePort, LogTail, tcpConnects } from "./server.js";
import { randomSuffix } from "./wait.js";

/** How a Pod of an image other than the project's runs: a small local program the test names. */
export interface StandInImage {
  /** The image's entrypoint: the program to run (e.g. `process.execPath`). */
  command: string;
  /** The image's cmd: arguments after `command` (a container's `args` replace them). */
  args?: readonly string[];
  /**
   * For each container port the program listens on, the environment variable through which it
   * takes the local port the agent allocated (e.g. `{ 8080: "PORT" }`). Container ports not
   * listed here are not moved: the program listens on the container port itself.
   */
  portEnv?: Readonly<Record<number, string>>;
}

export interface NodeAgentOptions {
  /** The Node's name (default `node-<random>`). */
  nodeName?: string;
  /** Between two lists of Pods (default 200 ms). */
  pollIntervalMs?: number;
  /** Upper bound of a probe's period (default 500 ms; a probe's `periodSeconds` wins when shorter). */
  probeIntervalMs?: number;
  /** First restart delay of a container that exited; doubles per restart up to `maxMs`. */
  restartBackoff?: { baseMs: number; maxMs: number };
  /** Images run as this repository's build (default: any image whose name contains "ofevents"). */
  projectImage?: RegExp;
  /** daprd's start timeout (default 60 s). */
  daprdStartTimeoutMs?: number;
}

type ResolvedOptions = Required<Omit<NodeAgentOptions, "nodeName">>;

/** Which container of a Pod: `namespace/name`, optionally a container name. */
export type PodRef = `${string}/${string}`;

interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
}

interface Probe {
  httpGet?: { path?: string; port: number | string; scheme?: string };
  tcpSocket?: { port: number | string };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string }; prefix?: string }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  /** Where the program writes its termination message (default `/dev/termination-log`). */
  terminationMessagePath?: string;
  terminationMessagePolicy?: "File" | "FallbackToLogsOnError";
}

interface Volume {
  name: string;
  configMap?: { name: string; items?: { key: string; path: string }[] };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
  emptyDir?: unknown;
}

interface Pod {
  metadata: ObjectMeta;
  spec: {
    nodeName?: string;
    containers: Container[];
    volumes?: Volume[];
    restartPolicy?: "Always" | "OnFailure" | "Never";
    terminationGracePeriodSeconds?: number;
    serviceAccountName?: string;
    /** The deprecated alias of serviceAccountName. */
    serviceAccount?: string;
    automountServiceAccountToken?: boolean;
  };
}

interface Service {
  spec?: {
    selector?: Record<string, string>;
    ports?: { port: number; targetPort?: number | string }[];
  };
}

type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | {
      terminated: {
        exitCode: number;
        signal?: number;
        reason: string;
        message?: string;
        startedAt: string;
        finishedAt: string;
      };
    };

/** One container's process, restarted per the Pod's restartPolicy. */
class ContainerRun {
  readonly log = new LogTail(300);
  child: ChildProcess | undefined;
  exited: Promise<void> = Promise.resolve();
  state: ContainerState = { waiting: { reason: "ContainerCreating" } };
  lastState: ContainerState | undefined;
  restartCount = 0;
  started = false;
  ready = false;
  readyChangedAt = now();
  argv: string[] = [];
  env: Record<string, string> = {};
  /** The local file standing for the container's terminationMessagePath. */
  terminationFile = "";
  readonly probes: AbortController = new AbortController();

  constructor(readonly spec: Container) {}

  /**
   * kubelet's termination message: the file's first 4096 bytes; with `FallbackToLogsOnError`, an
   * empty file and a failed exit, the log's last 80 lines, at most 2048 bytes.
   */
  terminationMessage(exitCode: number): string | undefined {
    let text = "";
    try {
      text = readFileSync(this.terminationFile).subarray(0, 4096).toString();
    } catch {
      // no file: nothing written
    }
    if (text === "" && exitCode !== 0 && this.spec.terminationMessagePolicy === "FallbackToLogsOnError") {
      const tail = Buffer.from(this.log.lines().slice(-80).join("\n"));
      text = tail.subarray(Math.max(0, tail.length - 2048)).toString();
    }
    return text === "" ? undefined : text;
  }

  setReady(ready: boolean): void {
    if (ready !== this.ready) {
      this.ready = ready;
      this.readyChangedAt = now();
    }
  }
}

/** One Pod on this node: its temp dir, port map, containers and daprd. */
class PodRun {
  readonly containers = new Map<string, ContainerRun>();
  /** container port → local port */
  readonly ports = new Map<number, number>();
  /** port name → container port */
  readonly namedPorts = new Map<string, number>();
  daprd: Daprd | undefined;
  dir = "";
  startedAt = now();
  scheduledAt = now();
  startError: string | undefined;
  /** Failed starts so far, and when to try again. */
  attempts = 0;
  retryAt = 0;
  starting: Promise<void> = Promise.resolve();
  stopping: Promise<void> | undefined;
  /** Set once its processes are being stopped: no more restarts. */
  halted = false;
  lastStatus = "";
  readyAt = now();
  wasReady = false;

  constructor(
    readonly key: PodRef,
    public pod: Pod,
  ) {}

  get uid(): string | undefined {
    return this.pod.metadata.uid;
  }

  localPort(port: number | string): number | undefined {
    const containerPort = typeof port === "number" ? port : (this.namedPorts.get(port) ?? Number(port));
    if (!Number.isInteger(containerPort)) return undefined;
    return this.ports.get(containerPort) ?? containerPort;
  }

  get ready(): boolean {
    return (
      this.startError === undefined && this.containers.size > 0 && [...this.containers.values()].every((c) => c.ready)
    );
  }
}

// If the test process dies without stopping the agent, don't leave Pod processes running.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
/** A MicroTime (Leases): six fraction digits. */
const microNow = (): string => new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
const enc = encodeURIComponent;

const SIGNALS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/**
 * A kubelet stand-in on 127.0.0.1. Start it with {@link NodeAgent.start}; register stand-ins for
 * non-project images with {@link image} before their Pods are created; {@link stop} stops every
 * Pod process (by pid), every daprd and the proxy.
 */
export class NodeAgent implements AsyncDisposable {
  readonly nodeName: string;
  /** What the agent did and what failed (API errors, start failures), newest last. */
  readonly log = new LogTail(500);
  readonly #cp: ControlPlane;
  readonly #opts: ResolvedOptions;
  readonly #standIns = new Map<string, StandInImage>();
  readonly #pods = new Map<PodRef, PodRun>();
  readonly #proxy: Server;
  readonly #loop: Promise<void>;
  readonly #stop = new AbortController();
  #roundRobin = 0;
  readonly #tunnels = new Set<Duplex>();

  private constructor(cp: ControlPlane, nodeName: string, opts: ResolvedOptions, proxy: Server) {
    this.#cp = cp;
    this.nodeName = nodeName;
    this.#opts = opts;
    this.#proxy = proxy;
    proxy.on("request", (req: IncomingMessage, res: ServerResponse) => void this.#serveProxy(req, res));
    proxy.on("connect", (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.#tunnel(req, socket, head));
    this.#loop = this.#run();
  }

  /** Registers the Node (and its Lease), starts the proxy and the Pod loop. */
  static async start(cp: ControlPlane, options: NodeAgentOptions = {}): Promise<NodeAgent> {
    const nodeName = options.nodeName ?? `node-${randomSuffix()}`;
    const opts = {
      pollIntervalMs: options.pollIntervalMs ?? 200,
      probeIntervalMs: options.probeIntervalMs ?? 500,
      restartBackoff: options.restartBackoff ?? { baseMs: 500, maxMs: 10_000 },
      projectImage: options.projectImage ?? /ofevents/,
      daprdStartTimeoutMs: options.daprdStartTimeoutMs ?? 60_000,
    };
    const res = await cp.request("POST", "/api/v1/nodes", {
      body: {
        apiVersion: "v1",
        kind: "Node",
        metadata: {
          name: nodeName,
          labels: { "kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux" },
        },
        spec: {},
      },
    });
    if (res.status !== 201) throw new Error(`registering Node ${nodeName}: HTTP ${res.status}: ${res.text}`);
    const proxy = createServer();
    await new Promise<void>((resolve, reject) => {
      proxy.once("error", reject);
      proxy.listen(0, "127.0.0.1", () => resolve());
    });
    const agent = new NodeAgent(cp, nodeName, opts, proxy);
    try {
      await agent.#heartbeat();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  /** `http://127.0.0.1:<port>`: the proxy given to every Pod as `HTTP_PROXY` / `http_proxy`. */
  get proxyUrl(): string {
    return `http://127.0.0.1:${(this.#proxy.address() as AddressInfo).port}`;
  }

  /** Runs Pods of `image` (exact reference) as `standIn`. */
  image(image: string, standIn: StandInImage): void {
    this.#standIns.set(image, standIn);
  }

  /** The local port a Pod's container port (number or name) is reached on, once the Pod runs here. */
  portOf(pod: PodRef, port: number | string): number | undefined {
    return this.#pods.get(pod)?.localPort(port);
  }

  /** The pid of a Pod's container (default: the first), or undefined while it does not run. */
  pid(pod: PodRef, container?: string): number | undefined {
    return this.#container(pod, container)?.child?.pid;
  }

  /** The last lines a Pod's container (default: the first) wrote, over all its restarts. */
  logs(pod: PodRef, container?: string): string {
    return this.#container(pod, container)?.log.toString() ?? "";
  }

  /** The daprd of a Dapr-enabled Pod, once started. */
  daprd(pod: PodRef): Daprd | undefined {
    return this.#pods.get(pod)?.daprd;
  }

  /** Sends `signal` to a Pod's container process (default: the first container, SIGKILL). */
  killPod(pod: PodRef, signal: NodeJS.Signals = "SIGKILL", container?: string): void {
    const child = this.#container(pod, container)?.child;
    if (!child) throw new Error(`${pod}: no running process${container ? ` in container ${container}` : ""}`);
    child.kill(signal);
  }

  /** Stops the loop, every Pod's processes and daprd, and the proxy. The Node object stays. */
  async stop(): Promise<void> {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    await this.#loop;
    await Promise.all([...this.#pods.values()].map((run) => this.#terminate(run, 5)));
    this.#proxy.closeAllConnections();
    for (const socket of this.#tunnels) socket.destroy();
    await new Promise<void>((resolve) => this.#proxy.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #container(pod: PodRef, container: string | undefined): ContainerRun | undefined {
    const run = this.#pods.get(pod);
    if (!run) return undefined;
    return container === undefined ? run.containers.values().next().value : run.containers.get(container);
  }

  #note(message: string): void {
    this.log.add(`${now()} ${message}`);
  }

  async #api(method: string, path: string, body?: unknown, contentType?: string): Promise<KubeResponse> {
    return this.#cp.request(method, path, {
      ...(body === undefined ? {} : { body }),
      ...(contentType === undefined ? {} : { contentType }),
      timeoutMs: 10_000,
    });
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let lastBeat = Date.now();
    while (!signal.aborted) {
      try {
        await this.#tick();
        if (Date.now() - lastBeat >= 10_000) {
          lastBeat = Date.now();
          await this.#heartbeat();
        }
      } catch (err) {
        this.#note(`loop: ${(err as Error).message}`);
      }
      await delay(this.#opts.pollIntervalMs, undefined, { signal }).catch(() => {});
    }
  }

  /** Node status Ready and the node Lease: what a node-lifecycle controller checks. */
  async #heartbeat(): Promise<void> {
    const t = now();
    const status = {
      status: {
        conditions: [
          {
            type: "Ready",
            status: "True",
            reason: "KubeletReady",
            message: "node agent (test) is posting ready status",
            lastHeartbeatTime: t,
            lastTransitionTime: t,
          },
        ],
        addresses: [
          { type: "InternalIP", address: "127.0.0.1" },
          { type: "Hostname", address: this.nodeName },
        ],
        capacity: { cpu: "2", memory: "4Gi", pods: "110" },
        allocatable: { cpu: "2", memory: "4Gi", pods: "110" },
      },
    };
    const res = await this.#api(
      "PATCH",
      `/api/v1/nodes/${enc(this.nodeName)}/status`,
      status,
      "application/merge-patch+json",
    );
    if (res.status !== 200) throw new Error(`Node ${this.nodeName} status: HTTP ${res.status}: ${res.text}`);
    const leasePath = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${enc(this.nodeName)}`;
    const lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: this.nodeName, namespace: "kube-node-lease" },
      spec: { holderIdentity: this.nodeName, leaseDurationSeconds: 40, renewTime: microNow() },
    };
    const renewed = await this.#api("PATCH", leasePath, { spec: lease.spec }, "application/merge-patch+json");
    if (renewed.status === 404) {
      const created = await this.#api("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease);
      if (created.status !== 201 && created.status !== 409) this.#note(`lease: HTTP ${created.status}`);
    }
  }

  async #tick(): Promise<void> {
    const pending = await this.#api("GET", `/api/v1/pods?fieldSelector=${enc("spec.nodeName=")}`);
    for (const pod of listItems<Pod>(pending)) {
      if (pod.metadata.deletionTimestamp !== undefined) continue;
      const bound = await this.#api(
        "POST",
        `/api/v1/namespaces/${enc(pod.metadata.namespace ?? "default")}/pods/${enc(pod.metadata.name)}/binding`,
        {
          apiVersion: "v1",
          kind: "Binding",
          metadata: { name: pod.metadata.name, uid: pod.metadata.uid },
          target: { apiVersion: "v1", kind: "Node", name: this.nodeName },
        },
      );
      if (bound.status !== 201 && bound.status !== 409) {
        this.#note(`binding ${pod.metadata.namespace}/${pod.metadata.name}: HTTP ${bound.status}: ${bound.text}`);
      }
    }

    const mine = await this.#api("GET", `/api/v1/pods?fieldSelector=${enc(`spec.nodeName=${this.nodeName}`)}`);
    if (mine.status !== 200) throw new Error(`listing Pods: HTTP ${mine.status}: ${mine.text}`);
    const seen = new Set<PodRef>();
    for (const pod of listItems<Pod>(mine)) {
      const key: PodRef = `${pod.metadata.namespace ?? "default"}/${pod.metadata.name}`;
      seen.add(key);
      let run = this.#pods.get(key);
      if (run && run.uid !== pod.metadata.uid) {
        // Deleted and created again under the same name: the old one is gone.
        await this.#terminate(run, 0);
        this.#pods.delete(key);
        run = undefined;
      }
      if (pod.metadata.deletionTimestamp !== undefined) {
        if (run && !run.stopping) {
          const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
          void this.#terminate(run, grace)
            .then(() => this.#confirmDeletion(run!))
            .catch((err: unknown) => this.#note(`deleting ${key}: ${(err as Error).message}`));
        } else if (!run) {
          const stub = new PodRun(key, pod);
          this.#pods.set(key, stub);
          stub.stopping = Promise.resolve();
          void this.#confirmDeletion(stub).catch((err: unknown) =>
            this.#note(`deleting ${key}: ${(err as Error).message}`),
          );
        }
        continue;
      }
      if (run && run.startError !== undefined && !run.stopping && Date.now() >= run.retryAt) {
        // kubelet retries a Pod it could not start (a missing ConfigMap, an API hiccup).
        const retry = new PodRun(key, pod);
        retry.attempts = run.attempts;
        retry.lastStatus = run.lastStatus;
        run = retry;
      }
      if (!run || this.#pods.get(key) !== run) {
        run ??= new PodRun(key, pod);
        this.#pods.set(key, run);
        const started = run;
        started.starting = this.#startPod(started).catch(async (err: unknown) => {
          started.attempts++;
          const { baseMs, maxMs } = this.#opts.restartBackoff;
          started.retryAt = Date.now() + Math.min(maxMs, baseMs * 2 ** (started.attempts - 1));
          started.startError = (err as Error).message;
          this.#note(`starting ${key} (attempt ${started.attempts}): ${(err as Error).message}`);
          await this.#halt(started, 0);
        });
      }
      run.pod = pod;
      await this.#writeStatus(run);
    }
    for (const [key, run] of this.#pods) {
      if (seen.has(key)) continue;
      // Removed without this node's confirmation (force-deleted): stop it now.
      this.#pods.delete(key);
      void this.#terminate(run, 0).catch((err: unknown) => this.#note(`stopping ${key}: ${(err as Error).message}`));
    }
  }

  /**
   * What kubelet does once a deleted Pod's containers stopped: write the terminal phase, then
   * delete with grace period 0 (the API server keeps a bound Pod until its node confirms).
   */
  async #confirmDeletion(run: PodRun): Promise<void> {
    const { namespace = "default", name } = run.pod.metadata;
    const path = `/api/v1/namespaces/${enc(namespace)}/pods/${enc(name)}`;
    await this.#writeStatus(run, true);
    const res = await this.#api("DELETE", `${path}?gracePeriodSeconds=0`, {
      apiVersion: "v1",
      kind: "DeleteOptions",
      gracePeriodSeconds: 0,
      preconditions: { uid: run.uid },
    });
    if (res.status !== 200 && res.status !== 404 && res.status !== 409) {
      this.#note(`deleting ${run.key}: HTTP ${res.status}: ${res.text}`);
    } else {
      this.#note(`${run.key}: deletion confirmed`);
    }
    if (this.#pods.get(run.key) === run) this.#pods.delete(run.key);
  }

  /** SIGTERM every container, SIGKILL after `graceSeconds`, then stop daprd and remove the dir. */
  #terminate(run: PodRun, graceSeconds: number): Promise<void> {
    run.stopping ??= (async () => {
      await run.starting;
      await this.#halt(run, graceSeconds);
    })();
    return run.stopping;
  }

  async #halt(run: PodRun, graceSeconds: number): Promise<void> {
    run.halted = true;
    const stops = [...run.containers.values()].map(async (c) => {
      c.probes.abort();
      const child = c.child;
      if (!child) return;
      child.kill("SIGTERM");
      const inTime = await Promise.race([c.exited.then(() => true), delay(graceSeconds * 1000, false)]);
      if (!inTime) child.kill("SIGKILL");
      await c.exited;
    });
    await Promise.all(stops);
    await run.daprd?.stop().catch((err: unknown) => this.#note(`${run.key} daprd stop: ${(err as Error).message}`));
    if (run.dir) await rm(run.dir, { recursive: true, force: true });
    this.#note(`${run.key}: stopped`);
  }

  async #get<T>(path: string): Promise<T | undefined> {
    const res = await this.#api("GET", path);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status}: ${res.text}`);
    return res.json as T;
  }

  /** Data of a ConfigMap or Secret (Secret values decoded), or undefined when it does not exist. */
  async #data(namespace: string, kind: "configmaps" | "secrets", name: string): Promise<Record<string, string>> {
    const obj = await this.#get<{ data?: Record<string, string>; binaryData?: Record<string, string> }>(
      `/api/v1/namespaces/${enc(namespace)}/${kind}/${enc(name)}`,
    );
    if (!obj) throw new Error(`${kind === "configmaps" ? "ConfigMap" : "Secret"} ${namespace}/${name} not found`);
    const data = obj.data ?? {};
    if (kind === "configmaps") return data;
    return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]));
  }

  async #startPod(run: PodRun): Promise<void> {
    const { pod } = run;
    const namespace = pod.metadata.namespace ?? "default";
    this.#note(`${run.key}: starting`);
    run.dir = await mkdtemp(join(tmpdir(), `ofevents-pod-${pod.metadata.name.slice(0, 40)}-`));

    // Volumes: ConfigMaps and Secrets written as files; emptyDirs as empty dirs.
    const volumeDirs = new Map<string, string>();
    for (const volume of pod.spec.volumes ?? []) {
      const dir = join(run.dir, "volumes", volume.name);
      await mkdir(dir, { recursive: true });
      volumeDirs.set(volume.name, dir);
      const source = volume.configMap
        ? { data: await this.#data(namespace, "configmaps", volume.configMap.name), items: volume.configMap.items }
        : volume.secret
          ? { data: await this.#data(namespace, "secrets", volume.secret.secretName), items: volume.secret.items }
          : undefined;
      if (!source) continue;
      const items = source.items ?? Object.keys(source.data).map((key) => ({ key, path: key }));
      for (const item of items) {
        const value = source.data[item.key];
        if (value === undefined) throw new Error(`volume ${volume.name}: no key ${item.key}`);
        const file = join(dir, item.path);
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, value);
      }
    }

    // Ports: every container port the program can be told to move gets a free local port.
    const plans = pod.spec.containers.map((c) => this.#plan(c));
    for (const [i, container] of pod.spec.containers.entries()) {
      for (const p of container.ports ?? []) if (p.name) run.namedPorts.set(p.name, p.containerPort);
      for (const port of Object.keys(plans[i]!.portEnv).map(Number)) {
        if (!run.ports.has(port)) run.ports.set(port, await freePort());
      }
    }

    const saEnv = await this.#serviceAccountEnv(run, namespace);

    const annotations = pod.metadata.annotations ?? {};
    const daprEnv: Record<string, string> = {};
    if (annotations["dapr.io/enabled"] === "true") {
      run.daprd = await this.#startDaprd(run, namespace, annotations);
      daprEnv["DAPR_HTTP_PORT"] = String(run.daprd.httpPort);
      daprEnv["DAPR_GRPC_PORT"] = String(run.daprd.grpcPort);
    }

    for (const [i, container] of pod.spec.containers.entries()) {
      const plan = plans[i]!;
      const c = new ContainerRun(container);
      run.containers.set(container.name, c);
      const env: Record<string, string> = {
        PATH: process.env["PATH"] ?? "/usr/bin:/bin",
        HOME: run.dir,
        TMPDIR: run.dir,
        HOSTNAME: pod.metadata.name,
        HTTP_PROXY: this.proxyUrl,
        http_proxy: this.proxyUrl,
        NO_PROXY: "127.0.0.1,localhost,::1",
        no_proxy: "127.0.0.1,localhost,::1",
        ...saEnv,
        ...plan.env,
        ...(await this.#env(container, pod, namespace)),
        ...daprEnv,
      };
      c.terminationFile = join(run.dir, `termination-${container.name}`);
      await writeFile(c.terminationFile, "");
      const mounts = (container.volumeMounts ?? [])
        .map((m) => ({ from: m.mountPath.replace(/\/+$/, ""), to: volumeDirs.get(m.name) }))
        .concat([{ from: container.terminationMessagePath ?? "/dev/termination-log", to: c.terminationFile }])
        .filter((m): m is { from: string; to: string } => m.to !== undefined)
        .sort((a, b) => b.from.length - a.from.length);
      // Paths inside the Pod move to its volumes; the host paths the agent put in place of the
      // image's (node, the repository's entrypoint) stay, wherever the checkout is (also under /tmp).
      const hostPaths = new Set([process.execPath, OFEVENTS_BIN]);
      const rewrite = (s: string): string => {
        if (hostPaths.has(s)) return s;
        for (const m of mounts) {
          if (s === m.from || s.startsWith(`${m.from}/`)) return m.to + s.slice(m.from.length);
          const eq = s.indexOf(`=${m.from}`);
          if (eq >= 0) return s.slice(0, eq + 1) + rewrite(s.slice(eq + 1));
        }
        return s;
      };
      let argv = plan.argv.map((a) => rewrite(expand(a, env)));
      for (const [port, name] of Object.entries(plan.portEnv)) {
        const local = String(run.ports.get(Number(port)));
        env[name] = local;
        // An explicit flag wins over the variable (the project entrypoint's --health-port).
        if (plan.portFlags[Number(port)] !== undefined) argv = replaceFlag(argv, plan.portFlags[Number(port)]!, local);
      }
      c.argv = argv;
      c.env = env;
      this.#spawn(run, c);
      this.#probe(run, c, container.readinessProbe, "readiness");
      this.#probe(run, c, container.livenessProbe, "liveness");
    }
    this.#note(`${run.key}: started (${[...run.containers.keys()].join(", ")})`);
  }

  /**
   * What kubelet's ServiceAccount token projection gives a Pod, as a kubeconfig: a token of the
   * Pod's ServiceAccount (TokenRequest, bound to the Pod when its spec names the account, the API
   * server's default audience, 1 h, not refreshed), the cluster's CA and URL, written to `<pod dir>/serviceaccount/` with the
   * token, `ca.crt` and `namespace` beside it. Returns `KUBECONFIG` and
   * `KUBERNETES_SERVICE_HOST`/`_PORT`; nothing with `automountServiceAccountToken: false`. Throws
   * (the Pod waits with CreateContainerError) when the ServiceAccount does not exist.
   */
  async #serviceAccountEnv(run: PodRun, namespace: string): Promise<Record<string, string>> {
    const { spec, metadata } = run.pod;
    if (spec.automountServiceAccountToken === false) return {};
    const named = spec.serviceAccountName ?? spec.serviceAccount;
    const sa = named ?? "default";
    const path = `/api/v1/namespaces/${enc(namespace)}/serviceaccounts/${enc(sa)}`;
    // Bound to the Pod as kubelet's token is; the API server refuses that binding when the Pod's
    // spec names no ServiceAccount (the admission plugin that fills in `default` is off here).
    const bound =
      named === undefined
        ? {}
        : { boundObjectRef: { apiVersion: "v1", kind: "Pod", name: metadata.name, uid: metadata.uid } };
    const res = await this.#api("POST", `${path}/token`, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { expirationSeconds: 3600, ...bound },
    });
    if (res.status === 404) throw new Error(`serviceaccount "${sa}" not found in namespace ${namespace}`);
    const token = (res.json as { status?: { token?: unknown } } | undefined)?.status?.token;
    if (res.status !== 201 || typeof token !== "string") {
      throw new Error(`token of serviceaccount ${namespace}/${sa}: HTTP ${res.status}: ${res.text}`);
    }
    const dir = join(run.dir, "serviceaccount");
    await mkdir(dir, { recursive: true });
    const kubeconfig = join(dir, "kubeconfig");
    await Promise.all([
      writeFile(join(dir, "token"), token, { mode: 0o600 }),
      writeFile(join(dir, "ca.crt"), this.#cp.caPem),
      writeFile(join(dir, "namespace"), namespace),
      this.#cp.writeKubeconfig(kubeconfig, { user: `system:serviceaccount:${namespace}:${sa}`, token }),
    ]);
    const url = new URL(this.#cp.url);
    return { KUBECONFIG: kubeconfig, KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port };
  }

  /** How a container runs: argv, the ports it can be told to move (env var and flag) and fixed env. */
  #plan(c: Container): {
    argv: string[];
    portEnv: Record<number, string>;
    portFlags: Record<number, string>;
    env: Record<string, string>;
  } {
    const standIn = this.#standIns.get(c.image);
    if (standIn === undefined && this.#opts.projectImage.test(c.image)) {
      // The Dockerfile: ENTRYPOINT ["node", "/app/packages/cli/bin/ofevents.js"], CMD ["controller"].
      const entry = [process.execPath, OFEVENTS_BIN];
      const argv = (c.command ? [...c.command, ...(c.args ?? [])] : [...entry, ...(c.args ?? ["controller"])]).map(
        (a) => (a === "node" ? process.execPath : a === "/app/packages/cli/bin/ofevents.js" ? OFEVENTS_BIN : a),
      );
      const flag = flagValue(argv, "--health-port");
      // `ofevents controller` takes its port as OFEVENTS_HEALTH_PORT, the workloads as HEALTH_PORT.
      const variable = argv[argv.indexOf(OFEVENTS_BIN) + 1] === "controller" ? "OFEVENTS_HEALTH_PORT" : "HEALTH_PORT";
      const fromEnv = c.env?.find((e) => e.name === variable)?.value;
      const healthPort = Number(flag ?? fromEnv ?? 8081);
      return {
        argv,
        portEnv: { [healthPort]: variable },
        portFlags: flag === undefined ? {} : { [healthPort]: "--health-port" },
        env: { NODE_ENV: "production" },
      };
    }
    if (standIn === undefined) {
      throw new Error(`no stand-in registered for image ${c.image} (NodeAgent.image())`);
    }
    const argv = c.command ? [...c.command, ...(c.args ?? [])] : [standIn.command, ...(c.args ?? standIn.args ?? [])];
    return { argv, portEnv: { ...standIn.portEnv }, portFlags: {}, env: {} };
  }

  async #env(c: Container, pod: Pod, namespace: string): Promise<Record<string, string>> {
    const env: Record<string, string> = {};
    for (const from of c.envFrom ?? []) {
      const data = from.configMapRef
        ? await this.#data(namespace, "configmaps", from.configMapRef.name)
        : from.secretRef
          ? await this.#data(namespace, "secrets", from.secretRef.name)
          : {};
      for (const [k, v] of Object.entries(data)) env[`${from.prefix ?? ""}${k}`] = v;
    }
    for (const e of c.env ?? []) {
      if (e.value !== undefined) {
        env[e.name] = expand(e.value, env);
        continue;
      }
      const vf = e.valueFrom;
      const ref = vf?.secretKeyRef ?? vf?.configMapKeyRef;
      if (ref) {
        let value: string | undefined;
        try {
          value = (await this.#data(namespace, vf?.secretKeyRef ? "secrets" : "configmaps", ref.name))[ref.key];
        } catch (err) {
          if (!ref.optional) throw err;
        }
        if (value === undefined && !ref.optional) throw new Error(`env ${e.name}: ${ref.name} has no key ${ref.key}`);
        if (value !== undefined) env[e.name] = value;
      } else if (vf?.fieldRef) {
        const fields: Record<string, string | undefined> = {
          "metadata.name": pod.metadata.name,
          "metadata.namespace": namespace,
          "metadata.uid": pod.metadata.uid,
          "spec.nodeName": this.nodeName,
          "status.podIP": "127.0.0.1",
          "status.hostIP": "127.0.0.1",
        };
        const value = fields[vf.fieldRef.fieldPath];
        if (value !== undefined) env[e.name] = value;
      } else {
        env[e.name] = "";
      }
    }
    return env;
  }

  /**
   * A daprd with the Pod's annotations and the Components, Resiliencies and Subscriptions of its
   * namespace (read once, at Pod start); resolves when its components are loaded.
   */
  async #startDaprd(run: PodRun, namespace: string, annotations: Record<string, string>): Promise<Daprd> {
    const resources: DaprResource[] = [];
    for (const plural of ["components", "resiliencies", "subscriptions"]) {
      const list = await this.#get<{ items?: Record<string, unknown>[] }>(
        `/apis/dapr.io/v1alpha1/namespaces/${enc(namespace)}/${plural}`,
      );
      for (const item of list?.items ?? []) {
        const meta = item["metadata"] as ObjectMeta;
        resources.push({
          apiVersion: item["apiVersion"],
          kind: item["kind"],
          metadata: { name: meta.name },
          ...(item["spec"] === undefined ? {} : { spec: item["spec"] }),
          ...(item["scopes"] === undefined ? {} : { scopes: item["scopes"] }),
        });
      }
    }
    const appPortAnnotation = annotations["dapr.io/app-port"];
    const appPort = appPortAnnotation === undefined ? undefined : run.localPort(Number(appPortAnnotation));
    const protocol = annotations["dapr.io/app-protocol"];
    const level = annotations["dapr.io/log-level"];
    return Daprd.start({
      appId: annotations["dapr.io/app-id"] ?? run.pod.metadata.name,
      ...(appPort === undefined ? {} : { appPort }),
      ...(protocol === undefined ? {} : { appProtocol: protocol as "http" }),
      ...(level === undefined ? {} : { logLevel: level as "info" }),
      resources,
      readiness: "outbound",
      startTimeoutMs: this.#opts.daprdStartTimeoutMs,
    });
  }

  #spawn(run: PodRun, c: ContainerRun): void {
    const [command, ...args] = c.argv;
    const startedAt = now();
    const child = spawn(command!, args, { cwd: run.dir, env: c.env, stdio: ["ignore", "pipe", "pipe"] });
    c.child = child;
    c.started = true;
    c.state = { running: { startedAt } };
    live.add(child);
    child.stdout?.on("data", (chunk: Buffer) => c.log.push("out", chunk));
    child.stderr?.on("data", (chunk: Buffer) => c.log.push("err", chunk));
    c.exited = new Promise<void>((resolve) => {
      child.once("error", (err) => {
        c.log.add(`--- spawn ${command}: ${err.message} ---`);
      });
      child.once("close", (code, signal) => {
        live.delete(child);
        c.log.flush();
        if (c.child === child) c.child = undefined;
        c.setReady(false);
        const exitCode = code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0);
        const message = c.terminationMessage(exitCode);
        c.lastState = {
          terminated: {
            exitCode,
            ...(signal ? { signal: SIGNALS[signal] ?? 0 } : {}),
            reason: exitCode === 0 ? "Completed" : "Error",
            ...(message === undefined ? {} : { message }),
            startedAt,
            finishedAt: now(),
          },
        };
        c.state = c.lastState;
        c.log.add(`--- exited (${signal ? `signal ${signal}` : `code ${code}`}) ---`);
        resolve();
        this.#afterExit(run, c, exitCode);
      });
    });
  }

  #afterExit(run: PodRun, c: ContainerRun, exitCode: number): void {
    if (run.halted || run.stopping || this.#stop.signal.aborted) return;
    const policy = run.pod.spec.restartPolicy ?? "Always";
    if (policy === "Never" || (policy === "OnFailure" && exitCode === 0)) return;
    const { baseMs, maxMs } = this.#opts.restartBackoff;
    const wait = Math.min(maxMs, baseMs * 2 ** c.restartCount);
    c.state = { waiting: { reason: "CrashLoopBackOff", message: `back-off ${wait} ms restarting ${c.spec.name}` } };
    void delay(wait, undefined, { signal: this.#stop.signal })
      .then(() => {
        if (run.halted || run.stopping) return;
        c.restartCount++;
        this.#note(`${run.key}/${c.spec.name}: restart ${c.restartCount}`);
        this.#spawn(run, c);
      })
      .catch(() => {});
  }

  /** Runs a readiness or liveness probe until the Pod stops; liveness failures kill the process. */
  #probe(run: PodRun, c: ContainerRun, probe: Probe | undefined, kind: "readiness" | "liveness"): void {
    if (probe === undefined) {
      if (kind === "readiness") {
        // No probe: ready while running (checked on each status write).
        void (async () => {
          while (!c.probes.signal.aborted) {
            c.setReady(c.child !== undefined);
            await delay(this.#opts.pollIntervalMs, undefined, { signal: c.probes.signal }).catch(() => {});
          }
        })();
      }
      return;
    }
    const period = Math.min((probe.periodSeconds ?? 10) * 1000, this.#opts.probeIntervalMs);
    const failureThreshold = probe.failureThreshold ?? 3;
    const successThreshold = probe.successThreshold ?? 1;
    const signal = c.probes.signal;
    void (async () => {
      let successes = 0;
      let failures = 0;
      let child: ChildProcess | undefined;
      let since = Date.now();
      while (!signal.aborted) {
        if (c.child !== child) {
          // A new process: start over, after the initial delay.
          child = c.child;
          since = Date.now();
          successes = 0;
          failures = 0;
        }
        const delayed = Date.now() - since < (probe.initialDelaySeconds ?? 0) * 1000;
        if (child !== undefined && !delayed) {
          const ok = await this.#check(run, probe, signal);
          if (ok) {
            failures = 0;
            successes++;
            if (kind === "readiness" && successes >= successThreshold && c.child === child) c.setReady(true);
          } else {
            successes = 0;
            failures++;
            if (failures >= failureThreshold && c.child === child) {
              if (kind === "readiness") c.setReady(false);
              else {
                c.log.add(`--- liveness probe failed ${failures} times: killing ---`);
                child.kill("SIGKILL");
                failures = 0;
              }
            }
          }
        }
        await delay(period, undefined, { signal }).catch(() => {});
      }
    })();
  }

  async #check(run: PodRun, probe: Probe, signal: AbortSignal): Promise<boolean> {
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    try {
      if (probe.httpGet) {
        const port = run.localPort(probe.httpGet.port);
        if (port === undefined) return false;
        const res = await fetch(`http://127.0.0.1:${port}${probe.httpGet.path ?? "/"}`, {
          redirect: "manual",
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        });
        await res.arrayBuffer();
        return res.status >= 200 && res.status < 400;
      }
      if (probe.tcpSocket) {
        const port = run.localPort(probe.tcpSocket.port);
        return port !== undefined && (await tcpConnects(port, signal));
      }
      if (probe.exec) {
        const [command, ...args] = probe.exec.command;
        return await new Promise<boolean>((resolve) => {
          execFile(command!, args, { timeout: timeoutMs, cwd: run.dir }, (err) => resolve(err === null));
        });
      }
    } catch {
      return false;
    }
    return false;
  }

  /** PATCHes the Pod's status when it changed; `final`: the Pod stopped for deletion (terminal phase). */
  async #writeStatus(run: PodRun, final = false): Promise<void> {
    const containers = [...run.containers.values()];
    const ready = run.ready;
    if (ready !== run.wasReady) {
      run.wasReady = ready;
      run.readyAt = now();
    }
    const policy = run.pod.spec.restartPolicy ?? "Always";
    const terminated = containers.map((c) => ("terminated" in c.state ? c.state.terminated : undefined));
    const allDone = containers.length > 0 && terminated.every((t) => t !== undefined);
    const phase = final
      ? terminated.every((t) => t?.exitCode === 0)
        ? "Succeeded"
        : "Failed"
      : run.startError !== undefined
        ? "Pending"
        : containers.length === 0 || !containers.every((c) => c.started)
          ? "Pending"
          : allDone && policy !== "Always"
            ? terminated.every((t) => t!.exitCode === 0)
              ? "Succeeded"
              : "Failed"
            : "Running";
    const cond = (type: string, status: boolean, at: string) => ({
      type,
      status: status ? "True" : "False",
      lastProbeTime: null,
      lastTransitionTime: at,
    });
    const status = {
      phase,
      hostIP: "127.0.0.1",
      hostIPs: [{ ip: "127.0.0.1" }],
      podIP: "127.0.0.1",
      podIPs: [{ ip: "127.0.0.1" }],
      startTime: run.startedAt,
      conditions: [
        cond("PodScheduled", true, run.scheduledAt),
        cond("Initialized", true, run.startedAt),
        cond("ContainersReady", ready, run.readyAt),
        cond("Ready", ready, run.readyAt),
      ],
      containerStatuses: run.pod.spec.containers.map((spec) => {
        const c = run.containers.get(spec.name);
        return {
          name: spec.name,
          image: spec.image,
          imageID: "",
          ...(c?.child?.pid === undefined ? {} : { containerID: `local://${c.child.pid}` }),
          started: c?.child !== undefined,
          ready: c?.ready ?? false,
          restartCount: c?.restartCount ?? 0,
          state:
            run.startError !== undefined
              ? { waiting: { reason: "CreateContainerError", message: run.startError } }
              : (c?.state ?? { waiting: { reason: "ContainerCreating" } }),
          ...(c?.lastState === undefined || c.lastState === c.state ? {} : { lastState: c.lastState }),
        };
      }),
    };
    const text = JSON.stringify(status);
    if (text === run.lastStatus) return;
    const { namespace = "default", name } = run.pod.metadata;
    const res = await this.#api(
      "PATCH",
      `/api/v1/namespaces/${enc(namespace)}/pods/${enc(name)}/status`,
      { status },
      "application/merge-patch+json",
    );
    if (res.status === 200) run.lastStatus = text;
    else if (res.status !== 404) this.#note(`status of ${run.key}: HTTP ${res.status}: ${res.text}`);
  }

  /**
   * The HTTP proxy (absolute-form requests here, `CONNECT` in {@link #tunnel}): a host
   * `<service>.<namespace>.svc[.cluster.local]` goes to the local port of a ready Pod of that
   * Service on this node (the Service's `targetPort`, through the Pod's port map); a loopback host
   * is forwarded as is; any other host is refused with 502.
   */
  async #serveProxy(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const fail = (status: number, message: string): void => {
      if (!res.headersSent) res.writeHead(status, { "content-type": "text/plain" });
      res.end(`${message}\n`);
    };
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      return fail(400, "the node agent's proxy takes absolute-form requests (http://host/path)");
    }
    let port: number;
    try {
      const target = await this.#resolve(url);
      if (typeof target === "string") return fail(target.startsWith("no ready") ? 503 : 502, target);
      port = target;
    } catch (err) {
      return fail(502, (err as Error).message);
    }
    const upstream = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: req.method,
        path: `${url.pathname}${url.search}`,
        headers: { ...req.headers, host: url.host },
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", (err) => fail(502, `${url.host}: ${err.message}`));
    req.pipe(upstream);
  }

  /** `CONNECT host:port` (how undici's and most clients' proxy agents reach http: URLs too). */
  async #tunnel(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.#tunnels.add(socket);
    socket.on("close", () => this.#tunnels.delete(socket));
    socket.on("error", () => socket.destroy());
    const refuse = (status: string, message: string): void => {
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${message}\n`);
    };
    let target: number | string;
    try {
      target = await this.#resolve(new URL(`http://${req.url ?? ""}`));
    } catch (err) {
      return refuse("502 Bad Gateway", (err as Error).message);
    }
    if (typeof target === "string") {
      return refuse(target.startsWith("no ready") ? "503 Service Unavailable" : "502 Bad Gateway", target);
    }
    const upstream = netConnect(target, "127.0.0.1", () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on("error", (err) => {
      if (socket.writable) refuse("502 Bad Gateway", `${req.url}: ${err.message}`);
      else socket.destroy();
    });
    socket.on("close", () => upstream.destroy());
  }

  /** A local port for `url`, or a message saying why there is none. */
  async #resolve(url: URL): Promise<number | string> {
    const port = url.port === "" ? 80 : Number(url.port);
    if (["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) return port;
    const m = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?\.?$/.exec(url.hostname);
    if (!m) return `the node agent's proxy reaches only *.svc.cluster.local and loopback hosts, not ${url.hostname}`;
    const [, name, namespace] = m as unknown as [string, string, string];
    const svc = await this.#get<Service>(`/api/v1/namespaces/${enc(namespace)}/services/${enc(name)}`);
    if (!svc) return `no Service ${namespace}/${name}`;
    const sp = svc.spec?.ports?.find((p) => p.port === port);
    if (!sp) return `Service ${namespace}/${name} has no port ${port}`;
    const selector = Object.entries(svc.spec?.selector ?? {});
    const ready = [...this.#pods.values()].filter(
      (run) =>
        !run.stopping &&
        run.ready &&
        (run.pod.metadata.namespace ?? "default") === namespace &&
        selector.length > 0 &&
        selector.every(([k, v]) => run.pod.metadata.labels?.[k] === v),
    );
    const pick = ready[this.#roundRobin++ % Math.max(1, ready.length)];
    if (!pick) return `no ready Pod of Service ${namespace}/${name} on node ${this.nodeName}`;
    return pick.localPort(sp.targetPort ?? sp.port) ?? `Pod ${pick.key} has no port ${String(sp.targetPort)}`;
  }
}

function listItems<T>(res: KubeResponse): T[] {
  if (res.status !== 200) return [];
  return ((res.json as { items?: T[] } | undefined)?.items ?? []) as T[];
}

/** Kubernetes' `$(VAR)` expansion in command, args and env values (`$$` escapes). */
function expand(s: string, env: Readonly<Record<string, string>>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string | undefined) =>
    all === "$$" ? "$" : name !== undefined && env[name] !== undefined ? env[name] : all,
  );
}

/** The value of `--flag v` or `--flag=v` in argv, or undefined. */
function flagValue(argv: readonly string[], flag: string): string | undefined {
  for (const [i, a] of argv.entries()) {
    if (a === flag) return argv[i + 1];
    if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
  }
  return undefined;
}

function replaceFlag(argv: readonly string[], flag: string, value: string): string[] {
  return argv.map((a, i) => (argv[i - 1] === flag ? value : a.startsWith(`${flag}=`) ? `${flag}=${value}` : a));
}
