/**
 * `ofevents run --watch`: the dev loop. Watches the manifest files and folders and the modules of
 * the local Functions; on a change (debounced) it validates the manifests again and, when they
 * are valid, stops the running set gracefully and starts the new one on the same ports:
 *
 * - events in flight finish first: the stop is the same as on Ctrl-C (webhooks answer 503, the
 *   sources finish what they took, the in-memory bus gets its bounded time to deliver what it
 *   took, HTTP attempts in flight complete);
 * - join state: events waiting in a correlation window go back to their bus. On a durable bus
 *   (jetstream, kafka) they were never acknowledged, so the new trigger gets them again and the
 *   joins form as before; on the in-memory bus nothing outlives the stop, so they are released
 *   unjoined (counted and logged as the stop's warning says);
 * - a webhook request that arrives in the gap between the stop and the start is refused (503 or
 *   connection refused): senders retry as for any restart.
 *
 * Invalid manifests are reported and the running set is kept; a change that leaves every manifest
 * and module as it was (a file that is not a manifest, such as a test cases file) reloads nothing.
 * A Function's module file is imported anew when it changed (modules it imports are not).
 */
import { watch, type FSWatcher } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { MODULE_ANNOTATION, formatIssue, type Logger, type Manifests } from "@ofevents/core";
import { validateAll } from "./check.js";
import { startEmbedded, type Embedded, type EmbeddedOptions } from "./embedded.js";

/** Changes closer together than this are one reload. */
export const WATCH_DEBOUNCE_MS = 300;

export interface Watching {
  /** The running set (replaced on each reload; undefined after a failed start, until the next change). */
  current(): Embedded | undefined;
  /** Reloads attempted so far (valid or not). */
  readonly reloads: number;
  stop(): Promise<void>;
}

/** What a reload would change: every resource loaded, and each local Function module's time. */
async function fingerprint(m: Manifests): Promise<string> {
  const modules = await Promise.all(
    m.functions.map(async (f) => {
      const rel = f.resource.metadata.annotations?.[MODULE_ANNOTATION];
      if (rel === undefined) return "";
      const path = resolve(dirname(f.file), rel);
      return `${path}@${(await stat(path).catch(() => undefined))?.mtimeMs ?? "missing"}`;
    }),
  );
  const kinds = [m.eventSources, m.triggers, m.eventBuses, m.clusterEventBuses, m.functions, m.secrets];
  return JSON.stringify([kinds.map((list) => list.map((x) => x.resource)), modules]);
}

export async function runWatching(o: EmbeddedOptions, logger: Logger): Promise<Watching> {
  const log = logger.child({ component: "watch" });
  let current: Embedded | undefined = await startEmbedded(o);
  let reloads = 0;
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> = Promise.resolve();
  let watchers: FSWatcher[] = [];
  let stopped = false;
  const changed = new Set<string>();

  /** What to watch: the paths, each file's folder, and every local Function's module. */
  const arm = async (e: Embedded | undefined): Promise<void> => {
    for (const w of watchers) w.close();
    watchers = [];
    const targets: Array<{ dir: string; recursive: boolean; only?: string }> = [];
    for (const p of o.paths) {
      const s = await stat(p).catch(() => undefined);
      if (s?.isDirectory()) targets.push({ dir: resolve(p), recursive: true });
      else targets.push({ dir: dirname(resolve(p)), recursive: false, only: basename(p) });
    }
    for (const f of e?.manifests.functions ?? []) {
      const rel = f.resource.metadata.annotations?.[MODULE_ANNOTATION];
      if (rel === undefined) continue;
      const path = resolve(dirname(f.file), rel);
      targets.push({ dir: dirname(path), recursive: false, only: basename(path) });
    }
    for (const t of targets) {
      try {
        const w = watch(t.dir, { recursive: t.recursive }, (_event, name) => {
          if (name === null) return;
          const file = String(name);
          if (file.split(/[\\/]/).some((p) => p.startsWith(".") || p === "node_modules")) return;
          if (t.only !== undefined && basename(file) !== t.only) return;
          onChange(resolve(t.dir, file));
        });
        w.on("error", () => undefined);
        watchers.push(w);
      } catch (err) {
        log.warn({ path: t.dir, err: (err as Error).message }, "cannot watch this path");
      }
    }
  };

  let running = current === undefined ? undefined : await fingerprint(current.manifests);
  const reload = async (): Promise<void> => {
    const files = [...changed];
    changed.clear();
    const { manifests, issues } = await validateAll(o.paths, { mode: "run" });
    if (issues.length > 0) {
      log.info({ changed: files }, "files changed");
      for (const i of issues) log.error(formatIssue(i));
      log.error("not reloaded: the manifests have problems (the running set goes on); fix them and save again");
      reloads++;
      return;
    }
    // A file that is not a manifest (a test cases file, an editor's backup) changes nothing.
    const next = await fingerprint(manifests);
    if (current !== undefined && next === running) {
      log.info({ changed: files }, "files changed, the manifests and modules did not: not reloaded");
      return;
    }
    log.info({ changed: files }, "files changed: reloading");
    // The same ports as the running set (a port picked at start stays the run's port).
    const same: EmbeddedOptions = {
      ...o,
      functionsPort: current?.functions.port ?? o.functionsPort,
      metricsPort: current?.metricsPort ?? o.metricsPort,
      uiPort: current?.ui?.port ?? o.uiPort,
      uiFallback: current?.ui === undefined ? o.uiFallback : false,
      moduleVersion: Date.now(),
    };
    await current?.stop();
    current = undefined;
    try {
      current = await startEmbedded(same);
      running = next;
      log.info("reloaded");
    } catch (err) {
      log.error({ err: (err as Error).message }, "reload failed: nothing runs until the next change");
    }
    reloads++;
    await arm(current);
  };

  function onChange(file: string): void {
    if (stopped) return;
    changed.add(file);
    clearTimeout(timer);
    timer = setTimeout(() => {
      busy = busy.then(reload).catch((err: unknown) => log.error({ err }, "reload failed"));
    }, WATCH_DEBOUNCE_MS);
  }

  await arm(current);
  log.info({ paths: o.paths }, "watching the manifests and function modules for changes");
  return {
    current: () => current,
    get reloads() {
      return reloads;
    },
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      for (const w of watchers) w.close();
      await busy;
      await current?.stop();
    },
  };
}
