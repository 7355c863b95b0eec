/**
 * The live page of `ofevents run`, in a real browser (headless Chromium): it draws the
 * quickstart's graph, its counters move when events are posted to the webhook, the test-event
 * form sends an event that reaches the function, and a dead letter is redriven from the page and
 * delivered. A screenshot of the quickstart's graph with its counters is written to
 * test/output/flow-page/quickstart.png (docs/images/flow-page.png in the README is a copy).
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "puppeteer-core";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchBrowser } from "./helpers/browser.js";
import { NatsServer } from "./helpers/nats.js";
import { OfeventsProcess } from "./helpers/ofevents.js";
import { freePort } from "./helpers/server.js";
import { waitFor } from "./helpers/wait.js";
import { redriveCli } from "./redrive-durable.js";

const root = fileURLToPath(new URL("..", import.meta.url));
export const SCREENSHOT = join(root, "test", "output", "flow-page", "quickstart.png");

/** Starts `ofevents run` with the page on a free port; resolves with the page's URL. */
async function runWithPage(files: string[], name: string): Promise<{ proc: OfeventsProcess; url: string }> {
  let url: string | undefined;
  const proc = await OfeventsProcess.start({
    command: "run",
    files,
    name,
    args: ["--ui-port", "0"],
    onLine: (line) => {
      if (line.includes('"msg":"running"')) url = (JSON.parse(line) as { page?: string }).page;
    },
  });
  return { proc, url: await waitFor(() => url, { message: "the page's URL in the running line" }) };
}

async function rowText(page: Page, from: string, to: string): Promise<string> {
  return page.$$eval(
    "#edges tbody tr",
    (rows, f, t) =>
      rows
        .map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent ?? ""))
        .find((c) => c[0] === f && c[1] === t)?.[2] ?? "",
    from,
    to,
  );
}

/**
 * A webhook source and a trigger whose one subscriber delivers to `sink` (one retry), with a
 * dead-letter sink or, on a JetStream bus, none (the trigger then keeps its dead letters).
 */
function redriveFlow(port: number, o: { sink: string; deadLetterSink?: string; jetstream?: string }): string {
  const api = "apiVersion: events.openfunction.io/v1alpha1";
  return `${o.jetstream === undefined ? "" : `${api}\nkind: EventBus\nmetadata: { name: default }\nspec: { jetstream: { url: "${o.jetstream}" } }\n---\n`}${api}
kind: EventSource
metadata: { name: web }
spec:
  eventBus: default
  webhook:
    in: { port: "${port}", endpoint: /in, method: POST }
---
${api}
kind: Trigger
metadata: { name: t }
spec:
  eventBus: default
  inputs:
    i: { eventSource: web, event: in }
  subscribers:
    - condition: i
      sink: { uri: "${o.sink}" }
${o.deadLetterSink === undefined ? "" : `      deadLetterSink: { uri: "${o.deadLetterSink}" }\n`}      delivery: { retry: 1, backoffDelay: 10ms }
`;
}

let browser: Browser;

beforeAll(async () => {
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
});

