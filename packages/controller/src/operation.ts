/**
 * Redrive and Replay, the Kubernetes-native `ofevents redrive` / `ofevents replay`: each resource
 * is run once, as a Job of the project's image reading the Trigger's manifests (its ConfigMap, as
 * the trigger workload reads them) and running the verb with `--json --result-file
 * /dev/termination-log`. The controller writes the outcome to the resource's status: `phase`
 * (Pending → Running → Succeeded | Failed), the Job, start and completion times, the counts the
 * verb printed (`result`, read from the Pod's termination message) and a `Complete` or `Failed`
 * condition. A finished operation is never run again; its spec cannot change (the CRD says so).
 *
 * The Job does not retry (`backoffLimit: 0`): a redrive that failed midway can be created again
 * (dead letters it settled are skipped); a replay run twice would feed the events twice.
 */
import {
  formatIssue,
  namespaceOf,
  parseHistoryTime,
  redriveSchema,
  replaySchema,
  type Operation,
  type ResolvedBus,
  type Trigger,
} from "@ofevents/core";
import { FIELD_MANAGER } from "./apply.js";
import type { ConfigMap, Job } from "./k8s.js";
import { isStatus } from "./kube/api.js";
import { COMPONENT_LABEL, NAME_LABEL, dnsLabel, objectMeta, ownerLabels } from "./labels.js";
import { Defaults, resolveOptions } from "./options.js";
import type { ReconcileInput } from "./reconcile.js";
import { kindPath, type OperationKindName, type RawObject } from "./resources.js";
import { renderTrigger } from "./trigger/render.js";
import { validateTrigger } from "./trigger/validate.js";
import type { BusCatalog } from "./validation.js";
import { projectContainer, projectPodSpec, secretEnv } from "./workload.js";

export const OperationPhase = {
  Pending: "Pending",
  Running: "Running",
  Succeeded: "Succeeded",
  Failed: "Failed",
} as const;
export type OperationPhase = (typeof OperationPhase)[keyof typeof OperationPhase];

/** Where the verb writes its `--json` result: kubelet's default termination message path. */
export const RESULT_PATH = "/dev/termination-log";

export interface OperationStatus {
  phase: OperationPhase;
  message: string;
  job?: string;
  /** A Replay's range as run (durations resolved against the creation time). */
  from?: string;
  to?: string;
  startTime?: string;
  completionTime?: string;
  /** The verb's `--json` result without the id list (a termination message holds 4 KiB at most). */
  result?: Record<string, unknown>;
  conditions?: Array<{ type: string; status: "True"; reason: string; message: string; lastTransitionTime: string }>;
  observedGeneration?: number;
}

/** The Job (and its ConfigMap) of an operation: `redrive-{name}` / `replay-{name}`, a DNS label. */
export function operationJobName(kind: OperationKindName, name: string): string {
  return dnsLabel(`${kind.toLowerCase()}-${name}`);
}

/** `from` / `to` of a Replay as RFC 3339: a duration is counted back from `created`. */
export function resolveHistoryTime(text: string, created: Date): string {
  const at = parseHistoryTime(text, created);
  if (at === undefined) throw new Error(`not an RFC 3339 time or a duration: "${text}"`);
  return at.toISOString();
}

export interface RenderOperationInput {
  operation: Operation;
  /** The operation's uid (owner references). */
  owner: { kind: string; metadata: { name: string; uid?: unknown } };
  trigger: Trigger;
  bus: ResolvedBus;
  /** The creation time of the operation: what a Replay's durations count back from. */
  created: Date;
  options: ReconcileInput["options"];
}

/** The verb's arguments, as the Job's container runs them. */
export function operationArgs(op: Operation, created: Date): string[] {
  const ns = namespaceOf(op);
  const args = [op.kind.toLowerCase(), "-f", Defaults.configPath, "--trigger", `${ns}/${op.spec.trigger}`];
  if (op.kind === "Redrive") {
    if (op.spec.subscriber !== undefined) args.push("--subscriber", String(op.spec.subscriber));
    if (op.spec.limit !== undefined) args.push("--limit", String(op.spec.limit));
  } else {
    args.push("--from", resolveHistoryTime(op.spec.from, created));
    if (op.spec.to !== undefined) args.push("--to", resolveHistoryTime(op.spec.to, created));
  }
  if (op.spec.filter !== undefined) args.push("--filter", op.spec.filter);
  if (op.spec.dryRun === true) args.push("--dry-run");
  args.push("--json", "--log-format", "json", "--log-level", "info", "--result-file", RESULT_PATH);
  return args;
}

/**
 * The ConfigMap (the Trigger and its bus, as the trigger workload reads them: sink refs resolved)
 * and the Job of an operation, both owned by it.
 */
