// token-router admin page: live view (server-sent events) and the operator's actions.
// Hand-written, no build step, no dependencies. Loaded with `defer` from static/ only: the
// Content-Security-Policy forbids inline script. Text goes in with textContent, never HTML.
"use strict";

(() => {
  const HEARTBEAT_MS = 2000; // the server sends at least this often
  const LOST_AFTER_MS = 3 * HEARTBEAT_MS + 1000;
  const RECONNECT_MS = 3000;

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  let doc = null; // the last live document
  let lastMessage = 0;
  let source = null;
  let expired = false;

  // --- formatting ---------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  // Every time carries its zone: the browser's own, as an offset from UTC, so an operator
  // comparing the page with logs (UTC) or a colleague's screen is never misled.
  function zone(d) {
    const east = -d.getTimezoneOffset(); // minutes east of UTC
    if (east === 0) return "UTC";
    const abs = Math.abs(east);
    return `UTC${east > 0 ? "+" : "-"}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }
  function clock(unix) {
    if (unix === null || unix === undefined) return "—";
    const d = new Date(unix * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone(d)}`;
  }
  function dateTime(unix) {
    const d = new Date(unix * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(unix)}`;
  }
  function rate(n) {
    return n >= 100 ? String(Math.round(n)) : n.toFixed(1);
  }
  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }
  function field(card, name) {
    return $(`[data-field="${name}"]`, card);
  }

  // --- rendering ----------------------------------------------------------------------

  function healthText(h) {
    if (h.ok === null) return "not probed yet";
    if (h.ok) {
      const ms = h.latency_ms === null ? "" : ` · ${Math.round(h.latency_ms)} ms`;
      return `healthy${ms} · checked ${clock(h.checked_at)}`;
    }
    return `failing since ${clock(h.last_error_at)}`;
  }

  function renderTrend(svg, points) {
    const line = $("polyline", svg);
    const values = points.filter((v) => v !== null);
    if (values.length < 2) {
      line.setAttribute("points", "");
      return;
    }
    const max = Math.max(1, ...values);
    const step = 120 / Math.max(1, points.length - 1);
    const coords = [];
    points.forEach((v, i) => {
      if (v !== null) coords.push(`${(i * step).toFixed(1)},${(26 - (v / max) * 24).toFixed(1)}`);
    });
    line.setAttribute("points", coords.join(" "));
  }

  // The counts behind the drain verdict, each labelled. The verdict's words (badge,
  // estimate, headline) come from the server's view model (router/systems/view.py) as they are, so
  // the page says what `status`, `drain-wait` and the API say.
  function drainText(s) {
    const parts = [];
    if (s.source === "gateway") parts.push("counted by the gateway (stats_url)");
    else if (s.source === "router") parts.push("counted by the routers");
    if (s.gateway_error) parts.push(`gateway count unavailable: ${s.gateway_error}`);
    if (s.source === "gateway" && s.router_open !== null) parts.push(`router count ${s.router_open}`);
    if (s.source !== "gateway" && s.gateway_open !== null) parts.push(`gateway ${s.gateway_open}`);
    return parts.join(" · ");
  }

  function renderCard(s, scope) {
    const card = $(`.card[data-system="${CSS.escape(s.id)}"]`);
    if (!card) return;
    card.dataset.state = s.state;
    card.dataset.stalled = String(s.stalled);
    setText(field(card, "state"), s.badge);
    setText(field(card, "gateway"), s.gateway);
    setText(field(card, "public_url"), s.public_url);

    const h = s.health;
    field(card, "health-dot").dataset.ok = h.ok === null ? "unknown" : String(h.ok);
    setText(field(card, "health"), healthText(h));
    const err = field(card, "health-error");
    err.hidden = !h.last_error;
    setText(err, h.last_error ? `last error ${clock(h.last_error_at)}: ${h.last_error}` : "");

    setText(field(card, "release"), s.release.id || "unknown");
    setText(field(card, "label"), s.release.label ? `label ${s.release.label}` : "no label");
    const relErr = field(card, "release-error");
    relErr.hidden = !s.release.error;
    setText(relErr, s.release.error ? `last check failed: ${s.release.error}` : "");

    setText(field(card, "open"), s.open === null ? "?" : String(s.open));
    renderTrend(field(card, "trend"), s.trend);
    const estimate = field(card, "estimate");
    estimate.hidden = !s.estimate;
    setText(estimate, s.estimate);
    setText(field(card, "gateway-count"), drainText(s));

    setText(field(card, "rate"), rate(s.rate.token));
    setText(field(card, "rate-all"), `${rate(s.rate.all)} req/s in all · ${scope}`);

    $('form[data-action="switch"]', card).hidden = s.state === "active";
    $('form[data-action="offline"]', card).hidden = s.state === "offline";
    $('form[data-action="online"]', card).hidden = s.state !== "offline";
  }

  function age(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${Math.round(s / 3600)} h`;
  }

  function renderRollout(r) {
    const panel = $("#rollout");
    const running = Boolean(r && (r.state === "running" || r.state === "paused"));
    rolloutShown = running ? r : null;
    panel.dataset.state = r ? r.state : "none";
    $("#rollout-running").hidden = !running;
    $("#rollout-start").hidden = running;
    // Offer a system that can be rolled out to: not the active one (after a switch too).
    const target = $('#rollout-start select[name="system"]');
    if (doc && target.value === doc.active) {
      const other = Array.from(target.options).find((o) => o.value !== doc.active);
      if (other) target.value = other.value;
    }
    const last = $("#rollout-last");
    last.hidden = running || !r;
    if (r && !running) {
      const why = r.end_reason ? `: ${r.end_reason}` : "";
      setText(last, `Last rollout ${r.source} → ${r.target} ${r.state}${why}`);
    }
    if (!running) return;
    setText(field(panel, "rollout-title"), `${r.source} → ${r.target}`);
    setText(field(panel, "rollout-state"), r.state);
    field(panel, "rollout-bar").style.width = `${r.percent}%`;
    $("#rollout-progress").setAttribute("aria-valuenow", String(r.percent));
    // The countdown runs in the browser between updates (tickRollout), from the server's
    // figure at the time of the document.
    rolloutNext =
      r.state === "running" && r.next_in !== null ? Date.now() + r.next_in * 1000 : null;
    rolloutShown = r;
    tickRollout();
    const counts = Object.entries(r.counts || {}).map(
      ([sid, c]) => `${sid}: ${c.requests} token requests, ${c.failures} failed`,
    );
    setText(
      field(panel, "rollout-counts"),
      `This step, all instances: ${counts.length ? counts.join("; ") : "no token requests yet"}` +
        ` · aborts at ${(r.max_error_rate * 100).toFixed(1)} % failed after ${r.min_requests}`,
    );
    $('form[data-action="rollout-pause"]').hidden = r.state !== "running";
    $('form[data-action="rollout-resume"]').hidden = r.state !== "paused";
  }

  let rolloutNext = null;
  let rolloutShown = null;

  function tickRollout() {
    const r = rolloutShown;
    if (!r || (r.state !== "running" && r.state !== "paused")) return;
    const lastStep = r.step_number === r.steps.length;
    let next = "paused: steps do not advance";
    if (rolloutNext !== null) {
      const what = lastStep ? `${r.target} becomes active` : `${r.steps[r.step + 1]} %`;
      next = `next: ${what} in ${age(Math.max(0, (rolloutNext - Date.now()) / 1000))}`;
    }
    setText(
      field($("#rollout"), "rollout-detail"),
      `Step ${r.step_number} of ${r.steps.length} (${r.steps.join(" → ")} %) · ` +
        `${r.percent} % of new sessions to ${r.target} · ${next}`,
    );
  }
  setInterval(tickRollout, 1000);

  function renderInstances(fleet) {
    const body = $("#instance-rows");
    const note = $("#instances-note");
    if (!fleet) {
      body.replaceChildren();
      setText(note, "Instance registry unavailable (Redis?).");
      return;
    }
    const now = doc ? doc.now : Date.now() / 1000;
    const rows = fleet.instances.map((i) => {
      const tr = document.createElement("tr");
      tr.classList.toggle("behind", !i.current);
      const applied = i.applied || {};
      const cells = [
        i.id,
        i.version || "?",
        `${applied.active || "?"} (generation ${applied.generation || 0})`,
        dateTime(i.started),
        `${age(now - i.seen)} ago`,
        [i.leader ? "leader" : "", i.current ? "" : "not on the current state"]
          .filter(Boolean)
          .join(", "),
      ];
      cells.forEach((text) => {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      return tr;
    });
    body.replaceChildren(...rows);
    note.classList.toggle("behind", fleet.behind.length > 0);
    const stale = Number(fleet.stale_after.toFixed(1));
    setText(note, `${fleet.summary} · dropped after ${stale} s without a heartbeat`);
  }

  function renderAudit(entries, error, next = null) {
    const body = $("#audit-rows");
    const rows = (entries || []).map((e) => {
      const tr = document.createElement("tr");
      const action = e.forced ? `${e.action} (forced)` : e.action;
      const cells = [dateTime(e.time), action, e.source, e.from || "—", e.to, e.reason || ""];
      cells.forEach((text) => {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      return tr;
    });
    body.replaceChildren(...rows);
    const empty = $("#audit-empty");
    empty.hidden = rows.length > 0;
    setText(empty, error ? `Audit stream unavailable: ${error}` : "No changes recorded yet.");
    // Paging by the API's cursor: the live list shows the newest few; "Older" asks
    // /api/audit for the entries before the last one shown, a page at a time.
    const live = auditPages.length === 0;
    const last = entries && entries.length ? entries[entries.length - 1].id : null;
    auditOlder = live ? (rows.length >= AUDIT_LIVE ? last : null) : next;
    $("#audit-more").hidden = !auditOlder || Boolean(error);
    $("#audit-newest").hidden = live;
    setText(
      $("#audit-count"),
      live
        ? rows.length
          ? `the newest ${rows.length} change(s), live`
          : ""
        : `older changes, page ${auditPages.length + 1}: ${rows.length} change(s)`,
    );
  }

  const AUDIT_LIVE = 10; // entries the live document carries (admin/live.py AUDIT_SHOWN)
  const AUDIT_PAGE = 25;
  let auditPages = []; // the `before` cursor of each older page shown; empty: the live list
  let auditOlder = null; // the cursor of the page after the one shown, if there is one

  async function loadAudit() {
    const before = auditPages[auditPages.length - 1];
    const url = `/api/audit?count=${AUDIT_PAGE}&before=${encodeURIComponent(before)}`;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.status === 401) return sessionOver();
      const answer = await response.json();
      if (auditPages[auditPages.length - 1] !== before) return; // moved on meanwhile
      if (!response.ok) return renderAudit([], answer.message || `HTTP ${response.status}`);
      renderAudit(answer.entries, null, answer.next);
    } catch (error) {
      renderAudit([], error.message);
    }
  }

  function showOlder() {
    if (!auditOlder) return;
    auditPages = [...auditPages, auditOlder];
    loadAudit();
  }

  function showNewer() {
    auditPages = auditPages.slice(0, -1);
    if (auditPages.length) loadAudit();
    else if (doc) renderAudit(doc.audit, doc.audit_error);
  }

  function render(next) {
    doc = next;
    setText($("#headline"), doc.headline);
    $("#headline").dataset.rollout = doc.rollout_share ? "yes" : "no";
    setText($("#active-system"), doc.active);
    next.systems.forEach((s) => renderCard(s, doc.rates_scope));

    const persistence = $("#banner-persistence");
    persistence.hidden = !doc.store.risk;
    setText(field(persistence, "persistence"), doc.store.persistence);
    setText(field(persistence, "persistence-risk"), doc.store.risk || "");
    const degraded = $("#banner-degraded");
    degraded.hidden = !doc.store.degraded;
    setText(field(degraded, "degraded-active"), doc.active);
    setText(field(degraded, "degraded-error"), doc.store.error || "");

    const problems = $("#banner-problems");
    const unusable = doc.store.problems || [];
    problems.hidden = unusable.length === 0;
    setText(field(problems, "problems"), unusable.map((p) => p.message).join(" "));

    const refused = $("#banner-refused");
    refused.hidden = !doc.refused;
    if (doc.refused) {
      setText(field(refused, "refused-value"), doc.refused.value);
      const key = doc.refused.reason === "offline-mark" ? "offline" : "active";
      setText(field(refused, "refused-key"), `${refused.dataset.prefix}:${key}`);
      const reasons = {
        offline: "names a system that is marked offline",
        "offline-mark":
          "is the active system, marked offline outside token-router (a bare SADD): " +
          "the mark is refused",
      };
      setText(
        field(refused, "refused-reason"),
        reasons[doc.refused.reason] || "names no configured system",
      );
      setText(field(refused, "refused-active"), doc.active);
    }
    const watch = $("#banner-watch");
    const w = doc.watch;
    // The post-switch watch: shown while it runs and after it undid or raised the alarm.
    watch.hidden = !w || !["watching", "undone", "alarm"].includes(w.state);
    watch.dataset.state = w ? w.state : "";
    setText(field(watch, "watch-line"), w ? w.line : "");
    setText(field(watch, "watch-measures"), w ? `Measures the ${w.measures}` : "");
    // An older page stays as it is (older entries do not change); the live list follows.
    if (!auditPages.length) renderAudit(doc.audit, doc.audit_error);
    renderRollout(doc.rollout);
    renderInstances(doc.instances);
    setText($("#instance"), doc.instance);
    setText($("#store-url"), doc.store.url);
    setText($("#updated"), `updated ${clock(doc.now)}`);
  }

  // --- the live feed ------------------------------------------------------------------

  function setFeed(state, text) {
    const feed = $("#feed");
    feed.dataset.state = state;
    setText(feed, text);
    const lost = state !== "live" && state !== "connecting";
    $("#banner-feed").hidden = !lost;
    document.body.classList.toggle("stale", lost);
    if (lost) {
      const since = lastMessage ? `Last update ${clock(lastMessage / 1000)}.` : "";
      setText(field($("#banner-feed"), "feed-detail"), since);
    }
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/api/events");
    source.addEventListener("status", (event) => {
      lastMessage = Date.now();
      render(JSON.parse(event.data));
      setFeed("live", "live");
    });
    source.addEventListener("expired", () => sessionOver());
    source.onerror = () => {
      setFeed("lost", "live feed lost — reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (401 after the session ended, or it is restarting):
        // ask why, then try again.
        source = null;
        fetch("/api/live", { credentials: "same-origin" })
          .then((r) => (r.status === 401 ? sessionOver() : setTimeout(connect, RECONNECT_MS)))
          .catch(() => setTimeout(connect, RECONNECT_MS));
      }
    };
  }

  function sessionOver() {
    expired = true;
    if (source) source.close();
    source = null;
    setFeed("expired", "logged out — log in again");
    flash("Your login session has ended. Reload the page to log in again.", true);
  }

  setInterval(() => {
    if (!expired && lastMessage && Date.now() - lastMessage > LOST_AFTER_MS) {
      setFeed("lost", "live feed lost — reconnecting");
      if (source && source.readyState !== EventSource.CONNECTING) connect();
    }
  }, 1000);

  // --- actions ------------------------------------------------------------------------

  let flashTimer = null;
  function flash(message, isError, isWarning = false) {
    const el = $("#flash");
    el.hidden = false;
    el.classList.toggle("error", Boolean(isError));
    el.classList.toggle("warn", !isError && Boolean(isWarning));
    el.setAttribute("role", isError ? "alert" : "status");
    setText(el, message);
    clearTimeout(flashTimer);
    if (!isError && !isWarning) flashTimer = setTimeout(() => (el.hidden = true), 8000);
  }

  function systemDoc(id) {
    return doc ? doc.systems.find((s) => s.id === id) : null;
  }
  function openText(s) {
    if (!s || s.open === null) return "an unknown number of";
    return String(s.open);
  }

  function confirmDialog(title, text, detail, okLabel, askReason = false, danger = false) {
    const dialog = $("#confirm");
    setText($("#confirm-title"), title);
    setText($("#confirm-text"), text);
    setText($("#confirm-detail"), detail);
    setText($("#confirm-ok"), okLabel);
    // A destructive action's button looks like one (solid red), not like every "OK".
    $("#confirm-ok").className = danger ? "danger-solid" : "primary";
    $("#confirm-reason-label").hidden = !askReason;
    $("#confirm-reason").value = "";
    dialog.returnValue = "cancel";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("#confirm-cancel").focus();
    });
  }

  // A refusal by a safety gate (409 with `gate`): say why and offer the override, which the
  // API records in the audit log with the reason given here.
  async function send(form, body) {
    const result = await post(form, body);
    if (!result) return null;
    const { status, answer } = result;
    if (status >= 200 && status < 300) return answer || {};
    const why = answer && answer.message ? answer.message : `HTTP ${status}`;
    if (status === 409 && answer && answer.gate && answer.override && !body.force) {
      const ok = await confirmDialog(
        "Refused by a safety gate",
        `Refused (${answer.gate}): ${why}`,
        "Override only if you know why the gate refused; the override is recorded in the " +
          "audit log with your reason.",
        "Override and proceed",
        true,
        true,
      );
      if (ok) {
        const reason = $("#confirm-reason").value.trim();
        return send(form, { ...body, force: true, ...(reason ? { reason } : {}) });
      }
    }
    flash(`Refused: ${why}`, true);
    if (status === 401) sessionOver();
    return null;
  }

  async function post(form, body) {
    const token = form.elements.csrf_token.value;
    const buttons = $$("button", form);
    buttons.forEach((b) => (b.disabled = true));
    try {
      const response = await fetch(form.getAttribute("action"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
        body: JSON.stringify(body),
      });
      let answer = null;
      try {
        answer = await response.json();
      } catch (_) {
        answer = null;
      }
      return { status: response.status, answer };
    } catch (error) {
      flash(`Refused: the router did not answer (${error.message})`, true);
      return null;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  async function onSwitch(form) {
    const target = form.elements.system.value;
    const from = doc ? doc.active : "?";
    const old = systemDoc(from);
    const ok = await confirmDialog(
      "Switch systems",
      `Switch new sessions from ${from} to ${target}?`,
      `${from} holds ${openText(old)} open sessions and short codes; they keep reaching ` +
        `${from} until they end. New sessions go to ${target}.`,
      `Switch ${from} → ${target}`,
    );
    if (!ok) return;
    // The system this page displayed as active: a compare-and-set, so two operators cannot
    // both switch on the strength of the same stale view.
    const answer = await send(form, { system: target, expect: from, via: "page" });
    if (!answer) return;
    const message = `Switched: new sessions go to ${answer.active}. ${answer.message}`;
    flash(message, false, partial(answer));
  }

  // A change is done when every live instance applied it: one that some have not applied
  // yet stays on screen as a warning naming them, as the CLI names them.
  function partial(answer) {
    const c = answer && answer.confirmation;
    return Boolean(c && (c.complete === false || (c.laggards && c.laggards.length)));
  }

  function lastSwitch() {
    const actions = ["switch", "undo", "promote"];
    return doc && doc.audit ? doc.audit.find((e) => actions.includes(e.action) && e.from) : null;
  }

  async function onUndo(form) {
    const last = lastSwitch();
    const text = last
      ? `Undo the last switch (${last.from} → ${last.to}) and send new sessions to ${last.from}?`
      : "Undo the last switch?";
    const ok = await confirmDialog(
      "Undo last switch",
      text,
      "Through the same gates as a switch; refused if the active system changed meanwhile.",
      "Undo",
    );
    if (!ok) return;
    const answer = await send(form, { via: "page" });
    if (!answer) return;
    const message = `Undone: new sessions go to ${answer.active}. ${answer.message}`;
    flash(message, false, partial(answer));
  }

  async function onRolloutStart(form) {
    const f = form.elements;
    const body = {
      system: f.system.value,
      steps: f.steps.value,
      interval: Number(f.interval.value),
      max_error_rate: Number(f.max_error_rate.value),
      min_requests: Number(f.min_requests.value),
      via: "page",
    };
    const from = doc ? doc.active : "?";
    const ok = await confirmDialog(
      "Start a progressive rollout",
      `Send a growing share of new sessions from ${from} to ${body.system}: ` +
        `${body.steps.split(",").join(" → ")} %, each step held ${body.interval} s?`,
      `Aborts itself when ${body.system}'s gateway fails its probe or ` +
        `${(body.max_error_rate * 100).toFixed(1)} % of its token requests fail; after the ` +
        `last step ${body.system} becomes active.`,
      "Start rollout",
    );
    if (!ok) return;
    const answer = await send(form, body);
    if (answer && answer.rollout) {
      flash(`Rollout started: ${answer.rollout.percent} % of new sessions to ${body.system}.`, false);
    }
  }

  function rolloutAction(name, question) {
    return async (form) => {
      const r = doc ? doc.rollout : null;
      if (question) {
        const ok = await confirmDialog(
          `${name[0].toUpperCase()}${name.slice(1)} the rollout`,
          question(r),
          "Recorded in the audit log.",
          name[0].toUpperCase() + name.slice(1),
        );
        if (!ok) return;
      }
      const answer = await send(form, { via: "page" });
      if (answer && answer.rollout) flash(`Rollout ${answer.rollout.state}.`, false);
    };
  }

  async function onOffline(form) {
    const id = form.elements.system.value;
    const ok = await confirmDialog(
      "Mark offline",
      `Mark ${id} offline?`,
      `Requests that belong to ${id} (${openText(systemDoc(id))} open sessions and short ` +
        "codes) get a 503 answer at once instead of reaching it.",
      `Mark ${id} offline`,
      true,
      true,
    );
    if (!ok) return;
    const reason = $("#confirm-reason").value.trim();
    const body = { via: "page", ...(reason ? { reason } : {}) };
    if (await send(form, body)) flash(`${id} is offline.`, false);
  }

  async function onOnline(form) {
    const id = form.elements.system.value;
    if (await send(form, { via: "page" })) flash(`${id} is online.`, false);
  }

  function refreshSummary(r) {
    if (r.error) return `${r.system}: ${r.error}`;
    const label = r.label ? ` (${r.label})` : "";
    return `${r.system}: ${r.release}${label}${r.changed ? ", new" : ", unchanged"}`;
  }

  async function onRefresh(form) {
    const answer = await send(form, {});
    if (!answer) return;
    const results = answer.results || [];
    const failed = results.some((r) => r.error);
    const summary = results.map(refreshSummary).join("; ");
    flash(`${failed ? "Refresh incomplete" : "Releases refreshed"}: ${summary}`, failed);
  }

  const handlers = {
    switch: onSwitch,
    offline: onOffline,
    online: onOnline,
    "refresh-releases": onRefresh,
    undo: onUndo,
    "rollout-start": onRolloutStart,
    "rollout-pause": rolloutAction("pause", null),
    "rollout-resume": rolloutAction("resume", null),
    "rollout-promote": rolloutAction(
      "promote",
      (r) => `Make ${r ? r.target : "the target"} active now (straight to 100 %)?`,
    ),
    "rollout-abort": rolloutAction(
      "abort",
      (r) => `Stop sending new sessions to ${r ? r.target : "the target"}? The active system stays.`,
    ),
  };

  $("#audit-more").addEventListener("click", showOlder);
  $("#audit-newest").addEventListener("click", showNewer);

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const handler = handlers[form.dataset.action];
    if (!handler) return; // the logout form is a plain POST
    event.preventDefault();
    handler(form);
  });

  connect();
})();
