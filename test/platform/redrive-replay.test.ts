// Redrive and Replay as Kubernetes operations, run for real: our controller (in process) on a real
// etcd + kube-apiserver with the CRDs from crds/; kube-controller-manager's deployment and job
// controllers turn the Trigger's Deployment and each operation's Job into Pods; the node agent
// runs them as local processes (this repository's build) and reports each Job Pod's termination
// message, through which the verb's result reaches the operation's status; the bus is a real
// nats-server with JetStream. A sink outage dead-letters events; once it is fixed, a Redrive
// delivers each dead letter once to the subscriber it failed for, and a Replay feeds both
// subscribers the same events again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControllerHandle, OperationStatus } from "@ofevents/controller";
import { busTopic, newEvent, silentLogger, type CloudEvent } from "@ofevents/core";
import { createEventBus, type EventBus } from "@ofevents/eventbus";
import { Sink } from "../../packages/trigger/test/support.js";
import { ControlPlane } from "../helpers/kube.js";
import { DEFAULT_CONTROLLERS, KubeControllerManager } from "../helpers/kube-controller-manager.js";
import { NatsServer } from "../helpers/nats.js";
import { NodeAgent } from "../helpers/node-agent.js";
import { installCrds, startLeadingController } from "../helpers/platform.js";
import { reportFigures } from "../helpers/report.js";
import { randomSuffix, waitFor } from "../helpers/wait.js";

const API = "/apis/events.openfunction.io/v1alpha1";
const N = 30;

interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; ownerReferences?: { kind: string; name: string }[] };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

let cp: ControlPlane;
let kcm: KubeControllerManager;
let nats: NatsServer;
let agent: NodeAgent;
let controller: ControllerHandle | undefined;
let publisher: EventBus | undefined;
const sinks: Sink[] = [];

async function req(method: string, path: string, body?: unknown): Promise<Obj & { items?: Obj[] }> {
  const res = await cp.request(method, path, body === undefined ? {} : { body });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as Obj & { items?: Obj[] };
}

async function list(path: string): Promise<Obj[]> {
  return (await req("GET", path)).items ?? [];
}

function ready(p: Obj): boolean {
  return ((p.status?.["conditions"] ?? []) as { type: string; status: string }[]).some(
    (c) => c.type === "Ready" && c.status === "True",
  );
}

async function sink(): Promise<Sink> {
  const s = await new Sink().start();
  sinks.push(s);
  return s;
}

/** How many times each id reached `s`, and how many of those carried the extension `attr`. */
function arrivals(s: Sink, from: number, attr: string): { count: Map<string, number>; marked: number } {
  const count = new Map<string, number>();
  let marked = 0;
  for (const r of s.received.slice(from)) {
    const id = String(r.headers["ce-id"]);
    count.set(id, (count.get(id) ?? 0) + 1);
    if (r.headers[`ce-${attr}`] !== undefined) marked++;
  }
  return { count, marked };
}

/** Creates an operation and waits for its terminal phase; returns its status and the phases seen. */
async function runOperation(
  ns: string,
  kind: "Redrive" | "Replay",
  name: string,
  spec: Record<string, unknown>,
): Promise<{ status: OperationStatus; seen: string[]; obj: Obj }> {
  const plural = `${kind.toLowerCase()}s`;
  await req("POST", `${API}/namespaces/${ns}/${plural}`, {
    apiVersion: "events.openfunction.io/v1alpha1",
    kind,
    metadata: { name, namespace: ns },
    spec,
  });
  const seen: string[] = [];
  let obj: Obj | undefined;
  await waitFor(
    async () => {
      obj = await req("GET", `${API}/namespaces/${ns}/${plural}/${name}`);
      const phase = obj.status?.["phase"] as string | undefined;
      if (phase !== undefined && seen.at(-1) !== phase) seen.push(phase);
      return phase === "Succeeded" || phase === "Failed";
    },
    {
      timeoutMs: 90_000,
      intervalMs: 100,
      message: () =>
        `${kind} ${name} finished (last status ${JSON.stringify(obj?.status)})\nagent:\n${agent.log.toString()}`,
    },
  );
  return { status: obj!.status as unknown as OperationStatus, seen, obj: obj! };
}

