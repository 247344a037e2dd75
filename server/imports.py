"""Parsing and validation of import files: catalogs (CSV, Merchant Center feeds), interactions, customers, orders, price lists."""

from __future__ import annotations

import codecs
import csv
import hashlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TypeVar
from xml.etree import ElementTree
from xml.parsers import expat

from server.models import INTERACTION_KINDS, CatalogItem, Customer, Interaction, Order
from server.urls import RULE as WEB_URL_RULE
from server.urls import is_web_url

CATALOG_FORMATS = ("csv", "gmc-tsv", "gmc-xml")
MAX_ERRORS = 20

GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"

# Required columns (lowercase) of each kind of delimited file.
_CSV_REQUIRED = ("item_id", "title")
_GMC_REQUIRED = ("id", "title")
_INTERACTION_REQUIRED = ("user_id", "item_id", "event", "timestamp")
_CUSTOMER_REQUIRED = ("id",)
_ORDER_REQUIRED = ("order_id", "customer_id", "timestamp")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_ORDER_LINES = 100

_AVAILABILITY = {
    "in stock": True,
    "out of stock": False,
    "preorder": True,
    "backorder": True,
}
_BOOLEANS = {
    "true": True, "yes": True, "y": True, "1": True,
    "false": False, "no": False, "n": False, "0": False,
}
# Matched against the stripped cell, so no two runs of spaces can compete for the same
# characters: backtracking stays linear however long the cell is.
_PRICE = re.compile(
    r"(?:(?P<pre>[A-Za-z]{3})\s+)?"
    r"(?P<amount>[-+]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:\s*(?P<post>[A-Za-z]{3}))?"
)
# Amounts (prices, interaction values) above this are typing mistakes or overflowing digits.
MAX_AMOUNT = 1e9
_UNIX_TIME = re.compile(r"^[-+]?\d+(?:\.\d+)?$")

Record = TypeVar("Record")


