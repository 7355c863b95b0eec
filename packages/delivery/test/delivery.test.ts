/**
 * The delivery layer's own logic: how an error is classified, the one retry loop (budget, backoff,
 * Retry-After, stop), how a source hands a message on until it is taken, and the outbound hop to a
 * topic with its dead-letter chain. Buses and sinks here are scripted stand-ins; the real-server
 * paths are in sink.test.ts and the trigger and source suites.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { BusError, DeliveryError, ErrorCode, EventError, newEvent, type CloudEvent } from "@ofevents/core";
import { DeadLetterExtension, type EventPublisher } from "@ofevents/eventbus";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  NotDelivered,
  classify,
  createOutbound,
  createSinkClient,
  deliveryPolicy,
  refused,
  untilTaken,
  withRetry,
  type AttemptInfo,
} from "../src/index.js";

const fast = { ...deliveryPolicy({ retry: 3, backoffDelay: "1ms" }), maxDelayMs: 5 };
const event = (): CloudEvent => newEvent({ source: "/test", type: "t", data: { n: 1 } });

/** A publisher that fails its first `failures` calls with `error`, then takes every event. */
function scriptedBus(failures: number, error: () => unknown = () => new BusError(ErrorCode.BusPublish, "down")) {
  const taken: Array<{ topic: string; event: CloudEvent }> = [];
  let calls = 0;
  const bus: EventPublisher = {
    async publish(topic, ev) {
      calls++;
      if (calls <= failures) throw error();
      taken.push({ topic, event: ev });
    },
  };
  return { bus, taken, calls: () => calls };
}

describe("delivery - classify", () => {
  it("delivery - a verdict per kind of error", () => {
    expect(classify(new DeliveryError(ErrorCode.DeliveryFailed, "503", "u", { retriable: true }))).toBe("retry");
    expect(classify(new DeliveryError(ErrorCode.DeliveryRejected, "400", "u", { retriable: false }))).toBe("rejected");
    expect(classify(new BusError(ErrorCode.BusPublish, "down"))).toBe("retry");
    expect(classify(BusError.closed())).toBe("stop");
    expect(classify(new EventError("bad"))).toBe("poison");
    expect(classify(new Error("who knows"))).toBe("retry");
    expect(refused(new EventError("bad"))).toBe(true);
    expect(refused(new DeliveryError(ErrorCode.DeliveryRejected, "400", "u", { retriable: false }))).toBe(true);
    expect(refused(BusError.closed())).toBe(false);
    expect(refused(new BusError(ErrorCode.BusPublish, "down"))).toBe(false);
  });
});

describe("delivery - withRetry", () => {
  it("delivery - retries what is transient, up to the budget, and reports each wait", async () => {
    const waits: AttemptInfo[] = [];
    let n = 0;
    await expect(
      withRetry(
        async () => {
          n++;
          throw new BusError(ErrorCode.BusPublish, "down");
        },
        fast,
        { onRetry: (i) => waits.push(i) },
      ),
    ).rejects.toThrow("down");
    expect(n).toBe(4);
    expect(waits.map((w) => w.attempt)).toEqual([1, 2, 3]);
  });

  it("delivery - does not retry a rejection, and stops retrying when told", async () => {
    let n = 0;
    const rejected = new DeliveryError(ErrorCode.DeliveryRejected, "400", "u", { retriable: false });
    await expect(
      withRetry(async () => {
        n++;
        throw rejected;
      }, fast),
    ).rejects.toBe(rejected);
    expect(n).toBe(1);
    const stop = new AbortController();
    n = 0;
    await expect(
      withRetry(
        async () => {
          n++;
          if (n === 2) stop.abort();
          throw new BusError(ErrorCode.BusPublish, "down");
        },
        { ...fast, retry: 100 },
        { stopRetrying: stop.signal },
      ),
    ).rejects.toThrow("down");
    expect(n).toBe(2);
  });

  it("delivery - a Retry-After stretches the wait, bounded by retryAfterMaxMs", async () => {
    const waits: number[] = [];
    const asked = new DeliveryError(ErrorCode.DeliveryFailed, "429", "u", { retriable: true, retryAfterMs: 60_000 });
    let n = 0;
    await withRetry(
      async () => {
        if (++n === 1) throw asked;
      },
      { ...fast, retryAfterMaxMs: 30 },
      { onRetry: (i) => waits.push(i.delayMs) },
    );
    expect(waits).toEqual([30]);
  });
});

