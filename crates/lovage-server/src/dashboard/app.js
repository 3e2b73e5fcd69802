// lovage dashboard: hash routes, JSON from api/v1 (paths relative, so it works under any
// prefix), live over the event stream, no framework and nothing fetched from elsewhere.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const fmt = (n) => (n ?? 0).toLocaleString();
const badge = (s) => `<span class="badge s-${esc(s)}">${esc(s)}</span>`;
const ago = (t) => { if (!t) return "—"; const s = (Date.now() - Date.parse(t)) / 1000;
  return s < 60 ? `${Math.max(0, Math.round(s))}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : s < 86400 ? `${Math.round(s / 3600)}h ago` : new Date(t).toLocaleString(); };
const until = (t) => { const s = Math.round((Date.parse(t) - Date.now()) / 1000); if (s <= 0) return "due now";
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, r = s % 60;
  return "in " + (d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`); };
const ms = (v) => v == null ? "—" : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(2)} s`;
const state = { me: null, chartRange: "15m", newTasks: 0, timer: null, es: null };

class Unauthorized extends Error {}
async function api(path, opts = {}) {
  const init = { headers: { "accept": "application/json" }, credentials: "same-origin", ...opts };
  if (opts.body !== undefined) { init.headers["content-type"] = "application/json"; init.headers["x-lovage-csrf"] = "1"; init.body = JSON.stringify(opts.body); }
  if (opts.method && opts.method !== "GET") init.headers["x-lovage-csrf"] = "1";
  const r = await fetch(path, init);
  if (r.status === 401) throw new Unauthorized();
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(data?.error?.message || `HTTP ${r.status}`);
  return data;
}
const post = (path, body = {}) => api(path, { method: "POST", body });
function toast(msg, bad) { const t = document.createElement("div"); t.className = "toast" + (bad ? " err" : ""); t.textContent = msg; document.body.appendChild(t); setTimeout(() => t.remove(), 3500); }

// ---- live: one EventSource; the current page re-renders (throttled) on events it cares about.
let pending = null;
function refreshSoon() { if (pending) return; pending = setTimeout(() => { pending = null; route(true); }, 700); }
function connectEvents() {
  if (state.es || typeof EventSource === "undefined") return;
  const es = new EventSource("api/v1/events");
  state.es = es;
  es.onopen = () => { $("#live").className = "live on"; };
  es.onerror = () => { $("#live").className = "live off"; };
  const onEvent = (e) => {
    const page = location.hash.split("/")[1] || "overview";
    let d = {}; try { d = JSON.parse(e.data); } catch (_) {}
    if (page === "tasks" && e.type === "task-sent") { state.newTasks++; const b = $("#newbanner"); if (b) { b.hidden = false; b.textContent = `${state.newTasks} new — show`; } return; }
    if (page === "task" && d.task_id && location.hash.indexOf(d.task_id) < 0) return;
    refreshSoon();
  };
  for (const t of ["task-sent","task-received","task-started","task-succeeded","task-failed","task-retried","task-revoked","task-rejected","worker-online","worker-offline","control-issued","resync","lagged"]) es.addEventListener(t, onEvent);
}

// ---- pages
const pages = {
  async overview() {
    const [o, c] = await Promise.all([api("api/v1/overview"), api(`api/v1/charts?range=${state.chartRange}`)]);
    const k = o.counts || {};
    const card = (n, l) => `<div class="card"><div class="n">${fmt(n)}</div><div class="l">${l}</div></div>`;
    return `<h1>Overview</h1>
    <div class="cards">
      ${card(o.workers.online, "workers online")}${card(o.workers.offline, "offline")}
      ${card(k.pending ?? o.totals.ready, "pending")}${card(k.scheduled ?? o.totals.scheduled, "scheduled")}
      ${card(k.reserved ?? o.totals.reserved, "running / reserved")}${card(k.succeeded ?? o.totals.tasks_done, "succeeded")}
      ${card(k.failed, "failed")}${card(k.retried, "retried")}${card(k.revoked, "revoked")}${card(o.totals.dead, "dead letters")}
    </div>
    <div class="grid2"><div class="panel"><div class="row" style="justify-content:space-between"><h2>Throughput</h2>
      <div class="seg">${["15m","1h","24h"].map((r) => `<button class="${r === state.chartRange ? "on" : ""}" onclick="setRange('${r}')">${r}</button>`).join("")}</div></div>
      ${chart(c)}</div>
      <div class="panel"><h2>Queues</h2>${queueTable(o.queues, true)}</div></div>
      <p class="muted">lovage ${esc(o.version)} · server up ${fmt(o.uptime_s)} s · everything here is read from the broker</p>`;
  },
  async workers() {
    const ws = await api("api/v1/workers");
    return `<h1>Workers</h1><div class="panel">${ws.length ? `<table><tr><th></th><th>Worker</th><th>Queues</th><th>Pool</th><th class="num">Active</th><th class="num">Done</th><th>Heartbeat</th><th>Started</th></tr>
      ${ws.map((w) => `<tr><td><span class="${w.online ? "on-dot" : "off-dot"}">●</span></td><td><a href="#/worker/${encodeURIComponent(w.id)}">${esc(w.id)}</a></td><td>${w.queues.map(esc).join(", ")}</td><td>${esc(w.pool)}</td>
      <td class="num">${fmt(w.active)}</td><td class="num">${fmt(w.tasks_done)}</td><td>${ago(w.heartbeat)}</td><td>${ago(w.started)}</td></tr>`).join("")}</table>` : `<div class="empty">No worker has sent a heartbeat. Start one: <span class="mono">lovage worker</span></div>`}</div>`;
  },
  async worker(id) {
    const enc = encodeURIComponent(id);
    const w = await api(`api/v1/workers/${enc}`);
    // Asked through the worker's mailbox in the broker; a busy or gone worker answers nothing.
    const ask = (what) => w.online ? api(`api/v1/workers/${enc}/inspect/${what}?timeout=2`).then((r) => r.replies[id] ?? null, () => null) : Promise.resolve(null);
    const [t, active, reserved, registered] = await Promise.all([api(`api/v1/tasks?worker=${enc}&limit=20`), ask("active"), ask("reserved"), ask("registered")]);
    const reply = (r, f) => !w.online ? `<div class="empty">Offline: nothing to ask.</div>` : r == null ? `<div class="empty">No answer within 2 s (busy, or gone).</div>` : r.error ? `<div class="err">${esc(r.error)}</div>` : f(r.ok);
    const held = (xs, running) => xs.length ? `<table><tr><th>Task</th><th>Name</th>${running ? `<th class="num">Elapsed</th><th></th>` : ""}</tr>${xs.map((x) => `<tr><td><a class="mono" href="#/task/${x.id}">${x.id.slice(0, 13)}…</a></td><td>${esc(x.name)}</td>
      ${running ? `<td class="num">${ms(Math.round(x.elapsed_s * 1000))}</td><td class="admin-only"><button class="danger" onclick="control('${esc(id)}', 'revoke', { task_id: '${x.id}', terminate: true })">Revoke</button></td>` : ""}</tr>`).join("")}</table>` : `<div class="empty">${running ? "Nothing running." : "Nothing prefetched."}</div>`;
    const names = registered?.ok ?? [];
    const limit = (l) => l ? [l.rate_limit && `rate ${esc(l.rate_limit)}`, l.soft_time_limit_s != null && `soft ${l.soft_time_limit_s} s`, l.time_limit_s != null && `hard ${l.time_limit_s} s`].filter(Boolean).join(", ") || "—" : "—";
    return `<h1>${esc(w.id)} <span class="${w.online ? "on-dot" : "off-dot"}">●</span></h1>
      <div class="grid2"><div>
      <div class="panel"><h2>Active</h2>${reply(active, (xs) => held(xs, true))}</div>
      <div class="panel"><h2>Reserved</h2>${reply(reserved, (xs) => held(xs, false))}</div>
      <div class="panel"><h2>Registered tasks</h2>${reply(registered, (xs) => xs.length ? `<table id="registered"><tr><th>Task</th><th>Limits</th></tr>${xs.map((x) => `<tr><td class="mono">${esc(x.name)}</td><td class="muted">${limit(x.limits)}</td></tr>`).join("")}</table>` : `<div class="empty">No tasks registered.</div>`)}</div>
      </div><div>
      <div class="panel kv"><div>Host</div><div>${esc(w.host)} (pid ${w.pid})</div><div>Pool</div><div>${esc(w.pool)}</div>
      <div>Resources</div><div class="mono">${Object.entries(w.resources || {}).map(([n, u]) => `${esc(n)}=${u}`).join(", ") || "none"}</div>
      <div>Active</div><div>${fmt(w.active)}</div><div>Done</div><div>${fmt(w.tasks_done)}</div><div>Heartbeat</div><div>${ago(w.heartbeat)}</div><div>Started</div><div>${ago(w.started)}</div></div>
      <div class="panel"><h2>Queues</h2><table>${w.queues.map((q) => `<tr><td>${esc(q)}</td><td class="num admin-only">${w.online && w.queues.length > 1 ? `<button onclick="control('${esc(id)}', 'cancel_consumer', { queue: '${esc(q)}' })">Stop consuming</button>` : ""}</td></tr>`).join("")}</table>
        ${w.online ? `<form class="row admin-only" style="margin-top:10px" onsubmit="return workerForm(event, '${esc(id)}', 'add_consumer')"><input name="queue" placeholder="queue" required><button>Add consumer</button></form>` : ""}</div>
      ${w.online ? `<div class="panel admin-only"><h2>Controls</h2>
        <form class="row" onsubmit="return workerForm(event, '${esc(id)}', 'revoke')"><input name="task_id" placeholder="task id" required style="flex:1"><label class="muted"><input type="checkbox" name="terminate" checked> terminate</label><button class="danger">Revoke</button></form>
        <form class="row" style="margin-top:10px" onsubmit="return workerForm(event, '${esc(id)}', 'rate_limit')"><select name="task">${names.map((x) => `<option>${esc(x.name)}</option>`).join("")}</select><input name="rate" placeholder="10/s; empty: none" style="width:150px"><button>Set rate limit</button></form>
        <div class="row" style="margin-top:10px"><span class="muted">Pool ${esc(w.pool)}</span><button id="pool-grow" onclick="control('${esc(id)}', 'pool_grow', { n: 1 })">Pool +1</button><button id="pool-shrink" onclick="control('${esc(id)}', 'pool_shrink', { n: 1 })">Pool −1</button></div>
        <form class="row" style="margin-top:10px" onsubmit="return workerForm(event, '${esc(id)}', 'autoscale')"><input name="max" type="number" min="1" placeholder="max" required style="width:80px"><input name="min" type="number" min="0" placeholder="min" required style="width:80px"><button>Autoscale</button></form>
        <div class="row" style="margin-top:14px"><button class="danger" onclick="shutdownWorker('${esc(id)}')">Shut down (warm)</button></div></div>` : ""}
      </div></div>
      <div class="panel"><h2>Recent tasks on this worker</h2>${taskTable(t.items)}</div>`;
  },
  async tasks() {
    const p = new URLSearchParams(location.hash.split("?")[1] || "");
    const qs = new URLSearchParams(); for (const k of ["state","name","queue","q","cursor"]) if (p.get(k)) qs.set(k, p.get(k));
    qs.set("limit", "50");
    const t = await api(`api/v1/tasks?${qs}`);
    state.newTasks = 0;
    const sel = (s) => `<option ${p.get("state") === s ? "selected" : ""}>${s}</option>`;
    return `<h1>Tasks</h1><div id="newbanner" class="banner" hidden onclick="route()"></div>
      <form class="filters" onsubmit="return filterTasks(event)"><select name="state"><option value="">any state</option>${["PENDING","RECEIVED","STARTED","RETRY","SUCCESS","FAILURE","REVOKED"].map(sel).join("")}</select>
      <input name="name" placeholder="task name" value="${esc(p.get("name"))}"><input name="queue" placeholder="queue" value="${esc(p.get("queue"))}">
      <input name="q" placeholder="search arguments" value="${esc(p.get("q"))}"><button class="primary">Filter</button></form>
      <div class="panel">${taskTable(t.items, true)}</div>
      <div class="row">${p.get("cursor") ? `<a class="btn" href="#/tasks">⟵ newest</a>` : ""}${t.next_cursor ? `<a class="btn" href="#/tasks?${withParam(p, "cursor", t.next_cursor)}">older ⟶</a>` : ""}
      <span class="admin-only" style="margin-left:auto"><button onclick="bulk('revoke')">Revoke selected</button> <button onclick="bulk('retry')">Retry selected</button> <button class="danger" id="bulk-delete" onclick="bulkDelete()">Delete selected</button></span></div>`;
  },
  async task(id) {
    const t = await api(`api/v1/tasks/${id}`);
    const out = t.error ? `<pre class="err">${esc(t.error.kind)}: ${esc(t.error.message)}${(t.error.causes || []).map((c) => "\n  caused by: " + esc(c)).join("")}</pre>` : t.finished ? `<pre>${esc(JSON.stringify(t.result, null, 2))}</pre>` : `<p class="muted">Not finished yet; this page follows it live.</p>`;
    return `<h1>${esc(t.name || "task")} <span id="task-state">${badge(t.state)}</span></h1>
      <div class="row admin-only" style="margin-bottom:12px">${!t.finished ? `<button class="danger" id="revoke" onclick="act('revoke','${t.id}')">Revoke</button>` : ""}${t.dead_letter ? `<button id="retry" onclick="act('retry','${t.id}')">Retry</button>` : ""}</div>
      <div class="grid2"><div class="panel"><h2>Result</h2>${out}<h2 style="margin-top:14px">Arguments</h2><pre>${esc(JSON.stringify(t.args ?? null))}</pre></div>
      <div class="panel kv"><div>Id</div><div class="mono">${esc(t.id)}</div><div>Queue</div><div>${esc(t.queue ?? "—")}</div><div>Worker</div><div>${t.worker ? `<a href="#/worker/${encodeURIComponent(t.worker)}">${esc(t.worker)}</a>` : "—"}</div>
      <div>Attempts</div><div>${t.attempts}</div><div>Sent</div><div>${esc(t.sent ?? "—")}</div><div>Started</div><div>${esc(t.started ?? "—")}</div><div>Updated</div><div>${esc(t.updated ?? "—")}</div><div>Runtime</div><div>${ms(t.runtime_ms)}</div></div></div>
      ${t.workflow ? `<div class="panel"><h2>Workflow</h2><ul class="timeline">${t.workflow.map((w) => `<li><a class="mono" href="#/task/${w}">${w}</a></li>`).join("")}</ul></div>` : ""}`;
  },
  async queues() {
    const qs = await api("api/v1/queues");
    return `<h1>Queues</h1><div class="panel">${queueTable(qs, false)}</div><div id="peek"></div>`;
  },
  async dead() {
    const p = new URLSearchParams(location.hash.split("?")[1] || ""); const by = p.get("by") || "task";
    const [g, d] = await Promise.all([api(`api/v1/dead?group_by=${by}`), api("api/v1/dead?limit=50")]);
    return `<h1>Dead letters <span class="muted">(${fmt(g.total)})</span></h1>
      <div class="seg" style="margin-bottom:12px"><button class="${by === "task" ? "on" : ""}" onclick="location.hash='#/dead?by=task'">by task</button><button class="${by === "error" ? "on" : ""}" onclick="location.hash='#/dead?by=error'">by error</button></div>
      <div class="panel">${g.groups.length ? `<table><tr><th>${by === "task" ? "Task" : "Error"}</th><th class="num">Count</th><th>Latest</th><th>Example</th><th></th></tr>
      ${g.groups.map((x) => `<tr><td>${esc(x.key)}</td><td class="num">${fmt(x.count)}</td><td>${ago(x.latest)}</td><td class="muted">${esc(x.example)}</td>
      <td class="admin-only"><div class="row"><button onclick="retryGroup('${by}', '${esc(x.key)}')">Retry group</button><button class="danger" onclick="discardDead(${by === "task" ? "'task'" : "'error'"}, '${esc(x.key)}')">Discard group</button></div></td></tr>`).join("")}</table>` : `<div class="empty">No dead letters.</div>`}</div>
      <div class="panel"><h2>Newest</h2>${d.items.length ? `<table><tr><th>Task</th><th>Name</th><th>Queue</th><th>Error</th><th>Args</th><th>When</th><th></th></tr>
      ${d.items.map((x) => `<tr><td><a class="mono" href="#/task/${x.id}">${x.id.slice(0, 13)}…</a></td><td>${esc(x.name)}</td><td>${esc(x.queue)}</td><td class="err">${esc(x.error.kind)}: ${esc(x.error.message)}</td>
      <td class="mono">${esc(x.args_preview)}</td><td>${ago(x.at)}</td><td class="admin-only"><div class="row"><button onclick="act('retry','${x.id}')">Retry</button><button class="danger" onclick="discardDead('ids', '${x.id}')">Discard</button></div></td></tr>`).join("")}</table>` : `<div class="empty">Nothing here.</div>`}</div>`;
  },
  async types() {
    const ts = await api("api/v1/task-types");
    const secs = (v) => v == null ? "—" : v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(2)} s`;
    const limits = (t) => { const ls = Object.values(t.limits || {}); if (!ls.length) return "—"; const l = ls[0];
      return [l.rate_limit && `rate ${esc(l.rate_limit)}`, l.soft_time_limit_s != null && `soft ${l.soft_time_limit_s} s`, l.time_limit_s != null && `hard ${l.time_limit_s} s`].filter(Boolean).join(", ") || "—"; };
    const n = (t, k) => { const v = t.counts[k] || 0; return `<td class="num${!v ? " muted" : k === "failed" ? " err" : ""}">${fmt(v)}</td>`; };
    return `<h1>Task types</h1><div class="panel">${ts.length ? `<table id="task-types"><tr><th>Task</th><th class="num">Workers</th><th>Limits</th><th class="num">Succeeded</th><th class="num">Failed</th><th class="num">Retried</th><th class="num">Revoked</th><th class="num">p50</th><th class="num">p95</th><th class="admin-only">Set limits</th></tr>
      ${ts.map((t) => `<tr><td class="mono">${esc(t.name)}</td><td class="num">${t.workers.length ? fmt(t.workers.length) : `<span class="muted">none live</span>`}</td><td class="muted">${limits(t)}</td>
      ${n(t, "succeeded")}${n(t, "failed")}${n(t, "retried")}${n(t, "revoked")}<td class="num">${secs(t.runtime_p50_s)}</td><td class="num">${secs(t.runtime_p95_s)}</td>
      <td class="admin-only">${t.workers.length ? `<div class="row"><form class="row" onsubmit="return typeLimit(event, '${esc(t.name)}', 'rate-limit')"><input name="rate" placeholder="10/s" style="width:70px"><button>Rate</button></form>
        <form class="row" onsubmit="return typeLimit(event, '${esc(t.name)}', 'time-limit')"><input name="soft_s" type="number" min="0" step="any" placeholder="soft" title="soft limit, seconds" style="width:70px"><input name="hard_s" type="number" min="0" step="any" placeholder="hard" title="hard limit, seconds" style="width:70px"><button>Time</button></form></div>` : ""}</td></tr>`).join("")}</table>
      <p class="muted">Counts and run times are from the events seen since the server started; p50 and p95 are estimated from histogram buckets.</p>` : `<div class="empty">No live worker reports its tasks yet.</div>`}</div>`;
  },
  async submit() {
    return `<h1>Submit a task</h1><div class="panel" style="max-width:640px"><form class="stack" id="submit" onsubmit="return submitTask(event)">
      <label>Task name</label><input name="name" id="f-name" value="lovage.sleep" required>
      <label>Arguments (JSON array)</label><textarea name="args" id="f-args">[1]</textarea>
      <div class="row"><div style="flex:1"><label>Queue</label><input name="queue" placeholder="default"></div><div style="flex:1"><label>Priority 0-9</label><input name="priority" type="number" min="0" max="9"></div>
      <div style="flex:1"><label>Countdown (s)</label><input name="countdown" type="number" min="0" step="any"></div><div style="flex:1"><label>Retries</label><input name="retries" type="number" min="0"></div></div>
      <p><button class="primary" id="f-send">Send</button> <span id="f-err" class="err"></span></p></form></div>`;
  },
  async schedule() {
    const ss = await api("api/v1/schedule");
    if (!ss.length) return `<h1>Schedule</h1><div class="panel"><div class="empty">No beat has published a schedule to this broker.<br>
      Start one: <span class="mono">lovage beat --schedule beat.toml</span></div></div>`;
    return `<h1>Schedule</h1>${ss.map((s) => `<div class="panel schedule">
      <div class="row" style="justify-content:space-between;margin-bottom:8px"><h2 style="margin:0">${fmt(s.entries.length + s.more)} periodic task${s.entries.length + s.more === 1 ? "" : "s"}</h2>
      <span class="muted">${s.stale ? `<span class="badge s-FAILURE">stale</span> no beat has refreshed it since ${ago(s.published)}` : `led by <span class="mono">${esc(s.leader)}</span> · refreshed <span data-ago="${esc(s.published)}">${ago(s.published)}</span>`}</span></div>
      <table><tr><th>Entry</th><th>Task</th><th>Queue</th><th>When</th><th>Next run</th><th>Last sent</th></tr>
      ${s.entries.map((e) => `<tr><td>${esc(e.name)}</td><td class="mono">${esc(e.task)}</td><td>${esc(e.queue)}</td><td class="mono">${esc(e.schedule)}</td>
      <td>${e.next_run ? `<span class="next" data-until="${esc(e.next_run)}" title="${esc(e.next_run)}">${until(e.next_run)}</span>` : `<span class="muted">never</span>`}</td>
      <td>${e.last_run ? `<span data-ago="${esc(e.last_run)}" title="${esc(e.last_run)}">${ago(e.last_run)}</span>` : `<span class="muted">—</span>`}</td></tr>`).join("")}</table>
      ${s.more ? `<p class="muted">and ${fmt(s.more)} more not listed</p>` : ""}</div>`).join("")}`;
  },
};

