"""The full-text index: matching, ranking, updates, persistence, suggestions, spelling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tantivy

from server.models import CatalogItem
from server.search_index import SearchIndex, SearchIndexLocked

ROOT = Path(__file__).resolve().parent.parent

GIFT_SHOP = [
    CatalogItem("b1", "Jumbo Bag Red Retrospot", category="Bags", tags=("red",)),
    CatalogItem("b2", "Lunch Bag Pink Polka", category="Bags"),
    CatalogItem("b3", "Jumbo Shopper Vintage Red Paisley", category="Bags"),
    CatalogItem("b4", "Charlotte Bag Suki Design", category="Bags"),
    CatalogItem("x1", "Christmas Tree Decoration", category="Christmas"),
    CatalogItem("x2", "Christmas Tree Bauble Gold", category="Christmas"),
    CatalogItem("x3", "Christmas Gift Bag Large", category="Christmas"),
    CatalogItem("x4", "Christmas Star Wreath", category="Christmas"),
    CatalogItem("x5", "Christmas Hanging Star With Bell", category="Christmas"),
    CatalogItem("h1", "Hand Warmer Red Polka Dot", category="Gifts"),
    CatalogItem("l1", "White Metal Lantern", category="Candles and lights"),
    CatalogItem("l2", "Moroccan Lantern Antique Silver", category="Candles and lights"),
    CatalogItem("l3", "Set of 6 Tea Light Candles", category="Candles and lights"),
    CatalogItem("l4", "Brass Lamp", category="Candles and lights"),
    CatalogItem("l5", "Candle Holder", description="Holds a tea light; pairs well with a lantern."),
    CatalogItem("k1", "Felt Lamb Toy", category="Kids"),
    CatalogItem("k2", "Regency Cakestand 3 Tier", category="Kitchen"),
    CatalogItem("k3", "Pack of 72 Retrospot Cake Cases", category="Kitchen"),
    CatalogItem("g1", "Zinc Garden Planter", category="Garden"),
    CatalogItem("c1", "Paper Chain Kit Vintage Christmas", category="Cards and wrap"),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    """The gift shop's index, shared by the tests that only read it (a commit costs ~50 ms)."""
    search_index = SearchIndex(tmp_path_factory.mktemp("shop"))
    search_index.upsert(GIFT_SHOP)
    yield search_index
    search_index.close()


@pytest.fixture
def index(tmp_path: Path) -> SearchIndex:
    """A gift shop index of its own, for the tests that change it."""
    search_index = SearchIndex(tmp_path / "index")
    search_index.upsert(GIFT_SHOP)
    yield search_index
    search_index.close()


def ids(index: SearchIndex, query: str) -> list[str]:
    return [hit.item_id for hit in index.search(query)]


def test_an_exact_word_finds_the_items_that_have_it(shop: SearchIndex) -> None:
    assert set(ids(shop, "lantern")) >= {"l1", "l2", "l5"}
    assert set(ids(shop, "christmas")) == {"x1", "x2", "x3", "x4", "x5", "c1"}
    assert ids(shop, "Planter") == ["g1"]


def test_the_word_being_typed_matches_as_a_prefix(shop: SearchIndex) -> None:
    assert set(ids(shop, "lante")) >= {"l1", "l2"}
    assert "x2" in ids(shop, "christmas baub")
    # A finished word (a space typed after it) is not expanded.
    assert ids(shop, "lante ") == []


def test_a_typo_still_matches(shop: SearchIndex) -> None:
    assert set(ids(shop, "lanturn")) >= {"l1", "l2"}
    assert "l3" in ids(shop, "candels")  # a transposition is one edit
    assert "x4" in ids(shop, "wraeth")


def test_plurals_match_singulars(shop: SearchIndex) -> None:
    bags = ids(shop, "bags")
    assert set(bags[:4]) == {"b1", "b2", "b4", "x3"}
    assert set(ids(shop, "lanterns")) >= {"l1", "l2"}
    assert "l3" in ids(shop, "candle")


def test_an_exact_match_ranks_above_a_typo_match(shop: SearchIndex) -> None:
    found = ids(shop, "lamp")
    assert found[0] == "l4"
    assert "k1" in found  # "lamb" is one edit away, so it is a candidate, but below
    hits = {hit.item_id: hit.score for hit in shop.search("lamp")}
    assert hits["l4"] > hits["k1"] > 0


def test_a_title_match_ranks_above_a_description_match(shop: SearchIndex) -> None:
    found = ids(shop, "lantern")
    assert found.index("l1") < found.index("l5") and found.index("l2") < found.index("l5")


def test_items_matching_all_words_rank_above_items_matching_some(shop: SearchIndex) -> None:
    found = ids(shop, "red bag")
    assert found[0] == "b1"  # the only item with both words
    assert set(found[1:]) >= {"b2", "b3", "h1", "x3"}
    # With a typo in one word an item still counts as matching all words.
    assert ids(shop, "christmas stra")[:2] in (["x4", "x5"], ["x5", "x4"])


