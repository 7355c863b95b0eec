/**
 * Reads a V8 CPU profile (`node --cpu-prof`) and sums self time by function and by module, so a
 * run with `--profile` says where the CPU of a framework process goes. Shares are of the busy
 * time (samples outside "(idle)").
 */
import { readFile } from "node:fs/promises";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  name: string;
  selfMs: number;
  /** Of the busy time, 0..1. */
  share: number;
}

export interface ProfileSummary {
  busyMs: number;
  idleMs: number;
  byFunction: ProfileLine[];
  byModule: ProfileLine[];
  /**
   * Busy time attributed to the nearest framework function on the stack (packages/<pkg>/dist):
   * "who in our code caused this CPU", including the library and runtime code it called.
   * Samples with no framework frame (HTTP parsing, GC, timers) are grouped by their leaf module.
   */
  byOwner: ProfileLine[];
}

/** "core/expr/jsonata.js", "jsonata", "node:internal/http", "(garbage collector)"... */
export function moduleOf(url: string, functionName: string): string {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  const pkg = /\/packages\/([^/]+)\/dist\/(.+)$/.exec(url);
  if (pkg !== null) return `${pkg[1]}/${pkg[2]}`;
  const nm = url.lastIndexOf("/node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "/node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith("node:")) return url.split("/").slice(0, 3).join("/");
  const bench = /\/bench\/(.+)$/.exec(url);
  if (bench !== null) return `bench/${bench[1]}`;
  return url;
}

export async function summarizeProfile(path: string, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(path, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>(p.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const ownerCache = new Map<number, string>();
  const ownerOf = (id: number): string => {
    const cached = ownerCache.get(id);
    if (cached !== undefined) return cached;
    let owner: string | undefined;
    for (let cur: number | undefined = id; cur !== undefined; cur = parentOf.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      const m = /\/packages\/([^/]+)\/dist\/(.+)$/.exec(f.url);
      if (m !== null) {
        owner = `${m[1]}/${m[2]}:${f.functionName === "" ? "(anonymous)" : f.functionName}`;
        break;
      }
    }
    if (owner === undefined) {
      const f = byId.get(id)!.callFrame;
      owner = `(no framework frame) ${moduleOf(f.url, f.functionName)}`;
    }
    ownerCache.set(id, owner);
    return owner;
  };
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  let idleUs = 0;
  let busyUs = 0;
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  const own = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === "(idle)") {
      idleUs += us;
      continue;
    }
    busyUs += us;
    const m = moduleOf(url, functionName);
    const name =
      url === "" ? functionName : `${m}:${functionName === "" ? "(anonymous)" : functionName}:${lineNumber + 1}`;
    fn.set(name, (fn.get(name) ?? 0) + us);
    mod.set(m, (mod.get(m) ?? 0) + us);
    const o = ownerOf(id);
    own.set(o, (own.get(o) ?? 0) + us);
  }
  const lines = (m: Map<string, number>): ProfileLine[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: us / 1000, share: busyUs === 0 ? 0 : us / busyUs }));
  return {
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    byFunction: lines(fn),
    byModule: lines(mod),
    byOwner: lines(own),
  };
}

export function formatProfile(title: string, s: ProfileSummary): string[] {
  const pct = (x: number): string => `${(x * 100).toFixed(1).padStart(5)}%`;
  return [
    `${title}: busy ${(s.busyMs / 1000).toFixed(2)} s, idle ${(s.idleMs / 1000).toFixed(2)} s`,
    "  self time by module:",
    ...s.byModule.map((l) => `    ${pct(l.share)}  ${l.name}`),
    "  self time by function:",
    ...s.byFunction.map((l) => `    ${pct(l.share)}  ${l.name}`),
    "  time by nearest framework function on the stack:",
    ...s.byOwner.map((l) => `    ${pct(l.share)}  ${l.name}`),
  ];
}
