"""`[audiences]` in a shop config: the built-in audiences' thresholds, the loyalty tiers, and
the shop's own audiences (`[[audiences.custom]]`), compiled into an AudienceBook with every
problem at its place in the file."""

from __future__ import annotations

import re
from typing import Any, Sequence

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.audiences.book import Audience, AudienceBook, LoyalTierRule, lifecycle
from server.audiences.rules import CATEGORY_FACTS, FactTest, InAudience, Loc, Problems, parse_rule, walk

AUDIENCE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TIER_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class LoyalTier(BaseModel):
    """`[[audiences.loyal]]`: a loyalty tier, reached with `orders` orders or `revenue` spent."""

    model_config = ConfigDict(extra="forbid")

    tier: str = Field(pattern=TIER_ID.pattern, description="The tier's name: its audience is loyal_<tier>.")
    orders: int | None = Field(None, ge=1, description="Orders that reach the tier.")
    revenue: float | None = Field(None, gt=0, description="Revenue (in the shop's currency) that reaches the tier.")

    @model_validator(mode="after")
    def _a_threshold(self) -> "LoyalTier":
        if self.orders is None and self.revenue is None:
            raise ValueError(f"tier {self.tier!r} needs orders, revenue or both (either reaches it)")
        return self


DEFAULT_TIERS = [LoyalTier(tier="bronze", orders=3), LoyalTier(tier="silver", orders=6), LoyalTier(tier="gold", orders=10)]


class AudienceWebhook(BaseModel):
    """`[[audiences.webhooks]]`: where the joins and leaves of an audience's known customers
    are POSTed, signed with `secret` (server/customers/webhooks.py)."""

    model_config = ConfigDict(extra="forbid")

    audience: str = Field(description="The audience whose joins and leaves are sent.")
    url: str = Field(max_length=2048, description="An http(s) URL that receives them (POST, JSON).")
    secret: str = Field(min_length=16, max_length=256, description="Signs each delivery: HMAC-SHA256 in a header.")

    @field_validator("url")
    @classmethod
    def _web_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook url is an http:// or https:// URL, not {url!r}")
        return url


class AudiencesConfig(BaseModel):
    """`[audiences]`: thresholds of the built-in audiences, and the shop's own."""

    model_config = ConfigDict(extra="forbid")

    lapsed_days: int = Field(300, ge=1, description="lapsed: a customer whose last order is this many days old.")
    cart_abandon_minutes: int = Field(
        60, ge=1, description="cart_abandoner: the newest item still in the cart was added this long ago, "
        "with no order since.",
    )
    loyal: list[LoyalTier] = Field(
        default_factory=lambda: list(DEFAULT_TIERS),
        description="Loyalty tiers, lowest first: a customer is in the last one whose threshold they reach.",
    )
    custom: list[dict[str, Any]] = Field(
        default_factory=list, description="The shop's own audiences: id, description, and the rule.",
    )
    webhooks: list[AudienceWebhook] = Field(
        default_factory=list, description="Webhooks that get the joins and leaves of an audience's known customers.",
    )

    @model_validator(mode="after")
    def _unique_tiers(self) -> "AudiencesConfig":
        names = [t.tier for t in self.loyal]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"loyalty tier {repeated[0]!r} is listed twice")
        return self


