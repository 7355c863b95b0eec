// The kubernetes source against a real kube-apiserver + etcd: ConfigMap changes become events
// with ids uid/resourceVersion, selectors and the event-type filter, a JSONata projection, resume
// after a restart from a state file or ConfigMap without re-sending, a relist after 410 Gone
// (forced by compacting etcd) without duplicates and with synthesized DELETED events, and a
// dispatch the bus refused being sent again. Run through the real EventSource runtime onto the
// in-memory bus.
//
// The API server runs without its watch cache, so a watch from a compacted resourceVersion is
// answered by etcd with 410 Gone (with the cache, only a version older than the cache's window
// is; that path is the same code).
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { loadManifests, silentLogger, type CloudEvent, type KubernetesSourceSpec } from "@ofevents/core";
import { createMemoryBus, type EventPublisher } from "@ofevents/eventbus";
import { ControlPlane } from "../../../test/helpers/kube.js";
import { randomSuffix, waitFor } from "../../../test/helpers/wait.js";
import { validateEventSource } from "../src/runtime.js";
import { FlakyPublisher, sourceHarness, type RunningSource } from "./support.js";

const NS = "k8s-test";
const EVENT = "configs";
const harness = sourceHarness({ namespace: NS, kind: "kubernetes", event: EVENT });
const { collect } = harness;

let cp: ControlPlane;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  cp = await ControlPlane.start({ apiServerArgs: ["--watch-cache=false"] });
  dir = await mkdtemp(join(tmpdir(), "k8s-source-"));
  kubeconfig = join(dir, "kubeconfig");
  await cp.writeKubeconfig(kubeconfig);
  await kube("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
}, 180_000);

