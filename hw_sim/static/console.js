// The rehearsal's console: draws /api/events (state 4 a second, each journal record, each fault, each
// coil the I/O module sees move) and sends every button to the same HTTP API scripts use.
"use strict";

const $ = (id) => document.getElementById(id);
const COIL_NAMES = {
  "#000000": "off", "#FF0000": "red", "#00FF00": "green", "#0000FF": "blue",
  "#FFFF00": "yellow", "#00FFFF": "cyan", "#FF00FF": "magenta", "#FFFFFF": "white",
};
const LANE_STATES = { idle: "ready", open: "open", expecting_passage: "waiting for passage", emergency_open: "EMERGENCY OPEN", fault: "FAULT" };

let kinds = null;       // GET /api/kinds: what can be presented, lanes with a camera, category colours, staff pages
let state = null;       // the last `state` event
let faults = [];
const cards = new Map(); // lane id -> its card's elements
const seen = new Map();  // lane id -> highest decision seq drawn

// ---- talking to the API ----

async function post(path, body, button) {
  if (button) button.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { answer = { error: `HTTP ${response.status}` }; }
    if (!response.ok) {
      say(answer.error || `HTTP ${response.status}`, "error");
      return null;
    }
    return answer;
  } catch (e) {
    say(`the rehearsal did not answer (${e.message}): is gated sim still running?`, "error");
    return null;
  } finally {
    if (button) button.removeAttribute("aria-busy");
  }
}

function say(text, kind) {
  const notice = $("notice");
  notice.textContent = `${clockTime(Date.now() / 1000)}  ${text}`;
  notice.dataset.kind = kind || "info";
}

