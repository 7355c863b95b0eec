/**
 * Runs the `ofevents` command as a child process the way it runs in production: `ofevents run`
 * (embedded, every resource of the files in one process) or the container entrypoints
 * `ofevents eventsource` / `ofevents trigger`. Output is always drained (a full pipe would stall
 * the child) and its notable lines kept for failure messages; start() resolves once the process is
 * ready: the "running" log line for `run`, `GET /readyz` answering 200 for the entrypoints.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { setTimeout as delay } from "node:timers/promises";
import { freePort, LogTail } from "./server.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
/** The built CLI (`tsc -b` writes packages/cli/dist). */
export const OFEVENTS_BIN = `${root}packages/cli/bin/ofevents.js`;

export type OfeventsCommand = "run" | "eventsource" | "trigger";

export interface OfeventsProcessOptions {
  command: OfeventsCommand;
  /** Manifest files or folders (`-f`). */
  files: readonly string[];
  /** Names the process in failure messages. */
  name: string;
  /** Added to this process's environment (e.g. DAPR_HTTP_PORT / DAPR_GRPC_PORT). */
  env?: Readonly<Record<string, string>>;
  /**
   * Log level (default "info" for `run`, whose ready signal is an info line; "warn" for the
   * entrypoints, which are polled on /readyz, so per-event lines are not written at all).
   */
  logLevel?: string;
  /** Further arguments after the defaults. */
  args?: readonly string[];
  /** From spawn to ready (default 90 s). */
  readyTimeoutMs?: number;
  /** Called with every line it writes (stdout and stderr), e.g. to read its JSON log. */
  onLine?: (line: string) => void;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// If the test process dies without stopping its children, don't leave them running.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** One `ofevents` child process. */
export class OfeventsProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** The entrypoints' /healthz, /readyz and /metrics port (undefined for `run`). */
  readonly healthPort: number | undefined;
  /** Resolves when the process has exited and its output is complete. */
  readonly exited: Promise<Exit>;
  readonly #tail = new LogTail(300);
  #ready!: () => void;
  readonly #readyLine = new Promise<void>((r) => (this.#ready = r));
  readonly #onLine: ((line: string) => void) | undefined;

  private constructor(o: OfeventsProcessOptions, healthPort: number | undefined) {
    this.name = o.name;
    this.healthPort = healthPort;
    this.#onLine = o.onLine;
    const entrypoint = o.command !== "run";
    const args = [
      OFEVENTS_BIN,
      o.command,
      ...o.files.flatMap((f) => ["-f", f]),
      "--log-format",
      "json",
      "--log-level",
      o.logLevel ?? (entrypoint ? "warn" : "info"),
      ...(entrypoint
        ? ["--host", "127.0.0.1", "--health-port", String(healthPort)]
        : ["--host", "127.0.0.1", "--functions-port", "0"]),
      ...(o.args ?? []),
    ];
    this.child = spawn(process.execPath, args, {
      cwd: root,
      env: { ...process.env, ...o.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(this.child);
    const partial = { out: "", err: "" };
    const take = (stream: "out" | "err", chunk: Buffer): void => {
      const lines = (partial[stream] + chunk.toString("utf8")).split("\n");
      partial[stream] = lines.pop() ?? "";
      for (const line of lines) this.#line(line);
    };
    this.child.stdout!.on("data", (c: Buffer) => take("out", c));
    this.child.stderr!.on("data", (c: Buffer) => take("err", c));
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once("close", (code, signal) => {
        live.delete(this.child);
        for (const rest of Object.values(partial)) if (rest !== "") this.#line(rest);
        resolve({ code, signal });
      });
    });
  }

  /** Spawns the process and resolves once it is ready; rejects (after killing it) with its output otherwise. */
  static async start(o: OfeventsProcessOptions): Promise<OfeventsProcess> {
    const healthPort = o.command === "run" ? undefined : await freePort();
    const p = new OfeventsProcess(o, healthPort);
    const timeoutMs = o.readyTimeoutMs ?? 90_000;
    const ac = new AbortController();
    const ready = healthPort === undefined ? p.#readyLine : p.#pollReady(healthPort, ac.signal);
    const died = p.exited.then((e) => {
      throw new Error(`${p.name} exited before it was ready (${describeExit(e)})\n${p.output()}`);
    });
    const timedOut = delay(timeoutMs, undefined, { signal: ac.signal }).then(() => {
      throw new Error(`${p.name} not ready after ${timeoutMs} ms\n${p.output()}`);
    });
    try {
      await Promise.race([ready, died, timedOut]);
    } catch (err) {
      p.child.kill("SIGKILL");
      await p.exited;
      throw err;
    } finally {
      ac.abort();
      for (const pr of [ready, died, timedOut]) pr.catch(() => {});
    }
    return p;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` (if still running) and resolves when the process has exited. */
  async kill(signal: NodeJS.Signals): Promise<Exit> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 15_000): Promise<Exit> {
    if (!this.running) return this.exited;
    this.child.kill("SIGTERM");
    const ac = new AbortController();
    const inTime = await Promise.race([
      this.exited.then(() => true),
      delay(graceMs, false, { signal: ac.signal }).catch(() => false),
    ]);
    ac.abort();
    if (!inTime) this.child.kill("SIGKILL");
    return this.exited;
  }

  /** Resident set size in bytes (VmRSS of /proc/<pid>/status), or undefined once exited. */
  async rss(): Promise<number | undefined> {
    return this.running ? readRss(this.pid) : undefined;
  }

  /** The warnings, errors and lifecycle lines it wrote, for failure messages. */
  output(): string {
    return `--- ${this.name} (pid ${this.child.pid}) ---\n${this.#tail.toString()}`;
  }

  #line(line: string): void {
    if (line === "") return;
    this.#onLine?.(line);
    if (line.includes('"msg":"running"')) this.#ready();
    // Per-event info lines (level 30) would push out what explains a failure.
    if (!line.includes('"level":30') || line.includes('"msg":"running"')) this.#tail.add(line);
  }

  async #pollReady(port: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]),
      })
        .then(async (res) => {
          await res.arrayBuffer();
          return res.status === 200;
        })
        .catch(() => false);
      if (ok) return;
      await delay(100, undefined, { signal });
    }
  }
}

function describeExit(e: Exit): string {
  return e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`;
}

/** VmRSS of a Linux process in bytes, or undefined when it has exited. */
export async function readRss(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => undefined);
  const kb = status === undefined ? undefined : /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}