describe("delivery - untilTaken", () => {
  it("delivery - a source's message is retried until taken; a refused one is skipped; a stop leaves it", async () => {
    let n = 0;
    const retried: number[] = [];
    const taken = await untilTaken(
      async () => {
        if (++n < 4) throw new BusError(ErrorCode.BusPublish, "down");
      },
      {
        signal: new AbortController().signal,
        schedule: fast,
        onRefused: () => {},
        onRetry: (i) => void retried.push(i.attempt),
      },
    );
    expect([taken, n, retried]).toEqual(["taken", 4, [1, 2, 3]]);

    const why: unknown[] = [];
    const skipped = await untilTaken(
      async () => {
        throw new EventError("malformed");
      },
      { signal: new AbortController().signal, schedule: fast, onRefused: (e) => why.push(e), onRetry: () => {} },
    );
    expect(skipped).toBe("refused");
    expect(why).toHaveLength(1);

    const stop = new AbortController();
    n = 0;
    const stopped = await untilTaken(
      async () => {
        if (++n === 3) stop.abort();
        throw new BusError(ErrorCode.BusPublish, "down");
      },
      { signal: stop.signal, schedule: fast, onRefused: () => {}, onRetry: () => {} },
    );
    expect([stopped, n]).toEqual(["stopped", 3]);
  });

  it("delivery - what afterWait throws (a Kafka rebalance) ends the loop with that error", async () => {
    const rebalance = new Error("rebalancing");
    await expect(
      untilTaken(
        async () => {
          throw new BusError(ErrorCode.BusPublish, "down");
        },
        {
          signal: new AbortController().signal,
          schedule: fast,
          onRefused: () => {},
          onRetry: () => {},
          afterWait: async () => {
            throw rebalance;
          },
        },
      ),
    ).rejects.toBe(rebalance);
  });
});

describe("delivery - outbound to topics and dead letters", () => {
  let server: Server;
  let url: string;
  const received: string[] = [];
  beforeAll(async () => {
    // A sink that always answers 400: a rejection, not retried.
    server = createServer((req, res) => {
      received.push(String(req.headers["ce-id"]));
      req.resume();
      res.writeHead(400).end("no");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it("delivery - a topic gets the policy's retries and counts its attempts", async () => {
    const s = scriptedBus(2);
    const out = createOutbound({ bus: s.bus });
    const ev = event();
    await expect(out.send(ev, { kind: "topic", topic: "t" }, fast)).resolves.toEqual({ attempts: 3 });
    expect(s.taken.map((t) => t.event.id)).toEqual([ev.id]);

    const down = scriptedBus(99);
    const failed = await createOutbound({ bus: down.bus })
      .send(ev, { kind: "topic", topic: "t" }, fast)
      .catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(NotDelivered);
    expect((failed as NotDelivered).attempts).toBe(4);
    expect((failed as NotDelivered).retriable).toBe(true);
    expect(down.calls()).toBe(4);
  });

  it("delivery - a sink's rejection is one attempt; the dead letter falls back from the sink to the topic with the reason", async () => {
    const sinks = createSinkClient();
    try {
      const s = scriptedBus(0);
      const out = createOutbound({ sinks, bus: s.bus });
      const ev = event();
      const failed = (await out.send(ev, { kind: "sink", url }, fast).catch((e: unknown) => e)) as NotDelivered;
      expect(failed.attempts).toBe(1);
      expect(failed.retriable).toBe(false);

      const fellBack: string[] = [];
      const to = await out.deadLetter(
        ev,
        url,
        failed.error,
        failed.attempts,
        [
          { kind: "sink", url },
          { kind: "topic", topic: "dlq" },
        ],
        fast,
        { onFallback: (from) => fellBack.push(from.kind) },
      );
      expect(to).toEqual({ kind: "topic", topic: "dlq" });
      expect(fellBack).toEqual(["sink"]);
      const dl = s.taken[0]!.event as unknown as Record<string, unknown>;
      expect(s.taken[0]!.topic).toBe("dlq");
      expect(dl["id"]).toBe(ev.id);
      expect(dl[DeadLetterExtension.Destination]).toBe(url);
      expect(dl[DeadLetterExtension.Deliveries]).toBe(1);
      expect(String(dl[DeadLetterExtension.Reason])).toMatch(/answered 400/);
      // The original to the sink, then its dead-letter copy: twice, never retried.
      expect(received.filter((id) => id === ev.id)).toHaveLength(2);

      expect(await out.deadLetter(ev, url, failed.error, 1, [], fast)).toBeUndefined();
      await expect(out.deadLetter(ev, url, failed.error, 1, [{ kind: "sink", url }], fast)).rejects.toBeInstanceOf(
        NotDelivered,
      );
    } finally {
      await sinks.close();
    }
  });
});
