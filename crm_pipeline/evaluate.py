"""KPI targets and `marts.kpi_evaluation`: is each KPI where it should be, and is it normal?

For every row of `marts.kpi_daily` on a day d (one KPI, one dimension value), this module
answers two questions and writes the answers to `marts.kpi_evaluation`:

* **Against its target** (include/config/targets.yaml, with effective dates, so a backfill
  of a past day uses the targets then in force; optionally per dimension value).
  `breach` when the KPI is on the wrong side of its target, `warn` when it is within the
  warn margin of it.
* **Against its own recent level** (the baseline): the median of the KPI's previous
  `baseline_days` daily values (d excluded), with a normal band of
  median +/- k * 1.4826 * MAD (a robust standard deviation, so one bad day in the window
  does not widen the band), never narrower than the KPI's `min_band_width`. Leaving the
  band in the bad direction is an `unusual_move`.

Share-like KPIs are judged by the evidence behind them (`evidence` in targets.yaml), so
ten survey responses do not trigger what a thousand would: the one-sided interval at
`confidence` around the day's value (Wilson score interval for a share such as csat or
churn; for NPS a normal interval with the variance bound (1 - nps^2) / n, which holds
whatever the promoter and detractor shares are) must lie entirely on the wrong side of
the target for a breach, and beyond the baseline for an unusual move. A value past the
target without that evidence is only `warn`, with the reason saying so.

A KPI whose input source tables failed validation or are stale for d (ops.table_status,
crm_pipeline.validate) is `not_evaluated`, never an alarm; so is a KPI with no value or
with fewer than `min_n` observations behind it.

`flagged` = target breached or unusual move: what alert rules (crm_pipeline.alerts) fire on.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.config import config_path, read_yaml
from crm_pipeline.errors import ConfigError
from crm_pipeline.source_schema import SOURCE_TABLES
from crm_pipeline.values import as_date, date_or_none, finite_or_none
from crm_pipeline.warehouse import Warehouse, tables
from crm_pipeline.warehouse.frames import read_rows

log = logging.getLogger(__name__)

TARGETS_FILE = config_path("targets")
EVALUATION_TABLE = tables.KPI_EVALUATION.name
HIGHER = "higher_is_better"
LOWER = "lower_is_better"
STATUSES = ("ok", "warn", "breach", "not_evaluated")

# The breakdowns add their own inputs: a tier or segment comes from the orders, a region
# from the customer record, a channel from the order.
DIMENSION_INPUTS: dict[str, tuple[str, ...]] = {
    "all": (),
    "tier": ("orders",),
    "segment": ("orders",),
    "region": ("customers",),
    "channel": ("orders",),
}
UNUSABLE_STATUSES = ("failed", "stale")  # 'quarantined' = bad rows held aside, table usable

EVALUATION_COLUMNS = tables.KPI_EVALUATION.columns


# -- configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class TargetVersion:
    effective_from: dt.date
    target: float | None
    warn_margin: float = 0.0
    # (dimension, dimension_value) -> (target, warn_margin)
    overrides: Mapping[tuple[str, str], tuple[float | None, float]] = field(default_factory=dict)


# The values a KPI can take, by unit, unless targets.yaml gives a `range`: a normal band or
# an evidence interval is never drawn outside them (no "churn between -0.9% and 11.2%").
UNIT_RANGES: dict[str, tuple[float | None, float | None]] = {
    "share": (0.0, 1.0),
    "percent": (0.0, 100.0),
    "score": (-100.0, 100.0),
    "count": (0.0, None),
    "hours": (0.0, None),
}
# Fewer observations than this behind a share or an NPS and it is not judged at all, unless
# targets.yaml sets `min_n`: 30 is the usual floor for a survey result (below it a Wilson
# interval at 95% is wider than +/-15 points: a single response says nothing).
DEFAULT_MIN_N = {"proportion": 30.0, "nps": 30.0, "none": 0.0}


@dataclass(frozen=True)
class KpiSpec:
    kpi: str
    direction: str
    unit: str = "number"  # share | percent | score | count | money | hours | rate
    label: str = ""
    evidence: str = "none"  # none | proportion | nps
    min_n: float = 0.0
    min_band_width: float = 0.0
    versions: tuple[TargetVersion, ...] = ()
    valid_range: tuple[float | None, float | None] = (None, None)
    # a different minimum for some breakdowns, for example {"segment": 50}
    min_n_by_dimension: Mapping[str, float] = field(default_factory=dict)
    # one of the plan's headline KPIs (customers staying, buying, satisfied): in the email
    # it comes before the operational ones of the same severity
    headline: bool = False
    # the business's currency (targets.yaml `currency`), shown on money
    currency: str = ""
    # what the n behind a value counts, in words ("responses")
    n_label: str = "observations"
    # the source tables it is computed from (docs/kpis.md, "Definitions"): if one failed
    # validation or is stale for the day, the KPI is not evaluated. A KPI that does not say
    # is taken to read every source table (never judged on a table that failed)
    inputs: tuple[str, ...] = tuple(SOURCE_TABLES)

    @property
    def weighted(self) -> bool:
        """A share of a count (judged on evidence): its overall value is the n-weighted mean
        of its groups', so each group's contribution to an overall change can be shown."""
        return self.evidence != "none"

    def min_n_for(self, dimension: str) -> float:
        return self.min_n_by_dimension.get(dimension, self.min_n)

    def clip(self, v: float | None) -> float | None:
        """v moved inside the KPI's range (None stays None)."""
        if v is None:
            return None
        lo, hi = self.valid_range
        if lo is not None and v < lo:
            return lo
        if hi is not None and v > hi:
            return hi
        return v

    def fmt_range(self, lo: float | None, hi: float | None) -> str:
        """A range as words: '3.5% to 5.5%', '−32.6 to −11.0' (never '-32.6–-11.0')."""
        return f"{self.fmt(lo)} to {self.fmt(hi)}".replace("-", "−")

    @property
    def title(self) -> str:
        return self.label or self.kpi

    def target_for(
        self, day: dt.date, dimension: str = "all", value: str = "all"
    ) -> tuple[float | None, float]:
        """The (target, warn margin) in force on `day` for one dimension value."""
        current = None
        for version in self.versions:
            if version.effective_from <= day:
                current = version
        if current is None:
            return None, 0.0
        return current.overrides.get((dimension, value), (current.target, current.warn_margin))

    # formatting, shared with the alert email
    def fmt(self, v: float | None, compact: bool = False) -> str:
        return format_value(self.unit, v, compact, self.currency)

    def fmt_change(self, v: float | None) -> str:
        return format_change(self.unit, v, self.currency)

    def op(self) -> str:
        return "≥" if self.direction == HIGHER else "≤"


