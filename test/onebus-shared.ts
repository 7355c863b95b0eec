/**
 * One bus, whichever client: the flow both onebus tests run against a real daprd that loads the
 * Component core renders for the EventBus, and the direct driver of the same bus.
 *
 *   app ──publish through daprd──► topic IN ──► Trigger on the direct driver ──► topic OUT ──► daprd ──► app
 *                                     └──► a direct subscriber (sees the event as the app sent it)
 *
 * plus a direct publish to OUT, a plain (non-CloudEvent) publish through daprd, which daprd
 * wraps, and our dapr driver and the direct driver publishing to and reading from one topic. The app is a plain HTTP server subscribed the way an OpenFunction async function is
 * (`GET /dapr/subscribe`, deliveries as `POST`), not our dapr driver.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "vitest";
import {
  API_VERSION,
  createExpressionEngine,
  renderDaprComponents,
  silentLogger,
  type AnyEventBus,
  type CloudEvent,
  type Trigger,
} from "@ofevents/core";
import { createEventBus, type EventBus, type Subscription } from "@ofevents/eventbus";
import { startTrigger, type TriggerRuntime } from "@ofevents/trigger";
import { Daprd } from "./helpers/daprd.js";
import { randomSuffix, waitFor } from "./helpers/wait.js";

/** What daprd POSTed to the app: the route and the parsed JSON body. */
interface Delivery {
  path: string;
  contentType: string | undefined;
  body: Record<string, unknown>;
}

/** An app subscribed through daprd to `topics` on `pubsub`, recording every delivery. */
export class DaprApp {
  readonly deliveries: Delivery[] = [];
  port = 0;
  private server!: Server;