class ImportFailed(Exception):
    """An import file that cannot be imported; nothing from it was kept.

    `line` is the 1-based line of the (first) problem, or None when it concerns the whole
    file; `errors` lists every problem found as (line, message). When there are several,
    `message` is the first one followed by one "FILE:LINE: message" line per other problem,
    so `str()` reads like compiler output.
    """

    def __init__(
        self,
        path: Path | str,
        line: int | None,
        message: str,
        errors: list[tuple[int | None, str]] | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        self.errors = errors if errors is not None else [(line, message)]
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class _Errors:
    """Collects row errors so that one ImportFailed can list them all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[tuple[int | None, str]] = []

    def add(self, line: int | None, message: str) -> None:
        self.found.append((line, message))
        if len(self.found) >= MAX_ERRORS:
            self.raise_if_any(stopped=True)

    def raise_if_any(self, stopped: bool = False) -> None:
        if not self.found:
            return
        (line, first), rest = self.found[0], self.found[1:]
        lines = [first]
        for other_line, message in rest:
            where = f"{self.path}:{other_line}" if other_line is not None else str(self.path)
            lines.append(f"{where}: {message}")
        if stopped:
            lines.append(f"{self.path}: stopped after {MAX_ERRORS} errors")
        raise ImportFailed(self.path, line, "\n".join(lines), list(self.found))


class _RowError(ValueError):
    """A problem with one field of one row."""


# --- shared field parsing -------------------------------------------------------------


def _quoted(text: str, limit: int = 80) -> str:
    """A cell as an error message shows it: quoted, and cut short when it is long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _parse_price(text: str) -> tuple[float | None, str]:
    """"12.50", "12.50 GBP" or "GBP 12.50" -> (12.5, "GBP"); "" -> (None, "")."""
    text = text.strip()
    if not text:
        return None, ""
    match = _PRICE.fullmatch(text)
    if match is None:
        raise _RowError(
            f"bad price {_quoted(text)} (expected a number like 12.50, or with a currency: 12.50 GBP)"
        )
    amount = float(match["amount"])
    if amount < 0:
        raise _RowError(f"bad price {_quoted(text)}: must not be negative")
    if not amount <= MAX_AMOUNT:  # also catches the inf of a very long digit run
        raise _RowError(f"bad price {_quoted(text)}: must be at most {MAX_AMOUNT:,.0f}")
    currency = (match["pre"] or match["post"] or "").upper()
    return amount, currency


def _parse_availability(text: str) -> bool:
    key = text.strip().lower().replace("_", " ")
    if key in _AVAILABILITY:
        return _AVAILABILITY[key]
    expected = ", ".join(repr(word) for word in _AVAILABILITY)
    raise _RowError(f"bad availability {text!r} (expected one of {expected})")


def _parse_in_stock(text: str) -> bool:
    key = text.strip().lower()
    if key in _BOOLEANS:
        return _BOOLEANS[key]
    if key.replace("_", " ") in _AVAILABILITY:
        return _parse_availability(key)
    raise _RowError(f"bad in_stock {text!r} (expected true/false, yes/no or 1/0)")


def _web_url(fields: dict[str, str], column: str) -> str:
    """A link that goes into shop pages (`href`, `src`): empty, or a web URL (server/urls.py)."""
    value = fields.get(column, "")
    if value and not is_web_url(value):
        raise _RowError(f"bad {column} {_quoted(value)} (expected {WEB_URL_RULE})")
    return value


def _category_path(text: str) -> str:
    """Normalises "A>B >  C" to "A > B > C"."""
    return " > ".join(part.strip() for part in text.split(">") if part.strip())


def _parse_timestamp(text: str) -> datetime:
    text = text.strip()
    if not text:
        raise _RowError("empty timestamp")
    try:
        if _UNIX_TIME.match(text):
            return datetime.fromtimestamp(float(text), tz=timezone.utc)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise _RowError(
            f"bad timestamp {text!r} (expected ISO 8601 like 2011-12-09T12:50:00Z, or Unix seconds)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _parse_number(text: str, column: str) -> float | None:
    if not text.strip():
        return None
    try:
        number = float(text)
    except ValueError:
        raise _RowError(f"bad {column} {_quoted(text)} (expected a number)") from None
    if not math.isfinite(number):
        raise _RowError(f"bad {column} {_quoted(text)} (expected a finite number)")
    if abs(number) > MAX_AMOUNT:
        raise _RowError(f"bad {column} {_quoted(text)}: must be between -{MAX_AMOUNT:,.0f} and {MAX_AMOUNT:,.0f}")
    return number


# --- delimited files ------------------------------------------------------------------


def _utf8_error(path: Path, error: UnicodeDecodeError) -> ImportFailed:
    """Locates the first byte that is not UTF-8 (error path only, so reading twice is fine)."""
    data = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    start = bom + error.start
    try:
        data[bom:].decode("utf-8")
    except UnicodeDecodeError as located:
        start = bom + located.start
    line = data[:start].count(b"\n") + 1
    byte = data[start : start + 1].hex()
    return ImportFailed(
        path, line, f"not valid UTF-8 (byte 0x{byte}); save the file as UTF-8 and import again"
    )


def _delimited_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str], str]]:
    """Yields (line the row starts on, {lowercase column: stripped value}, problem or "").

    The header row comes first, as (line, {name: name}, ""), so callers can check columns.
    Line numbers are physical lines: a quoted value may span several of them.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, delimiter=delimiter)
            header: list[str] | None = None
            next_line = 1
            for fields in reader:
                line, next_line = next_line, reader.line_num + 1
                if not any(field.strip() for field in fields):
                    continue
                if header is None:
                    header = [_column_name(field) for field in fields]
                    yield line, {name: name for name in header if name}, ""
                    continue
                if any(extra.strip() for extra in fields[len(header) :]):
                    problem = (
                        f"{len(fields)} fields but the header has {len(header)}"
                        " (quote values that contain the separator)"
                    )
                    yield line, {}, problem
                    continue
                yield line, {name: value.strip() for name, value in zip(header, fields) if name}, ""
    except UnicodeDecodeError as error:
        raise _utf8_error(path, error) from None
    except csv.Error as error:
        raise ImportFailed(path, reader.line_num or None, f"unreadable CSV: {error}") from None


def _column_name(text: str) -> str:
    name = text.strip().lower()
    return name[2:] if name.startswith("g:") else name


def _open_delimited(
    path: Path,
    delimiter: str,
    required: Sequence[str],
    empty: str = "the file is empty (expected a header row)",
    missing_of: Callable[[dict[str, str]], list[str]] | None = None,
) -> tuple["_Errors", Iterator[tuple[int, dict[str, str], str]]]:
    """A delimited file's error list and its rows after the header, once the header has every
    `required` column (and those `missing_of(header)` names); ImportFailed for a file without
    a header (`empty` says what was expected) or with columns missing."""
    errors = _Errors(path)
    rows = _delimited_rows(path, delimiter)
    header_line, header, _ = next(rows, (1, {}, ""))
    if not header:
        raise ImportFailed(path, None, empty)
    missing = [name for name in required if name not in header] + (missing_of(header) if missing_of else [])
    if missing:
        raise ImportFailed(
            path,
            header_line,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (found: {', '.join(header) or 'none'})",
        )
    return errors, rows


def _read_delimited(
    path: Path,
    delimiter: str,
    required: tuple[str, ...],
    build: Callable[[dict[str, str]], Record],
    key_column: str | None = None,
) -> list[Record]:
    errors, rows = _open_delimited(path, delimiter, required)
    records: list[Record] = []
    first_lines: dict[str, int] = {}
    for line, row, problem in rows:
        if problem:
            errors.add(line, problem)
            continue
        try:
            record = build(row)
        except _RowError as error:
            errors.add(line, str(error))
            continue
        if key_column is not None:
            key = row[key_column]
            if key in first_lines:
                errors.add(line, _duplicate(key_column, key, first_lines[key]))
                continue
            first_lines[key] = line
        records.append(record)
    errors.raise_if_any()
    return records


def _duplicate(column: str, key: str, first_line: int) -> str:
    return f"duplicate {column} {key!r} (first on line {first_line})"


def _required(row: dict[str, str], column: str) -> str:
    value = row.get(column, "")
    if not value:
        raise _RowError(f"empty {column}")
    return value


def _tags(text: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in text.split("|") if tag.strip())


def _csv_item(row: dict[str, str]) -> CatalogItem:
    item_id = _required(row, "item_id")
    title = _required(row, "title")
    price, currency = _parse_price(row.get("price", ""))
    if row.get("in_stock"):
        in_stock = _parse_in_stock(row["in_stock"])
    elif row.get("availability"):
        in_stock = _parse_availability(row["availability"])
    else:
        in_stock = True
    return CatalogItem(
        item_id=item_id,
        title=title,
        description=row.get("description", ""),
        category=_category_path(row.get("category", "")),
        brand=row.get("brand", ""),
        price=price,
        currency=(row.get("currency", "") or currency).upper(),
        url=_web_url(row, "url"),
        image_url=_web_url(row, "image_url"),
        tags=_tags(row.get("tags", "")),
        in_stock=in_stock,
    )


def _gmc_item(fields: dict[str, str]) -> CatalogItem:
    """Builds an item from Merchant Center attribute names (TSV columns or XML elements)."""
    item_id = _required(fields, "id")
    title = _required(fields, "title")
    price, currency = _parse_price(fields.get("price", ""))
    availability = fields.get("availability", "")
    category = fields.get("product_type", "") or fields.get("google_product_category", "")
    labels = (fields.get(f"custom_label_{n}", "") for n in range(5))
    return CatalogItem(
        item_id=item_id,
        title=title,
        description=fields.get("description", ""),
        category=_category_path(category),
        brand=fields.get("brand", ""),
        price=price,
        currency=currency,
        url=_web_url(fields, "link"),
        image_url=_web_url(fields, "image_link"),
        tags=tuple(label for label in labels if label),
        in_stock=_parse_availability(availability) if availability else True,
    )


# --- Merchant Center XML (RSS 2.0 or Atom) --------------------------------------------


def _read_gmc_xml(path: Path) -> list[CatalogItem]:
    errors = _Errors(path)
    items: list[CatalogItem] = []
    first_lines: dict[str, int] = {}

    def take(line: int, element: ElementTree.Element) -> None:
        try:
            item = _gmc_item(_xml_fields(element))
        except _RowError as error:
            errors.add(line, str(error))
            return
        if item.item_id in first_lines:
            errors.add(line, _duplicate("id", item.item_id, first_lines[item.item_id]))
            return
        first_lines[item.item_id] = line
        items.append(item)

    _stream_xml_items(path, take)
    errors.raise_if_any()
    if not items:
        expected = "expected an RSS or Atom product feed"
        raise ImportFailed(path, None, f"no <item> or <entry> elements ({expected})")
    return items


def _stream_xml_items(path: Path, take: Callable[[int, ElementTree.Element], None]) -> None:
    """Calls take(line, element) for each RSS <item> or Atom <entry>, one at a time.

    expat is driven directly (rather than ElementTree.iterparse) because it knows the
    line each element starts on, which goes into error messages.
    """
    parser = expat.ParserCreate(namespace_separator="}")
    builder: ElementTree.TreeBuilder | None = None
    depth = 0
    start_line = 0

    def name(raw: str) -> str:
        return "{" + raw if "}" in raw else raw

    def start(raw: str, attributes: dict[str, str]) -> None:
        nonlocal builder, depth, start_line
        tag = name(raw)
        if builder is None and tag in ("item", f"{{{ATOM_NS}}}entry"):
            builder, depth, start_line = ElementTree.TreeBuilder(), 0, parser.CurrentLineNumber
        if builder is not None:
            depth += 1
            builder.start(tag, {name(key): value for key, value in attributes.items()})

    def end(raw: str) -> None:
        nonlocal builder, depth
        if builder is None:
            return
        builder.end(name(raw))
        depth -= 1
        if depth == 0:
            element = builder.close()
            builder = None
            take(start_line, element)

    def text(data: str) -> None:
        if builder is not None:
            builder.data(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        with path.open("rb") as stream:
            parser.ParseFile(stream)
    except expat.ExpatError as error:
        message = expat.ErrorString(error.code)
        where = f"column {error.offset + 1}"
        raise ImportFailed(path, error.lineno, f"malformed XML: {message} ({where})") from None


def _xml_fields(element: ElementTree.Element) -> dict[str, str]:
    """Merchant Center attributes of one item: g:* elements, with RSS/Atom fallbacks."""
    fields: dict[str, str] = {}
    for child in element:
        text = (child.text or "").strip()
        if child.tag.startswith(f"{{{GOOGLE_NS}}}"):
            fields[child.tag.split("}", 1)[1]] = text
        elif child.tag in ("title", f"{{{ATOM_NS}}}title"):
            fields.setdefault("rss_title", text)
        elif child.tag in ("description", f"{{{ATOM_NS}}}summary", f"{{{ATOM_NS}}}content"):
            fields.setdefault("rss_description", text)
        elif child.tag == "link":
            fields.setdefault("rss_link", text)
        elif child.tag == f"{{{ATOM_NS}}}link" and child.get("rel", "alternate") == "alternate":
            fields.setdefault("rss_link", child.get("href", "").strip())
    for attribute in ("title", "description", "link"):
        if not fields.get(attribute):
            fields[attribute] = fields.get(f"rss_{attribute}", "")
    return fields


# --- public API -----------------------------------------------------------------------


def detect_catalog_format(path: Path) -> str:
    """Guesses "csv", "gmc-tsv" or "gmc-xml" from the file's extension, then its first line."""
    suffix = path.suffix.lower()
    if suffix in (".xml", ".rss", ".atom"):
        return "gmc-xml"
    with path.open("rb") as stream:
        head = stream.read(4096)
    first_line = head.removeprefix(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0]
    if first_line.startswith(b"<"):
        return "gmc-xml"
    if suffix == ".tsv" or first_line.count(b"\t") > first_line.count(b","):
        return "gmc-tsv"
    return "csv"


