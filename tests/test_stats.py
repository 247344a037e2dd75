"""server/measure/stats.py: the numbers of gbstats on the same totals, and the properties a
data scientist checks (symmetry, coverage, peeking, the sample-ratio check, edge cases)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from server.measure.stats import (
    ENGINES,
    SRM_THRESHOLD,
    VariantTotals,
    analyze_experiment,
    analyze_holdout,
    compare,
    proportion,
    sample_ratio_mismatch,
)

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "gbstats_reference.json").read_text())
CASES = REFERENCE["cases"]


def totals(case):
    return [VariantTotals(id=f"v{i}", **v) for i, v in enumerate(case["variants"])]


def close(got, want, rel=1e-9):
    return got == pytest.approx(want, rel=rel, abs=1e-300)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_engine_gives_gbstats_numbers(case):
    variants = totals(case)
    for comparison in case["comparisons"]:
        for engine in ENGINES:
            result = analyze_experiment(variants, case["weights"], engine=engine, metric=comparison["metric"])
            row, want = result["variants"][comparison["variant"]], comparison[engine]
            label = (engine, comparison["metric"], comparison["variant"])
            assert row["problem"] is None, label
            assert close(row["uplift"]["estimate"], want["expected"]), label
            assert close(row["uplift"]["ci_low"], want["ci"][0]), label
            assert close(row["uplift"]["ci_high"], want["ci"][1]), label
            if engine == "bayesian":
                assert close(row["chance_to_win"], want["chance_to_win"]) and row["p_value"] is None, label
            else:
                assert close(row["p_value"], want["p_value"]) and row["chance_to_win"] is None, label
        assert close(result["srm_p_value"], case["srm_p_value"])
        assert result["srm_warning"] == (case["srm_p_value"] < SRM_THRESHOLD)


def test_the_fixture_is_varied_and_names_its_source():
    assert REFERENCE["gbstats"] == "0.8.0" and len(CASES) >= 12
    assert max(len(c["variants"]) for c in CASES) >= 4
    estimates = [k["bayesian"]["expected"] for c in CASES for k in c["comparisons"]]
    assert min(estimates) < -0.1 and max(estimates) > 0.1
    assert min(c["variants"][0]["visitors"] for c in CASES) < 100 < 100_000 < max(c["variants"][0]["visitors"] for c in CASES)


def test_the_report_shape():
    a = VariantTotals("control", visitors=1000, conversions=50, revenue=2500.0, revenue_sum_squares=180_000.0, orders=55)
    b = VariantTotals("new-copy", visitors=1010, conversions=62, revenue=3100.0, revenue_sum_squares=230_000.0)
    result = analyze_experiment([a, b], [0.5, 0.5])
    assert set(result) == {"engine", "metric", "variants", "srm_p_value", "srm_warning"}
    control, variant = result["variants"]
    assert control == {
        "id": "control", "visitors": 1000, "conversions": 50, "revenue": 2500.0, "conversion_rate": 0.05,
        "revenue_per_visitor": 2.5, "average_order_value": 2500.0 / 55, "uplift": None, "chance_to_win": None,
        "p_value": None, "problem": None,
    }
    assert variant["average_order_value"] == 3100.0 / 62  # without orders, one per converting visitor
    assert set(variant["uplift"]) == {"estimate", "ci_low", "ci_high"}
    assert variant["uplift"]["estimate"] == pytest.approx(62 / 1010 / 0.05 - 1)  # a fraction: 0.23 is +23%
    assert 0.5 < variant["chance_to_win"] < 1
    revenue = analyze_experiment([a, b], engine="frequentist", metric="revenue_per_visitor")["variants"][1]
    assert revenue["uplift"]["estimate"] == pytest.approx(3100 / 1010 / 2.5 - 1)
    assert 0 < revenue["p_value"] < 1 and revenue["chance_to_win"] is None
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_same_totals_twice_mean_no_uplift(engine):
    same = VariantTotals("a", visitors=4000, conversions=200, revenue=9000.0, revenue_sum_squares=700_000.0)
    for metric in ("conversion_rate", "revenue_per_visitor"):
        row = analyze_experiment([same, same], engine=engine, metric=metric)["variants"][1]
        assert row["uplift"]["estimate"] == 0
        assert row["uplift"]["ci_low"] == pytest.approx(-row["uplift"]["ci_high"])
        assert row["chance_to_win" if engine == "bayesian" else "p_value"] == (0.5 if engine == "bayesian" else 1.0)


def test_a_better_variant_is_likely_to_win_and_a_worse_one_not():
    control = VariantTotals("a", visitors=20_000, conversions=600)
    better, worse = VariantTotals("b", 20_000, 690), VariantTotals("c", 20_000, 520)
    rows = analyze_experiment([control, better, worse])["variants"]
    assert rows[1]["chance_to_win"] > 0.99 and rows[1]["uplift"]["ci_low"] > 0
    assert rows[2]["chance_to_win"] < 0.01 and rows[2]["uplift"]["ci_high"] < 0


def test_sample_ratio_mismatch():
    assert sample_ratio_mismatch([5000, 4000], [0.5, 0.5]) < 1e-20
    assert sample_ratio_mismatch([5000, 5010], [0.5, 0.5]) > 0.9
    assert sample_ratio_mismatch([9000, 1000], [0.9, 0.1]) == 1.0  # weights need not add up to 1
    assert sample_ratio_mismatch([9000, 1000], [1, 1]) < 1e-100
    assert sample_ratio_mismatch([5000], [1]) == 1.0 and sample_ratio_mismatch([0, 0], [1, 1]) == 1.0
    skewed = analyze_experiment([VariantTotals("a", 5000, 100), VariantTotals("b", 4000, 80)], [0.5, 0.5])
    assert skewed["srm_warning"] and skewed["srm_p_value"] < SRM_THRESHOLD
    assert not analyze_experiment([VariantTotals("a", 5000, 100), VariantTotals("b", 5010, 80)])["srm_warning"]


def test_the_sequential_interval_is_wider_than_the_fixed_one_and_shrinks_with_n():
    widths = []
    for n in (500, 5_000, 50_000, 500_000, 5_000_000):
        control, variant = proportion(n, round(n * 0.05)), proportion(n, round(n * 0.055))
        fixed, sequential = compare(control, variant, "frequentist"), compare(control, variant, "sequential")
        assert sequential.estimate == fixed.estimate
        assert sequential.ci_low < fixed.ci_low and sequential.ci_high > fixed.ci_high
        assert sequential.p_value >= fixed.p_value
        widths.append(sequential.ci_high - sequential.ci_low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 50


def test_the_95_percent_intervals_cover_the_true_uplift_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    n, rate_a, rate_b = 20_000, 0.05, 0.06
    truth = rate_b / rate_a - 1
    covered = {"bayesian": 0, "frequentist": 0}
    runs = 2000
    for a, b in zip(rng.binomial(n, rate_a, runs), rng.binomial(n, rate_b, runs)):
        for engine in covered:
            found = compare(proportion(n, int(a)), proportion(n, int(b)), engine)
            covered[engine] += found.ci_low <= truth <= found.ci_high
    for engine, count in covered.items():
        assert 0.93 < count / runs < 0.97, engine


def test_peeking_at_a_sequential_test_keeps_false_alarms_under_five_percent():
    """An A/A test looked at 20 times: the fixed test cries wolf far more than 5% of the
    time when any look counts, the sequential one does not."""
    rng = np.random.default_rng(3)
    runs, looks, step, rate = 400, 20, 500, 0.1
    alarms = {"frequentist": 0, "sequential": 0}
    for _ in range(runs):
        a = np.cumsum(rng.binomial(step, rate, looks))
        b = np.cumsum(rng.binomial(step, rate, looks))
        for engine in alarms:
            alarms[engine] += any(
                compare(proportion(step * (i + 1), int(a[i])), proportion(step * (i + 1), int(b[i])), engine).p_value < 0.05
                for i in range(looks)
            )
    assert alarms["frequentist"] / runs > 0.15
    assert alarms["sequential"] / runs < 0.05


EDGE_CASES = {
    "no visitors anywhere": [VariantTotals("a", 0), VariantTotals("b", 0)],
    "no visitors in the variant": [VariantTotals("a", 100, 5, 50.0, 900.0), VariantTotals("b", 0)],
    "no conversions in the control": [VariantTotals("a", 500, 0), VariantTotals("b", 500, 7, 70.0, 1200.0)],
    "no conversions anywhere": [VariantTotals("a", 500), VariantTotals("b", 500)],
    "every visitor converted": [VariantTotals("a", 40, 40, 400.0, 4000.0), VariantTotals("b", 40, 40, 400.0, 4000.0)],
    "one visitor each": [VariantTotals("a", 1, 1, 10.0, 100.0), VariantTotals("b", 1, 0)],
    "more conversions than visitors": [VariantTotals("a", 10, 12, 5.0, 9.0), VariantTotals("b", 10, 1, 5.0, 25.0)],
    "revenue not a number": [VariantTotals("a", 10, 2, math.nan, 9.0), VariantTotals("b", 10, 1, 5.0, 25.0)],
}


@pytest.mark.parametrize("name", EDGE_CASES)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("metric", ["conversion_rate", "revenue_per_visitor"])
def test_edge_cases_give_no_verdict_and_say_why(name, engine, metric):
    result = analyze_experiment(EDGE_CASES[name], engine=engine, metric=metric)
    control, variant = result["variants"]
    assert control["uplift"] is None and control["problem"] is None
    assert variant["uplift"] is None and variant["chance_to_win"] is None and variant["p_value"] is None
    assert isinstance(variant["problem"], str) and variant["problem"]
    if name != "revenue not a number":
        json.dumps(result, allow_nan=False)


def test_rates_over_nobody_are_none():
    row = analyze_experiment([VariantTotals("a", 0), VariantTotals("b", 10, 0)])["variants"][0]
    assert row["conversion_rate"] is row["revenue_per_visitor"] is row["average_order_value"] is None
    assert analyze_experiment([VariantTotals("a", 0), VariantTotals("b", 10, 0)])["variants"][1]["conversion_rate"] == 0


def test_one_variant_only_and_none_at_all():
    alone = analyze_experiment([VariantTotals("a", 300, 9, 90.0, 1500.0)], [1.0], engine="sequential")
    assert alone["srm_p_value"] == 1.0 and not alone["srm_warning"]
    assert alone["variants"][0]["uplift"] is None and alone["variants"][0]["conversion_rate"] == 0.03
    assert analyze_experiment([])["variants"] == []


def test_a_huge_effect_does_not_overflow():
    found = compare(proportion(10_000_000, 100_000), proportion(10_000_000, 400_000), "sequential")
    assert found.p_value == 0.0 and found.ci_low > 2


def test_mistakes_of_the_caller_are_value_errors():
    two = [VariantTotals("a", 10, 1), VariantTotals("b", 10, 2)]
    with pytest.raises(ValueError, match="engine"):
        analyze_experiment(two, engine="magic")
    with pytest.raises(ValueError, match="metric"):
        analyze_experiment(two, metric="clicks")
    with pytest.raises(ValueError, match="weights"):
        analyze_experiment(two, [1.0])
    with pytest.raises(ValueError, match="weights"):
        analyze_experiment(two, [-1.0, 2.0])


def test_the_sequential_p_value_is_below_5_percent_exactly_when_its_interval_leaves_out_zero():
    control = proportion(40_000, 1_200)
    for conversions in range(1_200, 1_500, 10):
        found = compare(control, proportion(40_000, conversions), "sequential")
        assert (found.p_value < 0.05) == (found.ci_low > 0), conversions


def test_the_holdout_is_the_control_of_personalization():
    holdout = VariantTotals("holdout", visitors=2_400, conversions=70, revenue=4_300.0, revenue_sum_squares=400_000.0)
    rest = VariantTotals("personalized", visitors=45_800, conversions=1_510, revenue=96_000.0, revenue_sum_squares=9e6)
    result = analyze_holdout(holdout, rest, 0.05)
    assert (result["visitors"], result["conversions"], result["revenue"]) == (2_400, 70, 4_300.0)
    assert result["personalized"]["visitors"] == 45_800 and "id" not in result
    assert result["uplift"]["estimate"] == pytest.approx((1_510 / 45_800) / (70 / 2_400) - 1)
    assert result["chance_to_win"] > 0.5 and not result["srm_warning"]
    as_experiment = analyze_experiment([holdout, rest], [0.05, 0.95])
    assert result["uplift"] == as_experiment["variants"][1]["uplift"]
    assert analyze_holdout(holdout, rest, 0.5)["srm_warning"]  # 5% of visitors where half were expected
    empty = analyze_holdout(VariantTotals("holdout", 0), rest, 0.05, engine="sequential", metric="revenue_per_visitor")
    assert empty["uplift"] is None and empty["problem"] == "the control has no visitors yet"
    with pytest.raises(ValueError, match="share"):
        analyze_holdout(holdout, rest, 5)


def test_the_problem_names_the_metric():
    rows = [VariantTotals("a", 100, 0), VariantTotals("b", 100, 3, 30.0, 400.0)]
    assert "no conversions" in analyze_experiment(rows)["variants"][1]["problem"]
    assert "no revenue" in analyze_experiment(rows, metric="revenue_per_visitor")["variants"][1]["problem"]


def test_the_sequential_interval_is_tightest_when_tuned_to_the_sample_size():
    control, variant = proportion(10_000, 500), proportion(10_000, 560)  # 20,000 visitors in all

    def width(tuning):
        found = compare(control, variant, "sequential", sequential_tuning=tuning)
        return found.ci_high - found.ci_low

    assert width(20_000) < min(width(2_000), width(200_000))
    fixed = compare(control, variant, "frequentist")
    wider = compare(control, variant, "frequentist", alpha=0.01)
    assert wider.ci_high - wider.ci_low > fixed.ci_high - fixed.ci_low  # a 99% interval
