"""Redeeming a code for an order: what the shop's checkout sends, and the answer, the same
for `POST /v1/coupons/redeem` and `vitrine coupons redeem`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.models import utcnow
from server.promotions.codes import normalize
from server.promotions.rules import Line, PoolRules, describe, judge

if TYPE_CHECKING:
    from server.store import Store

MAX_LINES = 500


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    item_id: str = Field(min_length=1, max_length=128)
    price: float = Field(ge=0, le=1e9)
    quantity: float = Field(default=1, gt=0, le=1e6)
    category: str | None = Field(default=None, max_length=256)


class RedeemIn(BaseModel):
    """The body of a redemption."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shop: str | None = Field(default=None, min_length=1, max_length=64)
    code: str = Field(min_length=1, max_length=80)
    order_id: str = Field(min_length=1, max_length=128)
    order_value: float = Field(ge=0, le=1e9)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217, such as EUR")
    customer_id: str | None = Field(default=None, min_length=1, max_length=128)
    # The order's lines: needed only for a pool limited to categories or items.
    items: list[LineIn] | None = Field(default=None, max_length=MAX_LINES)

    @field_validator("currency")
    @classmethod
    def _upper(cls, currency: str) -> str:
        return currency.upper()

    @field_validator("code")
    @classmethod
    def _code(cls, code: str) -> str:
        if not normalize(code):
            raise ValueError("the code is empty once spaces and dashes are left out")
        return code


def redeem(store: "Store", shop: str, body: RedeemIn, now: datetime | None = None) -> dict[str, Any]:
    """Redeem the code for the order: `{"ok": true, "code", "pool", "discount"}` or
    `{"ok": false, "reason"}`; every attempt is logged."""
    from server.store.sql import imported_visitor_id

    now = now or utcnow()
    lines = _lines(store, shop, body.items) if body.items is not None else None
    attempt = {
        "code": normalize(body.code)[:64], "order_id": body.order_id, "order_value": body.order_value,
        "currency": body.currency, "customer_id": body.customer_id,
        "visitor_id": imported_visitor_id(body.customer_id) if body.customer_id else None,
    }

    def decide(pool: dict[str, Any], code: dict[str, Any], customer_uses: int) -> Any:
        return judge(PoolRules.from_row(pool), code, customer_uses, now=now, order_value=body.order_value,
                     currency=body.currency, customer_id=body.customer_id, lines=lines)

    out = store.redeem_coupon(shop, attempt, decide, now)
    if out["result"] != "ok":
        return {"ok": False, "reason": out["result"]}
    # The same order again (out["replay"]) gets the same answer: its discount as first given.
    rules = PoolRules.from_row(out["rules"])
    return {"ok": True, "code": out["display"], "pool": out["pool"],
            "discount": describe(rules, out["discount"], out["base"], body.currency)}


def _lines(store: "Store", shop: str, given: list[LineIn]) -> tuple[Line, ...]:
    """The order's lines, each with its category (from the catalog when the body has none)."""
    missing = [line.item_id for line in given if line.category is None]
    known = {item.item_id: item.category for item in store.get_items(shop, missing)} if missing else {}
    return tuple(Line(line.item_id, line.price, line.quantity,
                      line.category if line.category is not None else known.get(line.item_id, ""))
                 for line in given)
