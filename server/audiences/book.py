"""A shop's audiences, compiled from its `[audiences]` config: the built-in lifecycle audiences
with the shop's thresholds, then its own rules in an order where each comes after the audiences
it names; and the membership of one visitor, with each audience's reason."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterable

from server.audiences.facts import FACTS, VisitorFacts
from server.audiences.rules import AllOf, AnyOf, FactTest, InAudience, Not, Rule, walk

FORCED = "QA override (audience=)"


@dataclass(frozen=True)
class Audience:
    id: str
    rule: Rule
    description: str = ""
    builtin: bool = False
    # The reason of a member in plain words (the built-in audiences); otherwise the rule's.
    explain: Callable[[VisitorFacts], str] | None = field(default=None, compare=False)
    # The reason of a non-member, where the rule's would be long-winded (the loyalty tiers).
    explain_not: Callable[[VisitorFacts], str] | None = field(default=None, compare=False)


class AudienceResult:
    """One audience for one visitor: in it or not, and why (worked out when first read)."""

    __slots__ = ("id", "member", "builtin", "_reason")

    def __init__(self, id: str, member: bool, reason: "str | Callable[[], str]", builtin: bool = False) -> None:
        self.id, self.member, self.builtin, self._reason = id, member, builtin, reason

    @property
    def reason(self) -> str:
        if callable(self._reason):
            self._reason = self._reason()
        return self._reason

    def as_json(self) -> dict:
        return {"id": self.id, "member": self.member, "reason": self.reason}

    def __repr__(self) -> str:
        return f"AudienceResult({self.id!r}, {self.member})"


@dataclass(frozen=True)
class Membership:
    """Which audiences a visitor is in (`ids`, in the shop's order) and why, for every one of
    the shop's audiences (`results`)."""

    results: tuple[AudienceResult, ...] = ()
    run: "Run | None" = field(default=None, compare=False, repr=False)

    def behind(self, audience: str) -> list[tuple[str, str]]:
        """What the visitor's membership rests on, for telling them in plain words: the built-in
        audience itself, or the facts of the rule that held ((fact, category or "")); never a
        condition they are not in (`not`), nor the branches of an `any` that did not hold."""
        return self.run.behind(audience) if self.run is not None and audience in self else [(audience, "")]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.results if r.member)

    @functools.cached_property
    def _by_id(self) -> dict[str, AudienceResult]:
        return {r.id: r for r in self.results}

    def __contains__(self, audience: object) -> bool:
        result = self._by_id.get(audience)  # type: ignore[call-overload]
        return result is not None and result.member

    def result(self, audience: str) -> AudienceResult | None:
        return self._by_id.get(audience)

    def as_json(self) -> list[dict]:
        return [r.as_json() for r in self.results]


NO_AUDIENCES = Membership()


class Run:
    """One visitor's evaluation: the facts, and the audiences decided so far."""

    def __init__(self, facts: VisitorFacts, forced: frozenset[str], book: "AudienceBook | None" = None) -> None:
        self.facts = facts
        self.forced = forced
        self.book = book
        self.decided: dict[str, bool] = {}
        self._reasons: dict[str, str] = {}

    def member(self, audience: str) -> bool:
        return self.decided.get(audience, False)

    def behind(self, audience: str) -> list[tuple[str, str]]:
        found = self.book.by_id.get(audience) if self.book is not None else None
        if found is None or found.builtin or audience in self.forced:
            return [(audience, "")]
        return self._behind(found.rule)

    def _behind(self, rule: Rule) -> list[tuple[str, str]]:
        if isinstance(rule, FactTest):
            categories = (rule.category,) if rule.category else (rule.values if rule.fact.name.endswith("categories") else ())
            return [(rule.fact.name, c) for c in categories] or [(rule.fact.name, "")]
        if isinstance(rule, AllOf):
            return [found for part in rule.rules for found in self._behind(part)]
        if isinstance(rule, AnyOf):
            held = next((part for part in rule.rules if part.holds(self)), None)
            return self._behind(held) if held is not None else []
        if isinstance(rule, InAudience):
            member = next((a for a in rule.ids if self.member(a)), None)
            return self.behind(member) if member is not None else []
        return []  # not: nothing the visitor did

    def reason(self, audience: str) -> str:
        """Why the visitor is in the audience or not (worked out once, when asked)."""
        if audience not in self._reasons:
            found = self.book.by_id.get(audience) if self.book is not None else None
            if found is None:
                why = f"{audience} is not an audience of this shop"
            elif audience in self.forced:
                why = FORCED
            else:
                explain = found.explain if self.decided[audience] else found.explain_not
                why = explain(self.facts) if explain is not None else found.rule.reason(self)
            self._reasons[audience] = why
        return self._reasons[audience]


