"""`vitrine('identify', {id, signature})`: a browser proves it is one of the shop's customers
with a signature made by the shop's backend, and is linked to them (visitors.identified_as):
the customer's imported orders, sign-up and first name then count for this visitor, on every
device that identifies as them. `vitrine('identify', false)` at log-out unlinks the browser.

The page call carries it. The link is stored only with consent to personalization, and only
written when it changes: a page call that identifies as the customer already linked reads
nothing more than any other (the customer comes with the visitor's row).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.models import VisitorProfile, utcnow
from server.store import Store, VisitorForgotten

if TYPE_CHECKING:
    from server.context import VisitorContext
    from server.customers.keys import ShopKeys


class IdentifyIn(BaseModel):
    """The page call's `identify`: the customer's id and the backend's signature of it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    signature: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex HMAC-SHA256 of id with the shop's secret key")


# What a customer's row brings to an identified visitor's profile (the rest is the browser's own).
_FROM_CUSTOMER = ("customer_id", "first_name", "customer_signed_up_at", "birthday", "orders", "revenue", "last_order_at",
                  "customer_group")


def identify(
    store: Store, keys: "ShopKeys", ctx: "VisitorContext", given: IdentifyIn | Literal[False],
) -> tuple["VisitorContext", dict[str, Any]]:
    """The request's context after the page's `identify`, and what the answer says of it."""
    profile = ctx.profile
    if not ctx.consent.personalization:
        return ctx, _said(False, "", "not identified: without consent to personalization no link is stored")
    if given is False:
        if not profile.customer_id:
            return ctx, _said(False, "", "not identified")
        return _linked(store, ctx, None), _said(False, "", "logged out: this browser is no longer linked to a customer")
    if not keys.verify(ctx.shop, given.id, given.signature):
        reason = ("not identified: the signature is not this id signed with the shop's secret key (another "
                  "shop's key, a key rotated since, or another id)")
        return (_linked(store, ctx, None) if profile.customer_id else ctx), _said(False, "", reason)
    if profile.customer_id != given.id:
        ctx = _linked(store, ctx, given.id)
    return ctx, _said(True, given.id, f"identified as customer {given.id}")


def _linked(store: Store, ctx: "VisitorContext", customer_id: str | None) -> "VisitorContext":
    """The context with the visitor linked to `customer_id` (None: unlinked), as stored now."""
    try:
        stored = store.identify_visitor(ctx.shop, ctx.visitor_id, customer_id, utcnow())
    except VisitorForgotten:  # deleted at their request meanwhile: nothing is linked
        return ctx
    profile: VisitorProfile = ctx.profile
    linked = dataclasses.replace(profile, **{name: getattr(stored, name) for name in _FROM_CUSTOMER})
    return dataclasses.replace(ctx, profile=linked)


def _said(identified: bool, customer_id: str, reason: str) -> dict[str, Any]:
    return {"identified": identified, "customer_id": customer_id or None, "reason": reason}
