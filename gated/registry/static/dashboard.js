// The live dashboard: one JSON picture from /dashboard/events (server-sent) every few seconds,
// drawn by Chart.js (vendored). The charts are kept and updated in place; window.gatedCharts
// exposes them (the browser tests read the data the page draws).
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const REASON_WORDS = {
  bad_signature: "forged (bad signature)", code_expired: "expired code (screenshot)", revoked: "revoked",
  superseded_badge: "old badge (reprinted)", unknown_ticket: "unknown ticket", wrong_zone: "wrong zone",
  already_inside: "already inside", entries_exhausted: "entries used up", outside_validity: "outside validity",
  bad_format: "unreadable", unknown_key: "unknown key", code_not_yet_valid: "code not yet valid",
  zone_full: "zone full", no_benefit: "no such benefit", benefit_exhausted: "benefit used up",
  rate_limited: "rate limited", clock_unsynced: "clock unsynced",
};
const charts = {};
window.gatedCharts = charts;

function hourLabel(unix) {
  const d = new Date(unix * 1000);
  return d.toISOString().slice(5, 13).replace("T", " ") + ":00";
}

function when(unix) {
  return unix == null ? "-" : new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function chart(id, type, options) {
  if (!charts[id]) {
    charts[id] = new Chart(document.getElementById(id), {
      type, data: { labels: [], datasets: [] },
      options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, options || {}),
    });
  }
  return charts[id];
}

function drawHourly(rows) {
  const hours = [...new Set(rows.map(r => r.hour))].sort((a, b) => a - b);
  const places = [...new Set(rows.map(r => r.gate + " " + r.lane))].sort();
  const datasets = [];
  places.forEach((place, i) => {
    for (const dir of ["in", "out"]) {
      const byHour = new Map(rows.filter(r => r.gate + " " + r.lane === place).map(r => [r.hour, r[dir]]));
      if (![...byHour.values()].some(n => n > 0)) continue;
      datasets.push({
        label: `${place} ${dir}`, stack: dir, data: hours.map(h => byHour.get(h) || 0),
        backgroundColor: PALETTE[i % PALETTE.length] + (dir === "in" ? "" : "88"),
      });
    }
  });
  const c = chart("hourly", "bar", { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } });
  c.data.labels = hours.map(hourLabel);
  c.data.datasets = datasets;
  c.update();
}

function drawOccupancy(zones) {
  const hours = [...new Set(Object.values(zones).flat().map(p => p[0]))].sort((a, b) => a - b);
  if (hours.length) hours.unshift(hours[0] - 3600);  // the hour before the first check-in: nobody inside
  const c = chart("occupancy", "line", { scales: { y: { beginAtZero: true } } });
  c.data.labels = hours.map(hourLabel);
  c.data.datasets = Object.keys(zones).sort().map((zone, i) => {
    const at = new Map(zones[zone]);
    let last = 0;
    return { label: zone, borderColor: PALETTE[i % PALETTE.length], data: hours.map(h => (last = at.has(h) ? at.get(h) : last)) };
  });
  c.update();
}

function drawCategories(rows, unique) {
  const c = chart("categories", "bar", { indexAxis: "y", scales: { x: { min: 0, max: 100, title: { display: true, text: "% checked in" } } } });
  c.data.labels = rows.map(r => `${r.category} (${r.attended}/${r.registered})`);
  c.data.datasets = [{ label: "attendance %", data: rows.map(r => Math.round(r.rate * 1000) / 10), backgroundColor: "#2ca02c" }];
  c.update();
  document.getElementById("unique").textContent = `${unique} unique attendees checked in`;
}

function drawDenials(denials) {
  const reasons = Object.keys(denials);
  const c = chart("denials", "bar", { indexAxis: "y", plugins: { legend: { display: false } } });
  c.data.labels = reasons.map(r => REASON_WORDS[r] || r);
  c.data.datasets = [{ label: "denials", data: reasons.map(r => denials[r]), backgroundColor: "#d62728" }];
  c.update();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function table(id, header, rows, fill) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const head = t.insertRow();
  for (const h of header) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  for (const r of rows) fill(t.insertRow(), r);
}

function drawConflicts(conflicts) {
  const ul = document.getElementById("conflict-counts");
  ul.replaceChildren(...Object.entries(conflicts.counts).map(([kind, n]) => {
    const li = document.createElement("li");
    li.textContent = `${kind.replace("_", "-")}: ${n}`;
    li.className = n ? "bad" : "";
    return li;
  }));
  table("conflicts", ["kind", "ticket", "first", "then"], conflicts.latest, (row, c) => {
    cell(row, c.kind + (c.benefit ? ` (${c.benefit})` : ""));
    cell(row, c.ticket_id);
    cell(row, c.first_gate ? `${c.first_gate} ${c.first_lane} ${when(c.first_at)}` : (c.first_at ? `revoked ${when(c.first_at)}` : "-"));
    cell(row, `${c.gate} ${c.lane} ${when(c.at)}`);
  });
}

function drawGates(gates, now) {
  table("gates", ["gate", "connected", "acked seq", "journal epochs", "last event (gate clock)", "received", "since"], gates, (row, g) => {
    cell(row, g.gate);
    cell(row, g.connected ? "yes" : "no", g.connected ? "good" : "bad");
    cell(row, g.acked_seq);
    cell(row, g.epochs);
    cell(row, when(g.last_event_at));
    cell(row, when(g.last_received_at));
    cell(row, g.last_received_at == null ? "-" : `${Math.max(0, Math.round(now - g.last_received_at))} s`);
  });
}

function draw(data) {
  drawHourly(data.hourly);
  drawOccupancy(data.occupancy);
  drawCategories(data.categories, data.unique_attendees);
  drawDenials(data.denials);
  drawConflicts(data.conflicts);
  drawGates(data.gates, data.at);
  const live = document.getElementById("live");
  live.textContent = `live · ${when(data.at)} UTC` + (data.version != null ? ` · v${data.version}` : "");
  live.className = "pill good";
  window.gatedDashboard = data;
}

function connect() {
  const source = new EventSource("/dashboard/events");
  source.addEventListener("dashboard", ev => draw(JSON.parse(ev.data)));
  source.onerror = () => {
    const live = document.getElementById("live");
    live.textContent = "reconnecting…";
    live.className = "pill bad";
  };
}

connect();
