// The node agent (test/helpers/node-agent.ts) against a real etcd + kube-apiserver: Pods of a
// stand-in image and of this repository's build run as local processes, report status and
// readiness, restart, stop on deletion, get a real daprd, and are reached through the port map and
// the Service proxy.
import { request as httpRequest } from "node:http";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../helpers/kube.js";
import { NatsServer } from "../helpers/nats.js";
import { NodeAgent, type PodRef } from "../helpers/node-agent.js";
import { freePort } from "../helpers/server.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";
import { looseCrd } from "../helpers/platform.js";

let cp: ControlPlane;
let nats: NatsServer;
let nc: NatsConnection;
let agent: NodeAgent;

interface PodStatus {
  phase?: string;
  podIP?: string;
  conditions?: { type: string; status: string }[];
  containerStatuses?: { name: string; ready: boolean; restartCount: number; state: Record<string, unknown> }[];
}

async function req(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Record<string, unknown>;
}

/** A namespace with its `default` ServiceAccount (kube-controller-manager's job; none runs here). */
async function createNamespace(): Promise<string> {
  const name = `t-${randomSuffix()}`;
  await req("POST", "/api/v1/namespaces", { metadata: { name } });
  await req("POST", `/api/v1/namespaces/${name}/serviceaccounts`, { metadata: { name: "default" } });
  return name;
}

const podPath = (ns: string, name: string): string => `/api/v1/namespaces/${ns}/pods/${name}`;

async function podStatus(ns: string, name: string): Promise<PodStatus> {
  return ((await req("GET", podPath(ns, name)))["status"] ?? {}) as PodStatus;
}

const isReady = (s: PodStatus): boolean =>
  s.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

async function waitPodReady(ns: string, name: string, timeoutMs = 60_000): Promise<PodStatus> {
  return waitFor(
    async () => {
      const s = await podStatus(ns, name);
      return isReady(s) ? s : undefined;
    },
    { timeoutMs, intervalMs: 100, message: `Pod ${ns}/${name} Ready` },
  ).catch(async (err: unknown) => {
    const ref: PodRef = `${ns}/${name}`;
    throw new Error(
      [
        (err as Error).message,
        `status: ${JSON.stringify(await podStatus(ns, name))}`,
        `agent log:\n${agent.log.toString()}`,
        `container log:\n${agent.logs(ref)}`,
        `daprd log:\n${agent.daprd(ref)?.log.toString() ?? "(none)"}`,
      ].join("\n"),
      { cause: err },
    );
  });
}

