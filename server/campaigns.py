"""Campaigns from a shop's config: who they target, when they trigger, and the decision for a visitor.

Every decision carries its reasons, so QA can see why a campaign did or did not show.
"""

from __future__ import annotations

import functools
import math
import re
import string
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.audiences.facts import FACTS
from server.models import utcnow
from server.money import money
from server.occasions import Calendar, check_calendar
from server.schedules import Schedule, check_schedule, zone_named
from server.urls import RULE, is_web_url

if TYPE_CHECKING:
    from server.audiences import VisitorFacts
    from server.measure.experiments import Assignment
    from server.context import VisitorContext

VisitorKind = Literal["new", "returning", "customer"]
DeviceClass = Literal["mobile", "tablet", "desktop", "bot", "other"]
Medium = Literal["direct", "organic", "paid", "social", "email", "referral", "internal"]

# The copy of a campaign and the facts it may name. Only coarse ones: a country or region,
# never a city, so copy cannot feel like it knows where someone lives. The personal ones
# (PERSONAL_PLACEHOLDERS) a visitor may not have: `{first_name:there}` gives the text after
# the colon instead; written without one, the campaign shows only to visitors who have it.
COPY_FIELDS = ("title", "body", "cta", "link", "code", "reveal_text")
COPY_PLACEHOLDERS = (
    "country", "country_name", "region", "visits", "favourite_category", "cart_value", "first_name", "occasion",
)
PERSONAL_PLACEHOLDERS = ("favourite_category", "cart_value", "first_name")
_ALLOWED = ", ".join(f"{{{name}}}" for name in COPY_PLACEHOLDERS[:-1]) + f" or {{{COPY_PLACEHOLDERS[-1]}}}"


