"""What every widget kind shares: slots, render context, fragments and template lookup."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import jinja2
import jinja2.meta
import jinja2.nodes
import orjson

from server.b2b.prices import group_prices_for
from server.campaigns import COPY_FIELDS, Campaign, Decision, copy_values, fill_copy, time_left
from server.occasions import occasion
from server.context import VisitorContext
from server.measure.experiments import with_experiments
from server.leads import interests_offered
from server.models import utcnow
from server.money import money
from server.shops import ShopConfig
from server.urls import on_site, web_url
from widgets import why as explain
from widgets.why import Why

if TYPE_CHECKING:
    from collections.abc import Mapping

    from server.b2b.prices import GroupPrice
    from server.measure.experiments import Assignment
    from server.slots import Choice
    from server.catalog import Catalog
    from server.navigation import Navigator
    from server.recommend.serving import Recommender
    from server.search import SearchService

WIDGETS_DIR = Path(__file__).parent
MAX_CARDS = 50_000  # item cards kept drawn (Templates.card)
MAX_SHARED = 4_096  # campaign fragments kept rendered (Templates.render, shared=)


@dataclass(frozen=True)
class Slot:
    """A marked element on the shop's page: `<div data-vitrine-slot=ID data-widget=KIND ...>`."""

    id: str
    widget: str
    attrs: dict[str, str] = field(default_factory=dict)  # the slot's other data-* attributes


@dataclass
class Fragment:
    html: str
    shadow: bool  # render inside a shadow root so the host page's CSS cannot reach it
    templates: list[str] = field(default_factory=list)  # considered, most specific first
    template: str = ""  # the one used
    decisions: list[Decision] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)
    strategy: str = ""  # recommendations: the strategy that served
    chain: list[dict] = field(default_factory=list)  # recommendations: every strategy tried
    error: str = ""  # a slot problem the page should hear about (unknown strategy ...)
    failed: bool = False  # the widget broke (a bug or a broken part): the page keeps its default
    why: "Why | None" = None  # the reasons in plain words ("Why this?"), when worked out
    content: "Choice | None" = None  # the shop's content for the slot that applied (server/slots.py)
    # The experiment that decided what it shows, and the visitor's assignment in it.
    assignment: "Assignment | None" = None

    @property
    def experiment(self) -> str:
        return self.assignment.experiment.id if self.assignment is not None and self.assignment.counted else ""

    @property
    def variant(self) -> str:
        return self.assignment.variant.id if self.assignment is not None and self.assignment.counted else ""

    def debug(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "template": self.template,
            "templates_considered": self.templates,
            "campaigns": self.campaigns,
            "decisions": [{"campaign": d.campaign.id, "show": d.show, "reasons": d.reasons} for d in self.decisions],
        }
        if self.strategy or self.chain:
            info.update(strategy=self.strategy, chain=self.chain)
        if self.error:
            info["error"] = self.error
        if self.why is not None:
            info["why"] = self.why.as_dict()
        if self.content is not None:
            info["content"] = self.content.as_json()
        if self.assignment is not None:
            info["experiment"] = self.assignment.as_json()
        return info


@dataclass
class RenderContext:
    ctx: VisitorContext
    shop: ShopConfig
    templates: "Templates"
    closed: set[str] = field(default_factory=set)  # campaigns this visitor closed
    standalone: bool = False  # rendered for a fragment URL, not injected by the embed script
    # Every check of a decision in words (server/campaigns.py Reasons): what QA's _context=1
    # and _debug=1 read; a page call or a fragment for a shop's page needs none.
    explain: bool = False
    recommender: "Recommender | None" = None
    catalog: "Catalog | None" = None
    search: "SearchService | None" = None
    navigator: "Navigator | None" = None
    site: str = ""  # the shop's site base URL that paths are made absolute on ("": left as paths)
    default_count: int = 4  # items in a recommendation panel
    shown: set[str] = field(default_factory=set)  # items already in this page's panels
    # A banner's code of its coupon pool for this visitor (server/promotions/reveal.py
    # banner_code); None: banners show the campaign's own code.
    coupon_code: "Callable[[Campaign, VisitorContext], str] | None" = None
    # The experiments this page showed the visitor, with the slot (or "popup"): their
    # exposures, recorded once the page is rendered (ContextBuilder.record_exposures).
    exposures: "list[tuple[Assignment, str]]" = field(default_factory=list)
    # False when QA looks (`_context`, `_debug`, another kind of visitor, another moment): a
    # search rendered then is not a visitor's, and is not counted (server/search_counts.py).
    count_searches: bool = True

    def shop_catalog(self):
        """This shop's catalog in memory (None without one)."""
        return self.catalog.shop(self.shop.id) if self.catalog is not None else None


