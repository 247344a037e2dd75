"""A pool's rules and the one decision of a redemption: given what the store holds about a
code, its pool, the order and the customer, the answer (ok with a discount, or the reason)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

# Why a redemption was refused, in the order they are checked (docs/promotions.md#reasons).
REASONS = ("not_found", "not_started", "expired", "already_redeemed", "usage_limit_reached",
           "order_below_minimum", "not_eligible")
# What a code never issued, of a pool whose codes campaigns reveal, may answer: nothing
# that tells a guesser the code exists and could be used.
SECRET_REASONS = ("not_found", "expired", "usage_limit_reached")
KINDS = ("percent", "amount")
REVEALS = ("shop", "campaign")


@dataclasses.dataclass(frozen=True)
class PoolRules:
    """What every code of a pool follows (the columns of coupon_pools)."""

    kind: Literal["percent", "amount"] = "percent"
    value: float = 10.0
    currency: str = ""  # "": any; else an order in another currency is not_eligible
    min_order: float | None = None
    starts_at: datetime | None = None  # naive UTC
    expires_at: datetime | None = None
    uses_per_code: int = 1
    uses_per_customer: int | None = None
    budget: int | None = None  # redemptions of the whole pool
    categories: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    audience: str = ""
    reveal: Literal["shop", "campaign"] = "shop"
    max_discount: float | None = None  # a percentage's cap, in the order's currency ("50% up to 500")
    free_shipping: bool = False  # the code also gives free shipping ("20 off and free shipping")

    def __post_init__(self) -> None:
        for name in ("value", "min_order", "max_discount"):  # stored as floats: 20 and 20.0 are one rule
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, float(getattr(self, name)))
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be percent or amount, not {self.kind!r}")
        if not (self.value > 0) or (self.kind == "percent" and self.value > 100) or self.value > 1e9:
            problems.append(f"value must be above 0{' and at most 100' if self.kind == 'percent' else ''}, not {self.value}")
        if self.min_order is not None and not (0 <= self.min_order <= 1e9):
            problems.append(f"the minimum order must be 0 or more, not {self.min_order}")
        if self.max_discount is not None and not (0 < self.max_discount <= 1e9):
            problems.append(f"the cap on the discount must be above 0, not {self.max_discount}")
        if self.max_discount is not None and self.kind != "percent":
            problems.append("a cap on the discount is for a percentage; an amount is its own cap")
        if self.starts_at and self.expires_at and self.expires_at <= self.starts_at:
            problems.append("the pool expires before it starts")
        for name in ("uses_per_code", "uses_per_customer", "budget"):
            given = getattr(self, name)
            if given is not None and not (1 <= given <= 1_000_000_000):
                problems.append(f"{name.replace('_', ' ')} must be at least 1, not {given}")
        if self.currency and not (len(self.currency) == 3 and self.currency.isalpha() and self.currency.isupper()):
            problems.append(f"currency must be a code such as EUR, not {self.currency!r}")
        if self.reveal not in REVEALS:
            problems.append(f"reveal must be shop or campaign, not {self.reveal!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def as_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["categories"], row["items"] = "|".join(self.categories), "|".join(self.items)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "PoolRules":
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in row.items() if k in names}
        given["categories"] = tuple(c for c in (row.get("categories") or "").split("|") if c)
        given["items"] = tuple(i for i in (row.get("items") or "").split("|") if i)
        return cls(**given)

    def differences(self, other: "PoolRules") -> list[str]:
        """The rules that differ from `other`'s, as `name: ours, not theirs`."""
        return [f"{f.name} {getattr(self, f.name)!r}, not {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of the order, for a pool limited to categories or items."""

    item_id: str
    price: float
    quantity: float = 1
    category: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
    result: str  # "ok" or a reason
    discount: float | None = None
    base: float | None = None  # the part of the order the discount applied to


def judge(rules: PoolRules, code: dict[str, Any], customer_uses: int, *, now: datetime, order_value: float,
          currency: str | None, customer_id: str | None, lines: tuple[Line, ...] | None) -> Verdict:
    """The answer for a code that exists (`code`: its row: uses, max_uses, issued_at).

    A code of a `campaign` pool never issued to anyone answers only `expired` (its pool
    expired), `usage_limit_reached` (it or its pool's budget is used up) or `not_found`,
    whatever else is true: someone who guessed it learns nothing they could use, and it
    is never `ok` (it was shown to nobody)."""
    expired = rules.expires_at is not None and now >= rules.expires_at
    used_up = code["uses"] >= code["max_uses"]
    spent = rules.budget is not None and code.get("pool_redeemed", 0) >= rules.budget
    if rules.reveal == "campaign" and code["issued_at"] is None:
        return Verdict("expired" if expired else "usage_limit_reached" if used_up or spent else "not_found")
    if rules.starts_at is not None and now < rules.starts_at:
        return Verdict("not_started")
    if expired:
        return Verdict("expired")
    if used_up:
        return Verdict("already_redeemed")
    if spent:
        return Verdict("usage_limit_reached")
    if rules.uses_per_customer is not None:
        if not customer_id:
            return Verdict("not_eligible")  # the rule cannot be kept without knowing who
        if customer_uses >= rules.uses_per_customer:
            return Verdict("usage_limit_reached")
    if rules.currency and currency and currency != rules.currency:
        return Verdict("not_eligible")
    if rules.audience and code["issued_at"] is None:
        return Verdict("not_eligible")  # the audience was checked when it was issued
    if rules.min_order is not None and order_value < rules.min_order:
        return Verdict("order_below_minimum")
    base = order_value
    if rules.categories or rules.items:
        base = sum(line.price * line.quantity for line in lines or () if _applies(rules, line))
        if base <= 0:
            return Verdict("not_eligible")
        base = min(base, order_value)
    return Verdict("ok", discount(rules, base), round(base, 2))


def discount(rules: PoolRules, base: float) -> float:
    """What the code takes off `base`: the percentage of it up to the cap, or the amount (at
    most all of it)."""
    if rules.kind == "percent":
        taken = base * rules.value / 100
        if rules.max_discount is not None:
            taken = min(taken, rules.max_discount)
    else:
        taken = min(rules.value, base)
    return round(taken, 2)


def _applies(rules: PoolRules, line: Line) -> bool:
    if line.item_id in rules.items:
        return True
    category = line.category.strip()
    return any(category == c or category.startswith(c + " >") for c in rules.categories)


def describe(rules: PoolRules, amount: float, base: float, currency: str) -> dict[str, Any]:
    """The `discount` of an ok answer."""
    described = {"kind": rules.kind, "value": rules.value, "amount": amount, "applies_to": base,
                 "currency": rules.currency or currency, "free_shipping": rules.free_shipping}
    if rules.max_discount is not None:
        described["max_discount"] = rules.max_discount
    return described