function withParam(p, k, v) { const q = new URLSearchParams(p); q.set(k, v); return q.toString(); }
function taskTable(items, checks) {
  if (!items.length) return `<div class="empty">No tasks match.</div>`;
  return `<table><tr>${checks ? `<th class="admin-only"></th>` : ""}<th>State</th><th>Task</th><th>Name</th><th>Queue</th><th>Worker</th><th>Args</th><th>Sent</th><th class="num">Runtime</th><th class="num">Retries</th></tr>
  ${items.map((t) => `<tr>${checks ? `<td class="admin-only"><input type="checkbox" class="pick" value="${t.id}"></td>` : ""}<td>${badge(t.state)}</td><td><a class="mono" href="#/task/${t.id}">${t.id.slice(0, 13)}…</a></td><td>${esc(t.name)}</td>
  <td>${esc(t.queue ?? "")}</td><td class="muted">${esc(t.worker ?? "")}</td><td class="mono">${esc(t.args_preview ?? "")}</td><td>${ago(t.sent)}</td><td class="num">${ms(t.runtime_ms)}</td><td class="num">${t.retries}</td></tr>`).join("")}</table>`;
}
function queueTable(qs, brief) {
  if (!qs.length) return `<div class="empty">No queue holds a task.</div>`;
  return `<table><tr><th>Queue</th><th class="num">Ready</th><th class="num">Scheduled</th><th class="num">Reserved</th><th class="num">Dead</th>${brief ? "" : `<th class="num">Oldest ready</th><th></th>`}</tr>
  ${qs.map((q) => `<tr><td>${esc(q.name)} ${q.paused ? `<span class="badge s-RETRY">paused</span>` : ""}</td><td class="num">${fmt(q.ready)}</td><td class="num">${fmt(q.scheduled)}</td><td class="num">${fmt(q.reserved)}</td><td class="num">${fmt(q.dead)}</td>
  ${brief ? "" : `<td class="num">${q.oldest_ready_age_s ? q.oldest_ready_age_s.toFixed(1) + " s" : "—"}</td><td class="row"><button onclick="peek('${esc(q.name)}')">Peek</button>
  <span class="admin-only"><button onclick="queueAct('${esc(q.name)}','${q.paused ? "resume" : "pause"}')">${q.paused ? "Resume" : "Pause"}</button> <button class="danger" onclick="queueAct('${esc(q.name)}','purge')">Purge</button></span></td>`}</tr>`).join("")}</table>`;
}
function chart(c) {
  const pts = c.points; const W = 800, H = 150, pad = 22;
  if (!pts.length) return `<div class="empty">Collecting… a point every ${c.step_s} s.</div>`;
  const max = Math.max(1, ...pts.map((p) => p.succeeded + p.failed)); const bw = (W - pad) / 180;
  const bars = pts.map((p, i) => { const x = pad + (180 - pts.length + i) * bw; const hs = (p.succeeded / max) * (H - 20), hf = (p.failed / max) * (H - 20);
    return `<rect class="bar-s" x="${x}" y="${H - hs}" width="${Math.max(1, bw - 1)}" height="${hs}"><title>${new Date(p.t).toLocaleTimeString()}: ${p.succeeded} ok, ${p.failed} failed</title></rect>
    <rect class="bar-f" x="${x}" y="${H - hs - hf}" width="${Math.max(1, bw - 1)}" height="${hf}"></rect>`; }).join("");
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none"><text x="0" y="10">${fmt(max)}</text><text x="0" y="${H}">0</text>${bars}</svg>
    <div class="muted">tasks finished per ${c.step_s} s · <span style="color:var(--accent)">■</span> succeeded <span style="color:var(--red)">■</span> failed</div>`;
}

// ---- actions
window.setRange = (r) => { state.chartRange = r; route(); };
window.filterTasks = (e) => { e.preventDefault(); const f = new FormData(e.target); const q = new URLSearchParams();
  for (const [k, v] of f) if (v) q.set(k, v); location.hash = `#/tasks?${q}`; return false; };
window.act = async (what, id) => { try { const r = await post(`api/v1/tasks/${id}/${what}`, what === "revoke" ? { terminate: true } : {});
  if (what === "retry") { location.hash = `#/task/${r.task_id}`; toast("Sent again as a new task"); } else { toast(`Revoked (${r.found})`); route(); } } catch (e) { handle(e); } };
window.bulk = async (what) => { const ids = [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
  if (!ids.length) return toast("Select tasks first");
  let done = 0; for (const id of ids) { try { await post(`api/v1/tasks/${id}/${what}`, {}); done++; } catch (_) {} }
  toast(`${what}: ${done} of ${ids.length}`); route(); };
window.bulkDelete = async () => { const ids = [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
  if (!ids.length) return toast("Select tasks first");
  if (!confirm(`Delete ${ids.length} task${ids.length === 1 ? "" : "s"}? Waiting ones leave their queue and finished ones lose their results; running ones are left alone.`)) return;
  try { const r = await post("api/v1/tasks/bulk", { action: "delete", filter: { ids } });
    toast(`Deleted ${r.done} of ${r.matched}${r.done < r.matched ? " (running tasks stay)" : ""}`); route(); } catch (e) { handle(e); } };
window.typeLimit = async (e, name, what) => { e.preventDefault(); const f = new FormData(e.target);
  const num = (k) => f.get(k) === "" ? null : Number(f.get(k));
  const body = what === "rate-limit" ? { rate: f.get("rate").trim() || null } : { soft_s: num("soft_s"), hard_s: num("hard_s") };
  try { const r = await post(`api/v1/task-types/${encodeURIComponent(name)}/${what}`, body);
    const bad = Object.entries(r.replies).filter(([, v]) => v.error);
    toast(bad.length ? `${name}: ${bad[0][1].error}` : `${name}: ${what.replace("-", " ")} set on ${Object.keys(r.replies).length} worker(s)${r.missing.length ? `, ${r.missing.length} did not answer` : ""}`, bad.length > 0);
    route(); } catch (err) { handle(err); }
  return false; };
window.retryGroup = async (by, key) => { try { const r = await post("api/v1/dead/retry", { filter: by === "task" ? { task: key } : { error: key } });
  toast(`Retried ${r.done} of ${r.matched}`); route(); } catch (e) { handle(e); } };
window.discardDead = async (by, key) => { const what = by === "ids" ? "this dead letter" : `every dead letter of ${by} ${key}`;
  if (!confirm(`Discard ${what}? The tasks' results stay; they can no longer be retried from here.`)) return;
  try { const r = await post("api/v1/dead/discard", { filter: by === "ids" ? { ids: [key] } : { [by]: key } });
    toast(`Discarded ${r.done} dead letter${r.done === 1 ? "" : "s"}`); route(); } catch (e) { handle(e); } };
window.control = async (id, command, args) => { try { const r = await post(`api/v1/workers/${encodeURIComponent(id)}/control`, { command, args, timeout: 2 });
    const rep = r.replies[id];
    if (rep === undefined) toast(`${command}: no answer within 2 s`, true); else if (rep.error) toast(`${command}: ${rep.error}`, true);
    else toast(`${command}: ${typeof rep.ok === "string" ? rep.ok : "done"}`);
    route(); } catch (e) { handle(e); } };
window.workerForm = (e, id, command) => { e.preventDefault(); const f = new FormData(e.target);
  const args = command === "revoke" ? { task_id: f.get("task_id").trim(), terminate: f.get("terminate") === "on" }
    : command === "rate_limit" ? { task: f.get("task"), rate: f.get("rate").trim() || null }
    : command === "autoscale" ? { max: Number(f.get("max")), min: Number(f.get("min")) } : { queue: f.get("queue").trim() };
  control(id, command, args); return false; };
window.shutdownWorker = (id) => { if (confirm(`Shut ${id} down? It finishes what it runs and stops.`)) control(id, "shutdown", {}); };
window.queueAct = async (q, what) => { if (what === "purge" && !confirm(`Remove every waiting task of ${q}?`)) return;
  try { await post(`api/v1/queues/${encodeURIComponent(q)}/${what}`, {}); toast(`${q}: ${what} done`); route(); } catch (e) { handle(e); } };
window.peek = async (q) => { try { const xs = await api(`api/v1/queues/${encodeURIComponent(q)}/peek?limit=20`);
  $("#peek").innerHTML = `<div class="panel"><h2>Next in ${esc(q)}</h2>${xs.length ? `<table><tr><th>Task</th><th>Name</th><th class="num">Priority</th><th>ETA</th><th>Args</th></tr>${xs.map((x) => `<tr><td><a class="mono" href="#/task/${x.id}">${x.id.slice(0, 13)}…</a></td><td>${esc(x.name)}</td><td class="num">${x.priority}</td><td>${esc(x.eta ?? "—")}</td><td class="mono">${esc(x.args_preview)}</td></tr>`).join("")}</table>` : `<div class="empty">Nothing waiting.</div>`}</div>`; } catch (e) { handle(e); } };
window.submitTask = async (e) => { e.preventDefault(); const f = new FormData(e.target); $("#f-err").textContent = "";
  try { const body = { name: f.get("name").trim(), args: JSON.parse(f.get("args") || "[]") };
    if (f.get("queue")) body.queue = f.get("queue"); for (const k of ["priority", "countdown", "retries"]) if (f.get(k) !== "") body[k] = Number(f.get(k));
    const r = await post("api/v1/tasks", body); location.hash = `#/task/${r.task_id}`; } catch (err) { $("#f-err").textContent = err instanceof SyntaxError ? `Arguments: ${err.message}` : err.message; }
  return false; };

function handle(e) { if (e instanceof Unauthorized) return showLogin(); toast(e.message, true); }
function showLogin() {
  $("#main").innerHTML = `<div class="login panel"><h1>Log in</h1><p class="muted">Paste a token from the server's token file.</p>
    <form class="stack" id="login" onsubmit="return login(event)"><label>Token</label><input type="password" name="token" id="token" autocomplete="current-password" required>
    <p><button class="primary" id="login-btn">Log in</button> <span id="login-err" class="err"></span></p></form></div>`;
}
window.login = async (e) => { e.preventDefault();
  try { const r = await fetch("login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: $("#token").value }) });
    if (!r.ok) { $("#login-err").textContent = "That token is not valid."; return false; } await loadMe(); connectEvents(); route(); } catch (err) { $("#login-err").textContent = err.message; }
  return false; };

async function loadMe() { const s = await api("session"); if (!s.authenticated) throw new Unauthorized(); state.me = s; document.body.classList.toggle("read-only", state.me.scope !== "admin"); $("#who").textContent = `${state.me.name} · ${state.me.scope}`; }

let rendering = false;
async function route(quiet) {
  if (rendering && quiet) return; rendering = true;
  const [page, arg] = (location.hash.replace(/^#\//, "").split("?")[0] || "overview").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.getAttribute("href") === `#/${page}` || (page === "task" && a.getAttribute("href") === "#/tasks") || (page === "worker" && a.getAttribute("href") === "#/workers"));
  const render = pages[page] || pages.overview;
  try { if (!state.me) await loadMe(); const html = await render(arg && decodeURIComponent(arg)); $("#main").innerHTML = html; connectEvents(); }
  catch (e) { if (e instanceof Unauthorized) showLogin(); else if (!quiet) $("#main").innerHTML = `<div class="panel err">${esc(e.message)}</div>`; }
  finally { rendering = false; }
}

const saved = localStorage.getItem("lovage-theme"); if (saved) document.documentElement.dataset.theme = saved;
$("#theme").onclick = () => { const t = document.documentElement.dataset.theme === "dark" ? "light" : "dark"; document.documentElement.dataset.theme = t; localStorage.setItem("lovage-theme", t); };
window.addEventListener("hashchange", () => route());
// The stream drives updates; a slow refresh covers workers that publish no events.
setInterval(() => { if (!document.hidden && !$("#login")) route(true); }, 5000);
// Relative times tick between refreshes.
setInterval(() => { for (const el of document.querySelectorAll("[data-until]")) el.textContent = until(el.dataset.until);
  for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(el.dataset.ago); }, 1000);
route();
