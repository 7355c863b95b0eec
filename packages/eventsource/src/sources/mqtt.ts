/**
 * The MQTT source: subscribes to a topic filter (OpenFunction's fields, which it handed to Dapr's
 * `bindings.mqtt`) and acknowledges each QoS 1 message (PUBACK) only after dispatch resolved.
 *
 * Delivery: QoS 1 (the default) is at-least-once. A message whose dispatch fails is retried with
 * backoff and not acknowledged; if the connection drops or the source stops first, the broker keeps
 * it in the persistent session (`cleanSession: false`, the default) and re-sends it, with the DUP
 * flag, on the next connection (MQTT 3.1.1 §4.4, MQTT 5 §4.4: brokers re-send only on reconnect, never
 * on the same connection). QoS 2 is subscribed as QoS 1: exactly-once cannot hold across the hop to
 * the bus, and a PUBREC sent before the dispatch would lose the message in a crash. QoS 0 is
 * at-most-once.
 *
 * Events: subject = the MQTT topic; id random (MQTT packet ids are reused, so no stable id exists)
 * unless the message is a CloudEvent (MQTT 5 binary mode: user properties; structured mode: content
 * type application/cloudevents+json), whose attributes are kept. A redelivered message carries the
 * extension `mqttdup: true`, a retained one `mqttretained: true`.
 */
import { connect, validateTopic, type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";
import {
  EventError,
  SourceKind,
  assertCloudEvent,
  sleep,
  type CloudEvent,
  type MqttSourceSpec,
  type ValidationIssue,
  sourceConsumerName,
  EXTENSION_NAME,
  mediaType,
} from "@ofevents/core";
import { untilTaken } from "@ofevents/delivery";
import type { Dispatch, DispatchInit, RunningSource, SourceAdapter, SourceContext } from "../types.js";
import { decodeData } from "./message.js";

/** Extension attributes this source sets. */
export const MqttExtension = {
  /** The broker re-sent the message (DUP flag): it may have been dispatched before. */
  Dup: "mqttdup",
  /** The message is the retained one of its topic, sent on subscribe. */
  Retained: "mqttretained",
} as const;

const SCHEMES: Record<string, { protocol: "mqtt" | "mqtts" | "ws" | "wss"; port: number }> = {
  "tcp:": { protocol: "mqtt", port: 1883 },
  "mqtt:": { protocol: "mqtt", port: 1883 },
  "ssl:": { protocol: "mqtts", port: 8883 },
  "tls:": { protocol: "mqtts", port: 8883 },
  "tcps:": { protocol: "mqtts", port: 8883 },
  "mqtts:": { protocol: "mqtts", port: 8883 },
  "ws:": { protocol: "ws", port: 80 },
  "wss:": { protocol: "wss", port: 443 },
};

const CONNECT_TIMEOUT_MS = 10_000;
/** How long start() waits for the first subscription before going on in the background. */
const READY_WAIT_MS = 5_000;
const KEEPALIVE_S = 60;
const RECONNECT_MS = 2_000;
// MQTT 5: a persistent session must outlive the connection (3.1.1 sessions never expire).
const SESSION_NEVER_EXPIRES = 0xffffffff;
// CONNACK codes meaning "not this protocol version": 3.1.1's 0x01 and MQTT 5's 0x84.
const UNSUPPORTED_PROTOCOL = new Set([1, 0x84]);

function isPem(text: string): boolean {
  return /-----BEGIN [A-Z0-9 ]+-----[\s\S]+-----END [A-Z0-9 ]+-----/.test(text);
}

/** The filter without a `$share/{group}/` prefix (MQTT 5 shared subscriptions). */
function filterOf(topic: string): string {
  const m = /^\$share\/[^/+#]+\/(.+)$/.exec(topic);
  return m === null ? topic : m[1]!;
}

function validate(spec: MqttSourceSpec): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const add = (path: string, message: string): void => void issues.push({ code: "invalid_value", path, message });
  let url: URL | undefined;
  try {
    url = new URL(spec.url);
  } catch {
    add("url", `"${spec.url}" is not a URL (e.g. tcp://broker:1883)`);
  }
  if (url !== undefined) {
    if (SCHEMES[url.protocol] === undefined) {
      const known = Object.keys(SCHEMES).map((k) => `${k}//`);
      add("url", `scheme "${url.protocol}//" is not one of ${known.join(" ")} (e.g. tcp://broker:1883)`);
    } else if (url.hostname === "") {
      add("url", "the URL names no host");
    }
  }
  const filter = filterOf(spec.topic);
  if (!validateTopic(filter) || filter.includes("\u0000")) {
    add("topic", `"${spec.topic}" is not a topic filter ("+" and "#" fill a whole level, "#" only last)`);
  }
  if (spec.consumerID !== undefined && spec.consumerID === "") add("consumerID", "must not be empty");
  for (const f of ["caCert", "clientCert", "clientKey"] as const) {
    const v = spec[f];
    if (v !== undefined && v !== "" && !isPem(v)) add(f, "expected PEM text (-----BEGIN ...-----)");
  }
  if ((spec.clientCert ?? "") !== "" && (spec.clientKey ?? "") === "") add("clientKey", "required with clientCert");
  if ((spec.clientKey ?? "") !== "" && (spec.clientCert ?? "") === "") add("clientCert", "required with clientKey");
  return issues;
}

const DATA_ATTRIBUTES = new Set(["data", "data_base64", "datacontenttype"]);

function userProperty(packet: IPublishPacket, name: string): string | undefined {
  const v = packet.properties?.userProperties?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/** What to dispatch for one message; throws EventError for a malformed CloudEvent. */
export function messageToDispatch(packet: IPublishPacket): DispatchInit {
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  const contentType = packet.properties?.contentType;
  const extensions: Record<string, boolean> = {};
  if (packet.dup) extensions[MqttExtension.Dup] = true;
  if (packet.retain) extensions[MqttExtension.Retained] = true;
  const withFlags = (ev: CloudEvent): CloudEvent => {
    const out: Record<string, unknown> = { ...ev };
    for (const [k, v] of Object.entries(extensions)) out[k] ??= v;
    return out as CloudEvent;
  };

  if (mediaType(contentType) === "application/cloudevents+json") {
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload.toString("utf8"));
    } catch (err) {
      throw new EventError("structured CloudEvent is not valid JSON", { cause: err });
    }
    assertCloudEvent(parsed);
    return { event: withFlags(parsed) };
  }
  // MQTT 5 binary mode: attributes as user properties, data as the payload (CloudEvents MQTT binding §3.1).
  const props = packet.properties?.userProperties;
  if (props !== undefined && userProperty(packet, "specversion") !== undefined) {
    const ev: Record<string, unknown> = {};
    // Other user properties (not attribute names) travel with the message but are not attributes.
    for (const name of Object.keys(props)) {
      if (EXTENSION_NAME.test(name) && !DATA_ATTRIBUTES.has(name)) ev[name] = userProperty(packet, name);
    }
    const { data, datacontenttype } = decodeData(payload, contentType);
    if (datacontenttype !== undefined) ev["datacontenttype"] = datacontenttype;
    if (data instanceof Uint8Array) ev["data_base64"] = Buffer.from(data).toString("base64");
    else ev["data"] = data;
    assertCloudEvent(ev);
    return { event: withFlags(ev) };
  }
  return {
    subject: packet.topic,
    ...decodeData(payload, contentType),
    ...(Object.keys(extensions).length > 0 ? { extensions } : {}),
  };
}

