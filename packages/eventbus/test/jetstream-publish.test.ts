/**
 * The JetStream bus's publisher (jetstream-publish.ts) against a real nats-server with JetStream:
 * its answers and failures, and through the bus, that a publish builds no error once answered.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ErrorCode as NatsErrorCode, NatsError, connect, type NatsConnection } from "nats";
import { BusError, ErrorCode, newEvent, silentLogger } from "@ofevents/core";
import { NatsServer } from "../../../test/helpers/nats.js";
import { createJetStreamBus, jetStreamNames } from "../src/drivers/jetstream.js";
import { JetStreamPublisher } from "../src/drivers/jetstream-publish.js";
import { uniq } from "./contract.js";

let server: NatsServer;

beforeAll(async () => {
  // Every client (no credentials: the no_auth_user) may publish anywhere but under `denied.`.
  server = await NatsServer.start({
    jetstream: true,
    config: `authorization { users: [
      { user: pub, password: pw, permissions: { publish: { allow: [">"], deny: ["denied.>"] } } }
    ] }
    no_auth_user: pub`,
  });
});

afterAll(async () => {
  await server?.stop();
});

function conn(): Promise<NatsConnection> {
  return connect({ servers: server.url });
}

/** Rejection of `p` as a NatsError (fails the test when `p` resolves or rejects otherwise). */
async function natsFailure(p: Promise<unknown>): Promise<NatsError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NatsError);
  return err as NatsError;
}

describe("jetstream publish", () => {
  it("jetstream publish - answers: the PubAck, a duplicate Nats-Msg-Id, no stream (NoResponders)", async () => {
    const nc = await conn();
    try {
      const subject = uniq("pub.ok");
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: uniq("S"), subjects: [subject] });
      const p = new JetStreamPublisher(nc);
      const first = await p.publish(subject, new TextEncoder().encode("{}"), "id-1", 5_000);
      expect(first).toMatchObject({ seq: 1, duplicate: false });
      expect(first.stream).not.toBe("");
      expect(await p.publish(subject, new TextEncoder().encode("{}"), "id-1", 5_000)).toMatchObject({
        seq: 1,
        duplicate: true,
      });
      expect((await p.publish(subject, new TextEncoder().encode("{}"), "id-2", 5_000)).seq).toBe(2);
      const none = await natsFailure(p.publish(uniq("pub.nostream"), new Uint8Array(1), "id-3", 5_000));
      expect(none.code).toBe(NatsErrorCode.NoResponders);
      expect(p.waiting).toBe(0);
    } finally {
      await nc.close();
    }
  });

  it("jetstream publish - failures: JetStream's error with api_error, an answer that is not JSON, no answer (Timeout)", async () => {
    const nc = await conn();
    const responder = await conn();
    try {
      const base = uniq("pub.fake");
      // Stand-ins for a stream on core NATS subjects: one answers an error, one garbage, one nothing.
      responder.subscribe(`${base}.error`, {
        callback: (_e, m) =>
          m.respond(
            new TextEncoder().encode(
              JSON.stringify({
                error: { code: 400, err_code: 10054, description: "message size exceeds maximum allowed" },
              }),
            ),
          ),
      });
      responder.subscribe(`${base}.garbage`, { callback: (_e, m) => m.respond(new TextEncoder().encode("not json")) });
      responder.subscribe(`${base}.silent`, { callback: () => undefined });
      await responder.flush();
      const p = new JetStreamPublisher(nc);
      const api = await natsFailure(p.publish(`${base}.error`, new Uint8Array(1), "a", 5_000));
      expect(api.api_error).toEqual({
        code: 400,
        err_code: 10054,
        description: "message size exceeds maximum allowed",
      });
      expect(api.message).toBe("message size exceeds maximum allowed");
      expect((await natsFailure(p.publish(`${base}.garbage`, new Uint8Array(1), "b", 5_000))).code).toBe(
        NatsErrorCode.BadJson,
      );
      expect((await natsFailure(p.publish(`${base}.silent`, new Uint8Array(1), "c", 300))).code).toBe(
        NatsErrorCode.Timeout,
      );
      expect(p.waiting).toBe(0);
    } finally {
      await responder.close();
      await nc.close();
    }
  });

  it("jetstream publish - each publish times out at its own deadline: a short one after a long one is not held back", async () => {
    const nc = await conn();
    const responder = await conn();
    try {
      const silent = uniq("pub.silent");
      responder.subscribe(silent, { callback: () => undefined });
      await responder.flush();
      const p = new JetStreamPublisher(nc);
      const long = natsFailure(p.publish(silent, new Uint8Array(1), "long", 60_000));
      const started = Date.now();
      const short = await natsFailure(p.publish(silent, new Uint8Array(1), "short", 300));
      const took = Date.now() - started;
      expect(short.code).toBe(NatsErrorCode.Timeout);
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(5_000);
      // The long one still waits, and the next short one times out on its own deadline too.
      expect(p.waiting).toBe(1);
      expect((await natsFailure(p.publish(silent, new Uint8Array(1), "short-2", 200))).code).toBe(
        NatsErrorCode.Timeout,
      );
      expect(p.waiting).toBe(1);
      await nc.close();
      expect((await long).code).toBe(NatsErrorCode.ConnectionClosed);
      expect(p.waiting).toBe(0);
    } finally {
      await responder.close();
      if (!nc.isClosed()) await nc.close();
    }
  });

  it("jetstream publish - a denied publish fails with PermissionsViolation at once; others on the connection go on", async () => {
    const nc = await conn();
    try {
      const subject = uniq("pub.allowed");
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: uniq("S"), subjects: [subject] });
      const p = new JetStreamPublisher(nc);
      // A minute's timeout: only the server's -ERR can end this publish within the test's time.
      const denied = await natsFailure(p.publish(uniq("denied.x"), new Uint8Array(1), "d", 60_000));
      expect(denied.code).toBe(NatsErrorCode.PermissionsViolation);
      expect(denied.isPermissionError()).toBe(true);
      expect((await p.publish(subject, new Uint8Array(1), "e", 5_000)).seq).toBe(1);
      expect(p.waiting).toBe(0);
    } finally {
      await nc.close();
    }
  });

  it("jetstream publish - closing the connection fails the publishes waiting for an answer at once (ConnectionClosed)", async () => {
    const nc = await conn();
    const responder = await conn();
    try {
      const subject = uniq("pub.silent");
      responder.subscribe(subject, { callback: () => undefined });
      await responder.flush();
      const p = new JetStreamPublisher(nc);
      const waiting = [1, 2, 3].map((n) => natsFailure(p.publish(subject, new Uint8Array(1), `w-${n}`, 60_000)));
      await nc.flush();
      expect(p.waiting).toBe(3);
      await nc.close();
      for (const err of await Promise.all(waiting)) expect(err.code).toBe(NatsErrorCode.ConnectionClosed);
      expect(p.waiting).toBe(0);
      expect((await natsFailure(p.publish(subject, new Uint8Array(1), "after", 5_000))).code).toBe(
        NatsErrorCode.ConnectionClosed,
      );
    } finally {
      await responder.close();
      if (!nc.isClosed()) await nc.close();
    }
  });
});

