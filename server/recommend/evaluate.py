"""Offline evaluation: precision@k, recall@k and AUC of the model and of popularity on a held-out split.

The protocol is lightfm.evaluation's: for each user with at least one held-out positive,
every item is ranked except the user's training positives; an item's rank is the number of
other ranked items scoring at least as high; precision@k and recall@k count held-out
positives ranked below k, AUC is the share of (positive, negative) pairs in order. Scores
come from numpy so that users the model never saw are scored from their features, as the
server scores them, and so that popularity is measured by exactly the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from server.models import VisitorProfile
from server.recommend.dataset import (
    FeatureCatalog, Positive, Selection, TrainingSet, popularity_order, select_positives,
    split_by_time,
)

TEST_SHARE = 0.2  # without a test file: the newest fifth of the interactions
# Evaluation tunes the model like `vitrine train`, with this share of its time budget.
EVALUATE_BUDGET_SHARE = 0.25
_CHUNK = 512


class EvaluationError(ValueError):
    """A shop or test file that cannot be evaluated on; the message says why."""


@dataclass(frozen=True)
class RankingMetrics:
    precision_at_k: float
    recall_at_k: float
    auc: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return {"precision_at_k": self.precision_at_k, "recall_at_k": self.recall_at_k, "auc": self.auc}


@dataclass
class Holdout:
    """Held-out positives of the users evaluated (each has at least one), as rows over the items."""

    visitor_ids: list[str]
    test: sp.csr_matrix  # [users, items]: held-out positives
    known: sp.csr_matrix  # [users, items]: training positives, left out of the ranking
    dropped_pairs: int = 0  # held-out pairs already among the user's training positives


def make_holdout(training: TrainingSet, positives: Sequence[Positive]) -> Holdout:
    """Rows of held-out positives for the training set's items. A user the training set
    does not know is kept (scored from features); a pair seen in training is left out."""
    seen = training.interactions.tocsr()
    wanted: dict[str, set[int]] = {}
    for p in positives:
        item = training.item_index.get(p.item_id)
        if item is not None:
            wanted.setdefault(p.visitor_id, set()).add(item)
    visitor_ids, test_rows, known_rows, dropped = [], [], [], 0
    for vid, items in wanted.items():
        user = training.user_index.get(vid)
        known = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]]) if user is not None else set()
        fresh = items - known
        dropped += len(items) - len(fresh)
        if fresh:
            visitor_ids.append(vid)
            test_rows.append(sorted(fresh))
            known_rows.append(sorted(known))
    shape = (len(visitor_ids), len(training.item_ids))
    return Holdout(visitor_ids, _rows_matrix(test_rows, shape), _rows_matrix(known_rows, shape), dropped)


def _rows_matrix(rows: Sequence[Sequence[int]], shape: tuple[int, int]) -> sp.csr_matrix:
    indptr = np.cumsum([0, *(len(r) for r in rows)])
    indices = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape)


def ranking_metrics(
    score_rows: Callable[[int, int], np.ndarray], test: sp.csr_matrix, known: sp.csr_matrix, k: int
) -> RankingMetrics:
    """Mean precision@k, recall@k and AUC over the rows of test (users with a positive).

    score_rows(start, stop) gives the scores of rows start..stop-1 over every item.
    """
    n_users, n_items = test.shape
    precision = np.zeros(n_users)
    recall = np.zeros(n_users)
    auc = np.zeros(n_users)
    for start in range(0, n_users, _CHUNK):
        stop = min(n_users, start + _CHUNK)
        scores = np.array(score_rows(start, stop), dtype=np.float64, copy=True).reshape(stop - start, n_items)
        for offset in range(stop - start):
            user = start + offset
            positives = test.indices[test.indptr[user] : test.indptr[user + 1]]
            excluded = known.indices[known.indptr[user] : known.indptr[user + 1]]
            row = scores[offset]
            row[excluded] = -np.inf
            ordered = np.sort(row)
            # Items scoring at least as high, the item itself not counted.
            ranks = n_items - np.searchsorted(ordered, row[positives], side="left") - 1
            hits = int(np.count_nonzero(ranks < k))
            precision[user] = hits / k
            recall[user] = hits / len(positives)
            negatives = n_items - len(positives) - len(excluded)
            if negatives <= 0:
                auc[user] = 0.5
                continue
            # Positives ranked above a positive are not negatives above it.
            above = np.maximum(np.sort(ranks) - np.arange(len(positives)), 0)
            auc[user] = float(np.mean(1.0 - above / negatives))
    if n_users == 0:
        return RankingMetrics(0.0, 0.0, 0.0, 0)
    return RankingMetrics(float(precision.mean()), float(recall.mean()), float(auc.mean()), n_users)


def popularity_scores(positives: Sequence[Positive], item_ids: Sequence[str]) -> np.ndarray:
    """A strict order of every item by training popularity (higher is more popular)."""
    scores = np.zeros(len(item_ids), dtype=np.float64)
    for place, item in enumerate(popularity_order(positives, item_ids)):
        scores[item] = len(item_ids) - place
    return scores


def evaluate_popularity(positives: Sequence[Positive], holdout: Holdout, item_ids: Sequence[str], k: int) -> RankingMetrics:
    scores = popularity_scores(positives, item_ids)
    return ranking_metrics(lambda a, b: np.broadcast_to(scores, (b - a, len(scores))), holdout.test, holdout.known, k)


# -- a shop ---------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    k: int
    model: RankingMetrics
    popularity: RankingMetrics
    split: dict[str, Any]
    params: dict[str, Any]
    tuning: dict[str, Any]
    seconds: float

    @property
    def users(self) -> int:
        return self.model.users

    def as_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "users": self.users,
            "model": self.model.as_dict(),
            "popularity": self.popularity.as_dict(),
            "split": self.split,
            "params": self.params,
            "seconds": round(self.seconds, 2),
        }


def evaluate_shop(
    store: Any, settings: Any, shop: str, *, test_file: Path | None = None, min_value: float | None = None,
    k: int = 10, log: Callable[[str], None] = lambda line: None,
) -> EvaluationReport:
    """Fits the model (tuned, on a shorter budget) on the training part only and measures it
    and popularity on the held-out part."""
    from server.recommend.train import fit_tuned, model_scorer

    started = time.monotonic()
    catalog = FeatureCatalog(store.all_items(shop))
    known_items = set(catalog.item_ids)
    selection = select_positives(store.interactions(shop), known_items, min_value)
    if test_file is None:
        if not selection.positives:
            raise EvaluationError(f"shop {shop!r} has no interactions to evaluate on")
        train, test = split_by_time(selection.positives, TEST_SHARE)
        split = {"kind": "time", "test_share": TEST_SHARE}
        if test:
            split["test_from"] = test[0].ts.isoformat()
    else:
        test_selection = _test_file_positives(test_file, known_items, min_value)
        train, test = selection.positives, test_selection.positives
        split = {"kind": "file", "file": str(test_file), "test_counts": test_selection.counts}
    if not train or not test:
        raise EvaluationError(f"shop {shop!r}: not enough interactions for a split (train {len(train)}, test {len(test)})")
    split.update(train_positives=len(train), test_positives=len(test))
    log(f"Evaluating on {len(test)} held-out interactions after training on {len(train)}.")

    profiles: Mapping[str, VisitorProfile] = store.visitor_attributes(shop)
    budget = max(1.0, settings.train_time_budget_s * EVALUATE_BUDGET_SHARE)
    fitted, tuning = fit_tuned(catalog, train, profiles, settings, budget, log)
    holdout = make_holdout(fitted.training, test)
    if not holdout.visitor_ids:
        raise EvaluationError(f"shop {shop!r}: no held-out interaction is new to its user")
    split.update(users=len(holdout.visitor_ids), pairs_seen_in_training=holdout.dropped_pairs,
                 users_new_to_training=sum(v not in fitted.training.user_index for v in holdout.visitor_ids))
    model = ranking_metrics(model_scorer(fitted, holdout.visitor_ids, profiles), holdout.test, holdout.known, k)
    popularity = evaluate_popularity(train, holdout, fitted.training.item_ids, k)
    return EvaluationReport(
        k=k, model=model, popularity=popularity, split=split, params=fitted.params.as_dict(), tuning=tuning,
        seconds=time.monotonic() - started,
    )


def _test_file_positives(path: Path, known_items: set[str], min_value: float | None) -> Selection:
    """Held-out interactions from an import-format CSV, as the store would name their visitors."""
    from server.imports import read_interactions
    from server.models import Interacted, to_naive_utc
    from server.store.sql import INTERACTION_EVENT_TYPES, imported_visitor_id

    rows = read_interactions(path)
    records = [
        Interacted(
            imported_visitor_id(r.user_id), r.item_id, INTERACTION_EVENT_TYPES[r.event],
            to_naive_utc(r.timestamp), r.value, f"{r.user_id}@{r.timestamp.isoformat()}",
        )
        for r in rows
    ]
    return select_positives(records, known_items, min_value)


def format_report(report: EvaluationReport) -> str:
    """The small table `vitrine evaluate` prints."""
    k = report.k
    lines = [
        f"{'':<12}{'precision@' + str(k):>14}{'recall@' + str(k):>12}{'AUC':>8}",
        *(
            f"{name:<12}{m.precision_at_k:>14.4f}{m.recall_at_k:>12.4f}{m.auc:>8.4f}"
            for name, m in (("model", report.model), ("popularity", report.popularity))
        ),
    ]
    base = report.popularity.recall_at_k
    ratio = f"{report.model.recall_at_k / base:.2f}x" if base > 0 else "n/a"
    lines.append(f"{report.users} users evaluated; model recall@{k} is {ratio} popularity's.")
    return "\n".join(lines)
