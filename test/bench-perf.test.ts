/**
 * The perf summary of `npm run bench -- --perf` (bench/lib/perf.ts): each sample is charged to the
 * nearest framework file on its stack, else to the leaf's module or kind of work. Fed with
 * `perf script -F ip,sym,dso` text in the shape perf prints it, so nothing here needs perf.
 */
import { describe, expect, it } from "vitest";
import { categorize, summarizeScript } from "../bench/lib/perf.js";

const sample = (...frames: Array<[string, string]>): string =>
  `\n${frames.map(([sym, dso], i) => `\t    ${(0x1000 + i).toString(16)} ${sym} (${dso})`).join("\n")}\n`;

const NODE = "/usr/bin/node";
const JIT = "/tmp/perf-4242.map";

describe("bench perf summary", () => {
  it("bench perf - charges a sample to the leafmost framework frame, with the runtime work it called", () => {
    const text = [
      // JSON.parse called by the consumer, itself called by the memory bus: the consumer owns it.
      sample(
        ["v8::internal::JsonParser<unsigned char>::ParseJsonValue<false>", NODE],
        ["Builtins_JsonParse", NODE],
        ["JS:*deliver file:///r/packages/eventbus/dist/consumer.js:40:18", JIT],
        ["JS:*pump file:///r/packages/eventbus/dist/drivers/memory.js:128:9", JIT],
      ),
      // A kernel write under undici under the sink client: the sink client owns it.
      sample(
        ["tcp_sendmsg_locked", "[kernel.kallsyms]"],
        ["node::StreamBase::Writev", NODE],
        ["JS:*writeH1 /r/node_modules/undici/lib/dispatcher/client-h1.js:1144:18", JIT],
        ["JS:*attempt file:///r/packages/delivery/dist/sink.js:95:21", JIT],
      ),
      sample(
        ["JS:*attempt file:///r/packages/delivery/dist/sink.js:95:21", JIT],
        ["JS:*deliver file:///r/packages/trigger/dist/runtime.js:417:18", JIT],
      ),
      // No framework frame: node's HTTP parser reading a request, and a bare GC sample.
      sample(["llhttp__internal_execute", NODE], ["JS:*execute node:_http_common:71:33", JIT]),
      sample(["v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>", NODE]),
    ].join("");
    const s = summarizeScript(text);
    expect(s.samples).toBe(5);
    const owner = Object.fromEntries(s.byOwner.map((l) => [l.name, l.share]));
    expect(owner).toEqual({
      "delivery/sink": 0.4,
      "eventbus/consumer": 0.2,
      "(no framework frame) node:_http_common": 0.2,
      "(no framework frame) GC": 0.2,
    });
    expect(s.byOwner[0]!.name).toBe("delivery/sink");
    const kind = Object.fromEntries(s.byCategory.map((l) => [l.name, l.share]));
    expect(kind).toEqual({ JSON: 0.2, kernel: 0.2, "JS: framework": 0.2, "HTTP parsers": 0.2, GC: 0.2 });
    expect(s.cpuMs).toBe(5);
  });

  it("bench perf - counts the expression engine inclusively: any of its frames on the stack", () => {
    const text = [
      // jsonata's evaluation under the engine under the trigger: the engine's file owns it.
      sample(
        ["Builtins_LoadIC_Megamorphic", NODE],
        ["JS:*evaluate /r/node_modules/jsonata/jsonata.js:400:25", JIT],
        ["JS:*evaluateBoolean file:///r/packages/core/dist/expr/jsonata.js:88:30", JIT],
        ["JS:*deliver file:///r/packages/trigger/dist/runtime.js:417:18", JIT],
      ),
      // A microtask resuming jsonata's async evaluation: no framework frame, still the engine's.
      sample(["JS:*evaluateBinary /r/node_modules/jsonata/jsonata.js:520:31", JIT], ["Builtins_RunMicrotasks", NODE]),
      sample(["JS:*deliver file:///r/packages/trigger/dist/runtime.js:417:18", JIT]),
      sample(["JS:*attempt file:///r/packages/delivery/dist/sink.js:95:21", JIT]),
    ].join("");
    const s = summarizeScript(text);
    expect(s.inclusive).toEqual([{ name: "expression engine (core/expr, jsonata)", cpuMs: 2, share: 0.5 }]);
    expect(Object.fromEntries(s.byOwner.map((l) => [l.name, l.share]))).toEqual({
      "core/expr/jsonata": 0.25,
      "(no framework frame) jsonata": 0.25,
      "trigger/runtime": 0.25,
      "delivery/sink": 0.25,
    });
  });

  it("bench perf - sorts leaf frames into kinds of work", () => {
    expect(categorize("Builtins_LoadIC_Megamorphic", NODE)).toBe("property access");
    expect(categorize("Builtins_FulfillPromise", NODE)).toBe("promises, async");
    expect(categorize("v8::internal::StringTable::LookupKey<x>", NODE)).toBe("string interning");
    expect(categorize("JS:*request /r/node_modules/undici/lib/api/api-request.js:191:18", JIT)).toBe("JS: libraries");
    expect(categorize("JS:*end node:_http_outgoing:1034:45", JIT)).toBe("JS: node");
    expect(categorize("_int_malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6")).toBe("malloc, memcpy");
    expect(categorize("do_syscall_64", "[kernel.kallsyms]")).toBe("kernel");
    expect(categorize("uv_run", NODE)).toBe("other native");
  });
});