export function renderOperation(input: RenderOperationInput): { configMap: ConfigMap; job: Job } {
  const o = resolveOptions(input.options);
  const op = input.operation;
  const namespace = namespaceOf(op);
  const name = operationJobName(op.kind, op.metadata.name);
  const triggerObjects = renderTrigger({ trigger: input.trigger, bus: input.bus, options: input.options }).objects;
  const triggerConfig = triggerObjects.find((x): x is ConfigMap => x.kind === "ConfigMap");
  if (triggerConfig === undefined) throw new Error("the Trigger rendered no ConfigMap");
  const configMap: ConfigMap = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: objectMeta(input.owner, name, namespace),
    data: { ...triggerConfig.data },
  };
  const component = { [NAME_LABEL]: "ofevents", [COMPONENT_LABEL]: op.kind.toLowerCase() };
  const container = {
    ...projectContainer(o, operationArgs(op, input.created), secretEnv(input.trigger.spec, input.bus.resource?.spec)),
    terminationMessagePolicy: "FallbackToLogsOnError" as const,
  };
  const job: Job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: objectMeta(input.owner, name, namespace, component),
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: { ...ownerLabels(input.owner), ...component } },
        spec: { ...projectPodSpec(o, container, configMap), restartPolicy: "Never" },
      },
    },
  };
  return { configMap, job };
}

interface JobStatus {
  metadata?: { uid?: string };
  status?: {
    active?: number;
    startTime?: string;
    completionTime?: string;
    conditions?: Array<{
      type: string;
      status: string;
      reason?: string;
      message?: string;
      lastTransitionTime?: string;
    }>;
  };
}

interface PodList {
  items?: Array<{
    status?: {
      containerStatuses?: Array<{
        name: string;
        state?: { terminated?: { exitCode: number; message?: string; finishedAt?: string } };
      }>;
    };
  }>;
}

/** A summary line of a result, for `status.message`. */
export function describeResult(kind: OperationKindName, r: Record<string, unknown>, dryRun: boolean): string {
  const n = (k: string): number => (typeof r[k] === "number" ? (r[k] as number) : 0);
  if (kind === "Redrive") {
    if (dryRun)
      return `${n("matched")} dead letter(s) would be redriven (${n("read")} read, ${n("settled")} settled earlier)`;
    return `${n("delivered")} delivered, ${n("deadLettered")} dead-lettered again, of ${n("matched")} matching dead letter(s) (${n("read")} read, ${n("settled")} settled earlier, ${n("orphaned")} of no subscriber)`;
  }
  if (dryRun) return `${n("replayed")} event(s) would be replayed (${n("read")} read)`;
  return `${n("replayed")} event(s) replayed (${n("read")} read): ${n("delivered")} delivered, ${n("deadLettered")} dead-lettered, ${n("filtered")} filtered out, ${n("released")} released unjoined${r["complete"] === false ? "; NOT all finished in time" : ""}`;
}

