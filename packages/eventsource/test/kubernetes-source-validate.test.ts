// The kubernetes source's pure parts: validation of a spec, the ConfigMap key of the resume
// state, and the list/watch query.
import { describe, expect, it } from "vitest";
import { eventSourceSchema, type KubernetesSourceSpec } from "@ofevents/core";
import { collectionQuery, kubernetesAdapter, linesOf, stateKey } from "../src/sources/kubernetes.js";

const base: KubernetesSourceSpec = { version: "v1", resource: "configmaps" };

describe("kubernetes source - validate", () => {
  it.each([
    { name: "a resource", input: base, expected: [] },
    { name: "a kind", input: { version: "v1", kind: "ConfigMap" }, expected: [] },
    { name: "neither resource nor kind", input: { version: "v1" }, expected: ["resource"] },
    { name: "both resource and kind", input: { ...base, kind: "ConfigMap" }, expected: ["resource"] },
    { name: "a valid projection", input: { ...base, projection: "object.metadata.name" }, expected: [] },
    { name: "a broken projection", input: { ...base, projection: "object.(" }, expected: ["projection"] },
    { name: "state with a ConfigMap", input: { ...base, state: { configMap: "s" } }, expected: [] },
    { name: "state with both", input: { ...base, state: { configMap: "s", file: "/f" } }, expected: ["state"] },
    { name: "state with neither", input: { ...base, state: {} }, expected: ["state"] },
  ])("kubernetes source - validate: $name", ({ input, expected }) => {
    expect(kubernetesAdapter.validate(input as KubernetesSourceSpec).map((i) => i.path)).toEqual(expected);
  });

  it.each([
    { name: "both resource and kind", spec: { ...base, kind: "ConfigMap" }, ok: false },
    { name: "an unknown event type", spec: { ...base, eventTypes: ["BOOKMARK"] }, ok: false },
    { name: "an empty event type list", spec: { ...base, eventTypes: [] }, ok: false },
    { name: "an upper-case resource", spec: { version: "v1", resource: "ConfigMaps" }, ok: false },
    { name: "an unknown field", spec: { ...base, labelSelector: "a=b" }, ok: false },
    {
      name: "every field",
      spec: {
        ...base,
        group: "",
        namespace: "",
        filter: { labels: "a=b", fields: "metadata.name=x", afterStart: true },
        eventTypes: ["DELETED"],
        projection: "object",
        state: { file: "/tmp/s.json" },
        kubeconfig: "/k",
      },
      ok: true,
    },
  ])("kubernetes source - schema: $name", ({ spec, ok }) => {
    const r = eventSourceSchema.safeParse({
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name: "k" },
      spec: { eventBus: "default", kubernetes: { e: spec } },
    });
    expect(r.success).toBe(ok);
  });
});

describe("kubernetes source - state key and query", () => {
  it.each([
    { input: ["shop", "configs"], expected: "shop.configs" },
    { input: ["shop", "a/b c"], expected: "shop.a-b-c" },
  ])("kubernetes source - the state key of $input is $expected", ({ input, expected }) => {
    expect(stateKey(input[0]!, input[1]!)).toBe(expected);
  });

  it("kubernetes source - selectors are URL-encoded into the query, empty ones left out", () => {
    expect(collectionQuery({ ...base, filter: { labels: "app in (a,b)", fields: "" } }, { watch: "1" })).toBe(
      "?labelSelector=app+in+%28a%2Cb%29&watch=1",
    );
    expect(collectionQuery(base, {})).toBe("");
  });
});

describe("kubernetes source - watch lines", () => {
  it("kubernetes source - lines split across chunks, and a character split across chunks, come whole", async () => {
    const euro = Buffer.from("€");
    async function* chunks() {
      yield Buffer.from('{"a":1}\n{"b":');
      yield Buffer.concat([Buffer.from('"x'), euro.subarray(0, 1)]);
      yield Buffer.concat([euro.subarray(1), Buffer.from('"}\n\n{"c":3}')]);
    }
    const got: string[] = [];
    for await (const line of linesOf(chunks())) got.push(line);
    expect(got).toEqual(['{"a":1}', '{"b":"x€"}', "", '{"c":3}']);
  });
});