describe("flow page: the quickstart", () => {
  let dir: string;
  let proc: OfeventsProcess;
  let url: string;
  let webhook: string;
  let page: Page;

  beforeAll(async () => {
    // The quickstart as shipped, on a free webhook port (other tests use 12000).
    dir = await mkdtemp(join(tmpdir(), "ofevents-flow-page-"));
    await cp(join(root, "examples", "quickstart"), dir, { recursive: true });
    const port = await freePort();
    const file = join(dir, "eventsources.yaml");
    await writeFile(file, (await readFile(file, "utf8")).replace('port: "12000"', `port: "${port}"`));
    webhook = `http://127.0.0.1:${port}/orders`;
    ({ proc, url } = await runWithPage([dir], "run quickstart"));
    page = await browser.newPage();
    await page.setViewport({ width: 2100, height: 700 });
    await page.goto(url);
    await page.waitForSelector('[data-node="trigger:default/orders"]');
  });

  afterAll(async () => {
    await page?.close();
    await proc?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("draws every source, topic, trigger, subscriber and target of the manifests", async () => {
    const nodes = await page.$$eval("[data-node]", (els) => els.map((e) => e.getAttribute("data-node")));
    expect(nodes).toEqual(
      expect.arrayContaining([
        "source:default/orders/created",
        "source:default/clock/tick",
        "topic:memory:default/default-orders-created",
        "topic:memory:default/default-clock-tick",
        "trigger:default/orders",
        "subscriber:default/orders/0",
        "subscriber:default/orders/1",
        "subscriber:default/orders/2",
        "function:default/big-orders",
        "function:default/flaky",
        "function:default/dead-letters",
        "topic:memory:default/order-batches",
        "function:default/batcher",
      ]),
    );
    // An edge per hop, drawn as a path, with its counters readable as text.
    expect(await page.$$eval("#graph path", (p) => p.length)).toBeGreaterThanOrEqual(12);
    expect(await page.$eval("#graph path.dead-letter", (p) => p !== null)).toBe(true);
    const listening = await page.$eval("#listening", (e) => e.textContent ?? "");
    expect(listening).toContain(webhook);
  });

  it("moves the counters when events are posted to the webhook", async () => {
    const before = await rowText(page, "source orders/created", "bus topic default-orders-created");
    for (const amount of [150, 250, 20]) {
      const res = await request(webhook, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ amount }),
      });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    }
    // Two of three pass the filter (amount >= 100) and reach big-orders.
    await waitFor(
      async () =>
        (await rowText(page, "source orders/created", "bus topic default-orders-created")).includes("received 3") &&
        (await rowText(page, "bus topic default-orders-created", "trigger orders")).includes("filteredOut 1") &&
        (await rowText(page, "subscriber 0: order", "function big-orders")).includes("delivered 2"),
      { timeoutMs: 15_000, message: "the counters of the three orders" },
    );
    expect(before).toContain("received 0");
    // The drawing's label says the same as the table.
    const label = await page.$eval(
      'text[data-edge="source:default/orders/created -> topic:memory:default/default-orders-created"]',
      (t) => t.textContent,
    );
    expect(label).toContain("received 3");
    // The picture of the README: the quickstart with events through it.
    await mkdir(join(root, "test", "output", "flow-page"), { recursive: true });
    await (await page.$("main > section"))!.screenshot({ path: SCREENSHOT });
  });

  it("sends a test event from the form, and shows its journey on the node", async () => {
    await page.select("#send-node", "source:default/orders/created");
    await page.$eval("#send-data", (t) => ((t as unknown as { value: string }).value = '{ "amount": 999 }'));
    await page.click('#send button[type="submit"]');
    const sent = await waitFor(async () => {
      const out = await page.$eval("#send-result", (e) => e.textContent ?? "");
      return out.startsWith("sent ") ? out.slice("sent ".length) : undefined;
    });
    // Keyboard: focus the subscriber of big-orders and press Enter.
    await page.focus('[data-node="subscriber:default/orders/0"]');
    await page.keyboard.press("Enter");
    await waitFor(
      async () =>
        (await page.$eval("#details-body", (e) => e.textContent ?? "")).includes(sent) &&
        (await page.$eval("#details-body", (e) => e.textContent ?? "")).includes("big-orders"),
      { timeoutMs: 15_000, message: "the sent event's journey on subscriber 0" },
    );
    const journey = await page.$eval(`#details-body li[data-id="${sent}"]`, (e) => e.textContent ?? "");
    expect(journey).toMatch(/received/);
    expect(journey).toMatch(/delivered \(subscriber=0/);
  });
});

