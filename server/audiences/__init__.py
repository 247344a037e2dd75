"""Audiences: which of a shop's segments a visitor is in right now, and why.

The built-in lifecycle audiences (new, returning, prospect, first-time and repeat customers,
loyalty tiers, lapsed customers, cart abandoners) and the shop's own rules (`[audiences]` in
its config, config.py) are worked out once per request from the VisitorContext the request
already has (facts.py): no store read. Campaigns target them (server/campaigns.py), templates
and `_context=1` list them, and the store counts how many visitors each holds
(server/store/audience_sql.py, `vitrine audiences`). docs/audiences.md documents them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from server.audiences.book import FORCED, NO_AUDIENCES, AudienceBook, AudienceResult, Membership
from server.audiences.config import AudiencesConfig, compile_audiences
from server.audiences.facts import FACTS, VisitorFacts
from server.models import utcnow

if TYPE_CHECKING:
    from server.catalog import Catalog
    from server.context import VisitorContext
    from server.navigation import Navigator

MAX_FORCED = 20


class AudienceSource:
    """Works out a visitor's membership in one shop's audiences (what VisitorContext.audiences calls)."""

    def __init__(self, book: AudienceBook, catalog: "Catalog | None", navigator: "Navigator | None",
                 visit_timeout_s: int) -> None:
        self.book = book
        self.catalog = catalog
        self.navigator = navigator
        self.visit_timeout_s = visit_timeout_s

    def __call__(self, ctx: "VisitorContext", forced: Iterable[str] = ()) -> Membership:
        catalog = self.catalog.shop(ctx.shop) if self.catalog is not None else None
        navigator = self.navigator
        affinity = (lambda: navigator.affinity(ctx)) if navigator is not None else None
        facts = VisitorFacts(ctx, catalog, affinity, ctx.now or utcnow(), self.visit_timeout_s)
        return self.book.evaluate(facts, forced)


class Audiences:
    """The service: one per process, with what every shop's evaluation reads from memory."""

    def __init__(self, catalog: "Catalog | None", navigator: "Navigator | None", visit_timeout_s: int) -> None:
        self.catalog = catalog
        self.navigator = navigator
        self.visit_timeout_s = visit_timeout_s

    def for_shop(self, book: AudienceBook) -> AudienceSource:
        return AudienceSource(book, self.catalog, self.navigator, self.visit_timeout_s)


def with_forced(
    source: "Callable[[VisitorContext], Membership] | None", audiences: str,
) -> "Callable[[VisitorContext], Membership]":
    """QA's `audience=lapsed,cart_abandoner`: the visitor is in these audiences whatever their
    facts say (and so in the shop's audiences that name them); the others are worked out as ever."""
    forced = [a.strip() for a in audiences.split(",") if a.strip()][:MAX_FORCED]

    def membership(ctx: "VisitorContext") -> Membership:
        if isinstance(source, AudienceSource):
            return source(ctx, forced=forced)
        base = source(ctx) if source is not None else NO_AUDIENCES
        listed = {r.id for r in base.results}
        return Membership(tuple(
            AudienceResult(r.id, True, FORCED, r.builtin) if r.id in forced else r for r in base.results
        ) + tuple(AudienceResult(a, True, FORCED) for a in forced if a not in listed))

    return membership


__all__ = [
    "FACTS", "NO_AUDIENCES", "AudienceBook", "AudienceResult", "AudienceSource", "Audiences", "AudiencesConfig",
    "Membership", "VisitorFacts", "compile_audiences", "with_forced",
]
