"""Experiments on any slot or campaign, and the shop's hold-out: who sees what, the same on
every worker and every request, from a hash of the visitor id alone.

    holdout = 0.05                       # 5% of visitors see no personalization at all
    [[experiments]]
    id = "hero"
    slot = "home-hero"                   # or campaign = "welcome"
    [[experiments.variants]]
    id = "control"                       # the first variant is the control
    [[experiments.variants]]
    id = "new-arrivals"
    campaign = "hero-new"                # what the slot shows instead (any slot content key)

Assignment follows GrowthBook's hashing (version 2): FNV-1a 32-bit of the seed and the
visitor id, hashed again, modulo 10,000, gives the visitor's place in [0, 1); the variants
take consecutive ranges of it by weight. The seed is the experiment's `seed` (its id unless
set), so two experiments split the same visitors independently, and renaming the id or
changing the weights reshuffles them. The hold-out uses the seed `holdout:<shop>`.

Who is in no experiment: a visitor without consent to personalization (they cannot be
remembered, so they would not be counted once), a bot, and a visitor of the hold-out; they
see the control. docs/measurement.md documents it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.models import Event
from server.slots import SlotFill

if TYPE_CHECKING:
    from server.campaigns import Decision
    from server.context import VisitorContext
    from server.shops import ShopConfig

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_VARIANTS = 10
EXPOSURE = "experiment_viewed"  # the event type of a visitor's first exposure to an experiment
HOLDOUT_ID = "holdout"  # the hold-out, counted as an experiment: its control is the hold-out itself


def fnv1a32(text: str) -> int:
    """FNV-1a, 32 bits, over the text's characters (as GrowthBook's Python SDK hashes)."""
    h = 0x811C9DC5
    for char in text:
        h = ((h ^ ord(char)) * 0x01000193) & 0xFFFFFFFF
    return h


def place(seed: str, visitor_id: str) -> float:
    """The visitor's place in [0, 1) for this seed (GrowthBook's hash, version 2)."""
    return (fnv1a32(str(fnv1a32(seed + visitor_id))) % 10_000) / 10_000


def in_holdout(share: float, shop: str, visitor_id: str) -> bool:
    """Whether the visitor is in the shop's hold-out of this share (0 to 1)."""
    return share > 0 and bool(visitor_id) and place(f"holdout:{shop}", visitor_id) < share


class Variant(SlotFill):
    """One arm: what the slot shows (any slot content key), or for a campaign the campaign
    shown instead; `default = true`: the shop's default content (the slot as the page marked
    it, without personalization; a campaign not shown at all)."""

    id: str = Field(pattern=ID_PATTERN)
    weight: float = Field(1.0, gt=0, le=1_000_000)
    default: bool = Field(False, description="The shop's default content: nothing personalized, no campaign")


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    slot: str = Field("", description="The page slot (data-vitrine-slot) it runs on")
    campaign: str = Field("", description="Or the campaign it runs on")
    enabled: bool = True
    seed: str = Field("", max_length=128, description="What the assignment hashes with the visitor id (its id)")
    variants: list[Variant] = Field(min_length=2, max_length=MAX_VARIANTS)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, experiment_id: str) -> str:
        if experiment_id == HOLDOUT_ID:
            raise ValueError(f"{HOLDOUT_ID!r} is the hold-out's name in reports: give the experiment another id")
        return experiment_id

    @model_validator(mode="after")
    def _one_target(self) -> "Experiment":
        if bool(self.slot) == bool(self.campaign):
            raise ValueError(f'experiment {self.id!r} runs on one slot or one campaign: give slot = "..." or campaign = "..."')
        return self

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants: list[Variant]) -> list[Variant]:
        seen: set[str] = set()
        for v in variants:
            if v.id in seen:
                raise ValueError(f"variant {v.id!r} is listed twice")
            seen.add(v.id)
            if v.default and v.fills():
                raise ValueError(f"variant {v.id!r}: default = true shows the shop's default content; it sets nothing else")
        return variants

    @property
    def key(self) -> str:
        return self.seed or self.id

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def variant(self, variant_id: str) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)

    def pick(self, at: float) -> Variant:
        """The variant whose range holds `at` (0 to 1)."""
        total = sum(v.weight for v in self.variants)
        edge = 0.0
        for v in self.variants:
            edge += v.weight / total
            if at < edge:
                return v
        return self.variants[-1]


