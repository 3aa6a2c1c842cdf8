// The btfs status page: polls /api/status every second, the backups when they change;
// search, versions, downloads and a backup's tree on demand. The token comes from the
// page's own address (?token=, as `btfs web-url` prints it) and goes out in a header;
// download links carry it in their query (a browser follows links without headers).
// Names from the catalog are only ever set as text, never as HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, cache: "no-store", headers: { "X-Btfs-Token": token },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function when(seconds) {
  if (!seconds) return "–";
  return new Date(seconds * 1000).toLocaleString();
}

function duration(s) {
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function say(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

const STATE_WORDS = { watching: "Watching", "backing up": "Backing up", paused: "Paused",
  retrying: "Retrying", stopping: "Stopping", stopped: "Stopped" };

function showState(state) {
  const s = $("state");
  s.textContent = STATE_WORDS[state] || state;
  s.className = "state " + state.replace(" ", "-");
  $("pause").hidden = state === "paused";
  $("resume").hidden = state !== "paused";
}

let lastBackupSeen = undefined;
let tracked = [];  // a backup's tree opens at the first tracked directory

function showStatus(s) {
  showState(s.state);
  tracked = s.tracked;
  const last = s.last_backup;
  const v = s.vault || {};
  const rows = [
    ["last backup", last ? `${when(last.time)} — ${last.result}, ${last.files} files, ${bytes(last.bytes_added)} added` : "none yet"],
    ["next backup", s.next_backup ? when(s.next_backup) : (s.pending_paths ? "when paused ends" : "when something changes")],
    ["next full scan", when(s.next_full_scan)],
    ["pending changes", `${s.pending_paths}${s.full_scan_pending ? " (full scan due)" : ""}`],
    ["stored since start", `${s.totals.files_stored} files, ${bytes(s.totals.bytes_added)} in ${s.totals.backups} backups`],
    ["failures", `${s.totals.failures}${s.last_error ? " — last: " + s.last_error.message : ""}`],
    ["upload rate", s.upload_rate ? `${bytes(s.upload_rate)}/s (last backup)` : "–"],
    ["vault", `${bytes(v.vault_bytes)} in ${v.packs} packs, ${v.backups} backups`],
    ["dedup ratio", v.dedup_ratio ? `${v.dedup_ratio}× (compression ${v.compression_ratio}×)` : "–"],
    ["watching", `${s.watched_directories} directories in ${s.tracked.join(", ")}`],
    ["uptime", duration(s.uptime_s)],
  ];
  const dl = $("figures");
  dl.replaceChildren(...rows.flatMap(([k, val]) => [el("dt", k), el("dd", val)]));
  $("failures").textContent = s.failures.length ? s.failures.join("\n") : "none";
  const key = JSON.stringify(last);
  if (key !== lastBackupSeen) {
    lastBackupSeen = key;
    loadBackups();
  }
}

async function poll() {
  try {
    showStatus(await api("/api/status"));
    say("");
  } catch (e) {
    showState("stopped");
    say(`no answer from btfs watch: ${e.message}`);
  }
}

async function act(action) {
  try {
    const answer = await api(`/api/${action}`, { method: "POST" });
    showState(answer.state);
  } catch (e) {
    say(`${action} failed: ${e.message}`);
  }
}

async function loadBackups() {
  const rows = await api("/api/backups");
  const body = $("backups").querySelector("tbody");
  body.replaceChildren(...rows.map((b) => {
    const tr = el("tr", null, { class: "clickable", title: "browse this backup" });
    tr.append(el("td", b.name), el("td", b.state), el("td", b.changed_files, { class: "num" }),
      el("td", b.deleted_files, { class: "num" }), el("td", bytes(b.bytes_added), { class: "num" }));
    tr.addEventListener("click", () => browse(b, tracked[0] || "/").catch((e) => say(e.message)));
    return tr;
  }));
}

function downloadLink(version, label) {
  return el("a", label, {
    href: `/api/download?version=${version}&token=${encodeURIComponent(token)}`,
    download: "", class: "download",
  });
}

function versionTable(versions) {
  const table = el("table");
  table.append(...versions.map((v) => {
    const tr = el("tr");
    const link = v.type === "file" ? downloadLink(v.version, "download") : el("span", "");
    tr.append(el("td", when(v.time)), el("td", v.deleted ? "deleted" : v.type),
      el("td", v.deleted ? "" : bytes(v.size), { class: "num" }),
      el("td", v.digest ? v.digest.slice(0, 12) : "", { class: "digest", title: v.digest || "" }),
      el("td"));
    tr.lastChild.append(link);
    return tr;
  }));
  return table;
}

async function search(event) {
  event.preventDefault();
  const q = $("search").value.trim();
  const out = $("results");
  if (!q) { out.replaceChildren(); return; }
  out.replaceChildren(el("p", "searching…"));
  try {
    const answer = await api(`/api/search?q=${encodeURIComponent(q)}`);
    const hits = answer.hits.map((h) => {
      const div = el("div", null, { class: "hit" });
      div.append(el("span", h.path, { class: "path" }));
      if (h.deleted) div.append(el("span", "deleted", { class: "gone" }));
      div.append(versionTable(h.versions));
      return div;
    });
    const n = answer.hits.length;
    const summary = el("p", `${n}${answer.truncated ? "+" : ""} ${n === 1 ? "path" : "paths"}`);
    out.replaceChildren(summary, ...hits);
  } catch (e) {
    out.replaceChildren(el("p", `search failed: ${e.message}`));
  }
}

async function browse(backup, path) {
  const answer = await api(`/api/tree?backup=${backup.id}&path=${encodeURIComponent(path)}`);
  $("tree-section").hidden = false;
  $("tree-title").textContent = `Backup ${backup.name}: ${answer.path}`;
  const body = $("tree").querySelector("tbody");
  const rows = [];
  if (answer.path !== "/") {
    const up = el("tr", null, { class: "clickable" });
    up.append(el("td", ".."), el("td"), el("td"), el("td"));
    up.addEventListener("click", () => browse(backup, answer.path.replace(/\/[^/]*$/, "") || "/"));
    rows.push(up);
  }
  for (const e of answer.entries) {
    const tr = el("tr");
    const child = (answer.path === "/" ? "" : answer.path) + "/" + e.name;
    tr.append(el("td", e.type === "dir" ? e.name + "/" : e.name),
      el("td", e.type === "file" ? bytes(e.size) : "", { class: "num" }),
      el("td", when(e.mtime)), el("td"));
    if (e.type === "dir") {
      tr.className = "clickable";
      tr.addEventListener("click", () => browse(backup, child));
    } else if (e.type === "file") {
      tr.lastChild.append(downloadLink(e.version, "download"));
    }
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("tree-section").scrollIntoView();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  $("search-form").addEventListener("submit", search);
  poll();
  setInterval(poll, 1000);
});
