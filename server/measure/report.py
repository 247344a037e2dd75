"""`vitrine report`: each experiment's variants against their control, and everyone
personalized against the hold-out, from the totals the rollups keep (experiment_totals),
with the statistics of server/measure/stats.py."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.measure.experiments import HOLDOUT_ID
from server.measure.stats import VariantTotals, analyze_experiment, analyze_holdout

if TYPE_CHECKING:
    from server.shops import ShopConfig
    from server.store import Store


def build_report(
    store: "Store", shop: "ShopConfig", experiment: str | None = None, engine: str = "bayesian",
    metric: str = "conversion_rate", now: datetime | None = None,
) -> dict[str, Any]:
    """The report as JSON-ready data: {"shop", "generated_at", "engine", "metric",
    "experiments": [...], "holdout": {...} or None}. An experiment no longer in the config
    that has numbers is reported too (its variants in name order, the first as control)."""
    rows = store.experiment_totals(shop.id)
    by_experiment: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_experiment.setdefault(row["experiment"], {})[row["variant"]] = row
    configured = {e.id: e for e in shop.experiments}
    ids = [e.id for e in shop.experiments] + sorted(set(by_experiment) - set(configured) - {HOLDOUT_ID})
    if experiment is not None:
        ids = [i for i in ids if i == experiment]
    experiments = []
    for exp_id in ids:
        found = by_experiment.get(exp_id, {})
        config = configured.get(exp_id)
        variant_ids = [v.id for v in config.variants] if config else sorted(found)
        weights = [v.weight for v in config.variants] if config else None
        totals = [_totals(v, found.get(v)) for v in variant_ids]
        result = analyze_experiment(totals, weights, engine, metric)
        experiments.append({
            "id": exp_id,
            "slot": config.slot if config else "",
            "campaign": config.campaign if config else "",
            "in_config": config is not None,
            "enabled": bool(config and config.enabled),
            "first_exposed": _iso(min((r["first_exposed"] for r in found.values() if r["first_exposed"]), default=None)),
            "last_exposed": _iso(max((r["last_exposed"] for r in found.values() if r["last_exposed"]), default=None)),
            **result,
        })
    held = by_experiment.get(HOLDOUT_ID, {})
    holdout = None
    if (shop.holdout > 0 or held) and experiment in (None, HOLDOUT_ID):
        holdout_totals = _totals("holdout", held.get("holdout"))
        rest = _totals("personalized", held.get("personalized"))
        share = shop.holdout
        if not 0 < share < 1:  # no hold-out now, numbers from when there was one
            seen = holdout_totals.visitors + rest.visitors
            share = min(max(holdout_totals.visitors / seen if seen else 0.5, 0.001), 0.999)
        holdout = {"share": shop.holdout, **analyze_holdout(holdout_totals, rest, share, engine, metric)}
    return {
        "shop": shop.id, "generated_at": _iso(now or datetime.utcnow()), "engine": engine, "metric": metric,
        "experiments": experiments, "holdout": holdout,
    }


def _totals(variant: str, row: dict | None) -> VariantTotals:
    if row is None:
        return VariantTotals(variant, 0, 0, 0.0, 0.0, 0)
    return VariantTotals(variant, row["visitors"], row["conversions"], row["revenue"], row["revenue_sq"], row["orders"])


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None


def format_report(report: dict[str, Any]) -> str:
    """The report as text tables, one per experiment, then the hold-out."""
    lines = [f"Shop {report['shop']}: {report['metric'].replace('_', ' ')}, {report['engine']} ({report['generated_at']} UTC)"]
    if not report["experiments"] and report["holdout"] is None:
        lines.append("No experiment and no hold-out in this shop's config, and no numbers of one.")
    for exp in report["experiments"]:
        target = f"slot {exp['slot']}" if exp["slot"] else f"campaign {exp['campaign']}" if exp["campaign"] else "ended"
        lines += ["", f"Experiment {exp['id']} ({target}):"]
        lines += _table(exp["variants"], exp["engine"])
        lines.append(_srm(exp))
    if report["holdout"] is not None:
        h = report["holdout"]
        lines += ["", f"Hold-out ({h['share']:.0%} of visitors see no personalization):"]
        lines += _table([{"id": "holdout", **{k: h[k] for k in _COLUMNS}, "uplift": None, "chance_to_win": None,
                          "p_value": None, "problem": None},
                         {"id": "personalized", **{k: h["personalized"][k] for k in _COLUMNS}, "uplift": h["uplift"],
                          "chance_to_win": h["chance_to_win"], "p_value": h["p_value"], "problem": h["problem"]}],
                        h["engine"])
        lines.append(_srm(h))
    return "\n".join(lines) + "\n"


_COLUMNS = ("visitors", "conversions", "revenue", "conversion_rate", "revenue_per_visitor", "average_order_value")


def _table(variants: list[dict], engine: str) -> list[str]:
    last = "chance to win" if engine == "bayesian" else "p-value"
    head = f"  {'variant':<20} {'visitors':>9} {'conv.':>7} {'rate':>7} {'revenue':>11} {'per visitor':>11}  {'uplift (95% interval)':<28} {last}"
    out = [head]
    for v in variants:
        if v["uplift"] is not None:
            u = v["uplift"]
            uplift = f"{u['estimate']:+.1%} ({u['ci_low']:+.1%} to {u['ci_high']:+.1%})"
        else:
            uplift = "control" if v is variants[0] else (v.get("problem") or "")[:28]
        score = v["chance_to_win"] if engine == "bayesian" else v["p_value"]
        shown = "" if score is None else (f"{score:.1%}" if engine == "bayesian" else f"{score:.4f}")
        rate = "" if v["conversion_rate"] is None else f"{v['conversion_rate']:.2%}"
        per = "" if v["revenue_per_visitor"] is None else f"{v['revenue_per_visitor']:.2f}"
        out.append(f"  {v['id']:<20} {v['visitors']:>9} {v['conversions']:>7} {rate:>7} {v['revenue']:>11.2f} {per:>11}  "
                   f"{uplift:<28} {shown}")
    return out


def _srm(result: dict) -> str:
    p = result["srm_p_value"]
    if result.get("srm_warning"):
        return f"  WARNING: sample ratio mismatch (p = {p:.2g} < 0.001): the split is not the configured one; do not trust the numbers"
    return f"  Sample ratio check: p = {p:.3g}" if p is not None else ""