describe("flow page: redrive", () => {
  let dir: string;
  let proc: OfeventsProcess;
  let url: string;
  let page: Page;
  let sink: Server;
  let deadLetters: Server;
  let sinkStatus = 503;
  const delivered: Array<Record<string, string | string[] | undefined>> = [];
  const dead: string[] = [];
  let webhook: string;

  beforeAll(async () => {
    sink = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        if (sinkStatus < 300) delivered.push(req.headers);
        res.writeHead(sinkStatus).end();
      });
    });
    deadLetters = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        dead.push(String(req.headers["ce-id"]));
        res.writeHead(200).end();
      });
    });
    for (const s of [sink, deadLetters]) await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    const port = await freePort();
    dir = await mkdtemp(join(tmpdir(), "ofevents-flow-redrive-"));
    webhook = `http://127.0.0.1:${port}/in`;
    await writeFile(
      join(dir, "flow.yaml"),
      redriveFlow(port, {
        sink: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`,
        deadLetterSink: `http://127.0.0.1:${(deadLetters.address() as AddressInfo).port}/`,
      }),
    );
    ({ proc, url } = await runWithPage([dir], "run redrive"));
    page = await browser.newPage();
    await page.goto(url);
    await page.waitForSelector('[data-node="subscriber:default/t/0"]');
  });

  afterAll(async () => {
    await page?.close();
    await proc?.stop();
    for (const s of [sink, deadLetters]) s?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("lists the dead letter on its subscriber, and the redrive button delivers it", async () => {
    const res = await request(webhook, { method: "POST", headers: { "ce-id": "e-1" }, body: '{"n":1}' });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    await waitFor(() => dead.length === 1, { timeoutMs: 15_000, message: "the dead letter" });
    expect(delivered).toHaveLength(0);
    await page.click('[data-node="subscriber:default/t/0"]');
    const button = await page.waitForSelector("#details-body button.redrive", { timeout: 15_000 });
    expect(await page.$eval("#details-body .dead-letters", (e) => e.textContent ?? "")).toContain("503");
    sinkStatus = 200;
    const id = await page.$eval("#details-body .dead-letters li", (e) => e.getAttribute("data-id"));
    await button!.click();
    await waitFor(() => delivered.length === 1, { timeoutMs: 15_000, message: "the redriven delivery" });
    expect(delivered[0]!["ce-id"]).toBe(id);
    expect(delivered[0]!["ce-ofredriven"]).toMatch(/^\d{4}-\d\d-\d\dT/);
    // The page says so, and the dead letter left the list.
    await waitFor(async () => (await page.$eval("#status", (e) => e.textContent ?? "")).includes(`redriven ${id}`));
    await waitFor(async () => (await page.$$("#details-body .dead-letters li")).length === 0);
  });
});

describe("flow page: redrive on a JetStream bus", () => {
  let server: NatsServer;
  let dir: string;
  let proc: OfeventsProcess;
  let url: string;
  let sink: Server;
  let sinkStatus = 503;
  const delivered: string[] = [];
  let webhook: string;
  let files: string[];

  beforeAll(async () => {
    server = await NatsServer.start({ jetstream: true });
    sink = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        if (sinkStatus < 300) delivered.push(String(req.headers["ce-id"]));
        res.writeHead(sinkStatus).end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    const port = await freePort();
    dir = await mkdtemp(join(tmpdir(), "ofevents-flow-js-"));
    webhook = `http://127.0.0.1:${port}/in`;
    const file = join(dir, "flow.yaml");
    files = [file];
    // No dead-letter target: on jetstream the trigger keeps its dead letters (keepDeadLetters).
    await writeFile(
      file,
      redriveFlow(port, { sink: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/`, jetstream: server.url }),
    );
    ({ proc, url } = await runWithPage([dir], "run redrive jetstream"));
  });

  afterAll(async () => {
    await proc?.stop();
    sink?.close();
    await server?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("redrives the kept dead letter, which a later ofevents redrive then finds settled", async () => {
    const res = await request(webhook, { method: "POST", body: '{"n":1}' });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    const node = "subscriber:default/t/0";
    const info = await waitFor(
      async () => {
        const r = await request(`${url}api/nodes/${encodeURIComponent(node)}`);
        const body = (await r.body.json()) as { deadLetters: Array<{ id: string; reason: string }> };
        return body.deadLetters.length === 1 ? body : undefined;
      },
      { timeoutMs: 15_000, message: "the dead letter on the page" },
    );
    const id = info.deadLetters[0]!.id;
    sinkStatus = 200;
    const r = await request(`${url}api/redrive`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ node, id }),
    });
    expect(r.statusCode).toBe(200);
    expect(await r.body.json()).toMatchObject({ id, delivered: 1, deadLettered: 0 });
    expect(delivered).toEqual([id]);
    // The page redrove the kept one: the command-line redrive has nothing left to do.
    const cli = await redriveCli(files, ["--trigger", "default/t"]);
    expect(cli.report).toMatchObject({ read: 1, settled: 1, matched: 0, delivered: 0 });
    expect(delivered).toEqual([id]);
  });
});
