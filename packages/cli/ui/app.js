// The live page of `ofevents run`: draws the flow graph from /api/graph, keeps its counters
// current from the server-sent events of /api/stream, shows a node's latest events with their
// journey and a subscriber's dead letters (with a redrive button), and sends test events.
// Plain browser module: nothing is fetched from anywhere but the runner.

const COLUMN_WIDTH = 340;
const ROW_HEIGHT = 78;
const NODE_WIDTH = 180;
const NODE_HEIGHT = 48;
const KIND_NAMES = {
  source: "source",
  topic: "bus topic",
  trigger: "trigger",
  subscriber: "subscriber",
  sink: "sink",
  function: "function",
};

const state = { graph: undefined, counters: {}, selected: undefined };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

async function api(path, init) {
  const res = await fetch(path, init);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ?? `${res.status}`);
  return body;
}

/** Positions: per column, in the order the graph lists the nodes. */
function layout(graph) {
  const rows = new Map();
  const pos = new Map();
  for (const n of graph.nodes) {
    const row = rows.get(n.column) ?? 0;
    rows.set(n.column, row + 1);
    pos.set(n.id, { x: 16 + n.column * COLUMN_WIDTH, y: 16 + row * ROW_HEIGHT });
  }
  const height = 32 + Math.max(1, ...rows.values()) * ROW_HEIGHT;
  const width = 32 + (Math.max(0, ...graph.nodes.map((n) => n.column)) + 1) * COLUMN_WIDTH;
  return { pos, width, height };
}

function counterText(edge) {
  if (edge.counters === undefined) return "";
  const c = state.counters[edge.counters.of] ?? {};
  return edge.counters.show
    .filter((k) => (c[k] ?? 0) > 0 || k === edge.counters.show[0])
    .map((k) => `${k} ${c[k] ?? 0}`)
    .join(" · ");
}

function drawGraph() {
  const graph = state.graph;
  const box = $("graph");
  box.replaceChildren();
  const { pos, width, height } = layout(graph);
  box.style.height = `${height}px`;
  const s = svg("svg", { width, height, "aria-hidden": "true" });
  s.style.width = `${width}px`;
  for (const e of graph.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (a === undefined || b === undefined) continue;
    const x1 = a.x + NODE_WIDTH;
    const y1 = a.y + NODE_HEIGHT / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_HEIGHT / 2;
    const mid = (x1 + x2) / 2;
    s.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: e.kind }));
    const t = svg("text", { x: mid, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", "data-edge": e.id });
    t.textContent = counterText(e);
    s.append(t);
  }
  const inner = el("div", { class: "inner" });
  inner.style.position = "relative";
  inner.style.width = `${width}px`;
  inner.style.height = `${height}px`;
  inner.append(s);
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const b = el(
      "button",
      {
        type: "button",
        class: `node ${n.kind}`,
        "data-node": n.id,
        "aria-pressed": String(state.selected === n.id),
        title: `${KIND_NAMES[n.kind]} ${n.label}`,
        onclick: () => select(n.id),
      },
      el("span", { class: "kind" }, KIND_NAMES[n.kind]),
      el("span", { class: "label" }, n.label),
    );
    b.style.left = `${p.x}px`;
    b.style.top = `${p.y}px`;
    b.style.height = `${NODE_HEIGHT}px`;
    inner.append(b);
  }
  box.append(inner);
}

function labelOf(id) {
  const n = state.graph.nodes.find((x) => x.id === id);
  return n === undefined ? id : `${KIND_NAMES[n.kind]} ${n.label}`;
}

function updateCounters() {
  for (const t of document.querySelectorAll("#graph text[data-edge]")) {
    const e = state.graph.edges.find((x) => x.id === t.getAttribute("data-edge"));
    if (e !== undefined) t.textContent = counterText(e);
  }
  const rows = state.graph.edges
    .filter((e) => e.counters !== undefined)
    .map((e) =>
      el(
        "tr",
        { "data-edge": e.id },
        el("td", {}, labelOf(e.from)),
        el("td", {}, labelOf(e.to) + (e.kind === "dead-letter" ? " (dead letters)" : "")),
        el("td", { class: "counters" }, counterText(e)),
      ),
    );
  document.querySelector("#edges tbody").replaceChildren(...rows);
}

function describe(step) {
  const d = Object.entries(step.detail ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" ");
  return `${step.at.slice(11, 23)} ${step.where}: ${step.step}${d === "" ? "" : ` (${d})`}`;
}

