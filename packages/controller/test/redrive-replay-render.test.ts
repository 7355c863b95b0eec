import { describe, expect, it } from "vitest";
import { API_VERSION, redriveSchema, replaySchema, type EventBus, type Trigger } from "@ofevents/core";
import {
  describeResult,
  operationArgs,
  operationJobName,
  parseResult,
  renderOperation,
  resolveHistoryTime,
} from "../src/index.js";

const created = new Date("2026-12-05T12:00:00.000Z");

const bus: EventBus = {
  apiVersion: API_VERSION,
  kind: "EventBus",
  metadata: { name: "default", namespace: "shop" },
  spec: { jetstream: { url: "nats://nats:4222" } },
};

const trigger: Trigger = {
  apiVersion: API_VERSION,
  kind: "Trigger",
  metadata: { name: "orders", namespace: "shop" },
  spec: {
    eventBus: "default",
    inputs: { a: { eventSource: "src", event: "a" } },
    subscribers: [{ condition: "a", sink: { uri: "http://fn.shop.svc.cluster.local" } }],
  },
};

function redrive(spec: Record<string, unknown>) {
  return redriveSchema.parse({
    apiVersion: API_VERSION,
    kind: "Redrive",
    metadata: { name: "fix", namespace: "shop" },
    spec: { trigger: "orders", ...spec },
  });
}

function replay(spec: Record<string, unknown>) {
  return replaySchema.parse({
    apiVersion: API_VERSION,
    kind: "Replay",
    metadata: { name: "again", namespace: "shop" },
    spec: { trigger: "orders", ...spec },
  });
}

describe("redrive/replay operations - rendered Jobs", () => {
  it("redrive - the Job runs `ofevents redrive` on the Trigger's manifests with each option, once, and reports through its termination message", () => {
    const op = redrive({ subscriber: 1, limit: 5, filter: "oferrorcode = 503", dryRun: true });
    const { configMap, job } = renderOperation({
      operation: op,
      owner: { kind: "Redrive", metadata: { name: "fix", uid: "u-1" } },
      trigger,
      bus: { resource: bus, key: "EventBus:shop/default", spec: bus.spec, warning: undefined },
      created,
      options: { image: "ofevents/ofevents:1" },
    });
    expect(job.metadata.name).toBe("redrive-fix");
    expect(job.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Redrive", name: "fix", uid: "u-1" });
    expect(job.spec.backoffLimit).toBe(0);
    expect(job.spec.template.spec.restartPolicy).toBe("Never");
    const c = job.spec.template.spec.containers[0]!;
    expect(c.image).toBe("ofevents/ofevents:1");
    expect(c.args).toEqual([
      "redrive",
      "-f",
      "/etc/ofevents",
      "--trigger",
      "shop/orders",
      "--subscriber",
      "1",
      "--limit",
      "5",
      "--filter",
      "oferrorcode = 503",
      "--dry-run",
      "--json",
      "--log-format",
      "json",
      "--log-level",
      "info",
      "--result-file",
      "/dev/termination-log",
    ]);
    expect(c.terminationMessagePolicy).toBe("FallbackToLogsOnError");
    expect(c.livenessProbe).toBeUndefined();
    expect(job.spec.template.spec.volumes).toContainEqual({ name: "config", configMap: { name: "redrive-fix" } });
    expect(Object.keys(configMap.data).sort()).toEqual(["eventbus.yaml", "trigger.yaml"]);
    expect(configMap.data["trigger.yaml"]).toContain("name: orders");
    expect(configMap.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Redrive", name: "fix" });
  });

  it("replay - durations count back from the Replay's creation, so a Job run later replays the same range", () => {
    expect(resolveHistoryTime("2h", created)).toBe("2026-12-05T10:00:00.000Z");
    expect(resolveHistoryTime("2026-12-05T09:30:00+01:00", created)).toBe("2026-12-05T08:30:00.000Z");
    const args = operationArgs(replay({ from: "90m", to: "30m" }), created);
    expect(args.slice(0, 9)).toEqual([
      "replay",
      "-f",
      "/etc/ofevents",
      "--trigger",
      "shop/orders",
      "--from",
      "2026-12-05T10:30:00.000Z",
      "--to",
      "2026-12-05T11:30:00.000Z",
    ]);
    expect(args).not.toContain("--dry-run");
  });

  it("replay - a spec that is not a time or a duration is refused by the schema", () => {
    expect(() => replay({ from: "yesterday" })).toThrow(/RFC 3339/);
    expect(() => redrive({ limit: 0 })).toThrow();
    expect(() => redrive({ extra: true })).toThrow();
  });

  it("redrive/replay - job names are DNS labels, cut and hashed when too long", () => {
    expect(operationJobName("Replay", "again")).toBe("replay-again");
    const long = operationJobName("Redrive", "x".repeat(80));
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^redrive-x+-[0-9a-f]{8}$/);
  });

  it("redrive/replay - the termination message is read as the verb's result, or kept as the reason", () => {
    expect(parseResult('{"delivered":3,"deadLettered":1}\n')).toEqual({ delivered: 3, deadLettered: 1 });
    expect(parseResult("error: no Trigger shop/x")).toBeUndefined();
    expect(parseResult("{not json")).toBeUndefined();
    expect(parseResult(undefined)).toBeUndefined();
    expect(
      describeResult("Redrive", { matched: 4, delivered: 3, deadLettered: 1, read: 6, settled: 2, orphaned: 0 }, false),
    ).toBe(
      "3 delivered, 1 dead-lettered again, of 4 matching dead letter(s) (6 read, 2 settled earlier, 0 of no subscriber)",
    );
    expect(describeResult("Replay", { replayed: 5, read: 7, complete: false }, false)).toContain(
      "5 event(s) replayed (7 read)",
    );
    expect(describeResult("Replay", { replayed: 5, read: 7, complete: false }, false)).toContain(
      "NOT all finished in time",
    );
  });
});
