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
