"""Rule set that derives a demo-shop category and colour tags from an item description."""

from __future__ import annotations

import functools
import re

FALLBACK_CATEGORY = "Gifts"

# Ordered: the first rule with a matching keyword wins, so more specific themes come
# first ("CHRISTMAS LANTERN" is Christmas, "LUNCH BAG" is a bag, "CAKE CANDLE" a candle).
# Keywords match whole words, case-insensitively, with an optional plural "s"/"es";
# a space or hyphen in a keyword matches either ("t-light" also matches "T LIGHT").
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Christmas",
        (
            "christmas", "xmas", "santa", "reindeer", "advent", "snowflake", "bauble",
            "nativity", "snowman", "snowmen", "elf", "elves", "noel", "star of bethlehem",
            "tree topper", "mistletoe", "holly", "tinsel", "rudolph", "sleigh", "gingerbread",
            "angel", "stocking", "wreath",
        ),
    ),
    (
        "Bags",
        (
            "bag", "tote", "purse", "shopper", "handbag", "backpack", "rucksack", "satchel",
            "wallet", "luggage tag",
        ),
    ),
    (
        "Candles and lights",
        (
            "candle", "t-light", "tealight", "lantern", "light", "lamp", "lampshade",
            "candlestick", "candleholder", "votive", "led", "torch", "incense", "oil burner",
            "chandelier",
        ),
    ),
    (
        "Kitchen",
        (
            "mug", "cup", "plate", "bowl", "cake", "baking", "tea", "jam", "cutlery", "tin",
            "apron", "teapot", "teacup", "saucer", "napkin", "tray", "jar", "jug", "bottle",
            "glass", "tumbler", "spoon", "fork", "knife", "cookie", "biscuit", "cutter",
            "mould", "recipe", "kitchen", "oven glove", "coaster", "placemat", "egg", "sugar",
            "coffee", "milk", "picnic", "dish", "pantry", "cook", "food", "strawberry",
            "beaker", "straw", "doily", "doiley", "chopping board", "measuring",
            "sweetheart bakery", "lolly", "popsicle", "bread", "breakfast", "dinner",
            "snack box", "lunch box", "lunchbox", "trinket pot", "chocolate", "treat", "pudding",
        ),
    ),
    (
        "Cards and wrap",
        (
            "card", "wrap", "paper", "gift tag", "ribbon", "envelope", "stationery",
            "notebook", "pencil", "pen", "eraser", "rubber", "sticker", "tissue", "bunting",
            "invites", "invitation", "writing set", "notepad", "note pad", "journal", "diary",
            "memo", "postcard", "scrapbook", "sketchbook", "gift box", "wrapping", "tape",
            "crayon", "stamp", "confetti", "balloon", "party", "chalk", "calendar",
            "address book", "book", "magnet",
        ),
    ),
    (
        "Garden",
        (
            "garden", "plant", "flower pot", "bird", "watering", "seed", "herb", "planter",
            "trowel", "gardener", "greenhouse", "pot", "birdhouse", "nesting box", "flowerpot",
            "grow", "wheelbarrow", "dovecote", "outdoor", "windmill", "bee",
        ),
    ),
    (
        "Kids",
        (
            "child", "children", "kids", "toy", "doll", "game", "playhouse", "colouring",
            "alphabet blocks", "baby", "dolly", "teddy", "puppet", "jigsaw", "puzzle",
            "skipping rope", "spaceboy", "dinosaur", "pirate", "fairy", "princess", "boy",
            "girl", "marbles", "soldier", "ludo", "dominoes", "skittles", "knitting",
            "sewing kit", "craft", "paint", "spinning top", "yo-yo", "rocket", "robot",
            "bunny", "animal", "nursery", "school", "circus", "tattoo", "bib",
        ),
    ),
    (
        "Home decor",
        (
            "frame", "sign", "cushion", "clock", "hook", "mirror", "doorstop", "decoration",
            "ornament", "vase", "wall art", "plaque", "door mat", "doormat", "mat", "curtain",
            "blanket", "throw", "quilt", "wicker", "drawer", "cabinet", "shelf", "chest",
            "key", "coat", "hanger", "garland", "photo", "album", "storage", "basket", "crate",
            "box", "hanging", "wall", "door", "towel", "bath", "bathroom", "soap", "bell",
            "chime", "heart", "tile", "rack", "stand", "holder", "pillow", "rug", "letters",
            "trinket", "flag",
        ),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(category for category, _ in RULES) + (FALLBACK_CATEGORY,)

COLOURS: tuple[str, ...] = (
    "red", "pink", "blue", "green", "white", "black", "ivory", "gold", "silver",
    "purple", "yellow", "orange", "cream",
)


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for keyword in sorted(set(keywords), key=len, reverse=True):
        words = [re.escape(word) for word in re.split(r"[\s-]+", keyword)]
        parts.append(r"[\s-]+".join(words) + r"(?:s|es)?")
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


_RULE_PATTERNS = tuple((category, _keyword_pattern(words)) for category, words in RULES)
# "ice cream" is a flavour, not a colour.
_COLOUR_PATTERN = re.compile(r"\b(?<!ice )(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)


def categorize(description: str) -> str:
    """The category of the first rule with a keyword in `description`, else "Gifts"."""
    for category, pattern in _RULE_PATTERNS:
        if pattern.search(description):
            return category
    return FALLBACK_CATEGORY


def color_tags(description: str) -> tuple[str, ...]:
    """Colour words in `description`, lowercase, in order of first appearance."""
    found = (match.lower() for match in _COLOUR_PATTERN.findall(description))
    return tuple(dict.fromkeys(found))


@functools.lru_cache(maxsize=65536)
def slugify(category: str) -> str:
    """A URL-safe lowercase form of a category: "Candles and lights" -> "candles-and-lights".
    (Remembered: every page call's menu entries and the catalog's categories come again.)"""
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")