def compile_audiences(
    config: AudiencesConfig, sensitive_categories: Sequence[str] = (), where: Loc = ("audiences",),
) -> tuple[AudienceBook, Problems]:
    """The shop's audiences and the problems of its own rules (unknown facts, bad operators,
    unknown audiences named, cycles), each at its place under `where`."""
    problems = Problems()
    tiers = [LoyalTierRule(t.tier, t.orders, t.revenue) for t in config.loyal]
    builtin = lifecycle(config.lapsed_days, config.cart_abandon_minutes, tiers)
    builtin_ids = {a.id for a in builtin}
    known = set(builtin_ids)
    custom: list[Audience] = []
    locs: dict[str, Loc] = {}
    for n, raw in enumerate(config.custom):
        loc = where + ("custom", n)
        audience_id = raw.get("id")
        if not isinstance(audience_id, str) or not AUDIENCE_ID.match(audience_id):
            problems.add(loc + ("id",), "every audience needs an id of lower-case letters, digits and _ "
                         f"(starting with a letter, at most 64), not {audience_id!r}" if "id" in raw else
                         "every audience needs an id")
            continue
        if audience_id in known:
            clash = "a built-in audience" if audience_id in builtin_ids else "used by another audience too"
            problems.add(loc + ("id",), f"audience id {audience_id!r} is {clash}")
            continue
        description = raw.get("description", "")
        if not isinstance(description, str):
            problems.add(loc + ("description",), "description is a text")
            description = ""
        rule = parse_rule(raw, loc, problems, skip=("id", "description"))
        known.add(audience_id)
        locs[audience_id] = loc
        if rule is not None:
            custom.append(Audience(audience_id, rule, description))
    _check_references(custom, known, locs, problems)
    _check_sensitive(custom, sensitive_categories, locs, problems)
    ordered = builtin + _in_dependency_order(custom)
    book = AudienceBook(ordered, [a.id for a in builtin] + [a.id for a in custom])
    _check_webhooks(config.webhooks, book, where, problems)
    return book, problems


def _check_webhooks(webhooks: list[AudienceWebhook], book: AudienceBook, where: Loc, problems: Problems) -> None:
    """A webhook's audience exists and can be told from stored rows (as an export)."""
    not_sized = book.not_sized() if webhooks else {}
    for n, hook in enumerate(webhooks):
        loc = where + ("webhooks", n, "audience")
        if hook.audience not in book.by_id:
            problems.add(loc, f"unknown audience {hook.audience!r}; the audiences are {', '.join(book.ids())}")
        elif hook.audience in not_sized:
            problems.add(loc, f"audience {hook.audience!r} cannot have a webhook: {not_sized[hook.audience]}")


def _references(audience: Audience) -> list[InAudience]:
    return [r for r in walk(audience.rule) if isinstance(r, InAudience)]


def _check_references(custom: list[Audience], known: set[str], locs: dict[str, Loc], problems: Problems) -> None:
    by_id = {a.id: a for a in custom}
    for audience in custom:
        for ref in _references(audience):
            for name in ref.ids:
                if name not in known:
                    listed = ", ".join(sorted(known))
                    problems.add(ref.loc, f"unknown audience {name!r}; the audiences are {listed}")
    # Cycles: an audience that names itself, through any others.
    reported: set[str] = set()

    def visit(audience_id: str, path: list[str]) -> None:
        for ref in _references(by_id[audience_id]):
            for name in ref.ids:
                if name not in by_id:
                    continue
                if name in path:
                    cycle = path[path.index(name):] + [name]
                    if not reported & set(cycle):
                        reported.update(cycle)
                        problems.add(ref.loc, f"audiences name each other in a circle: {' → '.join(cycle)}")
                    continue
                visit(name, path + [name])

    for audience in custom:
        if audience.id not in reported:
            visit(audience.id, [audience.id])


def _check_sensitive(custom: list[Audience], sensitive: Sequence[str], locs: dict[str, Loc], problems: Problems) -> None:
    """No audience may be made of interest in a sensitive category (docs/privacy.md)."""
    from server.context import in_category

    if not sensitive:
        return
    for audience in custom:
        for rule in walk(audience.rule):
            if isinstance(rule, FactTest) and rule.fact.name in CATEGORY_FACTS:
                for category in (rule.category,) if rule.category else rule.values:
                    if any(in_category(category, s) for s in sensitive):
                        problems.add(locs[audience.id], f"audience {audience.id!r} names {category!r}, a sensitive "
                                     "category (sensitive_categories): no audience may be made of it")


def _in_dependency_order(custom: list[Audience]) -> list[Audience]:
    """Each audience after the audiences it names (an audience in a cycle is left where it is)."""
    by_id = {a.id: a for a in custom}
    ordered: list[Audience] = []
    placed: set[str] = set()

    def place(audience: Audience, seen: frozenset[str]) -> None:
        if audience.id in placed or audience.id in seen:
            return
        for ref in _references(audience):
            for name in ref.ids:
                if name in by_id:
                    place(by_id[name], seen | {audience.id})
        placed.add(audience.id)
        ordered.append(audience)

    for audience in custom:
        place(audience, frozenset())
    return ordered

