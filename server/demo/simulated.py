"""Simulated traffic for the demo shop's dashboard: visitors who see and click its banners,
popup and panels, fall into the hero experiment and the hold-out, and buy, day by day.
Every visitor id starts with `sim-`, so the simulated rows are told apart from real ones,
and each simulated day's page views are also counted under the rollups' dimension
`simulated`, which the dashboard reads to say that its numbers are partly made up."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from server.measure.experiments import EXPOSURE
from server.models import Event

if TYPE_CHECKING:
    from server.store import Store

SIMULATED_PREFIX = "sim-"
SIMULATED = "simulated"  # the rollups' dimension of simulated page views
CAMPAIGNS = (("hero-new-this-week", "home-hero"), ("welcome", "popup"), ("free-delivery", "top-banner"))
PANELS = (("home-recs", "top_picks"), ("product-similar", "similar"), ("cart-recs", "bought_together"))
# Each variant's chance that a visitor buys (the hero's "new-this-week" converts better).
BUY_RATE = {"control": 0.06, "new-this-week": 0.085, "holdout": 0.05}


def simulate_traffic(store: "Store", shop: str, days: int, now: datetime, visitors_per_day: int = 40,
                     seed: int = 1, experiment: str = "hero") -> int:
    """Record `days` days of visitors up to `now` (weekends busier); how many events."""
    rng = random.Random(seed)
    written = 0
    views: dict[datetime, int] = {}
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    for d in range(days):
        day = first + timedelta(days=d)
        weekend = 1.3 if day.weekday() >= 5 else 1.0
        count = int(visitors_per_day * weekend * (1 + 0.15 * math.sin(d / 4)))
        for v in range(count):
            start = day + timedelta(seconds=rng.randrange(0, 86_000))
            if start > now:
                continue
            events = _visit(rng, f"{SIMULATED_PREFIX}{seed}-{d}-{v}", start, experiment)
            store.record_events(shop, f"{SIMULATED_PREFIX}{seed}-{d}-{v}", events)
            written += len(events)
            views[day] = views.get(day, 0) + sum(e.type == "page_view" for e in events)
    store.mark_simulated(shop, views)
    return written


def _visit(rng: random.Random, visitor: str, start: datetime, experiment: str) -> list[Event]:
    n = 0

    def event(kind: str, minutes: float, **kw) -> Event:
        nonlocal n
        n += 1
        return Event(f"{visitor}-{n}", kind, start + timedelta(minutes=minutes), **kw)

    held = rng.random() < 0.05
    variant = "holdout" if held else rng.choice(("control", "new-this-week"))
    out = [event("page_view", 0),
           event(EXPOSURE, 0, props={"experiment": "holdout", "variant": "holdout" if held else "personalized"})]
    clicked = False
    if not held:
        out.append(event(EXPOSURE, 0, props={"experiment": experiment, "variant": variant, "slot": "home-hero"}))
        for campaign, slot in CAMPAIGNS:
            if rng.random() < 0.6:
                props = {"creative_slot": slot}
                if slot == "home-hero":
                    props.update(experiment=experiment, variant=variant)
                out.append(event("view_promotion", 1, campaign=campaign, props=props))
                if rng.random() < (0.09 if variant == "new-this-week" and slot == "home-hero" else 0.05):
                    out.append(event("select_promotion", 2, campaign=campaign, props=props))
                    clicked = True
        for slot, strategy in PANELS:
            if rng.random() < 0.5:
                props = {"item_list_id": slot, "item_list_name": strategy}
                out.append(event("view_item_list", 3, props=props))
                if rng.random() < 0.08:
                    out.append(event("select_item", 4, item_id="85123A", props=props))
                    clicked = True
    for page in range(rng.randrange(0, 4)):
        out.append(event("page_view", 5 + page))
    rate = BUY_RATE[variant] * (1.6 if clicked else 1.0)
    if rng.random() < rate:
        out.append(event("purchase", 12, value=round(rng.uniform(8, 60), 2), currency="GBP",
                         order_id=f"{visitor}-order"))
    return out
