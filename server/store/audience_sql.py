"""Audience sizes in SQL: each audience's rule (server/audiences/) as a condition on a visitors
row, all of them counted in one pass over the shop's visitors, on SQLite and PostgreSQL.

The visitor's counters, dates, country, device class and latest visit are columns; the cart's
lines and the recent history (items viewed, searches) are read from the state's JSON, with the
backend's own JSON functions (json_each on SQLite, jsonb_array_elements on PostgreSQL). A
cart's lines are read only where `cart_at` says there is a cart. The recent history is read
once per visitor whatever the number of rules that need it: every history condition of every
audience is one aggregate of a single pass over each visitor's events (a LATERAL subquery on
PostgreSQL, one grouped subquery joined on the visitor on SQLite, which has no LATERAL).
Facts known only during a request (browser, region, city, language, local time) and the
decaying interest are not in any row: an audience that needs one is not sized, and says why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from server.audiences.book import AudienceBook
from server.audiences.facts import CHOICE, FLAG, NUMBER, SET, VIEWS
from server.audiences.rules import AllOf, AnyOf, FactTest, InAudience, Not, Rule, walk
from server.store.schema import items, visitors as v

# Facts that are one column of the row, as rules compare them.
NUMBER_COLUMNS = {"orders": v.c.orders, "revenue": v.c.revenue, "visits": v.c.visits, "page_views": v.c.page_views}
HISTORY_FACTS = frozenset({"viewed_items", "viewed_categories", "category_views", "searches"})
CHOICE_COLUMNS = {
    "device": v.c.device_class, "country": v.c.country, "medium": v.c.source, "source": v.c.source_name,
    "campaign": v.c.utm_campaign, "referrer": v.c.referrer_domain, "landing_page": v.c.landing_page,
}


@dataclass
class AudienceSizes:
    sizes: dict[str, int | None]  # every audience of the shop; None: not sized
    not_sized: dict[str, str] = field(default_factory=dict)  # why, for those
    visitors: int = 0  # the shop's visitors in all
    seconds: float = 0.0


def count_audiences(
    conn: Connection, dialect: str, shop: str, book: AudienceBook, now: datetime, visit_timeout_s: int,
) -> AudienceSizes:
    started = time.perf_counter()
    compiler = _Compiler(dialect, shop, now, visit_timeout_s)
    not_sized = book.not_sized()
    sized = [a for a in book.ordered if a.id not in not_sized]
    history = compiler.read_history([a.rule for a in sized])
    conditions: dict[str, Any] = {}
    for audience in sized:
        conditions[audience.id] = compiler.condition(audience.rule, conditions)
    labels = {audience_id: f"a{n}" for n, audience_id in enumerate(conditions)}
    columns = [sa.func.count().label("total")] + [
        sa.func.sum(sa.case((condition, 1), else_=0)).label(labels[audience_id])
        for audience_id, condition in conditions.items()
    ]
    if dialect == "postgresql":
        # The planner's estimate of the subqueries (one per visitor row) is far above the JIT
        # threshold, and compiling the statement took longer than running it (0.5 s of 0.53).
        conn.execute(sa.text("SET LOCAL jit = off"))
    query = sa.select(*columns).select_from(history if history is not None else v).where(v.c.shop == shop)
    row = conn.execute(query).one()._mapping
    sizes = {a: (int(row[labels[a]] or 0) if a in labels else None) for a in book.ids()}
    return AudienceSizes(sizes, {a: not_sized[a] for a in book.ids() if a in not_sized}, int(row["total"] or 0),
                         time.perf_counter() - started)


def audience_members(
    conn: Connection, dialect: str, shop: str, book: AudienceBook, now: datetime, visit_timeout_s: int,
    visitor_ids: list[str],
) -> dict[str, tuple[str, ...]]:
    """The audiences each of these visitors is in at `now`, by the conditions the sizes are
    counted with, up to 5,000 visitors a statement: {visitor id: audience ids}, for those in
    any (a visitor without a row is in none; an audience that cannot be sized, in none)."""
    not_sized = book.not_sized()
    sized = [a for a in book.ordered if a.id not in not_sized]
    found: dict[str, tuple[str, ...]] = {}
    if not sized:
        return found
    if dialect == "postgresql":
        conn.execute(sa.text("SET LOCAL jit = off"))  # as count_audiences
    for start in range(0, len(visitor_ids), 5000):
        part = visitor_ids[start : start + 5000]
        compiler = _Compiler(dialect, shop, now, visit_timeout_s)
        history = compiler.read_history([a.rule for a in sized], only=part)
        conditions: dict[str, Any] = {}
        for audience in sized:
            conditions[audience.id] = compiler.condition(audience.rule, conditions)
        labels = {audience_id: f"a{n}" for n, audience_id in enumerate(conditions)}
        query = (sa.select(v.c.visitor_id, *(sa.case((condition, 1), else_=0).label(labels[audience_id])
                                             for audience_id, condition in conditions.items()))
                 .select_from(history if history is not None else v)
                 .where(v.c.shop == shop, v.c.visitor_id.in_(part)))
        for row in conn.execute(query):
            ids = tuple(a for a, label in labels.items() if row._mapping[label])
            if ids:
                found[row.visitor_id] = ids
    return found


class _Compiler:
    def __init__(self, dialect: str, shop: str, now: datetime, visit_timeout_s: int) -> None:
        self.sqlite = dialect == "sqlite"
        self.shop = shop
        self.now = now
        self.in_visit = v.c.last_seen >= now - timedelta(seconds=visit_timeout_s)
        self._names = 0
        self._history: dict[FactTest, Any] = {}  # each history test: its column of the one pass

    def read_history(self, rules: list[Rule], only: list[str] | None = None) -> Any:
        """The visitors joined to one pass over their recent events that works out every
        history test of these rules (None when no rule has one); `only`: of these visitors."""
        tests = list(dict.fromkeys(
            part for rule in rules for part in walk(rule)
            if isinstance(part, FactTest) and part.fact.name in HISTORY_FACTS))
        if not tests:
            return None
        outer = v if not self.sqlite else v.alias("h_v")
        event = self.elements("recent", outer)
        ids = self.item_ids(event)
        kind, item = self.at(event, 0), ids.c.value
        term = sa.func.lower(sa.func.trim(self.at(event, 3)))
        labels = [f"h{n}" for n in range(len(tests))]
        aggregates = [self._aggregate(test, kind, item, term).label(label) for test, label in zip(tests, labels)]
        if self.sqlite:
            per_visitor = (
                sa.select(outer.c.visitor_id, *aggregates)
                .select_from(outer.join(event, sa.true()).outerjoin(ids, sa.true()))
                .where(outer.c.shop == self.shop, outer.c.state.is_not(None),
                       *([outer.c.visitor_id.in_(only)] if only is not None else []))
                .group_by(outer.c.visitor_id)
                .subquery("h")
            )
            joined = v.outerjoin(per_visitor, per_visitor.c.visitor_id == v.c.visitor_id)
        else:
            per_visitor = sa.select(*aggregates).select_from(event.outerjoin(ids, sa.true())).lateral("h")
            joined = v.outerjoin(per_visitor, sa.true())
        self._history = {test: per_visitor.c[label] for test, label in zip(tests, labels)}
        return joined

    def _aggregate(self, test: FactTest, kind: Any, item: Any, term: Any) -> Any:
        name = test.fact.name
        if name == "searches":
            return sa.func.max(sa.case((sa.and_(kind == "search", _matches(term, test)), 1), else_=0))
        if name == "category_views":
            wanted = sa.and_(kind.in_(VIEWS), item.in_(self.in_categories((test.category,))))
            return sa.func.count(sa.distinct(sa.case((wanted, item))))
        if name == "viewed_items":
            wanted = _matches(item, test)
        elif test.contains or test.prefix:
            wanted = self._category_text(item, test)
        else:
            wanted = item.in_(self.in_categories(test.values))
        return sa.func.max(sa.case((sa.and_(kind.in_(VIEWS), wanted), 1), else_=0))

    def _from_history(self, test: FactTest) -> Any:
        found = sa.func.coalesce(self._history[test], 0)
        return _in_range(found, test) if test.fact.name == "category_views" else found == 1

    def condition(self, rule: Rule, known: dict[str, Any]) -> Any:
        """The rule as a condition on a row; `known`: the conditions of the audiences before it."""
        if isinstance(rule, AllOf):
            # Column tests first: SQL stops at the first false one, before reading any JSON.
            parts = sorted(rule.rules, key=_reads_state)
            return sa.and_(*(self.condition(r, known) for r in parts))
        if isinstance(rule, AnyOf):
            return sa.or_(*(self.condition(r, known) for r in rule.rules))
        if isinstance(rule, Not):
            return sa.not_(self.condition(rule.rule, known))
        if isinstance(rule, InAudience):
            return sa.or_(*(known[name] for name in rule.ids))
        assert isinstance(rule, FactTest)
        return self.fact(rule)

    # -- one fact --------------------------------------------------------------------
    def fact(self, test: FactTest) -> Any:
        fact = test.fact
        name = fact.name
        if fact.kind == NUMBER:
            if name in NUMBER_COLUMNS:
                return _in_range(NUMBER_COLUMNS[name], test)
            if name == "visit_page_views":
                return _in_range(sa.case((self.in_visit, v.c.visit_page_views), else_=0), test)
            if name in ("cart_value", "cart_count"):
                return _in_range(self.cart_number(name), test)
            return self.age(test)
        if fact.kind == FLAG:
            signed = v.c.signed_up_at.is_not(None)
            return signed if test.flag else sa.not_(signed)
        if fact.kind == CHOICE:
            return _matches(CHOICE_COLUMNS[name], test)
        if test in self._history:
            return self._from_history(test)
        assert fact.kind == SET and name in ("cart_items", "cart_categories")
        return self.cart_set(test)

    def age(self, test: FactTest) -> Any:
        """Whole days / hours / minutes since a time, in a range: as comparisons of the time."""
        name = test.fact.name
        unit = {"days": 86400, "hours": 3600, "minutes": 60}[test.fact.unit]
        column = {
            "days_since_last_order": v.c.last_order_at,
            "days_since_last_visit": sa.case((self.in_visit, v.c.previous_seen), else_=v.c.last_seen),
            "days_since_first_visit": v.c.first_seen,
            "hours_since_sign_up": v.c.signed_up_at,
            "cart_age_minutes": v.c.cart_at,
        }[name]
        parts = [column.is_not(None)]
        if test.least is not None and test.least > 0:  # at least N whole units ago
            parts.append(column <= self.now - timedelta(seconds=math.ceil(test.least) * unit))
        if test.most is not None:  # fewer than M + 1 whole units ago
            parts.append(column > self.now - timedelta(seconds=(math.floor(test.most) + 1) * unit))
        return sa.and_(*parts)

    # -- the state's JSON ------------------------------------------------------------
    def _name(self) -> str:
        self._names += 1
        return f"j{self._names}"

    def elements(self, key: str, table: Any = v) -> Any:
        """The rows of the state's array `key` ("cart" or "recent"), each with a `value`. On
        PostgreSQL the stored JSON (text) is read as jsonb once: its elements are then not
        parsed again for each part read of them."""
        if self.sqlite:
            return sa.func.json_each(table.c.state, f"$.{key}").table_valued("value").alias(self._name())
        state = sa.cast(table.c.state, JSONB).op("->")(sa.literal_column(f"'{key}'"))
        return sa.func.jsonb_array_elements(state).table_valued("value").alias(self._name())

    def at(self, element: Any, n: int, number: bool = False) -> Any:
        """Element `n` of a JSON array row (text, or a number)."""
        if self.sqlite:
            return sa.func.json_extract(element.c.value, f"$[{n}]")
        text = element.c.value.op("->>")(sa.literal_column(str(n)))
        return sa.cast(text, sa.Float) if number else text

    def item_ids(self, event: Any) -> Any:
        """The item ids of a `recent` event row (its third element), each a row with a `value`."""
        if self.sqlite:
            return sa.func.json_each(event.c.value, "$[2]").table_valued("value").alias(self._name())
        return sa.func.jsonb_array_elements_text(event.c.value.op("->")(sa.literal_column("2"))) \
            .table_valued("value").alias(self._name())

    def cart_number(self, name: str) -> Any:
        line = self.elements("cart")
        quantity = self.at(line, 1, number=True)
        if name == "cart_count":
            total = sa.select(sa.func.sum(quantity)).select_from(line).scalar_subquery()
        else:
            # A line without a price is worth the catalog's: one primary-key read for it.
            item = items.alias(self._name())
            listed = sa.select(item.c.price).where(item.c.shop == self.shop, item.c.item_id == self.at(line, 0))
            price = sa.func.coalesce(self.at(line, 2, number=True), listed.scalar_subquery(), 0.0)
            total = sa.func.round(sa.cast(
                sa.select(sa.func.sum(quantity * price)).select_from(line).scalar_subquery(), sa.Numeric), 2)
        return sa.case((v.c.cart_at.is_(None), 0), else_=sa.func.coalesce(total, 0))

    def in_categories(self, categories: tuple[str, ...]) -> Any:
        """The ids of the shop's items in these categories (or their subcategories): one list
        for the whole statement, which each visitor's item ids are looked up in."""
        item = items.alias(self._name())
        return sa.select(item.c.item_id).where(
            item.c.shop == self.shop, sa.or_(*(_in_category(item.c.category, c) for c in categories)))

    def cart_set(self, test: FactTest) -> Any:
        line = self.elements("cart")
        item_id = self.at(line, 0)
        if test.fact.name == "cart_items":
            wanted = _matches(item_id, test)
        elif test.contains or test.prefix:
            wanted = self._category_text(item_id, test)
        else:
            wanted = item_id.in_(self.in_categories(test.values))
        return sa.and_(v.c.cart_at.is_not(None), sa.select(1).select_from(line).where(wanted).exists())

    def _category_text(self, item_id: Any, test: FactTest) -> Any:
        """An item whose category contains (or starts with) a text."""
        item = items.alias(self._name())
        return item_id.in_(sa.select(item.c.item_id).where(item.c.shop == self.shop, _matches(item.c.category, test)))


