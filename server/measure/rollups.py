"""The `rollups` job: what the events say, counted by hour and by day (page views,
impressions, clicks, closes, add to carts, orders and revenue in all and credited to each
campaign, slot, strategy and variant; page views, visitors, orders and revenue per audience), and each experiment's totals per variant, so that reports and the
dashboard read a few rows instead of the events (server/store/measure_sql.py does the SQL).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from server.measure.attribution import Window
from server.models import utcnow

if TYPE_CHECKING:
    from server.worker import Job


def run_rollups(services: Any, lag_s: float | None = None, budget_s: float = 50.0) -> str:
    """Read every event stored since the last run (idempotent: what was read is marked in the
    same transaction as what was counted). `lag_s`: instead of the setting (0 when nothing
    else writes, right after a simulation)."""
    timeout = timedelta(minutes=services.settings.visit_timeout_minutes)
    cache: dict[str, Window] = {}

    def windows(shop: str) -> Window:
        if shop not in cache:
            config = services.shops.get(shop)
            days = config.attribution.click_days if config is not None else 7
            cache[shop] = Window(click=timedelta(days=days), visit_timeout=timeout)
        return cache[shop]

    def audiences(shop: str) -> Any:
        config = services.shops.get(shop)
        return config.audience_book if config is not None else None

    lag = services.settings.rollup_lag_s if lag_s is None else lag_s
    run = services.store.roll_up(windows, utcnow(), lag_s=lag, budget_s=budget_s, audiences=audiences)
    behind = "" if run.caught_up else "; more to read next run"
    return (f"{run.events} events read in {run.batches} batches ({len(run.shops)} shops): {run.orders} orders, "
            f"{run.credited} credits, {run.exposures} visitors newly in experiments{behind}")


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("rollups", settings.rollup_interval_s, run_rollups)]
