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
  formatIssue,
  generateCrds,
  newEvent,
  parseDuration,
  parseHistoryTime,
  withReference,
  type LogFormat,
  type Logger,
} from "@ofevents/core";
import { createSinkClient } from "@ofevents/delivery";
// Types only: the controller and the Kubernetes client it loads (55–65 MiB more memory in every
// process that loaded them, 0.4 s of start-up) are imported by the `controller` command alone.
import type { ControllerOptions, StartControllerInput } from "@ofevents/controller";
import { validateAll } from "./check.js";
import { startEmbedded } from "./embedded.js";
import { runRedrive, runReplay } from "./history.js";
import type { JournalEntry, JournalStep } from "./journal.js";
import { startSingle } from "./single.js";
import { prettyEvent, runTail } from "./tail.js";
import { TEST_HELP, testCommand } from "./test-command.js";
import { startTracing } from "./tracing.js";
import { runWatching } from "./watch.js";

const USAGE = `ofevents: an OpenFunction-Events-style event framework

Usage:
  ofevents run -f <file|folder>... [--log-level info] [--log-format pretty|json] [--host 127.0.0.1] [--functions-port 8080]
               [--metrics-port <port>] [--ui-port 9400|off] [--watch]
      Run every EventSource, Trigger and local Function in one process, with a live page of the
      flow; with --metrics-port, serve Prometheus metrics at GET /metrics on that port, and the
      journal (ofevents events).
  ofevents eventsource -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--host 0.0.0.0]
                      [--bus-driver auto|direct|dapr] [--pubsub-name <component>] [--sidecar-timeout 60s]
  ofevents trigger -f <file|folder>... [--name [ns/]name] [--health-port 8081] [--host 0.0.0.0]
                   [--bus-driver auto|direct|dapr] [--pubsub-name <component>] [--sidecar-timeout 60s]
      Run one EventSource or Trigger with its bus (the container entrypoints): /healthz, /readyz, /metrics.
  ofevents validate -f <file|folder>...
      Print every problem in the manifests; exit 1 when there is one.
  ofevents test -f <file|folder>... <cases.yaml>... [--case <text>] [--json]
      Run a trigger's test cases offline on a virtual clock; exit 1 when one fails.
  ofevents redrive -f <file|folder>... --trigger [ns/]name [--subscriber N] [--filter <jsonata>] [--limit N]
                   [--dry-run] [--json]
      Deliver the dead letters a trigger kept again, each to the subscriber it failed for.
  ofevents events [<id>] [--port 9400] [--host 127.0.0.1] [--json]
      Where is this event? What a running "ofevents run" did with it (no id: the latest).
  ofevents tail <topic | trigger [ns/]name | source [ns/]name> [--url http://127.0.0.1:9400/ | -f <file|folder>...]
                [--filter <jsonata>] [--json] [--limit N] [--duration <d>]
      Print the CloudEvents passing, as they pass: from a running "ofevents run", or from the bus.
  ofevents replay -f <file|folder>... --trigger [ns/]name --from <time|duration> [--to <time|duration>]
                  [--filter <jsonata>] [--dry-run] [--json]
      Feed a trigger's subscribers again with the events its inputs' topics took in a time range.
  ofevents publish --url <url> --type <type> [--source /ofevents/cli] [--id <id>] [--subject <s>]
                   [--data <text> | --data-file <path|->] [--content-type <type>] [--ext key=value]... [--structured]
                   [--timeout 10s]
      Send one CloudEvent to a URL.
  ofevents controller --image <image> [--bus-driver dapr|direct] [--watch-namespaces <ns,ns>] [--health-port 8081]
                      [--lease-namespace <ns>] [--kubeconfig <path>] [options: ofevents controller --help]
      Reconcile EventSources, Triggers, EventBuses and ClusterEventBuses on a cluster; replicas elect a
      leader through the Lease "ofevents-controller" in --lease-namespace (default: the pod's namespace).
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
      --metrics-port <port>   serve Prometheus metrics at GET /metrics on this port, and the journal
                              of the latest events at GET /events/<id> (see ofevents events)
      --ui-port <port|off>    serve the live page of the flow (and the API of ofevents tail) on this
                              port (default 9400, or a free one when 9400 is taken; 0 picks a free
                              one; off: no page)
      --watch                 reload when a manifest or a Function's module changes: events in
                              flight finish first; see docs/dev-loop.md for join state
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
  test: TEST_HELP,
  redrive: `Usage: ofevents redrive -f <file|folder>... --trigger [ns/]name [options]