@dataclass(frozen=True)
class Assignment:
    """What a visitor gets in an experiment. `counted`: they are in it (and their exposure is
    recorded); otherwise they see the control and no number includes them."""

    experiment: Experiment
    variant: Variant
    counted: bool
    reason: str

    @property
    def is_control(self) -> bool:
        return self.variant is self.experiment.control

    def as_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment.id, "variant": self.variant.id, "counted": self.counted, "reason": self.reason}


def assign(experiment: Experiment, ctx: "VisitorContext") -> Assignment:
    """The visitor's variant, worked out once per request (QA's `variant=` override first)."""
    return ctx.derive(f"experiment:{experiment.id}", lambda: _assign(experiment, ctx))


def _assign(experiment: Experiment, ctx: "VisitorContext") -> Assignment:
    forced = dict(ctx.forced_variants).get(experiment.id)
    if forced is not None:
        variant = experiment.variant(forced)
        if variant is not None:
            return Assignment(experiment, variant, False, f"variant {variant.id} chosen by QA (variant=)")
    control = experiment.control
    if not experiment.enabled:
        return Assignment(experiment, control, False, "experiment not enabled: everyone sees the control")
    if ctx.holdout:
        return Assignment(experiment, control, False, "in the shop's hold-out: in no experiment")
    if not ctx.consent.personalization:
        return Assignment(experiment, control, False, "no consent to personalization: cannot be remembered, not assigned")
    if ctx.device.device_class == "bot":
        return Assignment(experiment, control, False, "a bot: not assigned")
    at = place(experiment.key, ctx.visitor_id)
    variant = experiment.pick(at)
    return Assignment(experiment, variant, True, f"variant {variant.id} by the visitor's place {at:.4f}")


def holdout_assignment(ctx: "VisitorContext", share: float) -> Assignment | None:
    """The visitor's side of the shop's hold-out, counted as an experiment named "holdout"
    whose control is the hold-out ("holdout") and whose other variant is everyone else
    ("personalized"); None when the shop has none or the visitor is not counted (no
    consent, a bot)."""
    if share <= 0 or not ctx.consent.personalization or ctx.device.device_class == "bot" or not ctx.visitor_id:
        return None
    experiment = _holdout_experiment(share)
    variant = experiment.variants[0 if ctx.holdout else 1]
    return Assignment(experiment, variant, True, "in the hold-out" if ctx.holdout else "not in the hold-out")


def _holdout_experiment(share: float) -> Experiment:
    experiment = _HOLDOUTS.get(share)
    if experiment is None:
        experiment = Experiment.model_construct(
            id=HOLDOUT_ID, slot="", campaign="", enabled=True, seed="",
            variants=[Variant(id="holdout", weight=share), Variant(id="personalized", weight=1 - share)],
        )
        _HOLDOUTS[share] = experiment
    return experiment


_HOLDOUTS: dict[float, Experiment] = {}


