"""Time-decayed popularity: every event adds a weight that halves every half-life.

Scores are kept as logarithms relative to a fixed epoch: an event of weight w at time t
adds w * 2^((t - EPOCH) / half_life), stored as its log. Decay then never needs a sweep
over old rows: every score decays at the same rate, so ordering by the stored value is the
ordering by decayed popularity at any moment, and an update is one log-add-exp.
"""

from __future__ import annotations

import math
from datetime import datetime

EPOCH = datetime(2020, 1, 1)
# Weight of an interaction in the trending scores, by event type.
WEIGHTS = {"view_item": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
GLOBAL = ""  # the scope of the whole shop; "country:GB" is the scope of one country


def contribution(weight: float, ts: datetime, half_life_hours: float) -> float:
    """log(weight * 2^((ts - EPOCH) / half_life))."""
    hours = (ts - EPOCH).total_seconds() / 3600.0
    return math.log(weight) + hours / half_life_hours * math.log(2.0)


def log_add(a: float | None, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    if a is None:
        return b
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log1p(math.exp(low - high))


def scopes(country: str) -> list[str]:
    return [GLOBAL, f"country:{country}"] if country else [GLOBAL]


def decayed(log_score: float, now: datetime, half_life_hours: float) -> float:
    """The score as a plain number at `now` (for display and debugging)."""
    return math.exp(log_score - contribution(1.0, now, half_life_hours))
