"""Training: fit LightFM on a shop's interactions, choosing its hyper-parameters on a validation split.

Shops have no data scientist, so `vitrine train` tunes itself: it holds out each user's
newest interactions, tries a few configurations (item feature groups, then components,
then the learning rate) with early stopping on validation recall@10 within a time budget,
and refits the best on everything. Settings that are set (not 0 or empty) are kept as given.

Items are represented by their id and their features (the hybrid part: it is what lets
sparse shops beat popularity). Users are represented by their id only; the vector of a
user attribute (country, device class, lifecycle segment) is worked out from the trained
users who have it (see FittedModel.attribute_vectors), and scores visitors the model has
not seen. Trained as LightFM user features instead, the attributes' shared component
pulled every known user towards the average: recall@10 of known users fell by about a
third on the demo data, and precision@10 on MovieLens from 0.14 to 0.12.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from lightfm import LightFM

from server.models import VisitorProfile
from server.recommend.artifact import ModelArtifact, models_dir, save_artifact
from server.recommend.dataset import (
    ITEM_FEATURE_GROUPS, FeatureCatalog, Positive, TrainingSet, bought_together, popularity_order,
    select_positives, split_newest_per_user, user_attribute_features,
)
from server.recommend.evaluate import Holdout, RankingMetrics, evaluate_popularity, make_holdout, ranking_metrics

Log = Callable[[str], None]

DEFAULT_COMPONENTS = 32
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_EPOCHS = 30  # when there is nothing to validate on
COMPONENT_CHOICES = (32, 16, 64)  # the first is tried first
LEARNING_RATE_CHOICES = (0.05, 0.02)
# Candidate item feature groups; the item's id is always a feature.
FEATURE_GROUP_CHOICES: tuple[tuple[str, ...], ...] = (
    ITEM_FEATURE_GROUPS,
    tuple(g for g in ITEM_FEATURE_GROUPS if g != "terms"),
    ("terms",),
    ("category",),
    (),
)
# WARP samples up to this many negatives per positive; more than LightFM's default of 10
# finds the items wrongly ranked above a positive more often (better top of the list).
MAX_SAMPLED = 100
VALIDATION_SHARE = 0.1  # of each user's history, newest first
VALIDATION_K = 10
VALIDATION_MAX_USERS = 5000
# Beyond this many interactions, configurations are compared on a sample of the users, so
# that several fit in the time budget; the final fit uses everyone.
TUNING_MAX_INTERACTIONS = 1_000_000
MAX_EPOCHS = 60
# The final fit averages a few models: on the demo data three lifted recall@10 by about 7%
# and halved its spread from seed to seed; on MovieLens precision@10 from 0.141 to 0.146.
ENSEMBLE_MEMBERS = 6
SCORING_BUDGET_FLOATS = 100_000 * 32
PATIENCE = 3  # validations without a better (smoothed) recall before a trial stops
SMOOTHING = 3  # validations averaged: single ones are noisy on small shops
POPULARITY_KEPT = 500
SEED = 20240101


@dataclass(frozen=True)
class ModelParams:
    components: int
    learning_rate: float
    feature_groups: tuple[str, ...]
    epochs: int
    loss: str = "warp"
    members: int = 1  # models fitted with different seeds, their vectors side by side

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "feature_groups": list(self.feature_groups)}

    def describe(self) -> str:
        groups = ",".join(self.feature_groups) or "ids only"
        text = f"components={self.components} learning_rate={self.learning_rate} features={groups}"
        return text + (f" members={self.members}" if self.members > 1 else "")


def training_threads(settings: Any) -> int:
    return settings.model_threads or os.cpu_count() or 1


def new_model(params: ModelParams, member: int = 0) -> LightFM:
    return LightFM(
        no_components=params.components, loss=params.loss, learning_rate=params.learning_rate,
        max_sampled=MAX_SAMPLED, random_state=np.random.RandomState(SEED + member),
    )


def ensemble_members(n_items: int, components: int) -> int:
    """How many models the final fit averages: up to ENSEMBLE_MEMBERS while the item vectors
    stay within what serving scores in well under a millisecond (100,000 items x 32)."""
    fits = SCORING_BUDGET_FLOATS // max(1, n_items * components)
    return int(min(ENSEMBLE_MEMBERS, max(1, fits)))


@dataclass
class FittedModel:
    """LightFM models fitted on one training set, seen as plain vectors.

    With several members (same configuration, different seeds), their vectors are put side
    by side and their biases added, so a dot product scores with the sum of the members'
    scores: an ensemble that serving handles like a single model.
    """

    training: TrainingSet
    models: list[LightFM]
    params: ModelParams

    @cached_property
    def item_vectors(self) -> np.ndarray:
        return self._stack(lambda m: self.training.item_features @ m.item_embeddings)

    @cached_property
    def item_biases(self) -> np.ndarray:
        return np.asarray(sum(self.training.item_features @ m.item_biases for m in self.models), dtype=np.float32)

    @cached_property
    def user_vectors(self) -> np.ndarray:
        return self._stack(lambda m: self.training.user_features @ m.user_embeddings)

    def _stack(self, vectors: Callable[[LightFM], np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.hstack([np.asarray(vectors(m)) for m in self.models]), dtype=np.float32)

    @cached_property
    def attribute_vectors(self) -> np.ndarray:
        """For each user attribute, how the trained users who have it differ from the average
        user: their mean vector minus everyone's. What all users share is in the item biases
        already; adding it again ranked worse than popularity for visitors the model had not
        seen, while the difference keeps what is particular to (say) a country."""
        members = self.training.user_attributes
        counts = np.asarray(members.sum(axis=0)).ravel()
        means = np.asarray(members.T @ self.user_vectors) / np.maximum(counts, 1.0)[:, None]
        centre = self.user_vectors.mean(axis=0) if len(self.user_vectors) else 0.0
        return np.ascontiguousarray(means - centre, dtype=np.float32)

    def vectors_for(self, visitor_ids: Sequence[str], profiles: Mapping[str, VisitorProfile]) -> np.ndarray:
        """Known users' vectors; for a visitor the model never saw, the mean of their features'."""
        index = self.training.attribute_index
        found = np.zeros((len(visitor_ids), self.item_vectors.shape[1]), dtype=np.float32)
        for row, vid in enumerate(visitor_ids):
            user = self.training.user_index.get(vid)
            if user is not None:
                found[row] = self.user_vectors[user]
                continue
            columns = [index[n] for n in user_attribute_features(profiles.get(vid)) if n in index]
            if columns:
                found[row] = self.attribute_vectors[columns].mean(axis=0)
        return found

    def invalidate(self) -> None:
        for name in ("item_vectors", "item_biases", "user_vectors", "attribute_vectors"):
            self.__dict__.pop(name, None)


def model_scorer(
    fitted: FittedModel, visitor_ids: Sequence[str], profiles: Mapping[str, VisitorProfile]
) -> Callable[[int, int], np.ndarray]:
    users = fitted.vectors_for(visitor_ids, profiles)
    return lambda start, stop: users[start:stop] @ fitted.item_vectors.T + fitted.item_biases


def fit_epochs(fitted: FittedModel, epochs: int, threads: int) -> None:
    t = fitted.training
    # LightFM's k-OS WARP takes no sample weights.
    weights = None if fitted.params.loss == "warp-kos" else t.weights
    for model in fitted.models:
        model.fit_partial(
            t.interactions, user_features=t.user_features, item_features=t.item_features,
            sample_weight=weights, epochs=epochs, num_threads=threads,
        )
    fitted.invalidate()


def fit(training: TrainingSet, params: ModelParams, threads: int) -> FittedModel:
    fitted = FittedModel(training, [new_model(params, n) for n in range(params.members)], params)
    fit_epochs(fitted, params.epochs, threads)
    return fitted


# -- tuning ---------------------------------------------------------------------------
@dataclass
class Trial:
    params: ModelParams  # epochs: the best epoch found
    validation: RankingMetrics  # at that epoch
    score: float  # the smoothed validation recall that chose it
    epochs_run: int
    seconds: float

    def record(self) -> dict[str, Any]:
        return {**self.params.as_dict(), "recall_at_10": round(self.validation.recall_at_k, 5),
                "smoothed_recall_at_10": round(self.score, 5),
                "precision_at_10": round(self.validation.precision_at_k, 5),
                "epochs_run": self.epochs_run, "seconds": round(self.seconds, 2)}


@dataclass
class Tuner:
    catalog: FeatureCatalog
    fit_part: Sequence[Positive]
    holdout_part: Sequence[Positive]
    profiles: Mapping[str, VisitorProfile]
    settings: Any
    deadline: float
    log: Log
    trials: list[Trial] = field(default_factory=list)
    _sets: dict[tuple[str, ...], tuple[TrainingSet, Holdout]] = field(default_factory=dict)

    def data(self, groups: tuple[str, ...]) -> tuple[TrainingSet, Holdout]:
        if groups not in self._sets:
            training = self.catalog.training_set(self.fit_part, self.profiles, groups)
            holdout = make_holdout(training, self.holdout_part)
            if len(holdout.visitor_ids) > VALIDATION_MAX_USERS:
                keep = np.sort(np.random.RandomState(SEED).choice(len(holdout.visitor_ids), VALIDATION_MAX_USERS, replace=False))
                holdout = Holdout([holdout.visitor_ids[i] for i in keep], holdout.test[keep], holdout.known[keep])
            self._sets[groups] = (training, holdout)
        return self._sets[groups]

    def run(self, params: ModelParams) -> Trial | None:
        """Fits params with early stopping on validation recall; None when out of time."""
        if self.trials and time.monotonic() + self._typical_seconds() > self.deadline:
            return None
        started = time.monotonic()
        training, holdout = self.data(params.feature_groups)
        fitted = FittedModel(training, [new_model(params)], params)
        fixed_epochs = self.settings.model_epochs
        most = fixed_epochs or MAX_EPOCHS
        every = 2 if training.interactions.nnz < 1_000_000 else 1
        curve: list[tuple[int, RankingMetrics]] = []
        best: tuple[float, int, RankingMetrics] | None = None
        stale = epoch = 0
        threads = training_threads(self.settings)
        while epoch < most:
            step = min(every, most - epoch)
            fit_epochs(fitted, step, threads)
            epoch += step
            out_of_time = time.monotonic() > self.deadline
            if fixed_epochs and epoch < most and not out_of_time:
                continue
            curve.append((epoch, self.validate(fitted, holdout)))
            # The best point is the middle of the best window of SMOOTHING validations.
            window = curve[-SMOOTHING:]
            smoothed = float(np.mean([m.recall_at_k for _, m in window]))
            if best is None or smoothed > best[0] + 1e-9:
                middle = window[len(window) // 2]
                best, stale = (smoothed, middle[0], middle[1]), 0
            else:
                stale += 1
            if stale >= PATIENCE or out_of_time:
                break
        assert best is not None
        trial = Trial(ModelParams(params.components, params.learning_rate, params.feature_groups, best[1], params.loss),
                      best[2], best[0], epoch, time.monotonic() - started)
        self.trials.append(trial)
        self.log(f"  trial {len(self.trials)}: {params.describe()}: validation recall@{VALIDATION_K} "
                 f"{trial.score:.4f} around epoch {trial.params.epochs} ({trial.seconds:.1f} s)")
        return trial

    def validate(self, fitted: FittedModel, holdout: Holdout) -> RankingMetrics:
        score = model_scorer(fitted, holdout.visitor_ids, self.profiles)
        return ranking_metrics(score, holdout.test, holdout.known, VALIDATION_K)

    def best(self) -> Trial:
        return max(self.trials, key=lambda t: t.score)

    def _typical_seconds(self) -> float:
        return float(np.median([t.seconds for t in self.trials]))


def choose_params(
    catalog: FeatureCatalog, positives: Sequence[Positive], profiles: Mapping[str, VisitorProfile],
    settings: Any, budget_s: float, log: Log,
) -> tuple[ModelParams, dict[str, Any]]:
    """The configuration to fit on all of positives, and the record of how it was chosen."""
    started = time.monotonic()
    fixed_groups = _fixed_groups(settings)
    components = settings.model_components or DEFAULT_COMPONENTS
    learning_rate = settings.model_learning_rate or DEFAULT_LEARNING_RATE
    groups = fixed_groups if fixed_groups is not None else ITEM_FEATURE_GROUPS
    default = ModelParams(components, learning_rate, groups, settings.model_epochs or DEFAULT_EPOCHS, settings.model_loss)

    sampled = _sample_users(positives, TUNING_MAX_INTERACTIONS)
    fit_part, holdout_part = split_newest_per_user(sampled, VALIDATION_SHARE)
    tuner = Tuner(catalog, fit_part, holdout_part, profiles, settings, started + budget_s, log)
    if not holdout_part or not tuner.data(groups)[1].visitor_ids:
        log("Too little history to hold out a validation split: using the default configuration.")
        return default, {"skipped": "no validation split", "budget_s": budget_s}
    log(f"Tuning on {len(fit_part)} interactions, validating on the {len(holdout_part)} newest of their "
        f"users' (budget {budget_s:.0f} s).")

    def candidates_for(base: ModelParams, field_name: str, values: Sequence[Any]) -> list[ModelParams]:
        return [ModelParams(**{**asdict(base), field_name: v}) for v in values]

    def tried(params: ModelParams) -> bool:
        return any((t.params.components, t.params.learning_rate, t.params.feature_groups)
                   == (params.components, params.learning_rate, params.feature_groups) for t in tuner.trials)

    stages: list[tuple[str, Sequence[Any]]] = []
    if fixed_groups is None:
        stages.append(("feature_groups", _distinct_group_choices(catalog)))
    if not settings.model_components:
        stages.append(("components", COMPONENT_CHOICES))
    if not settings.model_learning_rate:
        stages.append(("learning_rate", LEARNING_RATE_CHOICES))
    if not stages:
        stages.append(("components", (components,)))
    out_of_time = False
    for field_name, values in stages:
        base = tuner.best().params if tuner.trials else default
        for params in candidates_for(base, field_name, values):
            if out_of_time or tried(params):
                continue
            if tuner.run(params) is None:
                out_of_time = True
                log("  time budget reached: stopping the search")

    best = tuner.best()
    training, holdout = tuner.data(best.params.feature_groups)
    popularity = evaluate_popularity(fit_part, holdout, training.item_ids, VALIDATION_K)
    chosen = ModelParams(best.params.components, best.params.learning_rate, best.params.feature_groups,
                         max(1, best.params.epochs), settings.model_loss)
    record = {
        "chosen": chosen.as_dict(),
        "trials": [t.record() for t in tuner.trials],
        "validation": {
            "k": VALIDATION_K, "users": holdout.test.shape[0],
            "model": _rounded(best.validation), "popularity": _rounded(popularity),
            "fit_interactions": len(fit_part), "validation_interactions": len(holdout_part),
        },
        "budget_s": budget_s,
        "users_sampled": len(sampled) < len(positives),
        "seconds": round(time.monotonic() - started, 2),
        "stopped_by_budget": out_of_time,
    }
    return chosen, record


def _sample_users(positives: Sequence[Positive], most: int) -> Sequence[Positive]:
    """All of positives, or those of a random share of the users that has about `most`."""
    if len(positives) <= most:
        return positives
    users = sorted({p.visitor_id for p in positives})
    rng = np.random.RandomState(SEED)
    kept = set(rng.choice(users, max(1, int(len(users) * most / len(positives))), replace=False))
    return [p for p in positives if p.visitor_id in kept]


def _fixed_groups(settings: Any) -> tuple[str, ...] | None:
    if not settings.model_feature_groups:
        return None
    unknown = set(settings.model_feature_groups) - set(ITEM_FEATURE_GROUPS)
    if unknown:
        raise ValueError(
            f"setting model_feature_groups: unknown group(s) {', '.join(sorted(unknown))} "
            f"(expected some of {', '.join(ITEM_FEATURE_GROUPS)})"
        )
    return tuple(g for g in ITEM_FEATURE_GROUPS if g in settings.model_feature_groups)


def _distinct_group_choices(catalog: FeatureCatalog) -> list[tuple[str, ...]]:
    """The candidate groups, less those this catalog has no features in (a shop without
    brands gains nothing from trying with and without them)."""
    present = catalog.groups_present()
    distinct: list[tuple[str, ...]] = []
    for groups in FEATURE_GROUP_CHOICES:
        effective = tuple(g for g in groups if g in present)
        if effective not in distinct:
            distinct.append(effective)
    return distinct


def _rounded(metrics: RankingMetrics) -> dict[str, float]:
    return {name: round(value, 5) for name, value in metrics.as_dict().items()}


def fit_tuned(
    catalog: FeatureCatalog, positives: Sequence[Positive], profiles: Mapping[str, VisitorProfile],
    settings: Any, budget_s: float, log: Log,
) -> tuple[FittedModel, dict[str, Any]]:
    """Chooses the configuration on a validation split, then fits it on all of positives."""
    params, tuning = choose_params(catalog, positives, profiles, settings, budget_s, log)
    params = replace(params, members=ensemble_members(len(catalog.item_ids), params.components))
    tuning["chosen"] = params.as_dict()
    started = time.monotonic()
    training = catalog.training_set(positives, profiles, params.feature_groups)
    fitted = fit(training, params, training_threads(settings))
    tuning["final_fit_seconds"] = round(time.monotonic() - started, 2)
    return fitted, tuning


# -- a shop ---------------------------------------------------------------------------
@dataclass
class TrainReport:
    artifact: ModelArtifact | None
    snapshot: dict[str, Any]
    seconds: float
    params: ModelParams | None = None
    tuning: dict[str, Any] = field(default_factory=dict)


def train_shop(
    store: Any, settings: Any, shop: str, *, min_value: float | None = None, log: Log = lambda line: None,
) -> TrainReport:
    """Trains the shop's model and publishes it as the current version. A shop with no
    usable interactions gets no model (serving then falls back to popularity)."""
    started = time.monotonic()
    catalog = FeatureCatalog(store.all_items(shop))
    selection = select_positives(store.interactions(shop), set(catalog.item_ids), min_value)
    positives = selection.positives
    snapshot = {**selection.counts, "catalog_items": len(catalog.item_ids), "min_value": min_value}
    log(f"Read {len(catalog.item_ids)} catalog items and {selection.counts['interactions']} interactions "
        f"({len(positives)} kept for training).")
    if not positives:
        return TrainReport(None, snapshot, time.monotonic() - started)
    profiles = store.visitor_attributes(shop)
    fitted, tuning = fit_tuned(catalog, positives, profiles, settings, float(settings.train_time_budget_s), log)
    training = fitted.training
    order = popularity_order(positives, training.item_ids)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    together = bought_together(positives, training.item_index, rank)
    ids = training.item_ids
    interacted = {p.item_id for p in positives}
    snapshot.update(
        users=len(training.user_ids), pairs=training.interactions.nnz, items_with_interactions=len(interacted),
        first_interaction=min(p.ts for p in positives).isoformat(),
        last_interaction=max(p.ts for p in positives).isoformat(),
    )
    seconds = time.monotonic() - started
    meta = {
        "params": {**fitted.params.as_dict(), "threads": training_threads(settings), "min_value": min_value,
                   "item_features": len(training.item_feature_names)},
        "tuning": tuning,
        "metrics": {"validation": tuning.get("validation"), "train_seconds": round(seconds, 2)},
        "snapshot": snapshot,
    }
    artifact = save_artifact(
        models_dir(settings), shop,
        item_ids=ids, item_vectors=fitted.item_vectors, item_biases=fitted.item_biases,
        user_ids=training.user_ids, user_vectors=fitted.user_vectors,
        user_feature_names=training.attribute_names, user_feature_vectors=fitted.attribute_vectors,
        bought_together={ids[a]: [ids[b] for b in bs] for a, bs in together.items()},
        popularity=[ids[n] for n in order if ids[n] in interacted][:POPULARITY_KEPT],
        meta=meta, keep=settings.model_keep_versions,
    )
    return TrainReport(artifact, snapshot, seconds, fitted.params, tuning)