def with_experiments(found: "list[Decision]", shop: "ShopConfig", ctx: "VisitorContext", closed) -> "list[Decision]":
    """The campaign decisions after the experiments on them and the hold-out: a visitor of
    the hold-out sees no campaign; in a campaign's experiment, a visitor the campaign shows to
    sees their variant's campaign instead, or none (`default = true`)."""
    from server.campaigns import Decision

    if not ctx.holdout and not shop.experiments:
        return found
    out = []
    for d in found:
        if ctx.holdout:
            out.append(Decision(d.campaign, False, [*d.reasons, "no: in the shop's hold-out: no campaign"]))
            continue
        experiment = shop.campaign_experiment(d.campaign.id)
        if experiment is None or not d.show:
            out.append(d)
            continue
        a = assign(experiment, ctx)
        why = f"experiment {experiment.id}: {a.reason}"
        if a.variant.default:
            out.append(Decision(d.campaign, False, [*d.reasons, f"no: {why}: the shop's default, no campaign"], a, True))
            continue
        other = shop.campaign(a.variant.campaign) if a.variant.campaign else d.campaign
        if other is None:
            out.append(Decision(d.campaign, False, [*d.reasons, f"no: {why}: no campaign {a.variant.campaign!r}"], a))
        elif other.id in closed and other is not d.campaign and other.once_closed:
            out.append(Decision(other, False, [*d.reasons, f"no: {why}: campaign {other.id} closed by this visitor before"], a))
        else:
            instead = f": campaign {other.id} instead" if other is not d.campaign else ""
            out.append(Decision(other, True, [*d.reasons, f"ok: {why}{instead}"], a))
    return out


def exposure_event(assignment: Assignment, shop: str, visitor_id: str, at: datetime, slot: str = "") -> Event:
    """The visitor's exposure to an experiment, one per visitor and experiment: its id is made
    from theirs, so a second one (another worker, a retried page call) is a duplicate."""
    exp = assignment.experiment
    digest = hashlib.sha256(f"{shop}\0{exp.id}\0{visitor_id}".encode()).hexdigest()[:40]
    props = {"experiment": exp.id, "variant": assignment.variant.id}
    if slot:
        props["slot"] = slot
    return Event(event_id=f"x:{digest}", type=EXPOSURE, ts=at, campaign=exp.campaign or None, props=props)


def experiment_problems(shop: "ShopConfig") -> list[tuple[tuple, str]]:
    """Experiments that name what the shop has not, or that collide: an unknown or popup
    campaign for a slot's variant, two experiments on one slot or campaign."""
    found: list[tuple[tuple, str]] = []
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for n, exp in enumerate(shop.experiments):
        if exp.id in ids:
            found.append((("experiments", n, "id"), f"experiment {exp.id!r} is listed twice"))
        ids.add(exp.id)
        target = f"slot {exp.slot!r}" if exp.slot else f"campaign {exp.campaign!r}"
        if target in seen:
            found.append(((("experiments", n, "slot" if exp.slot else "campaign")),
                          f"{target} is already in experiment {seen[target]!r}: one experiment per slot or campaign"))
        seen[target] = exp.id
        target_campaign = shop.campaign(exp.campaign) if exp.campaign else None
        if exp.campaign and target_campaign is None:
            found.append((("experiments", n, "campaign"), f"no campaign {exp.campaign!r} in this config"))
        wanted = target_campaign.widget if target_campaign is not None else "banner"
        for m, variant in enumerate(exp.variants):
            loc = ("experiments", n, "variants", m)
            if exp.campaign:
                extra = [k for k in ("widget", "strategy", "title", "category", "count", "attrs") if getattr(variant, k)]
                if extra:
                    found.append(((*loc, extra[0]), "a campaign's variant names the campaign shown instead "
                                  "(campaign = \"...\") or default = true, nothing else"))
                if m == 0 and variant.campaign:
                    found.append(((*loc, "campaign"), "the first variant is the control: the campaign itself"))
            if variant.campaign:
                other = shop.campaign(variant.campaign)
                if other is None:
                    found.append(((*loc, "campaign"), f"no campaign {variant.campaign!r} in this config"))
                elif other.widget != wanted:
                    found.append(((*loc, "campaign"), f"campaign {variant.campaign!r} is a {other.widget}: "
                                  f"{'a slot shows banners' if exp.slot else 'this experiment is on a ' + wanted}"))
    return found