function clientOptions(ctx: SourceContext, spec: MqttSourceSpec, protocolVersion: 4 | 5): IClientOptions {
  const url = new URL(spec.url);
  const scheme = SCHEMES[url.protocol]!;
  const clean = spec.cleanSession ?? false;
  const o: IClientOptions = {
    protocol: scheme.protocol,
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port === "" ? scheme.port : Number(url.port),
    clientId: spec.consumerID ?? sourceConsumerName(ctx.namespace, ctx.eventSource, ctx.eventName),
    clean,
    protocolVersion,
    keepalive: KEEPALIVE_S,
    reconnectPeriod: RECONNECT_MS,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // Subscriptions are renewed by hand, only when the broker lost the session.
    resubscribe: false,
  };
  if (scheme.protocol === "ws" || scheme.protocol === "wss") o.path = url.pathname;
  if (protocolVersion === 5 && !clean) o.properties = { sessionExpiryInterval: SESSION_NEVER_EXPIRES };
  if (url.username !== "") o.username = decodeURIComponent(url.username);
  if (url.password !== "") o.password = decodeURIComponent(url.password);
  if ((spec.caCert ?? "") !== "") o.ca = spec.caCert!;
  if ((spec.clientCert ?? "") !== "") o.cert = spec.clientCert!;
  if ((spec.clientKey ?? "") !== "") o.key = spec.clientKey!;
  return o;
}

