/**
 * The checks `ofevents validate` and `ofevents run` share: the schemas and expressions (the
 * loader), each event source's adapter, and what only the whole set of manifests can tell (a
 * trigger naming a source or event that is not there, a trigger and its source on different
 * buses, two webhooks (or generic events) on one port and path, a sink reference that cannot be resolved, a local
 * Function whose module is missing). `run` refuses to start on any issue; both print warnings.
 */
import { access } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import {
  MODULE_ANNOTATION,
  SourceKind,
  genericEndpoint,
  isSyncFunction,
  loadManifests,
  namespaceOf,
  resolveEventBus,
  type EventSource,
  type FunctionResource,
  type Located,
  type Manifests,
  type Sink,
  type ValidationIssue,
} from "@ofevents/core";
import { validateEventSource } from "@ofevents/eventsource";

export interface CheckedManifests {
  manifests: Manifests;
  issues: ValidationIssue[];
  warnings: ValidationIssue[];
}

export interface CheckOptions {
  /**
   * `run` (the default of `startEmbedded`): what can never work in this process is an issue.
   * `validate` (the default here): the files may be meant for a cluster, where the other
   * resources live elsewhere, so a reference to something not in the files is a warning that
   * says `run` would refuse it.
   */
  mode?: "run" | "validate" | undefined;
  /**
   * The resource runs alone and its peers elsewhere (the single-resource entrypoints): a trigger
   * input naming an EventSource that is not in the files is expected, not a problem.
   */
  peersElsewhere?: boolean | undefined;
}

/** Loads and checks manifests: every issue and warning at once, each with file, document and field. */
export async function validateAll(paths: string[], options: CheckOptions = {}): Promise<CheckedManifests> {
  const manifests = await loadManifests(paths);
  const issues = [...manifests.issues];
  const warnings = [...manifests.warnings];
  for (const es of manifests.eventSources) {
    for (const i of await validateEventSource(es.resource)) issues.push(at(es, i));
  }
  const found = await checkManifests(manifests, options);
  issues.push(...found.issues);
  warnings.push(...found.warnings);
  return { manifests, issues, warnings };
}

function at<T extends { kind: string; metadata: { name: string } }>(
  r: Located<T>,
  i: Omit<ValidationIssue, "file" | "docIndex" | "kind" | "name">,
): ValidationIssue {
  return {
    ...i,
    file: r.file,
    line: r.line,
    docIndex: r.docIndex,
    kind: r.resource.kind,
    name: r.resource.metadata.name,
  };
}

/** A Function `ofevents run` hosts: it names its local module. Others are deployed elsewhere. */
export function isLocalFunction(fn: FunctionResource): boolean {
  return fn.metadata.annotations?.[MODULE_ANNOTATION] !== undefined;
}

