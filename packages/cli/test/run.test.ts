/**
 * `ofevents run` start-up: a configuration error found at start stops it with a clear message and
 * a non-zero exit, before it says "running"; it never exits silently while nothing listens.
 */
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../src/index.js";

const bin = fileURLToPath(new URL("../bin/ofevents.js", import.meta.url));
const H = "apiVersion: events.openfunction.io/v1alpha1";

async function run(file: string): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(["run", "--log-format", "json", "--functions-port", "0", "-f", file], {
    out: (s) => (out += s),
    err: (s) => (err += s),
  });
  return { code, out, err };
}

describe("run - start-up errors stop the runner before it says running", () => {
  let dir: string;
  let busy: Server;
  let busyPort: number;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ofevents-run-"));
    busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((r) => busy.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Array<{ name: string; yaml: () => string; message: RegExp }> = [
    {
      name: "a secret that is neither in the manifests nor in the environment",
      yaml: () =>
        `${H}\nkind: EventSource\nmetadata: { name: hooks }\nspec:\n  eventBus: default\n  webhook: { in: { port: "0", endpoint: /in, authSecret: { name: no-such-secret-x1, key: token } } }`,
      message: /EventSource default\/hooks cannot start: event in \(webhook\): .*NO_SUCH_SECRET_X1_TOKEN/,
    },
    {
      name: "a webhook port already in use",
      yaml: () =>
        `${H}\nkind: EventSource\nmetadata: { name: hooks }\nspec:\n  eventBus: default\n  webhook: { in: { port: "${busyPort}", endpoint: /in } }`,
      message: /EventSource default\/hooks cannot start: event in \(webhook\): .*EADDRINUSE/,
    },
    {
      name: "a trigger naming an EventSource that is not there",
      yaml: () =>
        `${H}\nkind: Trigger\nmetadata: { name: t }\nspec:\n  eventBus: default\n  inputs: { a: { eventSource: nope, event: e } }\n  subscribers: [{ condition: a, topic: out }]`,
      message: /spec\.inputs\.a\.eventSource: no EventSource default\/nope/,
    },
  ];

  it.each(cases)("run - $name", async (c) => {
    const file = join(dir, `${c.name.replace(/\W+/g, "-")}.yaml`);
    await writeFile(file, c.yaml());
    const r = await run(file);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(c.message);
    expect(r.out).not.toMatch(/"msg":"running"/);
  });

  it("run - stays up while nothing listens, until a signal; exits 0", async () => {
    await writeFile(join(dir, "fn.mjs"), "export default async () => {};\n");
    const file = join(dir, "quiet.yaml");
    // One async function on the in-process bus: no socket, no timer of its own.
    await writeFile(
      file,
      `apiVersion: core.openfunction.io/v1beta1\nkind: Function\nmetadata:\n  name: quiet\n  annotations: { ofevents.io/module: ./fn.mjs }\nspec: { serving: { runtime: async, inputs: [{ name: in, topic: nothing }] } }`,
    );
    const child = spawn(process.execPath, [bin, "run", "--log-format", "json", "--functions-port", "0", "-f", file], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const early = await Promise.race([
      exited.then((code) => `exited ${code}`),
      new Promise<string>((r) => {
        const t = setInterval(() => {
          if (out.includes('"msg":"running"')) {
            clearInterval(t);
            setTimeout(() => r("alive"), 1_000);
          }
        }, 20);
      }),
    ]);
    expect(early, out).toBe("alive");
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 30_000);
});
