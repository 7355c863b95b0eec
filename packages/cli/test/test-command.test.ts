import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { main } from "../src/index.js";
import { runTests, type CaseReport } from "../src/test-command.js";

const dirs: string[] = [];

afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A folder with one Trigger manifest (`spec` under its name), and a cases file beside it. */
async function setup(spec: string, cases: string): Promise<{ manifests: string; cases: string }> {
  const dir = await mkdtemp(join(tmpdir(), "ofevents-test-command-"));
  dirs.push(dir);
  await writeFile(
    join(dir, "trigger.yaml"),
    `apiVersion: events.openfunction.io/v1alpha1
kind: Trigger
metadata: { name: shop }
spec:
  eventBus: default
${spec.replace(/^/gm, "  ")}
`,
  );
  await writeFile(join(dir, "cases.yaml"), cases);
  return { manifests: join(dir, "trigger.yaml"), cases: join(dir, "cases.yaml") };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

async function ofeventsTest(spec: string, cases: string): Promise<{ code: number; out: string; err: string }> {
  const f = await setup(spec, cases);
  return cli(["test", "-f", f.manifests, f.cases]);
}

/** Runs the cases and returns each case's report. */
async function reports(spec: string, cases: string): Promise<CaseReport[]> {
  const f = await setup(spec, cases);
  const r = await runTests({ manifests: [f.manifests], casesFiles: [f.cases] });
  return r.files[0]!.cases;
}

const JOIN = `inputs:
  order: { eventSource: shop, event: order }
  payment: { eventSource: shop, event: payment }
subscribers:
  - condition: order && payment
    topic: paid
    correlation: { window: 10s }
    transform: '{ "order": $inputs.order.data.n, "paid": $inputs.payment.data.amount }'
`;

describe("test command - cases file problems", () => {
  it("test command - names the file, line, case and field of each problem, exit 2", async () => {
    const r = await ofeventsTest(
      JOIN,
      `cases:
  - name: typo
    events:
      - input: ordr
      - input: order
        at: 5s
      - input: payment
        at: 2s
    expect:
      - subscriber: 3
        deliveries: none
`,
    );
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    const lines = r.err.trim().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(
        /cases\.yaml:4 case "typo": events\[0\]\.input: no input "ordr" in trigger default\/shop \(inputs: order, payment\)$/,
      ),
      expect.stringMatching(
        /cases\.yaml:8 case "typo": events\[2\]\.at: 2000 ms is before the previous event \(5000 ms\)/,
      ),
      expect.stringMatching(
        /cases\.yaml:10 case "typo": expect\[0\]\.subscriber: trigger default\/shop has 1 subscriber \(0\.\.0\)$/,
      ),
    ]);
  });

  it.each([
    {
      name: "an unknown field",
      cases: `cases:\n  - name: c\n    events: []\n    expect:\n      - subscriber: 0\n        delivries: none\n`,
      expected: /cases\.yaml:6 case "c": expect\[0\]\.delivries: unknown field/,
    },
    {
      name: "a time that is not a duration",
      cases: `cases:\n  - name: c\n    events:\n      - { input: order, at: soon }\n    expect: [{ subscriber: 0, deliveries: none }]\n`,
      expected: /cases\.yaml:4 case "c": events\[0\]\.at: not a duration/,
    },
    {
      name: "a case without a name",
      cases: `cases:\n  - events: []\n    expect: [{ subscriber: 0, deliveries: none }]\n`,
      expected: /cases\.yaml:2 case "#1": name: required/,
    },
    {
      name: "an expectation that checks nothing",
      cases: `cases:\n  - name: c\n    events: []\n    expect: [{ subscriber: 0 }]\n`,
      expected: /case "c": expect\[0\]: say what to check: deliveries, deadLetters, or both/,
    },
    {
      name: "an answer for a sink the trigger does not have",
      cases: `cases:\n  - name: c\n    sinks: { nope: 503 }\n    events: []\n    expect: [{ subscriber: 0, deliveries: none }]\n`,
      expected: /case "c": sinks\.nope: no sink of trigger default\/shop is named "nope"/,
    },
    {
      name: "two cases of one name",
      cases: `cases:\n  - { name: c, events: [], expect: [{ subscriber: 0, deliveries: none }] }\n  - { name: c, events: [], expect: [{ subscriber: 0, deliveries: none }] }\n`,
      expected: /cases\.yaml:3 case "c": name: the name of case #1 too/,
    },
    {
      name: "YAML that does not parse",
      cases: `cases: [\n`,
      expected: /cases\.yaml:\d+: /,
    },
  ])("test command - rejects $name with exit 2", async ({ cases, expected }) => {
    const r = await ofeventsTest(
      JOIN.replace("topic: paid", "topic: paid\n    deadLetterSink: { uri: http://dl.example/ }"),
      cases,
    );
    expect(r.code).toBe(2);
    expect(r.err).toMatch(expected);
  });

  it("test command - a trigger the manifests do not have is named with those they do", async () => {
    const r = await ofeventsTest(
      JOIN,
      `trigger: other\ncases: [{ name: c, events: [], expect: [{ subscriber: 0, deliveries: none }] }]\n`,
    );
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/no Trigger named other in the manifests \(found: default\/shop\)/);
  });

  it("test command - usage errors exit 2", async () => {
    expect((await cli(["test", "x.yaml"])).code).toBe(2);
    const f = await setup(JOIN, "cases: []\n");
    const noCases = await cli(["test", "-f", f.manifests]);
    expect(noCases.code).toBe(2);
    expect(noCases.err).toMatch(/name at least one cases file/);
    const missing = await cli(["test", "-f", f.manifests, join(f.cases, "..", "nope.yaml")]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/nope\.yaml: no such file/);
    expect((await cli(["test", "-f", f.manifests, f.cases, "--bogus"])).code).toBe(2);
    const level = await cli(["test", "-f", f.manifests, f.cases, "--log-level", "loud"]);
    expect(level.code).toBe(2);
    expect(level.err).toMatch(/--log-level: unknown log level "loud"/);
  });
});