def copy_problem(text: str) -> str | None:
    """Why `text` cannot be campaign copy, or None: only `{name}` or `{name:fallback}` of
    COPY_PLACEHOLDERS, with no attribute, index, conversion or brace in the fallback; a
    literal brace is written `{{` or `}}`."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"a lone {{ or }} ({exc}); write {{{{ or }}}} for a literal brace"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if name in COPY_PLACEHOLDERS and conversion:
            return f"placeholder {shown} has a conversion; write {{{name}}} or {{{name}:fallback text}}"
        if name in COPY_PLACEHOLDERS and spec and ("{" in spec or "}" in spec):
            return f"placeholder {shown} has a placeholder in its fallback; write plain text after the colon"
        if base in COPY_PLACEHOLDERS and name != base:
            return f"placeholder {shown} reaches into {{{base}}}; write just {{{base}}}"
        if name not in COPY_PLACEHOLDERS:
            return f"unknown placeholder {shown}; use {_ALLOWED}"
    return None


def valid_copy(text: str) -> str:
    """`text` if it is valid copy; ValueError saying why not (the copy fields' validator)."""
    problem = copy_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def fill_copy(text: str, values: dict[str, str]) -> str:
    """`text` with its placeholders filled from `values` (an empty value gives the fallback
    after the colon, or nothing); the text as written if it is not valid copy."""
    if "{" not in text and "}" not in text:
        return text
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        return text
    filled = []
    for literal, name, spec, conversion in parts:
        filled.append(literal)
        if name is None:
            continue
        if name not in values or conversion:
            return text
        filled.append(str(values[name]) or spec)
    return "".join(filled)


def needed_facts(texts: "Iterable[str]") -> tuple[str, ...]:
    """The personal placeholders these texts name without a fallback: the campaign needs the
    visitor to have them."""
    needed: list[str] = []
    for text in texts:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError:
            continue
        needed += [name for _, name, spec, _ in parts if name in PERSONAL_PLACEHOLDERS and not spec]
    return tuple(dict.fromkeys(needed))


def copy_values(ctx: "VisitorContext") -> dict[str, str]:
    """What the placeholders say for this visitor ("" where the visitor does not have it):
    worked out once per request, from the facts the audiences read (server/audiences/)."""
    def make() -> dict[str, str]:
        values = {
            "country": ctx.geo.country or "", "country_name": ctx.geo.country_name or "your country",
            "region": ctx.geo.region or "", "visits": str(ctx.profile.visits),
            "favourite_category": "", "cart_value": "", "first_name": "",
            "occasion": "",  # a calendar campaign's own (widgets/base.py campaign_copy)
        }
        run = ctx.audiences.run
        facts = run.facts if run is not None else None
        if facts is None or not ctx.consent.personalization:
            return values
        values["favourite_category"] = favourite_category(ctx)
        cart = facts.value("cart_value")
        if cart:
            values["cart_value"] = money(cart, _cart_currency(facts))
        values["first_name"] = facts.value("first_name") if "first_name" in FACTS else ""
        return values

    return ctx.derive("copy:values", make)


def favourite_category(ctx: "VisitorContext", full: bool = False) -> str:
    """The catalog category with the most of the visitor's affinity: by its last name for
    copy ("Lights" of "Home > Lights"), or `full`; none without a clear one (a single view
    is not a favourite) or without consent to personalization."""
    run = ctx.audiences.run
    facts = run.facts if run is not None else None
    if facts is None or facts._affinity is None or not ctx.consent.personalization:
        return ""
    affinity = facts._affinity()
    if not affinity.scores:
        return ""
    top = affinity.ranked()[0]
    if affinity.evidence.get(top, 0) < FAVOURITE_MIN_EVENTS:
        return ""
    return top if full else top.split(">")[-1].strip()


def _cart_currency(facts: "VisitorFacts") -> str:
    known = facts.catalog.by_id if facts.catalog is not None else {}
    return next((known[line[0]].currency for line in facts.value("cart") if line[0] in known), "")


FAVOURITE_MIN_EVENTS = 2  # events behind a category before copy calls it the visitor's favourite


class Audience(BaseModel):
    """Who sees a campaign. Every listed condition must hold; an empty list means anyone."""

    model_config = ConfigDict(extra="forbid")

    visitor: list[VisitorKind] = Field(default_factory=list)
    device: list[DeviceClass] = Field(default_factory=list)
    country: list[str] = Field(default_factory=list, description="ISO 3166 alpha-2 codes")
    not_country: list[str] = Field(default_factory=list)
    page_type: list[str] = Field(default_factory=list)
    source: list[Medium] = Field(default_factory=list)
    min_page_views: int = 0
    # The shop's audiences (server/audiences/, docs/audiences.md): in any of `audiences`, in
    # none of `not_audiences`.
    audiences: list[str] = Field(default_factory=list, description="In any of these audiences")
    holds_coupon: bool = Field(
        False, description="only a visitor identified as a customer who holds a code of the campaign's coupon_pool "
        "with uses left (one the shop issued them, such as an apology coupon: docs/promotions.md)",
    )
    not_audiences: list[str] = Field(default_factory=list, description="In none of these audiences")

    @field_validator("country", "not_country")
    @classmethod
    def _upper(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if len(code) != 2 or not code.isalpha():
                raise ValueError(f"{code!r} is not a two-letter country code")
        return [c.upper() for c in codes]


TriggerOn = Literal["load", "delay", "scroll", "exit", "page_views", "add_to_cart", "inactivity", "cart_page"]
# Which trigger takes which of the other keys (every other key is refused, so a typo shows).
TRIGGER_KEYS = {"delay": ("seconds",), "inactivity": ("seconds",), "scroll": ("percent",), "page_views": ("count",)}


class Trigger(BaseModel):
    """When a popup opens on the page: the browser (static/popups.js) watches for it; the server
    checks what it knows itself (the page type of `cart_page`, the visit's page views)."""

    model_config = ConfigDict(extra="forbid")

    on: TriggerOn = "load"
    seconds: float = Field(default=0, ge=0, le=3600, description="delay: after this long; inactivity: this long without input")
    percent: int = Field(default=50, ge=0, le=100, description="scroll: how far down the page")
    count: int = Field(default=2, ge=1, le=1000, description="page_views: from the N-th page view of the visit on")

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> "Trigger":
        wanted = TRIGGER_KEYS.get(self.on, ())
        for key in sorted(self.model_fields_set - {"on"} - set(wanted)):
            takers = [on for on, keys in TRIGGER_KEYS.items() if key in keys]
            raise ValueError(f'{key} is for on = {" or ".join(repr(t) for t in takers)}, not on = "{self.on}"')
        if self.on == "inactivity" and self.seconds <= 0:
            raise ValueError('on = "inactivity" needs seconds, e.g. seconds = 30')
        return self


class Frequency(BaseModel):
    """How often one visitor may see a popup (counted in the browser: docs/campaigns.md#frequency-caps)."""

    model_config = ConfigDict(extra="forbid")

    per_session: int | None = Field(default=None, ge=1, le=1000, description="at most this many times in a browser session")
    per_day: int | None = Field(default=None, ge=1, le=1000, description="at most this many times in 24 hours")
    total: int | None = Field(default=None, ge=1, le=1000, description="at most this many times ever")
    days_after_close: float | None = Field(
        default=None, ge=0, le=3650, description="shown again this many days after the visitor closed it",
    )


class SignupForm(BaseModel):
    """`[campaigns.signup]`: the popup's second step is an e-mail sign-up (POST /v1/leads);
    its `code` is revealed only in the answer to a valid sign-up."""

    model_config = ConfigDict(extra="forbid")

    button: str = Field("Sign me up", min_length=1, max_length=100, description="the submit button")
    opt_in: str = Field(
        "Yes, send me offers and news by e-mail.", min_length=1, max_length=300,
        description="the opt-in checkbox's text (it must be ticked to sign up)",
    )
    birthday: bool = Field(False, description="an optional birthday field (day and month, year optional)")
    interests: bool | Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=20)] = Field(
        False, description="optional interests to tick: a list, or true for the catalog's largest categories",
    )
    thanks: str = Field("Thanks for signing up!", max_length=300, description="shown after a valid sign-up")


