"""Tests for server.imports: catalog and interaction files, and their error reports."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from server.imports import ImportFailed, detect_catalog_format, read_catalog, read_interactions
from server.models import CatalogItem
from server.urls import RULE

DEMO_DATA = Path(__file__).resolve().parent.parent / "server" / "demo" / "data"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def failure(call, *args) -> ImportFailed:
    with pytest.raises(ImportFailed) as caught:
        call(*args)
    return caught.value


# --- generic CSV ----------------------------------------------------------------------


def test_generic_csv_reads_every_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        "item_id,title,description,category,brand,price,currency,url,image_url,tags,in_stock,"
        "colour\n"
        'A1,White Metal Lantern,"Lantern, white",Home > Lights >Lanterns,Acme,3.75,gbp,'
        "/p/A1,/i/A1.svg,white|metal,no,ignored\n"
        "B2,Mug,,,,,,,,,,\n",
    )
    first, second = read_catalog(path)
    assert first == CatalogItem(
        item_id="A1",
        title="White Metal Lantern",
        description="Lantern, white",
        category="Home > Lights > Lanterns",
        brand="Acme",
        price=3.75,
        currency="GBP",
        url="/p/A1",
        image_url="/i/A1.svg",
        tags=("white", "metal"),
        in_stock=False,
    )
    assert second == CatalogItem(item_id="B2", title="Mug")


def test_generic_csv_availability_column_and_price_with_currency(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        "item_id,title,price,availability\nA,One,12.50 EUR,out of stock\nB,Two,4,preorder\n",
    )
    one, two = read_catalog(path)
    assert (one.price, one.currency, one.in_stock) == (12.5, "EUR", False)
    assert (two.price, two.currency, two.in_stock) == (4.0, "", True)


def test_trailing_empty_fields_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "item_id,title\nA,One,,\n")
    assert read_catalog(path) == [CatalogItem(item_id="A", title="One")]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "\ufeffitem_id,title\nA,Crème brûlée set\n")
    assert read_catalog(path) == [CatalogItem(item_id="A", title="Crème brûlée set")]


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "sku,name,price\nA,One,1\n")
    error = failure(read_catalog, path)
    assert error.line == 1
    assert "missing required columns item_id, title" in error.message
    assert str(error).startswith(f"{path}:1: missing required columns")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (",Nameless,1.00", "empty item_id"),
        ("A2,,1.00", "empty title"),
        ("A2,Two,abc", "bad price 'abc'"),
        ("A2,Two,-1.50", "must not be negative"),
        ("A2,Two,1.00,extra", "4 fields but the header has 3"),
        ("A2,Two, 1.00 ,,x,", "6 fields but the header has 3"),
    ],
)
def test_bad_row_reports_its_line_and_returns_nothing(
    tmp_path: Path, row: str, expected: str
) -> None:
    path = write(tmp_path, "catalog.csv", f"item_id,title,price\nA1,One,1.00\n\n{row}\n")
    error = failure(read_catalog, path)
    assert error.line == 4  # the blank line 3 still counts
    assert expected in error.message
    assert str(error) == f"{path}:4: {error.message}"


@pytest.mark.parametrize("format", ["csv", "gmc-xml"])
def test_a_price_cell_with_a_long_run_of_spaces_is_refused_in_linear_time(tmp_path: Path, format: str) -> None:
    cell = "1" + " " * 100_000 + "x"
    if format == "csv":
        path = write(tmp_path, "catalog.csv", f'item_id,title,price\nA,One,"{cell}"\n')
    else:
        path = write(tmp_path, "feed.xml", f'<rss xmlns:g="{GOOGLE}"><channel>\n<item><g:id>A</g:id>'
                                           f"<g:title>One</g:title><g:price>{cell}</g:price></item></channel></rss>")
    started = time.perf_counter()
    error = failure(read_catalog, path)
    elapsed = time.perf_counter() - started
    assert error.line == 2
    assert error.message.startswith("bad price '1   ")
    assert "(100002 characters) (expected a number like 12.50" in error.message
    assert len(error.message) < 300  # the cell is cut short in the message
    assert elapsed < 1  # about 5 ms; the old pattern backtracked quadratically (minutes here)


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("1" * 400, "must be at most 1,000,000,000"),  # float() makes it inf
        ("1" * 400 + " GBP", "must be at most 1,000,000,000"),
        ("1000000000.01 GBP", "must be at most 1,000,000,000"),
    ],
)
def test_prices_must_be_finite_and_at_most_a_billion(tmp_path: Path, price: str, expected: str) -> None:
    path = write(tmp_path, "catalog.csv", f"item_id,title,price\nA,One,1000000000 GBP\nB,Two,{price}\n")
    error = failure(read_catalog, path)
    assert error.line == 3 and len(error.errors) == 1
    assert expected in error.message
    path.write_text("item_id,title,price\nA,One,1000000000 GBP\n")
    assert read_catalog(path)[0].price == 1e9


def test_line_numbers_count_physical_lines_of_quoted_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        'item_id,title,description\nA,One,"two\nline description"\nB,,x\n',
    )
    assert failure(read_catalog, path).line == 4


def test_duplicate_item_id_names_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "item_id,title\nA,One\nB,Two\nA,Again\n")
    error = failure(read_catalog, path)
    assert error.line == 4
    assert "duplicate item_id 'A' (first on line 2)" in error.message


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        "item_id,title,price\nA,One,1\n,Two,2\nC,Three,abc\nD,,4\nE,Five,5\n",
    )
    error = failure(read_catalog, path)
    assert error.line == 3
    assert [line for line, _ in error.errors] == [3, 4, 5]
    lines = str(error).splitlines()
    assert lines[0] == f"{path}:3: empty item_id"
    assert lines[1].startswith(f"{path}:4: bad price 'abc'")
    assert lines[2] == f"{path}:5: empty title"


def test_error_list_stops_after_twenty(tmp_path: Path) -> None:
    rows = "".join(f"X{n},Item,abc\n" for n in range(50))
    path = write(tmp_path, "catalog.csv", "item_id,title,price\n" + rows)
    error = failure(read_catalog, path)
    assert len(error.errors) == 20
    assert "stopped after 20 errors" in str(error)


def test_bad_encoding_is_a_clear_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "item_id,title\nA,One\nB,Crème\n", encoding="latin-1")
    error = failure(read_catalog, path)
    assert error.line == 3
    assert "not valid UTF-8 (byte 0xe8)" in error.message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty" in failure(read_catalog, write(tmp_path, "empty.csv", "")).message
    assert "no such file" in failure(read_catalog, tmp_path / "absent.csv").message


# --- Google Merchant Center TSV -------------------------------------------------------

GMC_TSV = (
    "id\ttitle\tdescription\tlink\timage_link\tprice\tavailability\tbrand\tproduct_type"
    "\tgoogle_product_category\tcustom_label_0\tcustom_label_3\tgtin\n"
    "SKU-1\tTea Towel\tCotton towel\thttps://shop.example/p/1\thttps://shop.example/i/1.jpg"
    "\t12.50 GBP\tin stock\tAcme\tHome > Kitchen > Textiles\t2271\tsummer\tsale\t123\n"
    "SKU-2\tMug\t\t\t\t4.00 GBP\tout of stock\t\t\tHome & Garden\t\t\t\n"
    'SKU-3\t12" Pizza Plate\t\t\t\t\tbackorder\t\t\t\t\t\t\n'
)


def test_gmc_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.tsv", GMC_TSV)
    assert detect_catalog_format(path) == "gmc-tsv"
    towel, mug, plate = read_catalog(path)
    assert towel == CatalogItem(
        item_id="SKU-1",
        title="Tea Towel",
        description="Cotton towel",
        category="Home > Kitchen > Textiles",
        brand="Acme",
        price=12.5,
        currency="GBP",
        url="https://shop.example/p/1",
        image_url="https://shop.example/i/1.jpg",
        tags=("summer", "sale"),
        in_stock=True,
    )
    assert (mug.category, mug.in_stock, mug.price) == ("Home & Garden", False, 4.0)
    assert (plate.title, plate.price, plate.in_stock) == ('12" Pizza Plate', None, True)


def test_gmc_tsv_detected_from_content_and_validated(tmp_path: Path) -> None:
    text = "id\ttitle\tprice\tavailability\nA\tOne\t1 GBP\tsoon\n"
    path = write(tmp_path, "feed.txt", text)
    error = failure(read_catalog, path)
    assert error.line == 2
    assert "bad availability 'soon'" in error.message


def test_gmc_tsv_requires_its_own_column_names(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.csv", "item_id,title\nA,One\n")
    error = failure(read_catalog, path, "gmc-tsv")
    assert "missing required columns id, title (found: item_id,title)" in error.message


# --- Google Merchant Center XML -------------------------------------------------------

RSS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
  <channel>
    <title>Example shop</title>
    <link>https://shop.example</link>
    <item>
      <g:id>SKU-1</g:id>
      <g:title>Tea Towel</g:title>
      <g:description>Cotton &amp; linen</g:description>
      <g:link>https://shop.example/p/1</g:link>
      <g:image_link>https://shop.example/i/1.jpg</g:image_link>
      <g:price>12.50 GBP</g:price>
      <g:availability>in_stock</g:availability>
      <g:brand>Acme</g:brand>
      <g:product_type>Home &gt; Kitchen</g:product_type>
      <g:custom_label_1>gift</g:custom_label_1>
    </item>
    <item>
      <title>Mug</title>
      <link>https://shop.example/p/2</link>
      <description>A mug</description>
      <g:id>SKU-2</g:id>
      <g:price>4 GBP</g:price>
      <g:availability>out of stock</g:availability>
    </item>
  </channel>
</rss>
"""

