/**
 * Shutdown of `ofevents run` on the in-memory bus: the webhook stops accepting (503 with
 * Retry-After), what the bus already took is finished within a bounded time, and every event
 * that could not be finished is reported (count and ids, at warn) — never dropped silently.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbedded } from "@ofevents/cli";
import { createLogger } from "@ofevents/core";
import { freePorts } from "./helpers/server.js";
import { RecordingSink } from "./helpers/sink.js";
import { waitFor } from "./helpers/wait.js";

const H = "apiVersion: events.openfunction.io/v1alpha1";

describe("shutdown - in-memory bus", () => {
  let dir: string;
  let sink: RecordingSink;
  let sinkUrl: string;
  let seen: string[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-shutdown-"));
    // A slow sink: 300 ms per event.
    sink = await RecordingSink.start({ delayMs: 300 });
    sinkUrl = sink.url;
    seen = sink.ids;
  });
  afterAll(async () => {
    await sink.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const post = (port: number, id: string): Promise<Response> =>
    fetch(`http://127.0.0.1:${port}/in`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": id,
        "ce-source": "/t",
        "ce-type": "t",
      },
      body: "{}",
    });

  it("shutdown - events the webhook answered 2xx for are delivered before exit; new requests get 503", async () => {
    const port = (await freePorts(1))[0]!;
    const file = join(dir, "drain.yaml");
    await writeFile(
      file,
      `${H}
kind: EventSource
metadata: { name: hooks }
spec: { eventBus: default, webhook: { in: { port: "${port}", endpoint: /in } } }
---
${H}
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { a: { eventSource: hooks, event: in } }
  subscribers: [{ condition: a, sink: { uri: "${sinkUrl}" }, delivery: { concurrency: 1 } }]
`,
    );
    const lines: string[] = [];
    const embedded = await startEmbedded({
      paths: [file],
      logger: createLogger({ level: "info", format: "json", write: (l) => void lines.push(l) }),
      functionsPort: 0,
    });
    const ids = Array.from({ length: 6 }, (_, i) => `drain-${i}`);
    for (const id of ids) expect((await post(port, id)).status).toBe(200);
    const stopped = embedded.stop();
    const late = await post(port, "late");
    expect(late.status).toBe(503);
    expect(late.headers.get("retry-after")).toMatch(/^\d+$/);
    await stopped;
    expect(seen.filter((id) => id.startsWith("drain-")).sort()).toEqual(ids);
    expect(lines.some((l) => l.includes("not finished at shutdown"))).toBe(false);
  }, 30_000);

  it("shutdown - events pending in a join are reported with their ids when the runner stops", async () => {
    const port = (await freePorts(1))[0]!;
    const file = join(dir, "pending.yaml");
    await writeFile(
      file,
      `${H}
kind: EventSource
metadata: { name: hooks }
spec:
  eventBus: default
  webhook: { in: { port: "${port}", endpoint: /in }, other: { port: "${port}", endpoint: /other } }
---
${H}
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs: { a: { eventSource: hooks, event: in }, b: { eventSource: hooks, event: other } }
  subscribers: [{ condition: a && b, sink: { uri: "${sinkUrl}" } }]
`,
    );
    const lines: string[] = [];
    const embedded = await startEmbedded({
      paths: [file],
      logger: createLogger({ level: "info", format: "json", write: (l) => void lines.push(l) }),
      functionsPort: 0,
      drainTimeoutMs: 500,
    });
    const abandoned: string[] = [];
    for (const bus of embedded.buses.values()) bus.events.on("abandoned", (e) => void abandoned.push(e.id));
    const ids = ["p-1", "p-2", "p-3"];
    for (const id of ids) expect((await post(port, id)).status).toBe(200);
    await waitFor(() => embedded.triggers[0]!.pending() === 3, { message: "three events pending in the join" });
    await embedded.stop();
    expect([...new Set(abandoned)].sort()).toEqual(ids);
    const warning = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => String(l["msg"]).includes("not finished at shutdown"));
    expect(warning?.["level"]).toBe(40); // warn
    expect((warning?.["ids"] as string[]).sort()).toEqual(ids);
  }, 30_000);
});
