// The image could not be built here (no container engine): what can be checked without it. The
// Dockerfile's ENTRYPOINT and CMD are parsed; the script ENTRYPOINT runs is in the build context
// and built by the install step; ENTRYPOINT plus the args the controller renders for a workload
// (and the controller Deployment's args and environment) go through the CLI's own argument
// parsing without a usage error.
import { access, readFile } from "node:fs/promises";
import { join, posix } from "node:path";
import {
  renderEventSource,
  renderTrigger,
  validateEventSource,
  validateTrigger,
  type ControllerOptions,
  type RenderedWorkload,
} from "@ofevents/controller";
import { main } from "@ofevents/cli";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
const API = "events.openfunction.io/v1alpha1";

type PodSpec = NonNullable<RenderedWorkload["deployment"]>["spec"]["template"]["spec"];

interface Stage {
  from: string;
  workdir: string;
  instructions: { op: string; args: string }[];
}

/** The Dockerfile's stages, each with its instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const lines = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`not an instruction: ${line}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!;
    if (op === "FROM") stages.push({ from: args, workdir: "/", instructions: [] });
    else {
      const stage = stages.at(-1);
      if (stage === undefined) throw new Error(`${op} before FROM`);
      if (op === "WORKDIR") stage.workdir = posix.resolve(stage.workdir, args);
      stage.instructions.push({ op, args });
    }
  }
  return stages;
}

/** An exec-form (JSON array) ENTRYPOINT or CMD; the shell form would not pass args on as they are. */
function execForm(stage: Stage, op: "ENTRYPOINT" | "CMD"): string[] {
  const last = stage.instructions.filter((i) => i.op === op).at(-1);
  if (last === undefined) throw new Error(`no ${op}`);
  const parsed = JSON.parse(last.args) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === "string")) throw new Error(`${op} is not exec form`);
  return parsed as string[];
}

/** Runs the CLI's main() on `argv` (what follows the script in the container's command line). */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const stages = (async () => parseDockerfile(await readFile(join(ROOT, "Dockerfile"), "utf8")))();

/** The repository file an image path comes from: WORKDIR /app with packages copied from the build stage. */
async function imageScript(): Promise<{ argvPrefix: string[]; repoPath: string }> {
  const final = (await stages).at(-1)!;
  const entrypoint = execForm(final, "ENTRYPOINT");
  expect(entrypoint[0]).toBe("node");
  const script = posix.resolve(final.workdir, entrypoint[1]!);
  // COPY --from=build ... /src/packages ./packages: /app/packages/... is the context's packages/...
  const copy = final.instructions.find((i) => i.op === "COPY" && /\/src\/packages\s+\.\/packages$/.test(i.args));
  expect(copy, "the final stage copies the packages").toBeDefined();
  const prefix = posix.join(final.workdir, "packages") + "/";
  expect(script.startsWith(prefix), script).toBe(true);
  return { argvPrefix: entrypoint.slice(2), repoPath: join(ROOT, "packages", script.slice(prefix.length)) };
}

const jetstreamBus = {
  apiVersion: API,
  kind: "EventBus",
  metadata: { name: "default", namespace: "default", uid: "00000000-0000-4000-8000-000000000001" },
  spec: { jetstream: { url: "nats://nats.default:4222" } },
};
const kafkaSource = {
  apiVersion: API,
  kind: "EventSource",
  metadata: { name: "orders", namespace: "default", uid: "00000000-0000-4000-8000-000000000002" },
  spec: {
    logLevel: "2",
    eventBus: "default",
    kafka: { created: { brokers: "kafka:9092", topic: "orders", authRequired: false } },
    webhook: { hook: { endpoint: "/hook", port: 12000 } },
  },
};
const trigger = {
  apiVersion: API,
  kind: "Trigger",
  metadata: { name: "pair", namespace: "default", uid: "00000000-0000-4000-8000-000000000003" },
  spec: {
    eventBus: "default",
    inputs: { a: { eventSource: "orders", event: "created" } },
    subscribers: [{ condition: "a", sink: { uri: "http://sink.default.svc/" } }],
  },
};

function rendered(options: ControllerOptions): RenderedWorkload[] {
  const buses = { eventBuses: [jetstreamBus as never], clusterEventBuses: [] };
  const es = validateEventSource(kafkaSource, { buses, options });
  const t = validateTrigger(trigger, { buses, options });
  if (!es.ok || !t.ok) throw new Error(`${es.condition.message} ${t.condition.message}`);
  return [
    renderEventSource({ eventSource: es.resource, bus: es.bus, options }),
    renderTrigger({ trigger: t.resource, bus: t.bus, options }),
  ];
}