def _reads_state(rule: Rule) -> bool:
    if isinstance(rule, FactTest):
        return rule.fact.name in ("cart_value", "cart_count", "cart_items", "cart_categories")
    return any(_reads_state(part) for part in rule.parts()) or isinstance(rule, InAudience)


def _in_range(value: Any, test: FactTest) -> Any:
    parts = []
    if test.least is not None:
        parts.append(value >= test.least)
    if test.most is not None:
        parts.append(value <= test.most)
    return sa.and_(*parts)


def _matches(column: Any, test: FactTest) -> Any:
    """A text column against a choice or set test, as FactTest._matches compares in Python."""
    name = test.fact.name
    lower = sa.func.lower(column)
    if test.contains:
        return lower.contains(test.contains.lower(), autoescape=True)
    if test.prefix:
        return lower.startswith(test.prefix.lower(), autoescape=True)
    if name in ("cart_categories", "viewed_categories"):
        return sa.or_(*(_in_category(column, c) for c in test.values))
    if name in ("cart_items", "viewed_items"):
        return column.in_(list(test.values))
    if name == "referrer":
        return sa.or_(*(sa.or_(lower == w.lower(), lower.endswith("." + w.lower(), autoescape=True))
                        for w in test.values))
    return lower.in_([value.lower() for value in test.values])


