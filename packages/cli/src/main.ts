/**
 * The `ofevents` command. Returns the process exit code; never calls process.exit itself except on
 * a second interrupt.
 */
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
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
import { validateAll } from "./check.js";
import { startEmbedded } from "./embedded.js";
import { startSingle } from "./single.js";

const USAGE = `ofevents: an OpenFunction-Events-style event framework

Usage:
  ofevents run -f <file|folder>... [--log-level info] [--log-format pretty|json] [--host 127.0.0.1] [--functions-port 8080]
               [--metrics-port <port>]
      Run every EventSource, Trigger and local Function in one process; with --metrics-port,
      serve Prometheus metrics at GET /metrics on that port.
  ofevents eventsource -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--host 0.0.0.0]
                      [--bus-driver auto|direct|dapr] [--pubsub-name <component>] [--sidecar-timeout 60s]
  ofevents trigger -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--host 0.0.0.0]
                   [--bus-driver auto|direct|dapr] [--pubsub-name <component>] [--sidecar-timeout 60s]
      Run one EventSource or Trigger with its bus (the container entrypoints): /healthz, /readyz, /metrics.
  ofevents validate -f <file|folder>...
      Print every problem in the manifests; exit 1 when there is one.
  ofevents publish --url <url> --type <type> [--source /ofevents/cli] [--id <id>] [--subject <s>]
                   [--data <text> | --data-file <path|->] [--content-type <type>] [--ext key=value]... [--structured]
                   [--timeout 10s]
      Send one CloudEvent to a URL.
  ofevents controller --image <image> [--kubeconfig <path>] [--namespace <ns>] [--log-level info] [--log-format json]
      Reconcile EventSources, Triggers, EventBuses and ClusterEventBuses on a cluster; replicas elect a
      leader through the Lease "ofevents-controller" in --namespace (default: the pod's namespace).
  ofevents crds [--out crds] [--check]
      Write (or check) the CustomResourceDefinitions generated from the schemas.
  ofevents docs [--file README.md] [--check]
      Write (or check) the resource reference generated from the schemas into the README.

Files and folders may also be given without -f. Run "ofevents <command> --help" for a command's
options; "ofevents --version" prints the version.
`;

const FILES = `  -f, --file <file|folder>    a manifest file, or a folder read recursively (.yaml, .yml, .json;
                              node_modules, dot entries and files that are not manifests are skipped);
                              repeat it, or give paths without -f
`;
const LOGS = (
  format: string,
): string => `      --log-level <level>     trace, debug, info (default), warn, error, fatal, silent, or OpenFunction's "1".."3"
      --log-format <format>   pretty or json (default: ${format})
`;
const ENTRYPOINT = (kind: string): string => `Usage: ofevents ${kind.toLowerCase()} -f <file|folder>... [options]

Run one ${kind} with its bus: the container entrypoint. Serves /healthz, /readyz (200 once running
and while the bus answers) and /metrics on --health-port.

Options:
${FILES}      --name <[ns/]name>      the ${kind} to run, when the files hold several
${LOGS("json")}      --host <address>        address webhooks bind to (default 0.0.0.0)
      --health-port <port>    port of /healthz, /readyz and /metrics (default $HEALTH_PORT or 8081)
      --bus-driver <driver>   auto (default: Dapr when the sidecar's DAPR_HTTP_PORT/DAPR_GRPC_PORT are
                              set or the bus is a generic dapr one), direct (the broker's client) or dapr
      --pubsub-name <name>    Dapr pub/sub component name (default: the bus's name)
      --sidecar-timeout <d>   how long to wait for the Dapr sidecar (default 60s)
  -h, --help                  show this help
`;

/** Help of each command, printed by `ofevents <command> --help` and `ofevents help <command>`. */
const HELP = {
  run: `Usage: ofevents run -f <file|folder>... [options]

Run every EventSource, Trigger and local Function of the manifests in one process, on in-memory
buses for the bus names no loaded EventBus defines. Ctrl-C stops gracefully; a second one exits.

Options:
${FILES}${LOGS("pretty on a terminal, else json")}      --host <address>        address webhooks and sync functions bind to (default 127.0.0.1)
      --functions-port <port> port of the local sync functions (default 8080; 0 picks a free one)
      --metrics-port <port>   serve Prometheus metrics at GET /metrics on this port
  -h, --help                  show this help
`,
  eventsource: ENTRYPOINT("EventSource"),
  trigger: ENTRYPOINT("Trigger"),
  validate: `Usage: ofevents validate -f <file|folder>...

Print every problem in the manifests, one per line as "file:line Kind/name: field: message", and
exit 1 when there is one; otherwise print what is valid.

Options:
${FILES}  -h, --help                  show this help
`,
  publish: `Usage: ofevents publish --url <url> --type <type> [options]

Send one CloudEvent over HTTP (binary mode unless --structured) and print the status and the event
id; exit 1 when the answer is not 2xx.

Options:
      --url <url>             where to send it (http or https; required)
      --type <type>           the event's type (required)
      --source <source>       the event's source (default /ofevents/cli)
      --id <id>               the event's id (default: a random UUID)
      --subject <subject>     the event's subject
      --data <text>           the data (JSON unless --content-type says otherwise)
      --data-file <path|->    read the data from a file, or from stdin with "-" (not with --data)
      --content-type <type>   the data's content type (default application/json when there is data)
      --ext <key=value>       an extension attribute; repeat for several
      --structured            send in structured mode (application/cloudevents+json)
      --timeout <duration>    how long to wait for the answer: 5s, 500ms, 1m, or milliseconds (default 10s)
  -h, --help                  show this help
`,
  controller: `Usage: ofevents controller --image <image> [options]

Reconcile EventSources, Triggers, EventBuses and ClusterEventBuses on a cluster. Replicas elect a
leader through the Lease "ofevents-controller" in --namespace.

Options:
      --image <image>         the image the workloads run (default $OFEVENTS_IMAGE; required)
      --kubeconfig <path>     the kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster)
      --namespace <ns>        namespace of the leader Lease (default: $POD_NAMESPACE, the pod's
                              namespace, else default)
${LOGS("json")}  -h, --help                  show this help
`,
  crds: `Usage: ofevents crds [--out crds] [--check]

Write the CustomResourceDefinitions generated from the schemas, one file per kind.

Options:
      --out <folder>          where to write them (default crds)
      --check                 write nothing; exit 1 when a file is missing or out of date
  -h, --help                  show this help
`,
  docs: `Usage: ofevents docs [--file README.md] [--check]

Write the resource reference generated from the schemas into a Markdown file, between its
reference markers.

Options:
      --file <path>           the file (default README.md)
      --check                 write nothing; exit 1 when the reference is out of date
  -h, --help                  show this help
`,
} as const;
type Command = keyof typeof HELP;

