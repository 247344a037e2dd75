/*! Vitrine popups: triggers, caps and the popup dialog; loaded by vitrine.js for a page call with popups (docs/campaigns.md) */
(function (w, d) {
  "use strict";
  var V = w.vitrine, P = V && V.P;
  if (!P || P.show) return;
  var safe = P.safe, track = P.track, armed = {}, opened, hooks = [], DAY = 864e5;

  function now() { return Date.now(); }
  function listen(target, type, fn) { target.addEventListener(type, safe(fn), { passive: true, capture: true }); }
  function ss(k, v) {
    try { return v == null ? sessionStorage.getItem("vitrine-pop:" + k) : sessionStorage.setItem("vitrine-pop:" + k, v); } catch (e) {}
  }
  // A campaign's counts ({s: times shown, c: when closed, v: converted}): in localStorage with
  // consent to personalization, else in sessionStorage, for this session only.
  function counts(id) {
    try { return JSON.parse((P.ok().personalization && P.get("pop:" + id)) || ss(id)) || {}; } catch (e) { return {}; }
  }
  function note(id, fn) {
    var c = counts(id);
    fn(c);
    c = JSON.stringify(c);
    ss(id, c);
    P.set("pop:" + id, c);
  }
  function capped(p) {
    var f = p.frequency || {}, c = counts(p.campaign), shown = c.s || [], t = now();
    var close = f.days_after_close;
    if (c.v) return "converted";
    if (c.c && (close == null ? p.once_closed : t - c.c < close * DAY)) return "closed";
    if (f.per_session && +ss("n:" + p.campaign) >= f.per_session) return "per_session";
    if (f.per_day && shown.filter(function (s) { return t - s < DAY; }).length >= f.per_day) return "per_day";
    if (f.total && shown.length >= f.total) return "total";
    if (p.session_cap && +ss("n") >= p.session_cap) return "session_cap";
    if (p.countdown_minutes && shown[0] && t - shown[0] >= p.countdown_minutes * 6e4) return "expired";
  }
  function converted(id) { note(id, function (c) { c.v = 1; }); }

  // -- triggers
  function arm(p) {
    var t = p.trigger || {}, on = t.on, id = p.campaign;
    if (armed[id] || capped(p)) return;
    armed[id] = 1;
    function fire() { show(p); }
    if (on == "delay") setTimeout(safe(fire), t.seconds * 1000);
    else if (on == "scroll") {
      listen(w, "scroll", function () {
        var h = d.documentElement.scrollHeight - w.innerHeight;
        if (h <= 0 || w.scrollY * 100 >= t.percent * h) fire();
      });
    } else if (on == "exit") exit(fire);
    else if (on == "add_to_cart") hooks.push(fire);
    else if (on == "inactivity") idle(fire, t.seconds);
    else fire(); // load, and what the server already checked: page_views, cart_page
  }
  // Desktop: the pointer leaves through the top. Phones and tablets: a fast scroll up (a third
  // of the screen within half a second), or the tab being hidden.
  function exit(fire) {
    if (!(w.matchMedia && matchMedia("(pointer: coarse)").matches)) {
      return listen(d, "mouseout", function (e) { if (!e.relatedTarget && e.clientY <= 0) fire(); });
    }
    var prev = w.scrollY, from = prev, at = 0;
    listen(w, "scroll", function () {
      var y = w.scrollY, t = now();
      if (y >= prev || t - at > 500) { from = Math.max(y, prev); at = t; }
      if (from - y > w.innerHeight / 3) fire();
      prev = y;
    });
    listen(d, "visibilitychange", function () { if (d.visibilityState == "hidden") fire(); });
  }
  function idle(fire, seconds) {
    var timer;
    function reset() { clearTimeout(timer); timer = setTimeout(safe(fire), seconds * 1000); }
    ["pointermove", "pointerdown", "keydown", "scroll", "touchstart"].forEach(function (e) { listen(w, e, reset); });
    reset();
  }
  P.on = function (type) { if (type == "add_to_cart") hooks.forEach(function (f) { f(); }); };

  // -- the dialog
  function show(p) {
    if (opened || capped(p)) return;
    var host = d.createElement("div"), id = p.campaign;
    host.setAttribute("data-vitrine-popup", id);
    var root = host.attachShadow({ mode: "open" });
    root.innerHTML = p.html;
    var dialog = root.querySelector("dialog");
    if (!dialog || !dialog.showModal) return;
    var before = d.activeElement;
    opened = 1;
    d.body.appendChild(host);
    note(id, function (c) { c.s = (c.s || []).concat(now()).slice(-50); });
    ss("n:" + id, +ss("n:" + id) + 1);
    ss("n", +ss("n") + 1);
    dialog.addEventListener("close", safe(function () {
      note(id, function (c) { c.c = now(); });
      track("close_promotion", { promotion_id: id, creative_slot: "popup" });
      P.flush();
      host.remove();
      if (before && before.focus) before.focus();
    }));
    root.addEventListener("click", safe(function (e) {
      var hit = e.target.closest("[data-vitrine-reveal]");
      if (hit) {
        root.querySelectorAll("[data-vitrine-step]").forEach(function (s) { s.hidden = s.getAttribute("data-vitrine-step") != "2"; });
        var next = root.querySelector('[data-vitrine-step="2"] button, [data-vitrine-step="2"] a, [data-vitrine-step="2"] input');
        if (next) next.focus();
        track("select_promotion", { promotion_id: id, creative_slot: "popup", experiment: p.experiment, variant: p.variant });
        if (!root.querySelector("form[data-vitrine-signup]")) converted(id);
        var mine = root.querySelector("[data-vitrine-issue]");  // the visitor's own code of a pool
        if (mine && !mine.textContent) post("/v1/reveal", { campaign: id }, function (ok, a) {
          mine.textContent = ok ? a.code : a.error || "Please try again.";
        });
      } else if (e.target.closest("a[href]")) converted(id);
    }));
    var clock = root.querySelector("[data-vitrine-countdown]");
    if (clock) tick(clock, dialog, clock.getAttribute("data-ends") ? Date.parse(clock.getAttribute("data-ends")) :
      counts(id).s[0] + clock.getAttribute("data-minutes") * 6e4);
    var form = root.querySelector("form[data-vitrine-signup]");
    if (form) form.addEventListener("submit", safe(function (e) { e.preventDefault(); signUp(root, form, id); }));
    P.wire(root, "popup", function () { dialog.close(); }, p);
    dialog.showModal();
  }

  // -- the countdown: the time left, each second; at zero the offer and its popup go
  function tick(clock, dialog, end) {
    var shown = clock.querySelector("time");
    (function next() {
      var s = Math.max(0, Math.ceil((end - now()) / 1000)), m = Math.floor(s / 60) % 60, h = Math.floor(s / 3600);
      shown.textContent = (h ? h + ":" + (m < 10 ? "0" : "") + m : m) + ":" + (s % 60 < 10 ? "0" : "") + (s % 60);
      if (s) setTimeout(safe(next), 1000 - (end - now()) % 1000);
      else if (dialog.open) dialog.close();
    })();
  }

  // -- a POST with the visitor's token and consent; done(ok, answer)
  function post(path, body, done) {
    body.shop = P.shop; body.token = P.token(); body.consent = P.consent();
    fetch(P.url(path), { method: "POST", credentials: "include", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } })
      .then(function (r) { return r.json().then(function (a) { return [r.ok, a]; }); })
      .then(safe(function (got) { done(got[0], got[1]); }), function () { done(0, {}); });
  }

  // -- the sign-up form: the reward comes in the answer to a valid sign-up
  function signUp(root, form, id) {
    var f = new FormData(form), error = root.querySelector("[data-vitrine-error]"), button = form.querySelector("[type=submit]");
    button.disabled = true;
    post("/v1/leads", { campaign: id, email: f.get("email"), opt_in: !!f.get("opt_in"),
      birthday: f.get("birthday") || null, interests: f.getAll("interests") }, function (ok, a) {
        button.disabled = false;
        if (!ok) { error.textContent = a.error || "Please try again."; error.hidden = false; return; }
        converted(id);
        root.querySelectorAll("[data-vitrine-step]").forEach(function (s) { s.hidden = s.getAttribute("data-vitrine-step") != "3"; });
        if (a.code) {
          root.querySelector("[data-vitrine-code]").textContent = a.code;
          root.querySelector("[data-vitrine-reveal-text]").textContent = a.reveal_text || "";
          root.querySelector("[data-vitrine-reward]").hidden = false;
        }
        var done = root.querySelector('[data-vitrine-step="3"] button');
        if (done) done.focus();
      });
  }

  P.show = safe(function (list) { list.forEach(safe(arm)); });
  P.show(P.list || []);
})(window, document);
