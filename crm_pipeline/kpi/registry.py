"""The KPI registry in Python: what a KPI is (`KpiSpec`) and how its description is read.

Every KPI is described once, in include/config/targets.yaml under `kpis:` (the file a
manager edits): its label, what its n counts (`n_label`), unit, range, direction, evidence
kind and minimum n, the source tables it is computed from (`inputs`), whether it is one of
the plan's headline KPIs, and its dated targets. This module is the one Python reader of
that description: `describe` checks one KPI's entry and makes it a `KpiSpec`, which the
evaluation (crm_pipeline.kpi.evaluate, .judge), the alert state and the alert email
(crm_pipeline.alerts) use; none of them names a KPI. What a KPI's targets are on a day is
read by crm_pipeline.kpi.targets.

Where else a KPI is named, and why (docs/kpis.md, "Adding a KPI"): its computation in
include/sql/marts/kpi_daily.sql, its alert rule in include/config/alerts.yaml, its
definition in docs/kpis.md; tests/unit/test_kpi_registry.py checks that those agree with
targets.yaml. Grain: one KPI.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.format import format_change, format_value
from crm_pipeline.source_schema import SOURCE_TABLES

HIGHER = "higher_is_better"
LOWER = "lower_is_better"
EVIDENCE_KINDS = ("none", "proportion", "nps")

# The breakdowns add their own inputs: a tier or segment comes from the orders, a region
# from the customer record, a channel from the order.
DIMENSION_INPUTS: dict[str, tuple[str, ...]] = {
    "all": (),
    "tier": ("orders",),
    "segment": ("orders",),
    "region": ("customers",),
    "channel": ("orders",),
}


@dataclass(frozen=True)
class TargetVersion:
    """One dated target of a KPI: in force from `effective_from` until the next one."""

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
    """One KPI as targets.yaml describes it, with its dated targets."""

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

    @property
    def observation_word(self) -> str:
        """What one observation behind an evidence interval is, in a reason: 'responses'
        for a KPI computed from the surveys alone (csat, nps), else 'observations'."""
        return "responses" if tuple(self.inputs) == ("surveys",) else "observations"

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


def describe(kpi: str, spec: Mapping[str, Any]) -> KpiSpec:
    """One KPI's entry of targets.yaml `kpis:` as a KpiSpec, checked; without its dated
    targets (crm_pipeline.kpi.targets reads those) and its currency (the file's)."""
    direction = spec.get("direction")
    if direction not in (HIGHER, LOWER):
        raise ConfigError(
            f"targets: {kpi}: direction must be {HIGHER} or {LOWER}, not {direction!r}"
        )
    evidence = spec.get("evidence", "none")
    if evidence not in EVIDENCE_KINDS:
        raise ConfigError(f"targets: {kpi}: evidence must be none, proportion or nps")
    unit = str(spec.get("unit", "number"))
    valid_range = UNIT_RANGES.get(unit, (None, None))
    if "range" in spec:
        bounds = spec["range"]
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise ConfigError(f"targets: {kpi}: range must be [low, high] (null: unbounded)")
        valid_range = (opt_float(bounds[0]), opt_float(bounds[1]))
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
        valid_range=valid_range,
        min_n_by_dimension={str(k): float(v) for k, v in by_dimension.items()},
        headline=bool(spec.get("headline", False)),
        n_label=str(spec.get("n_label") or "observations"),
        inputs=tuple(inputs),
    )


def opt_float(v: Any) -> float | None:
    """None stays None, anything else a float (a YAML number or null)."""
    return None if v is None else float(v)