class AudienceBook:
    """The audiences of one shop: `ordered` so that an audience comes after those it names,
    `listed` in the order shown (built-ins first, then the shop's own as written)."""

    def __init__(self, ordered: Iterable[Audience], listed: Iterable[str]) -> None:
        self.ordered = tuple(ordered)
        self.by_id = {a.id: a for a in self.ordered}
        self.listed = tuple(listed)

    def ids(self) -> tuple[str, ...]:
        return self.listed

    def not_sized(self) -> dict[str, str]:
        """The audiences no stored row can tell (sizes, exports, webhooks), each with why."""
        found: dict[str, str] = {}
        for audience in self.ordered:
            why = why_not_sized(audience.rule, found)
            if why:
                found[audience.id] = why
        return found

    def evaluate(self, facts: VisitorFacts, forced: Iterable[str] = ()) -> Membership:
        run = Run(facts, frozenset(forced), self)
        for audience in self.ordered:
            run.decided[audience.id] = audience.id in run.forced or audience.rule.holds(run)
        return Membership(tuple(
            AudienceResult(i, run.decided[i], lambda i=i: run.reason(i), self.by_id[i].builtin) for i in self.listed
        ), run)


# -- the built-in lifecycle audiences -----------------------------------------------------
@dataclass(frozen=True)
class LoyalTierRule:
    tier: str
    orders: int | None = None
    revenue: float | None = None

    @functools.cached_property
    def rule(self) -> Rule:
        parts = []
        if self.orders is not None:
            parts.append(FactTest(FACTS["orders"], least=float(self.orders)))
        if self.revenue is not None:
            parts.append(FactTest(FACTS["revenue"], least=float(self.revenue)))
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def threshold(self) -> str:
        parts = ([f"{self.orders} orders"] if self.orders is not None else []) + (
            [f"{self.revenue:.2f} revenue"] if self.revenue is not None else [])
        return " or ".join(parts)


BUILTIN_IDS = ("new", "returning", "prospect", "first_time_customer", "repeat_customer", "loyal", "lapsed",
               "cart_abandoner")


