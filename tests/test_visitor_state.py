"""The visitor state's storage form: read back as written, and anything else is an empty state."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from server.models import Event
from server.visitors.state import EMPTY, VisitorState

T0 = datetime(2026, 11, 30, 12, 0, 0, 123000)


def test_the_state_reads_back_as_written_with_its_times_to_the_millisecond() -> None:
    state = EMPTY.add([
        Event(event_id="e1", type="view_item", ts=T0, item_id="a"),
        Event(event_id="e2", type="search", ts=T0 + timedelta(seconds=1.5), props={"search_term": "lantern"}),
        Event(event_id="e3", type="close_promotion", ts=T0, campaign="welcome"),
        Event(event_id="e4", type="view_item", ts=datetime(1969, 7, 20, 20, 17), item_id="moon"),
    ])
    back = VisitorState.from_json(state.to_json())
    assert back == state
    assert [(e.type, e.ts, e.items, e.term) for e in back.events()] == [
        ("search", T0 + timedelta(seconds=1.5), (), "lantern"), ("view_item", T0, ("a",), ""),
        ("view_item", datetime(1969, 7, 20, 20, 17), ("moon",), ""),
    ]
    assert back.closed == {"welcome"} and back.events()[0].props == {"search_term": "lantern"}


@pytest.mark.parametrize("stored", [
    None, "text", [], {"v": 2, "recent": []}, {"v": 1, "recent": [["view_item", "soon", ["a"], ""]]},
    {"v": 1, "recent": [["view_item", 1.0, ["a"]]]}, {"v": 1, "recent": [[3, 1.0, ["a"], ""]]},
    {"v": 1, "recent": [["view_item", 1.0, ["a"], 7]]}, {"v": 1, "recent": [], "closed": [["x"]]},
])
def test_anything_unreadable_is_an_empty_state(stored) -> None:
    assert VisitorState.from_json(stored) is EMPTY


def test_a_text_that_is_not_json_is_an_empty_state() -> None:
    for text in ("", None, "{", "[1, 2", '{"v": 1, "recent": [[', "\ufffd"):
        assert VisitorState.from_text(text) is EMPTY
    state = EMPTY.add([Event(event_id="e1", type="view_item", ts=T0, item_id="a")])
    assert VisitorState.from_text(state.to_text()) == state


def test_the_state_cache_gives_the_parsed_state_while_the_text_is_the_same() -> None:
    from server.visitors.state import StateCache

    cache = StateCache(max_visitors=2)
    one = EMPTY.add([Event(event_id="e1", type="view_item", ts=T0, item_id="a")])
    two = one.add([Event(event_id="e2", type="add_to_cart", ts=T0 + timedelta(seconds=1), item_id="b")])
    first = cache.read(("s", "v1"), one.to_text())
    assert first == one and cache.read(("s", "v1"), one.to_text()) is first  # parsed once
    # Another text (another writer wrote the row) is parsed anew, whoever cached what.
    assert cache.read(("s", "v1"), two.to_text()) == two
    cache.remember(("s", "v2"), one.to_text(), one)
    assert cache.read(("s", "v2"), one.to_text()) is one
    cache.read(("s", "v3"), two.to_text())
    assert len(cache) == 2 and cache.read(("s", "v1"), "not json") is EMPTY
    # Its events are shared between requests: a caller changing its list changes nothing.
    events = first.events()
    events.clear()
    assert len(first.events()) == 1


def cart_event(n: int, type: str, at: datetime, item: str | None = None, lines=None, value=None) -> Event:
    props = {"items": [{"item_id": i, "quantity": q, **({"price": p} if p is not None else {})} for i, q, p in lines]} \
        if lines else None
    return Event(event_id=f"c{n}", type=type, ts=at, item_id=item, value=value, props=props)


def test_the_cart_adds_and_removes_quantities_and_a_purchase_empties_what_came_before_it() -> None:
    state = EMPTY.add([
        cart_event(1, "add_to_cart", T0, lines=[("a", 2, 1.5), ("b", 1, None)]),
        cart_event(2, "add_to_cart", T0 + timedelta(minutes=1), item="c", value=4.0),
        cart_event(3, "add_to_cart", T0 + timedelta(minutes=2), lines=[("a", 1, 1.25)]),
    ])
    assert state.cart == (("b", 1.0, None, state.cart[0][3]), ("c", 1.0, 4.0, state.cart[1][3]),
                          ("a", 3.0, 1.25, state.cart[2][3]))
    assert state.cart_at == T0 + timedelta(minutes=2)
    state = state.add([cart_event(4, "remove_from_cart", T0 + timedelta(minutes=3), lines=[("a", 2, None)]),
                       cart_event(5, "remove_from_cart", T0 + timedelta(minutes=3), item="b")])
    assert [(i, q) for i, q, _, _ in state.cart] == [("c", 1.0), ("a", 1.0)]
    # A purchase empties the lines added before it; one added after stays.
    state = state.add([cart_event(6, "add_to_cart", T0 + timedelta(minutes=5), item="d"),
                       cart_event(7, "purchase", T0 + timedelta(minutes=4), value=5.25)])
    assert [i for i, *_ in state.cart] == ["d"] and state.cart_at == T0 + timedelta(minutes=5)
    # A removal sent from before the line was added does not take it off.
    assert state.add([cart_event(8, "remove_from_cart", T0, item="d")]).cart == state.cart
    assert state.add([cart_event(9, "purchase", T0 + timedelta(minutes=6))]).cart_at is None


def test_the_first_sign_up_or_login_is_kept_and_both_read_back_from_storage() -> None:
    state = EMPTY.add([Event("s1", "login", T0 + timedelta(days=1)), Event("s2", "sign_up", T0)])
    assert state.signed_up_at == T0 and state.recent == ()
    assert state.add([Event("s3", "login", T0 + timedelta(days=2))]).signed_up_at == T0
    with_cart = state.add([cart_event(1, "add_to_cart", T0, lines=[("a", 2, 1.5)])])
    back = VisitorState.from_json(with_cart.to_json())
    assert back == with_cart and back.signed_up_at == T0 and back.cart_at == T0
    assert "cart" not in EMPTY.to_json() and "signed_up" not in EMPTY.to_json()


@pytest.mark.parametrize("stored", [
    {"v": 1, "recent": [], "cart": [["a", "two", None, 1.0]]}, {"v": 1, "recent": [], "cart": [["a", 1.0]]},
    {"v": 1, "recent": [], "signed_up": "yesterday"},
])
def test_an_unreadable_cart_or_sign_up_is_an_empty_state(stored) -> None:
    assert VisitorState.from_json(stored) is EMPTY