def _in_category(column: Any, category: str) -> Any:
    """The category or one of its subcategories ("Health > Diet" is in "Health")."""
    lower, wanted = sa.func.lower(column), category.lower()
    return sa.or_(lower == wanted, lower.startswith(wanted + " > ", autoescape=True))


class NotExportable(ValueError):
    """An audience no stored row can tell (it reads a fact known only during a request)."""


def audience_customers(
    conn: Connection, dialect: str, shop: str, book: AudienceBook, audience_id: str, now: datetime,
    visit_timeout_s: int,
) -> list[Any]:
    """The rows of the shop's known customers in the audience now, in one statement: each
    customer's own row (their imported orders, visitor id `u:<id>`) and each browser identified
    as them is tested on its own, and a customer is in when one of them is. Only customers
    imported with marketing consent, none of whose browsers sent Global Privacy Control on
    its latest page view. Each row: the visitor's columns (state as text), the customer's id,
    e-mail and e-mail hash; ordered by customer, their own row first."""
    from server.store.schema import customers as k

    not_sized = book.not_sized()
    if audience_id in not_sized:
        raise NotExportable(f"audience {audience_id!r} cannot be exported: {not_sized[audience_id]}")
    needed, todo = set(), [audience_id]
    while todo:  # the audience and those it names, which its condition is made of
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [n for part in walk(book.by_id[name].rule) if isinstance(part, InAudience) for n in part.ids]
    compiler = _Compiler(dialect, shop, now, visit_timeout_s)
    ordered = [a for a in book.ordered if a.id in needed]
    history = compiler.read_history([a.rule for a in ordered])
    conditions: dict[str, Any] = {}
    for audience in ordered:
        conditions[audience.id] = compiler.condition(audience.rule, conditions)
    own = sa.func.coalesce(v.c.identified_as, v.c.visitor_id)
    browser = v.alias("gpc_v")
    gpc = sa.select(1).where(browser.c.shop == shop, browser.c.identified_as == k.c.visitor_id, browser.c.gpc).exists()
    if dialect == "postgresql":
        conn.execute(sa.text("SET LOCAL jit = off"))  # as count_audiences
    query = (
        sa.select(*(c for c in v.c if c.name != "state"), sa.cast(v.c.state, sa.Text).label("state"),
                  k.c.customer_id, k.c.email, k.c.email_sha256)
        .select_from((history if history is not None else v).join(k, (k.c.shop == v.c.shop) & (k.c.visitor_id == own)))
        .where(v.c.shop == shop, k.c.marketing_consent.is_(True), ~gpc, conditions[audience_id])
        .order_by(k.c.customer_id, v.c.identified_as.is_not(None), v.c.visitor_id)
    )
    return list(conn.execute(query))