def group_prices(rc: RenderContext) -> "Mapping[str, GroupPrice] | None":
    """The visitor's customer group's prices by item id, for the item cards (None: the catalog's)."""
    return group_prices_for(rc.catalog, rc.ctx) if rc.catalog is not None else None


class Widget(Protocol):
    kind: str
    shadow: bool

    def render(self, rc: RenderContext, slot: Slot) -> Fragment: ...

    def items_asked(self, slot: Slot, default_count: int) -> int:
        """How many items this slot will render, from its attributes alone; raises SlotLimit
        when it asks for more than a slot may. The page call adds them up against its own
        limit before anything is rendered or recorded."""
        ...


class SlotLimit(ValueError):
    """A slot asks for more work than a slot may (too many items, a page too far)."""


MAX_PAGE = 1000  # the furthest page of results a slot may ask for


def asked_number(attrs: dict[str, str], names: tuple[str, ...], default: int, most: int, least: int = 1) -> int:
    """An integer slot attribute (the first of `names` present), checked against its limits.

    Garbage means the default (a designer's typo keeps the page working); a number outside
    `least`..`most` is a SlotLimit naming the attribute and the limit.
    """
    for name in names:
        text = attrs.get(name)
        if text in (None, ""):
            continue
        try:
            value = int(text)
        except ValueError:
            return default
        if value > most:
            raise SlotLimit(f"{name} {value} is more than a slot may ask for (at most {most})")
        return max(least, value)
    return default


@dataclass(frozen=True)
class Shared:
    """What a render's context holds, for reusing its HTML (Templates.render): `key`, every
    value of it but the `personal` names' (hashable); `objects`, the config objects the key
    names by `id()`, checked to be the same objects on reuse (a reloaded config is new)."""

    key: tuple
    personal: frozenset[str]
    objects: tuple = ()


