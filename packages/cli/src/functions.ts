/**
 * Hosts local functions in embedded mode. A `Function` manifest (core.openfunction.io/v1beta1)
 * names its module with the annotation `ofevents.io/module` (a path relative to the manifest
 * file, .js or .mjs). The module's default export is `(event, ctx) => result`:
 * - sync functions (`serving.runtime: knative`, the default) are served over HTTP at
 *   `http://{host}:{port}/{namespace}/{name}`; the result becomes the JSON answer, a throw a 500
 *   (or the error's `status`). The request is decoded by core's `toEvent` (binary or structured
 *   mode; a batch, as a subscriber with `batch` sends, is passed as an array of events), so the
 *   handler gets the event as sent: attributes percent-decoded,
 *   `time` untouched, JSON data as its value, text as a string, other bytes as `data_base64`;
 * - async functions (`serving.runtime: async`) consume `serving.inputs[].topic` from the bus; a
 *   throw makes the bus redeliver the event.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import {
  ErrorCode,
  MODULE_ANNOTATION,
  OfEventsError,
  isSyncFunction,
  newEvent,
  sendJson,
  type CloudEvent,
  type FunctionResource,
  type Located,
  type Logger,
} from "@ofevents/core";
import { toEvent } from "@ofevents/delivery";
import type { EventBus, Subscription } from "@ofevents/eventbus";

export interface FunctionContext {
  name: string;
  namespace: string;
  logger: Logger;
  /** Publishes data (or a whole CloudEvent) to a bus topic. */
  publish(topic: string, dataOrEvent: unknown): Promise<void>;
}

/** A function's default export: one event, or an array of events for a batch request. */
export type FunctionHandler = (event: CloudEvent | CloudEvent[], ctx: FunctionContext) => unknown;

export interface FunctionHost {
  /**
   * URL of a hosted sync Function; for anything else (a Function deployed elsewhere, another
   * kind) an address of this host that answers 404 with the reason, so a delivery to it fails
   * with a clear error when it is used. Such addresses need `serveUnreachable`.
   */
  urlOf(namespace: string, name: string, kind?: string): string;
  readonly port: number;
  stop(): Promise<void>;
}