/** The checks across resources; pure apart from looking up local Function modules on disk. */
export async function checkManifests(
  m: Manifests,
  options: CheckOptions = {},
): Promise<{ issues: ValidationIssue[]; warnings: ValidationIssue[] }> {
  const issues: ValidationIssue[] = [];
  const warnings: ValidationIssue[] = [];
  const buses = {
    eventBuses: m.eventBuses.map((b) => b.resource),
    clusterEventBuses: m.clusterEventBuses.map((b) => b.resource),
  };
  const busKey = (name: string, ns: string): { key: string; inProcess: boolean } => {
    const r = resolveEventBus(name, ns, buses);
    return { key: r.key, inProcess: r.resource === undefined || r.spec?.memory !== undefined };
  };
  const sources = new Map<string, Located<EventSource>>();
  for (const es of m.eventSources) sources.set(`${namespaceOf(es.resource)}/${es.resource.metadata.name}`, es);

  // Triggers: their inputs must name a source and event that exist on the same bus.
  for (const t of m.triggers) {
    const ns = namespaceOf(t.resource);
    const tBus = busKey(t.resource.spec.eventBus, ns);
    for (const [input, spec] of Object.entries(t.resource.spec.inputs)) {
      const path = `spec.inputs.${input}`;
      const srcNs = spec.namespace ?? ns;
      const es = sources.get(`${srcNs}/${spec.eventSource}`);
      if (es === undefined) {
        if (options.peersElsewhere === true) continue;
        const known = [...sources.keys()].join(", ") || "none";
        const message = `no EventSource ${srcNs}/${spec.eventSource} in the manifests (found: ${known})`;
        if (tBus.inProcess && options.mode === "run")
          issues.push(
            at(t, {
              code: "unknown_event_source",
              path: `${path}.eventSource`,
              message: `${message}: nothing can publish to this in-process bus, so the trigger would never fire`,
            }),
          );
        else
          warnings.push(
            at(t, {
              code: "unknown_event_source",
              path: `${path}.eventSource`,
              message: tBus.inProcess
                ? `${message}: on a cluster it may run elsewhere; ofevents run would refuse it (nothing can publish to its in-process bus)`
                : `${message}: the trigger waits for a source running elsewhere`,
            }),
          );
        continue;
      }
      const events = eventNames(es.resource);
      if (!events.includes(spec.event)) {
        issues.push(
          at(t, {
            code: "unknown_event",
            path: `${path}.event`,
            message: `EventSource ${srcNs}/${spec.eventSource} has no event "${spec.event}" (it has: ${events.join(", ") || "none"}): the trigger would never fire`,
          }),
        );
        continue;
      }
      const esBus = es.resource.spec.eventBus;
      if (esBus === undefined) {
        issues.push(
          at(t, {
            code: "source_without_bus",
            path: `${path}.eventSource`,
            message: `EventSource ${srcNs}/${spec.eventSource} has no eventBus (it only calls its sink): the trigger would never fire`,
          }),
        );
      } else if (busKey(esBus, srcNs).key !== tBus.key) {
        issues.push(
          at(t, {
            code: "bus_mismatch",
            path: "spec.eventBus",
            message: `the trigger is on bus "${t.resource.spec.eventBus}" but EventSource ${srcNs}/${spec.eventSource} publishes to "${esBus}": the trigger would never fire`,
          }),
        );
      }
    }
  }

  // Webhooks and generic events: one method and path per port.
  const routes = new Map<string, string>();
  for (const es of m.eventSources) {
    const claim = (kind: "webhook" | "generic", name: string, key: string): void => {
      const first = routes.get(key);
      if (first === undefined) {
        routes.set(key, `${namespaceOf(es.resource)}/${es.resource.metadata.name} event ${name}`);
        return;
      }
      issues.push(
        at(es, {
          code: "duplicate_route",
          path: `spec.${kind}.${name}`,
          message: `${key.replace(" :", " on port ")} is already served by ${first}`,
        }),
      );
    };
    for (const [name, w] of Object.entries(es.resource.spec.webhook ?? {}))
      claim("webhook", name, `${(w.method ?? "POST").toUpperCase()} :${Number(w.port)}${w.endpoint}`);
    for (const [name, g] of Object.entries(es.resource.spec.generic ?? {})) {
      const { port, path } = genericEndpoint(name, g);
      claim("generic", name, `POST :${port}${path}`);
    }
  }

  // Sinks: a Function reference must name a Function of the manifests.
  const functions = new Map(m.functions.map((f) => [`${namespaceOf(f.resource)}/${f.resource.metadata.name}`, f]));
  const checkSink = <T extends { kind: string; metadata: { name: string } }>(
    r: Located<T>,
    sink: Sink | undefined,
    path: string,
    ns: string,
  ): void => {
    if (sink?.ref === undefined || sink.uri !== undefined) return;
    const ref = sink.ref;
    const id = `${ref.namespace ?? ns}/${ref.name}`;
    if (ref.kind !== "Function") {
      warnings.push(
        at(r, {
          code: "cluster_only_sink",
          path: `${path}.ref`,
          message: `${ref.kind} ${id} is resolved on a cluster only: ofevents run cannot call it (deliveries to it fail there; give a sink.uri to run it locally)`,
        }),
      );
      return;
    }
    const fn = functions.get(id);
    if (fn === undefined) {
      const known = [...functions.keys()].join(", ") || "none";
      const message = `no Function ${id} in the manifests (found: ${known})`;
      if (options.mode === "run") issues.push(at(r, { code: "unknown_function", path: `${path}.ref`, message }));
      else
        warnings.push(
          at(r, {
            code: "unknown_function",
            path: `${path}.ref`,
            message: `${message}: on a cluster it may be deployed apart; ofevents run would refuse it`,
          }),
        );
    } else if (!isSyncFunction(fn.resource)) {
      issues.push(
        at(r, {
          code: "not_sync_function",
          path: `${path}.ref`,
          message: `Function ${id} is an async function: a sink needs a sync one (serving.runtime knative)`,
        }),
      );
    }
  };
  for (const es of m.eventSources) checkSink(es, es.resource.spec.sink, "spec.sink", namespaceOf(es.resource));
  for (const t of m.triggers) {
    t.resource.spec.subscribers.forEach((s, i) => {
      checkSink(t, s.sink, `spec.subscribers.${i}.sink`, namespaceOf(t.resource));
      checkSink(t, s.deadLetterSink, `spec.subscribers.${i}.deadLetterSink`, namespaceOf(t.resource));
    });
  }

  // Local Functions: their module must exist.
  await Promise.all(
    m.functions.map(async (f) => {
      const rel = f.resource.metadata.annotations?.[MODULE_ANNOTATION];
      if (rel === undefined) return;
      const path = resolve(dirname(f.file), rel);
      try {
        await access(path);
      } catch {
        issues.push(
          at(f, {
            code: "module_not_found",
            path: `metadata.annotations.${MODULE_ANNOTATION}`,
            message: `no module at ${path}`,
          }),
        );
      }
    }),
  );
  return { issues, warnings };
}

function eventNames(es: EventSource): string[] {
  return Object.values(SourceKind).flatMap((k) => Object.keys(es.spec[k] ?? {}));
}
