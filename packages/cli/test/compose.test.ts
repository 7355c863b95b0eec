/**
 * What an `eventBus` name means, decided in one place for `ofevents run` and the entrypoints: a
 * name no loaded bus defines is an in-memory bus where every peer runs in the process (`run`) and
 * a clear error where the resource runs alone (`eventsource` / `trigger`); a bus that cannot serve
 * where the peers run (memory alone, dapr without a sidecar) is refused with the reason.
 */
import { createServer } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  OfEventsError,
  createExpressionEngine,
  createLogger,
  silentLogger,
  type ExpressionEngine,
} from "@ofevents/core";
import { freePort } from "../../../test/helpers/server.js";
import { startEmbedded, startSingle } from "../src/index.js";

const H = "apiVersion: events.openfunction.io/v1alpha1";
const source = (bus: string): string =>
  `${H}\nkind: EventSource\nmetadata: { name: hooks }\nspec:\n  eventBus: ${bus}\n  webhook: { in: { port: "0", endpoint: /in } }`;
const trigger = (bus: string): string =>
  `${H}\nkind: Trigger\nmetadata: { name: fwd }\nspec:\n  eventBus: ${bus}\n  inputs: { i: { eventSource: hooks, event: in } }\n  subscribers: [{ condition: i, topic: out }]`;

/** Whether a TCP port can be bound again: a start that failed released what it opened. */
async function free(port: number): Promise<boolean> {
  const s = createServer();
  return new Promise((resolve) => {
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

describe("compose - one rule for an eventBus name in run and in the entrypoints", () => {
  let dir: string;
  let n = 0;
  const file = async (...docs: string[]): Promise<string> => {
    const f = join(dir, `m${n++}.yaml`);
    await writeFile(f, docs.join("\n---\n"));
    return f;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-compose-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("compose - run: a bus name no manifest defines is an in-memory bus, and the runner says so", async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "info", write: (l) => void lines.push(l) });
    const embedded = await startEmbedded({
      paths: [await file(source("nowhere"), trigger("nowhere"))],
      logger,
      functionsPort: 0,
    });
    try {
      expect([...embedded.buses.keys()]).toEqual(["memory:nowhere"]);
      expect(embedded.buses.get("memory:nowhere")?.driver).toBe("memory");
      expect(lines.some((l) => l.includes('no EventBus \\"nowhere\\" loaded: using an in-memory bus'))).toBe(true);
    } finally {
      await embedded.stop();
    }
  });

  it("compose - run: the Triggers' expressions go through the engine given, when one is", async () => {
    const real = createExpressionEngine();
    const compiled: string[] = [];
    const engine: ExpressionEngine = {
      ...real,
      compile: (e) => {
        compiled.push(e);
        return real.compile(e);
      },
    };
    const filtered = trigger("nowhere").replace("event: in }", 'event: in, filter: "data.n > 1" }');
    const embedded = await startEmbedded({
      paths: [await file(source("nowhere"), filtered)],
      logger: silentLogger(),
      functionsPort: 0,
      engine,
    });
    try {
      expect(compiled).toContain("data.n > 1");
    } finally {
      await embedded.stop();
    }
  });

  for (const kind of ["EventSource", "Trigger"] as const) {
    it(`compose - ${kind} entrypoint: a bus name no manifest defines is an error that says why`, async () => {
      const healthPort = await freePort();
      const err = await startSingle({
        kind,
        paths: [await file(kind === "EventSource" ? source("nowhere") : trigger("nowhere"))],
        logger: silentLogger(),
        host: "127.0.0.1",
        healthHost: "127.0.0.1",
        healthPort,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OfEventsError);
      expect((err as Error).message).toBe(
        'EventBus "nowhere" is not in the manifests (nor a ClusterEventBus of that name): the resource runs alone, and an in-memory bus would reach none of its peers',
      );
      expect(await free(healthPort)).toBe(true);
    });

    it(`compose - ${kind} entrypoint: a memory bus is refused (it would reach no peer)`, async () => {
      const bus = `${H}\nkind: EventBus\nmetadata: { name: mem }\nspec: { memory: {} }`;
      const err = await startSingle({
        kind,
        paths: [await file(bus, kind === "EventSource" ? source("mem") : trigger("mem"))],
        logger: silentLogger(),
        host: "127.0.0.1",
        healthHost: "127.0.0.1",
        healthPort: 0,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OfEventsError);
      expect((err as Error).message).toMatch(/^EventBus default\/mem is a memory bus, which lives inside one process/);
    });
  }

  it("compose - run: a dapr bus is refused with the reason (run starts no sidecar)", async () => {
    const bus = `${H}\nkind: ClusterEventBus\nmetadata: { name: d }\nspec: { dapr: { type: pubsub.redis } }`;
    const err = await startEmbedded({
      paths: [await file(bus, source("d"), trigger("d"))],
      logger: silentLogger(),
      functionsPort: 0,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OfEventsError);
    expect((err as Error).message).toMatch(/^ClusterEventBus d is a dapr bus, reached through a Dapr sidecar/);
  });
});
