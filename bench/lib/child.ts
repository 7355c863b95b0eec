/**
 * Entry point of a child process: `node child.js <scenario.js> <role> <args-json>`. Runs
 * `children[role]` of the scenario, tells the parent it is ready (IPC), serves its calls, and
 * stops gracefully when asked or when the parent goes away.
 */
import { pathToFileURL } from "node:url";
import type { ChildHandle, Scenario } from "./types.js";

type FromParent = { type: "call"; id: number; cmd: string; payload: unknown } | { type: "stop" };

async function main(): Promise<void> {
  const [file, role, argsJson] = process.argv.slice(2);
  if (file === undefined || role === undefined || process.send === undefined) {
    throw new Error("usage: child.js <scenario.js> <role> <args-json> (with an IPC channel)");
  }
  const mod = (await import(pathToFileURL(file).href)) as { default: Scenario };
  const run = mod.default.children?.[role];
  if (run === undefined) throw new Error(`scenario ${mod.default.id} has no child role "${role}"`);
  const handle: ChildHandle = await run(JSON.parse(argsJson ?? "null") as unknown);

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(2), 8_000).unref();
    handle.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("message", (m: FromParent) => {
    if (m.type === "stop") return stop();
    const h = handle.handlers?.[m.cmd];
    if (h === undefined) {
      process.send!({ type: "reply", id: m.id, ok: false, error: `no handler "${m.cmd}"` });
      return;
    }
    h(m.payload).then(
      (value) => process.send!({ type: "reply", id: m.id, ok: true, value: value ?? null }),
      (err: unknown) =>
        process.send!({
          type: "reply",
          id: m.id,
          ok: false,
          error: err instanceof Error ? (err.stack ?? err.message) : String(err),
        }),
    );
  });
  process.on("disconnect", stop);
  process.send({ type: "ready", info: { pid: process.pid, ...handle.info } });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
