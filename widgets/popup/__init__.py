"""Popup widget: modal offers (welcome, exit intent ...) opened by a trigger, in a <dialog>."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.campaigns import TRIGGER_KEYS, decisions
from widgets.base import Fragment, RenderContext, Slot, render_campaign


@dataclass
class PopupWidget:
    kind: str = "popup"
    shadow: bool = True

    def items_asked(self, slot: Slot, default_count: int) -> int:
        return 1

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """All popups this visitor qualifies for (what a fragment URL shows)."""
        found = decisions(rc.shop.campaigns, rc.ctx, "popup", closed=rc.closed, explain=rc.explain)
        return render_campaign(rc, self.kind, found, self.shadow, limit=None, slot=slot)

    def page_popups(self, rc: RenderContext) -> list[dict[str, Any]]:
        """The popups this page view may open, highest priority first, each with its trigger and
        caps: the browser opens the first whose trigger fires and whose caps allow it, and at
        most one per page view, so no one is nagged."""
        found = decisions(rc.shop.campaigns, rc.ctx, "popup", closed=rc.closed, explain=rc.explain)
        popups = []
        for decision in [d for d in found if d.show][:PAGE_CANDIDATES]:
            fragment = render_campaign(rc, self.kind, [decision], self.shadow, limit=1, slot=None)
            if not fragment.campaigns:
                continue
            campaign = rc.shop.campaign(fragment.campaigns[0]) or decision.campaign  # an experiment's variant, maybe
            popup = {
                "id": campaign.id, "campaign": campaign.id, "html": fragment.html,
                "trigger": campaign.trigger.model_dump(include={"on", *TRIGGER_KEYS.get(campaign.trigger.on, ())}),
                "frequency": campaign.frequency.model_dump(exclude_none=True),
                "once_closed": campaign.once_closed, "session_cap": rc.shop.popups.per_session,
                **({"countdown_minutes": campaign.countdown.minutes} if campaign.countdown and campaign.countdown.minutes else {}),
            }
            if fragment.experiment:
                popup.update(experiment=fragment.experiment, variant=fragment.variant)
            popups.append(popup)
        return popups


PAGE_CANDIDATES = 3  # popups sent with a page call: a capped one leaves the next its turn
