"""Full-text candidates for search: BM25 with prefix and typo tolerance, one index per shop.

A `SearchIndex` is a tantivy index in one directory. Imports write to it (one writer at a
time, across processes); web workers read it. The text score it returns is the input of
the personalized re-ranking, not the final order.

Scoring, from the outside in:
- a multi-word query adds ALL_WORDS_BONUS to items that match every word (exactly, as a
  prefix or with a typo), so they rank above items matching only some words;
- each word adds EXACT_BONUS plus its BM25 score (title boosted highest) when it matches a
  text field exactly after English stemming ("bags" matches "bag");
- each word otherwise adds a small constant when it matches loosely: as a prefix (the word
  being typed) or at edit distance 1 (words of 4+ letters; a transposition counts as one),
  more in the title than elsewhere. A loose match never outscores an exact one.

Concurrency: a writer (and tantivy's directory lock) is held only inside `upsert` and
`delete`. A second writer, in this process or another, waits up to `lock_timeout` seconds
for the lock, then raises `SearchIndexLocked`. Readers never lock: after a commit this
process reloads at once; other processes pick the commit up within about half a second
(tantivy watches the index's meta file).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tantivy
from tantivy import Occur, Query

from server.models import CatalogItem

# Text fields searched with BM25 on English stems, and their weights.
FIELD_BOOSTS = {"title": 4.0, "category": 2.0, "brand": 2.0, "tags": 2.0, "description": 1.0}
# Unstemmed words, for prefix and typo matching and as the vocabulary of suggestions and
# spelling: the title's apart from the rest, so a loose match in the title can count more.
TITLE_WORDS = "title_words"
OTHER_WORDS = "other_words"
TITLE_PHRASES = "title_phrases"  # pairs of adjacent title words, for phrase suggestions

ALL_WORDS_BONUS = 1000.0  # a tier: above any sum of per-word scores seen in practice
LOOSE_TITLE = 1.0
LOOSE_OTHER = 0.5
EXACT_BONUS = LOOSE_TITLE + LOOSE_OTHER  # with BM25 > 0 on top, an exact match beats any loose one

FUZZY_MIN_LETTERS = 4
PREFIX_MIN_LETTERS = 2
MAX_QUERY_WORDS = 10
MAX_WORD_CHARS = 40  # longer tokens are dropped, in documents and queries alike
WRITER_HEAP_BYTES = 64_000_000
LOCK_POLL_SECONDS = 0.05

STEM_TOKENIZER = "vitrine_en_stem"
WORDS_TOKENIZER = "vitrine_words"


class SearchIndexLocked(RuntimeError):
    """Another writer holds the index directory."""


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float  # BM25-based text score, higher is better


def _analyzer(stem: bool) -> tantivy.TextAnalyzer:
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_WORD_CHARS))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
    )
    if stem:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("item_id", stored=True, tokenizer_name="raw")
    for name in FIELD_BOOSTS:
        # BM25 needs term frequencies; no query here uses positions.
        builder.add_text_field(name, tokenizer_name=STEM_TOKENIZER, index_option="freq")
    builder.add_text_field(TITLE_WORDS, tokenizer_name=WORDS_TOKENIZER, index_option="basic")
    builder.add_text_field(OTHER_WORDS, tokenizer_name=WORDS_TOKENIZER, index_option="basic")
    builder.add_text_field(TITLE_PHRASES, tokenizer_name="raw", index_option="basic")
    return builder.build()


class SearchIndex:
    """One shop's full-text index in `path` (created if missing, reopened if present)."""

    def __init__(self, path: Path, *, lock_timeout: float = 2.0) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._schema = _schema()
        self._stems = _analyzer(stem=True)
        self._words = _analyzer(stem=False)
        try:
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
        except ValueError as error:
            raise ValueError(
                f"{self.path} holds a search index of another layout ({error}); "
                "delete the directory and import the catalog again to rebuild it"
            ) from error
        self._index.register_tokenizer(STEM_TOKENIZER, self._stems)
        self._index.register_tokenizer(WORDS_TOKENIZER, self._words)
        self._index.config_reader(reload_policy="OnCommit")
        self._write_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def upsert(self, items: Sequence[CatalogItem]) -> None:
        """Add or replace items (matched by item_id); one commit for the whole batch."""
        latest = {item.item_id: item for item in items}  # the last version of a repeated id wins
        if not latest:
            return
        with self._writer() as writer:
            # Holding the writer lock, nobody else can add documents: an empty index (a first
            # import or a rebuild) has nothing to replace, and deletes are half the work.
            replacing = self._index.searcher().num_docs > 0
            for item in latest.values():
                if replacing:
                    writer.delete_documents_by_term("item_id", item.item_id)
                writer.add_document(self._document(item))
            writer.commit()

    def delete(self, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        with self._writer() as writer:
            for item_id in set(item_ids):
                writer.delete_documents_by_term("item_id", item_id)
            writer.commit()

    @contextmanager
    def _writer(self) -> Iterator[tantivy.IndexWriter]:
        with self._write_lock:
            writer = self._acquire_writer()
            self._index.reload()  # see the last commit of any other writer
            try:
                yield writer
            except BaseException:
                writer.rollback()
                raise
            finally:
                # Waits for background merges, then drops the writer and its directory lock.
                writer.wait_merging_threads()
            self._index.reload()

    def _acquire_writer(self) -> tantivy.IndexWriter:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
            except ValueError as error:
                if "LockBusy" not in str(error):
                    raise
                if time.monotonic() >= deadline:
                    raise SearchIndexLocked(
                        f"the search index in {self.path} is being written by another process "
                        f"(waited {self.lock_timeout:g} s); retry when that import finishes"
                    ) from error
                time.sleep(LOCK_POLL_SECONDS)

    def _document(self, item: CatalogItem) -> tantivy.Document:
        title_words = self._words.analyze(item.title)
        texts = {
            "item_id": [item.item_id],
            "title": [item.title],
            "description": [item.description],
            "category": [item.category],
            "brand": [item.brand],
            "tags": item.tags,
            TITLE_WORDS: [item.title],
            OTHER_WORDS: [item.description, item.category, item.brand, *item.tags],
            TITLE_PHRASES: sorted({f"{a} {b}" for a, b in zip(title_words, title_words[1:])}),
        }
        document = tantivy.Document()  # add_text is several times faster than keyword arguments
        for field, values in texts.items():
            for value in values:
                if value:
                    document.add_text(field, value)
        return document

    # -- reading -------------------------------------------------------------------------

    def count(self) -> int:
        return self._index.searcher().num_docs

    def search(self, query: str, limit: int = 200) -> list[Hit]:
        """Up to `limit` items matching `query`, best first; any string is a valid query."""
        built = self._query(query)
        searcher = self._index.searcher()
        limit = min(limit, searcher.num_docs)  # tantivy sizes its top-k heap by limit
        if built is None or limit <= 0:
            return []
        result = searcher.search(built, limit, count=False)
        return [Hit(searcher.doc(address).get_first("item_id"), score) for score, address in result.hits]

    def _query(self, text: str) -> Query | None:
        words = list(dict.fromkeys(self._words.analyze(text)))[:MAX_QUERY_WORDS]
        if not words:
            return None
        typing = not text[-1].isspace()  # the last word may be unfinished
        per_word = [self._word_query(word, typing and i == len(words) - 1) for i, word in enumerate(words)]
        clauses = [(Occur.Should, q) for q in per_word]
        if len(per_word) > 1:
            every_word = Query.boolean_query([(Occur.Must, q) for q in per_word])
            clauses.append((Occur.Should, Query.const_score_query(every_word, ALL_WORDS_BONUS)))
        return Query.boolean_query(clauses)

    def _word_query(self, word: str, last: bool) -> Query:
        stem = (self._stems.analyze(word) or [word])[0]
        exact = [Query.term_query(self._schema, field, stem) for field in FIELD_BOOSTS]
        clauses = [Query.boost_query(q, boost) for q, boost in zip(exact, FIELD_BOOSTS.values())]
        clauses.append(Query.const_score_query(_any(exact), EXACT_BONUS))
        for field, score in ((TITLE_WORDS, LOOSE_TITLE), (OTHER_WORDS, LOOSE_OTHER)):
            loose = self._loose(field, word, last)
            if loose:
                clauses.append(Query.const_score_query(_any(loose), score))
        return _any(clauses)

    def _loose(self, field: str, word: str, last: bool) -> list[Query]:
        queries = []
        if len(word) >= FUZZY_MIN_LETTERS:
            queries.append(Query.fuzzy_term_query(self._schema, field, word, distance=1, transposition_cost_one=True))
        if last and len(word) >= PREFIX_MIN_LETTERS:
            queries.append(Query.fuzzy_term_query(self._schema, field, word, distance=0, prefix=True))
        return queries

    def suggest(self, prefix: str, limit: int = 8) -> list[str]:
        """Completions of the last word typed, from the titles, most frequent first.

        A single word gives the title words and the pairs of adjacent title words that
        start with it ("chri": "christmas", "christmas tree", ...). After a space, the pairs
        that start with the last word ("christmas ": "christmas tree", ...). Earlier words
        are kept, and the counts only include items that have them too, so "red chri" gives
        "red christmas" only if some item has both words.
        """
        words = self._words.analyze(prefix)[-MAX_QUERY_WORDS:]
        if not words or limit <= 0:
            return []
        searcher = self._index.searcher()
        head, last = words[:-1], words[-1]
        # Filtering, even by all documents, keeps deleted items out of the counts.
        items = Query.all_query()
        if head:
            items = Query.boolean_query([(Occur.Must, self._word_query(word, False)) for word in head])
        if prefix[-1].isspace():
            found = searcher.terms_with_prefix(TITLE_PHRASES, last + " ", filter_query=items, limit=limit)
        else:
            found = searcher.terms_with_prefix(TITLE_WORDS, last, filter_query=items, limit=limit)
            if not head and len(last) >= PREFIX_MIN_LETTERS:
                found += searcher.terms_with_prefix(TITLE_PHRASES, last, filter_query=items, limit=limit)
                found.sort(key=lambda term: -term[1])
        return list(dict.fromkeys(" ".join([*head, term]) for term, _ in found))[:limit]

    def spelling(self, query: str) -> str | None:
        """The query with each unknown word replaced by an index word, or None if all are known.

        The replacement is the closest word (edit distance 1 for words of up to 4 letters,
        else up to 2; a transposition counts one), the most frequent of equally close ones.
        """
        words = self._words.analyze(query)[:MAX_QUERY_WORDS]
        searcher = self._index.searcher()
        corrected = [self._closest_word(searcher, word) for word in words]
        return " ".join(corrected) if corrected != words else None

    def _closest_word(self, searcher: tantivy.Searcher, word: str) -> str:
        if len(word) < 3 or not word.isalpha() or self._known(searcher, word):
            return word
        max_distance = 1 if len(word) <= 4 else 2
        candidates: set[str] = set()
        for field in (TITLE_WORDS, OTHER_WORDS):
            # The words of the items that have a word this close, with the same first letter
            # (typos in the first letter are rare): a short list that holds the closest words.
            near = Query.fuzzy_term_query(self._schema, field, word, distance=max_distance)
            candidates.update(term for term, _ in searcher.terms_with_prefix(field, word[0], filter_query=near))
        by_distance: dict[int, list[str]] = {}
        for term in candidates:
            if abs(len(term) - len(word)) <= max_distance:
                by_distance.setdefault(edit_distance(word, term, max_distance), []).append(term)
        closest = min((d for d in by_distance if d <= max_distance), default=None)
        if closest is None:
            return word
        return min(by_distance[closest], key=lambda term: (-self._frequency(searcher, term), term))

    @staticmethod
    def _frequency(searcher: tantivy.Searcher, word: str) -> int:
        return searcher.doc_freq(TITLE_WORDS, word) + searcher.doc_freq(OTHER_WORDS, word)

    def _known(self, searcher: tantivy.Searcher, word: str) -> bool:
        if self._frequency(searcher, word):
            return True
        stem = (self._stems.analyze(word) or [word])[0]
        return any(searcher.doc_freq(field, stem) for field in FIELD_BOOSTS)

    def close(self) -> None:
        self._index = None

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _any(queries: list[Query]) -> Query:
    return Query.boolean_query([(Occur.Should, q) for q in queries])


def edit_distance(a: str, b: str, bound: int) -> int:
    """Damerau-Levenshtein distance (adjacent transpositions count one), or bound + 1 if larger."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        if min(current) > bound:
            return bound + 1
        previous2, previous = previous, current
    return previous[-1]
