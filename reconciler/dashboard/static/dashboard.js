// The dashboard page: polls /api/overview and /api/events, counts TTLs down
// locally, and sends the admin token in a header (never a cookie).
// Rows are updated in place, keyed by name: a refresh of 300 sandboxes touches
// only the cells that changed, and an open <select> keeps its state.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "reconciler-admin-token";
const EXTEND_CHOICES = [["900", "+15m"], ["3600", "+1h"], ["86400", "+1d"]];

let clockOffset = 0; // server time - browser time, seconds
let lastEventId = 0;
const rows = new Map(); // name -> {tr, cells, data}

// --- token -----------------------------------------------------------------------

function takeTokenFromFragment() {
  // `reconcile serve` prints http://…/#token=…: the fragment never reaches a server or a log.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token set" : "no token: read only";
}

// --- formatting -----------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function clock(unix) {
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function serverNow() { return Date.now() / 1000 + clockOffset; }

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// --- API --------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  // Reads need the token too when the browser is on another machine.
  if (token()) headers["Authorization"] = `Bearer ${token()}`;
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store",
  });
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) {
    const detail = payload && payload.detail ? payload.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return payload;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { box.hidden = true; }, isError ? 10000 : 5000);
}

async function act(method, path, body, what) {
  if (!token()) {
    notice(`${what}: enter the admin token first (it was printed when the dashboard started)`, true);
    return;
  }
  try {
    const result = await api(method, path, body);
    notice(result.message || `${what}: done`, false);
  } catch (err) {
    notice(`${what}: ${err.message}`, true);
  }
  refresh();
}

// --- the table ----------------------------------------------------------------------