describe("image", () => {
  it("image - ENTRYPOINT runs the CLI script of the build context, which the install step builds", async () => {
    const { repoPath } = await imageScript();
    await access(repoPath);
    expect(repoPath).toBe(join(ROOT, "packages/cli/bin/ofevents.js"));
    // The script imports ../dist/main.js; .dockerignore keeps dist out of the context, so the
    // build stage's `npm install` must build it (the root package's prepare script).
    expect(await readFile(repoPath, "utf8")).toContain('from "../dist/main.js"');
    expect(await readFile(join(ROOT, ".dockerignore"), "utf8")).toMatch(/^\*\*\/dist$/m);
    const build = (await stages)[0]!;
    expect(build.instructions.some((i) => i.op === "RUN" && /\bnpm (install|ci)\b/.test(i.args))).toBe(true);
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts["prepare"]).toMatch(/\btsc -b\b/);
    // The image's user owns nothing it must write: the workloads' /tmp is an emptyDir.
    expect((await stages).at(-1)!.instructions.find((i) => i.op === "USER")?.args).toBe("1000:1000");
  });

  it.each([
    { name: "the defaults (Dapr path)", options: {} },
    { name: "the direct drivers", options: { busDriver: "direct" } },
    {
      name: "Dapr settings and another app port",
      options: { healthPort: 9000, dapr: { sidecarTimeout: "90s", pubsubName: "shared", config: "c" } },
    },
    { name: "Function mode", options: { mode: "function" } },
  ] as { name: string; options: Partial<ControllerOptions> }[])(
    "image - ENTRYPOINT + the args rendered with $name are an invocation the CLI accepts",
    async ({ options }) => {
      const { argvPrefix } = await imageScript();
      for (const r of rendered({ image: "ofevents/ofevents:0.1.0", ...options })) {
        const pod: PodSpec =
          r.deployment?.spec.template.spec ?? (r.function!.spec["serving"] as { template: PodSpec }).template;
        const c = pod.containers[0]!;
        // No command: the image's ENTRYPOINT runs with the rendered args (its CMD replaced).
        expect((c as { command?: unknown }).command).toBeUndefined();
        const argv = [...argvPrefix, ...c.args];
        expect(["eventsource", "trigger"]).toContain(argv[0]);
        const res = await cli(argv);
        // Parsed and checked; it stops at reading the mounted ConfigMap, absent here.
        expect(res.err, argv.join(" ")).toMatch(/^\/etc\/ofevents: cannot read: ENOENT/);
        expect(res.code).toBe(1);
      }
    },
  );

  it("image - the check can fail: an arg the CLI refuses is a usage error", async () => {
    const { argvPrefix } = await imageScript();
    const [r] = rendered({ image: "ofevents/ofevents:0.1.0" });
    const bad = await cli([...argvPrefix, ...r!.deployment!.spec.template.spec.containers[0]!.args, "--bogus"]);
    expect(bad).toMatchObject({ code: 2, err: "error: unknown option --bogus; see: ofevents eventsource --help\n" });
  });

  it("image - CMD and deploy/controller.yaml's args and environment are an ofevents controller invocation it accepts", async () => {
    const final = (await stages).at(-1)!;
    expect(execForm(final, "CMD")).toEqual(["controller"]);
    const docs = parseAllDocuments(await readFile(join(ROOT, "deploy/controller.yaml"), "utf8")).map((d) => d.toJS());
    const deployment = docs.find((d: { kind?: string }) => d.kind === "Deployment") as {
      spec: {
        template: {
          spec: { containers: { image: string; args: string[]; env: { name: string; value?: string }[] }[] };
        };
      };
    };
    const c = deployment.spec.template.spec.containers[0]!;
    expect(c.args[0]).toBe("controller");
    const saved = { ...process.env };
    try {
      for (const e of c.env) if (e.value !== undefined) process.env[e.name] = e.value;
      expect(process.env["OFEVENTS_IMAGE"]).toBe(c.image);
      // Parsed and checked; it stops at loading the kubeconfig, absent here.
      const res = await cli([...c.args, "--kubeconfig", "/nonexistent/kubeconfig"]);
      expect(res.err).toMatch(/nonexistent\/kubeconfig/);
      expect(res.err).not.toMatch(/must be|unknown option|required/);
      expect(res.code).toBe(1);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