export const mqttAdapter: SourceAdapter<MqttSourceSpec> = {
  kind: SourceKind.Mqtt,

  validate,

  async start(ctx: SourceContext, spec: MqttSourceSpec, dispatch: Dispatch): Promise<RunningSource> {
    const log = ctx.logger;
    const qos = Math.min(spec.qos ?? 1, 1) as 0 | 1;
    if (spec.qos === 2) log.info("qos 2 is subscribed as qos 1: at-least-once, redeliveries marked mqttdup");
    const tlsFields = [spec.caCert, spec.clientCert, spec.clientKey].some((v) => (v ?? "") !== "");
    if (tlsFields && !SCHEMES[new URL(spec.url).protocol]!.protocol.endsWith("s")) {
      log.warn(
        { url: spec.url },
        "certificates are set but the URL is not TLS (mqtts://, ssl://, wss://); they are unused",
      );
    }
    const stopper = new AbortController();
    const onAbort = (): void => stopper.abort();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    const inFlight = new Set<Promise<unknown>>();

    // One generation per network connection: an ack belongs to the connection that delivered the message.
    let generation = 0;
    let connection = new AbortController();
    // Aborts on stop or when this connection closes; made once per connection, not per message.
    let connectionSignal = AbortSignal.any([stopper.signal, connection.signal]);
    let client!: MqttClient;
    let markReady!: () => void;
    const ready = new Promise<void>((r) => (markReady = r));

    /** Dispatches with retry; true when the message may be acked, false when its connection or the source ended. */
    async function deliver(packet: IPublishPacket, gen: number, signal: AbortSignal): Promise<boolean> {
      let init: DispatchInit;
      try {
        init = messageToDispatch(packet);
      } catch (err) {
        log.warn({ err, topic: packet.topic }, "malformed CloudEvent message; acknowledged and skipped");
        return true;
      }
      const outcome = await untilTaken(() => dispatch(init), {
        signal,
        alive: () => gen === generation,
        onRefused: (err) =>
          log.error({ err, topic: packet.topic }, "event refused by the bus or sink; message acknowledged and skipped"),
        onRetry: ({ attempt, error, delayMs }) =>
          log.warn(
            { err: error, topic: packet.topic, attempt, retryInMs: delayMs },
            "dispatch failed; message not acknowledged, retrying",
          ),
      });
      return outcome !== "stopped";
    }

    function open(protocolVersion: 4 | 5): MqttClient {
      const c = connect(clientOptions(ctx, spec, protocolVersion));
      let connectedOnce = false;
      // mqtt.js hands incoming PUBLISH packets here one at a time and sends the PUBACK when
      // `callback` runs; until then it reads no further packet, which bounds the work in flight.
      c.handleMessage = (packet, callback) => {
        const gen = generation;
        const signal = connectionSignal;
        const p = deliver(packet, gen, signal).then(
          (ack) => {
            // A message of an earlier connection is re-sent by the broker; acking it here could hit another.
            if (ack && gen === generation) callback();
          },
          (err: unknown) => log.error({ err }, "mqtt message handling failed"),
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      };
      c.on("connect", (connack) => {
        connectedOnce = true;
        log.info(
          { url: spec.url, protocolVersion, sessionPresent: connack.sessionPresent },
          "connected to mqtt broker",
        );
        if (connack.sessionPresent === true) return markReady();
        c.subscribe(spec.topic, protocolVersion === 5 ? { qos, rh: 1 } : { qos }, (err, granted) => {
          if (err !== null && err !== undefined) return log.error({ err, topic: spec.topic }, "mqtt subscribe failed");
          const refused = granted?.find((g) => g.qos === 128);
          if (refused !== undefined) return log.error({ topic: spec.topic }, "the broker refused the subscription");
          log.info({ topic: spec.topic, qos: granted?.[0]?.qos }, "subscribed to mqtt topic");
          markReady();
        });
      });
      c.on("close", () => {
        generation++;
        connection.abort();
        connection = new AbortController();
        connectionSignal = AbortSignal.any([stopper.signal, connection.signal]);
      });
      // Reconnect attempts fail every few seconds while the broker is away: warn once per outage.
      let down = false;
      c.on("error", (err) => {
        const code = (err as Error & { code?: unknown }).code;
        if (!connectedOnce && protocolVersion === 5 && typeof code === "number" && UNSUPPORTED_PROTOCOL.has(code)) {
          log.info({ url: spec.url }, "broker does not speak MQTT 5; using MQTT 3.1.1");
          c.end(true);
          client = open(4);
          return;
        }
        if (down) return log.debug({ err: err.message, url: spec.url }, "mqtt broker still unreachable");
        down = true;
        log.warn({ err: err.message, url: spec.url }, "mqtt client error; reconnecting");
      });
      c.on("offline", () => {
        if (!down) log.warn({ url: spec.url }, "mqtt broker unreachable; reconnecting");
        down = true;
      });
      c.on("connect", () => (down = false));
      return c;
    }

    client = open(5);
    let timer: NodeJS.Timeout | undefined;
    const connected = await Promise.race([
      ready.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), READY_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (!connected) log.warn({ url: spec.url }, "not subscribed yet; still connecting in the background");

    return {
      async stop() {
        stopper.abort();
        ctx.signal.removeEventListener("abort", onAbort);
        // Dispatches that resolve now still send their PUBACK before the DISCONNECT below.
        await Promise.allSettled([...inFlight]);
        const c = client;
        await Promise.race([c.endAsync(false), sleep(2_000)]);
        if (!c.disconnected) c.end(true);
      },
    };
  },
};
