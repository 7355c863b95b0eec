/** Test support shared by the trigger tests: a real HTTP sink and a bounded wait. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** A real HTTP sink recording binary-mode CloudEvents; `status` scripts its answer. */
export class Sink {
  /**
   * `data`: the body parsed as JSON (undefined when empty or not JSON); `body`: the body as sent;
   * `at`: when the request arrived (performance.now(), ms).
   */
  received: Array<{ headers: Record<string, string | string[] | undefined>; data: unknown; body: Buffer; at: number }> =
    [];
  /** Extra headers of each answer (e.g. Retry-After), by request number. */
  answerHeaders: (n: number) => Record<string, string> = () => ({});
  status: (n: number) => number = () => 200;
  delayMs = 0;
  /** The answer delay of request `n` (default `delayMs`). */
  delayFor: (n: number) => number = () => this.delayMs;
  inFlight = 0;
  peak = 0;
  url = "";
  private server!: Server;
  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.inFlight++;
        this.peak = Math.max(this.peak, this.inFlight);
        const n = this.received.length;
        const body = Buffer.concat(chunks);
        let data: unknown;
        try {
          data = body.length === 0 ? undefined : JSON.parse(body.toString("utf8"));
        } catch {
          data = undefined;
        }
        this.received.push({ headers: req.headers, data, body, at: performance.now() });
        setTimeout(() => {
          this.inFlight--;
          res.writeHead(this.status(n), this.answerHeaders(n)).end();
        }, this.delayFor(n));
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
    return this;
  }
  ids(): string[] {
    return this.received.map((r) => String(r.headers["ce-id"]));
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** The most requests that started within any window of `windowMs` (times in ms). */
export function busiest(times: number[], windowMs: number): number {
  const t = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}
