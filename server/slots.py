"""Content by audience on any slot: `[[slots]]` in a shop's config maps a page's slot to what
each kind of visitor sees there, first match wins.

    [[slots]]
    id = "home-recs"                      # the page's data-vitrine-slot
    [[slots.content]]
    audiences = ["new"]                   # in any of these (and in none of not_audiences)
    strategy = "bestsellers"
    title = "Our bestsellers"
    [[slots.content]]
    audiences = ["christmas_fans"]
    widget = "banner"                     # another widget kind than the page's
    campaign = "christmas"                # this banner campaign, if it shows to the visitor
    [[slots.content]]                     # no audiences: everyone else
    strategy = "top_picks"

An entry's settings take the place of the slot's own attributes (`strategy`, `title`,
`category`, `count`, and any other under `attrs`); what the entry leaves out is the page's.
Its `title` is copy (server/campaigns.py placeholders: "{favourite_category} for you"), and
`category = "{favourite_category}"` is the visitor's favourite category. An entry whose copy
or category names a fact the visitor has not, or whose campaign does not show to them, does
not match: the next one is tried. No entry matching, the slot renders as the page marked it.
docs/campaigns.md documents it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from server.campaigns import copy_values, decide, fill_copy, needed_facts, valid_copy

if TYPE_CHECKING:
    from server.context import VisitorContext
    from server.shops import ShopConfig

SlotWidget = Literal["banner", "recommendations", "category", "search"]
FAVOURITE = "{favourite_category}"
MAX_ENTRIES = 20


class SlotFill(BaseModel):
    """What a slot shows instead of what the page marked: another widget kind, a banner
    campaign, or other attributes. An entry of the slot's content by audience, and a variant
    of an experiment on the slot (server/measure/experiments.py), are each one."""

    model_config = ConfigDict(extra="forbid")

    widget: SlotWidget | None = Field(None, description="Another widget kind than the page's slot")
    campaign: str = Field("", description="A banner campaign to show (its own targeting applies too)")
    strategy: str = ""
    title: str = ""
    category: str = ""
    count: int | None = Field(None, ge=1, le=24)
    attrs: dict[str, str] = Field(default_factory=dict, description="Any other slot attribute")

    _valid_copy = field_validator("title")(valid_copy)
    _needs: tuple[str, ...] = PrivateAttr(())  # personal placeholders its title names without a fallback

    def model_post_init(self, context: Any) -> None:
        self._needs = needed_facts([self.title])

    @field_validator("category")
    @classmethod
    def _one_placeholder(cls, category: str) -> str:
        if ("{" in category or "}" in category) and category != FAVOURITE:
            raise ValueError(f"a category is a catalog category, or {FAVOURITE} for the visitor's favourite")
        return category

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, strategy: str) -> str:
        from server.recommend.serving import STRATEGIES

        if strategy and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        return strategy

    def slot_attrs(self) -> dict[str, str]:
        """The slot attributes this entry sets (copy and category not filled in yet)."""
        found = dict(self.attrs)
        for name in ("strategy", "title", "category"):
            if getattr(self, name):
                found[name] = getattr(self, name)
        if self.count is not None:
            found["count"] = str(self.count)
        return found

    def fills(self) -> bool:
        """Whether it changes anything of the slot."""
        return bool(self.widget or self.campaign or self.slot_attrs())

    def filled_attrs(self, ctx: "VisitorContext") -> dict[str, str]:
        """Its attributes for this visitor: the title's copy filled in, the favourite category named."""
        attrs = self.slot_attrs()
        if "title" in attrs:
            attrs["title"] = fill_copy(attrs["title"], copy_values(ctx))
        if attrs.get("category") == FAVOURITE:
            attrs["category"] = favourite_category_key(ctx)
        return attrs

    def fill_problem(self, shop: "ShopConfig", ctx: "VisitorContext", closed, variant: bool = False,
                     explain: bool = True) -> str:
        """Why it cannot fill the slot for this visitor ("" when it can): its title names a
        fact they have not, they have no favourite category, its campaign does not show (a
        `variant` of an experiment shows its campaign even when that is not enabled on its own)."""
        values = copy_values(ctx)
        missing = [f"{{{n}}}" for n in self._needs if not values[n]]
        if missing:
            return f"its title names {', '.join(missing)}, which this visitor has not"
        if self.category == FAVOURITE and not favourite_category_key(ctx):
            return "no favourite category for this visitor"
        if self.campaign:
            campaign = shop.campaign(self.campaign)
            if campaign is None:
                return f"no campaign {self.campaign!r}"
            decision = decide(campaign, ctx, closed, variant=variant, explain=explain)
            if not decision.show:
                return f"campaign {self.campaign} does not show: " + "; ".join(r for r in decision.reasons if r.startswith("no"))
        return ""


