import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface RecordingSinkOptions {
  /** Status answered to every request (default 200). */
  status?: number;
  /** Answer this long after the body arrived (default 0). */
  delayMs?: number;
}

/** One request a {@link RecordingSink} received. */
export interface Received {
  id: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * An HTTP sink on 127.0.0.1 that records what it is sent (in arrival order) and answers with a
 * fixed status, optionally after a delay. `ids` holds the `ce-id` of each request answered 2xx.
 */
export class RecordingSink {
  readonly received: Received[] = [];
  readonly ids: string[] = [];
  #server: Server | undefined;
  #url = "";

  private constructor(private readonly options: RecordingSinkOptions) {}

  static async start(options: RecordingSinkOptions = {}): Promise<RecordingSink> {
    const sink = new RecordingSink(options);
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const status = sink.options.status ?? 200;
        const answer = (): void => {
          const id = String(req.headers["ce-id"]);
          sink.received.push({ id, headers: req.headers, body: Buffer.concat(chunks) });
          if (status < 300) sink.ids.push(id);
          res.writeHead(status).end();
        };
        if ((sink.options.delayMs ?? 0) > 0) setTimeout(answer, sink.options.delayMs);
        else answer();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    sink.#server = server;
    sink.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    return sink;
  }

  /** `http://127.0.0.1:<port>/` */
  get url(): string {
    return this.#url;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