Deliver the dead letters a trigger kept on its dead-letter topic ({namespace}.{name}.deadletters,
see keepDeadLetters) again, each to the subscriber it failed for and to no other, marked with the
extension attribute ofredriven. A dead letter delivered, or dead-lettered again with the new
reason, is settled: later redrives skip it. Reads the bus with the broker's own client (jetstream
and kafka buses). Prints what it did; exit 1 when a dead letter failed again.

Options:
${FILES}      --trigger <[ns/]name>   the Trigger, when the files hold several
      --subscriber <n>        only the dead letters of this subscriber (its index in spec.subscribers)
      --filter <jsonata>      only the dead letters for which this expression is true (it sees the
                              dead letter: oferrorreason, oferrorcode, ofdeliveries... included)
      --limit <n>             at most this many dead letters
      --dry-run               list the dead letters that would be redriven; deliver nothing
      --json                  print the result as JSON
      --result-file <path>    also write the result as JSON, without the id list (what a Redrive
                              or Replay Job writes to its termination message)
${LOGS("pretty on a terminal, else json")}  -h, --help                  show this help
`,
  events: `Usage: ofevents events [<id>] [options]

Where is this event? Asks a running "ofevents run" (its page, or its --metrics-port) what happened to the event
with this CloudEvent id: received, filtered out (by which expression), waiting in which join,
fired, delivered, retried, dead-lettered (with the reasons). Without an id, lists the latest events
with their last step. The run keeps the latest 10,000 events, 64 steps each.

Options:
      --port <port>           the run's page port (--ui-port, default 9400) or its --metrics-port
      --host <address>        where the run listens (default 127.0.0.1)
      --limit <n>             without an id: how many events (default 20)
      --json                  print the journal's JSON as it is
  -h, --help                  show this help
`,
  tail: `Usage: ofevents tail <topic | trigger [ns/]name | source [ns/]name> [options]

