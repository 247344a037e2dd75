"""The demo shop: its data files, the script that derives them from the Online Retail data, and
the shift that makes its history a live shop's."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Sequence

from server.models import Interaction


def shifted_history(rows: Sequence[Interaction], today: date) -> tuple[list[Interaction], int]:
    """The demo's interactions (December 2010 to December 2011) moved forward by whole days so
    that the newest is on the day before `today` (the demo's first start): recency-based
    audiences (lapsed, back after three months), trending and the model's recent weights
    then read them as a live shop's, and the weekdays of the year stay together. Returns
    the rows and the days they moved."""
    if not rows:
        return list(rows), 0
    newest = max(r.timestamp for r in rows).date()
    days = (today - timedelta(days=1) - newest).days
    moved = timedelta(days=days)
    return [dataclasses.replace(r, timestamp=r.timestamp + moved) for r in rows], days