async function waitGone(ns: string, name: string): Promise<void> {
  await waitFor(async () => (await cp.request("GET", podPath(ns, name))).status === 404, {
    timeoutMs: 30_000,
    intervalMs: 100,
    message: `Pod ${ns}/${name} removed after the node confirmed`,
  }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nagent log:\n${agent.log.toString()}`, { cause: err });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A stand-in web app on $PORT: records each POST (its ce-id header and body), lists them on
 * GET /received, and answers any other GET with its pod name, path and $GREETING; exits on SIGTERM.
 */
const WEB_APP = `
const http = require("node:http");
const received = [];
http.createServer((req, res) => {
  res.setHeader("content-type", "application/json");
  if (req.method === "POST") {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => { received.push({ id: req.headers["ce-id"], host: req.headers.host, body }); res.end("{}"); });
    return;
  }
  if (req.url === "/received") return res.end(JSON.stringify(received));
  res.end(JSON.stringify({ pod: process.env.HOSTNAME, path: req.url, greeting: process.env.GREETING }));
}).listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`;

/**
 * A stand-in Dapr app: publishes one event through its sidecar ($DAPR_HTTP_PORT) to $PUBSUB/$TOPIC,
 * then answers /ready 200; answers daprd's GET /dapr/subscribe with no subscriptions.
 */
const DAPR_APP = `
const http = require("node:http");
let published = false;
http.createServer((req, res) => {
  if (req.url === "/dapr/subscribe") { res.setHeader("content-type", "application/json"); return res.end("[]"); }
  if (req.url === "/ready") { res.statusCode = published ? 200 : 503; return res.end(); }
  res.statusCode = 404; res.end();
}).listen(Number(process.env.PORT), "127.0.0.1");
(async () => {
  for (let i = 0; i < 100 && !published; i++) {
    const url = "http://127.0.0.1:" + process.env.DAPR_HTTP_PORT + "/v1.0/publish/" + process.env.PUBSUB + "/" + process.env.TOPIC;
    const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ from: process.env.HOSTNAME }) }).catch(() => undefined);
    if (r && r.status === 204) published = true; else await new Promise((ok) => setTimeout(ok, 200));
  }
})();
process.on("SIGTERM", () => process.exit(0));
`;

/**
 * A stand-in API client: reads the kubeconfig in $KUBECONFIG (server, CA, bearer token), lists
 * the ConfigMaps of its namespace ($NS) with it, prints `status=<code> <body>` and exits.
 */
const API_CLIENT = `
const fs = require("node:fs");
const https = require("node:https");
if (!process.env.KUBECONFIG) { console.log("no KUBECONFIG"); process.exit(0); }
const text = fs.readFileSync(process.env.KUBECONFIG, "utf8");
const server = new URL(JSON.parse(/server: (".*")/.exec(text)[1]));
const ca = Buffer.from(/certificate-authority-data: (\\S+)/.exec(text)[1], "base64");
const token = JSON.parse(/token: (".*")/.exec(text)[1]);
const req = https.request({ host: server.hostname, port: server.port, ca, path: "/api/v1/namespaces/" + process.env.NS + "/configmaps",
  headers: { authorization: "Bearer " + token, accept: "application/json" } }, (res) => {
  let body = ""; res.on("data", (c) => (body += c));
  res.on("end", () => { console.log("status=" + res.statusCode + " " + body.slice(0, 300)); process.exit(0); });
});
req.on("error", (e) => { console.log("error " + e.message); process.exit(1); });
req.end();
`;

function webPod(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels },
    spec: {
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 5,
      containers: [
        {
          name: "web",
          image: "example/web:1",
          env: [
            { name: "GREETING", value: "hello from $(HOSTNAME_OVERRIDE)" },
            { name: "HOSTNAME_OVERRIDE", value: "x" },
          ],
          ports: [{ name: "http", containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/ready", port: "http" }, periodSeconds: 1 },
        },
      ],
    },
  };
}

/** An EventSource Pod as the controller renders it (packages/controller/src/workload.ts), minus security settings. */
function eventSourcePod(ns: string, name: string, configMap: string, webhookPort: number): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name },
    spec: {
      terminationGracePeriodSeconds: 10,
      containers: [
        {
          name: "ofevents",
          image: "ofevents/ofevents:0.1.0",
          args: ["eventsource", "-f", "/etc/ofevents", "--name", `${ns}/${configMap}`, "--log-level", "warn"],
          ports: [
            { name: "health", containerPort: 8081 },
            { name: "webhook-0", containerPort: webhookPort },
          ],
          volumeMounts: [
            { name: "config", mountPath: "/etc/ofevents" },
            { name: "tmp", mountPath: "/tmp" },
          ],
          readinessProbe: { httpGet: { path: "/readyz", port: "health" }, periodSeconds: 5 },
          livenessProbe: { httpGet: { path: "/healthz", port: "health" }, periodSeconds: 10, initialDelaySeconds: 5 },
        },
      ],
      volumes: [
        { name: "config", configMap: { name: configMap } },
        { name: "tmp", emptyDir: {} },
      ],
    },
  };
}

const postEvent = (url: string, id: string, body: unknown): Promise<Response> =>
  fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": id,
      "ce-source": "/test",
      "ce-type": "test.hook",
    },
    body: JSON.stringify(body),
  });

beforeAll(async () => {
  [cp, nats] = await Promise.all([ControlPlane.start(), NatsServer.start({ jetstream: true })]);
  nc = await connect({ servers: nats.url });
  for (const [kind, plural] of [
    ["Component", "components"],
    ["Resiliency", "resiliencies"],
    ["Subscription", "subscriptions"],
  ] as const) {
    await req(
      "POST",
      "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
      looseCrd("dapr.io", "v1alpha1", kind, plural),
    );
  }
  await waitFor(
    async () => {
      for (const plural of ["components", "resiliencies", "subscriptions"]) {
        if ((await cp.request("GET", `/apis/dapr.io/v1alpha1/${plural}?limit=1`)).status !== 200) return false;
      }
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 100, message: "Dapr CRDs served" },
  );
  agent = await NodeAgent.start(cp);
  agent.image("example/web:1", { command: process.execPath, args: ["-e", WEB_APP], portEnv: { 8080: "PORT" } });
  agent.image("example/exit:1", { command: process.execPath, args: ["-e", "process.exit(Number(process.env.CODE))"] });
  agent.image("example/stubborn:1", {
    command: process.execPath,
    args: ["-e", 'process.on("SIGTERM", () => {}); console.log("ignoring SIGTERM"); setInterval(() => {}, 1000);'],
  });
  agent.image("example/api-client:1", { command: process.execPath, args: ["-e", API_CLIENT] });
  agent.image("example/dapr-app:1", { command: process.execPath, args: ["-e", DAPR_APP], portEnv: { 3000: "PORT" } });
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  await nc?.close();
  await Promise.all([cp?.stop(), nats?.stop()]);
}, 60_000);

describe("node agent", () => {
  it("node agent - registers a Ready Node", async () => {
    const node = await req("GET", `/api/v1/nodes/${agent.nodeName}`);
    const conditions = (node["status"] as { conditions: { type: string; status: string }[] }).conditions;
    expect(conditions).toContainEqual(expect.objectContaining({ type: "Ready", status: "True" }));
  }, 120_000);

  it("node agent - a stand-in Pod is bound, runs, becomes Ready, restarts after SIGKILL and stops when deleted", async () => {
    const ns = await createNamespace();
    await req("POST", `/api/v1/namespaces/${ns}/pods`, webPod("web"));
    const ref: PodRef = `${ns}/web`;
    const status = await waitPodReady(ns, "web");
    expect(status.phase).toBe("Running");
    expect(status.podIP).toBe("127.0.0.1");
    const pod = await req("GET", podPath(ns, "web"));
    expect((pod["spec"] as { nodeName: string }).nodeName).toBe(agent.nodeName);

    // The container port 8080 is moved to a free local port, passed as $PORT.
    const port = agent.portOf(ref, 8080)!;
    expect(port).not.toBe(8080);
    expect(agent.portOf(ref, "http")).toBe(port);
    const echo = (await (await fetch(`http://127.0.0.1:${port}/x`)).json()) as Record<string, unknown>;
    expect(echo).toEqual({ pod: "web", path: "/x", greeting: "hello from $(HOSTNAME_OVERRIDE)" });

    const first = agent.pid(ref)!;
    agent.killPod(ref, "SIGKILL");
    const restarted = await waitFor(
      async () => {
        const s = await podStatus(ns, "web");
        return s.containerStatuses?.[0]?.restartCount === 1 && isReady(s) ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: "restartCount 1 and Ready again" },
    );
    expect(restarted.containerStatuses?.[0]?.state).toHaveProperty("running");
    const second = agent.pid(ref)!;
    expect(second).not.toBe(first);
    expect(alive(first)).toBe(false);

    await req("DELETE", podPath(ns, "web"));
    await waitGone(ns, "web");
    expect(alive(second)).toBe(false);
  }, 120_000);

  it("node agent - a deleted Pod whose process ignores SIGTERM is killed after its grace period", async () => {
    const ns = await createNamespace();
    await req("POST", `/api/v1/namespaces/${ns}/pods`, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "stubborn" },
      spec: { terminationGracePeriodSeconds: 2, containers: [{ name: "main", image: "example/stubborn:1" }] },
    });
    await waitPodReady(ns, "stubborn");
    // The program installs its SIGTERM handler first thing; give it a moment to run.
    await waitFor(() => agent.logs(`${ns}/stubborn`).includes("ignoring SIGTERM"), { timeoutMs: 10_000 });
    const pid = agent.pid(`${ns}/stubborn`)!;
    const deletedAt = Date.now();
    await req("DELETE", podPath(ns, "stubborn"));
    await waitGone(ns, "stubborn");
    expect(Date.now() - deletedAt).toBeGreaterThanOrEqual(2_000);
    expect(alive(pid)).toBe(false);
  }, 120_000);

  it("node agent - restartPolicy Never and OnFailure end in Failed and Succeeded; a failing livenessProbe restarts", async () => {
    const ns = await createNamespace();
    const exiting = (name: string, restartPolicy: string, code: number): Record<string, unknown> => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name },
      spec: {
        restartPolicy,
        containers: [{ name: "main", image: "example/exit:1", env: [{ name: "CODE", value: String(code) }] }],
      },
    });
    await req("POST", `/api/v1/namespaces/${ns}/pods`, exiting("never", "Never", 3));
    await req("POST", `/api/v1/namespaces/${ns}/pods`, exiting("onfailure", "OnFailure", 0));
    const ended = async (name: string, phase: string): Promise<PodStatus> =>
      waitFor(
        async () => {
          const s = await podStatus(ns, name);
          return s.phase === phase ? s : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 100, message: `${name} ${phase}` },
      );
    const never = await ended("never", "Failed");
    expect(never.containerStatuses?.[0]).toMatchObject({
      restartCount: 0,
      state: { terminated: { exitCode: 3, reason: "Error" } },
    });
    const onFailure = await ended("onfailure", "Succeeded");
    expect(onFailure.containerStatuses?.[0]).toMatchObject({
      restartCount: 0,
      state: { terminated: { exitCode: 0, reason: "Completed" } },
    });

    const live = webPod("unhealthy");
    (live["spec"] as { containers: Record<string, unknown>[] }).containers[0]!["livenessProbe"] = {
      exec: { command: ["false"] },
      periodSeconds: 1,
      failureThreshold: 2,
    };
    await req("POST", `/api/v1/namespaces/${ns}/pods`, live);
    await waitFor(async () => ((await podStatus(ns, "unhealthy")).containerStatuses?.[0]?.restartCount ?? 0) >= 1, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: "restarted by its livenessProbe",
    });
    expect(agent.logs(`${ns}/unhealthy`)).toContain("liveness probe failed 2 times: killing");
  }, 120_000);

  it("node agent - a Pod's env resolves $(VAR) against variables defined before it", async () => {
    const ns = await createNamespace();
    const pod = webPod("expand");
    const container = (pod["spec"] as { containers: { env: unknown[] }[] }).containers[0]!;
    container.env = [
      { name: "WHO", value: "agent" },
      { name: "GREETING", value: "hi $(WHO) $$(WHO)" },
    ];
    await req("POST", `/api/v1/namespaces/${ns}/pods`, pod);
    await waitPodReady(ns, "expand");
    const port = agent.portOf(`${ns}/expand`, 8080)!;
    const echo = (await (await fetch(`http://127.0.0.1:${port}/`)).json()) as Record<string, unknown>;
    expect(echo["greeting"]).toBe("hi agent $(WHO)");
  }, 120_000);

  it("node agent - a Pod whose ConfigMap is missing waits with CreateContainerError and starts once it exists", async () => {
    const ns = await createNamespace();
    const pod = webPod("late");
    const spec = pod["spec"] as { containers: { env: unknown[] }[]; volumes?: unknown[] };
    spec.containers[0]!.env = [
      { name: "GREETING", valueFrom: { configMapKeyRef: { name: "settings", key: "greeting" } } },
    ];
    await req("POST", `/api/v1/namespaces/${ns}/pods`, pod);
    const waiting = await waitFor(
      async () => {
        const s = await podStatus(ns, "late");
        const state = s.containerStatuses?.[0]?.state as { waiting?: { reason: string; message?: string } } | undefined;
        return state?.waiting?.reason === "CreateContainerError" ? state.waiting : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100, message: "CreateContainerError" },
    );
    expect(waiting.message).toContain(`ConfigMap ${ns}/settings not found`);
    await req("POST", `/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "settings" },
      data: { greeting: "late hello" },
    });
    await waitPodReady(ns, "late");
    const port = agent.portOf(`${ns}/late`, 8080)!;
    const echo = (await (await fetch(`http://127.0.0.1:${port}/`)).json()) as Record<string, unknown>;
    expect(echo["greeting"]).toBe("late hello");
  }, 120_000);

  it("node agent - the proxy sends <service>.<ns>.svc.cluster.local to a ready Pod's local port", async () => {
    const ns = await createNamespace();
    await req("POST", `/api/v1/namespaces/${ns}/pods`, webPod("web-0", { app: "web" }));
    await req("POST", `/api/v1/namespaces/${ns}/services`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web" },
      spec: { selector: { app: "web" }, ports: [{ port: 80, targetPort: "http" }] },
    });
    await waitPodReady(ns, "web-0");
    const viaProxy = (host: string, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const proxy = new URL(agent.proxyUrl);
        const r = httpRequest(
          { host: proxy.hostname, port: proxy.port, path: `http://${host}${path}`, headers: { host } },
          (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (chunk: string) => (body += chunk));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          },
        );
        r.on("error", reject);
        r.end();
      });
    const ok = await viaProxy(`web.${ns}.svc.cluster.local`, "/hello?x=1");
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ pod: "web-0", path: "/hello?x=1" });
    const missing = await viaProxy(`nope.${ns}.svc.cluster.local`, "/");
    expect(missing.status).toBe(502);
    expect(missing.body).toContain(`no Service ${ns}/nope`);
    const outside = await viaProxy("example.com", "/");
    expect(outside.status).toBe(502);
  }, 120_000);

  it("node agent - an ofevents eventsource Pod over its ConfigMap becomes Ready; a webhook POST reaches the JetStream stream", async () => {
    const ns = await createNamespace();
    const tag = randomSuffix();
    const stream = `s${tag}`;
    const webhookPort = await freePort();
    await req("POST", `/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "hooks" },
      data: {
        "eventsource.yaml": `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: hooks, namespace: ${ns} }
spec:
  eventBus: default
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
`,
        "eventbus.yaml": `apiVersion: events.openfunction.io/v1alpha1
kind: EventBus
metadata: { name: default, namespace: ${ns} }
spec: { jetstream: { url: "${nats.url}", stream: "${stream}" } }
`,
      },
    });
    await req("POST", `/api/v1/namespaces/${ns}/pods`, eventSourcePod(ns, "hooks-0", "hooks", webhookPort));
    const ref: PodRef = `${ns}/hooks-0`;
    await waitPodReady(ns, "hooks-0", 90_000);
    const health = agent.portOf(ref, "health")!;
    expect(health).not.toBe(8081);
    expect((await fetch(`http://127.0.0.1:${health}/readyz`)).status).toBe(200);

    const id = `e-${tag}`;
    const res = await postEvent(`http://127.0.0.1:${agent.portOf(ref, "webhook-0")}/in`, id, { marker: tag });
    expect(res.status).toBe(200);
    // The bus's stream of the topic `<ns>-hooks-in` is `<prefix>-<token>` (docs/eventbus/jetstream.md).
    const jsm = await nc.jetstreamManager();
    const info = await waitFor(
      async () => {
        for (const i of await jsm.streams.list().next()) {
          if (i.config.name.startsWith(`${stream}-`) && i.state.messages >= 1) return i;
        }
        return undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, message: `a message in a stream ${stream}-*` },
    );
    expect(info.state.messages).toBe(1);
    const stored = await jsm.streams.getMessage(info.config.name, { seq: info.state.first_seq });
    const text = new TextDecoder().decode(stored.data);
    expect(text).toContain(id);
    expect(text).toContain(tag);
  }, 120_000);

  it("node agent - an eventsource Pod's sink.ref to a Service reaches the Service's Pod through the proxy", async () => {
    const ns = await createNamespace();
    const tag = randomSuffix();
    await req("POST", `/api/v1/namespaces/${ns}/pods`, webPod("sink-0", { app: "sink" }));
    await req("POST", `/api/v1/namespaces/${ns}/services`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "sink" },
      spec: { selector: { app: "sink" }, ports: [{ port: 80, targetPort: "http" }] },
    });
    const webhookPort = await freePort();
    await req("POST", `/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "direct" },
      data: {
        "eventsource.yaml": `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata: { name: direct, namespace: ${ns} }
spec:
  sink: { ref: { apiVersion: v1, kind: Service, name: sink } }
  webhook: { in: { port: "${webhookPort}", endpoint: /in } }
`,
      },
    });
    await req("POST", `/api/v1/namespaces/${ns}/pods`, eventSourcePod(ns, "direct-0", "direct", webhookPort));
    await Promise.all([waitPodReady(ns, "sink-0"), waitPodReady(ns, "direct-0", 90_000)]);

    const id = `s-${tag}`;
    const res = await postEvent(`http://127.0.0.1:${agent.portOf(`${ns}/direct-0`, "webhook-0")}/in`, id, { tag });
    expect(res.status, `${await res.text()}\n${agent.logs(`${ns}/direct-0`)}`).toBe(200);
    const sinkPort = agent.portOf(`${ns}/sink-0`, "http")!;
    const received = (await (await fetch(`http://127.0.0.1:${sinkPort}/received`)).json()) as Record<string, unknown>[];
    expect(received).toEqual([{ id, host: `sink.${ns}.svc.cluster.local`, body: JSON.stringify({ tag }) }]);
  }, 120_000);

  it("node agent - a Dapr-annotated Pod gets a daprd with its namespace's Components and publishes through it", async () => {
    const ns = await createNamespace();
    const tag = randomSuffix();
    const stream = `d${tag}`;
    const topic = `t${tag}.out`;
    await (await nc.jetstreamManager()).streams.add({ name: stream, subjects: [topic] });
    await req("POST", `/apis/dapr.io/v1alpha1/namespaces/${ns}/components`, {
      apiVersion: "dapr.io/v1alpha1",
      kind: "Component",
      metadata: { name: "bus" },
      spec: {
        type: "pubsub.jetstream",
        version: "v1",
        metadata: [
          { name: "natsURL", value: nats.url },
          { name: "streamName", value: stream },
        ],
      },
    });
    await req("POST", `/api/v1/namespaces/${ns}/pods`, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "publisher",
        annotations: {
          "dapr.io/enabled": "true",
          "dapr.io/app-id": `publisher-${tag}`,
          "dapr.io/app-port": "3000",
          "dapr.io/app-protocol": "http",
        },
      },
      spec: {
        terminationGracePeriodSeconds: 5,
        containers: [
          {
            name: "app",
            image: "example/dapr-app:1",
            env: [
              { name: "PUBSUB", value: "bus" },
              { name: "TOPIC", value: topic },
            ],
            ports: [{ containerPort: 3000 }],
            readinessProbe: { httpGet: { path: "/ready", port: 3000 }, periodSeconds: 1 },
          },
        ],
      },
    });
    const ref: PodRef = `${ns}/publisher`;
    await waitPodReady(ns, "publisher", 90_000);
    const daprd = agent.daprd(ref)!;
    expect(daprd).toBeDefined();
    const meta = await daprd.metadata();
    expect(meta["id"]).toBe(`publisher-${tag}`);
    expect(meta["components"]).toContainEqual(expect.objectContaining({ name: "bus", type: "pubsub.jetstream" }));
    // daprd's app channel goes to the Pod's remapped app port.
    expect(meta["appConnectionProperties"]).toMatchObject({ port: agent.portOf(ref, 3000) });

    const jsm = await nc.jetstreamManager();
    const info = await waitFor(
      async () => {
        const i = await jsm.streams.info(stream);
        return i.state.messages >= 1 ? i : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, message: `a message in stream ${stream}` },
    );
    const stored = await jsm.streams.getMessage(stream, { seq: info.state.first_seq });
    expect(stored.subject).toBe(topic);
    expect(new TextDecoder().decode(stored.data)).toContain('"from":"publisher"');

    await req("DELETE", podPath(ns, "publisher"));
    await waitGone(ns, "publisher");
    expect(daprd.running).toBe(false);
  }, 120_000);
  it("node agent - a Pod reaches kube-apiserver as its ServiceAccount: 200 with RBAC, 403 without; a missing one is a CreateContainerError", async () => {
    const ns = await createNamespace();
    for (const name of ["reader", "nobody"]) {
      await req("POST", `/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name } });
    }
    await req("POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`, {
      metadata: { name: "read-configmaps" },
      rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["list"] }],
    });
    await req("POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, {
      metadata: { name: "reader" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "read-configmaps" },
      subjects: [{ kind: "ServiceAccount", name: "reader", namespace: ns }],
    });
    const clientPod = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name },
      spec: {
        restartPolicy: "Never",
        ...spec,
        containers: [{ name: "client", image: "example/api-client:1", env: [{ name: "NS", value: ns }] }],
      },
    });
    await req("POST", `/api/v1/namespaces/${ns}/pods`, clientPod("reader", { serviceAccountName: "reader" }));
    await req("POST", `/api/v1/namespaces/${ns}/pods`, clientPod("nobody", { serviceAccountName: "nobody" }));
    await req("POST", `/api/v1/namespaces/${ns}/pods`, clientPod("default-sa", {}));
    await req("POST", `/api/v1/namespaces/${ns}/pods`, clientPod("no-token", { automountServiceAccountToken: false }));
    await req("POST", `/api/v1/namespaces/${ns}/pods`, clientPod("missing", { serviceAccountName: "missing" }));
    const output = (name: string): Promise<string> =>
      waitFor(
        async () => {
          const s = await podStatus(ns, name);
          return s.phase === "Succeeded" ? agent.logs(`${ns}/${name}`) : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 100, message: `Pod ${ns}/${name} Succeeded` },
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n${agent.logs(`${ns}/${name}`)}\n${agent.log.toString()}`, {
          cause: err,
        });
      });
    expect(await output("reader")).toContain("status=200");
    const denied = await output("nobody");
    expect(denied).toContain("status=403");
    expect(denied).toContain(`system:serviceaccount:${ns}:nobody`);
    const byDefault = await output("default-sa");
    expect(byDefault).toContain("status=403");
    expect(byDefault).toContain(`system:serviceaccount:${ns}:default`);
    expect(await output("no-token")).toContain("no KUBECONFIG");

    const waiting = await waitFor(
      async () => {
        const state = (await podStatus(ns, "missing")).containerStatuses?.[0]?.state["waiting"] as
          { reason: string; message?: string } | undefined;
        return state?.reason === "CreateContainerError" ? state : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: "the Pod of a missing ServiceAccount in CreateContainerError" },
    );
    expect(waiting.message).toContain('serviceaccount "missing" not found');
    // Created afterwards, the ServiceAccount lets the Pod start at the next retry (as kubelet's).
    await req("POST", `/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name: "missing" } });
    expect(await output("missing")).toContain("status=403");
  }, 120_000);
});