def test_scores_are_sorted_and_limit_is_respected(shop: SearchIndex) -> None:
    hits = shop.search("christmas", limit=3)
    assert len(hits) == 3
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_upsert_replaces_an_item_without_duplicating_it(index: SearchIndex) -> None:
    index.upsert([CatalogItem("l1", "White Metal Birdcage")])
    assert index.count() == len(GIFT_SHOP)
    assert "l1" not in ids(index, "lantern")
    assert ids(index, "birdcage") == ["l1"]


def test_a_repeated_id_in_one_batch_keeps_the_last_version(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path)
    index.upsert([CatalogItem("a", "Red Lantern"), CatalogItem("a", "Blue Lantern")])
    assert index.count() == 1
    assert ids(index, "blue") == ["a"] and ids(index, "red") == []


def test_delete_removes_items(index: SearchIndex) -> None:
    index.delete(["l1", "l2", "not-there"])
    assert index.count() == len(GIFT_SHOP) - 2
    assert set(ids(index, "lantern")) == {"l5"}


def test_the_index_survives_a_restart(tmp_path: Path) -> None:
    first = SearchIndex(tmp_path / "index")
    first.upsert(GIFT_SHOP)
    first.delete(["g1"])
    first.close()
    reopened = SearchIndex(tmp_path / "index")
    assert reopened.count() == len(GIFT_SHOP) - 1
    assert set(ids(reopened, "lantern")) >= {"l1", "l2"}
    assert ids(reopened, "planter") == []


def test_another_process_reads_the_same_index(shop: SearchIndex) -> None:
    script = (
        "import json, sys; from pathlib import Path; from server.search_index import SearchIndex; "
        "i = SearchIndex(Path(sys.argv[1])); "
        "print(json.dumps([i.count(), [h.item_id for h in i.search('lantern')]]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(shop.path)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    count, found = json.loads(run.stdout)
    assert count == len(GIFT_SHOP) and "l1" in found


def test_a_reader_sees_another_writers_commits(index: SearchIndex) -> None:
    reader = SearchIndex(index.path)  # like a web worker next to an import
    index.upsert([CatalogItem("n1", "Enamel Flag Sign")])
    deadline = time.monotonic() + 3
    while not ids(reader, "enamel") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ids(reader, "enamel") == ["n1"]


def test_a_second_writer_gets_a_clear_error_after_waiting(index: SearchIndex) -> None:
    other_writer = tantivy.Index.open(str(index.path)).writer(heap_size=15_000_000, num_threads=1)
    index.lock_timeout = 0.2
    with pytest.raises(SearchIndexLocked, match="being written by another process"):
        index.upsert([CatalogItem("n1", "Enamel Flag Sign")])
    other_writer.rollback()
    del other_writer  # releases the lock
    index.upsert([CatalogItem("n1", "Enamel Flag Sign")])
    assert ids(index, "enamel") == ["n1"]


def test_suggest_completes_the_last_word_from_titles(shop: SearchIndex) -> None:
    suggestions = shop.suggest("chri")
    assert suggestions[0] == "christmas"
    assert "christmas tree" in suggestions  # the commonest pair after the word itself
    assert suggestions.index("christmas tree") < suggestions.index("christmas gift")
    assert shop.suggest("christmas t") == ["christmas tree"]  # only words seen with "christmas"
    assert shop.suggest("red ch") == []
    assert shop.suggest("red po") == ["red polka"]
    assert shop.suggest("christmas ")[0] == "christmas tree"
    assert shop.suggest("lan", limit=1) == ["lantern"]
    assert shop.suggest("") == [] and shop.suggest("zzz") == []


def test_suggest_forgets_deleted_items(index: SearchIndex) -> None:
    index.delete(["g1"])
    assert "planter" not in index.suggest("pla")


def test_spelling_proposes_a_word_from_the_index(shop: SearchIndex) -> None:
    assert shop.spelling("lanturn") == "lantern"
    assert shop.spelling("red lantren") == "red lantern"
    assert shop.spelling("chirstmas decortion") == "christmas decoration"
    assert shop.spelling("lantern") is None  # nothing to correct
    assert shop.spelling("lanterns") is None  # a plural of a known word is known
    assert shop.spelling("qqqqqqq") is None and shop.spelling("") is None


@pytest.mark.parametrize("junk", ['"', "title:", "(((", "*", "a" * 5000, "red " * 2000, "", "  ", "\x00", "🎄 ~^-+!"])
def test_junk_queries_never_raise(shop: SearchIndex, junk: str) -> None:
    assert isinstance(shop.search(junk), list)
    assert isinstance(shop.suggest(junk), list)
    shop.spelling(junk)


def test_syntax_characters_are_ignored_around_words(shop: SearchIndex) -> None:
    assert "l1" in ids(shop, 'title:"lantern" (AND) *')
    assert shop.search("lantern", limit=0) == []


def test_an_empty_index_answers_empty(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path / "new" / "index")
    assert index.count() == 0
    assert index.search("lantern") == [] and index.suggest("la") == [] and index.spelling("lantrn") is None