async function loadHandler(fn: Located<FunctionResource>, version?: number): Promise<FunctionHandler> {
  const rel = fn.resource.metadata.annotations?.[MODULE_ANNOTATION];
  if (rel === undefined) {
    throw new OfEventsError(
      ErrorCode.FunctionLoad,
      `Function ${fn.resource.metadata.name} (${fn.file}): add the annotation ${MODULE_ANNOTATION} naming its local module to run it embedded`,
    );
  }
  const path = resolve(dirname(fn.file), rel);
  let mod: { default?: unknown };
  try {
    // A new version is a new URL: Node's module cache then imports the file again.
    const url = pathToFileURL(path).href + (version === undefined ? "" : `?version=${version}`);
    mod = (await import(url)) as { default?: unknown };
  } catch (err) {
    throw new OfEventsError(
      ErrorCode.FunctionLoad,
      `Function ${fn.resource.metadata.name}: cannot load ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (typeof mod.default !== "function") {
    throw new OfEventsError(
      ErrorCode.FunctionLoad,
      `Function ${fn.resource.metadata.name}: ${path} has no default export function`,
    );
  }
  return mod.default as FunctionHandler;
}

function readAll(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((res, rej) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        rej(new Error("payload too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => res(Buffer.concat(chunks)));
    req.on("error", rej);
  });
}

export async function startFunctionHost(o: {
  functions: Located<FunctionResource>[];
  /** Functions of the manifests that run elsewhere (no module annotation): named in the 404. */
  elsewhere?: Located<FunctionResource>[] | undefined;
  /** Serve even without a local sync Function, so that unreachable sink refs answer 404. */
  serveUnreachable?: boolean | undefined;
  busFor: (fn: FunctionResource, component: string | undefined) => EventBus;
  logger: Logger;
  host: string;
  port: number;
  /** Import the modules anew as this version (`run --watch`). */
  moduleVersion?: number | undefined;
}): Promise<FunctionHost> {
  const log = o.logger.child({ component: "functions" });
  const sync = new Map<string, { handler: FunctionHandler; ctx: FunctionContext }>();
  const subs: Subscription[] = [];

  const makeCtx = (fn: FunctionResource, bus: EventBus | undefined): FunctionContext => {
    const namespace = fn.metadata.namespace ?? "default";
    return {
      name: fn.metadata.name,
      namespace,
      logger: o.logger.child({ component: "function", function: `${namespace}/${fn.metadata.name}` }),
      async publish(topic, dataOrEvent) {
        const b = bus ?? o.busFor(fn, undefined);
        const isEvent =
          typeof dataOrEvent === "object" &&
          dataOrEvent !== null &&
          "specversion" in dataOrEvent &&
          "id" in dataOrEvent;
        await b.publish(
          topic,
          isEvent
            ? (dataOrEvent as CloudEvent)
            : newEvent({
                source: `/apis/v1/namespaces/${namespace}/functions/${fn.metadata.name}`,
                type: "io.openfunction.function.output",
                data: dataOrEvent,
              }),
        );
      },
    };
  };

  for (const located of o.functions) {
    const fn = located.resource;
    const handler = await loadHandler(located, o.moduleVersion);
    const namespace = fn.metadata.namespace ?? "default";
    if (isSyncFunction(fn)) {
      sync.set(`/${namespace}/${fn.metadata.name}`, { handler, ctx: makeCtx(fn, undefined) });
      continue;
    }
    for (const input of fn.spec.serving?.inputs ?? []) {
      if (input.topic === undefined) continue;
      const bus = o.busFor(fn, input.component);
      const ctx = makeCtx(fn, bus);
      subs.push(
        await bus.subscribe(
          [input.topic],
          async (event) => {
            await handler(event, ctx);
          },
          { group: `function-${namespace}-${fn.metadata.name}` },
        ),
      );
      log.info({ function: `${namespace}/${fn.metadata.name}`, topic: input.topic }, "async function subscribed");
    }
  }

  let server: Server | undefined;
  let port = o.port;
  const elsewhere = new Set(
    (o.elsewhere ?? []).map((f) => `${f.resource.metadata.namespace ?? "default"}/${f.resource.metadata.name}`),
  );
  const unreachable = (path: string): string | undefined => {
    const m = /^\/_unreachable\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(path);
    if (m === null) return undefined;
    const [, kind, ns, name] = m.map((p) => decodeURIComponent(p)) as [string, string, string, string];
    if (kind === "Function" && elsewhere.has(`${ns}/${name}`))
      return `Function ${ns}/${name} is deployed elsewhere (no ${MODULE_ANNOTATION} annotation): ofevents run cannot call it; give the subscriber a sink.uri, or the Function a local module`;
    if (kind === "Function") return `no local sync Function ${ns}/${name}`;
    return `${kind} ${ns}/${name} is resolved on a cluster only: ofevents run cannot call it; give a sink.uri`;
  };
  if (sync.size > 0 || o.serveUnreachable === true) {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? "/").split("?")[0]!.replace(/\/$/, "");
      const entry = sync.get(path);
      const reply = (status: number, body: unknown): void => {
        if (!res.headersSent) sendJson(res, status, body);
      };
      if (entry === undefined) {
        req.resume();
        return reply(404, { error: unreachable(path) ?? `no function at ${path}` });
      }
      readAll(req, 10 * 1024 * 1024)
        .then(async (body) => {
          let event: CloudEvent | CloudEvent[];
          try {
            // The CloudEvents HTTP binding as the sinks' encoder writes it (delivery `toEvent`): the
            // function gets the event (or the batch, as an array) exactly as an external sink would.
            event = toEvent(req.headers, body);
          } catch (err) {
            return reply(400, { error: `not a CloudEvent: ${(err as Error).message}` });
          }
          try {
            const result = await entry.handler(event, entry.ctx);
            return reply(200, result ?? { ok: true });
          } catch (err) {
            const status = (err as { status?: unknown }).status;
            return reply(typeof status === "number" && status >= 400 && status < 600 ? status : 500, {
              error: (err as Error).message,
            });
          }
        })
        .catch((err: unknown) => reply(400, { error: (err as Error).message }));
    });
    const s = server;
    await new Promise<void>((res, rej) => {
      s.once("error", rej);
      s.listen(o.port, o.host, () => res());
    });
    port = (s.address() as AddressInfo).port;
    for (const path of sync.keys()) log.info({ url: `http://${o.host}:${port}${path}` }, "sync function serving");
  }

  return {
    port,
    urlOf(namespace, name, kind = "Function") {
      if (kind === "Function" && sync.has(`/${namespace}/${name}`))
        return `http://${o.host}:${port}/${namespace}/${name}`;
      const parts = [kind, namespace, name].map(encodeURIComponent).join("/");
      return `http://${o.host}:${port}/_unreachable/${parts}`;
    },
    async stop() {
      await Promise.allSettled(subs.map((s) => s.close()));
      if (server !== undefined) {
        const s = server;
        await new Promise<void>((r) => {
          s.close(() => r());
          s.closeIdleConnections();
        });
      }
    },
  };
}