  constructor(
    private readonly pubsub: string,
    private readonly topics: readonly string[],
  ) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void readBody(req).then((text) => {
        if (req.method === "GET" && req.url === "/dapr/subscribe") {
          const subs = this.topics.map((topic, i) => ({ pubsubname: this.pubsub, topic, route: `/t${i}` }));
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(subs));
          return;
        }
        if (req.method === "POST" && req.url?.startsWith("/t") === true) {
          this.deliveries.push({
            path: req.url,
            contentType: req.headers["content-type"],
            body: JSON.parse(text) as Record<string, unknown>,
          });
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ status: "SUCCESS" }));
          return;
        }
        res.writeHead(404).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** The deliveries of `topic` (by its route). */
  of(topic: string): Array<Record<string, unknown>> {
    const route = `/t${this.topics.indexOf(topic)}`;
    return this.deliveries.filter((d) => d.path === route).map((d) => d.body);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** A CloudEvent with every kind of attribute: optional core ones, extensions, JSON data; non-ASCII in subject, extension and data. */
export function richEvent(n: number, suffix: string): CloudEvent {
  return {
    specversion: "1.0",
    id: `onebus-${suffix}-${n}`,
    source: "/onebus/app",
    type: "io.ofevents.onebus",
    subject: `bestellung-${n} für Zoë ✓`,
    time: "2026-12-04T10:00:00.123Z",
    datacontenttype: "application/json",
    dataschema: "https://example.com/order.json",
    data: { n, text: "grüße", nested: { ok: true, list: [1, 2] } },
    region: "eu-west 🇪🇺 ß",
    priority: 3,
  } as CloudEvent;
}

export interface OneBusSetup {
  /** The EventBus manifest (its name is the Component's and the pub/sub name). */
  bus: AnyEventBus;
  /** Creates what the broker needs for a topic before daprd subscribes (JetStream: its stream). */
  prepareTopic?: (topic: string) => Promise<void>;
  /** The Dapr topic of a bus topic, which Dapr-side apps use (default: the same name). */
  daprTopic?: (topic: string) => string;
  /** How long each wait may take. */
  timeoutMs: number;
}

export interface OneBusResult {
  suffix: string;
  /** The topic the app publishes to and the trigger reads. */
  input: string;
  /** The topic the trigger publishes to and the app reads. */
  output: string;
}

/**
 * Runs the flow and asserts that every event crosses in both directions with its attributes
 * intact. Cleans up what it started.
 */
export async function runOneBusFlow(setup: OneBusSetup): Promise<OneBusResult> {
  const logger = silentLogger();
  const s = randomSuffix();
  const pubsub = setup.bus.metadata.name;
  const eventSource = `es-${s}`;
  const input = `default-${eventSource}-orders`;
  const output = `out-${s}`;
  const wait = { timeoutMs: setup.timeoutMs };
  const daprTopic = setup.daprTopic ?? ((t: string) => t);

  const stops: Array<() => Promise<unknown>> = [];
  try {
    const direct: EventBus = await createEventBus(setup.bus.spec, { logger });
    stops.push(() => direct.close());
    expect(direct.driver).not.toBe("dapr");
    for (const t of [input, output]) await setup.prepareTopic?.(t);

    // Direct subscribers on both topics (they also create the Kafka topics before daprd starts).
    const seenIn: CloudEvent[] = [];
    const seenOut: CloudEvent[] = [];
    const subs: Subscription[] = [
      await direct.subscribe([input], async (e) => void seenIn.push(e), { group: `observer-in-${s}` }),
      await direct.subscribe([output], async (e) => void seenOut.push(e), { group: `observer-out-${s}` }),
    ];
    stops.push(() => Promise.all(subs.map((x) => x.close())));

    const app = new DaprApp(pubsub, [daprTopic(output)]);
    await app.start();
    stops.push(() => app.stop());
    const daprd = await Daprd.start({
      appId: `app-${s}`,
      appPort: app.port,
      resources: renderDaprComponents(setup.bus) as unknown as Array<Record<string, unknown>>,
    });
    stops.push(() => daprd.stop());

    const trigger = {
      apiVersion: API_VERSION,
      kind: "Trigger",
      metadata: { name: `relay-${s}`, namespace: "default" },
      spec: {
        eventBus: pubsub,
        inputs: { orders: { eventSource, event: "orders" } },
        subscribers: [{ condition: "orders", topic: output }],
      },
    } as Trigger;
    const rt: TriggerRuntime = await startTrigger(trigger, { bus: direct, logger, engine: createExpressionEngine() });
    stops.push(() => rt.stop());

    // 1. The app publishes a structured CloudEvent through daprd; the direct side reads it as sent.
    const sent = richEvent(1, s);
    const res = await daprd.publish(pubsub, daprTopic(input), sent);
    expect(res.status, await res.text()).toBe(204);
    await waitFor(() => seenIn.length >= 1, { ...wait, message: "the app's event at the direct subscriber" });
    expect(seenIn[0]).toEqual(sent);

    // 2. The trigger (direct driver) forwards it to OUT; the app gets it through daprd, intact.
    await waitFor(() => app.of(daprTopic(output)).length >= 1, { ...wait, message: "the trigger's event at the app" });
    const relayed = app.of(daprTopic(output))[0]!;
    expect(relayed).toMatchObject(sent as unknown as Record<string, unknown>);
    expect(relayed).not.toHaveProperty("ofdapr");
    await waitFor(() => seenOut.length >= 1, { ...wait, message: "the trigger's event at the direct subscriber" });
    expect(seenOut[0]).toMatchObject(sent as unknown as Record<string, unknown>);

    // 3. A direct publish reaches the app exactly (no attribute added or lost but daprd's own).
    const second = richEvent(2, s);
    await direct.publish(output, second);
    await waitFor(() => app.of(daprTopic(output)).some((e) => e["id"] === second.id), {
      ...wait,
      message: "the direct publish at the app",
    });
    const got = app.of(daprTopic(output)).find((e) => e["id"] === second.id)!;
    const daprdOwn = new Set(["topic", "pubsubname", "traceid", "traceparent", "tracestate"]);
    expect(Object.fromEntries(Object.entries(got).filter(([k]) => !daprdOwn.has(k)))).toEqual(second);

    // 4. A plain JSON publish through daprd (daprd makes the CloudEvent) decodes on the direct side.
    const plain = await daprd.publish(pubsub, daprTopic(input), JSON.stringify({ plain: s }), {
      contentType: "application/json",
    });
    expect(plain.status, await plain.text()).toBe(204);
    const wrapped = await waitFor(() => seenIn.find((e) => e.type === "com.dapr.event.sent"), {
      ...wait,
      message: "daprd's wrapped event at the direct subscriber",
    });
    expect(wrapped.data).toEqual({ plain: s });
    expect(wrapped.source).toBe(`app-${s}`);
    expect(wrapped).not.toHaveProperty("topic");
    expect(wrapped).not.toHaveProperty("pubsubname");

    // 5. Our dapr driver (an EventSource or Trigger through its sidecar) and the direct driver on
    //    one topic: each reads exactly what the other published, trace context included.
    const viaDapr = await createEventBus(setup.bus.spec, {
      logger,
      via: "dapr",
      dapr: {
        pubsubName: pubsub,
        httpPort: daprd.httpPort,
        grpcPort: daprd.grpcPort,
        prepareTopic: setup.prepareTopic,
      },
    });
    stops.splice(stops.length - 1, 0, () => viaDapr.close());
    const both = `both-${s}`;
    const fromDirect: CloudEvent[] = [];
    const fromDapr: CloudEvent[] = [];
    await viaDapr.subscribe([both], async (e) => void fromDirect.push(e), { group: `dapr-${s}` });
    const directSub = await direct.subscribe([both], async (e) => void fromDapr.push(e), { group: `direct-${s}` });
    stops.push(() => directSub.close());
    const traced = {
      ...richEvent(3, s),
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    } as CloudEvent;
    const plainDirect = richEvent(4, s);
    await viaDapr.publish(both, traced);
    await direct.publish(both, plainDirect);
    await waitFor(() => fromDirect.length >= 2 && fromDapr.length >= 2, {
      ...wait,
      message: "both events at both drivers",
    });
    const byId = (list: CloudEvent[], id: string) => list.find((e) => e.id === id);
    expect(byId(fromDapr, traced.id)).toEqual(traced);
    expect(byId(fromDapr, plainDirect.id)).toEqual(plainDirect);
    expect(byId(fromDirect, traced.id)).toEqual(traced);
    expect(byId(fromDirect, plainDirect.id)).toEqual(plainDirect);
    return { suffix: s, input, output };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
}
