import { getEventListeners } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect as netConnect, type AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DeliveryError, ErrorCode, newEvent } from "@ofevents/core";
import { createSinkClient, decodeHeaderValue, deliveryPolicy, type SinkClient } from "../src/index.js";

interface Received {
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
  at: number;
}

/** A real HTTP sink whose behaviour each test scripts: answers[i] is the answer to request i. */
class ScriptedSink {
  received: Received[] = [];
  answers: Array<{ status: number; headers?: Record<string, string>; stallMs?: number }> = [];
  private server!: Server;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const i = this.received.length;
        this.received.push({
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8"),
          at: Date.now(),
        });
        const a = this.answers[i] ?? this.answers[this.answers.length - 1] ?? { status: 200 };
        const reply = (): void => void res.writeHead(a.status, a.headers ?? {}).end(`answer ${a.status}`);
        if (a.stallMs !== undefined) setTimeout(reply, a.stallMs);
        else reply();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/sink`;
  }

  reset(): void {
    this.received = [];
    this.answers = [];
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const event = () =>
  newEvent({
    id: "evt-1",
    source: "/test",
    type: "io.ofevents.test",
    subject: "s",
    data: { amount: 10 },
    extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  });

const fast = deliveryPolicy({ retry: 3, backoffDelay: "10ms", timeout: "500ms", retryAfterMax: "2s" });

describe("sink delivery - against a real HTTP server", () => {
  const sink = new ScriptedSink();
  let client: SinkClient;
  beforeAll(async () => {
    await sink.start();
    client = createSinkClient();
  });
  afterAll(async () => {
    await client.close();
    await sink.stop();
  });
  afterEach(() => sink.reset());

  it("sink delivery - binary mode carries attributes as ce- headers and data as the body", async () => {
    sink.answers = [{ status: 202 }];
    const res = await client.deliver(sink.url, event(), fast);
    expect(res.status).toBe(202);
    const h = sink.received[0]!.headers;
    expect(h["ce-id"]).toBe("evt-1");
    expect(h["ce-source"]).toBe("/test");
    expect(h["ce-type"]).toBe("io.ofevents.test");
    expect(h["ce-subject"]).toBe("s");
    expect(h["ce-traceparent"]).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    expect(h["content-type"]).toContain("application/json");
    expect(JSON.parse(sink.received[0]!.body)).toEqual({ amount: 10 });
  });

  it("sink delivery - attribute values with spaces and non-ASCII arrive percent-encoded and decode back exactly", async () => {
    sink.answers = [{ status: 200 }];
    const subject = "caf\u00e9 \u20ac \u{1f600}";
    const time = "2026-11-22T10:00:00.123456789+02:00";
    await client.deliver(sink.url, newEvent({ source: "/a b", type: "t", subject, time, data: {} }), fast);
    const h = sink.received[0]!.headers;
    expect(h["ce-subject"]).toBe("caf%C3%A9%20%E2%82%AC%20%F0%9F%98%80");
    expect(decodeHeaderValue(String(h["ce-subject"]))).toBe(subject);
    expect(decodeHeaderValue(String(h["ce-source"]))).toBe("/a b");
    expect(h["ce-time"]).toBe(time);
  });

  it("sink delivery - structured mode sends the whole event as application/cloudevents+json", async () => {
    sink.answers = [{ status: 200 }];
    await client.deliver(sink.url, event(), { ...fast, format: "structured" });
    expect(sink.received[0]!.headers["content-type"]).toContain("application/cloudevents+json");
    expect(JSON.parse(sink.received[0]!.body)).toMatchObject({ id: "evt-1", specversion: "1.0", data: { amount: 10 } });
  });

  it("sink delivery - a sink failing twice with 503 gets the event on the third attempt", async () => {
    sink.answers = [{ status: 503 }, { status: 503 }, { status: 200 }];
    const retries: number[] = [];
    const res = await client.deliver(sink.url, event(), fast, { onRetry: (r) => retries.push(r.attempt) });
    expect(res.status).toBe(200);
    expect(sink.received).toHaveLength(3);
    expect(retries).toEqual([1, 2]);
  });

  it("sink delivery - 4xx other than 408/429 is not retried", async () => {
    sink.answers = [{ status: 400 }];
    const err = (await client.deliver(sink.url, event(), fast).catch((e: unknown) => e)) as DeliveryError;
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.code).toBe(ErrorCode.DeliveryRejected);
    expect(err.retriable).toBe(false);
    expect(err.status).toBe(400);
    expect(sink.received).toHaveLength(1);
  });

  it("sink delivery - 5xx beyond the retry budget fails with the last status after retry+1 attempts", async () => {
    sink.answers = [{ status: 500 }];
    const err = (await client.deliver(sink.url, event(), fast).catch((e: unknown) => e)) as DeliveryError;
    expect(err.retriable).toBe(true);
    expect(err.status).toBe(500);
    expect(sink.received).toHaveLength(4);
  });

  it("sink delivery - 429 with Retry-After waits as asked (bounded by retryAfterMax)", async () => {
    sink.answers = [{ status: 429, headers: { "retry-after": "1" } }, { status: 200 }];
    await client.deliver(sink.url, event(), fast);
    expect(sink.received).toHaveLength(2);
    const waited = sink.received[1]!.at - sink.received[0]!.at;
    expect(waited).toBeGreaterThanOrEqual(950);
  });

  it("sink delivery - a stalled sink times out and is retried", async () => {
    sink.answers = [{ status: 200, stallMs: 2000 }, { status: 200 }];
    const res = await client.deliver(sink.url, event(), { ...fast, timeoutMs: 200 });
    expect(res.status).toBe(200);
    expect(sink.received).toHaveLength(2);
  });

  it("sink delivery - stopRetrying ends the wait between attempts at once and makes no new attempt", async () => {
    sink.answers = [{ status: 503 }];
    const stop = new AbortController();
    const t0 = Date.now();
    const p = client.deliver(
      sink.url,
      event(),
      { ...fast, retry: 5, backoffDelayMs: 5_000 },
      {
        stopRetrying: stop.signal,
        onRetry: () => stop.abort(),
      },
    );
    const err = (await p.catch((e: unknown) => e)) as DeliveryError;
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.status).toBe(503);
    expect(sink.received).toHaveLength(1);
  });

  it("sink delivery - stopRetrying lets the attempt in flight finish", async () => {
    sink.answers = [{ status: 200, stallMs: 300 }];
    const stop = new AbortController();
    const p = client.deliver(sink.url, event(), fast, { stopRetrying: stop.signal });
    await new Promise((r) => setTimeout(r, 100));
    stop.abort();
    expect((await p).status).toBe(200);
  });

  it("sink delivery - JSON string data is sent as JSON text, a text/plain string as it is", async () => {
    sink.answers = [{ status: 200 }];
    await client.deliver(
      sink.url,
      newEvent({ source: "/s", type: "t", data: "abc", datacontenttype: "application/json" }),
      fast,
    );
    await client.deliver(
      sink.url,
      newEvent({ source: "/s", type: "t", data: "abc", datacontenttype: "text/plain" }),
      fast,
    );
    expect(sink.received.map((r) => [r.headers["content-type"], r.body])).toEqual([
      ["application/json", '"abc"'],
      ["text/plain", "abc"],
    ]);
  });

  it("sink delivery - connection refused is a retriable failure", async () => {
    const err = (await client
      .deliver("http://127.0.0.1:1/none", event(), { ...fast, retry: 1 })
      .catch((e: unknown) => e)) as DeliveryError;
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.retriable).toBe(true);
    expect(err.code).toBe(ErrorCode.DeliveryFailed);
  });
});

describe("sink delivery - the answer and cancelling", () => {
  const sink = new ScriptedSink();
  let client: SinkClient;
  let long: Server;
  let longUrl = "";
  beforeAll(async () => {
    await sink.start();
    client = createSinkClient();
    // Answers 200 KiB in 8 KiB writes.
    long = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/plain" });
        for (let i = 0; i < 25; i++) res.write(Buffer.alloc(8192, 97 + (i % 26)));
        res.end();
      });
    });
    await new Promise<void>((r) => long.listen(0, "127.0.0.1", r));
    longUrl = `http://127.0.0.1:${(long.address() as AddressInfo).port}/long`;
  });
  afterAll(async () => {
    await client.close();
    await sink.stop();
    long.closeAllConnections();
    await new Promise<void>((r) => long.close(() => r()));
  });
  afterEach(() => sink.reset());

  it("sink delivery - the answer's status, headers and body come back, and the URL's query reaches the sink", async () => {
    sink.answers = [{ status: 201, headers: { "x-reply": "yes" } }];
    const res = await client.send(`${sink.url}?a=1&b=two`, event());
    expect(res.status).toBe(201);
    expect(res.headers["x-reply"]).toBe("yes");
    expect(res.body.toString("utf8")).toBe("answer 201");
    expect(sink.received[0]!.url).toBe("/sink?a=1&b=two");
  });

  it("sink delivery - of a long answer the first 64 KiB are kept, the rest is read to its end", async () => {
    const res = await client.send(longUrl, event());
    expect(res.status).toBe(200);
    expect(res.body.length).toBeGreaterThanOrEqual(64 * 1024);
    expect(res.body.length).toBeLessThan(200 * 1024);
    expect(res.body.subarray(0, 8192).every((b) => b === 97)).toBe(true);
    // The connection was drained: the next request on it is answered too.
    expect((await client.send(longUrl, event())).status).toBe(200);
  });

  it("sink delivery - one signal shared by attempts in flight cancels them all, with one listener on it", async () => {
    const stop = new AbortController();
    // Finished attempts leave nothing on the signal.
    for (let i = 0; i < 20; i++) await client.send(sink.url, event(), { signal: stop.signal });
    expect(getEventListeners(stop.signal, "abort")).toHaveLength(1);
    sink.reset();
    sink.answers = [{ status: 200, stallMs: 10_000 }];
    const started = Date.now();
    const pending = [1, 2, 3].map((i) =>
      client.send(sink.url, { ...event(), id: `evt-${i}` }, { signal: stop.signal }).catch((e: unknown) => e),
    );
    for (let i = 0; i < 100 && sink.received.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    expect(sink.received).toHaveLength(3);
    expect(getEventListeners(stop.signal, "abort")).toHaveLength(1);
    stop.abort();
    const errs = await Promise.all(pending);
    expect(Date.now() - started).toBeLessThan(5_000);
    for (const err of errs) {
      expect(err).toBeInstanceOf(DeliveryError);
      expect((err as DeliveryError).retriable).toBe(true);
    }
  });

  it("sink delivery - an already aborted signal fails the attempt without sending it", async () => {
    const stop = new AbortController();
    stop.abort();
    const err = await client.send(sink.url, event(), { signal: stop.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect(sink.received).toHaveLength(0);
  });

  it("sink delivery - a URL that is not http(s) is a failure naming it, nothing sent", async () => {
    const err = (await client.send("ftp://127.0.0.1/x", event()).catch((e: unknown) => e)) as DeliveryError;
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err.message).toContain("ftp://127.0.0.1/x");
  });
});

