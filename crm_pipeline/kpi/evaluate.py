"""The KPI evaluation stage: marts.kpi_daily in, marts.kpi_evaluation out, by day.

For every row of `marts.kpi_daily` on a day d (one KPI, one dimension value) the stage
answers two questions, against the KPI's target (include/config/targets.yaml, dated) and
against its own recent level (the baseline), and writes the answers to
`marts.kpi_evaluation`; how a value is judged is crm_pipeline.kpi.judge, the statistics
crm_pipeline.kpi.stats, the targets crm_pipeline.kpi.targets. Here: read (a year of
kpi_daily before the first day, and which source tables failed validation or are stale
for each day, from ops.table_status), compute (pure: every series' bands, reference and
"since when" at once, then each row judged), write (delete-insert of the days in one
transaction).

A KPI whose input source tables failed validation or are stale for d (ops.table_status,
crm_pipeline.quality) is `not_evaluated`, never an alarm; a breakdown adds its own inputs
(`DIMENSION_INPUTS`). Grain: one row per (as_of_date, kpi, dimension, dimension_value).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.kpi.judge import judge
from crm_pipeline.kpi.registry import DIMENSION_INPUTS, HIGHER, KpiSpec
from crm_pipeline.kpi.stats import baseline_bands
from crm_pipeline.kpi.targets import EvaluationSettings, Targets, load_targets
from crm_pipeline.values import as_date, finite_or_none
from crm_pipeline.warehouse import Warehouse, tables
from crm_pipeline.warehouse.frames import read_rows

log = logging.getLogger(__name__)

EVALUATION_TABLE = tables.KPI_EVALUATION.name
EVALUATION_COLUMNS = tables.KPI_EVALUATION.columns
STATUSES = ("ok", "warn", "breach", "not_evaluated")
UNUSABLE_STATUSES = ("failed", "stale")  # 'quarantined' = bad rows held aside, table usable


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

    Read from ops.table_status (written by crm_pipeline.quality; absent table: nothing
    failed), with the same test as `quality.outcome.failed_tables` (status failed or stale). The
    table is read directly rather than through that function so this task does not import
    the validation stack (Great Expectations, ~10 s) nor create its tables. Names are
    reduced to the source table ('staging.stg_surveys' -> 'surveys').
    """
    out: dict[dt.date, dict[str, str]] = {d: {} for d in pd.date_range(date_from, date_to).date}
    with wh.begin() as conn:
        if not wh.table_exists(conn, "ops.table_status"):
            return out
        frame = read_rows(
            conn,
            wh.render(
                "select as_of_date, table_name, lower(status) as status from ops.table_status "
                "where as_of_date between {{ lo }} and {{ hi }} and lower(status) in {{ statuses }}",
                {"lo": date_from, "hi": date_to, "statuses": tuple(UNUSABLE_STATUSES)},
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
    out = baseline_bands(values, settings, width, low_end, high_end)
    lag = settings.reference_lag_days
    shifted = np.full(values.shape, np.nan)
    if lag < values.shape[1]:
        shifted[:, lag:] = values[:, : values.shape[1] - lag]
    ref = baseline_bands(shifted, settings, width, low_end, high_end)
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
