/**
 * `ofevents validate` and `ofevents run` run the same checks (validateAll): what only the whole
 * set of manifests can tell, reported all at once with file, document and field, before anything
 * starts. Each row is a mistake that used to pass validate and then failed or never fired in run.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateAll } from "../src/check.js";

const H = "apiVersion: events.openfunction.io/v1alpha1";
const source = (name: string, body: string, bus = "default"): string =>
  `${H}\nkind: EventSource\nmetadata: { name: ${name} }\nspec:\n  eventBus: ${bus}\n${body}`;
const trigger = (input: string, sub = "topic: out", bus = "default"): string =>
  `${H}\nkind: Trigger\nmetadata: { name: t }\nspec:\n  eventBus: ${bus}\n  inputs: { a: ${input} }\n  subscribers: [{ condition: a, ${sub} }]`;
const hook = (port: number, endpoint = "/in"): string =>
  `  webhook: { in: { port: "${port}", endpoint: ${endpoint} } }`;
const jetstreamBus = `${H}\nkind: EventBus\nmetadata: { name: js }\nspec: { jetstream: { url: "nats://127.0.0.1:4222" } }`;
const syncFn = (name: string, module?: string): string =>
  `apiVersion: core.openfunction.io/v1beta1\nkind: Function\nmetadata:\n  name: ${name}\n${
    module === undefined ? "" : `  annotations: { ofevents.io/module: ${module} }\n`
  }spec: { serving: { runtime: knative } }`;

interface Row {
  name: string;
  /** How the checks run (default validate). */
  mode?: "run" | "validate";
  docs: string[];
  /** [code, path] of each expected issue. */
  issues?: Array<[string, string]>;
  warnings?: Array<[string, string]>;
}