def read_catalog(path: Path, format: str | None = None) -> list[CatalogItem]:
    """Reads and validates a whole catalog file; raises ImportFailed listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    if format is None:
        format = detect_catalog_format(path)
    if format == "csv":
        return _read_delimited(path, ",", _CSV_REQUIRED, _csv_item, key_column="item_id")
    if format == "gmc-tsv":
        return _read_delimited(path, "\t", _GMC_REQUIRED, _gmc_item, key_column="id")
    if format == "gmc-xml":
        return _read_gmc_xml(path)
    expected = ", ".join(CATALOG_FORMATS)
    raise ValueError(f"unknown catalog format {format!r} (expected one of {expected})")


def _interaction(row: dict[str, str]) -> Interaction:
    user_id = _required(row, "user_id")
    item_id = _required(row, "item_id")
    event = row.get("event", "").lower()
    if event not in INTERACTION_KINDS:
        expected = ", ".join(INTERACTION_KINDS)
        raise _RowError(f"unknown event {row.get('event', '')!r} (expected one of {expected})")
    timestamp = _parse_timestamp(row.get("timestamp", ""))
    value = _parse_number(row.get("value", ""), "value")
    if event == "rating" and value is None:
        raise _RowError("a rating needs a value (the rating)")
    return Interaction(
        user_id=user_id,
        item_id=item_id,
        event=event,
        timestamp=timestamp,
        value=value,
        country=row.get("country", ""),
    )


def read_interactions(path: Path) -> list[Interaction]:
    """Reads and validates a whole interactions CSV; raises ImportFailed listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    return _read_delimited(path, ",", _INTERACTION_REQUIRED, _interaction)