afterAll(async () => {
  await cp?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** What the tests read of an answer. */
interface KubeAnswer {
  metadata: Meta;
  data: Record<string, string>;
}

async function kube(method: string, path: string, body?: unknown, contentType?: string): Promise<KubeAnswer> {
  const res = await cp.request(method, path, {
    ...(body === undefined ? {} : { body }),
    ...(contentType === undefined ? {} : { contentType }),
  });
  if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json as KubeAnswer;
}

/** A namespace of the test's own. */
async function namespace(): Promise<string> {
  const name = `ns-${randomSuffix()}`;
  await kube("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
  return name;
}

interface Meta {
  uid: string;
  resourceVersion: string;
}

const cmPath = (ns: string, name = "") => `/api/v1/namespaces/${ns}/configmaps${name === "" ? "" : `/${name}`}`;

async function createCm(ns: string, name: string, data: Record<string, string>, labels?: Record<string, string>) {
  const o = await kube("POST", cmPath(ns), {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name, ...(labels === undefined ? {} : { labels }) },
    data,
  });
  return o.metadata as Meta;
}

async function patchCm(ns: string, name: string, data: Record<string, string>) {
  const o = await kube("PATCH", cmPath(ns, name), { data }, "application/merge-patch+json");
  return o.metadata as Meta;
}

async function deleteCm(ns: string, name: string): Promise<void> {
  await kube("DELETE", cmPath(ns, name));
}

/** etcd's current revision, then a compaction up to it: older resourceVersions are gone. */
async function compactEtcd(): Promise<void> {
  const range = await fetch(`${cp.etcdUrl}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: "AA==" }) });
  const revision = ((await range.json()) as { header: { revision: string } }).header.revision;
  const res = await fetch(`${cp.etcdUrl}/v3/kv/compaction`, {
    method: "POST",
    body: JSON.stringify({ revision, physical: true }),
  });
  expect(res.ok).toBe(true);
}

const spec = (ns: string, extra: Partial<KubernetesSourceSpec> = {}): KubernetesSourceSpec => ({
  version: "v1",
  resource: "configmaps",
  namespace: ns,
  kubeconfig,
  ...extra,
});

const start = (s: KubernetesSourceSpec, bus: EventPublisher, name: string): Promise<RunningSource> =>
  harness.start(name, s, bus);

const summary = (events: CloudEvent[]) =>
  events.map((e) => `${String(e["k8seventtype"])} ${e.subject ?? ""}${e["k8ssynthetic"] === true ? " synthetic" : ""}`);

describe("kubernetes source - events", () => {
  it("kubernetes source - ADDED, MODIFIED and DELETED of ConfigMaps reach the bus with ids uid/resourceVersion", async () => {
    const ns = await namespace();
    const before = await createCm(ns, "existing", { a: "1" });
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await start(spec(ns), bus, name);
    const created = await createCm(ns, "orders", { size: "1" });
    const modified = await patchCm(ns, "orders", { size: "2" });
    await deleteCm(ns, "orders");
    await waitFor(() => got.length === 4, { message: () => `four events, got ${JSON.stringify(summary(got))}` });
    await src.stop();
    await bus.close();

    expect(summary(got)).toEqual([
      `ADDED ${ns}/existing`,
      `ADDED ${ns}/orders`,
      `MODIFIED ${ns}/orders`,
      `DELETED ${ns}/orders`,
    ]);
    expect(got[0]!.id).toBe(`${before.uid}/${before.resourceVersion}`);
    expect(got[1]!.id).toBe(`${created.uid}/${created.resourceVersion}`);
    expect(got[2]!.id).toBe(`${created.uid}/${modified.resourceVersion}`);
    expect(got[3]!.id).toMatch(new RegExp(`^${created.uid}/\\d+$`));
    expect(new Set(got.map((e) => e.id)).size).toBe(4);
    expect(got[1]).toMatchObject({
      type: "io.openfunction.events.kubernetes",
      source: harness.sourceOf(name),
      datacontenttype: "application/json",
      data: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "orders", namespace: ns }, data: { size: "1" } },
    });
    expect(got[2]).toMatchObject({ data: { data: { size: "2" } } });
  });

  it("kubernetes source - label and field selectors, the event-type filter and afterStart", async () => {
    const ns = await namespace();
    await createCm(ns, "old-shop", { a: "1" }, { app: "shop" });
    const labelled = `es-${randomSuffix()}`;
    const fielded = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const byLabel = await collect(bus, labelled);
    const byField = await collect(bus, fielded);
    const a = await start(
      spec(ns, { filter: { labels: "app=shop", afterStart: true }, eventTypes: ["ADDED", "DELETED"] }),
      bus,
      labelled,
    );
    const b = await start(spec(ns, { filter: { fields: "metadata.name=billing" } }), bus, fielded);
    await createCm(ns, "new-shop", { a: "1" }, { app: "shop" });
    await createCm(ns, "other", { a: "1" }, { app: "other" });
    await createCm(ns, "billing", { a: "1" });
    await patchCm(ns, "new-shop", { a: "2" }); // MODIFIED: filtered out by eventTypes
    await patchCm(ns, "billing", { a: "2" });
    await deleteCm(ns, "new-shop");
    await deleteCm(ns, "billing");
    await waitFor(() => byLabel.length >= 2 && byField.length >= 3, {
      message: () => `events: ${JSON.stringify([summary(byLabel), summary(byField)])}`,
    });
    // Anything unwanted would have come before the last DELETED (one watch, in order); a last
    // change on an unwatched object makes sure nothing else is pending.
    await createCm(ns, "marker", { a: "1" }, { app: "shop" });
    await waitFor(() => byLabel.length >= 3, { message: "marker" });
    await a.stop();
    await b.stop();
    await bus.close();
    expect(summary(byLabel)).toEqual([`ADDED ${ns}/new-shop`, `DELETED ${ns}/new-shop`, `ADDED ${ns}/marker`]);
    expect(summary(byField)).toEqual([`ADDED ${ns}/billing`, `MODIFIED ${ns}/billing`, `DELETED ${ns}/billing`]);
  });

  it("kubernetes source - an object leaving the label selector arrives as DELETED, one entering as ADDED", async () => {
    const ns = await namespace();
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await start(spec(ns, { filter: { labels: "app=shop" } }), bus, name);
    await createCm(ns, "moving", { a: "1" }, { app: "shop" });
    const left = await kube(
      "PATCH",
      cmPath(ns, "moving"),
      { metadata: { labels: { app: "blog" } } },
      "application/merge-patch+json",
    );
    const back = await kube(
      "PATCH",
      cmPath(ns, "moving"),
      { metadata: { labels: { app: "shop" } } },
      "application/merge-patch+json",
    );
    await waitFor(() => got.length >= 3, { message: () => `three events, got ${JSON.stringify(summary(got))}` });
    await src.stop();
    await bus.close();
    expect(summary(got)).toEqual([`ADDED ${ns}/moving`, `DELETED ${ns}/moving`, `ADDED ${ns}/moving`]);
    expect(got[1]!.id).toBe(`${left.metadata.uid}/${left.metadata.resourceVersion}`);
    expect(got[2]!.id).toBe(`${back.metadata.uid}/${back.metadata.resourceVersion}`);
  });

  it("kubernetes source - a JSONata projection over {type, object} is the data", async () => {
    const ns = await namespace();
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await start(
      spec(ns, { projection: '{"change": type, "name": object.metadata.name, "size": $number(object.data.size)}' }),
      bus,
      name,
    );
    await createCm(ns, "cart", { size: "3" });
    await waitFor(() => got.length === 1, { message: "one event" });
    await src.stop();
    await bus.close();
    expect(got[0]!.data).toEqual({ change: "ADDED", name: "cart", size: 3 });
  });
});

describe("kubernetes source - resume and 410 Gone", () => {
  it("kubernetes source - a restart resumes from the stored resourceVersion without re-sending", async () => {
    const ns = await namespace();
    const stateFile = join(dir, `state-${randomSuffix()}.json`);
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const s = spec(ns, { state: { file: stateFile } });
    const first = await start(s, bus, name);
    await createCm(ns, "one", { v: "1" });
    await createCm(ns, "two", { v: "1" });
    await waitFor(() => got.length === 2, { message: "two events" });
    await first.stop();
    const state = JSON.parse(await readFile(stateFile, "utf8")) as { resourceVersion: string; objects: object };
    expect(Object.keys(state.objects)).toHaveLength(2);

    // While the source is away: one change, one new object.
    await patchCm(ns, "one", { v: "2" });
    await createCm(ns, "three", { v: "1" });
    const second = await start(s, bus, name);
    await waitFor(() => got.length >= 4, { message: () => `four events, got ${JSON.stringify(summary(got))}` });
    await createCm(ns, "marker", { v: "1" });
    await waitFor(() => got.length >= 5, { message: "marker" });
    await second.stop();
    await bus.close();
    expect(summary(got)).toEqual([
      `ADDED ${ns}/one`,
      `ADDED ${ns}/two`,
      `MODIFIED ${ns}/one`,
      `ADDED ${ns}/three`,
      `ADDED ${ns}/marker`,
    ]);
    expect(new Set(got.map((e) => e.id)).size).toBe(5);
  });

  it("kubernetes source - without state a restart lists again: unchanged objects come with the same ids", async () => {
    const ns = await namespace();
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const first = await start(spec(ns), bus, name);
    await createCm(ns, "a", { v: "1" });
    await waitFor(() => got.length === 1, { message: "one event" });
    await first.stop();
    const second = await start(spec(ns), bus, name);
    await waitFor(() => got.length === 2, { message: "the object again" });
    await second.stop();
    await bus.close();
    expect(summary(got)).toEqual([`ADDED ${ns}/a`, `ADDED ${ns}/a`]);
    expect(got[1]!.id).toBe(got[0]!.id);
  });

  it("kubernetes source - 410 Gone after compaction: relist sends only what changed, and DELETED for what is gone", async () => {
    const ns = await namespace();
    const stateMap = `state-${randomSuffix()}`;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const s = spec(ns, { state: { configMap: stateMap } });
    // The state ConfigMap lives in the EventSource's namespace (NS), not in the watched one.
    const first = await start(s, bus, name);
    const keep = await createCm(ns, "keep", { v: "1" });
    await createCm(ns, "change", { v: "1" });
    await createCm(ns, "gone", { v: "1" });
    await waitFor(() => got.length === 3, { message: "three events" });
    await first.stop();
    const stored = await kube("GET", cmPath(NS, stateMap));
    const state = JSON.parse(stored.data[`${name}.${EVENT}`]!) as { resourceVersion: string };

    const changed = await patchCm(ns, "change", { v: "2" });
    await deleteCm(ns, "gone");
    const added = await createCm(ns, "added", { v: "1" });
    await compactEtcd();
    // The stored version is compacted away: a watch from it is answered with 410 Gone.
    const probe = await cp.request(
      "GET",
      `${cmPath(ns)}?watch=1&resourceVersion=${state.resourceVersion}&timeoutSeconds=1`,
    );
    expect(probe.text).toContain('"code":410');

    const second = await start(s, bus, name);
    await waitFor(() => got.length >= 6, { message: () => `six events, got ${JSON.stringify(summary(got))}` });
    await createCm(ns, "marker", { v: "1" });
    await waitFor(() => got.length >= 7, { message: "marker" });
    await second.stop();
    await bus.close();

    const after = got.slice(3);
    expect(summary(after.slice(0, 3)).sort()).toEqual(
      [`ADDED ${ns}/added`, `DELETED ${ns}/gone synthetic`, `MODIFIED ${ns}/change`].sort(),
    );
    expect(summary(after.slice(3))).toEqual([`ADDED ${ns}/marker`]);
    expect(got.filter((e) => e.subject === `${ns}/keep`).map((e) => e.id)).toEqual([
      `${keep.uid}/${keep.resourceVersion}`,
    ]);
    expect(after.find((e) => e.subject === `${ns}/change`)!.id).toBe(`${changed.uid}/${changed.resourceVersion}`);
    expect(after.find((e) => e.subject === `${ns}/added`)!.id).toBe(`${added.uid}/${added.resourceVersion}`);
    expect(after.find((e) => e.subject === `${ns}/gone`)!.data).toMatchObject({
      kind: "ConfigMap",
      metadata: { name: "gone", namespace: ns },
    });
    expect(new Set(got.map((e) => e.id)).size).toBe(got.length);
  });

  it("kubernetes source - an event the bus refused is sent again; the stored version does not pass it", async () => {
    const ns = await namespace();
    const name = `es-${randomSuffix()}`;
    const inner = createMemoryBus({ logger: silentLogger() });
    const got = await collect(inner, name);
    const flaky = new FlakyPublisher(inner, { failNext: 2 });
    const src = await start(spec(ns), flaky, name);
    const created = await createCm(ns, "retry-me", { v: "1" });
    await waitFor(() => got.length === 1, { message: "the event after two refusals", timeoutMs: 20_000 });
    expect(src.failed).toEqual([
      `${created.uid}/${created.resourceVersion}`,
      `${created.uid}/${created.resourceVersion}`,
    ]);
    await createCm(ns, "next", { v: "1" });
    await waitFor(() => got.length === 2, { message: "the next event" });
    await src.stop();
    await inner.close();
    expect(summary(got)).toEqual([`ADDED ${ns}/retry-me`, `ADDED ${ns}/next`]);
  });
});

describe("kubernetes source - the example", () => {
  it("kubernetes source - examples/eventsources/kubernetes.yaml validates and its shop-config event runs", async () => {
    const file = fileURLToPath(new URL("../../../examples/eventsources/kubernetes.yaml", import.meta.url));
    const m = await loadManifests([file]);
    expect(m.issues).toEqual([]);
    const es = m.eventSources[0]!.resource;
    expect(await validateEventSource(es)).toEqual([]);
    expect(Object.keys(es.spec.kubernetes ?? {})).toEqual(["shop-config", "deployments-gone"]);

    // The shop-config event as written, in a namespace of the test's own and with its kubeconfig.
    const ns = await namespace();
    const example = es.spec.kubernetes!["shop-config"]!;
    const name = `es-${randomSuffix()}`;
    const bus = createMemoryBus({ logger: silentLogger() });
    const got = await collect(bus, name);
    const src = await start({ ...example, namespace: ns, kubeconfig }, bus, name);
    await createCm(ns, "shop-settings", { currency: "EUR" }, { app: "shop" });
    await createCm(ns, "shop-cache", { size: "1" }, { app: "shop" }); // excluded by the field selector
    await createCm(ns, "blog", { theme: "dark" }, { app: "blog" }); // excluded by the label selector
    await patchCm(ns, "shop-settings", { currency: "CHF" });
    await waitFor(() => got.length >= 2, { message: "two events" });
    await src.stop();
    await bus.close();
    expect(got.map((e) => e.data)).toEqual([
      { change: "ADDED", name: "shop-settings", settings: { currency: "EUR" } },
      { change: "MODIFIED", name: "shop-settings", settings: { currency: "CHF" } },
    ]);
    const state = await kube("GET", cmPath(NS, "ofevents-kubernetes-state"));
    expect(Object.keys(state.data)).toContain(`${name}.${EVENT}`);
  });
});