function describeFault(name, answer) {
  const details = Object.entries(answer).filter(([k]) => !["fault", "at"].includes(k))
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(" ") : v}`).join(", ");
  return `${name.replaceAll("_", " ")}${details ? ": " + details : ""}`;
}

async function fault(name, body, button) {
  const answer = await post(`/api/fault/${name}`, body, button);
  if (answer) say(describeFault(name, answer), "ok");
  return answer;
}

// ---- drawing ----

function text(el, value) { if (el.textContent !== value) el.textContent = value; }

function stat(id, value, tone) {
  const el = $(id);
  text(el.querySelector(".v"), value);
  if (tone === undefined) delete el.dataset.state; else el.dataset.state = tone;
}

function clockTime(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function categoryColor(category) {
  if (!kinds || !category) return null;
  return kinds.colors[category] || kinds.colors.default || null;
}

function gateWords(gate) {
  if (!state || !gate || !gate.id) return ["starting…", "starting"];
  if (gate.state === "running") return gate.serving ? [`running (pid ${gate.pid})`, "running"] : ["booting…", "booting"];
  const cut = [...faults].reverse().find((f) => f.fault === "power_cut" || f.fault === "power_restore");
  if (cut && cut.fault === "power_cut" && cut.off_s !== null && cut.off_s !== undefined) {
    const left = Math.max(0, cut.at + cut.off_s - Date.now() / 1000);
    return [left > 0.05 ? `powered off: back in ${left.toFixed(0)} s` : "powered off: booting", "off"];
  }
  return ["powered off", "off"];
}

function drawTop(s) {
  text($("gate-id"), s.gate.id ? `gate ${s.gate.id} · boots ${s.gate.boots} · power cuts ${s.gate.power_cuts}` : "");
  const [words, tone] = gateWords(s.gate);
  stat("st-gate", words, tone);
  const up = s.uplink.connected;
  stat("st-uplink", up === true ? "connected" : up === false ? "DOWN" : "—", up === true ? "up" : up === false ? "down" : undefined);
  const backlog = s.backlog;
  stat("st-backlog", backlog === null || backlog === undefined ? "—" : String(backlog),
       backlog === null || backlog === undefined ? undefined : backlog === 0 ? "good" : "warn");
  stat("st-cache", s.cache_version === null || s.cache_version === undefined ? "—" : `v${s.cache_version} · ${s.cache_tickets}`);
  const offset = s.clock.offset_s;
  const apart = s.clock.set_apart_s || 0;
  const shown = offset === null || offset === undefined ? null : Math.abs(offset) < 0.005 ? 0 : offset;  // never "-0.00"
  let clock = shown === null ? "—" : `${shown >= 0 ? "+" : ""}${shown.toFixed(2)} s`;
  if (apart) clock += ` (set ${apart > 0 ? "+" : ""}${apart} s)`;
  stat("st-clock", clock, offset === null || offset === undefined ? undefined : s.clock.trusted === false ? "bad" : Math.abs(offset) > 5 ? "warn" : "good");
  const io = s.io_module;
  stat("st-io", io ? (io.connected ? "polled" : "NO GATE") : "—", io ? (io.connected ? "good" : "bad") : undefined);
  const emergency = s.gate.emergency || (io && io.emergency_input);
  stat("st-emergency", emergency ? "ACTIVE" : "off", emergency ? "bad" : "good");
  const button = $("emergency");
  button.setAttribute("aria-pressed", io && io.emergency_input ? "true" : "false");
  text(button, io && io.emergency_input ? "Release emergency" : "Press emergency");

  const net = s.network || {};
  const pill = $("net-state");
  text(pill, net.cut ? `cut: ${net.cut}` : "connected");
  pill.className = `pill ${net.cut ? "bad" : "good"}`;
  pill.dataset.cut = net.cut || "";
  text($("net-detail"), `${net.cuts || 0} cut${net.cuts === 1 ? "" : "s"} · ${net.live || 0} live connection${net.live === 1 ? "" : "s"}`);

  const zones = $("zones");
  const rows = Object.entries(s.zones).map(([zone, z]) => {
    const li = document.createElement("li");
    const cap = z.capacity ? ` / ${z.capacity}` : "";
    li.innerHTML = `<div><b></b> <span></span></div><div class="bar"><div class="fill"></div></div>`;
    li.querySelector("b").textContent = zone;
    li.querySelector("span").textContent = `${z.inside}${cap} inside`;
    const fill = li.querySelector(".fill");
    fill.style.width = z.capacity ? `${Math.min(100, (100 * z.inside) / z.capacity)}%` : "0";
    if (z.capacity && z.inside >= z.capacity) fill.classList.add("full");
    return li;
  });
  zones.replaceChildren(...rows);
}

function buildCard(lane) {
  const node = $("lane-card").content.firstElementChild.cloneNode(true);
  node.dataset.lane = lane.id;
  node.id = `lane-${lane.id}`;
  const q = (sel) => node.querySelector(sel);
  const card = {
    node, light: q(".light"), lightName: q(".light-name"), state: q(".lane-state"), counts: q(".counts"),
    relay: q(".io-relay"), buzzer: q(".io-buzzer"), beam: q(".io-beam"), scanner: q(".io-scanner"),
    kind: q(".kind"), via: q(".via"), go: q(".go"), plug: q(".plug"), noise: q(".noise"), tailgate: q(".tailgate"),
    recent: q(".recent"),
  };
  q(".lane-id").textContent = lane.id;
  q(".lane-kind").textContent = `${lane.mode} · ${lane.direction} · ${lane.zone}`;
  card.kind.id = `kind-${lane.id}`;
  card.via.id = `via-${lane.id}`;
  card.go.id = `present-${lane.id}`;
  for (const [kind, description] of Object.entries(kinds ? kinds.present : { valid: "" })) {
    const option = new Option(kind.replaceAll("_", " "), kind);
    option.title = description;
    card.kind.add(option);
  }
  card.via.add(new Option("scanner", "scanner"));
  if (kinds && kinds.cameras.includes(lane.id)) card.via.add(new Option("camera", "camera"));
  card.via.disabled = card.via.options.length < 2;
  q(".present").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { lane: lane.id, kind: card.kind.value, via: card.via.value };
    const answer = await post("/api/present", body, card.go);
    if (!answer) return;
    const who = answer.ticket === null ? "" : ` #${answer.ticket}`;
    if (answer.decided) {
      const relay = answer.relay_ms === null ? "" : `, relay at ${answer.relay_ms} ms`;
      say(`${lane.id}: ${answer.kind} via ${answer.via}${who} → ${answer.reason} (decided in ${answer.latency_ms} ms${relay})`,
          answer.reason === "ok" ? "ok" : "info");
    } else {
      say(`${lane.id}: ${answer.kind}${who}: no decision came (scanner unplugged or the gate without power?)`, "error");
    }
  });
  card.plug.id = `plug-${lane.id}`;
  card.plug.addEventListener("click", () => {
    const unplugged = card.plug.dataset.unplugged === "true";
    fault(unplugged ? "scanner_replug" : "scanner_unplug", { lane: lane.id }, card.plug);
  });
  card.noise.id = `noise-${lane.id}`;
  card.noise.title = "line noise: 5 bursts of garbage on the scanner cable";
  card.noise.addEventListener("click", () => fault("line_noise", { lane: lane.id, bursts: 5 }, card.noise));
  card.tailgate.id = `tailgate-${lane.id}`;
  card.tailgate.title = "one admitted person, two through the beam";
  card.tailgate.hidden = !lane.passage;
  card.tailgate.addEventListener("click", () => fault("tailgate", { lane: lane.id }, card.tailgate));
  card.recent.addEventListener("click", (event) => pickTicket(event.target.closest("li")));
  card.recent.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pickTicket(event.target.closest("li")); }
  });
  return card;
}