function newRow(name) {
  const tr = el("tr", { "data-name": name });
  const cells = {};
  for (const key of ["name", "state", "url", "image", "age", "ttl", "cpu", "memory", "actions"]) {
    cells[key] = el("td", { class: key });
    tr.appendChild(cells[key]);
  }
  cells.cpu.classList.add("num");
  cells.memory.classList.add("num");
  cells.name.textContent = name;

  const badge = el("span", { class: "badge" });
  const reason = el("span", { class: "reason" });
  cells.state.append(badge, reason);
  const link = el("a", { target: "_blank", rel: "noopener noreferrer" });
  cells.url.appendChild(link);

  const select = el("select", { class: "extend-by", "aria-label": `extend ${name} by` });
  for (const [value, label] of EXTEND_CHOICES) select.appendChild(el("option", { value }, label));
  const extend = el("button", { class: "extend", type: "button" }, "Extend");
  extend.addEventListener("click", () =>
    act("POST", `/api/sandboxes/${encodeURIComponent(name)}/extend`, { seconds: Number(select.value) },
        `extend ${name}`));
  const recreate = el("button", { class: "recreate", type: "button" }, "Recreate");
  recreate.addEventListener("click", () => {
    if (confirm(`Recreate ${name}? Its container is replaced; volumes and lifetime are kept.`))
      act("POST", `/api/sandboxes/${encodeURIComponent(name)}/recreate`, {}, `recreate ${name}`);
  });
  const remove = el("button", { class: "delete", type: "button" }, "Delete");
  remove.addEventListener("click", () => {
    if (confirm(`Delete ${name}? Its spec file, container and volumes are removed.`))
      act("DELETE", `/api/sandboxes/${encodeURIComponent(name)}`, {}, `delete ${name}`);
  });
  cells.actions.append(select, extend, recreate, remove);
  return { tr, cells, badge, reason, link, extend, select, data: null };
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function updateRow(row, s) {
  row.data = s;
  row.badge.className = `badge tone-${s.tone}`;
  setText(row.badge, s.state);
  setText(row.reason, s.reason === "Ready" ? "" : s.reason);
  row.cells.state.title = s.message || "";
  if (s.url && /^https?:\/\//.test(s.url)) {
    if (row.link.getAttribute("href") !== s.url) row.link.setAttribute("href", s.url);
    setText(row.link, s.url.replace(/^https?:\/\//, ""));
  } else {
    row.link.removeAttribute("href");
    setText(row.link, "–");
  }
  setText(row.cells.image, s.image || "–");
  row.cells.image.title = s.spec_file ? `spec: ${s.spec_file}` : "";
  setText(row.cells.cpu, s.cpu_percent === null || s.cpu_percent === undefined ? "–" : `${s.cpu_percent.toFixed(1)}%`);
  setText(row.cells.memory, s.memory_limit_bytes
    ? `${bytes(s.memory_bytes)} / ${bytes(s.memory_limit_bytes)}` : bytes(s.memory_bytes));
  row.cells.ttl.setAttribute("data-expires", s.expires_at === null ? "" : String(s.expires_at));
  row.extend.disabled = s.expires_at === null && s.expired_at === null;
  row.select.disabled = row.extend.disabled;
  tickRow(row);
}

function tickRow(row) {
  const s = row.data;
  const now = serverNow();
  setText(row.cells.age, s.created_at ? duration(now - s.created_at) : "–");
  if (s.expires_at) {
    const left = s.expires_at - now;
    setText(row.cells.ttl, left > 0 ? duration(left) : "expiring…");
    row.cells.ttl.title = `expires ${clock(s.expires_at)}`;
    row.cells.ttl.classList.toggle("soon", left < 60);
  } else if (s.expired_at) {
    setText(row.cells.ttl, `expired ${clock(s.expired_at)}`);
    row.cells.ttl.title = "";
  } else {
    setText(row.cells.ttl, "–");
    row.cells.ttl.title = "no ttl";
  }
}

function renderTable(sandboxes) {
  const tbody = document.querySelector("#sandboxes tbody");
  const seen = new Set();
  let previous = null;
  for (const s of sandboxes) {
    seen.add(s.name);
    let row = rows.get(s.name);
    if (!row) { row = newRow(s.name); rows.set(s.name, row); }
    updateRow(row, s);
    // Keep the server's order (by name) with the fewest DOM moves.
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
    previous = row.tr;
  }
  for (const [name, row] of rows) {
    if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
  }
  document.getElementById("empty").hidden = sandboxes.length > 0;
  setText(document.getElementById("sandbox-total"), `(${sandboxes.length})`);
}

function renderCounts(counts) {
  const box = document.getElementById("counts");
  box.replaceChildren();
  const tones = { ready: "ok", starting: "busy", reconciling: "busy", pending: "busy", stalled: "bad",
                  stopped: "bad", invalid: "bad", expired: "gone", deleting: "gone" };
  for (const [state, n] of Object.entries(counts)) {
    box.appendChild(el("span", { class: `badge tone-${tones[state] || "gone"}` }, `${n} ${state}`));
  }
}

function renderPlan(plan) {
  setText(document.getElementById("plan"), plan.text);
  setText(document.getElementById("plan-summary"),
          `+${plan.add} ~${plan.change} -${plan.destroy}`);
}

function renderPools(pools) {
  const section = document.getElementById("pools-section");
  section.hidden = pools.length === 0;
  const tbody = document.querySelector("#pools tbody");
  tbody.replaceChildren();
  for (const p of pools) {
    const tr = el("tr");
    for (const v of [p.name, String(p.ready), String(p.claimed), p.target === null ? "–" : String(p.target)])
      tr.appendChild(el("td", {}, v));
    tbody.appendChild(tr);
  }
}

function renderEvents(events) {
  const list = document.getElementById("events");
  for (const e of events) {
    if (e.id <= lastEventId) continue; // two refreshes in flight (a poll and an action's)
    const li = el("li", { "data-kind": e.kind });
    li.append(el("time", {}, clock(e.time).slice(11)), el("span", { class: "kind" }, e.kind),
              el("span", { class: "sandbox" }, e.sandbox || ""), el("span", { class: "message muted" },
              e.message ? ` ${e.message}` : ""));
    list.prepend(li);
    lastEventId = Math.max(lastEventId, e.id);
  }
  while (list.children.length > 500) list.lastChild.remove();
  document.getElementById("no-events").hidden = list.children.length > 0;
}

// --- polling ------------------------------------------------------------------------

async function refresh() {
  const connection = document.getElementById("connection");
  try {
    const [overview, events] = await Promise.all([
      api("GET", "/api/overview"),
      api("GET", `/api/events?after=${lastEventId}`),
    ]);
    clockOffset = overview.now - Date.now() / 1000;
    setText(document.getElementById("instance"), `instance ${overview.instance} · *.${overview.domain}`);
    renderCounts(overview.counts);
    renderTable(overview.sandboxes);
    renderPlan(overview.plan);
    renderPools(overview.pools);
    renderEvents(events);
    setText(connection, `updated ${clock(overview.now).slice(11)}`);
    connection.className = "muted";
  } catch (err) {
    setText(connection, `not updating: ${err.message}`);
    connection.className = "tone-bad";
  }
}

async function pollForever() {
  for (;;) {
    if (!document.hidden) await refresh();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  showTokenState();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showTokenState();
  });
  setInterval(() => { for (const row of rows.values()) tickRow(row); }, 1000);
  pollForever();
});
