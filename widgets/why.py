""""Why this?": what a widget shows, explained to the shopper in plain words.

Built from the decisions QA sees with `_context=1`: a campaign's audience, the strategies
that filled a panel, the basis of the menu's order, the order of a category page or of
search results. Never their internals (no ids, scores, rule names), and nothing the
visitor's consent keeps out: without personalization their history is empty
(server/context.py), so what is said comes from this request alone (the country, the
device, the page). A shop shows it with `why_link = true`; the templates draw it with the
`why_details` macro of widgets/common/templates/why.html.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from server.countries import display_name
from server.recommend.serving import SESSION_VIEWS, visitor_history

if TYPE_CHECKING:
    from server.campaigns import Campaign
    from server.context import VisitorContext
    from server.navigation import CategoryPage, NavOrder
    from server.recommend.serving import Recommendation
    from server.search import SearchResults
    from widgets.base import RenderContext

MAX_REASONS = 4
MAX_CATEGORIES = 2  # categories named in "Because you looked at items in ..."
PATH_SEPARATOR = " > "

DEVICES = {"mobile": "a phone", "tablet": "a tablet", "desktop": "a computer"}
PAGES = {
    "home": "Because you are on the home page",
    "category": "Because you are browsing a category",
    "product": "Because you are looking at a product",
    "cart": "Because you are looking at your cart",
    "search": "Because you are searching",
    "checkout": "Because you are checking out",
}
SOURCES = {
    "direct": "Because you came straight to the shop",
    "organic": "Because you came from a search engine",
    "paid": "Because you came from an advert",
    "social": "Because you came from social media",
    "email": "Because you came from an e-mail",
    "referral": "Because you came from another website",
    "internal": "Because you came from another page of this shop",
}
NOT_REMEMBERED = "Because this shop does not remember your visits (personalization is off)"
EARLIER_VISITS = "Because of what you did on earlier visits"


@dataclass(frozen=True)
class Why:
    reasons: tuple[str, ...]
    personalized: bool  # the visitor allows personalization: there is something to turn off

    def as_dict(self) -> dict[str, Any]:
        return {"reasons": list(self.reasons), "personalized": self.personalized}


def wanted(rc: "RenderContext") -> bool:
    """Whether to work the reasons out: the shop shows them, or a fragment URL may show them to QA."""
    return rc.shop.why_link or rc.standalone


def explained(rc: "RenderContext", reasons: Iterable[str]) -> Why:
    unique = tuple(dict.fromkeys(r for r in reasons if r))[:MAX_REASONS]
    return Why(unique, personalized=rc.ctx.consent.personalization)


def shown(rc: "RenderContext", why: Why | None) -> Why | None:
    """What the template gets as `why`: none unless the shop shows the link."""
    return why if rc.shop.why_link else None


# -- campaigns -----------------------------------------------------------------------------
def campaign(rc: "RenderContext", chosen: "Campaign") -> Why:
    """A shown campaign: each condition of its audience, which this visitor meets."""
    ctx, audience = rc.ctx, chosen.audience
    reasons = []
    if audience.visitor:
        reasons.append(_kind(ctx))
    if audience.country or audience.not_country:
        outside = " or ".join(display_name(c) or c for c in audience.not_country)
        reasons.append(visiting_from(ctx) or f"Because you are visiting from outside {outside}")
    if audience.device:
        reasons.append(on_device(ctx) or "Because of the device you are using")
    if audience.page_type:
        reasons.append(PAGES.get(ctx.page.type, "Because of the page you are on"))
    if audience.source:
        reasons.append(SOURCES.get(ctx.source.medium, "Because of how you came to the shop"))
    if audience.min_page_views:
        reasons.append(f"Because you have looked at {ctx.profile.page_views} pages here")
    if audience.audiences:
        reasons += _audiences(ctx, audience.audiences)
    return explained(rc, reasons or ["Shown to every visitor"])


# The shop's audiences (server/audiences/), told without their names: the built-in ones...
AUDIENCES = {
    "new": "Because you are new here",
    "returning": "Because you have been here before",
    "prospect": "Because you signed up with this shop",
    "first_time_customer": "Because you have ordered from this shop before",
    "repeat_customer": "Because you have ordered from this shop before",
    "loyal": "Because you are one of this shop's regular customers",
    "lapsed": "Because you have not ordered from this shop for a while",
    "cart_abandoner": "Because you left items in your cart",
}
# ... and the facts a shop's own audience rests on.
FACTS = {
    **dict.fromkeys(("orders", "revenue", "days_since_last_order"), "Because of your orders here"),
    **dict.fromkeys(("visits", "page_views", "visit_page_views", "days_since_last_visit", "days_since_first_visit"),
                    "Because of your visits here"),
    **dict.fromkeys(("signed_up", "hours_since_sign_up"), "Because you signed up with this shop"),
    **dict.fromkeys(("cart_value", "cart_count", "cart_age_minutes", "cart_items", "cart_categories"),
                    "Because of what is in your cart"),
    **dict.fromkeys(("viewed_items", "viewed_categories", "category_views", "interest"),
                    "Because of what you looked at here"),
    "searches": "Because of what you searched for here",
    "language": "Because of your browser's language",
    **dict.fromkeys(("local_hour", "weekday"), "Because of the time of day where you are"),
}


def _audiences(ctx: "VisitorContext", wanted: Sequence[str]) -> list[str]:
    """The first of the campaign's audiences the visitor is in, in plain words."""
    membership = ctx.audiences
    audience = next((a for a in wanted if a in membership), None)
    if audience is None:
        return []
    reasons = []
    for name, category in membership.behind(audience):
        if name in AUDIENCES or name.startswith("loyal_"):
            reasons.append(AUDIENCES.get(name, AUDIENCES["loyal"]))
        elif name in ("device", "os", "browser"):
            reasons.append(on_device(ctx) or "Because of the device you are using")
        elif name in ("country", "region", "city"):  # never nearer than the country
            reasons.append(visiting_from(ctx) or "Because of where you are visiting from")
        elif name in ("medium", "source", "campaign", "referrer", "landing_page"):
            reasons.append(SOURCES.get(ctx.source.medium, "Because of how you came to the shop"))
        elif category and name != "cart_categories":
            reasons.append(looked_at([category]))
        else:
            reasons.append(FACTS.get(name, ""))
    return reasons


