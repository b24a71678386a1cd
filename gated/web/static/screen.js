// The operator screen: draws what the gate pushes (server-sent events), posts what the
// operator does. Nothing here decides: every answer comes from the lane's normal path.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let current = null;      // the decision on screen (its view)
  let lookup = null;       // the phone search the matches belong to

  // Render times of decisions, for `gated bench --sections screen` (wall-clock ms).
  window.gatedStamps = [];
  new MutationObserver(() => {
    const d = $("decision");
    window.gatedStamps.push({ shown: +d.dataset.shown, ticket: d.dataset.ticket, reason: d.dataset.reason,
                              t: performance.timeOrigin + performance.now() });
    if (window.gatedStamps.length > 5000) window.gatedStamps.splice(0, 2500);
  }).observe($("decision"), { attributes: true, attributeFilter: ["data-shown"] });

  function notice(text) { $("notice").textContent = text || ""; }

  async function post(path, body, quiet) {   // quiet: a refusal is the caller's to show
    let response;
    try {
      response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify(body), credentials: "same-origin" });
    } catch (e) { notice("The unit does not answer: check it is running."); return null; }
    if (response.status === 401) { location.href = "/signin?next=/"; return null; }
    let answer = {};
    try { answer = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const error = answer.error || ("refused (" + response.status + ")");
      if (quiet) return { error: error };
      notice(error); return null;
    }
    notice("");
    return answer;
  }

  function text(id, value) { $(id).textContent = value == null ? "" : String(value); }

  function drawDecision(v) {
    current = v;
    const head = $("head"), d = $("decision");
    head.style.background = v.color; head.style.color = v.text_color;
    head.dataset.category = v.category || "";
    d.className = "decision " + (v.admitted ? "admitted" : "denied");
    text("words", v.words);
    text("name", v.name || (v.ticket ? "" : ""));
    text("company", v.company ? "· " + v.company : "");
    text("category", v.category || "");
    const known = v.name !== undefined;
    $("ticket").hidden = !known;
    if (known) {
      text("f-ticket", v.ticket);
      text("f-type", v.ticket_type || "—");
      text("f-zones", (v.zones || []).join(", ") || "—");
      text("f-entries", v.entries_used + " / " + (v.max_entries ? v.max_entries : "∞"));
      text("f-inside", v.inside ? "inside" : "not inside");
      drawBenefits(v);
    }
    $("badge").hidden = !(known && v.can_print && v.ticket);
    if ($("printed").dataset.ticket !== (v.ticket || "")) drawPrinted(null);
    d.dataset.ticket = v.ticket || "";
    d.dataset.reason = v.reason;
    d.dataset.shown = v.shown;   // last: the bench's observer stamps this change
  }

  function drawBenefits(v) {
    const list = $("benefits");
    const focused = document.activeElement && document.activeElement.dataset.benefit;
    list.replaceChildren();
    for (const b of v.benefits || []) {
      const li = document.createElement("li");
      li.dataset.benefit = b.name;
      const label = document.createElement("span");
      label.textContent = b.name + ": ";
      const left = document.createElement("span");
      left.className = "left" + (b.remaining ? "" : " none");
      left.textContent = b.remaining ? b.remaining + " left" : "used up";
      label.appendChild(left);
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.benefit = b.name;
      button.textContent = "Redeem " + b.name;
      button.disabled = !b.remaining;
      button.addEventListener("click", () => redeem(v.ticket, b.name));
      li.append(label, button);
      list.appendChild(li);
      if (focused === b.name) (button.disabled ? $("code") : button).focus();
    }
    if (!(v.benefits || []).length) {
      const li = document.createElement("li");
      li.textContent = "none";
      list.appendChild(li);
    }
  }

  function drawUnit(u) {
    text("lane", u.lane + " · " + u.zone + " (" + u.direction + ")");
    const online = $("online");
    online.textContent = u.uplink_configured ? (u.online ? "online" : "OFFLINE") : "no registry";
    online.className = "pill " + (u.online ? "good" : "bad");
    text("backlog", "backlog " + (u.backlog == null ? "?" : u.backlog));
    $("backlog").className = "pill" + (u.backlog > 100 ? " bad" : "");
    let age = "";
    if (u.cache_age_s != null) {
      const s = u.cache_age_s;
      age = s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
    }
    text("cache", (u.cache_stale ? "STALE " : "") + "cache v" + u.cache_version + (age ? " · " + age + " old" : "") + " · " + u.cache_tickets + " tickets");
    $("cache").className = "pill" + (u.cache_stale ? " bad" : "");
    const clock = $("clock");
    clock.textContent = u.clock_trusted ? "clock ok" : "CLOCK NOT TRUSTED";
    clock.className = "pill " + (u.clock_trusted ? "good" : "bad");
    $("fault").hidden = !u.fault;
    text("fault", u.fault ? "FAULT: " + u.fault : "");
  }

  function drawPrinted(p) {   // a print's result ({ticket, ok, words}), or null to clear it
    const out = $("printed");
    out.textContent = p ? p.words : "";
    out.className = "printed" + (p ? (p.ok ? " good" : " bad") : "");
    out.dataset.ticket = p ? p.ticket : "";
    out.dataset.count = p && p.ok ? p.count : 0;
  }

  $("print").addEventListener("click", async () => {
    if (!current || !current.ticket) return;
    const button = $("print");
    button.disabled = true;
    $("printed").textContent = "Printing…";
    const answer = await post("/api/print", { ticket: current.ticket }, true);
    button.disabled = false;
    if (answer) drawPrinted(answer.error ? { ticket: current.ticket, ok: false, words: answer.error } : answer);
    button.focus();
  });

  async function redeem(ticket, benefit) {
    await post("/api/redeem", { ticket: ticket, benefit: benefit });
  }

  $("scan").addEventListener("submit", async (e) => {
    e.preventDefault();
    const code = $("code").value;
    $("code").value = "";
    if (code.trim()) await post("/api/scan", { code: code });
    $("code").focus();
  });

  $("manual").addEventListener("submit", async (e) => {
    e.preventDefault();
    const answer = await post("/api/manual", { ticket: $("m-ticket").value.trim(), code: $("m-code").value.trim() });
    if (answer) { $("m-ticket").value = ""; $("m-code").value = ""; }
  });

  $("phone").addEventListener("submit", async (e) => {
    e.preventDefault();
    const list = $("matches");
    list.replaceChildren();
    const answer = await post("/api/phone", { digits: $("p-digits").value.trim() });
    if (!answer) return;
    lookup = answer.lookup;
    if (!answer.matches.length) { notice("No ticket has a phone ending in these digits."); return; }
    for (const m of answer.matches) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.ticket = m.ticket;
      const swatch = document.createElement("span");
      swatch.className = "swatch"; swatch.style.background = m.color;
      const label = document.createElement("span");
      label.textContent = m.name + " · " + (m.company || "—") + " · " + m.category;
      button.append(swatch, label);
      button.addEventListener("click", async () => {
        const picked = await post("/api/pick", { lookup: lookup, ticket: m.ticket });
        if (picked) { list.replaceChildren(); $("p-digits").value = ""; $("code").focus(); }
      });
      li.appendChild(button);
      list.appendChild(li);
    }
    list.querySelector("button").focus();
  });

  function connect() {
    const events = new EventSource("/events");
    events.addEventListener("decision", (e) => drawDecision(JSON.parse(e.data)));
    events.addEventListener("unit", (e) => drawUnit(JSON.parse(e.data)));
    events.addEventListener("printed", (e) => {
      const p = JSON.parse(e.data);
      if (current && current.ticket === p.ticket) drawPrinted(p);
    });
    events.addEventListener("error", async () => {
      if (events.readyState === EventSource.CLOSED) {
        const r = await fetch("/api/state", { credentials: "same-origin" }).catch(() => null);
        if (r && r.status === 401) { location.href = "/signin?next=/"; return; }
        setTimeout(connect, 1000);
      }
    });
  }
  connect();
})();
