"""Judging one KPI value: its status (ok, warn, breach, not_evaluated), flags and reason.

Two questions for one value of one KPI on one day and dimension value:

* **Against its target** (crm_pipeline.kpi.targets: the target in force that day).
  `breach` when the KPI is on the wrong side of its target, `warn` when it is within the
  warn margin of it.
* **Against its own recent level** (the baseline, crm_pipeline.kpi.stats): leaving the
  normal band in the bad direction is an `unusual_move`; being past the band of 8 to 12
  weeks before, with the recent level past it too, a `slow_move`.

Share-like KPIs are judged by the evidence behind them (`evidence` in targets.yaml), so
ten survey responses do not trigger what a thousand would: the one-sided interval at
`confidence` around the day's value must lie entirely on the wrong side of the target for
a breach, and beyond the band for an unusual move. A value past the target without that
evidence is only `warn`, with the reason saying so. A KPI whose inputs are not usable for
the day, without a value or with fewer than `min_n` observations is `not_evaluated`,
never an alarm. `flagged` = target breached, unusual or slow move: what alert rules fire
on. Pure: the caller (crm_pipeline.kpi.evaluate) has read the history. Grain: one
kpi_evaluation row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from crm_pipeline.kpi.registry import HIGHER, KpiSpec
from crm_pipeline.kpi.stats import evidence_interval
from crm_pipeline.kpi.targets import EvaluationSettings
from crm_pipeline.values import date_or_none, finite_or_none


def judge(
    spec: KpiSpec | None,
    value: float | None,
    n: float | None,
    target: float | None,
    warn_margin: float,
    base: Mapping[str, Any],
    settings: EvaluationSettings,
    failed_inputs: Iterable[str] = (),
    dimension: str = "all",
    day: dt.date | None = None,
) -> dict[str, Any]:
    """Status, flags and reason for one KPI value (see the module docstring).

    A move out of the normal band counts only when the whole evidence interval is out of
    it (not just the point value), and nothing is judged on fewer than the KPI's `min_n`
    observations for the dimension.
    """
    out: dict[str, Any] = {
        "target": target,
        "direction": spec.direction if spec else None,
        "baseline": base.get("baseline"),
        "baseline_low": base.get("baseline_low"),
        "baseline_high": base.get("baseline_high"),
        "baseline_days": int(base.get("baseline_days") or 0),
        "change_vs_baseline": None,
        "reference": finite_or_none(base.get("reference")),
        "reference_low": finite_or_none(base.get("reference_low")),
        "reference_high": finite_or_none(base.get("reference_high")),
        "change_vs_reference": None,
        "past_target_since": date_or_none(base.get("past_target_since")),
        "outside_band_since": date_or_none(base.get("outside_band_since")),
        "interval_low": None,
        "interval_high": None,
        "target_breached": False,
        "unusual_move": False,
        "slow_move": False,
        "flagged": False,
    }
    baseline = finite_or_none(out["baseline"])
    if value is not None and baseline is not None:
        out["change_vs_baseline"] = value - baseline
    reference = out["reference"]
    if value is not None and reference is not None:
        out["change_vs_reference"] = value - reference
    lookback = settings.since_lookback_days

    def since(key: str) -> str:
        start = out[key]
        if start is None or day is None or start >= day:
            return ""
        days = (day - start).days + 1
        if start <= day - dt.timedelta(days=lookback):
            return f" for more than {lookback} days"
        return f" since {start.isoformat()} ({days} days)"

    failed = sorted(set(failed_inputs))
    if spec is None:
        return {
            **out,
            "status": "not_evaluated",
            "reason": "no settings for this KPI in targets.yaml",
        }
    if failed:
        return {
            **out,
            "status": "not_evaluated",
            "reason": "input not usable for the day: " + ", ".join(failed),
        }
    if value is None:
        return {**out, "status": "not_evaluated", "reason": "no value (nothing to measure)"}
    min_n = spec.min_n_for(dimension)
    if n is not None and n < min_n:
        return {
            **out,
            "status": "not_evaluated",
            "reason": f"too few to judge (n={n:g}, needs {min_n:g})",
        }

    lo, hi = evidence_interval(spec, value, n, settings.z)
    lo, hi = spec.clip(lo), spec.clip(hi)
    if spec.evidence != "none":
        out["interval_low"], out["interval_high"] = lo, hi
    higher = spec.direction == HIGHER
    # the most favourable reading the evidence allows, and the least favourable
    kind = spec.observation_word
    evidence_note = (
        f" ({settings.confidence:.0%} interval {spec.fmt_range(lo, hi)} on {n:g} {kind})"
        if spec.evidence != "none" and n is not None
        else ""
    )
    favourable = hi if higher else lo
    reasons = []
    noted = False  # the evidence is quoted once

    def evidence() -> str:
        nonlocal noted
        if noted:
            return ""
        noted = True
        return evidence_note

    status = "ok"

    if target is not None:
        past = value < target if higher else value > target
        word = "below" if higher else "above"
        if past:
            surely = favourable < target if higher else favourable > target
            if surely:
                out["target_breached"] = True
                status = "breach"
                reasons.append(
                    f"{word} target {spec.fmt(target, True)}{since('past_target_since')}"
                    f"{evidence()}"
                )
            else:
                status = "warn"
                reasons.append(
                    f"{word} target {spec.fmt(target, True)}{since('past_target_since')} "
                    f"but not significantly{evidence()}"
                )
        elif warn_margin and (
            value < target + warn_margin if higher else value > target - warn_margin
        ):
            status = "warn"
            reasons.append(f"within {spec.fmt_change(warn_margin).lstrip('+')} of target")

    low, high = finite_or_none(out["baseline_low"]), finite_or_none(out["baseline_high"])
    if baseline is None:
        reasons.append(
            f"no baseline yet ({out['baseline_days']} of {settings.min_history_days} days of history)"
        )
    elif low is not None and high is not None:
        band = spec.fmt_range(low, high)
        worse = value < low if higher else value > high
        better = value > high if higher else value < low
        if worse:
            # the most favourable reading the evidence allows is out of the band too
            beyond = favourable < low if higher else favourable > high
            if beyond:
                out["unusual_move"] = True
                if status == "ok":
                    status = "warn"
                reasons.append(
                    f"{'below' if higher else 'above'} its normal band {band} "
                    f"({spec.fmt_change(value - baseline)} vs baseline {spec.fmt(baseline)})"
                    f"{since('outside_band_since')}"
                )
            else:
                reasons.append(f"outside its normal band {band} but not significantly{evidence()}")
        elif better:
            reasons.append(f"better than its normal band {band}")

    # the slow move: against the level of 8 to 12 weeks ago, which a fall of weeks has not
    # dragged along as it drags the 28-day baseline. The recent level (the baseline) must
    # have left that band too, so that one noisy day of a small group is not a "fall"
    r_low, r_high = out["reference_low"], out["reference_high"]
    if reference is not None and r_low is not None and r_high is not None:
        worse = value < r_low if higher else value > r_high
        beyond = favourable < r_low if higher else favourable > r_high
        level_moved = baseline is not None and (baseline < r_low if higher else baseline > r_high)
        if worse and beyond and level_moved:
            out["slow_move"] = True
            if status == "ok":
                status = "warn"
            weeks = settings.reference_lag_days // 7
            span = (settings.reference_lag_days + settings.baseline_days) // 7
            reasons.append(
                f"{'down' if higher else 'up'} {spec.fmt_change(value - reference).lstrip('+−')} "
                f"from {spec.fmt(reference)} {weeks} to {span} weeks ago "
                f"(its band then {spec.fmt_range(r_low, r_high)})"
            )

    out["flagged"] = bool(out["target_breached"] or out["unusual_move"] or out["slow_move"])
    return {
        **out,
        "status": status,
        "reason": "; ".join(reasons) or "within target and normal band",
    }
