// The KEDA operator against a ControlPlane (test/helpers/kube.ts): it reconciles ScaledObjects into
// HPAs (`keda-hpa-<name>`), polls their triggers and scales the target to and from zero itself. No
// metrics API server (the HPAs it creates are never evaluated here: kube-controller-manager runs
// without its HPA controller). scripts/test-setup.sh builds the operator with a pruned scaler set
// (cpu, memory, kafka, nats-jetstream, redis-streams) and copies its CRDs beside it.
import { readdirSync, realpathSync } from "node:fs";
import { readFile, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { ControlPlane } from "./kube.js";
import { MissingBinaryError, requireExecutable, ServerProcess, type ServerProcessOptions } from "./server.js";
import { waitFor } from "./wait.js";

export interface KedaOperatorOptions {
  /**
   * The namespace KEDA reads cluster-wide objects' secrets from (`KEDA_CLUSTER_OBJECT_NAMESPACE`,
   * also `POD_NAMESPACE`); created when missing. Default "keda".
   */
  namespace?: string;
  /** `WATCH_NAMESPACE`: comma-separated namespaces, or "" (the default) for all of them. */
  watchNamespace?: string;
  /** Extra flags, appended last. */
  args?: readonly string[];
  /** Extra environment variables (e.g. `KEDA_HTTP_DEFAULT_TIMEOUT`). */
  env?: Readonly<Record<string, string>>;
  /** Spawn to `/readyz` (default 60 s). */
  startTimeoutMs?: number;
}

interface Located {
  path: string;
  crdsDir: string;
  crdFiles: readonly string[];
}

/** `keda-operator` from `<cacheDir>/bin` or PATH, and the `crds/` dir beside the file it links to. */
function locateKeda(): Located {
  const path = requireExecutable("keda-operator");
  const crdsDir = join(dirname(realpathSync(path)), "crds");
  let crdFiles: string[];
  try {
    crdFiles = readdirSync(crdsDir).filter((f) => f.endsWith(".yaml"));
  } catch (err) {
    throw new MissingBinaryError("KEDA CRDs", `no ${crdsDir} beside ${path}`, { cause: err });
  }
  if (!crdFiles.some((f) => f.includes("scaledobjects"))) {
    throw new MissingBinaryError("KEDA CRDs", `no ScaledObject CRD in ${crdsDir}`);
  }
  return { path, crdsDir, crdFiles: crdFiles.sort() };
}

/** Ports of the operator process, in the order picked. */
const PORT = { health: 0, metricsService: 1 } as const;

/**
 * The KEDA operator as a process on 127.0.0.1: health probes on one port, its gRPC metrics service
 * (for a metrics adapter; unused here, but the operator will not run without it) on another with
 * a cert from the control plane's CA, Prometheus metrics off, no leader election, all namespaces
 * watched. {@link start} installs KEDA's CRDs first. `stop()` kills its pid and removes its temp
 * dir; stop it before the control plane.
 */
export class KedaOperator extends ServerProcess {
  /** The version the binary logged at start ("KEDA Version: 2.21.0"). */
  version = "";
  /** The CRD names it installed, e.g. "scaledobjects.keda.sh". */
  readonly crds: readonly string[];

  private constructor(crds: readonly string[], options: ServerProcessOptions) {
    super(options);
    this.crds = crds;
  }

  /**
   * Installs KEDA's CRDs (existing ones are left as they are) and waits until they are
   * Established, then starts the operator. Resolves once `/readyz` answers 200 and the operator
   * logged its version; rejects with the log tail if it exits first or is not ready in time, and
   * with MissingBinaryError (naming `npm run test:setup`) when the binary or its CRDs are missing.
   */
  static async start(cp: ControlPlane, options: KedaOperatorOptions = {}): Promise<KedaOperator> {
    const located = locateKeda();
    const crds = await installCrds(cp, located);
    const namespace = options.namespace ?? "keda";
    const created = await cp.request("POST", "/api/v1/namespaces", {
      body: { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } },
    });
    if (created.status !== 201 && created.status !== 409) {
      throw new Error(`creating namespace ${namespace}: HTTP ${created.status}: ${created.text}`);
    }
    const caPem = cp.caPem;
    const operator = new KedaOperator(crds, {
      name: "keda-operator",
      portCount: 2,
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      stopGraceMs: 10_000,
      tailLines: 300,
      configure: async ({ ports, dir }) => {
        const kubeconfig = join(dir, "kubeconfig");
        const certDir = join(dir, "certs");
        const caDir = join(dir, "ca");
        await Promise.all([mkdir(certDir, { recursive: true }), mkdir(caDir, { recursive: true })]);
        const serving = await cp.serverCertificate("keda-operator");
        await Promise.all([
          cp.writeKubeconfig(kubeconfig),
          writeFile(join(certDir, "ca.crt"), caPem),
          writeFile(join(certDir, "tls.crt"), serving.certPem),
          writeFile(join(certDir, "tls.key"), serving.keyPem, { mode: 0o600 }),
        ]);
        const health = `127.0.0.1:${ports[PORT.health]}`;
        return {
          command: located.path,
          args: [
            `--health-probe-bind-address=${health}`,
            `--metrics-service-bind-address=127.0.0.1:${ports[PORT.metricsService]}`,
            "--enable-prometheus-metrics=false",
            `--cert-dir=${certDir}`,
            // Extra CAs for scalers' TLS connections (default /custom/ca): an empty dir of its own.
            `--ca-dir=${caDir}`,
            "--leader-elect=false",
            "--zap-encoder=console",
            ...(options.args ?? []),
          ],
          env: {
            ...process.env,
            // controller-runtime's config loader: the --kubeconfig flag, else $KUBECONFIG.
            KUBECONFIG: kubeconfig,
            WATCH_NAMESPACE: options.watchNamespace ?? "",
            KEDA_CLUSTER_OBJECT_NAMESPACE: namespace,
            POD_NAMESPACE: namespace,
            ...options.env,
          },
          readyLine: /KEDA Version: /,
          probe: async (signal) => {
            const res = await fetch(`http://${health}/readyz`, {
              signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]),
            });
            return res.status === 200;
          },
        };
      },
    });
    await operator.boot();
    const line = operator.log.lines().find((l) => l.includes("KEDA Version: ")) ?? "";
    operator.version = /KEDA Version: (\S+)/.exec(line)?.[1] ?? "";
    return operator;
  }

  /** `http://127.0.0.1:<port>`: /healthz and /readyz. */
  get healthUrl(): string {
    return `http://127.0.0.1:${this.ports[PORT.health]}`;
  }
}

