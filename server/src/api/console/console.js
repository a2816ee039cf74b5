// The admin console: live figures from GET /api/v1/stats (every node and their total), user
// lookup, room inspection, disconnecting users and test messages, all through the public HTTP
// API with the key the operator logs in with (kept in sessionStorage, i.e. this tab only).
"use strict";

const KEY = "push-console-key";
const POLL_MS = 2000;
const POINTS = 150;
const SCENARIOS = ["user", "room", "broadcast"];
const TRANSPORTS = ["tcp", "websocket", "long_poll"];
let key = sessionStorage.getItem(KEY);
let previous = null;
let timer = null;
let charts = null;
const series = {
  t: [], tcp: [], websocket: [], long_poll: [],
  d_user: [], d_room: [], d_broadcast: [],
  accepted: [], failed: [], transient: [],
  p50: [], p99: [], commit_p99: [], storage_mb: [],
  slow: [], refused: [], timeouts: [],
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/** Builds an element; children are nodes or text (never parsed as HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

/** One API call with the operator's key; a refusal throws with the server's reason. */
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + key };
  if (body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${(data && data.error) || r.statusText}`);
  return data;
}

/** The q quantile of per-bucket counts (upper bounds `le`, overflow last), as the server computes it. */
function quantile(counts, le, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (n > 0 && seen + n >= rank) {
      if (i >= le.length) return le[le.length - 1];
      const lower = i === 0 ? 0 : le[i - 1];
      return lower + (le[i] - lower) * ((rank - seen) / n);
    }
    seen += n;
  }
  return le[le.length - 1];
}

const minus = (a, b) => a.map((x, i) => Math.max(0, x - ((b && b[i]) || 0)));
const plus = (a, b) => a.map((x, i) => x + ((b && b[i]) || 0));
const sum = (o, f) => SCENARIOS.reduce((acc, s) => acc + o.scenarios[s][f], 0);

/** Rates and interval quantiles of one node (or the total) between two readings. */
function interval(now, before, dt, le) {
  const rate = (f) => before ? Math.max(0, (sum(now, f) - sum(before, f)) / dt) : 0;
  let buckets = null;
  for (const s of SCENARIOS) {
    const b = now.scenarios[s].accept_to_write_buckets;
    const d = before ? minus(b, before.scenarios[s].accept_to_write_buckets) : b;
    buckets = buckets ? plus(buckets, d) : d;
  }
  const commits = before ? minus(now.storage.commit_buckets, before.storage.commit_buckets) : now.storage.commit_buckets;
  return {
    deliveries: rate("deliveries"),
    accepted: rate("accepted"),
    failed: rate("failed"),
    transient: rate("transient"),
    p50: quantile(buckets, le, 0.5),
    p99: quantile(buckets, le, 0.99),
    commit_p99: quantile(commits, le, 0.99),
  };
}

const ms = (s) => (s == null ? "-" : (s * 1000).toFixed(2));
const mb = (b) => (b == null ? "-" : (b / 1048576).toFixed(1) + " MiB");
const num = (x) => Math.round(x).toLocaleString("en");

function renderNodes(stats, dt) {
  const before = new Map((previous ? [...previous.nodes, previous.total] : []).map((n) => [n.node, n]));
  const rows = stats.nodes.length > 1 ? [...stats.nodes, stats.total] : [stats.total];
  const tbody = $("nodes").querySelector("tbody");
  tbody.replaceChildren(...rows.map((n) => {
    const i = interval(n, before.get(n.node), dt, stats.buckets_le_s);
    const c = n.connections;
    return el("tr", { class: n.node === "total" ? "total" : "" },
      el("td", {}, n.node === "total" ? (stats.cluster ? "all nodes" : "this server") : n.node),
      el("td", {}, num(c.total)),
      el("td", {}, `${num(c.tcp)} / ${num(c.websocket)} / ${num(c.long_poll)}`),
      el("td", {}, num(i.deliveries)),
      el("td", {}, num(i.accepted)),
      el("td", {}, num(i.failed)),
      el("td", {}, `${ms(i.p50)} / ${ms(i.p99)}`),
      el("td", {}, n.storage.failing ? "FAILING" : mb(n.storage.bytes)),
      el("td", {}, mb(n.memory.allocated)));
  }));
}

function chart(id, title, labels, unit) {
  const colors = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099"];
  const opts = {
    title, width: $(id).clientWidth - 10 || 450, height: 200,
    scales: { x: { time: true } },
    series: [{}, ...labels.map((label, i) => ({ label, stroke: colors[i % colors.length], width: 1.5, value: (u, v) => (v == null ? "-" : v.toFixed(unit === "ms" ? 2 : 0) + (unit ? " " + unit : "")) }))],
    axes: [{}, { size: 60 }],
  };
  return new uPlot(opts, [[], ...labels.map(() => [])], $(id));
}

function makeCharts() {
  return {
    connections: [chart("chart-connections", "Connections by transport", ["tcp", "websocket", "long-poll"]), ["tcp", "websocket", "long_poll"]],
    deliveries: [chart("chart-deliveries", "Deliveries/s by scenario", SCENARIOS, "/s"), ["d_user", "d_room", "d_broadcast"]],
    publishes: [chart("chart-publishes", "Publishes/s", ["accepted", "failed", "transient"], "/s"), ["accepted", "failed", "transient"]],
    latency: [chart("chart-latency", "Publish -> write to the socket (last interval)", ["p50", "p99"], "ms"), ["p50", "p99"]],
    storage: [chart("chart-storage", "Storage: commit p99 (ms), size (MiB)", ["commit p99", "size"]), ["commit_p99", "storage_mb"]],
    problems: [chart("chart-problems", "Dropped and refused per interval", ["slow consumers", "refused handshakes", "heartbeat timeouts"]), ["slow", "refused", "timeouts"]],
  };
}

function record(stats, dt) {
  const t = stats.total;
  const before = previous && previous.total;
  const i = interval(t, before, dt, stats.buckets_le_s);
  const delta = (f) => (before ? Math.max(0, t.problems[f] - before.problems[f]) : 0);
  const point = {
    t: Date.now() / 1000,
    tcp: t.connections.tcp, websocket: t.connections.websocket, long_poll: t.connections.long_poll,
    accepted: i.accepted, failed: i.failed, transient: i.transient,
    p50: i.p50 == null ? null : i.p50 * 1000, p99: i.p99 == null ? null : i.p99 * 1000,
    commit_p99: i.commit_p99 == null ? null : i.commit_p99 * 1000,
    storage_mb: t.storage.bytes == null ? null : t.storage.bytes / 1048576,
    slow: delta("slow_consumers"), refused: delta("handshakes_failed"), timeouts: delta("heartbeat_timeouts"),
  };
  for (const s of SCENARIOS) {
    point["d_" + s] = before ? Math.max(0, (t.scenarios[s].deliveries - before.scenarios[s].deliveries) / dt) : 0;
  }
  for (const [k, v] of Object.entries(point)) {
    series[k].push(v);
    if (series[k].length > POINTS) series[k].shift();
  }
  for (const [c, keys] of Object.values(charts)) c.setData([series.t, ...keys.map((k) => series[k])]);
}

async function poll() {
  const at = Date.now();
  try {
    const stats = await api("GET", "/api/v1/stats");
    const dt = previous ? Math.max(0.001, (at - previous.at) / 1000) : 1;
    renderNodes(stats, dt);
    record(stats, dt);
    previous = { ...stats, at };
    $("status").textContent = `updated ${new Date(at).toLocaleTimeString()} · ${stats.nodes.length} node(s)` +
      (stats.broker ? ` · RabbitMQ ${stats.broker}` : "");
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    $("status").textContent = "cannot read figures: " + e.message;
    if (/HTTP 401/.test(e.message)) logout();
  }
}

function messagesTable(messages) {
  if (!messages.length) return el("p", {}, "no stored messages");
  return el("table", {}, ...messages.map((m) => el("tr", {},
    el("td", {}, "#" + m.position),
    el("td", { class: "state-" + m.state }, m.state),
    el("td", {}, new Date(m.timestamp).toLocaleTimeString()),
    el("td", {}, m.kind),
    el("td", {}, m.title != null ? `${m.title}: ${m.content}` : (m.payload ?? "(binary)")))));
}

function sessionsTable(sessions) {
  if (!sessions.length) return el("span");
  return el("table", { id: "sessions" }, el("tr", {}, el("th", {}, "transport"), el("th", {}, "device"), el("th", {}, "node"), el("th", {}, "connected since")),
    ...sessions.map((s) => el("tr", {},
      el("td", {}, `${s.transport} (v${s.protocol_version})`),
      el("td", {}, s.device || "-"),
      el("td", {}, s.node || "this server"),
      el("td", {}, new Date(s.connected_at_ms).toLocaleString()))));
}

/** The latest `n` messages of a history path, newest last. */
async function latest(path, n) {
  const head = await api("GET", `${path}?limit=1`);
  const after = Math.max(head.tail - n, head.first_retained - 1, 0);
  return api("GET", `${path}?after=${after}&limit=${n}`);
}

async function lookUpUser(user) {
  const out = $("user-result");
  try {
    const path = `/api/v1/history/users/${enc(user)}`;
    const [p, recent] = await Promise.all([api("GET", `/api/v1/users/${enc(user)}/presence`), latest(path, 10)]);
    const open = await api("GET", `${path}?after=${recent.acked}&limit=1000`);
    const pending = open.messages.filter((m) => m.state === "pending").length;
    const failed = open.messages.filter((m) => m.state === "failed").length;
    const nodes = p.nodes ? Object.entries(p.nodes).map(([n, c]) => `${n} (${c})`).join(", ") : "";
    out.replaceChildren(
      el("p", { class: p.online ? "ok" : "" }, p.online ? `online: ${p.connections} connection(s)` : "offline",
        p.devices.length ? ` · devices: ${p.devices.join(", ")}` : "", nodes ? ` · nodes: ${nodes}` : ""),
      sessionsTable(p.sessions || []),
      el("p", {}, `acknowledged up to #${recent.acked} of #${recent.tail} · ${pending} pending · ${failed} failed`),
      el("button", { id: "kick", onclick: () => kick(user) }, "Disconnect"),
      messagesTable(recent.messages));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function kick(user) {
  try {
    const r = await api("DELETE", `/api/v1/users/${enc(user)}/connections`);
    await lookUpUser(user);
    $("user-result").prepend(el("p", { class: "ok", id: "kicked" }, `closed ${r.closed} connection(s)`));
  } catch (e) {
    $("user-result").prepend(el("p", { class: "error" }, e.message));
  }
}