ATOM_FEED = """<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Example shop</title>
  <entry>
    <g:id>SKU-9</g:id>
    <title>Lantern</title>
    <link href="https://shop.example/p/9" rel="alternate"/>
    <summary>White lantern</summary>
    <g:price>3.75 GBP</g:price>
  </entry>
</feed>
"""


def test_gmc_xml_rss(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.xml", RSS_FEED)
    towel, mug = read_catalog(path)
    assert towel == CatalogItem(
        item_id="SKU-1",
        title="Tea Towel",
        description="Cotton & linen",
        category="Home > Kitchen",
        brand="Acme",
        price=12.5,
        currency="GBP",
        url="https://shop.example/p/1",
        image_url="https://shop.example/i/1.jpg",
        tags=("gift",),
        in_stock=True,
    )
    assert (mug.title, mug.url, mug.description) == ("Mug", "https://shop.example/p/2", "A mug")
    assert (mug.price, mug.in_stock) == (4.0, False)


def test_gmc_xml_atom_detected_from_content(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.data", ATOM_FEED)
    assert detect_catalog_format(path) == "gmc-xml"
    assert read_catalog(path) == [
        CatalogItem(
            item_id="SKU-9",
            title="Lantern",
            description="White lantern",
            price=3.75,
            currency="GBP",
            url="https://shop.example/p/9",
        )
    ]


def test_gmc_xml_item_errors_give_the_item_line(tmp_path: Path) -> None:
    feed = RSS_FEED.replace("<g:price>4 GBP</g:price>", "<g:price>free</g:price>").replace(
        "<g:id>SKU-2</g:id>", "<g:id>SKU-1</g:id>"
    )
    error = failure(read_catalog, write(tmp_path, "feed.xml", feed))
    assert error.line == 18  # the second <item>
    assert "bad price 'free'" in error.message
    assert len(error.errors) == 1  # a row with a bad price is not also a duplicate


def test_gmc_xml_duplicate_id(tmp_path: Path) -> None:
    feed = RSS_FEED.replace("<g:id>SKU-2</g:id>", "<g:id>SKU-1</g:id>")
    error = failure(read_catalog, write(tmp_path, "feed.xml", feed))
    assert (error.line, error.message) == (18, "duplicate id 'SKU-1' (first on line 6)")


def test_xml_without_items_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.xml", "<products><product id='1'/></products>")
    assert "no <item> or <entry> elements" in failure(read_catalog, path).message


def test_malformed_xml_gives_the_parser_line(tmp_path: Path) -> None:
    feed = RSS_FEED.replace("<g:brand>Acme</g:brand>", "<g:brand>Acme</brand>")
    error = failure(read_catalog, write(tmp_path, "feed.xml", feed))
    assert error.line == 14
    assert "malformed XML: mismatched tag" in error.message


# --- links ----------------------------------------------------------------------------

NOT_WEB_URLS = ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "//evil.example/p", "/\\evil.example"]


def catalog_with_link(tmp_path: Path, format: str, column: str, link: str) -> Path:
    """A two-item catalog whose second item (on line 3 of the file) has this link."""
    if format == "csv":
        text = f"item_id,title,{column}\nA,One,/p/A\nB,Two,\"{link}\"\n"
        return write(tmp_path, "catalog.csv", text)
    if format == "gmc-tsv":
        return write(tmp_path, "feed.tsv", f"id\ttitle\t{column}\nA\tOne\t/p/A\nB\tTwo\t{link}\n")
    escaped = link.replace("&", "&amp;").replace("<", "&lt;")
    feed = (
        f'<rss xmlns:g="{GOOGLE}"><channel><item><g:id>A</g:id><g:title>One</g:title></item>\n'
        f"<item><g:id>B</g:id><g:title>Two</g:title><g:{column}>{escaped}</g:{column}></item>\n"
        "</channel></rss>\n"
    )
    return write(tmp_path, "feed.xml", feed)


GOOGLE = "http://base.google.com/ns/1.0"
LINK_COLUMNS = [("csv", "url"), ("csv", "image_url"), ("gmc-tsv", "link"), ("gmc-tsv", "image_link"),
                ("gmc-xml", "link"), ("gmc-xml", "image_link")]


@pytest.mark.parametrize(("format", "column"), LINK_COLUMNS)
@pytest.mark.parametrize("link", NOT_WEB_URLS)
def test_links_that_are_not_web_urls_are_refused(tmp_path: Path, format: str, column: str, link: str) -> None:
    path = catalog_with_link(tmp_path, format, column, link)
    error = failure(read_catalog, path, format)
    line = 2 if format == "gmc-xml" else 3
    assert (error.line, error.message) == (line, f"bad {column} {link!r} (expected {RULE})")
    # Web URLs, site paths and empty cells are kept as they are.
    for good in ("https://shop.example/p/B?c=1#top", "/p/B", ""):
        _, second = read_catalog(catalog_with_link(tmp_path, format, column, good), format)
        assert (second.image_url if "image" in column else second.url) == good


def test_a_plain_rss_link_is_checked_too(tmp_path: Path) -> None:
    feed = RSS_FEED.replace("<link>https://shop.example/p/2</link>", "<link>javascript:alert(1)</link>")
    error = failure(read_catalog, write(tmp_path, "feed.xml", feed))
    assert error.line == 18
    assert error.message == f"bad link 'javascript:alert(1)' (expected {RULE})"


# --- interactions ---------------------------------------------------------------------


def test_interactions_timestamps_values_and_countries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "interactions.csv",
        "user_id,item_id,event,timestamp,value,country\n"
        "u1,A,purchase,2011-12-09T12:50:00Z,20.34,United Kingdom\n"
        "u1,B,view,2011-12-09T12:50:00,,GB\n"
        "u2,A,cart,2011-12-09T13:50:00+01:00,,\n"
        "u2,C,rating,1323435000,4.5,\n"
        "u3,C,VIEW,1323435000.5,,\n",
    )
    moment = datetime(2011, 12, 9, 12, 50, tzinfo=timezone.utc)
    purchase, view, cart, rating, upper = read_interactions(path)
    assert (purchase.timestamp, purchase.value) == (moment, 20.34)
    assert purchase.country == "United Kingdom"
    assert (view.timestamp, view.value, view.country) == (moment, None, "GB")
    assert cart.timestamp == moment and cart.timestamp.tzinfo == timezone.utc
    assert (rating.event, rating.value) == ("rating", 4.5)
    assert rating.timestamp == datetime(2011, 12, 9, 12, 50, tzinfo=timezone.utc)
    assert upper.event == "view" and upper.timestamp.microsecond == 500000


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("u1,A,click,2011-12-09T12:50:00Z,", "unknown event 'click'"),
        ("u1,A,view,yesterday,", "bad timestamp 'yesterday'"),
        ("u1,A,view,,", "empty timestamp"),
        ("u1,A,purchase,2011-12-09T12:50:00Z,lots", "bad value 'lots'"),
        ("u1,A,rating,2011-12-09T12:50:00Z,", "a rating needs a value"),
        (",A,view,2011-12-09T12:50:00Z,", "empty user_id"),
    ],
)
def test_bad_interaction_reports_its_line(tmp_path: Path, row: str, expected: str) -> None:
    path = write(
        tmp_path,
        "interactions.csv",
        f"user_id,item_id,event,timestamp,value\nu0,A,view,2011-12-09T12:50:00Z,\n{row}\n",
    )
    error = failure(read_interactions, path)
    assert error.line == 3
    assert expected in error.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2000000000", "must be between -1,000,000,000 and 1,000,000,000"),
        ("-1e10", "must be between -1,000,000,000 and 1,000,000,000"),
    ],
)
def test_interaction_values_must_be_finite_and_at_most_a_billion(tmp_path: Path, value: str, expected: str) -> None:
    path = write(tmp_path, "interactions.csv", f"user_id,item_id,event,timestamp,value\nu,A,purchase,0,{value}\n")
    assert expected in failure(read_interactions, path).message


