// Support for the tests that run a source adapter against its real server through the real
// EventSource runtime onto an in-memory bus: start an EventSource with one event, collect what the
// bus receives on its topic, and a publisher that rejects the way a bus that is down does.
import {
  BusError,
  ErrorCode,
  busTopic,
  createInstrumentation,
  createSecretResolver,
  eventSourceSchema,
  silentLogger,
  type CloudEvent,
  type EventSource,
  type SecretResolver,
  type SourceKind,
} from "@ofevents/core";
import type { EventPublisher, EventSubscriber } from "@ofevents/eventbus";
import { createWebhookServers, startEventSource, type EventSourceRuntime, type SourceEvents } from "../src/index.js";
import { randomSuffix } from "../../../test/helpers/wait.js";

/** A random CloudEvent id (the adapters use one where the source has no position). */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface FlakyPublisherOptions {
  /** Reject the first N publishes (default 0); the same as setting `failNext`. */
  failNext?: number;
  /** Pause before each publish that goes through to the inner publisher. */
  delayMs?: number;
  /** Awaited on each rejection, before the error is thrown. */
  onReject?: () => Promise<void>;
}

/**
 * A publisher in front of `inner` that rejects with a retriable BusError while `down` is set or
 * for the next `failNext` publishes, and passes every other publish on.
 */
export class FlakyPublisher implements EventPublisher {
  down = false;
  failNext: number;
  /** Publishes asked for, rejected or not. */
  calls = 0;
  rejected = 0;
  private readonly delayMs: number;
  private readonly onReject: (() => Promise<void>) | undefined;

  constructor(
    private readonly inner: EventPublisher,
    options: FlakyPublisherOptions = {},
  ) {
    this.failNext = options.failNext ?? 0;
    this.delayMs = options.delayMs ?? 0;
    this.onReject = options.onReject;
  }

  async publish(topic: string, event: CloudEvent): Promise<void> {
    this.calls++;
    if (this.down || this.failNext > 0) {
      if (this.failNext > 0) this.failNext--;
      this.rejected++;
      await this.onReject?.();
      throw new BusError(ErrorCode.BusPublish, "bus unavailable (test)", { topic });
    }
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    await this.inner.publish(topic, event);
  }
}

/** An EventSource started by `SourceHarness.start`, with what its runtime reported. */
export interface RunningSource {
  runtime: EventSourceRuntime;
  /** Ids of the events published to the bus, in order. */
  published: string[];
  /** Ids of the events whose publish failed, once per failure. */
  failed: string[];
  stop(): Promise<void>;
}

/** Builds, starts and observes EventSources of one kind, each with one event, in one namespace. */
export interface SourceHarness {
  /** The EventSource `name` on the bus "default" with `spec` as its one event. */
  manifest(name: string, spec: object): EventSource;
  /**
   * Starts the EventSource through `startEventSource` with one publish attempt (the adapter's own
   * retry and redelivery are under test, not the runtime's) and the given secrets (default none).
   * Rejects with the first start failure.
   */
  start(name: string, spec: object, bus: EventPublisher, secrets?: SecretResolver): Promise<RunningSource>;
  /** Subscribes to the bus topic of EventSource `name` in a group of its own; the array fills as events arrive. */
  collect(bus: EventSubscriber, name: string): Promise<CloudEvent[]>;
  /** The CloudEvent `source` of the events of EventSource `name`. */
  sourceOf(name: string): string;
}

export function sourceHarness(at: { namespace: string; kind: SourceKind; event: string }): SourceHarness {
  const manifest = (name: string, spec: object): EventSource =>
    eventSourceSchema.parse({
      apiVersion: "events.openfunction.io/v1alpha1",
      kind: "EventSource",
      metadata: { name, namespace: at.namespace },
      spec: { eventBus: "default", [at.kind]: { [at.event]: spec } },
    });

  return {
    manifest,

    async start(name, spec, bus, secrets = createSecretResolver([], {})) {
      const instrumentation = createInstrumentation<SourceEvents>();
      const startFailures: unknown[] = [];
      const published: string[] = [];
      const failed: string[] = [];
      instrumentation.on("start_failed", (e) => startFailures.push(e.error));
      instrumentation.on("published", (e) => published.push(e.id));
      instrumentation.on("failed", (e) => failed.push(e.id));
      const runtime = await startEventSource(manifest(name, spec), {
        logger: silentLogger(),
        bus,
        secrets,
        webhooks: createWebhookServers({ logger: silentLogger() }),
        instrumentation,
        publishAttempts: 1,
      });
      if (startFailures.length > 0) throw startFailures[0];
      return { runtime, published, failed, stop: () => runtime.stop() };
    },

    async collect(bus, name) {
      const got: CloudEvent[] = [];
      await bus.subscribe(
        [busTopic(at.namespace, name, at.event)],
        async (ev) => {
          got.push(ev);
        },
        { group: `test-${randomSuffix()}` },
      );
      return got;
    },

    sourceOf: (name) => `/apis/v1/namespaces/${at.namespace}/eventsources/${name}`,
  };
}