def _kind(ctx: "VisitorContext") -> str:
    if not ctx.consent.personalization:
        return NOT_REMEMBERED
    return {
        "customer": "Because you have ordered from this shop before",
        "returning": "Because you have been here before",
    }.get(ctx.visitor_kind, "Because you are new here")


# -- recommendations -------------------------------------------------------------------------
def recommendations(rc: "RenderContext", found: "Recommendation", category: str = "") -> Why:
    """A panel: every strategy that put items in it, in the order of the chain."""
    reasons: list[str] = []
    for step in found.chain:
        if step["used"]:
            reasons += _strategy(rc, step["strategy"], found, category)
    return explained(rc, reasons or ["Popular right now"])


def _strategy(rc: "RenderContext", name: str, found: "Recommendation", category: str) -> list[str]:
    ctx = rc.ctx
    if name == "top_picks":
        return _about_you(rc)
    if name in ("similar", "bought_together"):
        lead = "Similar to" if name == "similar" else "Often bought with"
        return [f"{lead} {_anchor(rc, found)}"]
    if name == "trending_near_you":
        country = display_name(ctx.geo.country or "")
        return [f"Popular right now with visitors from {country}" if country else "Popular right now"]
    if name == "bestsellers" and category:
        return [f"Our best sellers in {label(category)}"]
    return [{
        "recently_viewed": "Because you looked at these items lately",
        "buy_again": "Because you bought these before",
        "trending": "Popular right now",
        "bestsellers": "Our best sellers",
        "catalog": "More from this shop",
    }.get(name, "Popular right now")]