Print the CloudEvents passing through a bus topic, a trigger (its inputs' topics and the topics its
subscribers publish to) or an event source (its events' topics), as they pass, from now on: pretty
on a terminal, one JSON object per line otherwise ({"topic", "event"}). The tail takes part in no
consumer group: no trigger or function misses an event because of it.

Without -f it asks a running "ofevents run" through its page (--url). With -f it reads the bus the
manifests define, with the broker's own client (jetstream, kafka) or through a Dapr sidecar
(--bus-driver dapr: give the tail a sidecar of its own; the broker's group is that app id).

Options:
      --url <url>             the page of the "ofevents run" to ask (default http://127.0.0.1:9400/)
  -f, --file <file|folder>    manifests defining the bus: tail it directly (repeat for several)
      --bus <name>            with a bare topic: the bus it is on (default "default")
      --namespace <ns>        with a bare topic: the namespace of --bus (default "default")
      --bus-driver <driver>   with -f: direct (default) or dapr
      --pubsub-name <name>    with --bus-driver dapr: the pub/sub component (default: the bus's name)
      --filter <jsonata>      only the events for which this expression is true
      --json                  one JSON object per line, also on a terminal
      --limit <n>             stop after n events
      --duration <d>          stop after this long (30s, 5m); Ctrl-C stops too
  -h, --help                  show this help
`,
  replay: `Usage: ofevents replay -f <file|folder>... --trigger [ns/]name --from <time|duration> [options]

Feed a trigger's subscribers again with the events its inputs' topics took in a time range, marked
with the extension attribute ofreplayed. The topics are read without a consumer group, so the live
trigger is untouched; the inputs' filters, the conditions, the transforms and the subscribers'
batching, ordering and rate limits apply as they do live. Joins form among the replayed events
only, with windows counted at replay speed (see docs/replay.md). Reads the bus with the broker's
own client (jetstream and kafka buses). Prints what it did; exit 1 when not everything finished.

Options:
${FILES}      --trigger <[ns/]name>   the Trigger, when the files hold several
      --from <time|duration>  events the bus took at or after this time: RFC 3339
                              (2026-12-05T10:00:00Z) or a duration ago (90m, 2h)
      --to <time|duration>    and up to this time (default: the end each topic had at the start)
      --filter <jsonata>      only the events for which this expression is true
      --dry-run               list the events that would be replayed; deliver nothing
      --json                  print the result as JSON
      --result-file <path>    also write the result as JSON, without the id list (what a Redrive
                              or Replay Job writes to its termination message)
${LOGS("pretty on a terminal, else json")}  -h, --help                  show this help
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
leader through a Lease; the leader reconciles, the others stand by. Serves /healthz, /readyz (200
once the informers synced, saying leader or standby) and /metrics on --health-port. Every option
may also be given by the environment variable in brackets; a flag wins over its variable.

Workloads:
      --image <image>                 the image the workloads run (required) [OFEVENTS_IMAGE]
      --image-pull-policy <policy>    Always, IfNotPresent or Never (default: the cluster's)
                                      [OFEVENTS_IMAGE_PULL_POLICY]
      --bus-driver <driver>           dapr (default: through the Dapr sidecar) or direct (the brokers'
                                      clients, for throughput; the default with --dapr-enabled false);
                                      a resource's annotation ofevents.io/bus-driver wins
                                      [OFEVENTS_BUS_DRIVER]
      --mode <mode>                   deployment (default) or function (OpenFunction Functions)
                                      [OFEVENTS_MODE]
      --workload-service-account <n>  the workloads' ServiceAccount [OFEVENTS_WORKLOAD_SERVICE_ACCOUNT]
      --workload-run-as-user <uid>    user and group the workloads run as (default 1000)
                                      [OFEVENTS_WORKLOAD_RUN_AS_USER]
      --workload-resources <json>     the workloads' container resources, as JSON (default requests
                                      50m CPU / 64Mi, limit 256Mi) [OFEVENTS_WORKLOAD_RESOURCES]
Dapr:
      --dapr-enabled <true|false>     render Dapr Components per bus and inject the sidecar (default
                                      true) [OFEVENTS_DAPR_ENABLED]
      --dapr-app-port <port>          the workloads' app port: their --health-port and dapr.io/app-port
                                      (default 8081) [OFEVENTS_DAPR_APP_PORT]
      --dapr-config <name>            dapr.io/config of the sidecars [OFEVENTS_DAPR_CONFIG]
      --dapr-log-level <level>        dapr.io/log-level of the sidecars [OFEVENTS_DAPR_LOG_LEVEL]
      --dapr-sidecar-timeout <d>      the workloads' --sidecar-timeout (default theirs: 60s)
                                      [OFEVENTS_DAPR_SIDECAR_TIMEOUT]
      --dapr-pubsub-name <name>       the workloads' --pubsub-name: a Component installed separately,
                                      used instead of the one rendered per bus [OFEVENTS_DAPR_PUBSUB_NAME]
KEDA (each applies when the resource's scaleOption sets none):
      --keda-enabled <true|false>     render ScaledObjects (default true) [OFEVENTS_KEDA_ENABLED]
      --keda-polling-interval <s>     seconds between checks (default KEDA's, 30)
                                      [OFEVENTS_KEDA_POLLING_INTERVAL]
      --keda-cooldown-period <s>      seconds before scaling to zero (default KEDA's, 300)
                                      [OFEVENTS_KEDA_COOLDOWN_PERIOD]
      --keda-initial-cooldown-period <s>
                                      seconds after creation before scaling to zero (KEDA >= 2.13;
                                      default unset) [OFEVENTS_KEDA_INITIAL_COOLDOWN_PERIOD]
      --keda-min-replicas <n>         fewest replicas (default 0 when KEDA can wake the workload, else 1)
                                      [OFEVENTS_KEDA_MIN_REPLICAS]
      --keda-max-replicas <n>         most replicas (default KEDA's, 100) [OFEVENTS_KEDA_MAX_REPLICAS]
      --keda-lag-threshold <n>        target backlog per replica (default 10) [OFEVENTS_KEDA_LAG_THRESHOLD]
      --keda-nats-monitoring-endpoint <host:port>
                                      NATS monitoring endpoint (default: the bus URL's host, port 8222)
                                      [OFEVENTS_KEDA_NATS_MONITORING_ENDPOINT]
      --keda-nats-account <account>   NATS account of the streams (default $G) [OFEVENTS_KEDA_NATS_ACCOUNT]
The controller:
      --watch-namespaces <ns,ns>      reconcile only these namespaces (default: all)
                                      [OFEVENTS_WATCH_NAMESPACES]
      --health-port <port>            port of /healthz, /readyz and /metrics (default 8081; 0 picks one)
                                      [OFEVENTS_HEALTH_PORT]
      --health-host <address>         address they bind to (default 0.0.0.0) [OFEVENTS_HEALTH_HOST]
      --metrics-port <port>           also serve /metrics alone on this port [OFEVENTS_METRICS_PORT]
      --lease-namespace <ns>          namespace of the leader Lease (default: $POD_NAMESPACE, the pod's
                                      namespace, else default) [OFEVENTS_LEASE_NAMESPACE]
      --namespace <ns>                the same as --lease-namespace (older name)
      --lease-name <name>             name of the Lease (default ofevents-controller) [OFEVENTS_LEASE_NAME]
      --lease-identity <id>           this replica's holderIdentity in the Lease (default: the host name
                                      and a random suffix; deploy/ gives the Pod's name)
                                      [OFEVENTS_LEASE_IDENTITY]
      --lease-duration <d>            how long a Lease not renewed stays the holder's, whole seconds
                                      (default 15s) [OFEVENTS_LEASE_DURATION]
      --lease-retry-period <d>        how often the leader renews and the others try (default 2s; less
                                      than --lease-duration) [OFEVENTS_LEASE_RETRY_PERIOD]
      --kubeconfig <path>             the kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster)
      --log-level <level>             trace, debug, info (default), warn, error, fatal, silent
                                      [OFEVENTS_LOG_LEVEL]
      --log-format <format>           pretty or json (default json) [OFEVENTS_LOG_FORMAT]
  -h, --help                          show this help
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
      case "test":
        return await testCommand(rest, out, err);
      case "eventsource":
        return await single("EventSource", rest, out, err);
      case "trigger":
        return await single("Trigger", rest, out, err);
      case "publish":
        return await publish(rest, out, err, io.stdin ?? process.stdin);
      case "redrive":
        return await redriveCommand(rest, out, err);
      case "replay":
        return await replayCommand(rest, out, err);
      case "events":
        return await eventsCommand(rest, out, err);
      case "tail":
        return await tailCommand(rest, out, err);
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
      "ui-port": { type: "string" },
      watch: { type: "boolean", default: false },
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
  const uiPort = values["ui-port"] === "off" ? undefined : Number(values["ui-port"] ?? DEFAULT_UI_PORT);
  if (uiPort !== undefined && (!Number.isInteger(uiPort) || uiPort < 0 || uiPort > 65535))
    throw new Error(`--ui-port must be a port number or off`);
  const tracing = await startTracing("ofevents-run", logger);
  try {
    const options = {
      paths: files(values, positionals),
      logger,
      host: values.host,
      functionsPort: port,
      metricsPort,
      uiPort,
      uiFallback: values["ui-port"] === undefined,
    };
    if (values.watch) {
      const watching = await runWatching(options, logger);
      if (format === "pretty") out(listeningTable(watching.current()?.listeners() ?? []));
      await untilSignal(watching.stop, logger, err);
    } else {
      const embedded = await startEmbedded(options);
      if (format === "pretty") out(listeningTable(embedded.listeners()));
      await untilSignal(embedded.stop, logger, err);
    }
  } finally {
    await tracing?.shutdown();
  }
  logger.info("stopped");
  return 0;
}

/** The port of `run`'s live page unless --ui-port says otherwise (a free one when it is taken). */
const DEFAULT_UI_PORT = 9400;

/** What listens where, as `run` prints it on a terminal. */
function listeningTable(l: Array<{ what: string; url: string }>): string {
  if (l.length === 0) return "";
  const w = Math.max(...l.map((x) => x.what.length));
  return `\nListening:\n${l.map((x) => `  ${x.what.padEnd(w)}  ${x.url}`).join("\n")}\n\n`;
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
  const tracing = await startTracing(`ofevents-${kind.toLowerCase()}`, logger);
  try {
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
  } finally {
    await tracing?.shutdown();
  }
  logger.info("stopped");
  return 0;
}

/** The options `redrive` and `replay` share. */
const HISTORY_OPTIONS = {
  file: { type: "string", short: "f", multiple: true },
  trigger: { type: "string" },
  filter: { type: "string" },
  "dry-run": { type: "boolean", default: false },
  json: { type: "boolean", default: false },
  "result-file": { type: "string" },
  "log-level": { type: "string", default: "warn" },
  "log-format": { type: "string" },
} as const;

/**
 * `--result-file`: the result as JSON without the id list, small enough for a Kubernetes
 * termination message (4 KiB), which is how a Redrive or Replay Job reports to the controller.
 */
async function writeResultFile(path: string | undefined, r: { ids: string[] }): Promise<void> {
  if (path === undefined) return;
  const { ids, ...counts } = r;
  await writeFile(path, `${JSON.stringify({ ...counts, ids: ids.length })}\n`);
}

/** The log of `redrive` / `replay`: on stderr, since stdout holds the result. */
function historyLogger(values: { "log-level": string; "log-format"?: string | undefined }, err: Write): Logger {
  const format = (values["log-format"] ?? (process.stderr.isTTY ? "pretty" : "json")) as LogFormat;
  if (format !== "pretty" && format !== "json") throw new Error(`--log-format must be pretty or json`);
  return createLogger({ level: values["log-level"], format, write: err });
}

async function redriveCommand(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...HISTORY_OPTIONS,
      subscriber: { type: "string" },
      limit: { type: "string" },
    },
  });
  const logger = historyLogger(values, err);
  const tracing = await startTracing("ofevents-redrive", logger);
  const r = await runRedrive({
    paths: files(values, positionals),
    trigger: values.trigger,
    subscriber: intOption("--subscriber", values.subscriber, 0, 1_000_000),
    filter: values.filter,
    limit: intOption("--limit", values.limit, 1, Number.MAX_SAFE_INTEGER),
    dryRun: values["dry-run"],
    logger,
  }).finally(() => tracing?.shutdown());
  await writeResultFile(values["result-file"], r);
  if (values.json) out(`${JSON.stringify(r)}\n`);
  else if (values["dry-run"]) {
    out(
      `${r.trigger}: ${r.matched} dead letter(s) would be redriven from ${r.topic} (${r.read} read, ${r.settled} settled earlier, ${r.orphaned} of no subscriber)\n`,
    );
    for (const id of r.ids) out(`${id}\n`);
  } else
    out(
      `${r.trigger}: ${r.delivered} delivered, ${r.deadLettered} dead-lettered again, of ${r.matched} matching dead letter(s) on ${r.topic} (${r.read} read, ${r.settled} settled earlier, ${r.orphaned} of no subscriber)\n`,
    );
  return r.deadLettered > 0 ? 1 : 0;
}

async function tailCommand(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      file: { type: "string", short: "f", multiple: true },
      bus: { type: "string" },
      namespace: { type: "string" },
      "bus-driver": { type: "string", default: "direct" },
      "pubsub-name": { type: "string" },
      filter: { type: "string" },
      json: { type: "boolean", default: false },
      limit: { type: "string" },
      duration: { type: "string" },
      "log-level": { type: "string", default: "warn" },
    },
  });
  const [first, second, ...more] = positionals;
  if (first === undefined) throw new Error("name what to tail: a topic, trigger [ns/]name or source [ns/]name");
  const kind = (first === "trigger" || first === "source") && second !== undefined ? first : "topic";
  if (more.length > 0 || (kind === "topic" && second !== undefined))
    throw new Error(`unexpected argument ${more[0] ?? second}: give one topic, trigger [ns/]name or source [ns/]name`);
  if (values.url !== undefined && values.file !== undefined) throw new Error("give --url or -f, not both");
  const driver = values["bus-driver"];
  if (driver !== "direct" && driver !== "dapr") throw new Error("--bus-driver must be direct or dapr");
  const durationMs = values.duration === undefined ? undefined : parseDuration(values.duration);
  if (values.duration !== undefined && durationMs === undefined)
    throw new Error("--duration must be a duration such as 30s");
  const json = values.json || process.stdout.isTTY !== true;
  const logger = createLogger({ level: values["log-level"], format: "json", write: err });
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await runTail({
      what: { [kind]: kind === "topic" ? first : second, bus: values.bus, namespace: values.namespace },
      paths: values.file,
      url: values.url,
      busAccess: { driver, pubsubName: values["pubsub-name"] },
      filter: values.filter,
      limit: intOption("--limit", values.limit, 1, Number.MAX_SAFE_INTEGER),
      durationMs,
      logger,
      print: (e) => out(json ? `${JSON.stringify({ topic: e.topic, event: e.event })}\n` : prettyEvent(e)),
      started: (topics) => err(`tailing ${topics.join(", ")}\n`),
      signal: abort.signal,
    });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return 0;
}

async function eventsCommand(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      port: { type: "string", default: String(DEFAULT_UI_PORT) },
      host: { type: "string", default: "127.0.0.1" },
      limit: { type: "string", default: "20" },
      json: { type: "boolean", default: false },
    },
  });
  const port = intOption("--port", values.port, 1, 65535)!;
  const limit = intOption("--limit", values.limit, 1, 1000)!;
  if (positionals.length > 1) throw new Error("give one event id");
  const id = positionals[0];
  const base = `http://${values.host.includes(":") ? `[${values.host}]` : values.host}:${port}`;
  const url = id === undefined ? `${base}/events?limit=${limit}` : `${base}/events/${encodeURIComponent(id)}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  } catch (e) {
    err(
      `error: no ofevents run answers at ${base} (give its page's port, --ui-port, or its --metrics-port with --port): ${(e as Error).message}\n`,
    );
    return 1;
  }
  const body = (await res.json()) as Record<string, unknown>;
  if (values.json) {
    out(`${JSON.stringify(body)}\n`);
    return res.ok ? 0 : 1;
  }
  if (!res.ok) {
    err(`${String(body["error"] ?? `HTTP ${res.status}`)}\n`);
    return 1;
  }
  const describe = (s: JournalStep): string => {
    const d = Object.entries(s.detail)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    return `${s.at.slice(11, 23)}  ${s.where}  ${s.step}${d === "" ? "" : `  ${d}`}`;
  };
  if (id === undefined) {
    for (const e of body["events"] as Array<{ id: string; last?: JournalStep }>)
      out(`${e.id}  ${e.last === undefined ? "" : describe(e.last)}\n`);
    return 0;
  }
  const entry = body as unknown as JournalEntry;
  out(`event ${entry.id}\n`);
  for (const s of entry.steps) out(`  ${describe(s)}\n`);
  if (entry.omitted > 0) out(`  (${entry.omitted} later steps not kept)\n`);
  return 0;
}

