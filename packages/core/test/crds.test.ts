import { readFile, readdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { generateCrds } from "../src/index.js";

const crdDir = fileURLToPath(new URL("../../../crds/", import.meta.url));

type Json = Record<string, unknown>;

/** Checks the rules of a Kubernetes structural schema that our generator must respect. */
function structuralProblems(node: unknown, path: string, out: string[]): void {
  if (typeof node !== "object" || node === null) return;
  const n = node as Json;
  const special = n["x-kubernetes-int-or-string"] === true || n["x-kubernetes-preserve-unknown-fields"] === true;
  if (n["type"] === undefined && !special) out.push(`${path}: no type`);
  for (const k of ["anyOf", "oneOf", "allOf", "not", "$ref", "$schema", "definitions", "$defs"]) {
    if (k in n) out.push(`${path}: ${k} is not structural`);
  }
  if (n["properties"] !== undefined && n["additionalProperties"] !== undefined)
    out.push(`${path}: properties with additionalProperties`);
  for (const [k, v] of Object.entries((n["properties"] as Json | undefined) ?? {}))
    structuralProblems(v, `${path}.${k}`, out);
  if (typeof n["additionalProperties"] === "object") structuralProblems(n["additionalProperties"], `${path}.*`, out);
  if (n["items"] !== undefined) structuralProblems(n["items"], `${path}[]`, out);
}

describe("crds - generated from the zod schemas", () => {
  it("crds - the checked-in files are what the generator prints (run `npm run crds`)", async () => {
    const generated = generateCrds();
    const files = (await readdir(crdDir)).filter((f) => f.endsWith(".yaml")).sort();
    expect(files).toEqual(Object.keys(generated).sort());
    for (const [name, text] of Object.entries(generated)) {
      expect(await readFile(crdDir + name, "utf8"), name).toBe(text);
    }
  });

  it("crds - plurals and file names are OpenFunction 1.2's (eventbuses, clustereventbuses), plus the two operations", () => {
    const plurals = Object.values(generateCrds()).map((text) => {
      const names = ((parse(text) as Json)["spec"] as Json)["names"] as Json;
      return `${String(names["kind"])}:${String(names["plural"])}`;
    });
    expect(plurals.sort()).toEqual([
      "ClusterEventBus:clustereventbuses",
      "EventBus:eventbuses",
      "EventSource:eventsources",
      "Redrive:redrives",
      "Replay:replays",
      "Trigger:triggers",
    ]);
    expect(Object.keys(generateCrds()).sort()).toEqual([
      "events.openfunction.io_clustereventbuses.yaml",
      "events.openfunction.io_eventbuses.yaml",
      "events.openfunction.io_eventsources.yaml",
      "events.openfunction.io_redrives.yaml",
      "events.openfunction.io_replays.yaml",
      "events.openfunction.io_triggers.yaml",
    ]);
  });

  it("crds - schemas are structural, with status subresource, short names and printer columns", () => {
    for (const [name, text] of Object.entries(generateCrds())) {
      const crd = parse(text) as Json;
      const spec = crd["spec"] as Json;
      const version = (spec["versions"] as Json[])[0]!;
      const problems: string[] = [];
      structuralProblems((version["schema"] as Json)["openAPIV3Schema"], "root", problems);
      expect(problems, name).toEqual([]);
      expect(version["subresources"]).toEqual({ status: {} });
      expect(((spec["names"] as Json)["shortNames"] as string[]).length).toBeGreaterThan(0);
      const columns = (version["additionalPrinterColumns"] as Json[]).map((c) => c["name"]);
      expect(columns.includes("Status") || columns.includes("Phase"), name).toBe(true);
    }
    const es = parse(generateCrds()["events.openfunction.io_eventsources.yaml"]!) as Json;
    const cols = (((es["spec"] as Json)["versions"] as Json[])[0]!["additionalPrinterColumns"] as Json[]).map(
      (c) => c["name"],
    );
    expect(cols.slice(0, 3)).toEqual(["EventBus", "Sink", "Status"]);
  });

  it("crds - a Redrive's or Replay's spec cannot change once created; the flow kinds' can", () => {
    const rule = (file: string): unknown => {
      const crd = parse(generateCrds()[file]!) as Json;
      const version = ((crd["spec"] as Json)["versions"] as Json[])[0]!;
      const spec = (((version["schema"] as Json)["openAPIV3Schema"] as Json)["properties"] as Json)["spec"] as Json;
      return (spec["x-kubernetes-validations"] as Json[] | undefined)?.map((v) => v["rule"]);
    };
    expect(rule("events.openfunction.io_redrives.yaml")).toEqual(["self == oldSelf"]);
    expect(rule("events.openfunction.io_replays.yaml")).toEqual(["self == oldSelf"]);
    expect(rule("events.openfunction.io_triggers.yaml")).toBeUndefined();
  });
});