describe("test command - help", () => {
  it("test command - --help, -h and help test print its help with every option it takes", async () => {
    for (const args of [
      ["test", "--help"],
      ["test", "-h"],
      ["help", "test"],
      ["test", "-f", "x", "--help"],
    ]) {
      const r = await cli(args);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^Usage: ofevents test -f /);
    }
    const help = (await cli(["test", "--help"])).out;
    const src = await readFile(new URL("../src/test-command.ts", import.meta.url), "utf8");
    const body = src.slice(src.indexOf("export async function testCommand("));
    const options = body.slice(body.indexOf("options: {"), body.indexOf("\n  });"));
    const names = [...options.matchAll(/"?([a-z-]+)"?: \{ type:/g)].map((m) => m[1]!);
    expect(names).toEqual(["file", "case", "json", "log-level"]);
    for (const name of names) expect(help).toContain(`--${name}`);
    expect((await cli(["--help"])).out).toContain("ofevents test -f <file|folder>... <cases.yaml>...");
  });
});

describe("test command - output and exit codes", () => {
  const cases = (amount: number) => `cases:
  - name: joined
    events:
      - { input: order, data: { n: 1 } }
      - { input: payment, at: 1s, data: { amount: ${amount} } }
    expect:
      - subscriber: 0
        deliveries:
          - data: { order: 1, paid: 150 }
`;

  it("test command - exit 0 and one ok line per case when all pass", async () => {
    const r = await ofeventsTest(JOIN, cases(150));
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ok {3}joined \(virtual 1s\)\n/);
    expect(r.out).toMatch(/1 passed, 0 failed\n$/);
  });

  it("test command - exit 1 and a diff of expected and actual per subscriber when one fails", async () => {
    const r = await ofeventsTest(JOIN, cases(120));
    expect(r.code).toBe(1);
    expect(r.out).toContain("FAIL joined");
    expect(r.out).toContain("--- FAIL: joined");
    expect(r.out).toContain("  subscriber 0 (order && payment -> topic paid), deliveries:");
    expect(r.out).toContain("    ~ [0] data.paid: expected 150, got 120");
    expect(r.out).toMatch(
      /actual deliveries \(1\):\n {6}\[0\] \{"to":"topic","id":"payment-1",.*"ofjoined":"order-1","data":\{"order":1,"paid":120\}\}/,
    );
    expect(r.out).toMatch(/0 passed, 1 failed\n$/);
  });

  it("test command - missing and unexpected deliveries are listed by index", async () => {
    const r = await ofeventsTest(
      JOIN,
      `cases:
  - name: none expected
    events:
      - { input: order, data: { n: 1 } }
      - { input: payment, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: none }]
  - name: two expected
    events:
      - { input: order, data: { n: 1 } }
      - { input: payment, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: [{ id: payment-1 }, { id: payment-2 }] }]
`,
    );
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/\+ \[0\] unexpected \{"to":"topic","id":"payment-1"/);
    expect(r.out).toContain(`- [1] expected {"id":"payment-2"}, got nothing`);
  });

  it("test command - --json reports each case with its mismatches and what each subscriber got", async () => {
    const f = await setup(JOIN, cases(120));
    const r = await cli(["test", "-f", f.manifests, f.cases, "--json"]);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.out) as {
      ok: boolean;
      failed: number;
      files: Array<{ trigger: string; cases: Array<Record<string, unknown>> }>;
    };
    expect(json.ok).toBe(false);
    expect(json.failed).toBe(1);
    expect(json.files[0]!.trigger).toBe("default/shop");
    const c = json.files[0]!.cases[0]!;
    expect(c["mismatches"]).toEqual([
      {
        subscriber: 0,
        list: "deliveries",
        index: 0,
        kind: "differs",
        path: "data.paid",
        expected: 150,
        actual: 120,
      },
    ]);
    expect(c["endedAtMs"]).toBe(1000);
    expect((c["subscribers"] as Array<{ deliveries: unknown[] }>)[0]!.deliveries).toHaveLength(1);
  });

  it("test command - --case runs only the cases whose name contains the text", async () => {
    const f = await setup(
      JOIN,
      `${cases(150)}  - name: other\n    events: []\n    expect: [{ subscriber: 0, deliveries: [{}] }]\n`,
    );
    const r = await cli(["test", "-f", f.manifests, f.cases, "--case", "join"]);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain("other");
  });
});