def lifecycle(lapsed_days: int, cart_abandon_minutes: int, tiers: list[LoyalTierRule]) -> list[Audience]:
    """The built-in audiences with the shop's thresholds, in the order they are listed."""
    f = FACTS
    no_order = FactTest(f["orders"], least=0, most=0)

    def highest(facts: VisitorFacts) -> LoyalTierRule | None:
        reached = [t for t in tiers if _holds(t.rule, facts)]
        return reached[-1] if reached else None

    def spent(facts: VisitorFacts) -> str:
        return f"{FACTS['orders'].describe(facts.value('orders'))}, revenue {facts.value('revenue'):.2f}"

    def loyal_reason(facts: VisitorFacts) -> str:
        tier = highest(facts)
        assert tier is not None
        return f"{tier.tier} tier: {spent(facts)} ({tier.tier} from {tier.threshold()})"

    def not_loyal(facts: VisitorFacts) -> str:
        return f"no loyalty tier: {spent(facts)} ({tiers[0].tier} from {tiers[0].threshold()})"

    def not_in_tier(tier: LoyalTierRule) -> Callable[[VisitorFacts], str]:
        def why(facts: VisitorFacts) -> str:
            reached = highest(facts)
            if reached is None:
                return not_loyal(facts)
            return f"{reached.tier} tier, not {tier.tier}: {spent(facts)} ({tier.tier} from {tier.threshold()})"
        return why

    def cart_reason(facts: VisitorFacts) -> str:
        return (f"{FACTS['cart_count'].describe(facts.value('cart_count'))} ({facts.value('cart_value'):.2f}), the "
                f"newest added {facts.value('cart_age_minutes')} minutes ago, no order since "
                f"(abandoned after {cart_abandon_minutes} minutes)")

    audiences = [
        Audience("new", AllOf((FactTest(f["visits"], most=1), no_order)), "first visit, never ordered", True,
                 lambda facts: "first visit, no order yet"),
        Audience("returning", AllOf((FactTest(f["visits"], least=2), no_order)), "came back, never ordered", True,
                 lambda facts: f"visit {facts.value('visits')}, no order yet"),
        Audience("prospect", AllOf((FactTest(f["signed_up"], flag=True), no_order)),
                 "signed up or logged in, never ordered", True,
                 lambda facts: f"signed up {_hours_ago(facts.value('hours_since_sign_up'))}, no order yet"),
        Audience("first_time_customer", FactTest(f["orders"], least=1, most=1), "one order", True,
                 lambda facts: f"1 order, {_days(facts.value('days_since_last_order'))}"),
        Audience("repeat_customer", FactTest(f["orders"], least=2), "two orders or more", True,
                 lambda facts: f"{facts.value('orders')} orders"),
    ]
    if tiers:
        audiences.append(Audience(
            "loyal", AnyOf(tuple(t.rule for t in tiers)) if len(tiers) > 1 else tiers[0].rule,
            f"reached a loyalty tier ({tiers[0].tier} from {tiers[0].threshold()})", True, loyal_reason, not_loyal))
        for n, tier in enumerate(tiers):
            higher = [t.rule for t in tiers[n + 1:]]
            rule: Rule = tier.rule if not higher else AllOf((tier.rule, Not(AnyOf(tuple(higher)))))
            audiences.append(Audience(f"loyal_{tier.tier}", rule, f"loyalty tier {tier.tier}: {tier.threshold()}"
                                      + (", and not a higher tier" if higher else ""), True, loyal_reason,
                                      not_in_tier(tier)))
    audiences += [
        Audience("lapsed", AllOf((FactTest(f["orders"], least=1),
                                  FactTest(f["days_since_last_order"], least=float(lapsed_days)))),
                 f"a customer whose last order is {lapsed_days} days old or more", True,
                 lambda facts: f"last order {facts.value('days_since_last_order')} days ago "
                 f"(lapsed after {lapsed_days} days)"),
        Audience("cart_abandoner", FactTest(f["cart_age_minutes"], least=float(cart_abandon_minutes)),
                 f"items in the cart for {cart_abandon_minutes} minutes or more, no order since", True, cart_reason),
    ]
    return audiences


def _holds(rule: Rule, facts: VisitorFacts) -> bool:
    return rule.holds(Run(facts, frozenset()))


def _hours_ago(hours: int | None) -> str:
    if hours is None:
        return "at some point"
    if hours < 1:
        return "less than an hour ago"
    return f"{hours // 24} days ago" if hours >= 48 else f"{hours} hour{'s' if hours > 1 else ''} ago"


def _days(days: int | None) -> str:
    return "when unknown" if days is None else ("today" if days == 0 else f"{days} days ago")


def why_not_sized(rule: Rule, not_sized: dict[str, str]) -> str:
    """Why no stored row can tell whether a visitor is in the audience ("" when one can)."""
    for part in walk(rule):
        if isinstance(part, FactTest) and part.fact.not_sized:
            return f"it reads {part.fact.name}, {part.fact.not_sized}"
        if isinstance(part, InAudience):
            for name in part.ids:
                if name in not_sized:
                    return f"it names audience {name}, which is not sized ({not_sized[name]})"
    return ""
