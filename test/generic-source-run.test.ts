// `ofevents run` with a generic event, for real: the command prints the event's ingest URL (and
// K_CE_OVERRIDES) at start; a plain Node process given those as K_SINK and K_CE_OVERRIDES POSTs
// CloudEvents there; a Trigger on the bus delivers every one, with the overrides, to a sink served
// by this test on 127.0.0.1.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OFEVENTS_BIN } from "./helpers/ofevents.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";

/** The sender: plain Node, no import of this project; applies K_CE_OVERRIDES as a Knative source does. */
const SENDER = String.raw`
const overrides = JSON.parse(process.env.K_CE_OVERRIDES || "{}").extensions || {};
(async () => {
  for (let i = 0; i < Number(process.env.N); i++) {
    const ev = { specversion: "1.0", id: "run-" + i, source: "/plain", type: "com.example.run", ...(i % 2 ? overrides : {}), data: { i } };
    for (let attempt = 1; ; attempt++) {
      const res = await fetch(process.env.K_SINK, { method: "POST", headers: { "content-type": "application/cloudevents+json" }, body: JSON.stringify(ev) });
      await res.text();
      if (res.ok) break;
      if (attempt === 50) throw new Error("gave up: " + res.status);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
})().catch((e) => { process.stderr.write(String(e)); process.exit(1); });
`;

interface Received {
  id: string;
  team: string | undefined;
  data: unknown;
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

describe("generic-source - ofevents run prints the ingest URL and a plain process sends through it", () => {
  let dir: string;
  let sinkServer: Server;
  let run: ChildProcess | undefined;
  let stdout = "";
  let stderr = "";
  const received: Received[] = [];

  beforeAll(async () => {
    sinkServer = createServer((req, res) => {
      void readAll(req).then((body) => {
        const structured = (req.headers["content-type"] ?? "").startsWith("application/cloudevents+json");
        const ev = structured ? (JSON.parse(body) as Record<string, unknown>) : undefined;
        received.push({
          id: String(ev?.["id"] ?? req.headers["ce-id"]),
          team: (ev?.["team"] as string | undefined) ?? (req.headers["ce-team"] as string | undefined),
          data: ev === undefined ? JSON.parse(body) : ev["data"],
        });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => sinkServer.listen(0, "127.0.0.1", r));
    const sinkPort = (sinkServer.address() as AddressInfo).port;
    const ingestPort = await freePort();
    dir = await mkdtemp(join(tmpdir(), "ofevents-generic-"));
    await writeFile(
      join(dir, "resources.yaml"),
      `apiVersion: events.openfunction.io/v1alpha1
kind: EventSource
metadata:
  name: apps
spec:
  eventBus: default
  generic:
    app:
      port: "${ingestPort}"
      subject: { deployment: my-app }
      ceOverrides: { extensions: { team: platform } }
---
apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata:
  name: forward
spec:
  eventBus: default
  inputs:
    app: { eventSource: apps, event: app }
  subscribers:
    - condition: app
      sink: { uri: "http://127.0.0.1:${sinkPort}/" }
`,
    );
    run = spawn(
      process.execPath,
      [
        OFEVENTS_BIN,
        "run",
        "-f",
        dir,
        "--log-format",
        "pretty",
        "--host",
        "127.0.0.1",
        "--functions-port",
        "0",
        "--ui-port",
        "off",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    run.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
    run.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    await waitFor(() => stdout.includes("Listening:") && stdout.includes("generic default/apps/app"), {
      timeoutMs: 60_000,
      message: () => `ofevents run printed no ingest URL\nstdout: ${stdout}\nstderr: ${stderr}`,
    });
  }, 90_000);

  afterAll(async () => {
    if (run !== undefined && run.exitCode === null && run.signalCode === null) {
      const exited = new Promise((r) => run!.once("close", r));
      run.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (run.exitCode === null && run.signalCode === null) run.kill("SIGKILL");
    }
    await new Promise((r) => sinkServer?.close(r));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }, 30_000);

  it("generic-source - the printed K_SINK and K_CE_OVERRIDES take a plain process's events to the trigger's sink", async () => {
    const line = stdout.split("\n").find((l) => l.includes("generic default/apps/app"))!;
    const m = /K_CE_OVERRIDES='([^']*)'\)\s+(http:\/\/\S+)/.exec(line);
    expect(m, line).not.toBeNull();
    const [, overrides, url] = m!;
    expect(JSON.parse(overrides!)).toEqual({ extensions: { team: "platform" } });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/app$/);

    const N = 12;
    const sender = spawn(process.execPath, ["-e", SENDER], {
      env: { PATH: process.env["PATH"] ?? "", K_SINK: url!, K_CE_OVERRIDES: overrides!, N: String(N) },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let senderErr = "";
    sender.stderr!.on("data", (c: Buffer) => (senderErr += c.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => sender.kill("SIGKILL"), 30_000);
      sender.once("close", (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(code, senderErr).toBe(0);
    await waitFor(() => new Set(received.map((r) => r.id)).size >= N, {
      timeoutMs: 20_000,
      message: () => `the sink got ${received.length} of ${N}\n${stderr}`,
    });
    const ids = [...new Set(received.map((r) => r.id))].sort();
    expect(ids).toEqual(Array.from({ length: N }, (_, i) => `run-${i}`).sort());
    // Also the events the sender sent without the overrides (even i) carry them: the source applied them.
    for (const r of received) {
      expect(r.team).toBe("platform");
      expect(r.data).toEqual({ i: Number(r.id.slice(4)) });
    }
  }, 60_000);
});