@dataclass(frozen=True)
class EvaluationSettings:
    baseline_days: int = 28
    min_history_days: int = 14
    band_k: float = 3.0
    confidence: float = 0.95
    # the longer reference: the level of the baseline window this many days earlier (56:
    # the median of days d-84..d-57, "8 to 12 weeks ago"), so a fall the 28-day baseline
    # has followed down is still seen as a fall
    reference_lag_days: int = 56
    # how far back "past its target since" and "outside its band since" look
    since_lookback_days: int = 365

    @property
    def history_days(self) -> int:
        """Days of kpi_daily before the first evaluated day that an evaluation reads: every
        window a day's row rests on is complete, so a day evaluated alone and the same day
        inside a range give the same row."""
        return self.baseline_days + max(self.reference_lag_days, self.since_lookback_days)

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)


@dataclass(frozen=True)
class Targets:
    kpis: Mapping[str, KpiSpec]
    settings: EvaluationSettings = EvaluationSettings()
    currency: str = ""  # ISO code of the business's money (EUR): shown on money

    def spec(self, kpi: str) -> KpiSpec | None:
        return self.kpis.get(kpi)


def load_targets(source: str | Path | Mapping[str, Any] | Targets | None = None) -> Targets:
    """Targets from a YAML file (default include/config/targets.yaml, or $CRM_TARGETS_CONFIG)
    or a parsed mapping."""
    if isinstance(source, Targets):
        return source
    if source is None or isinstance(source, str | Path):
        raw = read_yaml("targets", source)
    else:
        raw = dict(source)
    ev = dict(raw.get("evaluation") or {})
    settings = EvaluationSettings(
        baseline_days=int(ev.get("baseline_days", 28)),
        min_history_days=int(ev.get("min_history_days", 14)),
        band_k=float(ev.get("band_k", 3.0)),
        confidence=float(ev.get("confidence", 0.95)),
        reference_lag_days=int(ev.get("reference_lag_days", 56)),
        since_lookback_days=int(ev.get("since_lookback_days", 365)),
    )
    if (
        not 0.5 < settings.confidence < 1
        or settings.baseline_days < 1
        or settings.band_k <= 0
        or settings.reference_lag_days < settings.baseline_days
        or settings.since_lookback_days < 1
    ):
        raise ConfigError(
            f"targets: bad evaluation settings {ev!r} (reference_lag_days must be at least "
            "baseline_days, so that the reference does not overlap the baseline)"
        )
    currency = str(raw.get("currency") or "")
    kpis = {}
    for kpi, spec in (raw.get("kpis") or {}).items():
        kpis[kpi] = replace(_kpi_spec(kpi, spec or {}), currency=currency)
    return Targets(kpis=kpis, settings=settings, currency=currency)


