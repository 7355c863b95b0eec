/**
 * "Where is event X?" end to end: `ofevents run --metrics-port` as a process, events posted to its
 * webhook, and `ofevents events <id>` (another process) asking it what happened to each.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_VERSION } from "@ofevents/core";
import { Sink } from "../packages/trigger/test/support.js";
import { OFEVENTS_BIN, OfeventsProcess } from "./helpers/ofevents.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

const exec = promisify(execFile);

describe("journal - ofevents events <id> against ofevents run", () => {
  let dir: string;
  let sink: Sink;
  let dls: Sink;
  let run: OfeventsProcess;
  let port: number;
  let metricsPort: number;

  const events = async (...args: string[]) => {
    const r = await exec(process.execPath, [OFEVENTS_BIN, "events", ...args, "--port", String(metricsPort)]).catch(
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    return { code: "code" in r ? r.code : 0, stdout: r.stdout, stderr: r.stderr };
  };
  const post = async (body: unknown): Promise<string> => {
    const res = await fetch(`http://127.0.0.1:${port}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return ((await res.json()) as { ids: string[] }).ids[0]!;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-journal-"));
    sink = await new Sink().start();
    dls = await new Sink().start();
    sink.status = () => 503;
    port = await freePort();
    metricsPort = await freePort();
    await writeFile(
      join(dir, "flow.yaml"),
      `apiVersion: ${API_VERSION}
kind: EventSource
metadata: { name: shop }
spec:
  eventBus: default
  webhook:
    orders: { port: "${port}", endpoint: /orders, method: POST }
    audits: { port: "${port}", endpoint: /audits, method: POST }
---
apiVersion: ${API_VERSION}
kind: Trigger
metadata: { name: billing }
spec:
  eventBus: default
  inputs:
    order: { eventSource: shop, event: orders, filter: "data.amount >= 100" }
    audit: { eventSource: shop, event: audits }
  subscribers:
    - condition: order
      sink: { uri: "${sink.url}" }
      deadLetterSink: { uri: "${dls.url}" }
      delivery: { retry: 1, backoffDelay: 10ms }
    - condition: order && audit
      sink: { uri: "${dls.url}" }
`,
    );
    run = await OfeventsProcess.start({
      command: "run",
      files: [dir],
      name: "ofevents run (journal)",
      args: ["--metrics-port", String(metricsPort)],
    });
  }, 60_000);

  afterAll(async () => {
    await run?.stop();
    await sink?.stop();
    await dls?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("journal - a filtered event names its filter; a failing one shows its retries and dead letter with the reason; a join shows the wait", async () => {
    const small = await post({ amount: 5 });
    const big = await post({ amount: 250 });
    await waitFor(() => dls.received.length >= 1, { timeoutMs: 20_000, message: () => run.output() });

    const s = await events(small);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain(`event ${small}`);
    expect(s.stdout).toMatch(/eventsource default\/shop\s+received/);
    expect(s.stdout).toMatch(/trigger default\/billing\s+filtered out\s+input=order filter=data\.amount >= 100/);

    const b = await events(big);
    expect(b.stdout).toMatch(/fired\s+subscriber=0 condition=order/);
    expect(b.stdout).toMatch(/retried\s+subscriber=0 .*attempt=1 reason=.*503/);
    expect(b.stdout).toMatch(/dead-lettered\s+subscriber=0 .*reason=.*503/);
    // Subscriber 1 (order && audit) holds it until an audit comes.
    expect(b.stdout).toMatch(/waiting for a join\s+subscriber=1 condition=order && audit input=order/);

    const json = JSON.parse((await events(big, "--json")).stdout) as { id: string; steps: Array<{ step: string }> };
    expect(json.id).toBe(big);
    expect(json.steps.map((x) => x.step)).toContain("dead-lettered");

    const list = await events();
    expect(list.stdout.split("\n")[0]).toContain(big);

    const unknown = await events("no-such-event");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no event no-such-event in the journal");
  });
});
