"""The demo's history, moved so that it ends the day before the demo first starts."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from server.cli import DEMO_DIR, _import_interactions
from server.demo import shifted_history
from server.imports import read_interactions
from server.models import utcnow
from server.store.schema import events

FILE = DEMO_DIR / "data" / "interactions.csv"


def test_the_history_ends_the_day_before_and_keeps_its_spacing_and_weekdays() -> None:
    rows = read_interactions(FILE)
    moved, days = shifted_history(rows, date(2026, 12, 2))
    assert max(r.timestamp for r in moved).date() == date(2026, 12, 1)
    assert days > 0 and all(m.timestamp - r.timestamp == timedelta(days=days) for r, m in zip(rows, moved))
    assert [(m.user_id, m.item_id, m.event, m.value) for m in moved] == [(r.user_id, r.item_id, r.event, r.value) for r in rows]
    assert moved[0].timestamp.time() == rows[0].timestamp.time()
    assert shifted_history([], date(2026, 12, 2)) == ([], 0)


def test_the_demo_import_stores_the_moved_history(services) -> None:
    _import_interactions(services, "demo", FILE, shift=True)
    with services.store.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(events.c.ts)).where(events.c.shop == "demo")).scalar_one()
    assert newest.date() == utcnow().date() - timedelta(days=1)
