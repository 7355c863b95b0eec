/**
 * End to end: `ofevents run` on examples/quickstart as a child process, driven over HTTP. The
 * quickstart's functions log what they receive; the test reads the JSON log lines.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { waitFor } from "./helpers/wait.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = `${root}packages/cli/bin/ofevents.js`;
const WEBHOOK = "http://127.0.0.1:12000/orders";

interface LogLine {
  msg: string;
  fn?: string;
  received?: Record<string, unknown>;
  [k: string]: unknown;
}

describe("quickstart - ofevents run end to end", () => {
  let child: ChildProcess;
  const lines: LogLine[] = [];
  let stderr = "";
  let exit: Promise<number | null>;

  const received = (fn: string) => lines.filter((l) => l.fn === fn).map((l) => l.received!);
  /** What a wait names on timeout: `what`, and the stderr of the run so far. */
  const withStderr = (what: string) => () => `${what}; stderr: ${stderr}`;
  const post = async (body: string, headers: Record<string, string>) => {
    const res = await request(WEBHOOK, { method: "POST", body, headers });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    if (!existsSync(`${root}packages/cli/dist/main.js`)) throw new Error("packages are not built: run `npm run build`");
    child = spawn(
      process.execPath,
      [bin, "run", "-f", "examples/quickstart", "--log-format", "json", "--functions-port", "0"],
      {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    exit = new Promise((r) => child.on("exit", (code) => r(code)));
    let buf = "";
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString("utf8");
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim() !== "") lines.push(JSON.parse(line) as LogLine);
      }
    });
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    await waitFor(() => lines.some((l) => l.msg === "running"), {
      timeoutMs: 15_000,
      intervalMs: 20,
      message: withStderr("the runner to start"),
    });
  });

  afterAll(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });

  it("quickstart - filters, joins, delivers and dead-letters exactly as the README says", async () => {
    const r1 = await post(JSON.stringify({ id: "o-1", amount: 250 }), { "content-type": "application/json" });
    const r2 = await post(JSON.stringify({ id: "o-2", amount: 5 }), { "content-type": "application/json" });
    const r3 = await post(JSON.stringify({ id: "o-3", amount: 120 }), {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": "order-3",
      "ce-source": "/shop",
      "ce-type": "com.example.order.created",
    });
    expect([r1.status, r2.status, r3.status]).toEqual([200, 200, 200]);
    const id1 = (r1.body["ids"] as string[])[0]!;
    expect(r3.body["ids"]).toEqual(["order-3"]);

    const bad = await request(WEBHOOK, {
      method: "POST",
      body: "{oops",
      headers: { "content-type": "application/json" },
    });
    expect(bad.statusCode).toBe(400);
    await bad.body.text();

    await waitFor(
      () =>
        received("big-orders").length === 2 &&
        received("dead-letters").length === 2 &&
        received("batcher").length === 2,
      { timeoutMs: 20_000, intervalMs: 20, message: withStderr("every function to receive its events") },
    );
    // Give stray extra deliveries a chance to show up before counting exactly.
    await new Promise((r) => setTimeout(r, 500));

    const big = received("big-orders");
    expect(big.map((e) => (e["data"] as { id: string }).id).sort()).toEqual(["o-1", "o-3"]);
    const e1 = big.find((e) => e["id"] === id1)!;
    expect(e1).toMatchObject({
      specversion: "1.0",
      source: "/apis/v1/namespaces/default/eventsources/orders",
      type: "io.openfunction.events.webhook",
      subject: "created",
      datacontenttype: "application/json",
      data: { id: "o-1", amount: 250 },
    });
    expect(big.find((e) => e["id"] === "order-3")).toMatchObject({
      source: "/shop",
      type: "com.example.order.created",
    });

    // The flaky sink saw each big order 3 times (retry: 2), then the dead-letter sink got it.
    expect(received("flaky")).toHaveLength(6);
    const dead = received("dead-letters");
    expect(dead.map((e) => e["id"]).sort()).toEqual([id1, "order-3"].sort());
    for (const d of dead) {
      expect(String(d["oferrorreason"])).toContain("503");
      // Percent-decoded by the function host, as the CloudEvents HTTP binding requires.
      expect(String(d["oferrorreason"])).toMatch(/\/default\/flaky answered 503: \{"error":/);
      expect(String(d["ofdeliveries"])).toBe("3");
    }

    // Each big order was joined with one clock tick and published to the async function.
    const batches = received("batcher");
    expect(batches.map((e) => (e["data"] as { order: { id: string } }).order.id).sort()).toEqual(["o-1", "o-3"]);
    for (const b of batches) {
      expect(typeof (b["data"] as { tickedAt: unknown }).tickedAt).toBe("string");
      // The pair is the order and a tick; whichever arrived second is delivered, the other joined.
      const pair = [String(b["id"]), String(b["ofjoined"])];
      expect(pair.filter((id) => id.startsWith("default/clock/tick@"))).toHaveLength(1);
    }

    // The framework's own log records about an event carry its CloudEvent id, on every step.
    for (const id of [id1, "order-3"]) {
      const about = lines.filter((l) => l.fn === undefined && l["id"] === id);
      const msgs = new Set(about.map((l) => l.msg));
      for (const m of ["delivered", "retrying delivery", "dead-lettered"]) expect(msgs, `${id}: ${m}`).toContain(m);
      expect(about.filter((l) => l.msg === "retrying delivery")).toHaveLength(2);
    }

    // The small order was filtered out everywhere.
    const all = [...big, ...received("flaky"), ...dead, ...batches];
    expect(all.some((e) => JSON.stringify(e).includes('"o-2"'))).toBe(false);
  });

  it("quickstart - SIGTERM shuts down gracefully with exit code 0", async () => {
    child.kill("SIGTERM");
    expect(await exit).toBe(0);
    expect(lines.some((l) => l.msg === "stopped")).toBe(true);
  });
});
