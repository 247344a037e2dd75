"""Category affinity: how much a visitor cares about each category, from what they did lately.

Each view counts 1, a cart add 3, a purchase 5 (the weights trending uses), halved every
`half_life_hours`. Navigation order and personalized search both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping

from server.models import Event

WEIGHTS = {"view_item": 1.0, "page_view": 1.0, "select_item": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


@dataclass
class Affinity:
    scores: dict[str, float] = field(default_factory=dict)  # category -> decayed weight
    evidence: dict[str, int] = field(default_factory=dict)  # category -> number of events behind it

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    def share(self, category: str) -> float:
        """The category's part of all affinity, 0..1 (0 for a visitor with no history)."""
        total = self.total
        return self.scores.get(category, 0.0) / total if total else 0.0

    def shares(self) -> dict[str, float]:
        """Every category's share at once (share() sums all the scores on each call): for
        ranking many items or entries; a category not in it has 0."""
        total = self.total
        return {c: v / total for c, v in self.scores.items()} if total else {}

    def ranked(self) -> list[str]:
        return sorted(self.scores, key=lambda c: (-self.scores[c], c))


def category_affinity(
    events: Iterable[Event], category_of: Mapping[str, str], now: datetime, half_life_hours: float
) -> Affinity:
    """Affinity from a visitor's events; `category_of` maps the events' items to categories."""
    affinity = Affinity()
    for event in events:
        weight = WEIGHTS.get(event.type)
        if weight is None:
            continue
        hours = max(0.0, (now - event.ts).total_seconds() / 3600.0)
        decayed = weight * math.pow(0.5, hours / half_life_hours)
        for item in event.item_ids():
            category = category_of.get(item)
            if category:
                affinity.scores[category] = affinity.scores.get(category, 0.0) + decayed
                affinity.evidence[category] = affinity.evidence.get(category, 0) + 1
    return affinity