def _limited(row: dict[str, str], column: str, limit: int) -> str:
    value = row.get(column, "")
    if len(value) > limit:
        raise _RowError(f"{column} too long: {len(value)} characters (at most {limit})")
    return value


def _customer(row: dict[str, str]) -> Customer:
    customer_id = _limited(row, "id", 128)
    if not customer_id:
        raise _RowError("empty id")
    email = _limited(row, "email", 320).lower()
    if email and not _EMAIL.match(email):
        raise _RowError(f"bad email {_quoted(email)} (expected name@example.com)")
    digest = row.get("email_sha256", "").lower()
    if digest and not _SHA256.match(digest):
        raise _RowError(f"bad email_sha256 {_quoted(digest)} (expected 64 hex digits: the SHA-256 of the lower-case e-mail)")
    if email:
        own = hashlib.sha256(email.encode()).hexdigest()
        if digest and digest != own:
            raise _RowError("email_sha256 is not the SHA-256 of email (leave one of them empty)")
        digest = own
    signed_up = row.get("signed_up_at", "")
    birthday = row.get("birthday", "")
    if birthday:
        try:
            if not _DATE.match(birthday):
                raise ValueError
            born = date.fromisoformat(birthday)
        except ValueError:
            raise _RowError(f"bad birthday {_quoted(birthday)} (expected a date like 1990-04-23)") from None
    consent = row.get("marketing_consent", "").lower()
    if consent and consent not in _BOOLEANS:
        raise _RowError(f"bad marketing_consent {_quoted(consent)} (expected true/false, yes/no or 1/0)")
    return Customer(
        customer_id=customer_id, email=email, email_sha256=digest, first_name=_limited(row, "first_name", 128),
        signed_up_at=_parse_timestamp(signed_up).replace(tzinfo=None) if signed_up else None,
        birthday=born if birthday else None, group=_limited(row, "group", 64),
        marketing_consent=_BOOLEANS.get(consent, False),
    )


