// The demo shop's search box: as the visitor types, it shows Vitrine's suggestions under
// the box (the search fragment with suggest=1); an empty box shows popular searches. Arrow
// keys move through the suggestions; Escape closes them (a second Escape clears the box).
(function () {
  var form = document.querySelector("form[data-suggest-url]");
  var input = form && form.querySelector("input[name=q]");
  if (!input || !window.fetch) return;
  var box = document.createElement("div"), timer, request = 0;
  box.className = "search-suggestions";
  box.hidden = true;
  box.style.cssText = "position:absolute;top:calc(100% + 4px);left:0;right:0;z-index:20";
  form.style.position = "relative";
  form.appendChild(box);
  input.setAttribute("autocomplete", "off");
  input.setAttribute("aria-autocomplete", "list");

  function links() { return [].slice.call(box.querySelectorAll("a")); }
  function show(html) {
    box.innerHTML = html;
    box.hidden = !links().length;
  }
  function load() {
    var mine = ++request;
    fetch(form.dataset.suggestUrl + "&q=" + encodeURIComponent(input.value), { credentials: "include" })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) { if (mine === request && form.contains(document.activeElement)) show(html); })
      .catch(function () {});
  }
  input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(load, 120); });
  input.addEventListener("focus", load);
  form.addEventListener("keydown", function (e) {
    var all = links(), at = all.indexOf(document.activeElement);
    if (e.key === "Escape" && !box.hidden) { e.preventDefault(); box.hidden = true; input.focus(); }
    else if (e.key === "ArrowDown" && !box.hidden && all.length) { e.preventDefault(); all[Math.min(at + 1, all.length - 1)].focus(); }
    else if (e.key === "ArrowUp" && at >= 0) { e.preventDefault(); (at > 0 ? all[at - 1] : input).focus(); }
  });
  form.addEventListener("focusout", function (e) { if (!form.contains(e.relatedTarget)) box.hidden = true; });
})();
