"""Banner widget: a message bar in a slot, chosen by targeting (geo, visitor kind, source ...)."""

from __future__ import annotations

from dataclasses import dataclass

from server.campaigns import decide, decisions
from widgets.base import Fragment, RenderContext, Slot, render_campaign


@dataclass
class BannerWidget:
    kind: str = "banner"
    shadow: bool = True

    def items_asked(self, slot: Slot, default_count: int) -> int:
        return 1

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """The highest-priority banner for this slot's placement that targets this visitor."""
        placement = slot.attrs.get("placement") or slot.id
        found = decisions(rc.shop.campaigns, rc.ctx, "banner", placement=placement, closed=rc.closed, explain=rc.explain)
        return render_campaign(rc, self.kind, found, self.shadow, limit=1, slot=slot)

    def render_campaign(self, rc: RenderContext, slot: Slot, campaign_id: str, variant: bool = False) -> Fragment:
        """One campaign the shop's slot content or an experiment's `variant` names (server/slots.py,
        server/measure/experiments.py), if it shows to this visitor."""
        campaign = rc.shop.campaign(campaign_id)
        found = [decide(campaign, rc.ctx, rc.closed, variant=variant, explain=rc.explain)] if campaign is not None else []
        return render_campaign(rc, self.kind, found, self.shadow, limit=1, slot=slot)