def read_customers(path: Path) -> list[Customer]:
    """Reads and validates a whole customers CSV; raises ImportFailed listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    return _read_delimited(path, ",", _CUSTOMER_REQUIRED, _customer, key_column="id")


def _order_lines(text: str) -> tuple[tuple[str, float], ...]:
    """"71053:2|22632" -> (("71053", 2.0), ("22632", 1.0))."""
    lines = []
    for part in (p.strip() for p in text.split("|")):
        if not part:
            continue
        item, _, quantity = part.rpartition(":") if ":" in part else (part, "", "1")
        item = item.strip()
        try:
            count = float(quantity)
        except ValueError:
            count = math.nan
        if not item or not (0 < count <= 1_000_000):
            raise _RowError(f"bad line {_quoted(part)} in lines (expected ITEM_ID or ITEM_ID:QUANTITY, "
                            "lines separated by |, quantities above 0)")
        lines.append((item[:128], count))
    if len(lines) > MAX_ORDER_LINES:
        raise _RowError(f"{len(lines)} lines (at most {MAX_ORDER_LINES} per order)")
    return tuple(lines)


def _order(row: dict[str, str]) -> Order:
    value = _parse_number(row.get("value", ""), "value")
    if value is not None and value < 0:
        raise _RowError(f"bad value {_quoted(row['value'])}: must not be negative")
    currency = row.get("currency", "").upper()
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        raise _RowError(f"bad currency {_quoted(currency)} (expected a three-letter code like GBP)")
    order_id = _limited(row, "order_id", 128)
    customer_id = _limited(row, "customer_id", 128)
    if not order_id:
        raise _RowError("empty order_id")
    if not customer_id:
        raise _RowError("empty customer_id")
    return Order(
        order_id=order_id, customer_id=customer_id, timestamp=_parse_timestamp(row.get("timestamp", "")),
        value=value, currency=currency, lines=_order_lines(row.get("lines", "")),
    )


def read_orders(path: Path) -> list[Order]:
    """Reads and validates a whole orders CSV; raises ImportFailed listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    return _read_delimited(path, ",", _ORDER_REQUIRED, _order, key_column="order_id")


