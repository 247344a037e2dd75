"""What the dashboard's pages show, read from the rollups (never the events): a date range,
the shop's totals and days, the numbers of each campaign, slot, strategy and variant with
their funnel, and each audience's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from server.store import Store

PRESETS = (7, 30, 90)
MAX_DAYS = 731
COUNTERS = ("visitors", "page_views", "impressions", "clicks", "orders", "revenue", "view_orders", "view_revenue")
# The rollups' row of each order credited to anything, counted once (server/store/measure_sql.py).
CREDITED_BY = "credited"
SIMULATED = "simulated"  # the totals' key of simulated traffic (server/demo/simulate.py)
DIMENSIONS = {"campaign": "Campaigns", "slot": "Slots and panels", "strategy": "Strategies", "variant": "Experiment variants"}


class RangeError(ValueError):
    """A date range the dashboard cannot show; the message says why."""


@dataclass(frozen=True)
class DateRange:
    first: date  # both days included
    last: date
    preset: int | None  # 7, 30 or 90 when chosen by a preset

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time())

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time())

    def query(self) -> str:
        if self.preset:
            return f"days={self.preset}"
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"


def date_range(params: Mapping[str, str], today: date) -> DateRange:
    """`?days=7|30|90` (the last so many days, today included) or `?from=YYYY-MM-DD&to=YYYY-MM-DD`;
    neither: the last 30 days."""
    start, end = params.get("from", "").strip(), params.get("to", "").strip()
    if start or end:
        try:
            first = date.fromisoformat(start) if start else None
            last = date.fromisoformat(end) if end else today
        except ValueError:
            raise RangeError("from and to are dates written YYYY-MM-DD") from None
        if first is None:
            first = last - timedelta(days=29)
        if first > last:
            raise RangeError("the range's first day (from) comes after its last (to)")
        if (last - first).days + 1 > MAX_DAYS:
            raise RangeError(f"a range has at most {MAX_DAYS} days")
        return DateRange(first, last, None)
    raw = params.get("days", "30").strip()
    if raw not in {str(p) for p in PRESETS}:
        raise RangeError(f"days is one of {', '.join(map(str, PRESETS))}")
    days = int(raw)
    return DateRange(today - timedelta(days=days - 1), today, days)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def overview(store: "Store", shop: str, span: DateRange) -> dict[str, Any]:
    """The shop's totals over the range and its numbers day by day (every day of the range,
    zero where nothing was counted), with the orders and revenue credited to what it showed."""
    rows = (store.rollups(shop, "day", span.since, span.until, "total")
            + store.rollups(shop, "day", span.since, span.until, CREDITED_BY))
    # The shop's totals are key ""; key "simulated" counts the simulated part of them again.
    simulated = sum(r["page_views"] for r in rows if r["dimension"] == "total" and r["key"] == SIMULATED)
    rows = [r for r in rows if r["key"] == ""]
    by_day: dict[date, dict[str, float]] = {span.first + timedelta(days=n): dict.fromkeys(COUNTERS, 0)
                                            for n in range(span.days)}
    for row in rows:
        day = by_day.get(row["start"].date())
        if day is None:
            continue
        if row["dimension"] == "total":
            for name in ("visitors", "page_views", "impressions", "clicks", "orders", "revenue"):
                day[name] += row[name]
        elif row["dimension"] == CREDITED_BY:
            day["credited_orders"] = day.get("credited_orders", 0) + row["orders"] + row["view_orders"]
            day["credited_revenue"] = day.get("credited_revenue", 0.0) + row["revenue"] + row["view_revenue"]
    days = [{"day": d.isoformat(), "credited_orders": 0, "credited_revenue": 0.0,
             **{k: v for k, v in values.items() if k not in ("view_orders", "view_revenue")}}
            for d, values in by_day.items()]
    for entry in days:
        entry["click_through"] = ratio(entry["clicks"], entry["impressions"])
    totals = {name: sum(d[name] for d in days) for name in
              ("visitors", "page_views", "impressions", "clicks", "orders", "revenue", "credited_orders", "credited_revenue")}
    totals["click_through"] = ratio(totals["clicks"], totals["impressions"])
    totals["revenue"] = round(totals["revenue"], 2)
    totals["credited_revenue"] = round(totals["credited_revenue"], 2)
    return {"from": span.first.isoformat(), "to": span.last.isoformat(), "totals": totals, "days": days,
            "simulated_page_views": simulated}


def breakdown(store: "Store", shop: str, span: DateRange) -> dict[str, list[dict[str, Any]]]:
    """Per dimension (campaign, slot, strategy, variant), each key's impressions, clicks,
    click-through and the orders and revenue credited to it by a click and by a view, most
    impressions first."""
    found: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DIMENSIONS}
    for row in store.rollup_sums(shop, "day", span.since, span.until, list(DIMENSIONS)):
        found[row["dimension"]][row["key"]] = {
            "key": row["key"], **{name: row[name] or 0 for name in
                                  ("impressions", "clicks", "closes", "carts", "orders", "revenue", "view_orders",
                                   "view_revenue")}}
    out = {}
    for dimension, entries in found.items():
        listed = sorted(entries.values(), key=lambda e: (-e["impressions"], -e["clicks"], e["key"]))
        for entry in listed:
            entry["click_through"] = ratio(entry["clicks"], entry["impressions"])
            entry["click_to_cart"] = ratio(entry["carts"], entry["clicks"])
            entry["cart_to_order"] = ratio(entry["orders"], entry["carts"])
            entry["revenue"], entry["view_revenue"] = round(entry["revenue"], 2), round(entry["view_revenue"], 2)
        out[dimension] = listed
    return out


FUNNEL = (("impressions", "Impressions"), ("clicks", "Clicks"), ("carts", "Added to cart after a click"),
          ("orders", "Orders after a click"))


def funnel(store: "Store", shop: str, span: DateRange) -> list[dict[str, Any]]:
    """The shop's funnel over the range: impressions, clicks, add to carts credited to a click
    (within the click window) and orders credited to a click, each add to cart and order once
    however many things were clicked before it; each step with its rate from the one before."""
    sums = {(r["dimension"], r["key"]): r for r in store.rollup_sums(shop, "day", span.since, span.until,
                                                                     ["total", CREDITED_BY])}
    total, credited = sums.get(("total", ""), {}), sums.get((CREDITED_BY, ""), {})
    counts = [total.get("impressions") or 0, total.get("clicks") or 0, credited.get("carts") or 0,
              credited.get("orders") or 0]
    return [{"step": step, "label": label, "count": count, "rate": ratio(count, counts[n - 1]) if n else None}
            for n, ((step, label), count) in enumerate(zip(FUNNEL, counts))]


def audience_numbers(store: "Store", shop: str, span: DateRange) -> dict[str, dict[str, Any]]:
    """Each audience's page views, visitors (each day's, summed), orders and revenue over the
    range, by the audiences the visitors were in when the rollup job read their events."""
    return {row["key"]: {"page_views": row["page_views"] or 0, "visitors": row["visitors"] or 0,
                         "orders": row["orders"] or 0, "revenue": round(row["revenue"] or 0.0, 2)}
            for row in store.rollup_sums(shop, "day", span.since, span.until, ["audience"])}