/** `--from` / `--to`: an RFC 3339 time, or a duration before now (`90m`, `2h`). */
function timeOption(flag: string, text: string | undefined, now: number): Date | undefined {
  if (text === undefined) return undefined;
  const at = parseHistoryTime(text, new Date(now));
  if (at !== undefined) return at;
  throw new Error(`${flag} must be an RFC 3339 time (2026-12-05T10:00:00Z) or a duration ago (90m), got "${text}"`);
}

async function replayCommand(args: string[], out: Write, err: Write): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...HISTORY_OPTIONS,
      from: { type: "string" },
      to: { type: "string" },
    },
  });
  const now = Date.now();
  const from = timeOption("--from", values.from, now);
  if (from === undefined) throw new Error("--from is required: an RFC 3339 time or a duration ago (90m)");
  const to = timeOption("--to", values.to, now);
  if (to !== undefined && to < from) throw new Error("--to is before --from");
  const logger = historyLogger(values, err);
  const tracing = await startTracing("ofevents-replay", logger);
  const r = await runReplay({
    paths: files(values, positionals),
    trigger: values.trigger,
    from,
    to,
    filter: values.filter,
    dryRun: values["dry-run"],
    logger,
  }).finally(() => tracing?.shutdown());
  await writeResultFile(values["result-file"], r);
  const inputs = Object.entries(r.inputs)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  if (values.json) out(`${JSON.stringify(r)}\n`);
  else if (values["dry-run"]) {
    out(
      `${r.trigger}: ${r.replayed} event(s) would be replayed (${r.read} read${inputs === "" ? "" : `: ${inputs}`})\n`,
    );
    for (const id of r.ids) out(`${id}\n`);
  } else
    out(
      `${r.trigger}: ${r.replayed} event(s) replayed (${r.read} read${inputs === "" ? "" : `: ${inputs}`}): ${r.delivered} delivered, ${r.deadLettered} dead-lettered, ${r.filtered} filtered out, ${r.released} released unjoined${r.complete ? "" : "; NOT all finished in time"}\n`,
    );
  return r.complete ? 0 : 1;
}

