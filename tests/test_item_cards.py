"""Item cards are drawn once per item and reused, and an override of item-card.html replaces them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from server.models import CatalogItem
from widgets.base import Templates


@dataclasses.dataclass
class Shop:
    id: str = "demo"
    currency: str = "GBP"


LANTERN = CatalogItem("71053", "White Metal Lantern", price=3.75, currency="GBP", url="/p/71053")
CONTEXT = dict(title="Top picks", strategy="top_picks", requested="top_picks", visitor={}, shop=Shop(), slot=None,
               standalone=False)


def panel(templates: Templates, *items: CatalogItem) -> str:
    return templates.render(Templates.names("recommendations", "demo", "top_picks"), items=list(items), **CONTEXT)[0]


def test_a_card_is_drawn_once_and_a_changed_item_gets_a_new_one(tmp_path: Path) -> None:
    templates = Templates([tmp_path], check_interval_s=0)
    first = templates.card(LANTERN, Shop())
    assert templates.card(LANTERN, Shop()) is first  # the same drawing, not drawn again
    assert 'data-item-id="71053"' in first and "£3.75" in first
    cheaper = dataclasses.replace(LANTERN, price=2.5)
    assert "£2.50" in templates.card(cheaper, Shop())
    assert "£3.75" in panel(templates, LANTERN) and "£2.50" in panel(templates, cheaper)


def test_an_override_of_the_card_replaces_the_drawn_ones(tmp_path: Path) -> None:
    templates = Templates([tmp_path], check_interval_s=0)
    assert "vitrine-title" in panel(templates, LANTERN)
    (tmp_path / "item-card.html").write_text(
        '{% macro item_card(item, shop, size=200) %}<li data-item-id="{{ item.item_id }}">OWN {{ item.title }}</li>'
        "{% endmacro %}{% macro card_grid_styles(min_width=170) %}{% endmacro %}"
    )
    html = panel(templates, LANTERN)
    assert "OWN White Metal Lantern" in html and "vitrine-title" not in html