describe("test command - the trigger's semantics", () => {
  it("test command - an input filter lets an event through or stops it", async () => {
    const [big, small] = await reports(
      `inputs:
  order: { eventSource: shop, event: order, filter: data.amount >= 100 }
subscribers:
  - { condition: order, sink: { uri: "http://billing.example/" } }
`,
      `cases:
  - name: big
    events: [{ input: order, data: { amount: 150 } }]
    expect: [{ subscriber: 0, deliveries: [{ id: order-1, data: { amount: 150 } }] }]
  - name: small
    events: [{ input: order, data: { amount: 50 } }]
    expect: [{ subscriber: 0, deliveries: [{ data: { amount: 50 } }] }]
`,
    );
    expect(big!.ok).toBe(true);
    expect(small!.ok).toBe(false);
    expect(small!.run!.subscribers[0]!.deliveries).toEqual([]);
    expect(small!.run!.inputFiltered).toEqual({ order: 1 });
  });

  it("test command - conditions and subscriber filters route per subscriber", async () => {
    const [c] = await reports(
      `inputs:
  order: { eventSource: shop, event: order }
  cancel: { eventSource: shop, event: cancel }
subscribers:
  - { condition: order || cancel, topic: audit }
  - { condition: cancel, topic: refunds }
  - { condition: order, topic: vip, filter: data.vip = true }
`,
      `cases:
  - name: routes
    events:
      - { input: order, data: { vip: true } }
      - { input: cancel }
      - { input: order, data: { vip: false } }
    expect:
      - subscriber: 0
        deliveries: [{ id: order-1 }, { id: cancel-1 }, { id: order-2 }]
      - subscriber: 1
        deliveries: [{ id: cancel-1, subject: cancel, type: io.openfunction.events.test }]
      - subscriber: 2
        deliveries: [{ id: order-1 }]
`,
    );
    expect(c!.mismatches).toEqual([]);
    expect(c!.ok).toBe(true);
  });

  it("test command - a join within its window fires on the virtual clock, one outside does not", async () => {
    const [inside, outside] = await reports(
      JOIN,
      `cases:
  - name: inside
    events:
      - { input: order, at: 0s, data: { n: 1 } }
      - { input: payment, at: 9s, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: [{ id: payment-1, ofjoined: order-1, data: { order: 1, paid: 5 } }] }]
  - name: outside
    events:
      - { input: order, at: 0s, data: { n: 1 } }
      - { input: payment, at: 12s, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: none }]
`,
    );
    expect(inside!.mismatches).toEqual([]);
    expect(outside!.mismatches).toEqual([]);
    // The order expired at 10s; the payment then waited its own 10s.
    expect(outside!.run!.subscribers[0]!.counts["expired"]).toBe(2);
    expect(outside!.endedAtMs).toBe(22_000);
  });

  it("test command - a window of an hour passes on the virtual clock, not the real one", async () => {
    const [c] = await reports(
      JOIN.replace("window: 10s", "window: 1h"),
      `cases:
  - name: an hour apart
    events:
      - { input: order, at: 0s, data: { n: 1 } }
      - { input: payment, at: 59m, data: { amount: 5 } }
      - { input: order, at: 2h, data: { n: 2 } }
    expect: [{ subscriber: 0, deliveries: [{ id: payment-1, ofjoined: order-1 }] }]
`,
    );
    expect(c!.mismatches).toEqual([]);
    // The second order waited out its hour: the run ended at 3h of virtual time (the test timeout is 30 s).
    expect(c!.endedAtMs).toBe(3 * 3_600_000);
    expect(c!.run!.subscribers[0]!.counts["expired"]).toBe(1);
    // The clock is the real one again.
    expect(Math.abs(Date.now() - performance.timeOrigin - performance.now())).toBeLessThan(1_000);
  });

  it("test command - a correlation.reset cron releases pending events, and its schedule does not keep the run going", async () => {
    const [reset, joined] = await reports(
      JOIN.replace("window: 10s", "window: 1h, reset: { cron: '* * * * *' }"),
      `cases:
  - name: reset
    events:
      - { input: order, at: 30s, data: { n: 1 } }
      - { input: payment, at: 61s, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: none }]
  - name: joined
    events:
      - { input: order, at: 30s, data: { n: 1 } }
      - { input: payment, at: 50s, data: { amount: 5 } }
    expect: [{ subscriber: 0, deliveries: [{ id: payment-1 }] }]
`,
    );
    expect(reset!.mismatches).toEqual([]);
    expect(reset!.run!.subscribers[0]!.counts["reset"]).toBe(2);
    // Ended at the reset of 2 min, not at the run's bound of hours.
    expect(reset!.endedAtMs).toBe(120_000);
    expect(reset!.settled).toBe(true);
    expect(joined!.mismatches).toEqual([]);
    expect(joined!.endedAtMs).toBe(50_000);
  });

  it("test command - a correlation key joins only events with the same key", async () => {
    const [c] = await reports(
      JOIN.replace("window: 10s", "window: 10s, key: data.orderId"),
      `cases:
  - name: keyed
    events:
      - { input: order, data: { orderId: a, n: 1 } }
      - { input: order, data: { orderId: b, n: 2 } }
      - { input: payment, at: 1s, data: { orderId: b, amount: 20 } }
      - { input: payment, at: 2s, data: { orderId: c, amount: 30 } }
    expect:
      - subscriber: 0
        deliveries: [{ id: payment-1, ofjoined: order-2, data: { order: 2, paid: 20 } }]
`,
    );
    expect(c!.mismatches).toEqual([]);
  });

  it("test command - a transform's output is what the sink receives, through the HTTP binding", async () => {
    const [c] = await reports(
      `inputs:
  order: { eventSource: shop, event: order }
subscribers:
  - condition: order
    sink: { uri: "http://billing.example/" }
    transform: '{ "total": data.amount * 2, "lines": [data.sku] }'
`,
      `cases:
  - name: transformed
    events: [{ input: order, data: { amount: 21, sku: x }, extensions: { tenant: acme } }]
    expect:
      - subscriber: 0
        deliveries:
          - { datacontenttype: application/json, tenant: acme, data: { total: 42, lines: [x] } }
`,
    );
    expect(c!.mismatches).toEqual([]);
    const got = c!.run!.subscribers[0]!.deliveries[0]!;
    expect("event" in got && got.event.data).toEqual({ total: 42, lines: ["x"] });
  });

  it("test command - a batch is delivered at maxEvents, and a partial one at maxWait", async () => {
    const [c] = await reports(
      `inputs:
  reading: { eventSource: meters, event: reading }
subscribers:
  - condition: reading
    sink: { uri: "http://archive.example/" }
    batch: { maxEvents: 3, maxWait: 5s }
`,
      `cases:
  - name: batches
    events:
      - { input: reading, data: { v: 1 } }
      - { input: reading, data: { v: 2 } }
      - { input: reading, data: { v: 3 } }
      - { input: reading, at: 1s, data: { v: 4 } }
    expect:
      - subscriber: 0
        deliveries:
          - batch: [{ data: { v: 1 } }, { data: { v: 2 } }, { data: { v: 3 } }]
          - batch: [{ data: { v: 4 } }]
`,
    );
    expect(c!.mismatches).toEqual([]);
    expect(c!.endedAtMs).toBe(6_000);
  });

  it("test command - debounce delivers the last event of each key's burst", async () => {
    const [c] = await reports(
      `inputs:
  reading: { eventSource: meters, event: reading }
subscribers:
  - condition: reading
    topic: latest
    debounce: { window: 2s, key: data.sensor }
`,
      `cases:
  - name: bursts
    events:
      - { input: reading, at: 0s, data: { sensor: a, v: 1 } }
      - { input: reading, at: 1s, data: { sensor: a, v: 2 } }
      - { input: reading, at: 1500ms, data: { sensor: b, v: 1 } }
      - { input: reading, at: 10s, data: { sensor: a, v: 3 } }
    expect:
      - subscriber: 0
        deliveries: [{ data: { sensor: a, v: 2 } }, { data: { sensor: b, v: 1 } }, { data: { sensor: a, v: 3 } }]
`,
    );
    expect(c!.mismatches).toEqual([]);
    expect(c!.run!.subscribers[0]!.counts["debounced"]).toBe(1);
  });

  it("test command - a failing sink's events reach the dead-letter target with the reason, after the retries on the virtual clock", async () => {
    const spec = `inputs:
  order: { eventSource: shop, event: order }
subscribers:
  - condition: order
    sink: { ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: flaky } }
    deadLetterSink: { ref: { apiVersion: core.openfunction.io/v1beta1, kind: Function, name: dead-letters } }
    delivery: { retry: 3, backoffPolicy: linear, backoffDelay: 10s }
  - condition: order
    sink: { uri: "http://strict.example/" }
    deadLetterTopic: rejected
  - condition: order # no dead-letter target: the event is dropped (and logged)
    sink: { uri: "http://strict.example/" }
`;
    const [c, recovered] = await reports(
      spec,
      `sinks:
  flaky: 503
  http://strict.example/: 404
cases:
  - name: dead letters
    events: [{ input: order, data: { amount: 7 } }]
    expect:
      - subscriber: 0
        deliveries: none
        deadLetters:
          - to: deadLetterSink
            reason: http://flaky.default.svc.cluster.local answered 503
            code: DELIVERY_FAILED
            attempts: 4
            oferrordest: http://flaky.default.svc.cluster.local
            ofsubscriber: 0
            data: { amount: 7 }
      - subscriber: 1
        deadLetters: [{ to: deadLetterTopic, reason: answered 404, code: DELIVERY_REJECTED, attempts: 1 }]
      - subscriber: 2
        deadLetters: [{ to: none, id: order-1, reason: answered 404 }]
  - name: recovered
    sinks: { flaky: [503, 503, 200] }
    events: [{ input: order, data: { amount: 7 } }]
    expect:
      - subscriber: 0
        deliveries: [{ data: { amount: 7 } }]
        deadLetters: none
`,
    );
    expect(c!.mismatches).toEqual([]);
    expect(c!.run!.subscribers[0]!.counts["retried"]).toBe(3);
    // Three linear waits of about 10, 20 and 30 s (± 20 % jitter) passed on the virtual clock.
    expect(c!.endedAtMs).toBeGreaterThanOrEqual(48_000);
    expect(c!.endedAtMs).toBeLessThanOrEqual(72_000);
    expect(recovered!.mismatches).toEqual([]);
    expect(recovered!.run!.subscribers[0]!.counts["retried"]).toBe(2);
  });

  it("test command - a sink shared by two subscribers is told apart, and a failing transform is dead-lettered with 0 attempts", async () => {
    const [c] = await reports(
      `inputs:
  order: { eventSource: shop, event: order }
subscribers:
  - { condition: order, sink: { uri: "http://one.example/" }, transform: '{ "by": 0 }' }
  - { condition: order, sink: { uri: "http://one.example/" }, transform: '{ "by": 1 }' }
  - { condition: order, sink: { uri: "http://one.example/" }, transform: 'function($x) { $x }', deadLetterTopic: bad }
`,
      `cases:
  - name: shared
    events: [{ input: order }]
    expect:
      - { subscriber: 0, deliveries: [{ data: { by: 0 } }] }
      - { subscriber: 1, deliveries: [{ data: { by: 1 } }] }
      - subscriber: 2
        deliveries: none
        deadLetters: [{ to: deadLetterTopic, code: EXPRESSION_TYPE, attempts: 0, oferrordest: "http://one.example/" }]
`,
    );
    expect(c!.mismatches).toEqual([]);
  });

  it("test command - a dead-letter reason that does not match fails the case", async () => {
    const [c] = await reports(
      `inputs:
  order: { eventSource: shop, event: order }
subscribers:
  - { condition: order, sink: { uri: "http://a.example/" }, deadLetterTopic: dl, delivery: { retry: 0 } }
`,
      `sinks: { "http://a.example/": 500 }
cases:
  - name: wrong reason
    events: [{ input: order }]
    expect: [{ subscriber: 0, deadLetters: [{ reason: answered 503 }] }]
`,
    );
    expect(c!.ok).toBe(false);
    expect(c!.mismatches).toEqual([
      {
        subscriber: 0,
        list: "deadLetters",
        index: 0,
        kind: "differs",
        path: "reason",
        expected: "answered 503",
        actual: "http://a.example/ answered 500",
        contains: true,
      },
    ]);
  });
});