function pickTicket(li) {
  if (!li || !li.dataset.ticket) return;
  $("ticket").value = li.dataset.ticket;
  $("ticket").focus();
  say(`ticket ${li.dataset.ticket} picked: Revoke or Reprint it at the registry`, "info");
}

function ioCell(cell, value, on, alarm, na) {
  text(cell.querySelector("dd"), value);
  cell.dataset.on = on ? "true" : "false";
  cell.dataset.alarm = alarm ? "true" : "false";
  cell.dataset.na = na ? "true" : "false";
}

function drawHardware(card, lane) {
  const light = lane.light;
  if (light === null || light === undefined) {
    card.light.dataset.color = "none";
    card.light.dataset.lit = "false";
    card.light.style.backgroundColor = "";
    text(card.lightName, "no light");
  } else {
    card.light.dataset.color = light;
    card.light.dataset.lit = light === "#000000" ? "false" : "true";
    card.light.style.backgroundColor = light === "#000000" ? "" : light;
    card.light.style.setProperty("--glow", `${light}aa`);
    const intended = lane.gate_says && lane.gate_says.light;
    const name = COIL_NAMES[light] || light;
    text(card.lightName, intended && intended !== light && state && state.gate.serving ? `${name} (gate says ${COIL_NAMES[intended] || intended})` : name);
  }
  card.light.setAttribute("aria-label", `lane light ${card.lightName.textContent}`);
  const wired = (v) => v !== null && v !== undefined;
  ioCell(card.relay, !wired(lane.relay_open) ? "none" : lane.relay_open ? "OPEN" : "locked", lane.relay_open === true, false, !wired(lane.relay_open));
  ioCell(card.buzzer, !wired(lane.buzzer) ? "none" : lane.buzzer ? "BEEP" : "quiet", lane.buzzer === true, false, !wired(lane.buzzer));
  ioCell(card.beam, !wired(lane.beam_broken) ? "none" : lane.beam_broken ? "BROKEN" : "clear", lane.beam_broken === true, false, !wired(lane.beam_broken));
  const unplugged = lane.scanner === "unplugged";
  ioCell(card.scanner, unplugged ? "UNPLUGGED" : "plugged", false, unplugged, false);
  card.plug.dataset.unplugged = unplugged ? "true" : "false";
  text(card.plug, unplugged ? "Replug scanner" : "Unplug scanner");
  card.via.disabled = card.via.options.length < 2;
}

