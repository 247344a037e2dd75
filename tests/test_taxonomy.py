"""Tests for server.taxonomy: demo-shop categories and colour tags from descriptions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from server.imports import read_catalog
from server.taxonomy import CATEGORIES, FALLBACK_CATEGORY, categorize, color_tags, slugify

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "server" / "demo" / "data" / "catalog.csv"


@pytest.mark.parametrize(
    ("description", "category"),
    [
        ("WHITE METAL LANTERN", "Candles and lights"),
        ("CHRISTMAS LIGHTS 10 REINDEER", "Christmas"),
        ("HANGING BAUBLE T-LIGHT HOLDER SMALL", "Christmas"),
        ("LUNCH BAG RED RETROSPOT", "Bags"),
        ("JUMBO SHOPPER VINTAGE RED PAISLEY", "Bags"),
        ("SET OF 12 T-LIGHTS VINTAGE DOILY", "Candles and lights"),
        ("RED TOADSTOOL LED NIGHT LIGHT", "Candles and lights"),
        ("REGENCY CAKESTAND 3 TIER", "Gifts"),
        ("REGENCY CAKE STAND 3 TIER", "Kitchen"),
        ("ROSES REGENCY TEACUP AND SAUCER", "Kitchen"),
        ("PAPER CHAIN KIT 50'S CHRISTMAS", "Christmas"),
        ("PAPER CHAIN KIT EMPIRE", "Cards and wrap"),
        ("6 GIFT TAGS VINTAGE", "Cards and wrap"),
        ("WATERING CAN PINK BUNNY", "Garden"),
        ("BOX OF VINTAGE ALPHABET BLOCKS", "Kids"),
        ("SPACEBOY CHILDRENS CUP", "Kitchen"),
        ("DOORMAT UNION FLAG", "Home decor"),
        ("GIN + TONIC DIET METAL SIGN", "Home decor"),
        ("PINK ROSEBUD & PEARL NECKLACE", "Gifts"),
        ("", "Gifts"),
    ],
)
def test_categorize_first_matching_rule_wins(description: str, category: str) -> None:
    assert categorize(description) == category


def test_keywords_match_whole_words_only() -> None:
    assert categorize("TURKISH DELIGHT BOX") != "Candles and lights"
    assert categorize("SANTANA POSTER") != "Christmas"
    assert categorize("TINSEL TOWN") == "Christmas"  # "tinsel" is a keyword, "tin" is not hit
    assert categorize("tinted visor") == FALLBACK_CATEGORY


def test_plurals_and_hyphens_match() -> None:
    assert categorize("SET OF 3 CANDLES") == "Candles and lights"
    assert categorize("ASSORTED TEA-LIGHTS") == "Candles and lights"
    assert categorize("BOXES OF BUTTONS") == "Home decor"


def test_categories_list_every_rule_and_the_fallback_last() -> None:
    assert CATEGORIES[-1] == FALLBACK_CATEGORY == "Gifts"
    assert len(set(CATEGORIES)) == len(CATEGORIES) == 9


def test_color_tags() -> None:
    assert color_tags("RED WOOLLY HOTTIE WHITE HEART. red") == ("red", "white")
    assert color_tags("IVORY/GOLD BAUBLE, Silver") == ("ivory", "gold", "silver")
    assert color_tags("REDUCED BLUEBELL") == ()
    assert color_tags("ICE CREAM PEN") == ()
    assert color_tags("CREAM SWEETHEART") == ("cream",)


def test_slugify() -> None:
    assert slugify("Candles and lights") == "candles-and-lights"
    assert slugify("Home > Kitchen & Dining") == "home-kitchen-dining"
    assert [slugify(category) for category in CATEGORIES] == [
        "christmas", "bags", "candles-and-lights", "kitchen", "cards-and-wrap", "garden",
        "kids", "home-decor", "gifts",
    ]


def test_demo_catalog_category_distribution() -> None:
    items = read_catalog(DEMO_CATALOG)
    counts = Counter(item.category for item in items)
    assert set(counts) == set(CATEGORIES)  # no category is empty
    assert counts[FALLBACK_CATEGORY] < 0.35 * len(items)
    assert all(counts[category] >= 50 for category in CATEGORIES)
    assert all(item.category == categorize(item.title) for item in items)