class Countdown(BaseModel):
    """`[campaigns.countdown]`: a popup's offer runs out, at `ends_at` or `minutes` after the
    visitor first saw it; the popup shows the time left, ticking, and goes at zero."""

    model_config = ConfigDict(extra="forbid")

    ends_at: datetime | None = Field(default=None, description="the offer's end (without an offset: in the shop's time zone)")
    minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60, description="the offer's length from the first showing")
    text: str = Field("Offer ends in", max_length=100, description="the words before the time left")

    @model_validator(mode="after")
    def _one_end(self) -> "Countdown":
        if (self.ends_at is None) == (self.minutes is None):
            raise ValueError("give the countdown either ends_at (a date-time) or minutes (after it is first shown)")
        return self

    def end(self, shop_zone: str) -> datetime | None:
        """ends_at as naive UTC (None for a countdown in minutes)."""
        if self.ends_at is None:
            return None
        moment = self.ends_at if self.ends_at.tzinfo is not None else self.ends_at.replace(tzinfo=zone_named(shop_zone))
        return moment.astimezone(timezone.utc).replace(tzinfo=None)


def time_left(seconds: float) -> str:
    """`1:05:09`, `4:59`: how the countdown writes the time left (as popups.js does)."""
    s = max(0, math.ceil(seconds))
    hours, minutes = divmod(s // 60, 60)
    return f"{hours}:{minutes:02d}:{s % 60:02d}" if hours else f"{minutes}:{s % 60:02d}"


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    widget: Literal["popup", "banner"]
    enabled: bool = True
    priority: int = 0
    placement: str = Field(default="", description="Banner slots this fills (slot id or data-placement)")
    audience: Audience = Field(default_factory=Audience)
    trigger: Trigger = Field(default_factory=Trigger)
    once_closed: bool = Field(default=True, description="Never show again after the visitor closes it")
    frequency: Frequency = Field(default_factory=Frequency)
    signup: SignupForm | None = Field(default=None, description="popups: the second step is an e-mail sign-up")
    schedule: Schedule = Field(default_factory=Schedule)
    calendar: Calendar | None = Field(default=None, description="runs on a holiday, birthday or anniversary of the visitor's")
    countdown: Countdown | None = Field(default=None, description="popups: a time-limited offer, with the time left")
    show_cart: bool = Field(default=False, description="shows the items in the visitor's cart (a cart reminder)")
    title: str = ""
    body: str = ""
    cta: str = ""
    link: str = ""
    code: str = Field(default="", description="A code revealed in a second step (two-step offer)")
    coupon_pool: str = Field(
        default="", pattern=r"^$|^[A-Za-z0-9_.-]{1,64}$",
        description="each visitor's own code of this coupon pool (docs/promotions.md): a popup reveals it in its "
        "second step, a banner shows it; `code` is then what a visitor without consent to personalization is shown",
    )
    reveal_text: str = ""
    theme: str = "default"
    geo_detail: Literal["region", "city"] = Field(
        default="region", description='What of the visitor\'s location its template gets: "region" (country and '
        'region) or "city" (also the city and time zone, for a campaign that needs them)',
    )

    @functools.cached_property
    def shop_zone(self) -> str:
        """The shop's `timezone`, which its config sets when loaded (in_shop_zone)."""
        return "UTC"

    def in_shop_zone(self, zone: str) -> None:
        # What shop_zone answers from now on: a plain attribute, read on every decision (a
        # pydantic private attribute costs 30 times as much to read).
        self.__dict__["shop_zone"] = zone

    @functools.cached_property
    def needs(self) -> tuple[str, ...]:
        """The personal placeholders its copy names without a fallback (worked out once: a
        pydantic private attribute costs 30 times a plain one to read, on every decision)."""
        return needed_facts(getattr(self, name) for name in COPY_FIELDS)

    _valid_copy = field_validator(*COPY_FIELDS)(valid_copy)

    @model_validator(mode="after")
    def _popup_keys(self) -> "Campaign":
        popup_only = [k for k in ("trigger", "frequency", "signup", "countdown", "show_cart") if k in self.model_fields_set]
        if self.widget != "popup" and popup_only:
            raise ValueError(f"{popup_only[0]} is for popups; this campaign is a {self.widget}")
        if self.calendar is not None:
            self.calendar.check_names(self.audience.country)
        if self.audience.holds_coupon and not self.coupon_pool:
            raise ValueError("audience.holds_coupon needs the campaign's coupon_pool: the pool whose code the visitor holds")
        if self.frequency.days_after_close is not None:
            if "once_closed" in self.model_fields_set and self.once_closed:
                raise ValueError("frequency.days_after_close shows it again after a close: leave out once_closed = true")
            self.once_closed = False
        return self

    @field_validator("link")
    @classmethod
    def _web_link(cls, link: str) -> str:
        # The template text itself must be a web link, so no placeholder can make the scheme.
        sample = fill_copy(link, dict.fromkeys(COPY_PLACEHOLDERS, "x"))
        if link and not (link.lower().startswith(("http://", "https://", "/")) and is_web_url(sample)):
            raise ValueError(f"{link!r} is not a web link: use {RULE}")
        return link


@dataclass
class Decision:
    campaign: Campaign
    show: bool
    reasons: list[str] = field(default_factory=list)
    # In an experiment (server/measure/experiments.py): the visitor's assignment, and whether
    # it is their variant alone that keeps the campaign from showing (the shop's default).
    assignment: "Assignment | None" = None
    held_back: bool = False


class _Stop(Exception):
    """The first "no" of a decision no one reads the reasons of: the rest is not checked."""


class Reasons:
    """A decision's reasons, "ok: ..." or "no: ...", each given as its words or a function
    making them. Explained (QA's `_context=1` and `_debug=1` on a fragment URL, which show
    them): every check, in words. Not explained (the page call and fragment URLs, which read
    only whether each campaign shows): no words, and the checks stop at the first no. Wording checks no one
    reads was most of a decision's time."""

    __slots__ = ("explain", "said")

    def __init__(self, explain: bool = True) -> None:
        self.explain = explain
        self.said: list[str] = []

    def __call__(self, ok: bool, why: "str | Callable[[], str]") -> None:
        if not self.explain:
            if not ok:
                raise _Stop
            return
        self.said.append(("ok: " if ok else "no: ") + (why if isinstance(why, str) else why()))


def decide(campaign: Campaign, ctx: "VisitorContext", closed: set[str] = frozenset(), variant: bool = False,
           explain: bool = True) -> Decision:
    """Whether the campaign shows to this visitor, with every reason (none when not
    `explain`ed: Reasons). A `variant` of an experiment (server/measure/experiments.py) shows
    even when not enabled on its own."""
    check = Reasons(explain)
    try:
        _checks(campaign, ctx, closed, variant, check)
    except _Stop:
        return Decision(campaign, False, check.said)
    return Decision(campaign, all(r.startswith("ok") for r in check.said), check.said)


def _checks(campaign: Campaign, ctx: "VisitorContext", closed, variant: bool, check: Reasons) -> None:
    aud = campaign.audience
    if not variant:
        check(campaign.enabled, "campaign enabled")
    if aud.visitor:
        check(ctx.visitor_kind in aud.visitor, lambda: f"visitor is {ctx.visitor_kind}, wanted {'/'.join(aud.visitor)}")
    if aud.device:
        check(ctx.device.device_class in aud.device,
              lambda: f"device is {ctx.device.device_class}, wanted {'/'.join(aud.device)}")
    if aud.country:
        check(ctx.geo.country in aud.country,
              lambda: f"country is {ctx.geo.country or 'unknown'}, wanted {'/'.join(aud.country)}")
    if aud.not_country:
        check(ctx.geo.country not in aud.not_country,
              lambda: f"country is {ctx.geo.country or 'unknown'}, excluded {'/'.join(aud.not_country)}")
    if aud.page_type:
        check(ctx.page.type in aud.page_type,
              lambda: f"page type is {ctx.page.type or 'unknown'}, wanted {'/'.join(aud.page_type)}")
    if aud.source:
        check(ctx.source.medium in aud.source, lambda: f"traffic source is {ctx.source.medium}, wanted {'/'.join(aud.source)}")
    if aud.min_page_views:
        check(ctx.profile.page_views >= aud.min_page_views,
              lambda: f"{ctx.profile.page_views} page views, wanted {aud.min_page_views}")
    if aud.audiences:
        check(*_in_audiences(ctx, aud.audiences))
    if aud.not_audiences:
        check(*_out_of_audiences(ctx, aud.not_audiences))
    needs = campaign.needs
    if needs:
        values = copy_values(ctx)
        missing = [f"{{{name}}}" for name in needs if not values[name]]
        check(not missing, lambda: f"its copy names {', '.join(f'{{{name}}}' for name in needs)}, known for this visitor"
              if not missing else
              f"its copy names {', '.join(missing)}, which this visitor has not (a fallback: {{name:text}})")
    if aud.holds_coupon:
        held = ctx.held_coupons().get(campaign.coupon_pool)
        check(held is not None, lambda: f"holds a code of pool {campaign.coupon_pool} with uses left" if held else
              f"holds no code of pool {campaign.coupon_pool} with uses left" + (
                  "" if ctx.profile.customer_id else " (not identified as a customer)"))
    if campaign.coupon_pool and not campaign.code:
        check(ctx.consent.personalization,
              lambda: f"reveals each visitor their own code of pool {campaign.coupon_pool}, which needs a visitor with "
              "consent to personalization (a fallback for the others: code = ...)")
    if campaign.once_closed:
        check(campaign.id not in closed, "not closed by this visitor before")
    if campaign.widget == "popup":
        _check_trigger(campaign.trigger, ctx, check)
        if check.explain and caps_in_words(campaign.frequency):
            # The browser counts the showings (docs/campaigns.md#frequency-caps-popups): said here, checked there.
            check(True, f"its caps are counted in the visitor's browser: {caps_in_words(campaign.frequency)}")
    zone = campaign.shop_zone
    if not campaign.schedule.empty:
        check_schedule(campaign.schedule, ctx, zone, check)
    if campaign.calendar is not None:
        check_calendar(campaign.calendar, ctx, zone, check)
    if campaign.countdown is not None and campaign.countdown.ends_at is not None:
        end, now = campaign.countdown.end(zone), ctx.now or utcnow()
        check(now < end, lambda: f"its countdown ends {end:%Y-%m-%d %H:%M} UTC, it is {now:%Y-%m-%d %H:%M} UTC")


def caps_in_words(frequency: Frequency) -> str:
    """`at most 1 per session, 3 in all`: a popup's caps, as the reasons say them."""
    said = [f"{frequency.per_session} per session" if frequency.per_session else "",
            f"{frequency.per_day} a day" if frequency.per_day else "",
            f"{frequency.total} in all" if frequency.total else ""]
    words = ", ".join(s for s in said if s)
    back = f"back {frequency.days_after_close:g} days after a close" if frequency.days_after_close is not None else ""
    return "; ".join(s for s in (f"at most {words}" if words else "", back) if s)


def _check_trigger(trigger: Trigger, ctx: "VisitorContext", check) -> None:
    """What of a popup's trigger the server knows: the page type, the visit's page views."""
    if trigger.on == "cart_page":
        check(ctx.page.type == "cart", lambda: f"page type is {ctx.page.type or 'unknown'}, its trigger wants cart")
    elif trigger.on == "page_views":
        views = visit_page_views(ctx)
        check(views >= trigger.count, lambda: f"page {views} of this visit, its trigger wants page {trigger.count} on")


def visit_page_views(ctx: "VisitorContext") -> int:
    """Page views of the visit, this one included (1 for a visitor without consent: nothing is counted)."""
    run = ctx.audiences.run
    facts = run.facts if run is not None else None
    if not ctx.consent.personalization or ctx.is_new_token:
        return 1
    views = facts.value("visit_page_views") if facts is not None else ctx.profile.visit_page_views
    return max(1, int(views or 0))


def _in_audiences(ctx: "VisitorContext", wanted: list[str]) -> "tuple[bool, Callable[[], str]]":
    """In any of the audiences, and the words of it (made when read): the first one it is in,
    with why; else why in none."""
    membership = ctx.audiences
    for audience in wanted:
        result = membership.result(audience)
        if result is not None and result.member:
            return True, lambda: f"in audience {audience}: {result.reason}"
    return False, lambda: "in none of the audiences {} ({})".format(
        "/".join(wanted), "; ".join(f"{a}: {_why_not(membership, a)}" for a in wanted))


def _out_of_audiences(ctx: "VisitorContext", excluded: list[str]) -> "tuple[bool, Callable[[], str]]":
    membership = ctx.audiences
    for audience in excluded:
        result = membership.result(audience)
        if result is not None and result.member:
            return False, lambda: f"in excluded audience {audience}: {result.reason}"
    return True, lambda: f"in none of the excluded audiences {'/'.join(excluded)}"


def _why_not(membership, audience: str) -> str:
    result = membership.result(audience)
    return result.reason if result is not None else "not an audience of this shop"


def decisions(
    campaigns: list[Campaign], ctx: "VisitorContext", widget: str, placement: str | None = None,
    closed: set[str] = frozenset(), explain: bool = True,
) -> list[Decision]:
    """Decisions for every campaign of a widget kind (and placement), highest priority first
    (`explain`: with every reason, see Reasons)."""
    chosen = [
        c for c in campaigns
        if c.widget == widget and (placement is None or not c.placement or c.placement == placement)
    ]
    chosen.sort(key=lambda c: -c.priority)
    return [decide(c, ctx, closed, explain=explain) for c in chosen]