# --- price lists per customer group (server/b2b/) --------------------------------------

_PRICE_LIST_REQUIRED = ("group", "item_id")
MAX_MIN_QUANTITY = 1_000_000


@dataclass(frozen=True)
class PriceList:
    """A price list file: (group, item id, min quantity, price) tiers and (group, item id) restrictions."""

    tiers: list[tuple[str, str, int, float]]
    restricted: list[tuple[str, str]]


def _price_list_row(row: dict[str, str]) -> tuple[str, str, int, float | None]:
    """(group, item id, min quantity, price); price None: the group may not buy the item."""
    group = _limited(row, "group", 64)
    if not group:
        raise _RowError("empty group")
    item_id = _limited(row, "item_id", 128)
    if not item_id:
        raise _RowError("empty item_id")
    allowed_text = row.get("allowed", "").lower()
    if allowed_text and allowed_text not in _BOOLEANS:
        raise _RowError(f"bad allowed {_quoted(allowed_text)} (expected true/false, yes/no or 1/0)")
    quantity_text = row.get("min_quantity", "")
    price_text = row.get("price", "")
    if not _BOOLEANS.get(allowed_text, True):
        if price_text or quantity_text:
            raise _RowError("a row with allowed=false has no price or min_quantity (the group may not buy the item at all)")
        return group, item_id, 0, None
    quantity = 1
    if quantity_text:
        if not re.fullmatch(r"\d+", quantity_text) or not 1 <= int(quantity_text) <= MAX_MIN_QUANTITY:
            raise _RowError(f"bad min_quantity {_quoted(quantity_text)} (expected a whole number from 1 to {MAX_MIN_QUANTITY:,})")
        quantity = int(quantity_text)
    if not price_text:
        raise _RowError("empty price (or write allowed=false for an item the group may not buy)")
    price = _parse_number(price_text, "price")
    if price is None or price < 0:
        raise _RowError(f"bad price {_quoted(price_text)}: must not be negative")
    return group, item_id, quantity, price


def read_price_list(path: Path) -> PriceList:
    """Reads and validates a whole price list CSV; raises ImportFailed listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(path, None, "no such file")
    errors, rows = _open_delimited(path, ",", _PRICE_LIST_REQUIRED, missing_of=lambda header: (
        [] if "price" in header or "allowed" in header else ["price"]))
    tiers: dict[tuple[str, str, int], tuple[float, int]] = {}  # key -> (price, line)
    barred: dict[tuple[str, str], int] = {}  # (group, item) -> line
    priced: dict[tuple[str, str], int] = {}  # (group, item) -> first line with a price
    for line, row, problem in rows:
        if problem:
            errors.add(line, problem)
            continue
        try:
            group, item_id, quantity, price = _price_list_row(row)
        except _RowError as error:
            errors.add(line, str(error))
            continue
        pair = (group, item_id)
        if price is None:
            if pair in barred:
                errors.add(line, f"item {item_id!r} is already not allowed for group {group!r} (line {barred[pair]})")
            elif pair in priced:
                errors.add(line, f"item {item_id!r} has a price for group {group!r} (line {priced[pair]}) and allowed=false")
            else:
                barred[pair] = line
            continue
        if pair in barred:
            errors.add(line, f"item {item_id!r} is not allowed for group {group!r} (line {barred[pair]}) but has a price")
            continue
        key = (group, item_id, quantity)
        if key in tiers:
            errors.add(line, f"duplicate tier: group {group!r}, item_id {item_id!r}, min_quantity {quantity} "
                       f"(first on line {tiers[key][1]})")
            continue
        tiers[key] = (price, line)
        priced.setdefault(pair, line)
    errors.raise_if_any()
    return PriceList(
        tiers=[(g, i, q, price) for (g, i, q), (price, _) in tiers.items()],
        restricted=list(barred),
    )