def _kpi_spec(kpi: str, spec: Mapping[str, Any]) -> KpiSpec:
    direction = spec.get("direction")
    if direction not in (HIGHER, LOWER):
        raise ConfigError(
            f"targets: {kpi}: direction must be {HIGHER} or {LOWER}, not {direction!r}"
        )
    evidence = spec.get("evidence", "none")
    if evidence not in ("none", "proportion", "nps"):
        raise ConfigError(f"targets: {kpi}: evidence must be none, proportion or nps")
    versions = []
    for item in spec.get("targets") or []:
        eff = item.get("effective_from")
        if isinstance(eff, str):
            eff = dt.date.fromisoformat(eff)
        if not isinstance(eff, dt.date):
            raise ConfigError(f"targets: {kpi}: every target needs an effective_from date")
        margin = float(item.get("warn_margin") or 0.0)
        overrides = {}
        for dim, values in (item.get("by_dimension") or {}).items():
            for dim_value, override in (values or {}).items():
                if isinstance(override, Mapping):
                    overrides[(str(dim), str(dim_value))] = (
                        _opt_float(override.get("target")),
                        float(override.get("warn_margin", margin) or 0.0),
                    )
                else:
                    overrides[(str(dim), str(dim_value))] = (_opt_float(override), margin)
        versions.append(TargetVersion(eff, _opt_float(item.get("target")), margin, overrides))
    versions.sort(key=lambda v: v.effective_from)
    if len({v.effective_from for v in versions}) != len(versions):
        raise ConfigError(f"targets: {kpi}: two targets take effect on the same day")
    unit = str(spec.get("unit", "number"))
    valid_range = UNIT_RANGES.get(unit, (None, None))
    if "range" in spec:
        bounds = spec["range"]
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise ConfigError(f"targets: {kpi}: range must be [low, high] (null: unbounded)")
        valid_range = (_opt_float(bounds[0]), _opt_float(bounds[1]))
        if None not in valid_range and valid_range[0] >= valid_range[1]:
            raise ConfigError(f"targets: {kpi}: range {bounds} is empty")
    inputs = spec.get("inputs", list(SOURCE_TABLES))
    unknown = sorted(set(inputs or []) - set(SOURCE_TABLES))
    if not isinstance(inputs, list | tuple) or unknown:
        raise ConfigError(
            f"targets: {kpi}: inputs must list source tables ({', '.join(SOURCE_TABLES)})"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    min_n = spec.get("min_n")
    by_dimension = spec.get("min_n_by_dimension") or {}
    if not isinstance(by_dimension, Mapping):
        raise ConfigError(f"targets: {kpi}: min_n_by_dimension must map a dimension to a number")
    return KpiSpec(
        kpi=kpi,
        direction=direction,
        unit=unit,
        label=str(spec.get("label", "")),
        evidence=evidence,
        min_n=DEFAULT_MIN_N[evidence] if min_n is None else float(min_n),
        min_band_width=float(spec.get("min_band_width", 0) or 0),
        versions=tuple(versions),
        valid_range=valid_range,
        min_n_by_dimension={str(k): float(v) for k, v in by_dimension.items()},
        headline=bool(spec.get("headline", False)),
        n_label=str(spec.get("n_label") or "observations"),
        inputs=tuple(inputs),
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


# -- formatting -------------------------------------------------------------------------
def _num(v: float, decimals: int, compact: bool) -> str:
    text = f"{v:,.{decimals}f}"
    if compact and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}


def money_text(v: float, currency: str = "", decimals: int = 2) -> str:
    """'€1,234.56', 'CHF 1,234.56', or the bare number without a currency."""
    text = f"{abs(v):,.{decimals}f}"
    sign = "−" if v < 0 and any(ch in "123456789" for ch in text) else ""
    if not currency:
        return sign + text
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency.upper()} {text}"


