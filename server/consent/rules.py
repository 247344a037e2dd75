"""What a page call or an event batch may store: the visitor's consent read against the shop's rule.

The shop's rule only decides what an *unknown* answer means. An explicit answer from the
page (its own banner, Consent Mode, TCF, Shopify) is followed under every rule: a visitor
who said no is never profiled, also on a shop whose rule is `not_required`. With the shop's
`gpc = "refuse"`, the Global Privacy Control signal counts as no to both purposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from server.consent.regions import countries_of

Rule = Literal["not_required", "required", "required_in"]
GpcRule = Literal["no_sharing", "refuse"]
# Measurement events (the analytics purpose): impressions of, clicks on and closes of what
# Vitrine rendered. Everything else a batch carries (views, cart, orders, searches) is the
# visitor's profile (the personalization purpose).
ANALYTICS_EVENTS = frozenset({"view_promotion", "select_promotion", "close_promotion", "view_item_list", "select_item"})
# Where the embed script heard an answer (static/vitrine.js): a data-vitrine-optout link, the
# shop's own vitrine('consent', ...) call, Google Consent Mode, the IAB TCF API, Shopify's
# customer privacy API. `source` names those that gave the answer, comma-separated.
SOURCES = ("optout", "shop", "consent_mode", "tcf", "shopify")
NO_SOURCE = "page"  # an answer whose call named no source (a page call made by the shop's own code)


class ConsentIn(BaseModel):
    """`"consent": {"personalization": true, "analytics": false}` in a page call or an event
    batch; a purpose left out or null is unknown."""

    model_config = ConfigDict(extra="forbid")

    personalization: bool | None = None
    analytics: bool | None = None
    source: str | None = None

    @field_validator("source")
    @classmethod
    def _known_sources(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 64 or not set(value.split(",")) <= set(SOURCES)):
            raise ValueError(f"list where the answer came from, comma-separated: {', '.join(SOURCES)}")
        return value


@dataclass(frozen=True)
class ConsentPolicy:
    """The shop's side: its rule, the regions it names, and what GPC means to it."""

    rule: Rule = "not_required"
    regions: tuple[str, ...] = ()
    gpc: GpcRule = "no_sharing"

    def required_for(self, country: str) -> tuple[bool, str]:
        """Whether this visitor must consent first, and why (for `?_context=1`)."""
        if self.rule == "not_required":
            return False, "consent = not_required: an unknown answer counts as yes"
        if self.rule == "required":
            return True, "consent = required: nothing is stored until the visitor says yes"
        regions = "/".join(self.regions)
        if not country:
            return True, f"consent = required_in {regions}: the visitor's country is unknown, so it is required"
        if country in countries_of(list(self.regions)):
            return True, f"consent = required_in {regions}: country {country} is in them"
        return False, f"consent = required_in {regions}: country {country} is not in them"


@dataclass(frozen=True)
class ConsentDecision:
    """What this request may do with the visitor, and why."""

    personalization: bool  # a token, the cookie, localStorage, page views, the profile
    analytics: bool  # measurement events
    required: bool  # the shop's rule asks this visitor for consent first
    rule: str
    why: str
    given: ConsentIn
    gpc: bool  # the browser sent the Global Privacy Control signal
    refused: bool = False  # personalization is refused (an explicit no, or GPC with gpc = refuse), not just unknown

    def allows(self, event_type: str) -> bool:
        """Whether an event of this type may be recorded (under the visitor's id or, for
        measurement without a profile, under server.models.ANONYMOUS_VISITOR)."""
        return self.analytics if event_type in ANALYTICS_EVENTS else self.personalization

    def as_dict(self) -> dict[str, Any]:
        return {
            "personalization": self.personalization, "analytics": self.analytics, "required": self.required,
            "rule": self.rule, "why": self.why, "given": self.given.model_dump(exclude_none=True), "gpc": self.gpc,
            "refused": self.refused,
        }


def answer_key(decision: ConsentDecision) -> str | None:
    """The visitor's explicit answer and GPC signal as the short text their row keeps
    (visitors.consent): "p1a0" is yes to personalization and no to analytics, "-" unknown, a
    trailing "g" the GPC signal; None when the page gave no answer and no signal, which
    changes nothing in the visitor's consent history."""
    given = decision.given
    if given.personalization is None and given.analytics is None and not decision.gpc:
        return None
    mark = {True: "1", False: "0", None: "-"}
    return f"p{mark[given.personalization]}a{mark[given.analytics]}" + ("g" if decision.gpc else "")


def answer_source(decision: ConsentDecision) -> str:
    """Where the answer came from, for the consent history: the sources the page named;
    `gpc` for the Global Privacy Control signal alone; NO_SOURCE for an answer whose call
    named none."""
    given = decision.given
    if given.source:
        return given.source
    return "gpc" if given.personalization is None and given.analytics is None and decision.gpc else NO_SOURCE


def parse_answer_key(key: str | None) -> dict[str, Any] | None:
    """answer_key's text as the export shows it."""
    if not key or len(key) < 4:
        return None
    value = {"1": True, "0": False}
    return {"personalization": value.get(key[1]), "analytics": value.get(key[3]), "gpc": key.endswith("g")}


ALLOWED = ConsentDecision(True, True, False, "not_required", "", ConsentIn(), False)


def decide(policy: ConsentPolicy, given: ConsentIn | None, country: str, gpc: bool) -> ConsentDecision:
    """The decision for one request: an explicit answer wins, GPC refuses when the shop says
    so, and the rule fills in what is unknown."""
    given = given or ConsentIn()
    required, why = policy.required_for(country)
    refused_by_gpc = gpc and policy.gpc == "refuse"
    if refused_by_gpc:
        why += "; the browser sent Global Privacy Control and the shop's gpc = refuse counts it as no"

    def purpose(answer: bool | None) -> bool:
        if refused_by_gpc:
            return False
        return (not required) if answer is None else answer

    return ConsentDecision(
        personalization=purpose(given.personalization), analytics=purpose(given.analytics),
        required=required, rule=policy.rule, why=why, given=given, gpc=gpc,
        refused=refused_by_gpc or given.personalization is False,
    )


def from_query(value: str | None) -> ConsentIn | None:
    """`?consent=personalization,analytics` on a fragment URL: the purposes granted, the
    others refused; `none` refuses both; absent is unknown. ValueError for anything else."""
    if value is None or value == "":
        return None
    granted = {p.strip() for p in value.split(",")} - {""}
    if granted == {"none"}:
        return ConsentIn(personalization=False, analytics=False)
    unknown = granted - {"personalization", "analytics"}
    if unknown:
        raise ValueError(f"consent={value!r}: list the purposes granted, personalization and/or analytics, or none")
    return ConsentIn(personalization="personalization" in granted, analytics="analytics" in granted)


def gpc_signal(headers: Any, body_gpc: bool | None = None) -> bool:
    """`Sec-GPC: 1` (https://www.w3.org/TR/gpc/), or the page's `navigator.globalPrivacyControl`."""
    return headers.get("sec-gpc", "").strip() == "1" or bool(body_gpc)