def test_interactions_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "interactions.csv", "user,item_id,event\nu,A,view\n")
    assert "missing required columns user_id, timestamp" in failure(read_interactions, path).message


def test_interactions_errors_are_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "interactions.csv",
        "user_id,item_id,event,timestamp\nu,A,click,0\nu,A,view,0\nu,A,view,never\n",
    )
    error = failure(read_interactions, path)
    assert [line for line, _ in error.errors] == [2, 4]


def test_interactions_read_in_linear_time(tmp_path: Path) -> None:
    # Five times the rows take about five times as long (a quadratic path: 25 times), measured
    # back to back, the best of two runs each, so that a busy machine slows both alike.
    header = "user_id,item_id,event,timestamp,value,country\n"

    def best_of_two(rows: int) -> float:
        lines = (f"u{n % 997},I{n % 3001},view,{1291161600 + n},,GB\n" for n in range(rows))
        path = write(tmp_path, f"interactions-{rows}.csv", header + "".join(lines))
        times = []
        for _ in range(2):
            started = time.perf_counter()
            assert len(read_interactions(path)) == rows
            times.append(time.perf_counter() - started)
        return min(times)

    small, large = best_of_two(10_000), best_of_two(50_000)
    assert large / small < 12, f"10,000 rows in {small:.2f} s, 50,000 in {large:.2f} s"