/** The value of a counter on a Pod's /metrics (health port), summed over its series. */
async function podMetric(pod: string, name: string): Promise<number> {
  const port = agent.portOf(pod as `${string}/${string}`, "health");
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").pop());
  return sum;
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  [kcm, nats] = await Promise.all([
    KubeControllerManager.start(cp, { controllers: [...DEFAULT_CONTROLLERS, "job-controller"] }),
    NatsServer.start({ jetstream: true }),
  ]);
  await installCrds(cp);
  agent = await NodeAgent.start(cp);
  controller = await startLeadingController(cp, {
    image: "ofevents/ofevents:test",
    busDriver: "direct",
    dapr: { enabled: false },
    keda: { enabled: false },
  });
}, 240_000);

afterAll(async () => {
  await controller?.stop();
  await agent?.stop();
  await publisher?.close();
  await Promise.allSettled(sinks.map((s) => s.stop()));
  await Promise.allSettled([kcm?.stop(), nats?.stop()]);
  await cp?.stop();
}, 120_000);

describe("platform - Redrive and Replay run as Jobs", () => {
  it("platform - after a sink outage a Redrive delivers each dead letter once to its subscriber, a Replay feeds both again; status carries phase and counts", async () => {
    const ns = `ops-${randomSuffix()}`;
    await req("POST", "/api/v1/namespaces", { metadata: { name: ns } });
    const stream = `ops${randomSuffix()}`;
    const broken = await sink();
    const fine = await sink();
    let down = true;
    broken.status = () => (down ? 503 : 200);
    await req("POST", `${API}/namespaces/${ns}/eventbuses`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventBus",
      metadata: { name: "default", namespace: ns },
      spec: { jetstream: { url: nats.url, stream, ackWait: "3s" } },
    });
    await req("POST", `${API}/namespaces/${ns}/triggers`, {
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "Trigger",
      metadata: { name: "t", namespace: ns },
      spec: {
        eventBus: "default",
        inputs: { a: { eventSource: "src", event: "a" } },
        subscribers: [
          { condition: "a", sink: { uri: broken.url }, delivery: { retry: 1, backoffDelay: "10ms" } },
          { condition: "a", sink: { uri: fine.url } },
        ],
      },
    });
    let pod = "";
    await waitFor(
      async () => {
        const pods = await list(`/api/v1/namespaces/${ns}/pods`);
        pod = pods[0] === undefined ? "" : `${ns}/${pods[0].metadata.name}`;
        return pods.length === 1 && ready(pods[0]!);
      },
      { timeoutMs: 120_000, intervalMs: 250, message: () => `the Trigger Pod Ready\n${agent.log.toString()}` },
    );

    const since = new Date(Date.now() - 1_000).toISOString();
    const sent: CloudEvent[] = Array.from({ length: N }, (_, i) =>
      newEvent({ id: `ops-${i}-${randomSuffix()}`, source: "/ops", type: "t", data: { i } }),
    );
    publisher = await createEventBus({ jetstream: { url: nats.url, stream } }, { logger: silentLogger() });
    for (const e of sent) await publisher.publish(busTopic(ns, "src", "a"), e);
    await waitFor(
      async () =>
        fine.received.length >= N &&
        (await podMetric(pod, "ofevents_trigger_events_dead_lettered_total").catch(() => 0)) >= N,
      {
        timeoutMs: 60_000,
        message: () =>
          `${N} delivered to the fine sink and ${N} dead letters\n${agent.logs(pod as `${string}/${string}`)}`,
      },
    );
    down = false;
    const brokenBefore = broken.received.length;
    const fineBefore = fine.received.length;

    // A dry run counts and sends nothing.
    const dry = await runOperation(ns, "Redrive", "look", { trigger: "t", dryRun: true });
    expect(dry.status.phase).toBe("Succeeded");
    expect(dry.status.result).toMatchObject({ matched: N, ids: N });
    expect(broken.received.length).toBe(brokenBefore);

    const started = Date.now();
    const redrive = await runOperation(ns, "Redrive", "fix", { trigger: "t" });
    const redriveMs = Date.now() - started;
    expect(redrive.status.phase, redrive.status.message).toBe("Succeeded");
    expect(redrive.seen.at(-1)).toBe("Succeeded");
    expect(redrive.status.result).toMatchObject({ matched: N, delivered: N, deadLettered: 0, settled: 0 });
    expect(redrive.status.message).toContain(`${N} delivered, 0 dead-lettered again`);
    expect(redrive.status.job).toBe("redrive-fix");
    expect(redrive.status.completionTime).toBeDefined();
    expect(redrive.status.conditions?.[0]).toMatchObject({ type: "Complete", status: "True" });
    const toBroken = arrivals(broken, brokenBefore, "ofredriven");
    expect(toBroken.count.size).toBe(N);
    expect([...toBroken.count.values()].every((c) => c === 1)).toBe(true);
    expect(toBroken.marked).toBe(N);
    expect(new Set(toBroken.count.keys())).toEqual(new Set(sent.map((e) => e.id)));
    expect(fine.received.length).toBe(fineBefore);
    const job = await req("GET", `/apis/batch/v1/namespaces/${ns}/jobs/redrive-fix`);
    expect(job.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Redrive", name: "fix" });

    // The spec of an operation cannot change; a second Redrive finds everything settled.
    const patch = await cp.request("PATCH", `${API}/namespaces/${ns}/redrives/fix`, {
      body: { spec: { limit: 1 } },
      contentType: "application/merge-patch+json",
    });
    expect(patch.status).toBe(422);
    expect(patch.text).toContain("cannot change");
    const again = await runOperation(ns, "Redrive", "again", { trigger: "t" });
    expect(again.status.result).toMatchObject({ settled: N, matched: 0, delivered: 0 });

    // A Replay of the range feeds both subscribers the same events, marked, through a Job.
    const brokenBeforeReplay = broken.received.length;
    const fineBeforeReplay = fine.received.length;
    const liveBefore = await podMetric(pod, "ofevents_trigger_events_delivered_total");
    const replay = await runOperation(ns, "Replay", "again", { trigger: "t", from: since });
    expect(replay.status.phase, replay.status.message).toBe("Succeeded");
    expect(replay.status.from).toBe(since);
    expect(replay.status.result).toMatchObject({ read: N, replayed: N, delivered: 2 * N, complete: true });
    for (const [s, before] of [
      [broken, brokenBeforeReplay],
      [fine, fineBeforeReplay],
    ] as const) {
      const a = arrivals(s, before, "ofreplayed");
      expect(new Set(a.count.keys())).toEqual(new Set(sent.map((e) => e.id)));
      expect([...a.count.values()].every((c) => c === 1)).toBe(true);
      expect(a.marked).toBe(N);
    }
    // The live trigger delivered nothing more: the replay ran in its Job.
    expect(await podMetric(pod, "ofevents_trigger_events_delivered_total")).toBe(liveBefore);

    // Failures end in phase Failed with the reason: a Trigger that does not exist (no Job), and
    // a Job whose verb fails (its log tail is the termination message).
    const missing = await runOperation(ns, "Redrive", "nowhere", { trigger: "gone" });
    expect(missing.status).toMatchObject({ phase: "Failed", message: `no Trigger ${ns}/gone` });
    expect((await cp.request("GET", `/apis/batch/v1/namespaces/${ns}/jobs/redrive-nowhere`)).status).toBe(404);
    const bad = await runOperation(ns, "Replay", "bad", { trigger: "t", from: "1h", filter: "$$$(" });
    expect(bad.status.phase).toBe("Failed");
    expect(bad.status.result).toBeUndefined();
    expect(bad.status.message).toMatch(/filter|expression/i);
    expect(bad.status.conditions?.[0]).toMatchObject({ type: "Failed", status: "True" });

    // Deleting an operation deletes its Job (garbage collector).
    await req("DELETE", `${API}/namespaces/${ns}/redrives/fix`);
    await waitFor(
      async () => (await cp.request("GET", `/apis/batch/v1/namespaces/${ns}/jobs/redrive-fix`)).status === 404,
      {
        timeoutMs: 90_000,
        intervalMs: 250,
        message: () => `the Redrive's Job collected\n${kcm.log.lines().slice(-40).join("\n")}`,
      },
    );

    reportFigures(
      `platform Redrive: ${N} dead letters redriven by a Job in ${redriveMs} ms (phases seen ${redrive.seen.join(" > ")})`,
    );
  }, 300_000);
});
