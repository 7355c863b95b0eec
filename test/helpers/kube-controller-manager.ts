// kube-controller-manager against a ControlPlane (test/helpers/kube.ts): the controllers that turn
// Deployments into ReplicaSets and Pods, collect garbage by ownerReferences, finish namespace
// deletion and give each namespace its `default` ServiceAccount. No scheduler or kubelet: Pods stay
// Pending. scripts/test-setup.sh builds the binary from the same Kubernetes version as
// kube-apiserver (or links one it finds).
import { writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { type Binary, type ControlPlane, locateKubeBinary } from "./kube.js";
import { ServerProcess, type ServerProcessOptions } from "./server.js";

/** The controllers started by default (the names of `--controllers`). */
export const DEFAULT_CONTROLLERS = [
  "deployment-controller",
  "replicaset-controller",
  "garbage-collector-controller",
  "namespace-controller",
  "serviceaccount-controller",
  "serviceaccount-token-controller",
] as const;

export interface KubeControllerManagerOptions {
  /** `--controllers` (default {@link DEFAULT_CONTROLLERS}). */
  controllers?: readonly string[];
  /** Extra flags, appended last. */
  args?: readonly string[];
  /** Spawn to `/healthz` (default 60 s). */
  startTimeoutMs?: number;
}

/**
 * kube-controller-manager on a free 127.0.0.1 port (HTTPS with a cert from the control plane's
 * CA, serving `/healthz`), talking to the control plane as its admin, without leader election.
 * `stop()` kills its pid and removes its temp dir; stop it before the control plane.
 */
export class KubeControllerManager extends ServerProcess {
  /** e.g. "1.36.4" */
  readonly version: string;
  readonly controllers: readonly string[];

  private constructor(binary: Binary, controllers: readonly string[], options: ServerProcessOptions) {
    super(options);
    this.version = binary.version;
    this.controllers = controllers;
  }

  /**
   * Resolves once `/healthz` answers `ok`; rejects with the log tail if the process exits first or
   * is not healthy in time, and with MissingBinaryError (naming `npm run test:setup`) when the
   * binary is not installed.
   */
  static async start(cp: ControlPlane, options: KubeControllerManagerOptions = {}): Promise<KubeControllerManager> {
    const binary = locateKubeBinary("kube-controller-manager", /Kubernetes v(\S+)/);
    const controllers = options.controllers ?? DEFAULT_CONTROLLERS;
    const caPem = cp.caPem;
    const kcm = new KubeControllerManager(binary, controllers, {
      name: "kube-controller-manager",
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      stopGraceMs: 10_000,
      tailLines: 300,
      configure: async ({ ports, dir }) => {
        const port = ports[0]!;
        const kubeconfig = join(dir, "kubeconfig");
        const serving = await cp.serverCertificate("kube-controller-manager");
        await Promise.all([
          cp.writeKubeconfig(kubeconfig),
          writeFile(join(dir, "ca.crt"), caPem),
          writeFile(join(dir, "tls.crt"), serving.certPem),
          writeFile(join(dir, "tls.key"), serving.keyPem, { mode: 0o600 }),
        ]);
        return {
          command: binary.path,
          args: [
            `--kubeconfig=${kubeconfig}`,
            // Authn/authz of its own HTTPS port: client certs from the control plane's CA, tokens
            // and permissions checked with the API server; /healthz stays open to anonymous
            // callers. The client CA is given, not looked up: kube-apiserver runs without a
            // requestheader CA, and the lookup would log an error for it every few seconds.
            `--authentication-kubeconfig=${kubeconfig}`,
            `--authorization-kubeconfig=${kubeconfig}`,
            "--authentication-skip-lookup",
            `--client-ca-file=${join(dir, "ca.crt")}`,
            "--bind-address=127.0.0.1",
            `--secure-port=${port}`,
            `--cert-dir=${dir}`,
            `--tls-cert-file=${join(dir, "tls.crt")}`,
            `--tls-private-key-file=${join(dir, "tls.key")}`,
            "--leader-elect=false",
            `--controllers=${controllers.join(",")}`,
            // Every controller uses the admin kubeconfig (not one ServiceAccount each).
            "--use-service-account-credentials=false",
            `--service-account-private-key-file=${cp.serviceAccountSigningKeyFile}`,
            `--root-ca-file=${join(dir, "ca.crt")}`,
            ...(options.args ?? []),
          ],
          probe: async (signal) => {
            const res = await httpsGet(port, caPem, "/healthz", signal);
            return res.status === 200 && res.text === "ok";
          },
        };
      },
    });
    await kcm.boot();
    return kcm;
  }

  /** `https://127.0.0.1:<port>` (its /healthz answers anonymous callers). */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }
}

function httpsGet(
  port: number,
  caPem: string,
  path: string,
  signal: AbortSignal,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: "127.0.0.1", port, path, method: "GET", ca: caPem, timeout: 2_000, signal, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer within 2000 ms`)));
    req.on("error", reject);
    req.end();
  });
}