describe("jetstream publish - through the bus", () => {
  it("jetstream publish - 300 bus publishes are stored once each and build no nats.js error once answered", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() });
    const nc = await conn();
    // nats.js's request path builds a Cancelled error with errorForCode after every answer.
    const built = vi.spyOn(NatsError, "errorForCode");
    try {
      const topic = uniq("t");
      const n = 300;
      await bus.publish(topic, newEvent({ id: "warm-up", source: "/t", type: "t" }));
      built.mockClear();
      await Promise.all(
        Array.from({ length: n }, (_, i) => bus.publish(topic, newEvent({ id: `e-${i}`, source: "/t", type: "t" }))),
      );
      expect(built).not.toHaveBeenCalled();
      const jsm = await nc.jetstreamManager();
      expect((await jsm.streams.info(jetStreamNames("ofevents", topic).stream)).state.messages).toBe(n + 1);
      // The same ids again: the stream's de-duplication keeps one of each.
      await Promise.all(
        Array.from({ length: 10 }, (_, i) => bus.publish(topic, newEvent({ id: `e-${i}`, source: "/t", type: "t" }))),
      );
      expect((await jsm.streams.info(jetStreamNames("ofevents", topic).stream)).state.messages).toBe(n + 1);
    } finally {
      built.mockRestore();
      await nc.close();
      await bus.close();
    }
  });

  it("jetstream publish - a topic the account may not publish to is refused as not retriable, without waiting for the timeout", async () => {
    const bus = await createJetStreamBus({ url: server.url }, { logger: silentLogger() }, { publishTimeoutMs: 60_000 });
    try {
      const err = await bus.publish(uniq("denied.t"), newEvent({ source: "/t", type: "t" })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe(ErrorCode.BusPublish);
      expect((err as BusError).retriable).toBe(false);
    } finally {
      await bus.close();
    }
  });
});
