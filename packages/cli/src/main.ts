/**
 * The `ofevents` command. Returns the process exit code; never calls process.exit itself except on
 * a second interrupt.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  ManifestError,
  createLogger,
  createSinkClient,
  formatIssue,
  generateCrds,
  newEvent,
  parseDuration,
  withReference,
  type LogFormat,
  type Logger,
} from "@ofevents/core";
import { loadKubeConfig, ownNamespace, startController } from "@ofevents/controller";
import { startEmbedded, validateAll } from "./embedded.js";
import { startSingle } from "./single.js";

const USAGE = `ofevents: an OpenFunction-Events-style event framework

Usage:
  ofevents run -f <file|folder>... [--log-level info] [--log-format pretty|json] [--host 127.0.0.1] [--functions-port 8080]
               [--metrics-port <port>]
      Run every EventSource, Trigger and local Function in one process; with --metrics-port,
      serve Prometheus metrics at GET /metrics on that port.
  ofevents eventsource -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--host 0.0.0.0]
                      [--bus-driver auto|direct|dapr] [--pubsub-name <component>] [--sidecar-timeout 60s]
  ofevents trigger -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--bus-driver ...]
      Run one EventSource or Trigger with its bus (the container entrypoints): /healthz, /readyz, /metrics.
  ofevents validate -f <file|folder>...
      Print every problem in the manifests; exit 1 when there is one.
  ofevents publish --url <url> --type <type> --source <source> [--id <id>] [--subject <s>]
                   [--data <text> | --data-file <path|->] [--content-type <type>] [--ext key=value]... [--structured]
      Send one CloudEvent to a URL.
  ofevents controller --image <image> [--kubeconfig <path>] [--namespace <ns>] [--log-level info] [--log-format json]
      Reconcile EventSources, Triggers, EventBuses and ClusterEventBuses on a cluster; replicas elect a
      leader through the Lease "ofevents-controller" in --namespace (default: the pod's namespace).
  ofevents crds [--out crds] [--check]
      Write (or check) the CustomResourceDefinitions generated from the schemas.
  ofevents docs [--file README.md] [--check]
      Write (or check) the resource reference generated from the schemas into the README.
`;

type Write = (s: string) => void;

export interface MainIO {
  out?: Write;
  err?: Write;
  stdin?: NodeJS.ReadableStream;
}

export async function main(argv: string[], io: MainIO = {}): Promise<number> {
  const out = io.out ?? ((s) => process.stdout.write(s));
  const err = io.err ?? ((s) => process.stderr.write(s));
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "run":
        return await run(rest, out, err);
      case "validate":
        return await validate(rest, out, err);
      case "eventsource":
        return await single("EventSource", rest, out, err);
      case "trigger":
        return await single("Trigger", rest, out, err);
      case "publish":
        return await publish(rest, out, err, io.stdin ?? process.stdin);
      case "controller":
        return await controller(rest, out, err);
      case "crds":
        return await crds(rest, out, err);
      case "docs":
        return await docs(rest, out, err);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        out(USAGE);
        return command === undefined ? 2 : 0;
      default:
        err(`unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof ManifestError) {
      for (const i of e.issues) err(`${formatIssue(i)}\n`);
      return 1;
    }
    err(`error: ${(e as Error).message}\n`);
    return 1;
  }
}

function files(values: { file?: string[] | undefined }, positionals: string[]): string[] {
  const f = [...(values.file ?? []), ...positionals];
  if (f.length === 0) throw new Error("name manifests with -f <file|folder>");
  return f;
}

async function run(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      file: { type: "string", short: "f", multiple: true },
      "log-level": { type: "string", default: "info" },
      "log-format": { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      "functions-port": { type: "string", default: "8080" },
      "metrics-port": { type: "string" },
    },
  });
  const format = (values["log-format"] ?? (process.stdout.isTTY ? "pretty" : "json")) as LogFormat;
  if (format !== "pretty" && format !== "json") throw new Error(`--log-format must be pretty or json`);
  const logger = createLogger({ level: values["log-level"], format, write: out });
  const port = Number(values["functions-port"]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--functions-port must be a port number`);
  const metricsPort = values["metrics-port"] === undefined ? undefined : Number(values["metrics-port"]);
  if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535))
    throw new Error(`--metrics-port must be a port number`);
  const embedded = await startEmbedded({
    paths: files(values, positionals),
    logger,
    host: values.host,
    functionsPort: port,
    metricsPort,
  });
  await untilSignal(embedded.stop, logger, err);
  logger.info("stopped");
  return 0;
}

/** Waits for SIGINT/SIGTERM, then runs `stop`; a second signal exits at once. */
async function untilSignal(stop: () => Promise<void>, logger: Logger, err: Write): Promise<void> {
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        err(`second ${sig}: exiting now\n`);
        process.exit(130);
      }
      logger.info({ signal: sig }, "shutting down: finishing in-flight events");
      stop().then(resolve, (e: unknown) => {
        err(`shutdown failed: ${(e as Error).message}\n`);
        resolve();
      });
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}