def format_value(unit: str, v: float | None, compact: bool = False, currency: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "money" and currency:
        return money_text(v, currency, 2)
    if unit == "share":
        return _num(100 * v, 1, compact) + "%"
    if unit == "percent":
        return _num(v, 1, compact) + "%"
    if unit == "score":
        return _num(v, 1, compact)
    if unit == "count":
        return _num(v, 0, compact)
    if unit == "money":
        return _num(v, 2, compact)
    if unit == "hours":
        return _num(v, 1, compact) + " h"
    return _num(v, 2, compact)


def format_change(unit: str, v: float | None, currency: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    if unit == "money" and currency:
        text = money_text(a, currency, 2)
        if not any(ch in "123456789" for ch in text):
            return text
        return ("+" if v > 0 else "−") + text
    if unit == "share":
        text = f"{100 * a:.1f} pts"
    elif unit == "percent":
        text = f"{a:.1f} pts"
    elif unit == "score":
        text = f"{a:.1f}"
    elif unit == "count":
        text = f"{a:,.0f}"
    elif unit == "hours":
        text = f"{a:.1f} h"
    else:
        text = f"{a:,.2f}"
    if not any(ch in "123456789" for ch in text):
        return text  # rounds to zero: no sign
    return ("+" if v > 0 else "−") + text


# -- statistics -------------------------------------------------------------------------
def wilson_interval(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a share p observed on n trials (z: one side's quantile)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(p, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def nps_interval(nps: float, n: float, z: float) -> tuple[float, float]:
    """Normal interval for NPS (-100..100) on n responses, with the conservative variance.

    Per response the score is +1 (promoter), 0 or -1 (detractor): its variance is
    (P + D) - (P - D)^2 <= 1 - nps^2, so only the net share is needed and the interval
    is never too narrow.
    """
    if n <= 0:
        return -100.0, 100.0
    d = min(max(nps / 100.0, -1.0), 1.0)
    se = math.sqrt(max(1.0 - d * d, 0.0) / n)
    # a net share at +/-1 has no spread in this bound: fall back to the Wilson width of
    # the promoter (or detractor) share so a unanimous handful is still uncertain
    if se == 0.0:
        lo, hi = wilson_interval((d + 1) / 2, n, z)
        return 100 * (2 * lo - 1), 100 * (2 * hi - 1)
    return max(-100.0, 100 * (d - z * se)), min(100.0, 100 * (d + z * se))


def evidence_interval(
    spec: KpiSpec, value: float, n: float | None, z: float
) -> tuple[float, float]:
    """The one-sided-at-each-end interval around the value, in the KPI's own units."""
    if spec.evidence == "none" or n is None or n <= 0:
        return value, value
    if spec.evidence == "nps":
        return nps_interval(value, n, z)
    scale = 100.0 if spec.unit == "percent" else 1.0
    lo, hi = wilson_interval(value / scale, n, z)
    # a share above 1 (retention can be, with reactivations) keeps its own point
    return min(lo * scale, value), max(hi * scale, value)


def baseline_frame(
    series: pd.Series,
    settings: EvaluationSettings,
    min_width: float = 0.0,
    valid_range: tuple[float | None, float | None] = (None, None),
) -> pd.DataFrame:
    """Baseline, band and history count for every day of a daily series (d excluded).

    `series` is indexed by consecutive days (missing days NaN). For day d the window is
    the `baseline_days` days before it; the baseline needs `min_history_days` values. The
    band is clipped to the KPI's `valid_range` (a share's band ends at 0% and 100%).
    """
    lo, hi = valid_range
    bands = _bands(
        series.astype(float).to_numpy()[None, :],
        settings,
        np.array([[min_width]]),
        np.array([[-np.inf if lo is None else lo]]),
        np.array([[np.inf if hi is None else hi]]),
    )
    return pd.DataFrame(
        {
            "baseline": bands["baseline"][0],
            "baseline_low": bands["baseline_low"][0],
            "baseline_high": bands["baseline_high"][0],
            "baseline_days": bands["baseline_days"][0].astype(int),
        },
        index=series.index,
    )


def _bands(
    values: np.ndarray,
    settings: EvaluationSettings,
    min_width: np.ndarray,
    range_low: np.ndarray,
    range_high: np.ndarray,
) -> dict[str, np.ndarray]:
    """baseline_frame for many series at once: `values` is (series, days), the others
    (series, 1). Every day's window of every series is one view (series x days x window):
    an evaluation reads a year of history for "since when" and stays a matter of seconds."""
    k = settings.baseline_days
    n_series, n_days = values.shape
    prev = np.full((n_series, n_days + k - 1), np.nan)
    prev[:, k:] = values[:, : n_days - 1] if n_days > 1 else prev[:, k:]
    windows = np.lib.stride_tricks.sliding_window_view(prev, k, axis=1)
    count = np.sum(~np.isnan(windows), axis=2)
    median = _medians(windows, count)
    mad = _medians(np.abs(windows - median[..., None]), count)
    half = np.maximum(settings.band_k * 1.4826 * mad, min_width)
    low = np.maximum(median - half, range_low)
    high = np.minimum(median + half, range_high)
    enough = count >= settings.min_history_days
    return {
        "baseline": np.where(enough, median, np.nan),
        "baseline_low": np.where(enough, low, np.nan),
        "baseline_high": np.where(enough, high, np.nan),
        "baseline_days": count,
    }


def _medians(windows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The median of the non-NaN values along the last axis (NaN where there are none):
    sorted with NaNs last, the middle value or the mean of the middle two."""
    if windows.size == 0:
        return np.full(windows.shape[:-1], np.nan)
    ordered = np.sort(windows, axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[..., None], -1)[..., 0]
    hi_at = np.minimum(count // 2, windows.shape[-1] - 1)
    hi = np.take_along_axis(ordered, hi_at[..., None], -1)[..., 0]
    return np.where(count > 0, (lo + hi) / 2, np.nan)


# -- judging one value -------------------------------------------------------------------
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
    kind = "responses" if spec.kpi in ("csat", "nps") else "observations"
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


# -- reading inputs ----------------------------------------------------------------------
def read_kpi_daily(
    wh: Warehouse,
    date_from: dt.date,
    date_to: dt.date,
    kpis: Iterable[str] | None = None,
    conn: sa.Connection | None = None,
) -> pd.DataFrame:
    """kpi_daily rows between two days (inclusive), optionally for some KPIs only."""
    cols = "as_of_date, kpi, dimension, dimension_value, value, numerator, denominator"
    sql = wh.render(
        f"select {cols} from marts.kpi_daily where as_of_date between {{{{ lo }}}} and {{{{ hi }}}}",
        {"lo": date_from, "hi": date_to},
    )
    if kpis is not None:
        names = [k for k in kpis]
        sql += " and kpi in (" + ", ".join(wh.render("{{ k }}", {"k": k}) for k in names) + ")"
    if conn is None:
        with wh.begin() as own:
            return read_kpi_daily(wh, date_from, date_to, kpis, own)
    if not wh.table_exists(conn, "marts.kpi_daily"):
        return pd.DataFrame(columns=cols.split(", "))
    return wh.read_frame(conn, sql)  # the engine's columnar reader: a year of history


def _source_name(table_name: str) -> str:
    name = str(table_name).strip().lower().split(".")[-1]
    return name[4:] if name.startswith("stg_") else name


def unusable_tables(
    wh: Warehouse, date_from: dt.date, date_to: dt.date
) -> dict[dt.date, dict[str, str]]:
    """Source tables that failed validation or are stale, per day: {day: {table: status}}.

    Read from ops.table_status (written by crm_pipeline.validate; absent table: nothing
    failed), with the same test as `validate.failed_tables` (status failed or stale). The
    table is read directly rather than through that function so this task does not import
    the validation stack (Great Expectations, ~10 s) nor create its tables. Names are
    reduced to the source table ('staging.stg_surveys' -> 'surveys').
    """
    out: dict[dt.date, dict[str, str]] = {d: {} for d in pd.date_range(date_from, date_to).date}
    with wh.begin() as conn:
        if not wh.table_exists(conn, "ops.table_status"):
            return out
        statuses = ", ".join(f"'{s}'" for s in UNUSABLE_STATUSES)
        frame = read_rows(
            conn,
            wh.render(
                "select as_of_date, table_name, lower(status) as status from ops.table_status "
                f"where as_of_date between {{{{ lo }}}} and {{{{ hi }}}} and lower(status) in ({statuses})",
                {"lo": date_from, "hi": date_to},
            ),
        )
    for d, name, status in frame.itertuples(index=False):
        out.setdefault(as_date(d), {})[_source_name(name)] = status
    return out


# -- evaluation --------------------------------------------------------------------------
def compute_evaluation(
    daily: pd.DataFrame,
    days: Iterable[dt.date],
    targets: Targets,
    unusable: Mapping[dt.date, Mapping[str, str]] | None = None,
    run_id: str = "",
) -> pd.DataFrame:
    """kpi_evaluation rows for the given days from kpi_daily rows (with their history).

    Every (KPI, dimension, value) series is a row of one (series x days) matrix over the
    days read, so the bands, the reference and "since when" are computed for all of them
    at once; only the judging of each evaluated row is per row.
    """
    days = sorted(set(days))
    unusable = unusable or {}
    settings = targets.settings
    rows: list[dict[str, Any]] = []
    if daily.empty or not days:
        return _evaluation_frame(rows)
    calendar = pd.date_range(
        min(days) - dt.timedelta(days=settings.history_days), max(days), freq="D"
    )
    daily = daily.copy()
    daily["as_of_date"] = pd.to_datetime(daily["as_of_date"].map(as_date))
    daily = daily[(daily["as_of_date"] >= calendar[0]) & (daily["as_of_date"] <= calendar[-1])]
    daily = daily.drop_duplicates(
        ["kpi", "dimension", "dimension_value", "as_of_date"], keep="last"
    )
    if daily.empty:
        return _evaluation_frame(rows)
    grouped = daily.groupby(["kpi", "dimension", "dimension_value"], sort=True)
    keys: list[tuple[str, str, str]] = list(grouped.size().index)
    code = grouped.ngroup().to_numpy()
    pos = (daily["as_of_date"] - calendar[0]).dt.days.to_numpy()
    shape = (len(keys), len(calendar))
    values, ns, present = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, bool)
    values[code, pos] = pd.to_numeric(daily["value"], errors="coerce").to_numpy(float)
    ns[code, pos] = pd.to_numeric(daily["denominator"], errors="coerce").to_numpy(float)
    present[code, pos] = True
    specs = [targets.spec(kpi) for kpi, _, _ in keys]
    history = _history(values, specs, keys, settings, calendar)
    wanted = [(pd.Timestamp(d) - calendar[0]).days for d in days]

    def at(name: str, g: int, p: int) -> Any:
        v = history[name][g, p]
        return None if isinstance(v, float) and math.isnan(v) else v

    for g, (kpi, dimension, dim_value) in enumerate(keys):
        spec = specs[g]
        inputs = set(spec.inputs if spec else ()) | set(DIMENSION_INPUTS.get(dimension, ()))
        for p, day in zip(wanted, days, strict=True):
            if not present[g, p]:
                continue
            base = {name: at(name, g, p) for name in history}
            for since in ("past_target_since", "outside_band_since"):
                offset = base[since]
                base[since] = (
                    None if offset is None or offset < 0 else (calendar[int(offset)].date())
                )
            target, margin = spec.target_for(day, dimension, dim_value) if spec else (None, 0.0)
            bad = unusable.get(day, {})
            verdict = judge(
                spec,
                finite_or_none(values[g, p]),
                finite_or_none(ns[g, p]),
                target,
                margin,
                base,
                settings,
                [f"{t} {bad[t]}" for t in sorted(inputs & set(bad))],
                dimension,
                day,
            )
            rows.append(
                {
                    "as_of_date": day,
                    "kpi": kpi,
                    "dimension": dimension,
                    "dimension_value": dim_value,
                    "value": finite_or_none(values[g, p]),
                    "n": finite_or_none(ns[g, p]),
                    **verdict,
                    "run_id": run_id,
                }
            )
    return _evaluation_frame(rows)


def _history(
    values: np.ndarray,
    specs: list[KpiSpec | None],
    keys: list[tuple[str, str, str]],
    settings: EvaluationSettings,
    calendar: pd.DatetimeIndex,
) -> dict[str, np.ndarray]:
    """Per series and day: the baseline and its band, the reference of 8 to 12 weeks
    before, and since when (as a day's position, -1: not) the value has been past its
    target or out of its band the bad way (point values; at most `since_lookback_days`
    back, so that a day evaluated alone and inside a range read the same)."""

    def column(get: Callable[[KpiSpec], float], default: float) -> np.ndarray:
        return np.array([[default if s is None else get(s)] for s in specs], dtype=float)

    width = column(lambda s: s.min_band_width, 0.0)
    low_end = column(lambda s: -np.inf if s.valid_range[0] is None else s.valid_range[0], -np.inf)
    high_end = column(lambda s: np.inf if s.valid_range[1] is None else s.valid_range[1], np.inf)
    out = _bands(values, settings, width, low_end, high_end)
    lag = settings.reference_lag_days
    shifted = np.full(values.shape, np.nan)
    if lag < values.shape[1]:
        shifted[:, lag:] = values[:, : values.shape[1] - lag]
    ref = _bands(shifted, settings, width, low_end, high_end)
    out["reference"] = ref["baseline"]
    out["reference_low"] = ref["baseline_low"]
    out["reference_high"] = ref["baseline_high"]
    goals = (
        np.vstack(
            [
                _targets_by_day(s, calendar, dim, value)
                if s is not None
                else np.full(len(calendar), np.nan)
                for s, (_, dim, value) in zip(specs, keys, strict=True)
            ]
        )
        if specs
        else np.empty(values.shape)
    )
    higher = np.array([[s is not None and s.direction == HIGHER] for s in specs])
    known = np.array([[s is not None] for s in specs])
    with np.errstate(invalid="ignore"):
        past = known & np.where(higher, values < goals, values > goals)
        outside = known & np.where(
            higher, values < out["baseline_low"], values > out["baseline_high"]
        )
    positions = np.arange(values.shape[1])
    floor = positions - settings.since_lookback_days
    for name, mask in (("past_target_since", past), ("outside_band_since", outside)):
        last_off = np.maximum.accumulate(np.where(mask, -1, positions), axis=1)
        start = np.maximum(last_off + 1, floor)
        out[name] = np.where(mask, start, -1).astype(float)
    return out


def _targets_by_day(
    spec: KpiSpec, days: pd.DatetimeIndex, dimension: str, dim_value: str
) -> np.ndarray:
    """The target in force on each day (NaN where none), as KpiSpec.target_for gives it."""
    out = np.full(len(days), np.nan)
    for version in spec.versions:  # sorted by effective_from: later ones overwrite
        target, _ = version.overrides.get((dimension, dim_value), (version.target, 0.0))
        out[days >= pd.Timestamp(version.effective_from)] = np.nan if target is None else target
    return out


def _evaluation_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))
    for col, kind in EVALUATION_COLUMNS.items():
        if kind == "double precision":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        elif kind == "date":
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        elif kind == "boolean":
            frame[col] = frame[col].fillna(False).astype(bool)
        elif kind == "integer":
            frame[col] = frame[col].fillna(0).astype("int64")
        elif kind == "varchar":
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def ensure_evaluation_table(wh: Warehouse, conn: sa.Connection) -> None:
    wh.ensure(conn, tables.KPI_EVALUATION)


def write_evaluation(
    wh: Warehouse, frame: pd.DataFrame, date_from: dt.date, date_to: dt.date
) -> int:
    """Delete-insert of the days' partition in one transaction (a rerun gives the same rows)."""
    with wh.begin() as conn:
        ensure_evaluation_table(wh, conn)
        wh.execute(
            conn,
            f"delete from {EVALUATION_TABLE} where as_of_date between {{{{ lo }}}} and {{{{ hi }}}}",
            {"lo": date_from, "hi": date_to},
        )
        return wh.bulk_load(conn, EVALUATION_TABLE, frame)


def evaluate_range(
    wh: Warehouse,
    date_from: dt.date,
    date_to: dt.date,
    run_id: str,
    targets: str | Path | Mapping[str, Any] | Targets | None = None,
) -> dict[str, Any]:
    """Evaluate every day from date_from to date_to (inclusive) in one read and one write."""
    spec = load_targets(targets)
    history_from = date_from - dt.timedelta(days=spec.settings.history_days)
    daily = read_kpi_daily(wh, history_from, date_to)
    days = list(pd.date_range(date_from, date_to).date)
    unusable = unusable_tables(wh, date_from, date_to)
    frame = compute_evaluation(daily, days, spec, unusable, run_id)
    written = write_evaluation(wh, frame, date_from, date_to)
    summary = {
        "date_from": str(date_from),
        "date_to": str(date_to),
        "rows": written,
        **{s: int((frame["status"] == s).sum()) for s in STATUSES},
        "flagged": int(frame["flagged"].sum()),
    }
    if daily.empty:
        log.warning(
            "kpi_evaluation: marts.kpi_daily has no rows up to %s: nothing evaluated", date_to
        )
    log.info("kpi_evaluation %s..%s: %s", date_from, date_to, summary)
    return summary


def evaluate_day(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    targets: str | Path | Mapping[str, Any] | Targets | None = None,
) -> dict[str, Any]:
    """Evaluate one day's KPIs into marts.kpi_evaluation; returns counts by status.

    The summary also lists the flagged rows ("kpi dimension=value: reason"), for the log.
    """
    summary = evaluate_range(wh, as_of_date, as_of_date, run_id, targets)
    summary["as_of_date"] = str(as_of_date)
    with wh.begin() as conn:
        flagged = read_rows(
            conn,
            wh.render(
                f"select kpi, dimension, dimension_value, status, reason from {EVALUATION_TABLE} "
                "where as_of_date = {{ d }} and flagged order by kpi, dimension, dimension_value",
                {"d": as_of_date},
            ),
        )
    summary["flagged_rows"] = [
        f"{r.kpi} {r.dimension}={r.dimension_value} {r.status}: {r.reason}"
        for r in flagged.itertuples(index=False)
    ]
    return summary
