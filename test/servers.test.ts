// Smoke tests for the real test servers (scripts/test-setup.sh installs them): each one starts,
// does one round trip over its raw protocol, and stops with its pid gone.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KafkaApi, KafkaBroker, kafkaApiVersions, kafkaMetadata } from "./helpers/kafka.js";
import {
  MosquittoServer,
  MqttPacket,
  mqttConnect,
  mqttPublish,
  mqttSubscribe,
  parseMqttPacket,
} from "./helpers/mosquitto.js";
import { amqpAnswers, RabbitMqServer } from "./helpers/rabbitmq.js";
import { type NatsOp, NatsServer, parseNatsOp, readNatsInfo } from "./helpers/nats.js";
import { OtelCollector, startOtlpJsonReceiver } from "./helpers/otelcol.js";
import { encodeRedisCommand, parseResp, RedisServer, type RespValue } from "./helpers/redis.js";
import {
  cacheDir,
  freePort,
  freePorts,
  MissingBinaryError,
  parseLine,
  ProbeSocket,
  requireExecutable,
  ServerProcess,
  ServerProcessError,
  tcpConnects,
} from "./helpers/server.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
}

/** Stops `server` and checks that its process and temp dir are gone. */
async function stopAndCheck(server: ServerProcess): Promise<void> {
  const pid = server.pid;
  const dir = server.dir;
  expect(pid).toBeTypeOf("number");
  await server.stop();
  expect(isAlive(pid!)).toBe(false);
  expect(server.running).toBe(false);
  expect(existsSync(dir)).toBe(false);
}

/** A bare NATS client over the text protocol: JetStream API requests are request/reply on $JS.API. */
class RawNats {
  readonly inbox = `_INBOX.${randomSuffix()}`;
  #n = 0;
  private constructor(readonly socket: ProbeSocket) {}

  static async connect(port: number): Promise<RawNats> {
    const socket = await ProbeSocket.connect(port);
    const info = await socket.read(parseLine);
    expect(info).toMatch(/^INFO /);
    const client = new RawNats(socket);
    socket.write(`CONNECT {"verbose":false,"pedantic":false,"lang":"raw","protocol":1}\r\n`);
    socket.write(`SUB ${client.inbox}.* 1\r\n`);
    return client;
  }

  async nextMsg(): Promise<Extract<NatsOp, { op: "MSG" }>> {
    for (;;) {
      const op = await this.socket.read(parseNatsOp);
      if (op.op === "MSG") return op;
      if (op.op === "PING") this.socket.write("PONG\r\n");
      if (op.op === "-ERR") throw new Error(op.line);
    }
  }

  publish(subject: string, payload: string, replyTo?: string): void {
    const bytes = Buffer.byteLength(payload);
    this.socket.write(`PUB ${subject}${replyTo ? ` ${replyTo}` : ""} ${bytes}\r\n${payload}\r\n`);
  }

  async request(subject: string, payload: unknown): Promise<Record<string, unknown>> {
    this.publish(
      subject,
      typeof payload === "string" ? payload : JSON.stringify(payload),
      `${this.inbox}.${++this.#n}`,
    );
    const reply = JSON.parse((await this.nextMsg()).payload.toString()) as Record<string, unknown>;
    if (reply["error"]) throw new Error(`${subject}: ${JSON.stringify(reply["error"])}`);
    return reply;
  }

  close(): void {
    this.socket.close();
  }
}

/** One connection, commands in order. */
async function redisSession(
  port: number,
): Promise<{ call: (...args: string[]) => Promise<RespValue>; close: () => void }> {
  const socket = await ProbeSocket.connect(port);
  return {
    call: async (...args) => {
      socket.write(encodeRedisCommand(args));
      return socket.read((buf) => parseResp(buf));
    },
    close: () => socket.close(),
  };
}