async function single(kind: "EventSource" | "Trigger", args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      file: { type: "string", short: "f", multiple: true },
      name: { type: "string" },
      "log-level": { type: "string" },
      "log-format": { type: "string", default: "json" },
      host: { type: "string", default: "0.0.0.0" },
      "health-port": { type: "string", default: process.env["HEALTH_PORT"] ?? "8081" },
      "bus-driver": { type: "string", default: "auto" },
      "pubsub-name": { type: "string" },
      "sidecar-timeout": { type: "string", default: "60s" },
    },
  });
  const busDriver = values["bus-driver"];
  if (busDriver !== "auto" && busDriver !== "direct" && busDriver !== "dapr")
    throw new Error("--bus-driver must be auto, direct or dapr");
  const sidecarTimeoutMs = parseDuration(values["sidecar-timeout"]);
  if (sidecarTimeoutMs === undefined) throw new Error("--sidecar-timeout must be a duration such as 60s");
  const format = values["log-format"] as LogFormat;
  if (format !== "pretty" && format !== "json") throw new Error(`--log-format must be pretty or json`);
  const logger = createLogger({ level: values["log-level"] ?? "info", format, write: out });
  const healthPort = Number(values["health-port"]);
  if (!Number.isInteger(healthPort) || healthPort < 0 || healthPort > 65535)
    throw new Error("--health-port must be a port number");
  const running = await startSingle({
    kind,
    paths: files(values, positionals),
    name: values.name,
    logger,
    host: values.host,
    healthPort,
    busDriver,
    pubsubName: values["pubsub-name"],
    sidecarTimeoutMs,
  });
  await untilSignal(running.stop, logger, err);
  logger.info("stopped");
  return 0;
}

async function controller(args: string[], out: Write, err: Write): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: "string" },
      namespace: { type: "string" },
      image: { type: "string", default: process.env["OFEVENTS_IMAGE"] ?? "" },
      "log-level": { type: "string", default: "info" },
      "log-format": { type: "string", default: "json" },
    },
  });
  if (values.image === "") throw new Error("--image is required (the image the workloads run)");
  const format = values["log-format"] as LogFormat;
  if (format !== "pretty" && format !== "json") throw new Error(`--log-format must be pretty or json`);
  const logger = createLogger({ level: values["log-level"], format, write: out });
  const running = await startController({
    kubeConfig: loadKubeConfig(values.kubeconfig),
    logger,
    options: { image: values.image },
    namespace: values.namespace ?? ownNamespace(),
  });
  await untilSignal(running.stop, logger, err);
  logger.info("stopped");
  return 0;
}

