import { type Parsed, ProbeSocket, requireExecutable, ServerProcess, type ServerProcessOptions } from "./server.js";

export interface RedisServerOptions {
  /** Extra `--name value` arguments for redis-server. */
  args?: readonly string[];
  startTimeoutMs?: number;
}

/** A redis-server on 127.0.0.1 without persistence (`--save ''`, no AOF); a restart() empties it. */
export class RedisServer extends ServerProcess {
  private constructor(options: ServerProcessOptions) {
    super(options);
  }

  /** Resolves once the server answers PING with +PONG. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const command = requireExecutable("redis-server");
    const server = new RedisServer({
      name: "redis-server",
      startTimeoutMs: options.startTimeoutMs ?? 15_000,
      configure: ({ ports, dir }) => {
        const port = ports[0]!;
        return {
          command,
          args: [
            "--bind",
            "127.0.0.1",
            "--port",
            String(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            dir,
            "--logfile",
            "",
            ...(options.args ?? []),
          ],
          readyLine: /Ready to accept connections/,
          probe: async (signal) => (await redisCommand(port, ["PING"], signal)) === "PONG",
        };
      },
    });
    await server.boot();
    return server;
  }

  /** `redis://127.0.0.1:<port>` */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
}

/** A decoded RESP2 reply. Errors (`-ERR ...`) come back as Error values, not thrown. */
export type RespValue = string | number | null | Error | RespValue[];

/** Encodes a command as a RESP array of bulk strings. */
export function encodeRedisCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(""));
}

/** A {@link ProbeSocket} frame parser for one RESP2 reply. */
export function parseResp(buf: Buffer, offset = 0): Parsed<RespValue> | undefined {
  const eol = buf.indexOf("\r\n", offset);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[offset] ?? 0);
  const text = buf.subarray(offset + 1, eol).toString();
  const after = eol + 2;
  switch (type) {
    case "+":
      return { value: text, size: after - offset };
    case "-":
      return { value: new Error(text), size: after - offset };
    case ":":
      return { value: Number(text), size: after - offset };
    case "$": {
      const len = Number(text);
      if (len < 0) return { value: null, size: after - offset };
      if (buf.length < after + len + 2) return undefined;
      return { value: buf.subarray(after, after + len).toString(), size: after + len + 2 - offset };
    }
    case "*": {
      const count = Number(text);
      if (count < 0) return { value: null, size: after - offset };
      const items: RespValue[] = [];
      let pos = after;
      for (let i = 0; i < count; i++) {
        const item = parseResp(buf, pos);
        if (!item) return undefined;
        items.push(item.value);
        pos += item.size;
      }
      return { value: items, size: pos - offset };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/** Sends one command on a fresh connection and returns the decoded reply. */
export async function redisCommand(port: number, args: readonly string[], signal?: AbortSignal): Promise<RespValue> {
  const socket = await ProbeSocket.connect(port, { timeoutMs: 1_000, ...(signal ? { signal } : {}) });
  try {
    socket.write(encodeRedisCommand(args));
    return await socket.read((buf) => parseResp(buf));
  } finally {
    socket.close();
  }
}
