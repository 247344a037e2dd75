"""Widget kinds: one package each, all reachable through `WIDGETS` (the one registry), and
the one render path every slot goes through (`render_slot`), on a page call and on a
fragment URL alike."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, TypeVar

from server.context import non_personal
from server.measure.experiments import assign
from server.slots import choose
from widgets.base import Fragment, RenderContext, Slot, SlotLimit, Widget
from widgets.banner import BannerWidget
from widgets.category import CategoryWidget
from widgets.nav import NavWidget
from widgets.popup import PopupWidget
from widgets.recommendations import RecommendationsWidget
from widgets.reorder import ReorderWidget
from widgets.search import SearchWidget

log = logging.getLogger("vitrine.widgets")
T = TypeVar("T")

WIDGETS: dict[str, Widget] = {
    w.kind: w
    for w in (
        PopupWidget(), BannerWidget(), RecommendationsWidget(), NavWidget(), CategoryWidget(), SearchWidget(),
        ReorderWidget(),
    )
}
FAILED = "could not be rendered (the server log says why)"


def render_slot(rc: RenderContext, slot: Slot) -> Fragment:
    """One slot's fragment. A widget that raises (a corrupt model, a broken search index, an
    override template with an error) fails alone: its fragment is empty and `failed`, the
    page keeps the slot's default content, the other slots still render, and the cause is
    logged once, not on every request.

    What the slot shows: the visitor's variant when an experiment runs on it (the control
    keeps what follows), else the shop's content for the slot by audience, else the slot as
    the page marked it. A hold-out visitor gets the last, without personalization."""
    experiment = rc.shop.slot_experiment(slot.id) if rc.shop.experiments and not rc.ctx.holdout else None
    assignment = assign(experiment, rc.ctx) if experiment is not None else None
    choice = campaign = None
    variant_campaign = False
    if assignment is not None and assignment.variant.default:
        rc = dataclasses.replace(rc, ctx=non_personal(rc.ctx))  # the shop's default content
    elif assignment is not None and assignment.variant.fills():
        variant = assignment.variant
        problem = isolated(rc.shop.id, "experiment variant", lambda: variant.fill_problem(rc.shop, rc.ctx, rc.closed, True, rc.explain),
                           lambda: "its variant could not be worked out")
        if not problem:
            slot = Slot(slot.id, variant.widget or slot.widget, {**slot.attrs, **variant.filled_attrs(rc.ctx)})
            campaign, variant_campaign = variant.campaign, True
    else:
        rules = None if rc.ctx.holdout else rc.shop.slot_rules(slot.id)
        if rules is not None:  # the shop's content for this slot, by audience (server/slots.py)
            choice = isolated(rc.shop.id, "slot content", lambda: choose(rules, rc.shop, rc.ctx, rc.closed, rc.explain), lambda: None)
            if choice is not None and choice.entry is not None:
                slot = Slot(slot.id, choice.widget or slot.widget, {**slot.attrs, **choice.attrs})
                campaign = choice.campaign
    widget = WIDGETS.get(slot.widget)
    if widget is None:
        return Fragment(html="", shadow=False, error=f"unknown widget kind {slot.widget!r}")
    if assignment is not None:
        rc.exposures.append((assignment, slot.id))

    def work() -> Fragment:
        try:
            if campaign:
                fragment = widget.render_campaign(rc, slot, campaign, variant=variant_campaign)  # type: ignore[attr-defined]
            else:
                fragment = widget.render(rc, slot)
        except SlotLimit as exc:  # asked for a page too far: the slot's own error
            fragment = Fragment(html="", shadow=widget.shadow, error=str(exc))
        fragment.content = choice
        if assignment is not None:
            fragment.assignment = assignment
        return fragment

    return isolated(
        rc.shop.id, f"{slot.widget} slot", work,
        lambda: Fragment(html="", shadow=widget.shadow, error=f"this {slot.widget} slot {FAILED}", failed=True,
                         assignment=assignment),
    )


def isolated(shop: str, what: str, work: Callable[[], T], fallback: Callable[[], T]) -> T:
    """`work()`, or `fallback()` when it raises; the cause is logged once per shop and cause."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - one broken part must not break the page
        _log_once(shop, what, exc)
        return fallback()


_logged: set[tuple[str, str, str]] = set()
_logged_lock = threading.Lock()


def _log_once(shop: str, what: str, exc: Exception) -> None:
    cause = (shop, what, f"{type(exc).__name__}: {str(exc)[:300]}")
    with _logged_lock:
        if cause in _logged:
            return
        if len(_logged) > 10_000:  # a bounded memory of causes: forget them all, log again
            _logged.clear()
        _logged.add(cause)
    log.error("shop %s: %s failed (logged once per cause): %s", shop, what, cause[2], exc_info=exc)


def items_asked(slot: Slot, default_count: int) -> int:
    """Items the slot will render (SlotLimit when it asks for more than a slot may)."""
    widget = WIDGETS.get(slot.widget)
    return widget.items_asked(slot, default_count) if widget is not None else 0


__all__ = ["WIDGETS", "Fragment", "RenderContext", "Slot", "SlotLimit", "Widget", "items_asked", "isolated", "render_slot"]