async function inspectRoom(room) {
  const out = $("room-result");
  try {
    const [r, recent] = await Promise.all([api("GET", `/api/v1/rooms/${enc(room)}`), latest(`/api/v1/history/rooms/${enc(room)}`, 10)]);
    out.replaceChildren(
      el("p", {}, `${r.members} member(s) · tail #${recent.tail} · oldest retained #${recent.first_retained}`),
      messagesTable(recent.messages));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function pushTest() {
  const target = $("push-target").value;
  const name = $("push-to").value.trim();
  const to = target === "user" ? { users: [name] } : target === "room" ? { room: name } : { broadcast: true };
  const out = $("push-result");
  try {
    const r = await api("POST", "/api/v1/push", { to, kind: "notice", title: "Console test", content: $("push-text").value, level: "info" });
    out.replaceChildren(...r.accepted.map((a) => el("p", { class: "ok" },
      `${a.stream} #${a.position}: queued to ${a.online} connection(s) online now`)));
    if (target === "user") { $("user-id").value = name; await lookUpUser(name); }
    if (target === "room") { $("room-id").value = name; await inspectRoom(name); }
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

function start() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = false;
  charts = charts || makeCharts();
  poll();
  timer = setInterval(poll, POLL_MS);
}

function logout() {
  sessionStorage.removeItem(KEY);
  key = null;
  clearInterval(timer);
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  key = $("key").value.trim();
  try {
    const me = await api("GET", "/api/v1/key");
    if (!me.scopes.includes("admin")) throw new Error(`key ${me.name} lacks the admin scope`);
    sessionStorage.setItem(KEY, key);
    $("login-error").textContent = "";
    start();
  } catch (e) {
    $("login-error").textContent = "refused: " + e.message;
  }
});
$("logout").addEventListener("click", logout);
$("user-form").addEventListener("submit", (ev) => { ev.preventDefault(); lookUpUser($("user-id").value.trim()); });
$("room-form").addEventListener("submit", (ev) => { ev.preventDefault(); inspectRoom($("room-id").value.trim()); });
$("push-form").addEventListener("submit", (ev) => { ev.preventDefault(); pushTest(); });
if (key) start();
