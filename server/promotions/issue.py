"""A code the shop's backend gives one of its customers (`POST /v1/coupons/issue`, `vitrine
coupons issue`): an apology for a late parcel, a goodwill gesture. It is issued to the
customer (their imported visitor id, `u:<customer id>`); a browser identified as them then
sees a campaign with `holds_coupon` (docs/promotions.md#apology-coupons) until they use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from server.errors import ApiError
from server.promotions.pools import PoolError, check_pool_id, issue_code
from server.store import VisitorForgotten

if TYPE_CHECKING:
    from server.store import Store


class IssueIn(BaseModel):
    """The body of an issue: the customer and the pool."""

    model_config = ConfigDict(extra="forbid")

    shop: str | None = Field(default=None, min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=128)
    pool: str = Field(min_length=1, max_length=64)


def issue_to_customer(store: "Store", shop: str, body: IssueIn) -> dict[str, Any]:
    """The customer's code of the pool: the one they hold, else a new one. ApiError 404 for
    an unknown pool, 409 when it has no code left."""
    from server.store.sql import imported_visitor_id

    try:
        check_pool_id(body.pool)
    except PoolError as exc:
        raise ApiError(422, f"pool: {exc}") from None
    if store.coupon_pool(shop, body.pool) is None:
        raise ApiError(404, f"shop {shop!r} has no coupon pool {body.pool!r} "
                            f"(`vitrine coupons create --shop {shop} --pool {body.pool} ...` makes one)")
    try:
        code = issue_code(store, shop, body.pool, imported_visitor_id(body.customer_id))
    except VisitorForgotten:
        raise ApiError(403, f"customer {body.customer_id!r} was deleted at their request: nothing is issued to them") from None
    if code is None:
        raise ApiError(409, f"pool {body.pool!r} has no code left (`vitrine coupons create --shop {shop} "
                            f"--pool {body.pool} --count N` adds some)")
    return {"ok": True, "customer_id": body.customer_id, "pool": body.pool, "code": code}
