/**
 * Free TCP ports for servers the tests and benchmarks start. Picked below Linux's ephemeral range
 * (32768-60999): a port the kernel hands out for `listen(0)` is in that range, and between picking
 * it and the server's own listen, an outgoing connection of any process (a Kafka or NATS client)
 * can take it as its local port (EADDRINUSE, seen in CI). Below the range only explicit picks
 * compete, and each pick is checked by binding it.
 *
 * A pick is released before the server that asked for it listens, so a later pick could return the
 * same port while that server is still starting (a Pod's port map and its daprd sidecar's ports
 * collided that way in CI). `handedOut` keeps every port this process has given, so no two picks of
 * one process return the same port; it starts over when it holds half the range.
 */
import { createServer, type Server } from "node:net";

const LOW = 20_000;
const HIGH = 32_767;
const handedOut = new Set<number>();

function tryListen(port: number, host: string): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(undefined));
    srv.listen(port, host, () => resolve(srv));
  });
}

/** `count` distinct free ports on `host`, each bound once to check it, then released. */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    for (let tries = 0; ports.length < count; tries++) {
      if (tries > 1_000) throw new Error(`no free port in ${LOW}-${HIGH} after 1000 tries`);
      const port = LOW + Math.floor(Math.random() * (HIGH - LOW + 1));
      if (ports.includes(port) || handedOut.has(port)) continue;
      const srv = await tryListen(port, host);
      if (srv === undefined) continue;
      held.push(srv);
      ports.push(port);
      if (handedOut.size >= (HIGH - LOW) / 2) handedOut.clear();
      handedOut.add(port);
    }
  } finally {
    await Promise.all(held.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  }
  return ports;
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  const [port] = await freePorts(1, host);
  return port!;
}
