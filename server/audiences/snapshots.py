"""The `audience-sizes` job: each shop's audiences counted once an hour into today's row of
`audience_snapshots`, so the dashboard can draw their sizes over time (docs/dashboard.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.models import utcnow
from server.shops import ShopConfigError

if TYPE_CHECKING:
    from server.worker import Job

INTERVAL_S = 3600.0  # a day's row is the last count of that day


def snapshot_audiences(services: Any) -> str:
    now = utcnow()
    counted = []
    for shop in services.shops.ids():
        try:
            config = services.shops.get(shop)
        except ShopConfigError:  # the registry logged its problems; the next run tries again
            continue
        if config is None:
            continue
        sizes = services.store.audience_sizes(shop, config.audience_book, now,
                                              services.settings.visit_timeout_minutes * 60)
        services.store.save_audience_sizes(shop, now.date(), {a: n for a, n in sizes.sizes.items() if n is not None}, now)
        counted.append(f"{shop} ({sizes.seconds:.1f} s)")
    return f"audiences counted for {len(counted)} shops: {', '.join(counted)}" if counted else "no shops"


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("audience-sizes", INTERVAL_S, snapshot_audiences)]