describe("test servers", () => {
  it("helpers - a missing binary is an error naming the setup command", async () => {
    expect(() => requireExecutable(`no-such-server-${randomSuffix()}`)).toThrow(MissingBinaryError);
    expect(() => requireExecutable(`no-such-server-${randomSuffix()}`)).toThrow(/npm run test:setup/);
    await expect(
      ServerProcess.launch({
        name: "missing",
        configure: () => ({ command: `/nonexistent/no-such-server-${randomSuffix()}`, args: [] }),
      }),
    ).rejects.toThrow(/npm run test:setup/);
    expect(cacheDir()).toBe(process.env["OFEVENTS_CACHE"] || join(homedir(), ".cache", "ofevents"));
  });

  it("helpers - early exit and timeout reject with the log tail and leave no process", async () => {
    const early = ServerProcess.launch({
      name: "early-exit",
      configure: () => ({ command: "/bin/sh", args: ["-c", "echo boom-$$; echo on-stderr >&2; exit 3"] }),
    });
    const exitErr = await early.catch((e: unknown) => e);
    expect(exitErr).toBeInstanceOf(ServerProcessError);
    expect(String(exitErr)).toMatch(/exited before it was ready \(exit code 3\)/);
    expect(String(exitErr)).toMatch(/boom-\d+/);
    expect(String(exitErr)).toMatch(/on-stderr/);

    const slow = ServerProcess.launch({
      name: "never-ready",
      startTimeoutMs: 500,
      stopGraceMs: 1_000,
      configure: () => ({
        command: "/bin/sh",
        // ignores SIGTERM, so stop() has to SIGKILL it
        args: ["-c", "trap '' TERM; echo waiting; exec sleep 60"],
        probe: async () => false,
      }),
    });
    const err = await slow.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerProcessError);
    expect(String(err)).toMatch(/not ready after 500 ms \(pid (\d+)\)[\s\S]*waiting/);
    const pid = Number(/\(pid (\d+)\)/.exec(String(err))?.[1]);
    expect(isAlive(pid)).toBe(false);
  });

  it("helpers - waitFor resolves with the first truthy value and times out with the last error", async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : 0), { intervalMs: 1 })).resolves.toBe(3);
    await expect(
      waitFor(
        () => {
          throw new Error("still down");
        },
        { timeoutMs: 50, intervalMs: 10, message: "server up" },
      ),
    ).rejects.toThrow(/server up not met after 50 ms .*still down/);
    expect(randomSuffix()).toMatch(/^[0-9a-f]{8}$/);
  });

  it("helpers - waitFor calls a message function only on timeout, and an abort rejects with its reason", async () => {
    let described = 0;
    let n = 0;
    const message = () => `server up (${++described} descriptions, ${n} checks seen)`;
    await expect(waitFor(() => ++n >= 2, { intervalMs: 1, message })).resolves.toBe(true);
    expect(described).toBe(0);
    await expect(waitFor(() => false, { timeoutMs: 30, intervalMs: 5, message })).rejects.toThrow(
      /^waitFor: server up \(1 descriptions, \d+ checks seen\) not met after 30 ms/,
    );
    expect(described).toBe(1);

    const ac = new AbortController();
    const gone = new Error("server exited");
    setTimeout(() => ac.abort(gone), 20);
    await expect(waitFor(() => false, { timeoutMs: 5_000, intervalMs: 1_000, signal: ac.signal })).rejects.toBe(gone);
    await expect(waitFor(() => false, { signal: ac.signal })).rejects.toBe(gone);
  });

  it("helpers - no two port picks of one process return the same port, though each is released", async () => {
    // 2,000 picks in a range of 12,768: without a record of ports handed out, a repeat is all but
    // certain (a Pod's port map and its daprd's ports once collided in CI this way).
    const picked: number[] = [...(await freePorts(500))];
    for (let i = 0; i < 1_500; i++) picked.push(await freePort());
    expect(new Set(picked).size).toBe(picked.length);
    expect(Math.min(...picked)).toBeGreaterThanOrEqual(20_000);
    expect(Math.max(...picked)).toBeLessThanOrEqual(32_767);
  });

  it("nats-server - JetStream publish and pull-consume, then stop", async () => {
    const server = await NatsServer.start({ jetstream: true });
    try {
      const info = await readNatsInfo(server.port);
      expect(info["jetstream"]).toBe(true);
      expect(info["version"]).toBe(server.version);
      const nc = await RawNats.connect(server.port);
      try {
        const s = randomSuffix();
        const stream = `SMOKE_${s}`;
        await nc.request(`$JS.API.STREAM.CREATE.${stream}`, {
          name: stream,
          subjects: [`smoke.${s}.>`],
          storage: "file",
        });
        const ack = await nc.request(`smoke.${s}.a`, "hello");
        expect(ack).toMatchObject({ stream, seq: 1 });
        await nc.request(`$JS.API.CONSUMER.CREATE.${stream}.c1`, {
          stream_name: stream,
          config: { durable_name: "c1", ack_policy: "explicit" },
        });
        // A pull request: the message comes to our inbox with the ack subject as reply-to.
        nc.publish(
          `$JS.API.CONSUMER.MSG.NEXT.${stream}.c1`,
          JSON.stringify({ batch: 1, expires: 5e9 }),
          `${nc.inbox}.pull`,
        );
        const msg = await nc.nextMsg();
        expect(msg.subject).toBe(`smoke.${s}.a`);
        expect(msg.payload.toString()).toBe("hello");
        expect(msg.replyTo).toMatch(/^\$JS\.ACK\./);
        nc.publish(msg.replyTo!, "+ACK");
        const consumer = await waitFor(
          async () => {
            const c = await nc.request(`$JS.API.CONSUMER.INFO.${stream}.c1`, "");
            return (c["num_ack_pending"] as number) === 0 ? c : undefined;
          },
          { timeoutMs: 5_000, message: "ack processed" },
        );
        expect(consumer["delivered"]).toMatchObject({ stream_seq: 1 });
      } finally {
        nc.close();
      }
    } finally {
      await stopAndCheck(server);
    }
  });

  it("nats-server - restart() keeps port and JetStream data, with a new pid", async () => {
    await using server = await NatsServer.start({ jetstream: true });
    const s = randomSuffix();
    const stream = `RESTART_${s}`;
    const before = { port: server.port, pid: server.pid, dir: server.storeDir };
    let nc = await RawNats.connect(server.port);
    await nc.request(`$JS.API.STREAM.CREATE.${stream}`, { name: stream, subjects: [`restart.${s}`], storage: "file" });
    await nc.request(`restart.${s}`, "kept");
    nc.close();

    await server.restart();
    expect(server.port).toBe(before.port);
    expect(server.storeDir).toBe(before.dir);
    expect(server.pid).not.toBe(before.pid);
    expect(isAlive(before.pid!)).toBe(false);

    nc = await RawNats.connect(server.port);
    try {
      const got = await nc.request(`$JS.API.STREAM.MSG.GET.${stream}`, { seq: 1 });
      const message = got["message"] as { data: string };
      expect(Buffer.from(message.data, "base64").toString()).toBe("kept");
    } finally {
      nc.close();
    }
  });

  it("redis-server - PING, then XADD and XREADGROUP on one stream, then stop", async () => {
    const server = await RedisServer.start();
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      const r = await redisSession(server.port);
      try {
        expect(await r.call("PING")).toBe("PONG");
        const key = `smoke:${randomSuffix()}`;
        const id = await r.call("XADD", key, "*", "k", "v");
        expect(id).toMatch(/^\d+-\d+$/);
        expect(await r.call("XGROUP", "CREATE", key, "g", "0")).toBe("OK");
        expect(await r.call("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", key, ">")).toEqual([
          [key, [[id, ["k", "v"]]]],
        ]);
        expect(await r.call("XACK", key, "g", id as string)).toBe(1);
        expect(await r.call("CONFIG", "GET", "save")).toEqual(["save", ""]);
      } finally {
        r.close();
      }
    } finally {
      await stopAndCheck(server);
    }
  });

  it("mosquitto - anonymous CONNECT, SUBSCRIBE and PUBLISH round trip, then stop", async () => {
    const server = await MosquittoServer.start();
    try {
      const socket = await ProbeSocket.connect(server.port);
      try {
        socket.write(mqttConnect(`smoke-${randomSuffix()}`));
        const connack = await socket.read(parseMqttPacket);
        expect(connack.type).toBe(MqttPacket.Connack);
        expect(connack.body[1]).toBe(0);
        const topic = `smoke/${randomSuffix()}`;
        socket.write(mqttSubscribe(1, topic));
        const suback = await socket.read(parseMqttPacket);
        expect(suback.type).toBe(MqttPacket.Suback);
        expect([...suback.body]).toEqual([0, 1, 0]);
        socket.write(mqttPublish(topic, "hello"));
        const pub = await socket.read(parseMqttPacket);
        expect(pub.type).toBe(MqttPacket.Publish);
        const topicLen = pub.body.readUInt16BE(0);
        expect(pub.body.subarray(2, 2 + topicLen).toString()).toBe(topic);
        expect(pub.body.subarray(2 + topicLen).toString()).toBe("hello");
      } finally {
        socket.close();
      }
    } finally {
      await stopAndCheck(server);
    }
  });

  it("rabbitmq - answers the AMQP protocol header; stop kills the Erlang VM (the port's holder) and its epmd", async () => {
    const server = await RabbitMqServer.start();
    const pid = server.pid!;
    // The pid spawned is the VM itself (the start script execs erl, which execs beam.smp).
    expect(readFileSync(`/proc/${pid}/comm`, "utf8").trim()).toBe("beam.smp");
    expect(await amqpAnswers(server.port)).toBe(true);
    const epmdPort = server.epmdPort;
    expect(await tcpConnects(epmdPort)).toBe(true);
    await stopAndCheck(server);
    expect(await tcpConnects(server.port)).toBe(false);
    expect(await tcpConnects(epmdPort)).toBe(false);
  });

  it("otelcol - a span posted as OTLP/HTTP JSON reaches a receiver through the collector, then stop", async () => {
    await using receiver = await startOtlpJsonReceiver();
    const collector = await OtelCollector.start({ exportTo: receiver.url });
    try {
      expect(collector.otlpHttpEndpoint).toBe(`http://127.0.0.1:${collector.ports[0]}`);
      expect(await tcpConnects(Number(new URL(collector.otlpGrpcEndpoint).port))).toBe(true);
      const traceId = randomBytes(16).toString("hex");
      const spanId = randomBytes(8).toString("hex");
      const name = `otel-smoke-${randomSuffix()}`;
      const now = BigInt(Date.now()) * 1_000_000n;
      const request = {
        resourceSpans: [
          {
            resource: { attributes: [{ key: "service.name", value: { stringValue: "otel-smoke" } }] },
            scopeSpans: [
              {
                scope: { name: "servers.test" },
                spans: [
                  {
                    traceId,
                    spanId,
                    name,
                    kind: 2,
                    startTimeUnixNano: String(now - 5_000_000n),
                    endTimeUnixNano: String(now),
                    attributes: [{ key: "smoke.n", value: { intValue: "7" } }],
                  },
                ],
              },
            ],
          },
        ],
      };
      const res = await fetch(`${collector.otlpHttpEndpoint}/v1/traces`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(request),
      });
      const answer = await res.text();
      expect(res.status, answer).toBe(200);
      // The collector has no sending queue: its answer means its own export is done.
      expect(receiver.rejected).toEqual([]);
      expect(receiver.spans()).toEqual([
        {
          name,
          traceId,
          spanId,
          parentSpanId: undefined,
          kind: 2,
          attributes: { "smoke.n": 7 },
          resource: { "service.name": "otel-smoke" },
          scope: "servers.test",
        },
      ]);
      // The debug exporter's line comes through a pipe, after the answer.
      await waitFor(() => collector.log.lines().some((l) => /"spans": 1/.test(l)), {
        timeoutMs: 5_000,
        message: "the debug exporter's line",
      });
    } finally {
      await stopAndCheck(collector);
    }
  });

  it(
    "kafka - KRaft broker answers ApiVersions and Metadata, survives restart(), then stops",
    { timeout: 180_000 },
    async () => {
      const broker = await KafkaBroker.start();
      try {
        expect(broker.brokers).toEqual([`127.0.0.1:${broker.port}`]);
        expect(broker.log.lines().some((l) => /Kafka Server started/.test(l))).toBe(true);
        const versions = await kafkaApiVersions(broker.port);
        expect(versions.errorCode).toBe(0);
        const keys = versions.apis.map((a) => a.apiKey);
        expect(keys).toEqual(expect.arrayContaining([0, 1, KafkaApi.Metadata, KafkaApi.ApiVersions]));
        const md = await kafkaMetadata(broker.port);
        expect(md).toMatchObject({
          brokers: [{ nodeId: 1, host: "127.0.0.1", port: broker.port }],
          clusterId: broker.clusterId,
          controllerId: 1,
        });

        const before = { port: broker.port, pid: broker.pid };
        await broker.restart();
        expect(broker.port).toBe(before.port);
        expect(broker.pid).not.toBe(before.pid);
        expect(isAlive(before.pid!)).toBe(false);
        expect((await kafkaMetadata(broker.port)).clusterId).toBe(broker.clusterId);
      } finally {
        await stopAndCheck(broker);
      }
    },
  );
});
