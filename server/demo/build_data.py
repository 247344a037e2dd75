"""Derives the demo shop's catalog.csv and interactions.csv from the Online Retail invoice lines."""

from __future__ import annotations

import csv
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from server.taxonomy import categorize, color_tags

CATALOG_COLUMNS = (
    "item_id", "title", "description", "category", "price", "currency", "url", "image_url", "tags",
)
INTERACTION_COLUMNS = ("user_id", "item_id", "event", "timestamp", "value", "country")

# Stock codes for postage, fees, discounts, vouchers and manual adjustments, not products.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "D", "C2", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B", "S"}
)
NON_PRODUCT_CODE_PREFIXES = ("gift_0001_",)
NON_PRODUCT_DESCRIPTION = re.compile(
    r"^(?:DOTCOM )?POSTAGE$|CARRIAGE$|^SAMPLES$|^MANUAL$|^DISCOUNT$|\bFEE$|\bCHARGES?$",
    re.IGNORECASE,
)

SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"}
)
UPPERCASE_WORDS = frozenset(
    {"uk", "usa", "led", "diy", "ii", "iii", "tv", "dvd", "cd", "xl", "abc"}
)
# Words that keep their capital inside a sentence.
PROPER_WORDS = frozenset(
    {
        "i", "christmas", "easter", "valentine", "london", "paris", "english", "french",
        "scandinavian", "victorian", "edwardian", "moroccan", "union", "jack", "england",
        "britain", "british", "tuscan", "parisienne", "regency", "babushka", "chinese", "swiss",
    }
)
_WORD_PART = re.compile(r"([A-Za-z][A-Za-z']*)")


@dataclass
class _Product:
    descriptions: Counter[str] = field(default_factory=Counter)
    prices: list[float] = field(default_factory=list)


def is_product_code(stock_code: str) -> bool:
    return stock_code not in NON_PRODUCT_CODES and not stock_code.startswith(
        NON_PRODUCT_CODE_PREFIXES
    )


def is_product_description(description: str) -> bool:
    """True for shop descriptions ("WHITE METAL LANTERN").

    Stock notes ("damaged", "?", "check", "Manual") are typed in lower or mixed case, product
    descriptions in capitals, so a description with more lower- than upper-case letters is
    a note.
    """
    upper = sum(char.isupper() for char in description)
    lower = sum(char.islower() for char in description)
    return upper > lower and not NON_PRODUCT_DESCRIPTION.search(description)


def _title_word(word: str, first: bool) -> str:
    lower = word.lower()
    if lower in UPPERCASE_WORDS:
        return word.upper()
    if lower in SMALL_WORDS and not first:
        return lower
    if word[0].isdigit():
        # Sizes and counts stay lower case ("45x45cm", "125g"); "3D" stays as it is.
        return word.upper() if re.fullmatch(r"\d+d", lower) else lower
    # Capitalise each part of "T-LIGHT", "SET/6", "PINK/WHITE", "(LARGE)".
    return _WORD_PART.sub(lambda match: match[1].capitalize(), lower)


def title_case(description: str) -> str:
    """Title case for shop descriptions: "SET OF 3 T-LIGHTS" -> "Set of 3 T-Lights"."""
    words = description.replace(",", ", ").split()
    text = " ".join(_title_word(word, index == 0) for index, word in enumerate(words))
    return text.replace(" ,", ",").rstrip(" .,")


def _sentence_word(word: str) -> str:
    letters = "".join(char for char in word if char.isalpha())
    if letters.isupper() and (len(letters) > 1 or word[0].isdigit()):
        return word  # "LED", "3D"
    if word.lower().startswith("t-light"):
        return "T-" + word[2:].lower()
    bare = word.strip("'(),.\"").lower()
    return word if bare in PROPER_WORDS else word.lower()


def sentence(title: str, category: str) -> str:
    """"White Metal Lantern" -> "White metal lantern from our Candles and lights collection."."""
    first, *rest = title.split()
    return " ".join([first, *map(_sentence_word, rest)]) + f" from our {category} collection."


def collect_products(lines: Iterable[dict[str, str]]) -> dict[str, _Product]:
    products: dict[str, _Product] = defaultdict(_Product)
    for line in lines:
        code = line["StockCode"].strip()
        if not is_product_code(code):
            continue
        product = products[code]
        description = " ".join(line["Description"].split())
        if description and is_product_description(description):
            product.descriptions[description] += 1
        price = float(line["UnitPrice"] or 0)
        if price > 0:
            product.prices.append(price)
    return {code: product for code, product in products.items() if product.descriptions}


def catalog_rows(products: dict[str, _Product]) -> list[dict[str, str]]:
    rows = []
    for code in sorted(products):
        product = products[code]
        description = product.descriptions.most_common(1)[0][0]
        title = title_case(description)
        category = categorize(description)
        price = f"{statistics.median(product.prices):.2f}" if product.prices else ""
        rows.append(
            {
                "item_id": code,
                "title": title,
                "description": sentence(title, category),
                "category": category,
                "price": price,
                "currency": "GBP",
                "url": f"/demo/product/{code}",
                "image_url": f"/demo/img/{code}.svg",
                "tags": "|".join(color_tags(description)),
            }
        )
    return rows


def interaction_rows(lines: Iterable[dict[str, str]], catalog: set[str]) -> list[dict[str, str]]:
    rows = []
    for line in lines:
        customer = line["CustomerID"].strip()
        quantity = int(line["Quantity"])
        code = line["StockCode"].strip()
        cancelled = line["InvoiceNo"].startswith("C")
        if not customer or quantity <= 0 or cancelled or code not in catalog:
            continue
        rows.append(
            {
                "user_id": str(int(float(customer))),
                "item_id": code,
                "event": "purchase",
                "timestamp": line["InvoiceDate"].strip() + "Z",
                "value": f"{quantity * float(line['UnitPrice']):.2f}",
                "country": line["Country"].strip(),
            }
        )
    return rows


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def build(source: Path, out_dir: Path) -> tuple[int, int]:
    """Writes catalog.csv and interactions.csv into out_dir; returns their row counts."""
    with source.open(encoding="utf-8-sig", newline="") as stream:
        lines = list(csv.DictReader(stream))
    catalog = catalog_rows(collect_products(lines))
    interactions = interaction_rows(lines, {row["item_id"] for row in catalog})
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "catalog.csv", CATALOG_COLUMNS, catalog)
    _write_csv(out_dir / "interactions.csv", INTERACTION_COLUMNS, interactions)
    return len(catalog), len(interactions)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m server.demo.build_data SOURCE_CSV OUT_DIR", file=sys.stderr)
        return 2
    items, interactions = build(Path(argv[0]), Path(argv[1]))
    print(f"{items} items, {interactions} interactions written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
