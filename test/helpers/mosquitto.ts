import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Parsed, ProbeSocket, requireExecutable, ServerProcess, type ServerProcessOptions } from "./server.js";

export interface MosquittoServerOptions {
  /** Extra lines for mosquitto.conf. */
  config?: readonly string[];
  startTimeoutMs?: number;
}

/** A mosquitto MQTT broker on 127.0.0.1 that accepts anonymous clients, without persistence. */
export class MosquittoServer extends ServerProcess {
  private constructor(options: ServerProcessOptions) {
    super(options);
  }

  /** Resolves once the broker answers an MQTT CONNECT with CONNACK (accepted). */
  static async start(options: MosquittoServerOptions = {}): Promise<MosquittoServer> {
    const command = requireExecutable("mosquitto");
    const server = new MosquittoServer({
      name: "mosquitto",
      startTimeoutMs: options.startTimeoutMs ?? 15_000,
      configure: async ({ ports, dir }) => {
        const port = ports[0]!;
        const conf = join(dir, "mosquitto.conf");
        // mosquitto 2.x refuses anonymous clients on a listener unless allow_anonymous is set.
        // Started as root, it drops to user "mosquitto" after reading this file; it writes nothing.
        await writeFile(
          conf,
          [
            `listener ${port} 127.0.0.1`,
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr", // stdout is block-buffered when piped
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            ...(options.config ?? []),
            "",
          ].join("\n"),
        );
        return {
          command,
          args: ["-c", conf],
          readyLine: /mosquitto version .* running/,
          probe: (signal) => mqttConnects(port, signal),
        };
      },
    });
    await server.boot();
    return server;
  }

  /** `mqtt://127.0.0.1:<port>` */
  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }
}

/** MQTT control packet types (MQTT 3.1.1 §2.2.1). */
export const MqttPacket = {
  Connect: 1,
  Connack: 2,
  Publish: 3,
  Subscribe: 8,
  Suback: 9,
  Disconnect: 14,
} as const;

function utf8Field(s: string): Buffer {
  const bytes = Buffer.from(s);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body]);
}

/** MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s. */
export function mqttConnect(clientId: string): Buffer {
  const header = Buffer.concat([utf8Field("MQTT"), Buffer.from([4, 0x02, 0, 60])]);
  return packet(MqttPacket.Connect << 4, Buffer.concat([header, utf8Field(clientId)]));
}

/** SUBSCRIBE to one topic filter at QoS 0. */
export function mqttSubscribe(packetId: number, topic: string): Buffer {
  const id = Buffer.alloc(2);
  id.writeUInt16BE(packetId);
  return packet((MqttPacket.Subscribe << 4) | 0x02, Buffer.concat([id, utf8Field(topic), Buffer.from([0])]));
}

/** PUBLISH at QoS 0. */
export function mqttPublish(topic: string, payload: string | Buffer): Buffer {
  return packet(MqttPacket.Publish << 4, Buffer.concat([utf8Field(topic), Buffer.from(payload)]));
}

export interface MqttFrame {
  type: number;
  flags: number;
  body: Buffer;
}

/** A {@link ProbeSocket} frame parser for one MQTT control packet. */
export function parseMqttPacket(buf: Buffer): Parsed<MqttFrame> | undefined {
  if (buf.length < 2) return undefined;
  let length = 0;
  let multiplier = 1;
  let pos = 1;
  for (;;) {
    const byte = buf[pos++];
    if (byte === undefined) return undefined;
    length += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) break;
    multiplier *= 128;
  }
  if (buf.length < pos + length) return undefined;
  const first = buf[0]!;
  return {
    value: { type: first >> 4, flags: first & 0x0f, body: buf.subarray(pos, pos + length) },
    size: pos + length,
  };
}

/** Resolves true if the broker accepts an anonymous MQTT CONNECT (CONNACK return code 0). */
export async function mqttConnects(port: number, signal?: AbortSignal): Promise<boolean> {
  const socket = await ProbeSocket.connect(port, { timeoutMs: 1_000, ...(signal ? { signal } : {}) });
  try {
    socket.write(mqttConnect(`probe-${process.pid}-${Date.now()}`));
    const frame = await socket.read(parseMqttPacket, 2_000);
    return frame.type === MqttPacket.Connack && frame.body[1] === 0;
  } finally {
    socket.close();
  }
}
