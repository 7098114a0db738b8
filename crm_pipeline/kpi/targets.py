"""targets.yaml read whole: every KPI's dated targets and the evaluation's settings.

A KPI's target carries the day it took effect (`effective_from`), so a backfill of a past
day is judged against the targets then in force, optionally per dimension value. This
module reads the file (`load_targets`: default include/config/targets.yaml, or
$CRM_TARGETS_CONFIG / $CRM_CONFIG_DIR through crm_pipeline.config), its `evaluation:`
settings and each KPI's `targets:` list; each KPI's description is read by
crm_pipeline.kpi.registry. Grain: the whole file, one `Targets` per evaluation run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

from crm_pipeline.config import config_path, read_settings
from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.registry import KpiSpec, TargetVersion, describe, opt_float

TARGETS_FILE = config_path("targets")


@dataclass(frozen=True)
class EvaluationSettings:
    """targets.yaml `evaluation:`: the baseline window, the band, the confidence."""

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
    """Every KPI's description and dated targets, and the evaluation's settings."""

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
    raw = read_settings("targets", source)
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
        spec = spec or {}
        kpis[kpi] = replace(
            describe(kpi, spec), versions=target_versions(kpi, spec), currency=currency
        )
    return Targets(kpis=kpis, settings=settings, currency=currency)


def target_versions(kpi: str, spec: Mapping[str, Any]) -> tuple[TargetVersion, ...]:
    """A KPI's `targets:` list, checked, oldest first."""
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
                        opt_float(override.get("target")),
                        float(override.get("warn_margin", margin) or 0.0),
                    )
                else:
                    overrides[(str(dim), str(dim_value))] = (opt_float(override), margin)
        versions.append(TargetVersion(eff, opt_float(item.get("target")), margin, overrides))
    versions.sort(key=lambda v: v.effective_from)
    if len({v.effective_from for v in versions}) != len(versions):
        raise ConfigError(f"targets: {kpi}: two targets take effect on the same day")
    return tuple(versions)