class Templates:
    """Jinja templates: overrides first, then the built-in ones (also reachable as `default:NAME`).

    Lookup goes from the most specific name to the least: `banner-<shop>-<campaign>.html`,
    `banner-<shop>.html`, `banner.html`.
    """

    def __init__(self, override_dirs: list[Path], check_interval_s: float = 1.0) -> None:
        builtin = jinja2.FileSystemLoader([str(p) for p in sorted(WIDGETS_DIR.glob("*/templates"))])
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader([str(d) for d in override_dirs])]
        loaders += [jinja2.PrefixLoader({"default": builtin}, delimiter=":"), builtin]
        # Compiled once; a designer's edit of an override is seen through one listing of the
        # override folders at most every check_interval_s, never a stat per render.
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=True,
            auto_reload=False,
            cache_size=-1,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.override_dirs = list(override_dirs)
        self.check_interval_s = check_interval_s
        self._chosen: dict[tuple[str, ...], jinja2.Template] = {}  # names -> the most specific that exists
        self._checked_at = -float("inf")
        self._signature = self._overrides_now()
        self._lock = threading.Lock()
        self.env.filters["money"] = money
        # Every link and image a template renders goes through it: only http(s) and paths.
        self.env.filters["web_url"] = web_url
        self.env.globals["card"] = self.card
        self._cards: dict[tuple, Any] = {}
        self._shared: dict[tuple, tuple] = {}  # (template name, Shared.key) -> (template, objects, html)
        self._reads: dict[str, frozenset[str] | None] = {}

    @staticmethod
    def names(kind: str, shop: str, campaign: str | None = None) -> list[str]:
        names = [f"{kind}-{shop}-{campaign}.html"] if campaign else []
        return names + [f"{kind}-{shop}.html", f"{kind}.html"]

    def render(self, names: list[str], site: str = "", group_prices: "Mapping[str, GroupPrice] | None" = None,
               shared: "Shared | None" = None, **context: Any) -> tuple[str, str]:
        """Render the first of `names` that exists. `site`: the shop's site base URL, which the
        item cards' paths are made absolute on (server/urls.py on_site); `group_prices`: the
        visitor's customer group's prices by item id, which the item cards show (server/b2b/).

        `shared`: what the context holds, as a key, except the names it lists as `personal`.
        When the template (with what it extends and includes) reads none of those, its HTML is
        the same for every visitor with that key: rendered once, then reused (a campaign's
        fragment is the same for everyone who sees the same copy)."""
        template = self.select(names)
        if group_prices:
            context["card"] = lambda item, shop, size=200: self.card(item, shop, size, site, group_prices.get(item.item_id))
        elif site:
            context["card"] = lambda item, shop, size=200: self.card(item, shop, size, site)
        html = template.render(**context)
        if shared is not None and self._shareable(template, shared):
            if len(self._shared) >= MAX_SHARED:
                self._shared.clear()
            self._shared[(template.name, shared.key)] = (template, shared.objects, html)
        return html, template.name or names[-1]

    def select(self, names: list[str]) -> jinja2.Template:
        """The first of `names` that exists, compiled; remembered until an override changes."""
        self._check_overrides()
        key = tuple(names)
        template = self._chosen.get(key)
        if template is None:
            template = self._chosen[key] = self.env.select_template(names)
        return template

    def reuse(self, names: list[str], shared: Shared) -> tuple[str, str] | None:
        """The HTML render(names, shared=shared, ...) made before, if it may be reused."""
        template = self.select(names)
        found = self._shared.get((template.name, shared.key))
        if (found is None or found[0] is not template or any(a is not b for a, b in zip(found[1], shared.objects))
                or not self._shareable(template, shared)):
            return None
        return found[2], template.name or names[-1]

    def _shareable(self, template: jinja2.Template, shared: Shared) -> bool:
        reads = self.reads(template)
        return reads is not None and not (reads & shared.personal)

    def reads(self, template: jinja2.Template) -> frozenset[str] | None:
        """The context names a template reads, with those of the templates it extends,
        includes or imports with the context (a macro imported without it sees none); None
        when that cannot be told (a template named by an expression)."""
        name = template.name or ""
        if name not in self._reads:
            self._reads[name] = self._names_read(name, set())
        return self._reads[name]

    def _names_read(self, name: str, seen: set[str]) -> frozenset[str] | None:
        if name in seen:
            return frozenset()
        seen.add(name)
        try:
            source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            return None
        tree = self.env.parse(source)
        found = set(jinja2.meta.find_undeclared_variables(tree))
        nodes = jinja2.nodes
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            if isinstance(node, (nodes.Import, nodes.FromImport)) and not node.with_context:
                continue
            if not isinstance(node.template, nodes.Const) or not isinstance(node.template.value, str):
                return None
            inner = self._names_read(node.template.value, seen)
            if inner is None:
                return None
            found |= inner
        return frozenset(found)

    def card(self, item: Any, shop: Any, size: int = 200, site: str = "", group_price: "GroupPrice | None" = None) -> Any:
        """`{{ card(item, shop) }}`: the `item_card` macro of item-card.html (an override's, if
        there is one), drawn once per item, shop, size and group price and reused: a card is the
        same for every visitor of a group, and drawing it is most of a panel's rendering (50-100
        µs a card). An override whose macro takes no `group_price` gets the item at the group's
        price instead."""
        self._check_overrides()
        macros = self.env.get_template("item-card.html").module
        key = (id(macros), item, getattr(shop, "id", ""), getattr(shop, "currency", ""), size, site, group_price)
        html = self._cards.get(key)
        if html is None:
            if len(self._cards) >= MAX_CARDS:
                self._cards.clear()
            if site and (item.url.startswith("/") or (item.image_url or "").startswith("/")):
                item = dataclasses.replace(item, url=on_site(item.url, site), image_url=on_site(item.image_url or "", site))
            draw = macros.item_card  # type: ignore[attr-defined]
            if group_price is None:
                html = draw(item, shop, size)
            elif "group_price" in draw.arguments:
                html = draw(item, shop, size, group_price=group_price)
            else:
                shown = group_price.price if group_price.price is not None else item.price
                html = draw(dataclasses.replace(item, price=shown), shop, size)
            self._cards[key] = html
        return html

    def _check_overrides(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.check_interval_s:
            return
        with self._lock:
            if now - self._checked_at < self.check_interval_s:
                return
            signature = self._overrides_now()
            if signature != self._signature:
                self.env.cache.clear()
                self._chosen = {}
                self._cards = {}
                self._shared = {}
                self._reads = {}
                self._signature = signature
            self._checked_at = now

    def _overrides_now(self) -> tuple:
        found = []
        for folder in self.override_dirs:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file():
                            info = entry.stat()
                            found.append((folder, entry.name, info.st_mtime_ns, info.st_size))
            except OSError:
                continue
        return tuple(sorted(found))


def shared_context(rc: RenderContext, slot: "Slot | None", why: "Why | None", *values: Any,
                   personal: frozenset[str] = frozenset({"visitor"}), objects: tuple = ()) -> Shared:
    """A fragment's render context as a key (Templates.render, shared=): the shop, the slot, the
    reasons shown and `values` (the rest of what the template gets, hashable) render the same
    HTML for everyone whose template reads none of the `personal` names (the visitor's own)."""
    key = (
        id(rc.shop), rc.site, rc.standalone,
        (slot.id, slot.widget, tuple(sorted(slot.attrs.items()))) if slot is not None else None,
        (why.reasons, why.personalized) if why is not None else None, *(id(o) for o in objects), *values,
    )
    return Shared(key, personal, (rc.shop, *objects))


def _campaign_shared(rc: RenderContext, campaign: Campaign, copy: dict[str, str], slot: "Slot | None", why: "Why | None",
                     signup: dict | None, issued: bool, countdown: Any, cart: Any) -> Shared | None:
    """A campaign fragment's key: its copy and sign-up (as configured) are the same for every
    visitor shown them; a running countdown and a cart are each visitor's own. None: not keyed."""
    try:
        form = orjson.dumps(signup, option=orjson.OPT_SORT_KEYS) if signup is not None else None
    except TypeError:
        return None
    personal = {"visitor"}
    if countdown is not None:
        personal.add("countdown")
    if cart is not None:
        personal.add("cart")
    return shared_context(rc, slot, why, tuple(copy.items()), issued, form, personal=frozenset(personal),
                          objects=(campaign,))


def campaign_copy(campaign: Campaign, ctx: VisitorContext) -> dict[str, str]:
    """The campaign's texts with their placeholders filled for this visitor (server/campaigns.py
    says which there are). Shop configs refuse any other placeholder when loaded; a text that
    is not valid copy anyway is shown as written, never an error."""
    values = copy_values(ctx)
    if campaign.calendar is not None:
        found = occasion(campaign.calendar, ctx, campaign.shop_zone)
        values = {**values, "occasion": found[1] if found else ""}
    return {f: fill_copy(getattr(campaign, f), values) for f in COPY_FIELDS}


def countdown_context(campaign: Campaign, ctx: VisitorContext) -> dict[str, Any] | None:
    """What a template shows of a campaign's countdown: its end (ISO 8601 UTC, or none for one
    counted from the first showing), its length in minutes, the time left now and the words."""
    countdown = campaign.countdown
    if countdown is None:
        return None
    end = countdown.end(campaign.shop_zone)
    now = ctx.now or utcnow()
    left = (end - now).total_seconds() if end is not None else (countdown.minutes or 0) * 60
    return {"ends_at": end.isoformat(timespec="seconds") + "Z" if end else "", "minutes": countdown.minutes or "",
            "left": time_left(left), "text": countdown.text}


CART_SHOWN = 4  # cart lines a cart reminder shows; it says how many more there are


def cart_context(rc: RenderContext) -> dict[str, Any] | None:
    """The visitor's cart as a reminder shows it: the newest lines first, each with the
    catalog's title, link, image and price; none without consent or without a cart."""
    ctx = rc.ctx
    state = ctx.profile.state
    catalog = rc.shop_catalog()
    if ctx.is_new_token or state is None or not state.cart or not ctx.consent.personalization or catalog is None:
        return None
    lines = []
    for item_id, quantity, price, _ in sorted(state.cart, key=lambda line: -line[3]):
        item = catalog.by_id.get(item_id)
        if item is None:
            continue
        lines.append({"item_id": item_id, "title": item.title, "url": on_site(item.url, rc.site),
                      "image_url": on_site(item.image_url or "", rc.site), "quantity": quantity,
                      "price": item.price if price is None else price, "currency": item.currency or rc.shop.currency})
    if not lines:
        return None
    return {"lines": lines[:CART_SHOWN], "more": len(lines) - min(len(lines), CART_SHOWN), "count": len(lines)}


def render_campaign(rc: RenderContext, kind: str, decision_list: list[Decision], shadow: bool, limit: int | None, slot: Slot | None) -> Fragment:
    """Render the shown campaigns of a decision list (at most `limit`) with their templates,
    after the experiments on them and the hold-out (server/measure/experiments.py)."""
    decision_list = with_experiments(decision_list, rc.shop, rc.ctx, rc.closed)
    shown: list[Decision] = []
    fragment = Fragment(html="", shadow=shadow, decisions=decision_list)
    for decision in decision_list:
        if limit is not None and len(shown) >= limit:
            break
        if decision.assignment is not None and (decision.show or decision.held_back):
            rc.exposures.append((decision.assignment, slot.id if slot is not None else kind))
            fragment.assignment = fragment.assignment or decision.assignment
        if decision.show:
            shown.append(decision)
    parts = []
    for decision in shown:
        campaign = configured = decision.campaign
        names = Templates.names(kind, rc.shop.id, campaign.id)
        why = explain.campaign(rc, campaign) if explain.wanted(rc) else None
        fragment.why = fragment.why or why
        copy = campaign_copy(campaign, rc.ctx)
        copy["link"] = on_site(copy["link"], rc.site)
        signup = None
        # A code of the campaign's pool is issued on reveal (POST /v1/reveal), never here;
        # a visitor without consent is shown the campaign's own code, if it has one.
        issued = (bool(campaign.coupon_pool) and rc.ctx.consent.personalization and campaign.signup is None
                  and campaign.widget == "popup")
        if issued:
            copy["code"] = ""
        elif campaign.coupon_pool and campaign.widget == "banner" and rc.coupon_code is not None:
            copy["code"] = rc.coupon_code(campaign, rc.ctx)  # a banner shows it: issued as it renders
        if campaign.signup is not None:
            # The reward of a sign-up is in the answer to a valid one (POST /v1/leads), never here.
            copy["code"] = copy["reveal_text"] = ""
            campaign = campaign.model_copy(update={"code": "", "reveal_text": ""})
            signup = {**campaign.signup.model_dump(), "interests": interests_offered(campaign, rc.shop_catalog())}
        shown_why = explain.shown(rc, why)
        countdown = countdown_context(campaign, rc.ctx)
        cart = cart_context(rc) if campaign.show_cart else None
        shared = _campaign_shared(rc, configured, copy, slot, shown_why, signup, issued, countdown, cart)
        reused = rc.templates.reuse(names, shared) if shared is not None else None
        if reused is not None:
            html, used = reused
        else:
            html, used = rc.templates.render(
                names, site=rc.site, shared=shared, campaign=campaign, copy=copy,
                visitor=rc.ctx.as_dict(campaign.geo_detail), shop=rc.shop, slot=slot, standalone=rc.standalone,
                why=shown_why, signup=signup, issued=issued, countdown=countdown, cart=cart,
            )
        parts.append(html)
        fragment.templates, fragment.template = names, used
        fragment.campaigns.append(campaign.id)
    if not shown:
        fragment.templates = Templates.names(kind, rc.shop.id)
    fragment.html = "".join(parts)
    return fragment