function isCommand(c: string | undefined): c is Command {
  return c !== undefined && Object.hasOwn(HELP, c);
}

/** True when `--help` or `-h` comes before a `--` that ends the options. */
function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === "--") return false;
    if (a === "--help" || a === "-h") return true;
  }
  return false;
}

async function version(): Promise<string> {
  // ../package.json from both src/main.ts and dist/main.js.
  const pkg = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/** An error of node:util parseArgs (an unknown option, a missing value, a stray argument). */
function parseArgsError(e: unknown): string | undefined {
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string" || !code.startsWith("ERR_PARSE_ARGS_")) return undefined;
  const message = (e as Error).message;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const option = /'([^']*)'/.exec(message)?.[1] ?? message;
    return `unknown option ${option}`;
  }
  // Node's messages run on with advice about "--"; the first sentence names the problem.
  return message.split(". ")[0]!.replace(/\.$/, "");
}

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
  if (command === "--version" || command === "-v" || command === "version") {
    out(`ofevents ${await version()}\n`);
    return 0;
  }
  if (command === "help" && rest[0] !== undefined) {
    if (!isCommand(rest[0])) {
      err(`unknown command "${rest[0]}"\n\n${USAGE}`);
      return 2;
    }
    out(HELP[rest[0]]);
    return 0;
  }
  if (isCommand(command) && wantsHelp(rest)) {
    out(HELP[command]);
    return 0;
  }
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
    const usage = parseArgsError(e);
    if (usage !== undefined) {
      err(`error: ${usage}; see: ofevents ${command} --help\n`);
      return 2;
    }
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

/**
 * Waits for SIGINT/SIGTERM, then runs `stop`; a second signal exits at once. Keeps the process
 * alive meanwhile, even when nothing else is listening (Node would otherwise exit silently).
 */
async function untilSignal(stop: () => Promise<void>, logger: Logger, err: Write): Promise<void> {
  const keepAlive = setInterval(() => {}, 1 << 30);
  try {
    await new Promise<void>((resolve) => {
      let signals = 0;
      const onSignal = (sig: NodeJS.Signals): void => {
        signals++;
        if (signals > 1) {
          err(`second ${sig}: exiting now\n`);
          process.exit(130);
        }
        logger.info({ signal: sig }, "shutting down: finishing in-flight events (a second signal exits at once)");
        stop().then(resolve, (e: unknown) => {
          err(`shutdown failed: ${(e as Error).message}\n`);
          resolve();
        });
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
    });
  } finally {
    clearInterval(keepAlive);
  }
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

function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const { protocol } = new URL(text);
  return protocol === "http:" || protocol === "https:";
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
      timeout: { type: "string", default: "10s" },
    },
  });
  if (values.url === undefined) throw new Error("--url <url> is required");
  if (!isHttpUrl(values.url))
    throw new Error(`--url "${values.url}" is not a valid URL (use e.g. http://127.0.0.1:12000/orders)`);
  if (values.type === undefined) throw new Error("--type <type> is required");
  if (values.data !== undefined && values["data-file"] !== undefined)
    throw new Error("use either --data or --data-file, not both");
  const timeoutMs = /^\d+$/.test(values.timeout) ? Number(values.timeout) : parseDuration(values.timeout);
  if (timeoutMs === undefined || timeoutMs <= 0)
    throw new Error(`--timeout "${values.timeout}" is not a duration (use e.g. 5s, 500ms, or milliseconds)`);
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
      timeoutMs,
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
    const fix = `run: ofevents crds${values.out === "crds" ? "" : ` --out ${values.out}`}`;
    const folder = await stat(values.out).catch(() => undefined);
    if (folder === undefined || !folder.isDirectory()) {
      err(`${values.out}: ${folder === undefined ? "missing" : "not a folder"}; ${fix}\n`);
      return 1;
    }
    let stale = 0;
    for (const [name, text] of Object.entries(generated)) {
      const current = await readFile(join(values.out, name), "utf8").catch(() => undefined);
      if (current !== text) {
        err(`${join(values.out, name)} is ${current === undefined ? "missing" : "out of date"}; ${fix}\n`);
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