class SlotContent(SlotFill):
    """What one kind of visitor sees in the slot."""

    audiences: list[str] = Field(default_factory=list, description="In any of these audiences (empty: anyone)")
    not_audiences: list[str] = Field(default_factory=list, description="In none of these audiences")


class SlotRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="The page's data-vitrine-slot")
    content: list[SlotContent] = Field(default_factory=list, max_length=MAX_ENTRIES)


@dataclass
class Choice:
    """The entry a visitor got in a slot (or none), with why each entry before it did not match."""

    entry: int | None = None  # index into the slot's content
    attrs: dict[str, str] = field(default_factory=dict)  # the slot's attributes after it
    widget: str = ""
    campaign: str = ""
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"entry": self.entry, "widget": self.widget, "campaign": self.campaign, "reasons": self.reasons}


def choose(rules: SlotRules, shop: "ShopConfig", ctx: "VisitorContext", closed: "set[str] | frozenset[str]" = frozenset(),
           explain: bool = True) -> Choice:
    """The first entry of the slot's content that matches this visitor (`explain`: a campaign's
    every reason, server/campaigns.py Reasons)."""
    reasons: list[str] = []
    for n, entry in enumerate(rules.content):
        why = _mismatch(entry, shop, ctx, closed, explain)
        if why:
            reasons.append(f"content[{n}]: no: {why}")
            continue
        attrs = entry.filled_attrs(ctx)
        reasons.append(f"content[{n}]: ok: {_matched(entry)}")
        return Choice(n, attrs, entry.widget or "", entry.campaign, reasons)
    reasons.append("no content matched: the slot as the page marked it")
    return Choice(None, {}, "", "", reasons)


def _mismatch(entry: SlotContent, shop: "ShopConfig", ctx: "VisitorContext", closed, explain: bool) -> str:
    membership = ctx.audiences
    if entry.audiences and not any(a in membership for a in entry.audiences):
        return f"in none of the audiences {'/'.join(entry.audiences)}"
    excluded = next((a for a in entry.not_audiences if a in membership), None)
    if excluded:
        return f"in excluded audience {excluded}"
    return entry.fill_problem(shop, ctx, closed, explain=explain)


def _matched(entry: SlotContent) -> str:
    if entry.audiences:
        return f"in audience {'/'.join(entry.audiences)}"
    return "anyone" if not entry.not_audiences else f"in none of {'/'.join(entry.not_audiences)}"


def favourite_category_key(ctx: "VisitorContext") -> str:
    """The catalog category with most of the visitor's affinity (as copy's {favourite_category}
    names it by its last part), or ""."""
    from server.campaigns import favourite_category

    return favourite_category(ctx, full=True)


def slot_problems(shop: "ShopConfig", known_audiences: "list[str] | tuple[str, ...]") -> list[tuple[tuple, str]]:
    """Slot rules that name what the shop has not: an audience, a campaign, a banner for a
    campaign that is a popup; and a slot listed twice."""
    found: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    for n, rules in enumerate(shop.slots):
        if rules.id in seen:
            found.append((("slots", n, "id"), f"slot {rules.id!r} is listed twice; put all its content in one [[slots]]"))
        seen.add(rules.id)
        for m, entry in enumerate(rules.content):
            for key in ("audiences", "not_audiences"):
                for k, name in enumerate(getattr(entry, key)):
                    if name not in known_audiences:
                        found.append((("slots", n, "content", m, key, k),
                                      f"unknown audience {name!r}; the audiences are {', '.join(known_audiences)}"))
            if entry.campaign:
                campaign = shop.campaign(entry.campaign)
                if campaign is None:
                    found.append((("slots", n, "content", m, "campaign"), f"no campaign {entry.campaign!r} in this config"))
                elif campaign.widget != "banner":
                    found.append((("slots", n, "content", m, "campaign"),
                                  f"campaign {entry.campaign!r} is a {campaign.widget}: a slot shows banners"))
                elif entry.widget not in (None, "banner"):
                    found.append((("slots", n, "content", m, "widget"), "a campaign is shown by a banner: widget = \"banner\""))
    return found
