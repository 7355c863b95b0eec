/**
 * Client setup shared by the bus drivers and the event sources that speak to the same brokers:
 * Kafka's TLS, SASL and log bridge, NATS's connection options, credentials and status log. One
 * place, so a source and a bus on the same broker connect and log alike.
 */
import type { ConnectionOptions as TlsOptions } from "node:tls";
import kafkajs from "kafkajs";
import type { LogEntry, logCreator as KafkaLogCreator, SASLOptions } from "kafkajs";
import { credsAuthenticator, type ConnectionOptions as NatsOptions, type NatsConnection } from "nats";
import type { Logger, SaslSpec, SecretKeySelector, TlsSpec } from "@ofevents/core";

const { logLevel: KafkaLogLevel } = kafkajs;

/** Reads one secret value (the caller knows the namespace and the resolver). */
export type ReadSecret = (ref: SecretKeySelector) => string;

/**
 * kafkajs logs through our logger, one level down for INFO (kafkajs is chatty: every join, pause
 * and resume) and DEBUG: INFO → debug, DEBUG → trace. Its level follows the logger's.
 */
export function kafkaLogging(log: Logger): { logLevel: number; logCreator: KafkaLogCreator } {
  const logCreator: KafkaLogCreator =
    () =>
    ({ namespace, level, log: entry }: LogEntry) => {
      const { message, timestamp: _t, logger: _l, ...extra } = entry;
      const fields = { kafkajs: namespace, ...extra };
      if (level === KafkaLogLevel.ERROR) log.error(fields, message);
      else if (level === KafkaLogLevel.WARN) log.warn(fields, message);
      else if (level === KafkaLogLevel.INFO) log.debug(fields, message);
      else log.trace(fields, message);
    };
  let logLevel: number = KafkaLogLevel.NOTHING;
  if (log.isLevelEnabled("trace")) logLevel = KafkaLogLevel.DEBUG;
  else if (log.isLevelEnabled("debug")) logLevel = KafkaLogLevel.INFO;
  else if (log.isLevelEnabled("warn")) logLevel = KafkaLogLevel.WARN;
  else if (log.isLevelEnabled("error")) logLevel = KafkaLogLevel.ERROR;
  return { logLevel, logCreator };
}

/**
 * kafkajs's `ssl` from a TLS block: `false` without one (or with `enabled: false`), `true` for
 * the system's trust store, else the certificates it references.
 */
export function kafkaTls(tls: TlsSpec | undefined, secret: ReadSecret): TlsOptions | boolean {
  if (tls === undefined || tls.enabled === false) return false;
  const o: TlsOptions = {};
  if (tls.caSecret !== undefined) o.ca = [secret(tls.caSecret)];
  if (tls.certSecret !== undefined) o.cert = secret(tls.certSecret);
  if (tls.keySecret !== undefined) o.key = secret(tls.keySecret);
  if (tls.insecureSkipVerify === true) o.rejectUnauthorized = false;
  return Object.keys(o).length > 0 ? o : true;
}

/** kafkajs's `sasl` from a mechanism and the credentials (from secrets, or OpenFunction's inline fields). */
export function kafkaSasl(mechanism: SaslSpec["mechanism"], username: string, password: string): SASLOptions {
  // kafkajs types each mechanism apart; the three we allow take the same fields.
  return { mechanism, username, password } as SASLOptions;
}

/** How a NATS client authenticates: a token, or a creds file's text (JWT + nkey seed). */
export interface NatsAuth {
  token?: string | undefined;
  creds?: string | undefined;
}

/**
 * nats.js options every client here uses: reconnect forever, no stack trace captured per request
 * and publish (about 9 % of the CPU of a JetStream pipeline in the E2 profile; errors keep their
 * message and code), and the credentials given.
 */
export function natsOptions(servers: string[], name: string, auth: NatsAuth, extra: NatsOptions = {}): NatsOptions {
  return {
    servers,
    name,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    ...(auth.token === undefined ? {} : { token: auth.token }),
    ...(auth.creds === undefined ? {} : { authenticator: credsAuthenticator(new TextEncoder().encode(auth.creds)) }),
    ...extra,
  };
}

/**
 * Logs a NATS connection's status changes until it closes: a disconnect at warn, an error at
 * error, a reconnect at info, the rest (pings, server updates) at debug.
 */
export function logNatsStatus(nc: NatsConnection, log: Logger): void {
  void (async () => {
    for await (const s of nc.status()) {
      const data = String(s.data);
      if (s.type === "disconnect") log.warn({ server: data }, "disconnected from NATS; reconnecting");
      else if (s.type === "reconnect") log.info({ server: data }, "reconnected to NATS");
      else if (s.type === "error") log.error({ err: data }, "NATS connection error");
      else log.debug({ status: s.type }, "NATS connection status");
    }
  })().catch(() => {});
}
