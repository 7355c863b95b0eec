/** Leader election on a coordination.k8s.io Lease, as client-go's: one replica reconciles. */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Logger } from "@ofevents/core";
import { isStatus, type KubeApi } from "./api.js";

export const LEASE_NAME = "ofevents-controller";

export interface LeaderElectionOptions {
  /** Lease name (default `ofevents-controller`). */
  leaseName?: string | undefined;
  /** This replica's identity (default hostname + random suffix). */
  identity?: string | undefined;
  /** Seconds a lease stays valid without renewal (default 15). */
  leaseDurationSeconds?: number | undefined;
  /** How often to renew or try to acquire (default 2000 ms). */
  retryPeriodMs?: number | undefined;
}

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Defaults of {@link LeaderElectionOptions}. */
export function retryPeriodMs(o: LeaderElectionOptions): number {
  return o.retryPeriodMs ?? 2_000;
}

/**
 * Creates the Lease or takes over an expired one, and renews it while held, every retry period.
 * `onAcquired` runs when this replica becomes the leader.
 */
export class LeaderElector {
  readonly identity: string;
  readonly #api: KubeApi;
  readonly #logger: Logger;
  readonly #namespace: string;
  readonly #leaseName: string;
  readonly #leaseSeconds: number;
  readonly #retryMs: number;
  readonly #onAcquired: () => void;
  readonly #path: string;
  #leader = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #electing: Promise<void> = Promise.resolve();

  constructor(api: KubeApi, logger: Logger, namespace: string, o: LeaderElectionOptions, onAcquired: () => void) {
    this.#api = api;
    this.#logger = logger;
    this.#namespace = namespace;
    this.#leaseName = o.leaseName ?? LEASE_NAME;
    this.identity = o.identity ?? `${hostname()}-${randomBytes(4).toString("hex")}`;
    this.#leaseSeconds = o.leaseDurationSeconds ?? 15;
    this.#retryMs = retryPeriodMs(o);
    this.#onAcquired = onAcquired;
    this.#path = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${this.#leaseName}`;
  }

  /** Whether this replica holds the Lease. */
  get leader(): boolean {
    return this.#leader;
  }

  /** The first attempt now, then one per retry period until {@link stop}. */
  start(): void {
    this.#electing = this.#elect();
  }

  /** No more attempts; the Lease stays held until {@link resign}. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#electing;
    clearTimeout(this.#timer);
  }

  /** Gives the Lease up, when held, so that a standby takes over without waiting for it to expire. */
  async resign(): Promise<void> {
    if (!this.#leader) return;
    this.#leader = false;
    try {
      const lease = (await this.#api.request("GET", this.#path)) as Lease;
      if (lease.spec.holderIdentity !== this.identity) return;
      await this.#api.request("PUT", this.#path, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: lease.metadata,
        spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
      });
    } catch (err) {
      this.#logger.warn({ err }, "releasing the lease failed");
    }
  }

  async #elect(): Promise<void> {
    let held: boolean;
    try {
      held = await this.#tryAcquireOrRenew();
    } catch (err) {
      // A conflict means another replica wrote first; any failure counts as not holding it.
      if (!isStatus(err, 409)) this.#logger.warn({ err }, "lease update failed");
      held = false;
    }
    if (this.#stopped) return;
    if (held && !this.#leader) {
      this.#leader = true;
      this.#logger.info(
        { identity: this.identity, lease: `${this.#namespace}/${this.#leaseName}` },
        "acquired the lease: reconciling",
      );
      this.#onAcquired();
    } else if (!held && this.#leader) {
      this.#leader = false;
      this.#logger.warn({ identity: this.identity }, "lost the lease: passive");
    }
    this.#timer = setTimeout(() => {
      this.#electing = this.#elect();
    }, this.#retryMs);
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = (await this.#api.request("GET", this.#path)) as Lease;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const spec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.#leaseSeconds,
      renewTime: microTime(now),
    };
    if (lease === undefined) {
      await this.#api.request("POST", `/apis/coordination.k8s.io/v1/namespaces/${this.#namespace}/leases`, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.#leaseName, namespace: this.#namespace },
        spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return true;
    }
    const holder = lease.spec.holderIdentity ?? "";
    const renewed = Date.parse(lease.spec.renewTime ?? lease.spec.acquireTime ?? "") || 0;
    const expired = renewed + (lease.spec.leaseDurationSeconds ?? this.#leaseSeconds) * 1000 < now.getTime();
    if (holder !== this.identity && holder !== "" && !expired) return false;
    const takeover = holder !== this.identity;
    await this.#api.request("PUT", this.#path, {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: lease.metadata,
      spec: {
        ...lease.spec,
        ...spec,
        ...(takeover ? { acquireTime: microTime(now), leaseTransitions: (lease.spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    });
    return true;
  }
}
