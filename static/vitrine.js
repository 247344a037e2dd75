/*! Vitrine embed script, docs/embedding.md */
(function (w, d) {
  "use strict";
  var me = d.currentScript, prior = w.vitrine;
  if (!me || (prior && prior.loaded)) return;
  var opt = me.dataset, shop = opt.shop;
  var api = (opt.api || me.src.replace(/\/v1\/vitrine\.js.*$/, "")).replace(/\/$/, "");
  var budget = +opt.timeout || 1500;
  var KEY = "vitrine:" + shop + ":", OFF = "vitrine-off:" + shop;
  var queue = [], timer, pageViewId, token, started, ok, asked, who, P = {};

  function noop() {}
  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { try { console.debug("vitrine:", e); } catch (_) {} }
    };
  }
  function ls(m, k, v) { try { return localStorage[m](k, v); } catch (e) {} }
  function keys() { try { return Object.keys(localStorage); } catch (e) { return []; } }
  function get(k) { return ls("getItem", KEY + k); }
  function set(k, v) { if (ok && ok.personalization) ls("setItem", KEY + k, v); }
  function url(path) { return api + path + "?shop=" + encodeURIComponent(shop); }
  token = get("token");

  // -- events
  function track(type, ev) {
    ev = ev || {};
    ev.event_id = w.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2);
    ev.type = type;
    ev.ts = Date.now();
    if (pageViewId) ev.page_view_id = pageViewId;
    queue.push(ev);
    if (P.on) P.on(type);
    clearTimeout(timer);
    timer = setTimeout(flush, queue.length >= 20 ? 0 : 800);
  }
  var MEASURE = { view_promotion: 1, select_promotion: 1, close_promotion: 1, view_item_list: 1, select_item: 1 };
  function flush() {
    if (ok) queue = queue.filter(function (e) { return MEASURE[e.type] ? ok.analytics : ok.personalization; });
    while (queue.length) {
      var body = JSON.stringify({ shop: shop, token: token, consent: consent(), events: queue.splice(0, 50) });
      var to = url("/v1/events");
      try { if (navigator.sendBeacon(to, body)) continue; } catch (e) {}
      if (w.fetch) fetch(to, { method: "POST", body: body, keepalive: true, credentials: "include" }).catch(noop);
    }
  }
  w.addEventListener("pagehide", safe(flush));
  d.addEventListener("visibilitychange", safe(function () { if (d.visibilityState == "hidden") flush(); }));

  var GA4 = { view_item: 1, add_to_cart: 1, remove_from_cart: 1, begin_checkout: 1, purchase: 1, search: 1 };
  function fromDataLayer(entry) {
    var name, p;
    if (!entry) return;
    if (entry[0] == "consent") return gcm(entry[2]);
    if (entry[0] == "event") { name = entry[1]; p = entry[2] || {}; }
    else if (entry.event) { name = entry.event; p = entry.ecommerce || entry; }
    if (!GA4[name]) return;
    var items = [], ev = { items: items };
    (p.items || []).slice(0, 100).forEach(function (i) {
      var id = i && (i.item_id || i.id);
      if (id) items.push({ item_id: String(id), quantity: +i.quantity || 1, price: i.price == null ? null : +i.price });
    });
    if (items.length == 1) ev.item_id = items[0].item_id;
    if (p.value != null) ev.value = +p.value;
    if (p.currency) ev.currency = String(p.currency);
    if (p.transaction_id) ev.transaction_id = String(p.transaction_id);
    if (name == "search") ev.search_term = String(p.search_term || "").slice(0, 200);
    if (name == "purchase" ? ev.transaction_id && ev.value >= 0 : name == "search" ? ev.search_term : items.length) track(name, ev);
  }
  function watchDataLayer() {
    var dl = (w.dataLayer = w.dataLayer || []), push = dl.push;
    dl.forEach(safe(fromDataLayer));
    dl.push = function () {
      var r = push.apply(dl, arguments);
      [].forEach.call(arguments, safe(fromDataLayer));
      return r;
    };
  }

  // -- consent
  // A data-vitrine-optout click (until an own call says yes), own call, Consent Mode, TCF,
  // Shopify: the first answer decides.
  var said = [ls("getItem", OFF) ? { personalization: false } : {}, {}, {}, {}, {}];
  var SRC = "optout shop consent_mode tcf shopify".split(" ");
  function consent() {
    var c = {}, from = [];
    said.forEach(function (s, i) {
      for (var k in s) if (c[k] == null && s[k] != null) c[k] = !!s[k], from.indexOf(SRC[i]) < 0 && from.push(SRC[i]);
    });
    if (from.length) c.source = from + "";
    return c;
  }
  function heard(i, c) {
    said[i] = c || {};
    if (i == 1 && said[1].personalization) { said[0] = {}; ls("removeItem", OFF); }
    if (started && JSON.stringify(consent()) != asked) page();
  }
  // A region's default is left to consent_regions.
  function gcm(p) {
    if (!p || p.region) return;
    function g(k) { return p[k + "_storage"] == null ? said[2][k] : p[k + "_storage"] == "granted"; }
    heard(2, { personalization: g("personalization"), analytics: g("analytics") });
  }
  function tcf(t, success) {
    if (!success || !t || (t.eventStatus != "tcloaded" && t.eventStatus != "useractioncomplete")) return;
    if (t.gdprApplies === false) return heard(3);
    function has(n) { return t.purpose.consents[n] || (t.publisher || {}).consents[n]; }
    heard(3, { personalization: has(1) && has(5) && has(6), analytics: has(1) && has(8) });
  }
  // "" is undecided (*Allowed() says false).
  function shopify() {
    var cp = w.Shopify && Shopify.customerPrivacy, v = cp && cp.currentVisitorConsent && cp.currentVisitorConsent(), yes = { yes: 1, no: 0 };
    if (v) said[4] = { personalization: yes[v.preferences], analytics: yes[v.analytics] };
  }
  function optout(e) {
    var t = e.composedPath()[0];
    if (!t.closest || !t.closest("[data-vitrine-optout]")) return;
    ls("setItem", OFF, 1);
    d.dispatchEvent(new Event("vitrine:optout"));
    heard(0, { personalization: false });
  }
  function wipe() {
    token = pageViewId = null;
    keys().forEach(function (k) { if (!k.indexOf(KEY)) ls("removeItem", k); });
  }

  // -- fragments
  function campaignOf(el) {
    var c = el.closest("[data-vitrine-campaign]");
    return c && c.getAttribute("data-vitrine-campaign");
  }
  function listOf(el) {
    var l = el.closest("[data-vitrine-list]");
    return l && { item_list_id: l.getAttribute("data-vitrine-list"), item_list_name: l.getAttribute("data-vitrine-strategy") };
  }
  // Seen: half in view for 1 s (a popup: at once).
  function seen(el, slot, fn) {
    if (slot == "popup" || !w.IntersectionObserver) return fn();
    var t, o = new IntersectionObserver(function (es) {
      clearTimeout(t);
      if (es.pop().intersectionRatio >= .5) t = setTimeout(function () { o.disconnect(); fn(); }, 1e3);
    }, { threshold: .5 });
    o.observe(el);
  }
  function wire(root, slot, onClose, f) {
    function tr(type, ev) { ev.experiment = f.experiment; ev.variant = f.variant; track(type, ev); }
    root.querySelectorAll("[data-vitrine-campaign]").forEach(function (c) {
      seen(c, slot, function () { tr("view_promotion", { promotion_id: campaignOf(c), creative_slot: slot }); });
    });
    root.querySelectorAll("[data-vitrine-list]").forEach(function (l) {
      var ev = listOf(l);
      ev.items = [].map.call(l.querySelectorAll("[data-item-id]"), function (i) { return { item_id: i.getAttribute("data-item-id") }; });
      if (ev.items.length) seen(l, slot, function () { tr("view_item_list", ev); });
    });
    root.addEventListener("click", safe(function (e) {
      var t = e.target, hit;
      if ((hit = t.closest("[data-vitrine-close]"))) {
        if (onClose) onClose();
      } else if ((hit = t.closest("a[href], [data-item-id]"))) {
        var item = t.closest("[data-item-id]"), list = listOf(hit);
        var ev = list || { promotion_id: campaignOf(hit) || slot, creative_slot: slot };
        if (item) ev.item_id = item.getAttribute("data-item-id");
        if (!list) tr("select_promotion", ev);
        else if (item) tr("select_item", ev);
        flush();
      }
    }));
  }
  function fill(el, frag) {
    var root = el;
    if (frag.shadow && el.attachShadow) root = el.shadowRoot || el.attachShadow({ mode: "open" });
    root.innerHTML = frag.html;
    el.setAttribute("data-vitrine-filled", "");
    wire(root, el.getAttribute("data-vitrine-slot"), 0, frag);
  }
  // Popups live in popups.js, loaded only for a page call that has some; P is all it sees.
  function popups(list) {
    P.list = list;
    if (P.show) return P.show(list);
    if (P.asked || !list.length) return;
    var s = d.createElement("script");
    s.src = api + "/v1/popups.js";
    s.async = P.asked = 1;
    d.head.appendChild(s);
  }

  // -- reserved heights
  var sheet, ID = /^[\w-]{1,64}$/;
  function slotEls() { return d.querySelectorAll("[data-vitrine-slot]"); }
  function hold(px) {
    var css = "";
    for (var id in px) css += '[data-vitrine-slot="' + id + '"]{min-height:' + px[id] + "px}";
    if (!sheet && css) (d.head || d.documentElement).appendChild((sheet = d.createElement("style")));
    if (sheet) sheet.textContent = css;
  }
  function reserve() {
    var px = {}, p = w.performance;
    sheet = d.querySelector("style[data-vitrine-h]");
    if (p && p.getEntriesByType && p.getEntriesByType("paint").length) return;
    keys().forEach(function (k) {
      var id = k.slice(KEY.length + 2), m = !k.indexOf(KEY + "h:") && ID.test(id) && /^(\d+):(\d+)$/.exec(ls("getItem", k));
      if (m && m[1] == w.innerWidth) px[id] = m[2];
    });
    hold(px);
  }
  function finish(res) {
    var before = {}, keep = {};
    slotEls().forEach(function (el) { before[el.getAttribute("data-vitrine-slot")] = el.offsetHeight; });
    if (res) apply(res);
    hold({});
    slotEls().forEach(function (el) {
      var id = el.getAttribute("data-vitrine-slot"), h = el.offsetHeight;
      if (!ID.test(id)) return;
      set("h:" + id, w.innerWidth + ":" + h);
      if (h < before[id] && el.getBoundingClientRect().top < w.innerHeight) keep[id] = before[id];
    });
    hold(keep);
  }

  // -- the page call
  function pageContext() {
    var el = d.querySelector("[data-vitrine-page]"), ds = (el && el.dataset) || {};
    return { url: location.href, referrer: d.referrer, title: d.title.slice(0, 500),
      type: opt.pageType || ds.vitrinePage || "", item_id: opt.itemId || ds.vitrineItem || "",
      category: opt.category || ds.vitrineCategory || "" };
  }
  function slots() {
    return [].map.call(slotEls(), function (el) {
      var attrs = {}, ds = el.dataset;
      for (var k in ds) if (k != "vitrineSlot" && k != "widget" && k != "vitrineFilled") attrs[k] = String(ds[k]).slice(0, 200);
      return { id: ds.vitrineSlot, widget: ds.widget || "banner", attrs: attrs };
    });
  }
  function menu() {
    var nav = d.querySelector("[data-vitrine-nav]");
    return nav ? [].filter.call(nav.querySelectorAll("[data-category]"), function (el) {
      return !el.parentNode.closest("[data-vitrine-nav] [data-category]");
    }) : [];
  }
  function reorder(order) {
    var els = menu(), by = {};
    els.forEach(function (el) { by[el.getAttribute("data-category")] = el; });
    if (order.length != els.length || Object.keys(by).length != els.length ||
      !order.every(function (k) { return by[k]; })) return;
    els.map(function (el) { return el.parentNode.insertBefore(d.createComment(""), el); })
      .forEach(function (m, i) { m.parentNode.replaceChild(by[order[i]], m); });
  }
  function apply(res) {
    ok = res.consent || ok;
    if (ok && ok.withdrawn) wipe();
    if (res.token) set("token", (token = res.token));
    pageViewId = res.page_view_id;
    if (res.nav && res.nav.moved) safe(reorder)(res.nav.order);
    var frags = res.fragments || {};
    slotEls().forEach(safe(function (el) {
      var f = frags[el.getAttribute("data-vitrine-slot")];
      if (f) fill(el, f);
    }));
    popups(ls("getItem", OFF) ? [] : res.popups || []);
  }
  function page() {
    if (!shop || !w.fetch) return;
    var ctrl = w.AbortController && new AbortController();
    var stop = setTimeout(function () { if (ctrl) ctrl.abort(); }, budget);
    var headers = { "Content-Type": "application/json" };
    if (token) headers["X-Visitor-Token"] = token;
    started = 1;
    safe(shopify)();
    var body = { shop: shop, token: token, page: pageContext(), slots: slots(), consent: consent(),
      gpc: navigator.globalPrivacyControl === true, identify: who };
    asked = JSON.stringify(body.consent);
    var nav = menu().slice(0, 60).map(function (el) { return el.getAttribute("data-category").slice(0, 128); });
    if (nav.length) body.nav = nav;
    fetch(url("/v1/page"), { method: "POST", credentials: "include", headers: headers, signal: ctrl && ctrl.signal,
      body: JSON.stringify(body) })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (res) { clearTimeout(stop); return res; })
      .catch(noop)
      .then(safe(finish));
  }

  // -- the visitor's data
  function mine(method) {
    return fetch(url("/v1/me"), { method: method, credentials: "include", headers: token ? { "X-Visitor-Token": token } : {} })
      .then(function (r) { if (r.ok || r.status == 404) return r; throw Error("vitrine: " + r.status); });
  }
  function forget() {
    clearTimeout(timer);
    queue.length = 0;
    return mine("DELETE").then(wipe);
  }

  // -- the global
  function vitrine(cmd, a, b) {
    if (cmd == "event") track(a, b);
    else if (cmd == "page") page();
    else if (cmd == "flush") flush();
    else if (cmd == "consent") heard(1, a);
    else if (cmd == "identify") who = a, started && page();
    else if (cmd == "me") return mine("GET").then(function (r) { return r.ok ? r.json() : null; });
    else if (cmd == "forget") return forget();
  }
  var api_ = w.vitrine = safe(vitrine);
  api_.loaded = 1;
  api_.P = P;
  P.safe = safe; P.track = track; P.flush = flush; P.get = get; P.set = set; P.wire = wire;
  P.ok = function () { return ok || {}; };
  P.url = url; P.consent = consent; P.shop = shop;
  P.token = function () { return token; };
  safe(reserve)();
  safe(function () {
    watchDataLayer();
    if (w.__tcfapi) __tcfapi("addEventListener", 2, safe(tcf));
    d.addEventListener("visitorConsentCollected", safe(function () { shopify(); heard(4, said[4]); }));
    d.addEventListener("click", safe(optout));
    ((prior && prior.q) || []).forEach(function (args) { api_.apply(null, args); });
    if (d.readyState == "loading") d.addEventListener("DOMContentLoaded", safe(page));
    else page();
  })();
})(window, document);