const rows: Row[] = [
  {
    name: "run: a trigger naming an EventSource that is not loaded, on the in-process bus",
    mode: "run",
    docs: [trigger("{ eventSource: nope, event: e }")],
    issues: [["unknown_event_source", "spec.inputs.a.eventSource"]],
  },
  {
    name: "validate: the same file may be meant for a cluster (a warning)",
    docs: [trigger("{ eventSource: nope, event: e }")],
    warnings: [["unknown_event_source", "spec.inputs.a.eventSource"]],
  },
  {
    name: "run: on a durable bus a source may run elsewhere (a warning)",
    mode: "run",
    docs: [jetstreamBus, trigger("{ eventSource: nope, event: e }", "topic: out", "js")],
    warnings: [["unknown_event_source", "spec.inputs.a.eventSource"]],
  },
  {
    name: "an event the source does not define",
    docs: [source("s", hook(9001)), trigger("{ eventSource: s, event: deleted }")],
    issues: [["unknown_event", "spec.inputs.a.event"]],
  },
  {
    name: "a trigger on another bus than its source",
    docs: [source("s", hook(9001)), trigger("{ eventSource: s, event: in }", "topic: out", "other")],
    issues: [["bus_mismatch", "spec.eventBus"]],
  },
  {
    name: "two webhooks on one port and path",
    docs: [source("s", hook(9001)), source("s2", hook(9001))],
    issues: [["duplicate_route", "spec.webhook.in"]],
  },
  {
    name: "a generic event on a webhook's port and path",
    docs: [source("s", hook(9001)), source("s2", `  generic: { in: { port: 9001 } }`)],
    issues: [["duplicate_route", "spec.generic.in"]],
  },
  {
    name: "generic events on one port with their default paths (/{event}) do not clash",
    docs: [source("s", `  generic: { a: { port: 9002 }, b: { port: "9002" } }`)],
  },
  {
    name: "validate: a sink ref to a Function that is not in the manifests (a warning)",
    docs: [
      source("s", hook(9001)),
      trigger(
        "{ eventSource: s, event: in }",
        "sink: { ref: { apiVersion: core.openfunction.io/v1beta2, kind: Function, name: nope } }",
      ),
    ],
    warnings: [["unknown_function", "spec.subscribers.0.sink.ref"]],
  },
  {
    name: "run: a sink ref to a Function that is not in the manifests",
    mode: "run",
    docs: [
      source("s", hook(9001)),
      trigger(
        "{ eventSource: s, event: in }",
        "sink: { ref: { apiVersion: core.openfunction.io/v1beta2, kind: Function, name: nope } }",
      ),
    ],
    issues: [["unknown_function", "spec.subscribers.0.sink.ref"]],
  },
  {
    name: "a sink ref to a Knative Service: resolvable on a cluster only (a warning)",
    docs: [
      source("s", hook(9001)),
      trigger(
        "{ eventSource: s, event: in }",
        "sink: { ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: ksvc } }",
      ),
    ],
    warnings: [["cluster_only_sink", "spec.subscribers.0.sink.ref"]],
  },
  {
    name: "a Function whose module does not exist",
    docs: [syncFn("f", "./missing.mjs"), syncFn("g", "./also-missing.mjs")],
    issues: [
      ["module_not_found", "metadata.annotations.ofevents.io/module"],
      ["module_not_found", "metadata.annotations.ofevents.io/module"],
    ],
  },
  {
    name: "webhook metadata keys that are not CloudEvent extension names",
    docs: [
      source("s", `  webhook: { in: { port: "9001", endpoint: /in, metadata: { Team-Name: shop, id: x, team: ok } } }`),
    ],
    issues: [
      ["invalid_value", "spec.webhook.in.metadata.Team-Name"],
      ["invalid_value", "spec.webhook.in.metadata.id"],
    ],
  },
  {
    name: "a port out of range next to another schema error: both at once",
    docs: [source("s", `  webhook: { in: { port: "70000", endpoint: /in, bogus: 1 } }`)],
    issues: [
      ["custom", "spec.webhook.in.port"],
      ["unrecognized_keys", "spec.webhook.in"],
    ],
  },
  {
    name: "a cron time zone that does not exist",
    docs: [source("s", `  cron: { tick: { schedule: "0 * * * *", timezone: Mars/Olympus } }`)],
    issues: [["invalid_value", "spec.cron.tick.timezone"]],
  },
  {
    name: "batch, debounce, rate limit and dedup values that cannot work",
    docs: [
      source("s", hook(9001)),
      trigger(
        "{ eventSource: s, event: in }",
        `sink: { uri: "http://127.0.0.1:9/" }, batch: { maxEvents: 0, maxWait: "-1s" }, debounce: { window: 0s },
        dedup: { window: "PT0S" }, delivery: { rateLimit: { perSecond: 0, burst: 0 } }`,
      ),
    ],
    issues: [
      ["too_small", "spec.subscribers.0.delivery.rateLimit.perSecond"],
      ["too_small", "spec.subscribers.0.delivery.rateLimit.burst"],
      ["too_small", "spec.subscribers.0.batch.maxEvents"],
      ["custom", "spec.subscribers.0.batch.maxWait"],
      ["custom", "spec.subscribers.0.debounce.window"],
      ["custom", "spec.subscribers.0.dedup.window"],
    ],
  },
  {
    name: "key expressions that do not compile, a reset cron that cannot run, ordering with batch",
    docs: [
      source("s", hook(9001)),
      `${H}\nkind: Trigger\nmetadata: { name: t }\nspec:\n  eventBus: default\n  inputs: { a: { eventSource: s, event: in }, b: { eventSource: s, event: in } }
  subscribers:
    - { condition: a, topic: out, dedup: { window: 5m, key: "data.(" }, debounce: { window: 1s, key: "data.x +" } }
    - { condition: a && b, topic: out, correlation: { reset: { cron: "61 * * * *" } } }
    - { condition: a, topic: out, ordering: { key: data.k }, batch: { maxEvents: 2, maxWait: 1s, key: "[" } }`,
    ],
    issues: [
      ["EXPRESSION_SYNTAX", "spec.subscribers.0.debounce.key"],
      ["EXPRESSION_SYNTAX", "spec.subscribers.0.dedup.key"],
      ["invalid_value", "spec.subscribers.1.correlation.reset.cron"],
      ["EXPRESSION_SYNTAX", "spec.subscribers.2.batch.key"],
      ["custom", "spec.subscribers.2.ordering"],
    ],
  },
  {
    name: "a source, a trigger, a Function deployed elsewhere and a sink ref to it: all fine",
    docs: [
      syncFn("remote"),
      source("s", hook(9001)),
      trigger(
        "{ eventSource: s, event: in }",
        "sink: { ref: { apiVersion: core.openfunction.io/v1beta2, kind: Function, name: remote } }",
      ),
    ],
  },
];

describe("check - validate and run share the checks of the whole manifest set", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-check-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(rows)("check - $name", async (row) => {
    const file = join(dir, `${row.name.replace(/\W+/g, "-")}.yaml`);
    await writeFile(file, row.docs.join("\n---\n"));
    const { issues, warnings } = await validateAll([file], { mode: row.mode ?? "validate" });
    expect(issues.map((i) => [i.code, i.path])).toEqual(row.issues ?? []);
    expect(warnings.map((i) => [i.code, i.path])).toEqual(row.warnings ?? []);
    for (const i of [...issues, ...warnings]) {
      expect(i.file).toBe(file);
      expect(i.docIndex).toBeTypeOf("number");
      expect(i.message.length).toBeGreaterThan(10);
    }
  });

  it("check - the entrypoints run one resource alone: a source elsewhere is no problem", async () => {
    const file = join(dir, "alone.yaml");
    await writeFile(file, trigger("{ eventSource: elsewhere, event: e }"));
    const { issues, warnings } = await validateAll([file], { peersElsewhere: true });
    expect([...issues, ...warnings]).toEqual([]);
  });
});
