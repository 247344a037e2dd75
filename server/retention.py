"""Retention: which events are deleted after `event_retention_days`, which visitors after
`visitor_retention_days` without a visit, and the job that does both.

Events purged: what says little a year on and makes most of the rows. Page views, list and
promotion impressions (`view_item_list`, `view_promotion`) and clicks (`select_item`,
`select_promotion`) feed only the recent visitor state, the category affinity (halved
every week: a year-old view weighs nothing) and future reports; searches are what visitors
typed, free text that may be personal, and count for popular searches over 30 days only.
The dashboard's counts of searches per day and term (search_counts, no visitor in them) go
with them: a day's counts once the day is older than `event_retention_days`.

Events kept: what the recommendation model learns from, views of items, cart adds, purchases
and ratings (`server.recommend.dataset.EVENT_WEIGHTS`): which items go together stays true
longer than a year, and the demo shop's history is a year long. Also kept: closed campaigns
(`close_promotion`, so a popup closed stays closed) and every type not named here, so a
new kind of event is never deleted before someone decided it may be.

Visitors: one not seen for `visitor_retention_days` (13 months by default) goes with every
row about them, kept events included, through the same deletion as a visitor's own request
(server/privacy/data.py). Imported customers (`u:` ids) are not: their last visit is the
newest order of the shop's own history, which the shop keeps or erases itself
(`vitrine privacy delete --customer ID`). Nor is the shared measurement id of visitors
without a profile (ANONYMOUS_VISITOR), which is nobody: its events, closes included (no
popup is kept closed for it), go when they are older than `event_retention_days`.

Forgotten visitors: a visitor deleted at their own request leaves a SHA-256 of their id
(forgotten_visitors), so that a batch still on its way with their token does not make them
again; it goes when the token it guards against has expired (`token_max_age_days`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from server.consent.rules import ANALYTICS_EVENTS
from server.models import ANONYMOUS_VISITOR, utcnow
from server.privacy.data import delete_inactive_visitors

if TYPE_CHECKING:
    from server.worker import Job

PURGED_TYPES = ("page_view", "view_item_list", "view_promotion", "select_item", "select_promotion", "search")
PURGE_CHUNK = 5000  # event rows deleted per transaction
VISITOR_PURGE_CHUNK = 500  # visitors (with all their rows) deleted per transaction


def run_purge(services: Any) -> str:
    """The `purge` job: delete every shop's purged events older than the event retention, then
    its visitors inactive for longer than the visitor retention (idempotent: a second run
    finds nothing more)."""
    return f"{_purge_events(services)}; {_purge_visitors(services)}; {_purge_forgotten(services)}"


def _purge_events(services: Any) -> str:
    days = services.settings.event_retention_days
    if days <= 0:
        return "events: off (event_retention_days = 0)"
    before = utcnow() - timedelta(days=days)
    store = services.store
    deleted = {
        shop: store.purge_events(shop, PURGED_TYPES, before, PURGE_CHUNK)
        + store.purge_events(shop, sorted(ANALYTICS_EVENTS), before, PURGE_CHUNK, visitor_id=ANONYMOUS_VISITOR)
        for shop in services.shops.ids()
    }
    # A day's counts of searches per term go with that day's search events.
    counts = store.purge_search_counts(before.date())
    return f"events older than {days} days deleted ({_per_shop(deleted)}; search counts: {counts})"


def _purge_visitors(services: Any) -> str:
    days = services.settings.visitor_retention_days
    if days <= 0:
        return "visitors: off (visitor_retention_days = 0)"
    before = utcnow() - timedelta(days=days)
    deleted = {
        shop: delete_inactive_visitors(services.store, shop, before, VISITOR_PURGE_CHUNK)
        for shop in services.shops.ids()
    }
    return f"visitors unseen for {days} days deleted ({_per_shop(deleted)})"


def _purge_forgotten(services: Any) -> str:
    """The hashed ids of visitors deleted at their request go once no token of theirs can be
    valid any more: a token lives token_max_age_days."""
    days = services.settings.token_max_age_days
    gone = services.store.purge_forgotten(utcnow() - timedelta(days=days))
    return f"ids of visitors forgotten over {days} days ago deleted (all shops: {gone})"


def _per_shop(deleted: dict[str, int]) -> str:
    return ", ".join(f"{shop}: {n}" for shop, n in deleted.items()) or "no shops"


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("purge", settings.purge_interval_s, run_purge)]
