"""Simulated traffic: a month of visitors of a shop, so that a new user of the demo sees the
dashboard's charts and a running experiment at once, and the benchmarks have millions of
events to roll up.

Every simulated visitor's id starts with `sim-`, and the rollups count their events apart too
(dimension "total", key "simulated"), so the dashboard says how much of what it shows is
simulated. Visitors come through the shop's real experiments and hold-out (the same hash as
real visitors: server/measure/experiments.py), see the home page's hero and panels, click
some of them and buy at rates that differ by variant, by the numbers below: a made-up
world, written down so that a report over it can be checked against its truth.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Sequence

from server.measure.experiments import EXPOSURE, HOLDOUT_ID, in_holdout, place
from server.models import CatalogItem, Event

if TYPE_CHECKING:
    from server.shops import ShopConfig
    from server.store import Store

PREFIX = "sim-"
WRITE_EVERY = 100_000  # events


@dataclass(frozen=True)
class World:
    """The simulated visitors' behaviour."""

    visitors_per_day: int = 150
    days: int = 30
    return_rate: float = 0.3  # share of visitors who come back for a second visit
    pages_per_visit: tuple[int, int] = (1, 6)
    recs_click_rate: float = 0.08  # a panel seen, an item of it clicked
    banner_click_rate: float = 0.05
    buy_rate: float = 0.03  # per visit, for a visitor who sees personalization's control
    # What each variant does to the buy rate (a variant not named: 1.0); the hold-out's.
    variant_lift: dict[str, float] = field(default_factory=lambda: {"new-this-week": 1.25})
    holdout_lift: float = 0.8
    search_rate: float = 0.15  # per visit's first page: a search in the shop's own box
    seed: int = 7


# What the simulated visitors search for, and how many results the shop's search had (0: none).
SEARCHES = (
    ("christmas lights", 24), ("bag", 24), ("candle", 18), ("lantern", 7), ("mug", 9), ("tea towel", 6),
    ("fairy lights", 12), ("vintage", 20), ("doormat", 4), ("gift wrap", 0), ("advent calendar", 0),
    ("wreath", 0), ("cushion cover", 3), ("xmas jumper", 0),
)


@dataclass
class Simulated:
    visitors: int = 0
    events: int = 0
    orders: int = 0
    revenue: float = 0.0


def simulate(store: "Store", shop: "ShopConfig", items: Sequence[CatalogItem], world: World = World(),
             until: datetime | None = None) -> Simulated:
    """Write `world.days` days of simulated traffic, ending at `until` (default: now), into the
    store's events as they are (Store.add_measurement_events: no visitor rows, no trends)."""
    rng = random.Random(world.seed)
    end = (until or datetime.utcnow()).replace(microsecond=0)
    start = end - timedelta(days=world.days)
    priced = [i for i in items if i.price] or list(items)
    rows: list[tuple[str, Event]] = []
    done = Simulated()
    hero = shop.slot_experiment("home-hero")
    n = 0
    for day in range(world.days):
        for _ in range(world.visitors_per_day):
            n += 1
            visitor = PREFIX + hashlib.sha256(f"{world.seed}:{n}".encode()).hexdigest()[:20]
            first = start + timedelta(days=day, seconds=rng.randrange(7 * 3600, 23 * 3600))
            if first >= end:
                continue
            visits = [first]
            if rng.random() < world.return_rate:
                later = first + timedelta(days=rng.uniform(0.5, 10))
                if later < end:
                    visits.append(later)
            done.visitors += 1
            rows += _visitor(rng, world, shop, hero, visitor, visits, priced, done)
            if len(rows) >= WRITE_EVERY:  # millions of events are written as they are made, not held
                done.events += store.add_measurement_events(shop.id, rows)
                rows = []
    done.events += store.add_measurement_events(shop.id, rows)
    return done


def _visitor(rng, world: World, shop, hero, visitor: str, visits: list[datetime], items, done: Simulated) -> list:
    held = in_holdout(shop.holdout, shop.id, visitor)
    variant = hero.pick(place(hero.key, visitor)).id if hero is not None and hero.enabled and not held else ""
    lift = world.holdout_lift if held else world.variant_lift.get(variant, 1.0)
    out: list[tuple[str, Event]] = []
    seq = 0

    def add(kind: str, at: datetime, **kw) -> None:
        nonlocal seq
        seq += 1
        out.append((visitor, Event(f"{visitor}-{seq}", kind, at, **kw)))

    # Searches draw from their own generator: the rest of the traffic is what it was without them.
    searching = random.Random(f"{world.seed}:{visitor}:search")
    exposed = False
    for visit in visits:
        at = visit
        for page in range(rng.randint(*world.pages_per_visit)):
            add("page_view", at, props={"page_type": "home" if page == 0 else "product", "simulated": True})
            if page == 0:
                if shop.holdout > 0 and not exposed:
                    add(EXPOSURE, at, props={"experiment": HOLDOUT_ID, "variant": "holdout" if held else "personalized"})
                if variant and not exposed:
                    add(EXPOSURE, at, props={"experiment": hero.id, "variant": variant, "slot": "home-hero"})
                exposed = True
                tag = {"experiment": hero.id, "variant": variant} if variant else {}
                if not held:
                    campaign = "hero-new-this-week" if variant == "new-this-week" else "returning-christmas"
                    if variant == "new-this-week" or visit is not visits[0]:
                        add("view_promotion", at, campaign=campaign, props={"creative_slot": "home-hero", **tag})
                        if rng.random() < world.banner_click_rate:
                            add("select_promotion", at + timedelta(seconds=8), campaign=campaign,
                                props={"creative_slot": "home-hero", **tag})
                if searching.random() < world.search_rate:  # the shop's own search box, with its result count
                    term, results = searching.choice(SEARCHES)
                    add("search", at + timedelta(seconds=5), props={"search_term": term, "results": results,
                                                                     "simulated": True})
                strategy = "bestsellers" if held or visit is visits[0] else "top_picks"
                add("view_item_list", at, campaign="home-recs",
                    props={"item_list_id": "home-recs", "item_list_name": strategy})
                if rng.random() < world.recs_click_rate:
                    item = rng.choice(items)
                    add("select_item", at + timedelta(seconds=12), campaign="home-recs", item_id=item.item_id,
                        props={"item_list_id": "home-recs", "item_list_name": strategy})
            at += timedelta(seconds=rng.randint(20, 240))
        if rng.random() < world.buy_rate * lift:
            lines = [rng.choice(items) for _ in range(rng.randint(1, 4))]
            value = round(sum((i.price or 5.0) * rng.randint(1, 3) for i in lines), 2)
            for n, line in enumerate(lines):  # each line went into the cart first (the funnel's step)
                add("add_to_cart", at - timedelta(seconds=20 * (len(lines) - n)), item_id=line.item_id,
                    props={"quantity": 1, "simulated": True})
            add("purchase", at, value=value, currency=items[0].currency if items else "USD",
                order_id=f"{visitor}-{len(out)}", props={"items": [{"item_id": i.item_id} for i in lines]})
            done.orders += 1
            done.revenue += value
    return out
