"""Popup widget: modal offers (welcome, exit intent ...) opened by a trigger, in a <dialog>."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.campaigns import decisions
from widgets.base import Fragment, RenderContext, Slot, render_campaign


@dataclass
class PopupWidget:
    kind: str = "popup"
    shadow: bool = True

    def items_asked(self, slot: Slot, default_count: int) -> int:
        return 1

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """All popups this visitor qualifies for (what a fragment URL shows)."""
        found = decisions(rc.shop.campaigns, rc.ctx, "popup", closed=rc.closed)
        return render_campaign(rc, self.kind, found, self.shadow, limit=None, slot=slot)

    def page_popups(self, rc: RenderContext) -> list[dict[str, Any]]:
        """The popup for a page view, with its trigger; at most one, so no one is nagged."""
        found = decisions(rc.shop.campaigns, rc.ctx, "popup", closed=rc.closed)
        fragment = render_campaign(rc, self.kind, found, self.shadow, limit=1, slot=None)
        if not fragment.campaigns:
            return []
        campaign = rc.shop.campaign(fragment.campaigns[0])
        assert campaign is not None
        trigger = campaign.trigger.model_dump()
        popup = {"id": campaign.id, "campaign": campaign.id, "html": fragment.html, "trigger": trigger}
        if fragment.experiment:
            popup.update(experiment=fragment.experiment, variant=fragment.variant)
        return [popup]
