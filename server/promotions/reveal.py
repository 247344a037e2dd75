"""A campaign's unique code (`coupon_pool` in its config): the code of the pool issued to
this visitor, revealed in the popup's second step (`POST /v1/reveal`) or in the answer to a
sign-up (`POST /v1/leads`). The same visitor gets the same code again; no two visitors one.

A code is a row about the visitor (coupon_issues), so only a visitor whose consent allows a
profile gets one. To the others the campaign shows its `code` when the config gives one
(the same for all of them), else not at all (server/campaigns.py says so in its reasons).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.promotions.pools import issue_code

if TYPE_CHECKING:
    from server.campaigns import Campaign
    from server.context import VisitorContext
    from server.store import Store


class NoCodeLeft(LookupError):
    """The campaign's pool is missing or has no code left for this visitor."""


class NeedsAVisitor(PermissionError):
    """A code of the pool is a visitor's own: this request has no visitor who may keep one."""


def banner_code(store: "Store", campaign: "Campaign", ctx: "VisitorContext") -> str:
    """The code a banner with a coupon pool shows this visitor as it renders: theirs (issued
    on the first page that shows it, a new visitor's included), the campaign's `code` for a
    visitor who cannot hold one or a bot (a crawler would empty the pool), "" when there is
    none to show (the banner shows without one)."""
    if ctx.device.is_bot or not ctx.consent.personalization:
        return campaign.code
    try:
        return campaign_code(store, campaign, ctx, new_token=True)
    except (NoCodeLeft, NeedsAVisitor):
        return campaign.code


def campaign_code(store: "Store", campaign: "Campaign", ctx: "VisitorContext", new_token: bool = False) -> str:
    """The code this visitor is shown for the campaign: their code of its pool (issued now if
    they hold none), or the campaign's own `code` for a visitor who cannot be given one.
    NeedsAVisitor without a visitor who may hold one, NoCodeLeft when the pool cannot give one,
    each only where the campaign has no `code` to fall back on. `new_token`: the request made
    the visitor's id (a page call rendering a banner), which is theirs all the same."""
    if not campaign.coupon_pool:
        return campaign.code
    if not ctx.consent.personalization or (ctx.is_new_token and not new_token):
        if campaign.code:
            return campaign.code
        raise NeedsAVisitor(f"campaign {campaign.id!r} gives each visitor their own code: that needs the token of "
                            "a visitor who consented to personalization (from a page call)")
    held = ctx.held_coupons().get(campaign.coupon_pool)  # issued by the shop to their customer
    if held is not None:
        return held
    if campaign.audience.holds_coupon:  # shown only to holders: nothing new to give
        raise NoCodeLeft(f"this visitor holds no code of pool {campaign.coupon_pool!r} with uses left")
    code = issue_code(store, ctx.shop, campaign.coupon_pool, ctx.visitor_id, ctx.audiences.ids)
    if code is None:
        if campaign.code:
            return campaign.code
        raise NoCodeLeft(f"pool {campaign.coupon_pool!r} has no code left for this visitor "
                         f"(`vitrine coupons create --shop {ctx.shop} --pool {campaign.coupon_pool} --count N` adds some)")
    return code
