"""The demo's cart reminder: a visitor who left things in the cart sees them (titles, prices,
quantities, from the visitor state and the catalog) in a popup on their next visit."""

from __future__ import annotations

from datetime import timedelta

from conftest import record_history
from server.models import utcnow


def cart_left(client, services, hours_ago: float) -> str:
    """A visitor who put two items in the cart `hours_ago` and left: their token."""
    token = client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": []}).json()["token"]
    client.cookies.clear()
    at = (utcnow() - timedelta(hours=hours_ago)).isoformat()
    record_history(services, "demo", token,
                   {"event_id": f"c1-{token[-8:]}", "type": "add_to_cart", "ts": at, "items": [{"item_id": "71053", "quantity": 2, "price": 3.39}]},
                   {"event_id": f"c2-{token[-8:]}", "type": "add_to_cart", "ts": at, "items": [{"item_id": "22112", "quantity": 1}]})
    return token


def popups_at(client, token: str, later: timedelta, context: bool = False):
    now = (utcnow() + later).isoformat(timespec="minutes") + "Z"
    url = f"/v1/fragments/popup?shop=demo&now={now}" + ("&_context=1" if context else "")
    return client.get(url, headers={"X-Visitor-Token": token})


def test_the_next_visit_shows_the_carts_items(client, services) -> None:
    token = cart_left(client, services, hours_ago=2)
    response = popups_at(client, token, timedelta(hours=1))  # a new visit: 30 minutes without a page view
    assert response.headers["x-vitrine-campaigns"].split(",")[0] == "cart-reminder"
    html = response.text
    assert "Still thinking it over?" in html and "Your basket of £11.73 is waiting" in html
    assert "White Metal Lantern" in html and "2 &times; £3.39" in html
    assert "Chocolate Hot Water Bottle" in html and "1 &times; £4.95" in html  # the catalog's price
    assert 'data-item-id="71053"' in html and 'href="http://' in html  # the demo's absolute links


def test_only_on_the_first_page_of_the_visit_and_not_for_a_fresh_cart(client, services) -> None:
    token = cart_left(client, services, hours_ago=2)
    assert popups_at(client, token, timedelta(0)).headers["x-vitrine-campaigns"].startswith("cart-reminder")
    client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": []}, headers={"X-Visitor-Token": token})
    client.cookies.clear()
    assert services.contexts.page_views.flush()
    second_page = popups_at(client, token, timedelta(0), context=True).json()
    [decision] = [d for d in second_page["decisions"] if d["campaign"] == "cart-reminder"]
    assert not decision["show"] and "back_with_cart" in " ".join(decision["reasons"])
    fresh = cart_left(client, services, hours_ago=0.2)  # not abandoned yet (cart_abandon_minutes: 60)
    assert "cart-reminder" not in popups_at(client, fresh, timedelta(minutes=10)).headers.get("x-vitrine-campaigns", "")