# --- the shipped demo data ------------------------------------------------------------


def test_demo_catalog_parses() -> None:
    items = read_catalog(DEMO_DATA / "catalog.csv")
    assert 3000 < len(items) < 3300  # 3,168 when generated
    assert all(item.price is not None and item.price > 0 for item in items)
    assert all(item.currency == "GBP" and item.category for item in items)
    lantern = next(item for item in items if item.item_id == "71053")
    assert (lantern.title, lantern.category) == ("White Metal Lantern", "Candles and lights")


def test_demo_interactions_parse_and_refer_to_catalog_items() -> None:
    interactions = read_interactions(DEMO_DATA / "interactions.csv")
    assert 28000 < len(interactions) < 31000  # 29,177 when generated
    assert {interaction.event for interaction in interactions} == {"purchase"}
    catalog_ids = {item.item_id for item in read_catalog(DEMO_DATA / "catalog.csv")}
    assert {interaction.item_id for interaction in interactions} <= catalog_ids
    assert len({interaction.user_id for interaction in interactions}) > 3000
    assert min(i.timestamp for i in interactions) >= datetime(2010, 12, 1, tzinfo=timezone.utc)
    assert max(i.timestamp for i in interactions) < datetime(2011, 12, 10, tzinfo=timezone.utc)
