"""How often each term is searched and how often it finds nothing, per shop and UTC day:
what the dashboard's search page reads (docs/search.md#searches-that-find-nothing).

Counted from two places, both off the request's own time: a search Vitrine serves (the
search fragment, a search slot of a page call) is added to the page-view writer's next batch
(server/visitors/page_views.py), and a shop's own `search` event that says how many results
it had (`results`) is counted in the transaction that stores it (server/store/sql.py). Both
end in one upsert per (shop, day, term) that adds to the stored numbers in the database
(`searches = searches + excluded.searches`), so writers in several processes never lose each
other's counts. The rows hold no visitor id, and the term is cut to `MAX_TERM_CHARS`.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from server.models import Event

MAX_TERM_CHARS = 100

# (shop, day, term) -> [searches, of which found nothing]
Tally = dict[tuple[str, date, str], list[int]]


def counted_term(term: str) -> str:
    """The term as counted: lowercased, spaces squeezed, at most MAX_TERM_CHARS characters;
    control characters are spaces (the dashboard shows no invisible difference between terms)."""
    printable = "".join(c if c.isprintable() else " " for c in term)
    return " ".join(printable.lower().split())[:MAX_TERM_CHARS].rstrip()


def add_search(tally: Tally, shop: str, day: date, term: str, results: int) -> bool:
    """Count one search of `term` that found `results` items; False for an empty term."""
    term = counted_term(term)
    if not term:
        return False
    counts = tally.setdefault((shop, day, term), [0, 0])
    counts[0] += 1
    counts[1] += 1 if results == 0 else 0
    return True


def add_search_event(tally: Tally, shop: str, event: "Event") -> None:
    """Count a stored `search` event that says how many results it had (`results`); any other
    event, or one without a whole-number `results`, counts nothing."""
    props = event.props or {}
    if event.type == "search" and isinstance(props.get("results"), int):
        add_search(tally, shop, event.ts.date(), str(props.get("search_term", "")), props["results"])


def merge(into: Tally, tallies: Iterable[Tally]) -> Tally:
    """`into` with every count of `tallies` added."""
    for tally in tallies:
        for key, (searches, zero) in tally.items():
            counts = into.setdefault(key, [0, 0])
            counts[0] += searches
            counts[1] += zero
    return into