async function validate(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { file: { type: "string", short: "f", multiple: true } },
  });
  const { manifests, issues, warnings } = await validateAll(files(values, positionals));
  for (const w of warnings) err(`warning: ${formatIssue(w)}\n`);
  for (const i of issues) err(`${formatIssue(i)}\n`);
  const count =
    manifests.eventSources.length +
    manifests.eventBuses.length +
    manifests.clusterEventBuses.length +
    manifests.triggers.length;
  if (issues.length > 0) {
    err(`${issues.length} problem${issues.length === 1 ? "" : "s"} found\n`);
    return 1;
  }
  const ignored = manifests.ignoredFiles.length;
  out(
    `${count} resource${count === 1 ? "" : "s"} valid (${manifests.functions.length} functions, ${manifests.skipped.length} documents of other kinds skipped${ignored === 0 ? "" : ignored === 1 ? ", 1 file that is not a manifest skipped" : `, ${ignored} files that are not manifests skipped`})\n`,
  );
  return 0;
}

async function readStream(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

async function publish(args: string[], out: Write, _err: Write, stdin: NodeJS.ReadableStream): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      url: { type: "string" },
      type: { type: "string" },
      source: { type: "string", default: "/ofevents/cli" },
      id: { type: "string" },
      subject: { type: "string" },
      data: { type: "string" },
      "data-file": { type: "string" },
      "content-type": { type: "string" },
      ext: { type: "string", multiple: true },
      structured: { type: "boolean", default: false },
      timeout: { type: "string", default: "10000" },
    },
  });
  if (values.url === undefined || !URL.canParse(values.url)) throw new Error("--url <url> is required");
  if (values.type === undefined) throw new Error("--type <type> is required");
  let raw: Buffer | undefined;
  if (values["data-file"] !== undefined)
    raw = values["data-file"] === "-" ? await readStream(stdin) : await readFile(values["data-file"]);
  else if (values.data !== undefined) raw = Buffer.from(values.data);
  const contentType = values["content-type"] ?? "application/json";
  let data: unknown;
  if (raw !== undefined) {
    if (contentType.includes("json")) {
      try {
        data = JSON.parse(raw.toString("utf8"));
      } catch (e) {
        throw new Error(`data is not valid JSON (set --content-type for other data): ${(e as Error).message}`);
      }
    } else if (contentType.startsWith("text/")) data = raw.toString("utf8");
    else data = new Uint8Array(raw);
  }
  const extensions: Record<string, string> = {};
  for (const kv of values.ext ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--ext wants key=value, got "${kv}"`);
    extensions[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const event = newEvent({
    id: values.id,
    type: values.type,
    source: values.source,
    subject: values.subject,
    data,
    datacontenttype: raw === undefined ? undefined : contentType,
    extensions,
  });
  const client = createSinkClient({ connections: 1 });
  try {
    const res = await client.send(values.url, event, {
      format: values.structured ? "structured" : "binary",
      timeoutMs: Number(values.timeout),
    });
    out(`${res.status} ${event.id}${res.body.length > 0 ? ` ${res.body.toString("utf8")}` : ""}\n`);
    return 0;
  } finally {
    await client.close();
  }
}

async function crds(args: string[], out: Write, err: Write): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { out: { type: "string", default: "crds" }, check: { type: "boolean", default: false } },
  });
  const generated = generateCrds();
  if (values.check) {
    let stale = 0;
    for (const [name, text] of Object.entries(generated)) {
      const current = await readFile(join(values.out, name), "utf8").catch(() => undefined);
      if (current !== text) {
        err(`${join(values.out, name)} is out of date; run: ofevents crds\n`);
        stale++;
      }
    }
    return stale === 0 ? 0 : 1;
  }
  await mkdir(values.out, { recursive: true });
  for (const [name, text] of Object.entries(generated)) {
    await writeFile(join(values.out, name), text);
    out(`wrote ${join(values.out, name)}\n`);
  }
  return 0;
}

async function docs(args: string[], out: Write, err: Write): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { file: { type: "string", default: "README.md" }, check: { type: "boolean", default: false } },
  });
  const current = await readFile(values.file, "utf8");
  const next = withReference(current);
  if (values.check) {
    if (next === current) return 0;
    err(`${values.file}: the resource reference is out of date; run: npm run docs\n`);
    return 1;
  }
  await writeFile(values.file, next);
  out(`wrote the resource reference into ${values.file}\n`);
  return 0;
}
