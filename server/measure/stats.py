"""The statistics of an experiment: per variant rates, the uplift against the control with
its 95% interval, the chance to beat the control or a p-value, and the sample-ratio check.

Pure functions of per variant totals (what rollups keep), no I/O. The formulas are those of
GrowthBook's engine, gbstats 0.8.0 (EffectBayesianABTest with its flat prior, TwoSidedTTest,
SequentialTwoSidedTTest, check_srm), and tests/test_stats.py checks them against numbers
that gbstats computed (tests/fixtures/gbstats_reference.json). docs/measurement.md explains
every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from scipy.special import chdtrc, ndtr, ndtri, stdtr, stdtrit

Engine = Literal["bayesian", "frequentist", "sequential"]
Metric = Literal["conversion_rate", "revenue_per_visitor"]
ENGINES: tuple[Engine, ...] = ("bayesian", "frequentist", "sequential")
METRICS: tuple[Metric, ...] = ("conversion_rate", "revenue_per_visitor")

ALPHA = 0.05  # 95% intervals
SRM_THRESHOLD = 0.001  # below this sample-ratio p-value, the split is not the one configured
SEQUENTIAL_TUNING = 5000  # gbstats' default: the sample size at which the sequence is tightest


@dataclass(frozen=True)
class VariantTotals:
    """What an experiment's rollups keep for one variant.

    `revenue_sum_squares` is the sum over visitors of the square of each one's revenue in
    the experiment (a visitor's orders added up first): with `revenue` and `visitors` it
    gives the variance of revenue per visitor. `orders` is for the average order value;
    without it, each converting visitor counts as one order.
    """

    id: str
    visitors: int
    conversions: int = 0
    revenue: float = 0.0
    revenue_sum_squares: float = 0.0
    orders: int | None = None


@dataclass(frozen=True)
class Sample:
    """One metric of one variant: its mean over visitors and the variance of a visitor's value."""

    n: int
    mean: float
    variance: float


def proportion(visitors: int, conversions: int) -> Sample:
    """A conversion rate: the mean of a 0/1 value per visitor (gbstats' ProportionStatistic)."""
    mean = conversions / visitors if visitors else 0.0
    return Sample(visitors, mean, mean * (1 - mean))


def sample_mean(n: int, total: float, sum_squares: float) -> Sample:
    """A mean per visitor from its sum and sum of squares (gbstats' SampleMeanStatistic)."""
    mean = total / n if n else 0.0
    variance = (sum_squares - total**2 / n) / (n - 1) if n > 1 else 0.0
    return Sample(n, mean, variance)


def metric_sample(totals: VariantTotals, metric: Metric) -> Sample:
    if metric == "conversion_rate":
        return proportion(totals.visitors, totals.conversions)
    if metric == "revenue_per_visitor":
        return sample_mean(totals.visitors, totals.revenue, totals.revenue_sum_squares)
    raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class Comparison:
    """A variant against the control on one metric.

    The uplift is relative (0.25 is +25%), with its 95% interval (credible for the Bayesian
    engine, confidence otherwise). When the data cannot give a verdict, `problem` says why
    and every number is None.
    """

    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    chance_to_win: float | None = None  # bayesian
    p_value: float | None = None  # frequentist, sequential
    problem: str | None = None

    def uplift(self) -> dict[str, float] | None:
        if self.estimate is None:
            return None
        return {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high}


def no_verdict(control: Sample, variant: Sample, metric: Metric = "conversion_rate") -> str | None:
    """Why these two samples cannot be compared, or None (the cases gbstats declines too)."""
    if control.n == 0:
        return "the control has no visitors yet"
    if variant.n == 0:
        return "this variant has no visitors yet"
    if control.mean == 0:
        what = "conversions" if metric == "conversion_rate" else "revenue"
        return f"the control has no {what} yet: an uplift relative to zero is undefined"
    if control.variance <= 0 or variant.variance <= 0:
        alike = "all or none converted" if metric == "conversion_rate" else "all spent the same"
        return f"no variation yet: every visitor of a variant counts the same ({alike}, or one visitor)"
    return None


def relative_uplift(control: Sample, variant: Sample) -> tuple[float, float]:
    """The relative difference of the means and its variance by the delta method."""
    estimate = (variant.mean - control.mean) / control.mean
    variance = variant.variance / (control.mean**2 * variant.n) + control.variance * variant.mean**2 / (
        control.mean**4 * control.n
    )
    return estimate, variance


def compare(
    control: Sample,
    variant: Sample,
    engine: Engine = "bayesian",
    *,
    alpha: float = ALPHA,
    sequential_tuning: float = SEQUENTIAL_TUNING,
    metric: Metric = "conversion_rate",
) -> Comparison:
    """`variant` against `control` by `engine`; `metric` only words the problem."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    problem = no_verdict(control, variant, metric)
    if problem:
        return Comparison(problem=problem)
    estimate, variance = relative_uplift(control, variant)
    sd = math.sqrt(variance)
    if engine == "bayesian":
        # flat prior: the posterior of the uplift is normal around the estimate
        low, high = estimate + sd * ndtri(alpha / 2), estimate + sd * ndtri(1 - alpha / 2)
        return Comparison(estimate, float(low), float(high), chance_to_win=float(ndtr(estimate / sd)))
    if engine == "frequentist":
        dof = welch_dof(control, variant)
        width = stdtrit(dof, 1 - alpha / 2) * sd
        p_value = 2 * stdtr(dof, -abs(estimate) / sd)
        return Comparison(estimate, float(estimate - width), float(estimate + width), p_value=float(p_value))
    width, p_value = confidence_sequence(estimate, variance, control.n + variant.n, alpha, sequential_tuning)
    return Comparison(estimate, estimate - width, estimate + width, p_value=p_value)


def welch_dof(control: Sample, variant: Sample) -> float:
    """Welch–Satterthwaite degrees of freedom (both samples have n >= 2 and some variance)."""
    a, b = control.variance / control.n, variant.variance / variant.n
    return (a + b) ** 2 / (a**2 / (control.n - 1) + b**2 / (variant.n - 1))


def confidence_sequence(
    estimate: float, variance: float, n: int, alpha: float, tuning: float
) -> tuple[float, float]:
    """Half-width and always-valid p-value of the asymptotic confidence sequence of
    Waudby-Smith et al. (arXiv 2103.06476v7, eq. 9, 155, 161), as gbstats computes it:
    valid however often it is looked at, tightest around `tuning` visitors in all."""
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    s2 = variance * n
    grown = n * rho2 + 1
    width = math.sqrt(s2) * math.sqrt(2 * grown * math.log(math.sqrt(grown) / alpha) / (n**2 * rho2))
    # 1 / e-value, in logarithms so that a large effect gives 0 rather than an overflow
    log_evalue = rho2 * (estimate**2 * n / variance) / (2 * grown) - 0.5 * math.log(grown)
    return width, math.exp(-log_evalue) if log_evalue > 0 else 1.0


def sample_ratio_mismatch(observed: Sequence[int], weights: Sequence[float]) -> float:
    """The chi-squared test's p-value that `observed` visitors were split by `weights`.

    Below SRM_THRESHOLD (0.001) the split is almost surely broken (assignment, exposure
    logging or bots), and the experiment's numbers should not be trusted. 1.0 when there is
    nothing to test (no visitors, one variant). As gbstats: variants of weight 0 add nothing
    to the statistic.
    """
    if len(observed) != len(weights):
        raise ValueError("one weight per variant")
    total, total_weight = sum(observed), sum(weights)
    if len(observed) < 2 or not total or total_weight <= 0:
        return 1.0
    statistic = 0.0
    for count, weight in zip(observed, weights):
        if weight > 0:
            expected = weight / total_weight * total
            statistic += (count - expected) ** 2 / expected
    return float(chdtrc(len(observed) - 1, statistic))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def variant_numbers(totals: VariantTotals) -> dict[str, Any]:
    """The plain numbers of one variant; a rate over nobody is None."""
    orders = totals.conversions if totals.orders is None else totals.orders
    return {
        "id": totals.id,
        "visitors": totals.visitors,
        "conversions": totals.conversions,
        "revenue": totals.revenue,
        "conversion_rate": _ratio(totals.conversions, totals.visitors),
        "revenue_per_visitor": _ratio(totals.revenue, totals.visitors),
        "average_order_value": _ratio(totals.revenue, orders),
    }


def _inconsistent(totals: VariantTotals) -> str | None:
    if min(totals.visitors, totals.conversions) < 0 or totals.conversions > totals.visitors:
        return f"inconsistent totals for {totals.id!r}: {totals.conversions} conversions of {totals.visitors} visitors"
    if not all(map(math.isfinite, (totals.revenue, totals.revenue_sum_squares))):
        return f"inconsistent totals for {totals.id!r}: revenue is not a number"
    return None


def analyze_experiment(
    variants: Sequence[VariantTotals],
    weights: Sequence[float] | None = None,
    engine: Engine = "bayesian",
    metric: Metric = "conversion_rate",
    *,
    alpha: float = ALPHA,
    sequential_tuning: float = SEQUENTIAL_TUNING,
) -> dict[str, Any]:
    """Every variant against the first (the control) on `metric`, shaped for the report.

    `weights` are the configured shares (equal when None). Each variant: its numbers, its
    `uplift` ({"estimate", "ci_low", "ci_high"}; None for the control or when `problem`
    says why there is no verdict), `chance_to_win` (bayesian) and `p_value` (frequentist,
    sequential), the other one None. Never raises on totals a store can hold.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    weights = [1.0] * len(variants) if weights is None else list(weights)
    if len(weights) != len(variants):
        raise ValueError(f"{len(variants)} variants but {len(weights)} weights")
    if any(w < 0 for w in weights) or (variants and sum(weights) <= 0):
        raise ValueError("weights must be positive")
    results = []
    control = metric_sample(variants[0], metric) if variants else None
    for index, totals in enumerate(variants):
        row = variant_numbers(totals) | {"uplift": None, "chance_to_win": None, "p_value": None, "problem": None}
        if index:
            problem = _inconsistent(variants[0]) or _inconsistent(totals)
            found = (
                Comparison(problem=problem)
                if problem
                else compare(control, metric_sample(totals, metric), engine, alpha=alpha,
                             sequential_tuning=sequential_tuning, metric=metric)
            )
            row |= {"uplift": found.uplift(), "chance_to_win": found.chance_to_win,
                    "p_value": found.p_value, "problem": found.problem}
        results.append(row)
    srm = sample_ratio_mismatch([max(v.visitors, 0) for v in variants], weights)
    return {"engine": engine, "metric": metric, "variants": results,
            "srm_p_value": srm, "srm_warning": srm < SRM_THRESHOLD}


def analyze_holdout(
    holdout: VariantTotals,
    personalized: VariantTotals,
    share: float,
    engine: Engine = "bayesian",
    metric: Metric = "conversion_rate",
) -> dict[str, Any]:
    """The hold-out's numbers and the uplift of everyone else (personalized) against it.

    `share` is the configured hold-out share (0.05 for 5%), for the sample-ratio check. The
    hold-out is the control: an uplift of 0.08 means personalized visitors converted (or
    spent) 8% more than held-out ones.
    """
    if not 0 < share < 1:
        raise ValueError("the hold-out share is between 0 and 1")
    result = analyze_experiment([holdout, personalized], [share, 1 - share], engine, metric)
    held, rest = result["variants"]
    numbers = {key: value for key, value in held.items() if key not in ("id", "uplift", "chance_to_win", "p_value", "problem")}
    return numbers | {
        "personalized": {key: rest[key] for key in numbers},
        "uplift": rest["uplift"], "chance_to_win": rest["chance_to_win"], "p_value": rest["p_value"],
        "problem": rest["problem"], "engine": engine, "metric": metric,
        "srm_p_value": result["srm_p_value"], "srm_warning": result["srm_warning"],
    }
