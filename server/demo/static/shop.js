// The demo shop's own code: a localStorage cart that reports to GA4's dataLayer, as most
// shops already do. Vitrine picks these dataLayer events up; the shop writes no Vitrine code.
(function () {
  var KEY = "demo-cart";
  function load() { try { return JSON.parse(localStorage.getItem(KEY)) || []; } catch (e) { return []; } }
  function save(lines) { localStorage.setItem(KEY, JSON.stringify(lines)); showCount(lines); }
  function showCount(lines) {
    var n = lines.reduce(function (s, l) { return s + l.quantity; }, 0);
    document.querySelectorAll("[data-cart-count]").forEach(function (el) { el.textContent = n; });
  }
  function money(x) { return "£" + x.toFixed(2); }
  function asItems(lines) {
    return lines.map(function (l) { return {item_id: l.item_id, item_name: l.title, price: l.price, quantity: l.quantity}; });
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-add-to-cart]");
    if (!button) return;
    var lines = load(), id = button.dataset.id, price = parseFloat(button.dataset.price) || 0;
    var line = lines.find(function (l) { return l.item_id === id; });
    if (line) line.quantity += 1; else lines.push({item_id: id, title: button.dataset.title, price: price, quantity: 1});
    save(lines);
    dataLayer.push({event: "add_to_cart", ecommerce: {currency: "GBP", value: price,
      items: [{item_id: id, item_name: button.dataset.title, price: price, quantity: 1}]}});
    var note = document.querySelector(".added"); if (note) note.hidden = false;
  });

  function renderCart() {
    var view = document.querySelector("[data-cart-view]");
    if (!view) return;
    var lines = load(), list = view.querySelector("[data-cart-lines]"), total = 0;
    list.innerHTML = "";
    lines.forEach(function (l) {
      var li = document.createElement("li");
      li.dataset.itemId = l.item_id;
      li.innerHTML = "<a></a><span></span>";
      li.firstChild.href = "/demo/product/" + encodeURIComponent(l.item_id);
      li.firstChild.textContent = l.quantity + " × " + l.title;
      li.lastChild.textContent = money(l.price * l.quantity);
      list.appendChild(li);
      total += l.price * l.quantity;
    });
    view.querySelector("[data-cart-empty]").hidden = lines.length > 0;
    view.querySelector("[data-cart-total]").textContent = lines.length ? "Total: " + money(total) : "";
    var checkout = view.querySelector("[data-checkout]");
    checkout.hidden = !lines.length;
    checkout.onclick = function () {
      var order = "D" + Date.now().toString(36).toUpperCase();
      dataLayer.push({event: "purchase", ecommerce: {transaction_id: order, currency: "GBP",
        value: Math.round(total * 100) / 100, items: asItems(lines)}});
      save([]);
      view.hidden = true;
      var thanks = document.querySelector("[data-thanks]");
      thanks.querySelector("[data-order-id]").textContent = order;
      thanks.hidden = false;
    };
  }

  // A link that adds to the cart (/demo/cart?add=ITEM&qty=N, the reorder widget's): added
  // once, then the address loses its query so a reload does not add it again.
  var adding = document.querySelector("[data-cart-add]");
  if (adding) {
    var ds = adding.dataset, lines = load(), qty = parseInt(ds.quantity, 10) || 1, price = parseFloat(ds.price) || 0;
    var line = lines.find(function (l) { return l.item_id === ds.id; });
    if (line) line.quantity += qty; else lines.push({item_id: ds.id, title: ds.title, price: price, quantity: qty});
    save(lines);
    dataLayer.push({event: "add_to_cart", ecommerce: {currency: "GBP", value: Math.round(price * qty * 100) / 100,
      items: [{item_id: ds.id, item_name: ds.title, price: price, quantity: qty}]}});
    if (history.replaceState) history.replaceState(null, "", location.pathname);
  }

  showCount(load());
  renderCart();
})();