/** An environment variable's value; unset or empty is undefined. */
function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}

function intOption(flag: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isInteger(n) || n < min || n > max)
    throw new Error(`${flag} must be a whole number from ${min} to ${max}, got "${text}"`);
  return n;
}

function boolOption(flag: string, text: string): boolean {
  if (text === "true") return true;
  if (text === "false") return false;
  throw new Error(`${flag} must be true or false, got "${text}"`);
}

function oneOf<T extends string>(flag: string, text: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(text)) return text as T;
  throw new Error(`${flag} must be ${allowed.join(", ")}, got "${text}"`);
}

async function controller(args: string[], out: Write, err: Write): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      image: { type: "string", default: env("OFEVENTS_IMAGE") ?? "" },
      "image-pull-policy": { type: "string", default: env("OFEVENTS_IMAGE_PULL_POLICY") },
      "bus-driver": { type: "string", default: env("OFEVENTS_BUS_DRIVER") },
      mode: { type: "string", default: env("OFEVENTS_MODE") ?? "deployment" },
      "dapr-enabled": { type: "string", default: env("OFEVENTS_DAPR_ENABLED") ?? "true" },
      "dapr-app-port": { type: "string", default: env("OFEVENTS_DAPR_APP_PORT") ?? "8081" },
      "dapr-config": { type: "string", default: env("OFEVENTS_DAPR_CONFIG") },
      "dapr-log-level": { type: "string", default: env("OFEVENTS_DAPR_LOG_LEVEL") },
      "dapr-sidecar-timeout": { type: "string", default: env("OFEVENTS_DAPR_SIDECAR_TIMEOUT") },
      "dapr-pubsub-name": { type: "string", default: env("OFEVENTS_DAPR_PUBSUB_NAME") },
      "keda-enabled": { type: "string", default: env("OFEVENTS_KEDA_ENABLED") ?? "true" },
      "keda-polling-interval": { type: "string", default: env("OFEVENTS_KEDA_POLLING_INTERVAL") },
      "keda-cooldown-period": { type: "string", default: env("OFEVENTS_KEDA_COOLDOWN_PERIOD") },
      "keda-initial-cooldown-period": { type: "string", default: env("OFEVENTS_KEDA_INITIAL_COOLDOWN_PERIOD") },
      "keda-min-replicas": { type: "string", default: env("OFEVENTS_KEDA_MIN_REPLICAS") },
      "keda-max-replicas": { type: "string", default: env("OFEVENTS_KEDA_MAX_REPLICAS") },
      "keda-lag-threshold": { type: "string", default: env("OFEVENTS_KEDA_LAG_THRESHOLD") ?? "10" },
      "keda-nats-monitoring-endpoint": { type: "string", default: env("OFEVENTS_KEDA_NATS_MONITORING_ENDPOINT") },
      "keda-nats-account": { type: "string", default: env("OFEVENTS_KEDA_NATS_ACCOUNT") ?? "$G" },
      "workload-service-account": { type: "string", default: env("OFEVENTS_WORKLOAD_SERVICE_ACCOUNT") },
      "workload-run-as-user": { type: "string", default: env("OFEVENTS_WORKLOAD_RUN_AS_USER") ?? "1000" },
      "workload-resources": { type: "string", default: env("OFEVENTS_WORKLOAD_RESOURCES") },
      "watch-namespaces": { type: "string", default: env("OFEVENTS_WATCH_NAMESPACES") ?? "" },
      "health-port": { type: "string", default: env("OFEVENTS_HEALTH_PORT") ?? "8081" },
      "health-host": { type: "string", default: env("OFEVENTS_HEALTH_HOST") ?? "0.0.0.0" },
      "metrics-port": { type: "string", default: env("OFEVENTS_METRICS_PORT") },
      "lease-namespace": { type: "string", default: env("OFEVENTS_LEASE_NAMESPACE") },
      namespace: { type: "string" },
      "lease-name": { type: "string", default: env("OFEVENTS_LEASE_NAME") ?? "ofevents-controller" },
      "lease-identity": { type: "string", default: env("OFEVENTS_LEASE_IDENTITY") },
      "lease-duration": { type: "string", default: env("OFEVENTS_LEASE_DURATION") ?? "15s" },
      "lease-retry-period": { type: "string", default: env("OFEVENTS_LEASE_RETRY_PERIOD") ?? "2s" },
      kubeconfig: { type: "string" },
      "log-level": { type: "string", default: env("OFEVENTS_LOG_LEVEL") ?? "info" },
      "log-format": { type: "string", default: env("OFEVENTS_LOG_FORMAT") ?? "json" },
    },
  });
  const controller = await import("@ofevents/controller");
  const { kubeconfig, logLevel, logFormat, ...config } = controllerConfig(values, controller);
  const logger = createLogger({ level: logLevel, format: logFormat, write: out });
  const running = await controller.startController({
    ...config,
    kubeConfig: controller.loadKubeConfig(kubeconfig),
    logger,
  });
  await untilSignal(running.stop, logger, err);
  logger.info("stopped");
  return 0;
}