def _anchor(rc: "RenderContext", found: "Recommendation") -> str:
    """The item a similar or bought-together panel is about, as the shopper knows it."""
    if not found.anchor_viewed:
        return "the item you are looking at"
    items = rc.catalog.shop(rc.ctx.shop).get([found.anchor]) if rc.catalog else []
    return f"“{items[0].title}”, which you looked at" if items else "an item you looked at"


def _about_you(rc: "RenderContext") -> list[str]:
    """What the model's picks for this visitor start from: what they viewed lately, their
    trained history, or (knowing neither) their country and device."""
    ctx = rc.ctx
    reasons = []
    viewed = visitor_history(ctx).viewed[:SESSION_VIEWS]
    if viewed:
        reasons.append(looked_at(_categories_of(rc, viewed)))
    model = rc.recommender.models.get(ctx.shop) if rc.recommender and rc.recommender.models else None
    known = ctx.consent.personalization and not ctx.is_new_token
    if model is not None and known and ctx.visitor_id in model.user_index:
        reasons.append(EARLIER_VISITS)
    if not any(reasons):
        reasons = [visiting_from(ctx), on_device(ctx)]
    return [r for r in reasons if r] or ["Popular with visitors like you"]


# -- the menu, category pages, search ------------------------------------------------------
def nav(rc: "RenderContext", order: "NavOrder") -> Why:
    if order.basis == "shop":
        return explained(rc, ["This menu is in the shop's usual order"])
    interest = sorted((e for e in order.entries if not e.fixed and e.affinity > 0), key=lambda e: -e.affinity)
    reasons = [looked_at([e.label for e in interest])]
    if order.model_weight > 0:
        reasons.append("And by the items picked for you")
    return explained(rc, reasons)


def category(rc: "RenderContext", page: "CategoryPage") -> Why:
    if page.served == "bestsellers":
        return explained(rc, ["Sorted by what sells most"])
    if page.served == "trending":
        return explained(rc, ["Sorted by what is popular right now"])
    interest = rc.navigator.affinity(rc.ctx).ranked() if rc.navigator else []
    reasons = [looked_at(interest)] if interest else [visiting_from(rc.ctx), on_device(rc.ctx)]
    return explained(rc, ["Sorted for you", *reasons])


def search(rc: "RenderContext", results: "SearchResults", trending: bool) -> Why:
    if results.total == 0:
        return explained(rc, ["Nothing matched your search", "Popular right now" if trending else ""])
    if not results.personalized:
        return explained(rc, ["Matches for your search, the best first"])
    signals = results.signals
    reasons = ["Matches for your search, sorted for you", looked_at(list(signals.get("affinity", {})))]
    if signals.get("searches"):
        reasons.append("Because of what you searched for before")
    if not reasons[1] and signals.get("model_vector"):
        reasons.append(EARLIER_VISITS)
    return explained(rc, reasons)


# -- sentences ----------------------------------------------------------------------------
def visiting_from(ctx: "VisitorContext") -> str:
    country = display_name(ctx.geo.country or "")
    return f"Because you are visiting from {country}" if country else ""


def on_device(ctx: "VisitorContext") -> str:
    device = DEVICES.get(ctx.device.device_class)
    return f"Because you are on {device}" if device else ""


def looked_at(categories: Sequence[str]) -> str:
    """ "Because you looked at items in Christmas and in Kitchen" (the first two, by their own name)."""
    names = list(dict.fromkeys(label(c) for c in categories if c))[:MAX_CATEGORIES]
    return f"Because you looked at items in {' and in '.join(names)}" if names else ""


def label(category: str) -> str:
    """A category path's own name: "Home > Kitchen" is "Kitchen"."""
    return category.split(PATH_SEPARATOR.strip())[-1].strip()


def _categories_of(rc: "RenderContext", item_ids: Sequence[str]) -> list[str]:
    """The categories of these items, the most frequent first (the newest first among equals)."""
    if rc.catalog is None:
        return []
    facts = rc.catalog.shop(rc.ctx.shop).facts(list(item_ids))
    counts = Counter(facts[i][0] for i in item_ids if i in facts and facts[i][0])
    return [c for c, _ in counts.most_common()]