describe("sink delivery - through an HTTP proxy from the environment", () => {
  const sink = new ScriptedSink();
  /** A CONNECT proxy that sends every host to 127.0.0.1 and records the targets it was asked for. */
  const tunnels: string[] = [];
  const proxy = createServer((_req, res) => void res.writeHead(405).end());
  proxy.on("connect", (req: IncomingMessage, socket, head: Buffer) => {
    tunnels.push(req.url ?? "");
    const port = Number((req.url ?? "").split(":").pop());
    const upstream = netConnect(port, "127.0.0.1", () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  });
  let proxyUrl = "";
  beforeAll(async () => {
    await sink.start();
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await sink.stop();
    proxy.closeAllConnections();
    await new Promise<void>((r) => proxy.close(() => r()));
  });
  afterEach(() => {
    sink.reset();
    tunnels.length = 0;
  });

  it("sink delivery - with HTTP_PROXY set, a cluster service name is reached through the proxy", async () => {
    const client = createSinkClient({ env: { HTTP_PROXY: proxyUrl, NO_PROXY: "127.0.0.1,localhost" } });
    try {
      const port = new URL(sink.url).port;
      const target = `web.test.svc.cluster.local:${port}`;
      await client.deliver(`http://${target}/sink`, event(), fast);
      expect(tunnels).toEqual([target]);
      expect(sink.received).toHaveLength(1);
      expect(sink.received[0]!.headers["ce-id"]).toBe("evt-1");
    } finally {
      await client.close();
    }
  });

  it("sink delivery - a host in NO_PROXY is reached directly", async () => {
    const client = createSinkClient({ env: { http_proxy: proxyUrl, no_proxy: "127.0.0.1" } });
    try {
      await client.deliver(sink.url, event(), fast);
      expect(tunnels).toEqual([]);
      expect(sink.received).toHaveLength(1);
    } finally {
      await client.close();
    }
  });
});