function drawRecent(card, lane) {
  const items = [...lane.recent].reverse().slice(0, 8);
  const last = seen.get(lane.id) || 0;
  const top = items.length ? items[0].seq : 0;
  const key = items.map((d) => `${d.seq}:${d.name || ""}`).join(",");
  if (card.recent.dataset.key === key) return;
  card.recent.dataset.key = key;
  card.recent.replaceChildren(...items.map((d) => {
    const li = document.createElement("li");
    const ok = d.reason === "ok";
    li.className = ok ? "ok" : "denied";
    if (d.seq > last && last) li.classList.add("fresh");
    li.dataset.reason = d.reason;
    li.dataset.seq = d.seq;
    if (d.ticket !== null && d.ticket !== undefined) { li.dataset.ticket = d.ticket; li.tabIndex = 0; }
    li.innerHTML = `<span class="mark"></span><span><span class="reason"></span> <span class="tk"></span><span class="who"></span></span><span class="when"></span>`;
    li.querySelector(".mark").textContent = ok ? "✔" : "✘";
    li.querySelector(".reason").textContent = d.reason;
    li.querySelector(".tk").textContent = d.ticket === null || d.ticket === undefined ? "" : `#${d.ticket}`;
    const who = li.querySelector(".who");
    const color = categoryColor(d.category);
    if (d.category) {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      if (color) swatch.style.backgroundColor = color;
      who.append(swatch);
    }
    who.append(document.createTextNode([d.category, d.name].filter(Boolean).join(" · ") || "no ticket read"));
    li.querySelector(".when").textContent = clockTime(d.at);
    return li;
  }));
  seen.set(lane.id, Math.max(last, top));
}

function drawLane(lane) {
  let card = cards.get(lane.id);
  if (!card) {
    card = buildCard(lane);
    cards.set(lane.id, card);
    $("lanes").append(card.node);
  }
  const down = !state.gate.serving;
  card.node.dataset.state = lane.state || "";
  card.node.dataset.down = down ? "true" : "false";
  const words = down ? "gate down" : LANE_STATES[lane.state] || lane.state || "…";
  text(card.state, words);
  card.state.className = `lane-state pill ${down || lane.state === "fault" ? "bad" : lane.state === "emergency_open" ? "warn" : lane.state === "idle" ? "" : "good"}`;
  const c = lane.counters || {};
  const n = (v) => (v === null || v === undefined ? "–" : v);
  card.counts.innerHTML = `<b></b> admitted · <b></b> denied · <b></b> passed`;
  const bold = card.counts.querySelectorAll("b");
  bold[0].textContent = n(c.admitted); bold[1].textContent = n(c.denied); bold[2].textContent = n(c.passages);
  drawHardware(card, lane);
  drawRecent(card, lane);
}

function drawFaults() {
  const list = $("faults");
  const items = faults.slice(-30).reverse();
  list.replaceChildren(...items.map((f) => {
    const li = document.createElement("li");
    li.className = /restore|replug/.test(f.fault) || (f.fault === "emergency" && !f.active) ? "restore" : /cut|unplug|boot_failed|emergency|jump/.test(f.fault) ? "cut" : "";
    li.innerHTML = `<span class="when"></span><span class="what"></span> <span class="detail"></span>`;
    li.querySelector(".when").textContent = clockTime(f.at);
    li.querySelector(".what").textContent = f.fault.replaceAll("_", " ");
    const detail = Object.entries(f).filter(([k]) => !["fault", "at"].includes(k))
      .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(" ") : v}`).join(", ");
    li.querySelector(".detail").textContent = detail;
    return li;
  }));
  list.setAttribute("start", String(items.length));
}

function draw() {
  if (!state) return;
  drawTop(state);
  for (const lane of state.lanes) drawLane(lane);
  drawFaults();
}

// ---- live ----

function applyIo(event) {
  // A coil moved at the module: drawn at once (the next state, within 250 ms, says the same).
  if (!state) return;
  const lane = state.lanes.find((l) => l.id === event.lane);
  if (!lane) return;
  if (event.role === "relay") lane.relay_open = event.on;
  else if (event.role === "buzzer") lane.buzzer = event.on || lane.buzzer;
  else if (["red", "green", "blue"].includes(event.role) && lane.light) {
    const i = ["red", "green", "blue"].indexOf(event.role);
    const parts = [lane.light.slice(1, 3), lane.light.slice(3, 5), lane.light.slice(5, 7)];
    parts[i] = event.on ? "FF" : "00";
    lane.light = `#${parts.join("")}`;
  }
  const card = cards.get(lane.id);
  if (card) drawHardware(card, lane);
}

function applyRecord(record) {
  if (!state || record.kind !== "decision") return;
  const lane = state.lanes.find((l) => l.id === record.lane);
  if (!lane || lane.recent.some((d) => d.seq === record.seq)) return;
  lane.recent.push({ seq: record.seq, at: record.at, reason: record.reason, ticket: record.ticket,
                     category: record.payload && record.payload.category, name: "" });
  const card = cards.get(lane.id);
  if (card) drawRecent(card, lane);
}

function listen() {
  const live = $("live");
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => {
    live.dataset.state = "live";
    live.textContent = "live: the I/O module's coils and inputs as the turnstiles see them; the gate's journal as it writes it";
  });
  events.addEventListener("error", () => {
    live.dataset.state = "lost";
    live.textContent = "the live stream is lost: reconnecting… (is gated sim still running?)";
  });
  events.addEventListener("state", async (e) => {
    const next = JSON.parse(e.data);
    if (next.lanes.length && !(kinds && kinds.lanes.length)) await loadKinds(); // the rehearsal has just started
    state = next;
    faults = state.faults.slice();
    draw();
  });
  events.addEventListener("io", (e) => applyIo(JSON.parse(e.data)));
  events.addEventListener("record", (e) => applyRecord(JSON.parse(e.data)));
  events.addEventListener("fault", (e) => {
    faults.push(JSON.parse(e.data));
    drawFaults();
  });
}

