"""Event retention: which events are deleted after `event_retention_days`, and the job that does it.

Purged: what says little a year on and makes most of the rows. Page views, list and
promotion impressions (`view_item_list`, `view_promotion`) and clicks (`select_item`,
`select_promotion`) feed only the recent visitor state, the category affinity (halved
every week: a year-old view weighs nothing) and future reports; searches are what visitors
typed, free text that may be personal, and count for popular searches over 30 days only.

Kept: what the recommendation model learns from, views of items, cart adds, purchases and
ratings (`server.recommend.dataset.EVENT_WEIGHTS`): which items go together stays true
longer than a year, and the demo shop's history is from 2010. Also kept: closed campaigns
(`close_promotion`, so a popup closed stays closed) and every type not named here, so a
new kind of event is never deleted before someone decided it may be.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from server.models import utcnow

if TYPE_CHECKING:
    from server.worker import Job

PURGED_TYPES = ("page_view", "view_item_list", "view_promotion", "select_item", "select_promotion", "search")
PURGE_CHUNK = 5000  # rows deleted per transaction


def run_purge(services: Any) -> str:
    """The `purge` job: delete every shop's purged events older than the retention
    (idempotent: a second run finds nothing more)."""
    days = services.settings.event_retention_days
    if days <= 0:
        return "off (event_retention_days = 0)"
    before = utcnow() - timedelta(days=days)
    deleted = {
        shop: services.store.purge_events(shop, PURGED_TYPES, before, PURGE_CHUNK) for shop in services.shops.ids()
    }
    listed = ", ".join(f"{shop}: {n}" for shop, n in deleted.items()) or "no shops"
    return f"events older than {days} days deleted ({listed})"


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("purge", settings.purge_interval_s, run_purge)]
