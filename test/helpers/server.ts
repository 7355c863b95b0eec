// Shared base for the real servers the integration tests launch (nats-server, redis-server,
// mosquitto, Kafka, later daprd/etcd/kube-apiserver). Each server binds 127.0.0.1 on ports picked
// here, keeps its files in its own temp dir, and is killed by its own pid.
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { Socket } from "node:net";
import { freePort, freePorts } from "./ports.js";
import { homedir, tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

/** The command that installs every server binary the helpers launch. */
export const SETUP_COMMAND = "npm run test:setup";

export const LOOPBACK = "127.0.0.1";

/** Where scripts/test-setup.sh caches builds and jars: `$OFEVENTS_CACHE` or `~/.cache/ofevents`. */
export function cacheDir(): string {
  return process.env["OFEVENTS_CACHE"] || join(homedir(), ".cache", "ofevents");
}

/** A server binary (or jar set) is not installed. Never a reason to skip: run the setup command. */
export class MissingBinaryError extends Error {
  override readonly name = "MissingBinaryError";
  readonly code = "ERR_TEST_SERVER_MISSING";
  constructor(
    readonly binary: string,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`${binary} not found (${detail}); run \`${SETUP_COMMAND}\` to install the test servers`, options);
  }
}

/** A server did not become ready, exited early, or could not be stopped. Carries the log tail. */
export class ServerProcessError extends Error {
  override readonly name = "ServerProcessError";
  readonly code = "ERR_TEST_SERVER";
  constructor(
    message: string,
    readonly server: string,
    readonly logTail: string,
    options?: ErrorOptions,
  ) {
    super(`${message}\n--- last lines of ${server}'s output ---\n${logTail || "(no output)"}\n---`, options);
  }
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Finds an executable: first in `<cacheDir>/bin` (pinned builds from the setup script), then on
 * PATH, then in the sbin dirs Debian puts daemons in (not on a non-root PATH).
 */
export function findExecutable(name: string): string | undefined {
  const dirs = [
    join(cacheDir(), "bin"),
    ...(process.env["PATH"] ?? "").split(delimiter).filter(Boolean),
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
  ];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** Like {@link findExecutable}, but throws {@link MissingBinaryError} naming the setup command. */
export function requireExecutable(name: string): string {
  const found = findExecutable(name);
  if (!found) throw new MissingBinaryError(name, `looked in ${join(cacheDir(), "bin")}, PATH and /usr/sbin`);
  return found;
}

// Ports: see ./ports.ts.
export { freePort, freePorts };

/** The last lines a process wrote to stdout and stderr, with listeners for readiness lines. */
export class LogTail {
  readonly #max: number;
  readonly #lines: string[] = [];
  readonly #partial = new Map<string, string>();
  readonly #listeners = new Set<(line: string) => void>();

  constructor(maxLines = 200) {
    this.#max = maxLines;
  }

  /** Feeds a chunk from `stream` ("out" or "err"); complete lines are kept and announced. */
  push(stream: string, chunk: Buffer | string): void {
    const text = (this.#partial.get(stream) ?? "") + chunk.toString();
    const parts = text.split(/\r?\n/);
    this.#partial.set(stream, parts.pop() ?? "");
    for (const line of parts) this.add(line);
  }

  /** Flushes unterminated lines (at process exit). */
  flush(): void {
    for (const rest of this.#partial.values()) if (rest) this.add(rest);
    this.#partial.clear();
  }

  add(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > this.#max) this.#lines.splice(0, this.#lines.length - this.#max);
    for (const listener of this.#listeners) listener(line);
  }

  /** Resolves with the first line written from now on that matches `pattern`. */
  waitForLine(pattern: RegExp, signal: AbortSignal): Promise<string> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#listeners.delete(listener);
        reject(signal.reason);
      };
      const listener = (line: string) => {
        if (!pattern.test(line)) return;
        this.#listeners.delete(listener);
        signal.removeEventListener("abort", onAbort);
        resolve(line);
      };
      if (signal.aborted) return onAbort();
      this.#listeners.add(listener);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  lines(): readonly string[] {
    return this.#lines;
  }

  toString(): string {
    return this.#lines.join("\n");
  }
}

/** What to run, and how to tell it is ready: every condition given must hold. */
export interface LaunchSpec {
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** A line on stdout/stderr that means started (checked first). */
  readyLine?: RegExp;
  /**
   * A protocol probe, retried every 100 ms until it resolves true. Without one, readiness is a TCP
   * connect to the first port.
   */
  probe?: (signal: AbortSignal) => Promise<boolean>;
}

export interface ServerProcessOptions {
  /** Names the server in errors and in its temp dir. */
  name: string;
  /** How many free ports to pick (default 1); kept across restart(). */
  portCount?: number;
  /**
   * Writes config files into `dir` and says what to run. Called once per start attempt (again
   * with new ports if the first ones were taken); restart() reuses its result.
   */
  configure: (ctx: { ports: readonly number[]; dir: string }) => LaunchSpec | Promise<LaunchSpec>;
  /** From spawn to ready (default 30 s; the helpers pass their own). */
  startTimeoutMs?: number;
  /** Between SIGTERM and SIGKILL (default 10 s). */
  stopGraceMs?: number;
  /** Lines of output kept for error messages (default 200). */
  tailLines?: number;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// If the test process dies without stopping its servers, don't leave them running.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/**
 * One server process: started on free 127.0.0.1 ports with files in its own temp dir; `stop()`
 * kills its pid and removes the dir; `restart()` stops and starts it on the same ports and dir.
 */
export class ServerProcess implements AsyncDisposable {
  readonly name: string;
  readonly log: LogTail;
  readonly #opts: ServerProcessOptions;
  #dir: string | undefined;
  #ports: readonly number[] = [];
  #spec: LaunchSpec | undefined;
  #child: ChildProcess | undefined;
  #exited: Promise<Exit> | undefined;
  #stopped = false;

  protected constructor(opts: ServerProcessOptions) {
    this.name = opts.name;
    this.#opts = opts;
    this.log = new LogTail(opts.tailLines ?? 200);
  }

  /** Starts a server described by `opts`; rejects with the log tail if it is not ready in time. */
  static async launch(opts: ServerProcessOptions): Promise<ServerProcess> {
    const server = new ServerProcess(opts);
    await server.boot();
    return server;
  }

  /** The temp dir with this server's config and data; removed by stop(). */
  get dir(): string {
    if (!this.#dir) throw new Error(`${this.name}: not started`);
    return this.#dir;
  }

  get ports(): readonly number[] {
    return this.#ports;
  }

  /** The first port (the client port). */
  get port(): number {
    const port = this.#ports[0];
    if (port === undefined) throw new Error(`${this.name}: not started`);
    return port;
  }

  /** The running process's pid, or undefined between runs and after stop(). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Creates the temp dir, picks ports, configures and starts; used by subclasses' start(). */
  protected async boot(): Promise<void> {
    this.#dir = await mkdtemp(join(tmpdir(), `ofevents-${this.name}-`));
    const attempts = 3;
    try {
      for (let attempt = 1; ; attempt++) {
        this.#ports = await freePorts(this.#opts.portCount ?? 1);
        this.#spec = await this.#opts.configure({ ports: this.#ports, dir: this.#dir });
        try {
          await this.#run();
          return;
        } catch (err) {
          const portTaken = this.log.lines().some((l) => /address already in use/i.test(l));
          if (!portTaken || attempt >= attempts) throw err;
          this.log.add(`--- ${this.name}: a port was taken, retrying with new ports ---`);
        }
      }
    } catch (err) {
      await rm(this.#dir, { recursive: true, force: true });
      this.#stopped = true;
      throw err;
    }
  }

  /**
   * Stops the process (SIGTERM, SIGKILL after the grace period) and starts it again with the same
   * ports, config and data dir. Resolves when it is ready again. `whileDown` runs (and is awaited)
   * after the process exited and before it starts again: to observe clients during the outage.
   */
  async restart(whileDown?: () => Promise<void>): Promise<void> {
    if (this.#stopped || !this.#spec) throw new Error(`${this.name}: restart() after stop()`);
    await this.#halt();
    if (whileDown !== undefined) await whileDown();
    this.log.add(`--- ${this.name}: restarting ---`);
    await this.#run();
  }

  /** Kills the process (SIGTERM, then SIGKILL), waits for it to exit and removes its temp dir. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      await this.#halt();
    } finally {
      if (this.#dir) await rm(this.#dir, { recursive: true, force: true });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #run(): Promise<void> {
    const spec = this.#spec!;
    const timeoutMs = this.#opts.startTimeoutMs ?? 30_000;
    const ac = new AbortController();
    const child = spawn(spec.command, spec.args, {
      cwd: this.#dir,
      env: spec.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: false,
    });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (err: NodeJS.ErrnoException) => {
        reject(
          err.code === "ENOENT"
            ? new MissingBinaryError(spec.command, "spawn ENOENT", { cause: err })
            : new ServerProcessError(`${this.name}: could not start ${spec.command}: ${err.message}`, this.name, "", {
                cause: err,
              }),
        );
      });
    });
    child.stdout?.on("data", (chunk: Buffer) => this.log.push("out", chunk));
    child.stderr?.on("data", (chunk: Buffer) => this.log.push("err", chunk));
    // Register the line listener before any output can arrive.
    const lineSeen = spec.readyLine ? this.log.waitForLine(spec.readyLine, ac.signal) : Promise.resolve("");
    lineSeen.catch(() => {});
    try {
      await spawned;
    } catch (err) {
      ac.abort();
      throw err;
    }

    this.#child = child;
    live.add(child);
    this.#exited = new Promise<Exit>((resolve) => {
      // "close" (not "exit") so the output is complete when the tail is read.
      child.once("close", (code, signal) => {
        live.delete(child);
        this.log.flush();
        if (this.#child === child) this.#child = undefined;
        resolve({ code, signal });
      });
    });

    const ready = (async () => {
      await lineSeen;
      const probe = spec.probe ?? ((signal: AbortSignal) => tcpConnects(this.port, signal));
      for (;;) {
        if (await probe(ac.signal).catch(() => false)) return;
        await delay(100, undefined, { signal: ac.signal });
      }
    })();
    const died = this.#exited.then(({ code, signal }) => {
      throw new ServerProcessError(
        `${this.name} exited before it was ready (${signal ? `signal ${signal}` : `exit code ${code}`}): ${describe(spec)}`,
        this.name,
        this.log.toString(),
      );
    });
    const timedOut = delay(timeoutMs, undefined, { signal: ac.signal }).then(() => {
      throw new ServerProcessError(
        `${this.name} not ready after ${timeoutMs} ms (pid ${child.pid}): ${describe(spec)}`,
        this.name,
        this.log.toString(),
      );
    });
    try {
      await Promise.race([ready, died, timedOut]);
    } catch (err) {
      await this.#halt();
      throw err;
    } finally {
      ac.abort();
      ready.catch(() => {});
      died.catch(() => {});
      timedOut.catch(() => {});
    }
  }

  /** SIGTERM, SIGKILL after the grace period; resolves once the process has exited. */
  async #halt(): Promise<void> {
    const child = this.#child;
    const exited = this.#exited;
    if (!child || !exited) return;
    child.kill("SIGTERM");
    const grace = this.#opts.stopGraceMs ?? 10_000;
    const ac = new AbortController();
    const inTime = await Promise.race([
      exited.then(() => true),
      delay(grace, false, { signal: ac.signal }).catch(() => false),
    ]);
    ac.abort();
    if (!inTime) {
      this.log.add(`--- ${this.name}: no exit ${grace} ms after SIGTERM, sending SIGKILL ---`);
      child.kill("SIGKILL");
      const ac2 = new AbortController();
      const killed = await Promise.race([
        exited.then(() => true),
        delay(10_000, false, { signal: ac2.signal }).catch(() => false),
      ]);
      ac2.abort();
      if (!killed) {
        throw new ServerProcessError(
          `${this.name} (pid ${child.pid}) survived SIGKILL`,
          this.name,
          this.log.toString(),
        );
      }
    }
    this.#child = undefined;
  }
}

function describe(spec: LaunchSpec): string {
  return [spec.command, ...spec.args].join(" ");
}

/** Resolves true if 127.0.0.1:`port` accepts a TCP connection. */
export async function tcpConnects(port: number, signal?: AbortSignal): Promise<boolean> {
  try {
    const socket = await ProbeSocket.connect(port, { timeoutMs: 1_000, ...(signal ? { signal } : {}) });
    socket.close();
    return true;
  } catch {
    return false;
  }
}

/** Result of a frame parser: the parsed value and how many bytes it used. */
export interface Parsed<T> {
  value: T;
  size: number;
}

/**
 * A raw TCP client for protocol probes: write bytes, then read one frame with a parser that
 * returns `undefined` until the buffer holds a whole frame. Used for readiness checks and for
 * client-library-free smoke tests.
 */
export class ProbeSocket {
  #buffer = Buffer.alloc(0);
  #closed: Error | undefined;
  #wake: (() => void) | undefined;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake?.();
    });
    socket.on("error", (err) => {
      this.#closed = err;
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#closed ??= new Error("connection closed");
      this.#wake?.();
    });
  }

  static connect(
    port: number,
    opts: { host?: string; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<ProbeSocket> {
    const { host = LOOPBACK, timeoutMs = 5_000, signal } = opts;
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const fail = (err: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        socket.destroy();
        reject(err);
      };
      const onAbort = () => fail(new Error("aborted"));
      const timer = setTimeout(() => fail(new Error(`connect ${host}:${port} timed out`)), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      socket.once("error", fail);
      socket.connect(port, host, () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        socket.off("error", fail);
        resolve(new ProbeSocket(socket));
      });
    });
  }

  write(data: string | Uint8Array): void {
    this.socket.write(data);
  }

  /** Resolves with the next frame `parse` finds in the received bytes; rejects on close or timeout. */
  async read<T>(parse: (buf: Buffer) => Parsed<T> | undefined, timeoutMs = 5_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parse(this.#buffer);
      if (parsed) {
        this.#buffer = this.#buffer.subarray(parsed.size);
        return parsed.value;
      }
      if (this.#closed) throw this.#closed;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete reply within ${timeoutMs} ms (have ${this.#buffer.length} bytes)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A frame parser for one CRLF- or LF-terminated text line (without the terminator). */
export function parseLine(buf: Buffer): Parsed<string> | undefined {
  const end = buf.indexOf("\n");
  if (end < 0) return undefined;
  return { value: buf.subarray(0, end).toString().replace(/\r$/, ""), size: end + 1 };
}