// ---- the side panel's buttons ----

function wire() {
  for (const button of document.querySelectorAll("button[data-fault]")) {
    button.addEventListener("click", () => fault(button.dataset.fault, button.dataset.mode ? { mode: button.dataset.mode } : {}, button));
  }
  $("power-cut").addEventListener("click", () => {
    const raw = $("off-s").value.trim();
    const off = raw === "" ? null : Number(raw);
    if (off !== null && !(off >= 0 && off <= 3600)) { say("the off time must be between 0 and 3600 seconds (empty: stays off)", "error"); return; }
    fault("power_cut", { off_s: off }, $("power-cut"));
  });
  $("clock-jump").addEventListener("click", () => {
    const offset = Number($("clock-offset").value);
    if (!Number.isFinite(offset)) { say("the clock offset must be a number of seconds", "error"); return; }
    say(`restarting the gate with its clock ${offset >= 0 ? "+" : ""}${offset} s apart…`, "info");
    fault("clock_jump", { offset_s: offset }, $("clock-jump"));
  });
  $("emergency").addEventListener("click", () => {
    const active = $("emergency").getAttribute("aria-pressed") !== "true";
    fault("emergency", { active }, $("emergency"));
  });
  for (const button of document.querySelectorAll("button[data-registry]")) {
    button.addEventListener("click", async () => {
      const ticket = $("ticket").value.trim();
      if (!/^\d{1,20}$/.test(ticket)) { say("type a ticket number (or click a decision to pick its ticket)", "error"); $("ticket").focus(); return; }
      const answer = await post(`/api/registry/${button.dataset.registry}`, { ticket }, button);
      if (answer) say(describeFault(button.dataset.registry, answer), "ok");
    });
  }
}

let loadingKinds = null;

function loadKinds() {
  loadingKinds = loadingKinds || (async () => {
    try {
      const response = await fetch("/api/kinds");
      kinds = await response.json();
    } catch (e) {
      say("cannot read /api/kinds: is gated sim running?", "error");
    }
    if (kinds && kinds.staff_pages) {
      $("link-dashboard").href = kinds.staff_pages.dashboard;
      $("link-desk").href = kinds.staff_pages.desk;
      $("link-dashboard").hidden = $("link-desk").hidden = $("link-account").hidden = false;
      $("link-account").textContent = `sign in as ${kinds.staff_pages.account} (password printed by gated sim)`;
    }
    loadingKinds = null;
  })();
  return loadingKinds;
}

async function start() {
  wire();
  await loadKinds();
  listen();
  setInterval(() => { if (state && !state.gate.serving) drawTop(state); }, 500); // the power-back countdown
}

document.addEventListener("DOMContentLoaded", start);