async function select(id) {
  state.selected = id;
  for (const b of document.querySelectorAll(".node")) b.setAttribute("aria-pressed", String(b.dataset.node === id));
  await showDetails();
}

async function showDetails() {
  const id = state.selected;
  if (id === undefined) return;
  const info = await api(`/api/nodes/${encodeURIComponent(id)}`);
  const body = $("details-body");
  const facts = el("dl");
  for (const [k, v] of Object.entries(info.node.detail)) facts.append(el("dt", {}, k), el("dd", {}, v));
  const parts = [el("h3", {}, labelOf(id)), facts];
  const counters = Object.entries(info.counters)
    .map(([k, v]) => `${k} ${v}`)
    .join(" · ");
  parts.push(el("p", { class: "counters" }, counters === "" ? "no events yet" : counters));
  if (info.deadLetters.length > 0) {
    const list = el("ul", { class: "dead-letters" });
    for (const d of info.deadLetters)
      list.append(
        el(
          "li",
          { "data-id": d.id },
          el("span", { class: "dead" }, "dead letter "),
          `${d.id}: ${d.reason} (to ${d.to}) `,
          el("button", { type: "button", class: "redrive", onclick: () => redrive(id, d.id) }, `Redrive ${d.id}`),
        ),
      );
    parts.push(el("h4", {}, "Dead letters"), list);
  }
  const events = el("ul", { class: "events" });
  for (const e of info.events)
    events.append(
      el(
        "li",
        { "data-id": e.id },
        el("strong", {}, e.id),
        el("ol", { class: "journey" }, ...e.steps.map((s) => el("li", {}, describe(s)))),
      ),
    );
  parts.push(el("h4", {}, "Latest events"), info.events.length > 0 ? events : el("p", {}, "none yet"));
  body.replaceChildren(...parts);
  $("details").hidden = false;
}

async function redrive(node, id) {
  const status = $("status");
  try {
    const r = await api("/api/redrive", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ node, id }),
    });
    status.textContent =
      r.deadLettered > 0
        ? `redrive of ${id} failed again: ${r.reason ?? "dead-lettered"}`
        : `redriven ${id}: delivered`;
  } catch (err) {
    status.textContent = `redrive of ${id} failed: ${err.message}`;
  }
  await showDetails();
}

async function send(ev) {
  ev.preventDefault();
  const out = $("send-result");
  let data;
  try {
    data = JSON.parse($("send-data").value);
  } catch (err) {
    out.textContent = `Data is not JSON: ${err.message}`;
    return;
  }
  try {
    const r = await api("/api/send", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ node: $("send-node").value, data, subject: $("send-subject").value }),
    });
    out.textContent = `sent ${r.id}`;
  } catch (err) {
    out.textContent = `not sent: ${err.message}`;
  }
}

function stream() {
  const es = new EventSource("/api/stream");
  es.addEventListener("stats", (m) => {
    state.counters = JSON.parse(m.data);
    updateCounters();
    if (state.selected !== undefined && state.refresh === undefined)
      state.refresh = setTimeout(() => {
        state.refresh = undefined;
        showDetails().catch(() => undefined);
      }, 500);
    $("status").dataset.live = "true";
    if ($("status").textContent === "connecting…" || $("status").textContent.startsWith("disconnected"))
      $("status").textContent = "live";
  });
  let opened = false;
  es.addEventListener("open", () => {
    // A second open is a reconnect: the run may have reloaded other manifests (run --watch).
    if (opened) loadGraph().catch(() => undefined);
    opened = true;
  });
  es.onerror = () => {
    $("status").textContent = "disconnected: retrying";
  };
}

/** Loads (or, after a reload of the run, loads again) the graph, the form's sources and the listeners. */
async function loadGraph() {
  const g = await api("/api/graph");
  state.graph = g;
  if (!g.nodes.some((n) => n.id === state.selected)) {
    state.selected = undefined;
    $("details").hidden = true;
  }
  drawGraph();
  updateCounters();
  const select = $("send-node");
  select.replaceChildren(
    ...g.nodes
      .filter((x) => x.kind === "source")
      .map((n) => el("option", { value: n.id }, `${n.detail.eventSource} / ${n.detail.event} (${n.detail.kind})`)),
  );
  $("listening").replaceChildren(
    ...g.listening.map((l) => el("li", {}, `${l.what}: `, el("a", { href: l.url }, l.url))),
  );
}

async function start() {
  await loadGraph();
  $("send").addEventListener("submit", send);
  stream();
}

start().catch((err) => {
  $("status").textContent = `cannot load the flow: ${err.message}`;
});