/** The verb's result in a termination message, or undefined when it holds something else (a log tail). */
export function parseResult(message: string | undefined): Record<string, unknown> | undefined {
  const text = message?.trim();
  if (text === undefined || !text.startsWith("{")) return undefined;
  try {
    const r = JSON.parse(text) as unknown;
    return typeof r === "object" && r !== null && !Array.isArray(r) ? (r as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reconciles one Redrive or Replay; "invalid" when it failed before a Job could run. `buses` is
 * read only before the Job is created (a status change requeues the operation too).
 */
export async function reconcileOperation(
  r: ReconcileInput,
  kind: OperationKindName,
  raw: RawObject,
  buses: () => BusCatalog,
): Promise<"success" | "invalid"> {
  const prev = raw.status as Partial<OperationStatus> | undefined;
  if (prev?.phase === OperationPhase.Succeeded || prev?.phase === OperationPhase.Failed) return "success";
  const ns = raw.metadata?.namespace ?? "default";
  const name = raw.metadata?.name ?? "";
  const jobName = operationJobName(kind, name);
  const fail = async (message: string): Promise<"invalid"> => {
    await writeOperationStatus(r, kind, raw, { phase: OperationPhase.Failed, message });
    return "invalid";
  };

  const jobPath = `/apis/batch/v1/namespaces/${ns}/jobs/${jobName}`;
  let job: JobStatus | undefined;
  try {
    job = (await r.api.request("GET", jobPath)) as JobStatus;
  } catch (err) {
    if (!isStatus(err, 404)) throw err;
  }

  if (job === undefined) {
    const parsed = (kind === "Redrive" ? redriveSchema : replaySchema).safeParse(raw);
    if (!parsed.success)
      return fail(`invalid ${kind}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    const op = parsed.data;
    let rawTrigger: unknown;
    try {
      rawTrigger = await r.api.request("GET", kindPath("Trigger", ns, op.spec.trigger));
    } catch (err) {
      if (isStatus(err, 404)) return fail(`no Trigger ${ns}/${op.spec.trigger}`);
      throw err;
    }
    const v = validateTrigger(rawTrigger, { buses: buses(), options: r.options });
    if (!v.ok || v.resource === undefined)
      return fail(
        `the Trigger ${ns}/${op.spec.trigger} is not valid: ${v.issues.map(formatIssue).join("; ") || v.condition.message}`,
      );
    const spec = v.bus.spec;
    if (spec?.jetstream === undefined && spec?.kafka === undefined)
      return fail(
        `the Trigger ${ns}/${op.spec.trigger}'s bus keeps no history ${kind === "Redrive" ? "redrive" : "replay"} can read: it runs on jetstream (natsStreaming) and kafka buses`,
      );
    const created = new Date(raw.metadata?.creationTimestamp ?? Date.now());
    const { configMap, job: rendered } = renderOperation({
      operation: op,
      owner: { kind, metadata: { name, uid: raw.metadata?.uid } },
      trigger: v.resource,
      bus: v.bus,
      created,
      options: r.options,
    });
    await r.api.request(
      "PATCH",
      `/api/v1/namespaces/${ns}/configmaps/${configMap.metadata.name}?fieldManager=${FIELD_MANAGER}&force=true`,
      configMap,
      "application/apply-patch+yaml",
    );
    try {
      await r.api.request("POST", `/apis/batch/v1/namespaces/${ns}/jobs?fieldManager=${FIELD_MANAGER}`, rendered);
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
    }
    const range =
      op.kind === "Replay"
        ? {
            from: resolveHistoryTime(op.spec.from, created),
            ...(op.spec.to === undefined ? {} : { to: resolveHistoryTime(op.spec.to, created) }),
          }
        : {};
    await writeOperationStatus(r, kind, raw, {
      phase: OperationPhase.Pending,
      message: `Job ${jobName} created`,
      job: jobName,
      ...range,
    });
    return "success";
  }

  const keep = {
    job: jobName,
    ...(prev?.from === undefined ? {} : { from: prev.from }),
    ...(prev?.to === undefined ? {} : { to: prev.to }),
    ...(job.status?.startTime === undefined ? {} : { startTime: job.status.startTime }),
  };
  const conditions = job.status?.conditions ?? [];
  const done = conditions.find((c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True");
  if (done === undefined) {
    const running = (job.status?.active ?? 0) > 0;
    await writeOperationStatus(r, kind, raw, {
      phase: running ? OperationPhase.Running : OperationPhase.Pending,
      message: running ? `Job ${jobName} running` : `Job ${jobName} created`,
      ...keep,
    });
    return "success";
  }

  // Finished: the result is the Pod's termination message (the verb's --json, or a log tail).
  const uid = job.metadata?.uid;
  const pods = (await r.api.request(
    "GET",
    `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent(`batch.kubernetes.io/controller-uid=${uid ?? ""}`)}`,
  )) as PodList;
  const terminated = (pods.items ?? [])
    .map((p) => p.status?.containerStatuses?.find((c) => c.name === Defaults.containerName)?.state?.terminated)
    .filter((t) => t !== undefined)
    .sort((a, b) => (a.finishedAt ?? "").localeCompare(b.finishedAt ?? ""))
    .pop();
  const result = parseResult(terminated?.message);
  const dryRun = raw.spec?.["dryRun"] === true;
  const succeeded = done.type === "Complete";
  const message =
    result !== undefined
      ? describeResult(kind, result, dryRun)
      : (terminated?.message?.trim() ?? "") ||
        `${done.reason ?? "Failed"}${done.message === undefined ? "" : `: ${done.message}`}`;
  const completionTime = job.status?.completionTime ?? done.lastTransitionTime ?? new Date().toISOString();
  await writeOperationStatus(r, kind, raw, {
    phase: succeeded ? OperationPhase.Succeeded : OperationPhase.Failed,
    message,
    ...keep,
    completionTime,
    ...(result === undefined ? {} : { result }),
    conditions: [
      {
        type: succeeded ? "Complete" : "Failed",
        status: "True",
        reason: succeeded ? "Done" : result !== undefined ? "NotAllDelivered" : (done.reason ?? "JobFailed"),
        message,
        lastTransitionTime: completionTime,
      },
    ],
  });
  return "success";
}

/** Merge-patches the status, unless it already says the same (no write, no watch event). */
async function writeOperationStatus(
  r: ReconcileInput,
  kind: OperationKindName,
  raw: RawObject,
  next: OperationStatus,
): Promise<void> {
  const generation = raw.metadata?.generation;
  const status: OperationStatus = { ...next, ...(generation === undefined ? {} : { observedGeneration: generation }) };
  const prev = (raw.status ?? {}) as Record<string, unknown>;
  const same = (Object.keys(status) as Array<keyof OperationStatus>).every(
    (k) => JSON.stringify(prev[k]) === JSON.stringify(status[k]),
  );
  if (same) return;
  await r.api.request(
    "PATCH",
    `${kindPath(kind, raw.metadata?.namespace, raw.metadata?.name)}/status`,
    { status },
    "application/merge-patch+json",
  );
}
