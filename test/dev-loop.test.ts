/**
 * The dev loop: `ofevents run --watch` as a process. A changed manifest (a filter) and a changed
 * Function module take effect without a restart; events posted through a reload are not lost
 * (each one the webhook accepted is delivered); a broken manifest keeps the running set.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OfeventsProcess } from "./helpers/ofevents.js";
import { RecordingSink } from "./helpers/sink.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

const API = "events.openfunction.io/v1alpha1";

function manifests(port: number, filter: string): string {
  return `apiVersion: ${API}
kind: EventSource
metadata: { name: orders }
spec:
  eventBus: default
  webhook:
    created: { port: "${port}", endpoint: /orders, method: POST }
---
apiVersion: ${API}
kind: Trigger
metadata: { name: orders }
spec:
  eventBus: default
  inputs:
    order: { eventSource: orders, event: created, filter: "${filter}" }
  subscribers:
    - condition: order
      sink: { ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: forward } }
---
apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata:
  name: forward
  annotations: { ofevents.io/module: ./forward.mjs }
spec:
  version: v1.0.0
  image: example/forward:latest
  serving: { runtime: knative }
`;
}

/** The function forwards each event to the recorder, saying which version of itself ran. */
function forwardModule(version: number): string {
  return `export default async function forward(event) {
  const res = await fetch(process.env.RECORDER, {
    method: "POST",
    headers: { "ce-id": event.id, "content-type": "application/json" },
    body: JSON.stringify({ version: ${version}, amount: event.data.amount }),
  });
  if (!res.ok) throw new Error("recorder answered " + res.status);
  return {};
}
`;
}

describe("run --watch", () => {
  let dir: string;
  let port: number;
  let proc: OfeventsProcess;
  let recorder: RecordingSink;
  const reloads: string[] = [];
  const lines: string[] = [];
  let seq = 0;

  /** Posts one order until the webhook accepts it (503 or refused while a reload runs); its id. */
  async function post(amount: number): Promise<string> {
    const id = `order-${++seq}`;
    for (let attempt = 0; attempt < 200; attempt++) {
      try {
        const res = await request(`http://127.0.0.1:${port}/orders`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "ce-id": id,
            "ce-specversion": "1.0",
            "ce-type": "order",
            "ce-source": "/test",
          },
          body: JSON.stringify({ amount }),
        });
        await res.body.dump();
        if (res.statusCode === 200) return id;
      } catch {
        // refused in the gap between stop and start
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`order ${id} never accepted`);
  }

  const delivered = (): Array<{ id: string; version: number; amount: number }> =>
    recorder.received.map((r) => ({
      id: r.id,
      ...(JSON.parse(r.body.toString("utf8")) as { version: number; amount: number }),
    }));

  async function change(file: string, text: string): Promise<void> {
    const before = reloads.length;
    await writeFile(join(dir, file), text);
    await waitFor(() => reloads.length > before, {
      timeoutMs: 15_000,
      message: () => `a reload after ${file}:\n${lines.slice(-10).join("\n")}`,
    });
  }

  beforeAll(async () => {
    recorder = await RecordingSink.start();
    dir = await mkdtemp(join(tmpdir(), "ofevents-dev-loop-"));
    port = await freePort();
    await writeFile(join(dir, "flow.yaml"), manifests(port, "data.amount >= 100"));
    await writeFile(join(dir, "forward.mjs"), forwardModule(1));
    proc = await OfeventsProcess.start({
      command: "run",
      files: [dir],
      name: "run --watch",
      args: ["--watch", "--ui-port", "off"],
      env: { RECORDER: recorder.url },
      onLine: (line) => {
        lines.push(line);
        if (line.includes('"msg":"reloaded"') || line.includes('"msg":"not reloaded')) reloads.push(line);
      },
    });
  });

  afterAll(async () => {
    await proc?.stop();
    await recorder?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("applies a changed filter without a restart", async () => {
    const small = await post(50);
    const big = await post(150);
    await waitFor(() => delivered().some((d) => d.id === big));
    expect(delivered().some((d) => d.id === small)).toBe(false);
    await change("flow.yaml", manifests(port, "data.amount >= 10"));
    expect(reloads.at(-1)).toContain('"msg":"reloaded"');
    const nowPasses = await post(50);
    await waitFor(() => delivered().some((d) => d.id === nowPasses), { message: "the small order after the reload" });
  });

  it("imports a changed Function module anew", async () => {
    await change("forward.mjs", forwardModule(2));
    const id = await post(500);
    await waitFor(() => delivered().find((d) => d.id === id)?.version === 2, { message: "version 2 of the function" });
  });

  it("loses nothing the webhook accepted while it reloads", async () => {
    // Orders go out one after another from before the change until well after the reload.
    const ids: string[] = [];
    let reloaded = -1;
    const sending = (async () => {
      for (let i = 0; i < 2_000 && (reloaded < 0 || ids.length < reloaded + 20); i++) ids.push(await post(200 + i));
    })();
    await waitFor(() => ids.length >= 10);
    await change("flow.yaml", manifests(port, "data.amount >= 5"));
    reloaded = ids.length;
    await sending;
    expect(reloaded).toBeGreaterThanOrEqual(10);
    expect(ids.length).toBeGreaterThanOrEqual(reloaded + 20);
    await waitFor(() => ids.every((id) => delivered().some((d) => d.id === id)), {
      timeoutMs: 20_000,
      message: () => `missing: ${ids.filter((id) => !delivered().some((d) => d.id === id)).join(", ")}`,
    });
    for (const id of ids) expect(delivered().filter((d) => d.id === id)).toHaveLength(1);
  });

  it("reloads nothing when a file that is not a manifest changes (a test cases file)", async () => {
    const before = lines.filter((l) => l.includes("files changed")).length;
    await writeFile(join(dir, "orders.cases.yaml"), "cases: []\n");
    await waitFor(() => lines.filter((l) => l.includes("files changed")).length > before, {
      timeoutMs: 15_000,
      message: "the change seen",
    });
    expect(lines.filter((l) => l.includes("files changed")).at(-1)).toContain("did not: not reloaded");
    const reloaded = reloads.length;
    const id = await post(300);
    await waitFor(() => delivered().some((d) => d.id === id));
    expect(reloads.length).toBe(reloaded);
  });

  it("keeps the running set when the changed manifests are broken, and says why", async () => {
    await change("flow.yaml", manifests(port, "data.amount >= ").replace("kind: Trigger", "kind: Trigger\nbogus: [1"));
    expect(reloads.at(-1)).toContain("not reloaded");
    const id = await post(700);
    await waitFor(() => delivered().some((d) => d.id === id), { message: "delivery by the set still running" });
  });
});