type ControllerValues = Record<string, string | undefined> & { image: string; "health-port": string } & Record<
    | "mode"
    | "dapr-enabled"
    | "keda-enabled"
    | "keda-lag-threshold"
    | "keda-nats-account"
    | "watch-namespaces"
    | "health-host"
    | "lease-name"
    | "lease-duration"
    | "lease-retry-period"
    | "log-level"
    | "log-format",
    string
  >;

/** What `ofevents controller` starts with, from its parsed options (arguments, then environment variables, then defaults). */
function controllerConfig(
  values: ControllerValues,
  controller: Pick<typeof import("@ofevents/controller"), "resolveOptions" | "ownNamespace">,
): Omit<StartControllerInput, "kubeConfig" | "logger"> & {
  kubeconfig: string | undefined;
  logLevel: string;
  logFormat: LogFormat;
} {
  if (values.image === "") throw new Error("--image is required (the image the workloads run)");
  const logFormat = oneOf("--log-format", values["log-format"], ["pretty", "json"] as const);
  const busDriver =
    values["bus-driver"] === undefined
      ? undefined
      : oneOf("--bus-driver", values["bus-driver"], ["dapr", "direct"] as const);
  const pullPolicy =
    values["image-pull-policy"] === undefined
      ? undefined
      : oneOf("--image-pull-policy", values["image-pull-policy"], ["Always", "IfNotPresent", "Never"] as const);
  const sidecarTimeout = values["dapr-sidecar-timeout"];
  if (sidecarTimeout !== undefined && parseDuration(sidecarTimeout) === undefined)
    throw new Error(`--dapr-sidecar-timeout must be a duration such as 60s, got "${sidecarTimeout}"`);
  let resources: ControllerOptions["resources"];
  if (values["workload-resources"] !== undefined) {
    try {
      resources = JSON.parse(values["workload-resources"]) as ControllerOptions["resources"];
    } catch (e) {
      throw new Error(`--workload-resources must be JSON: ${(e as Error).message}`);
    }
  }
  const port = (flag: string, text: string | undefined, min = 0): number | undefined =>
    intOption(flag, text, min, 65_535);
  const healthPort = port("--health-port", values["health-port"])!;
  const metricsPort = port("--metrics-port", values["metrics-port"]);
  const namespaces = values["watch-namespaces"]
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  const options: ControllerOptions = {
    image: values.image,
    imagePullPolicy: pullPolicy,
    mode: oneOf("--mode", values.mode, ["deployment", "function"] as const),
    busDriver,
    dapr: {
      enabled: boolOption("--dapr-enabled", values["dapr-enabled"]),
      config: values["dapr-config"],
      logLevel: values["dapr-log-level"],
      sidecarTimeout,
      pubsubName: values["dapr-pubsub-name"],
    },
    keda: {
      enabled: boolOption("--keda-enabled", values["keda-enabled"]),
      lagThreshold: values["keda-lag-threshold"],
      natsMonitoringEndpoint: values["keda-nats-monitoring-endpoint"],
      natsAccount: values["keda-nats-account"],
      pollingInterval: intOption("--keda-polling-interval", values["keda-polling-interval"], 1, 86_400),
      cooldownPeriod: intOption("--keda-cooldown-period", values["keda-cooldown-period"], 0, 86_400),
      initialCooldownPeriod: intOption(
        "--keda-initial-cooldown-period",
        values["keda-initial-cooldown-period"],
        0,
        86_400,
      ),
      minReplicaCount: intOption("--keda-min-replicas", values["keda-min-replicas"], 0, 10_000),
      maxReplicaCount: intOption("--keda-max-replicas", values["keda-max-replicas"], 1, 10_000),
    },
    healthPort: port("--dapr-app-port", values["dapr-app-port"], 1),
    runAsUser: intOption("--workload-run-as-user", values["workload-run-as-user"], 1, 2_147_483_647),
    serviceAccountName: values["workload-service-account"],
    resources,
  };
  const leaseMs = parseDuration(values["lease-duration"]);
  if (leaseMs === undefined || leaseMs < 1000 || leaseMs % 1000 !== 0)
    throw new Error(`--lease-duration must be whole seconds such as 15s, got "${values["lease-duration"]}"`);
  const retryPeriodMs = parseDuration(values["lease-retry-period"]);
  if (retryPeriodMs === undefined || retryPeriodMs <= 0 || retryPeriodMs >= leaseMs)
    throw new Error(
      `--lease-retry-period must be a duration shorter than --lease-duration, got "${values["lease-retry-period"]}"`,
    );
  // Fails here, before connecting, for options that cannot work together.
  controller.resolveOptions(options);
  return {
    options,
    namespace: values["lease-namespace"] ?? values.namespace ?? controller.ownNamespace(),
    leaderElection: {
      leaseName: values["lease-name"],
      identity: values["lease-identity"],
      leaseDurationSeconds: leaseMs / 1000,
      retryPeriodMs,
    },
    namespaces: namespaces.length === 0 ? undefined : namespaces,
    health: { port: healthPort, host: values["health-host"] },
    metrics: metricsPort === undefined ? undefined : { port: metricsPort, host: values["health-host"] },
    kubeconfig: values.kubeconfig,
    logLevel: values["log-level"],
    logFormat,
  };
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