interface CrdManifest {
  kind?: unknown;
  metadata?: { name?: unknown };
}

/** POSTs each CRD file (409 Conflict: already there) and waits until all are Established. */
async function installCrds(cp: ControlPlane, located: Located): Promise<string[]> {
  const names: string[] = [];
  for (const file of located.crdFiles) {
    const text = await readFile(join(located.crdsDir, file), "utf8");
    for (const doc of parseAllDocuments(text)) {
      const crd = doc.toJSON() as CrdManifest | null;
      if (crd?.kind !== "CustomResourceDefinition" || typeof crd.metadata?.name !== "string") continue;
      const res = await cp.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", { body: crd });
      if (res.status !== 201 && res.status !== 409) {
        throw new Error(`installing KEDA CRD ${crd.metadata.name} from ${file}: HTTP ${res.status}: ${res.text}`);
      }
      names.push(crd.metadata.name);
    }
  }
  for (const name of names) {
    await waitFor(
      async () => {
        const res = await cp.request("GET", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
        const conditions = (res.json as { status?: { conditions?: { type: string; status: string }[] } }).status
          ?.conditions;
        return conditions?.some((c) => c.type === "Established" && c.status === "True");
      },
      { timeoutMs: 30_000, intervalMs: 100, message: `CRD ${name} Established` },
    );
  }
  return names;
}
