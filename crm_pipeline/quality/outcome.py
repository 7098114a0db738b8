"""What validating a table concludes, and where that is recorded.

Why a module of its own: the stage's verdicts are read by people and by later stages (the
KPI evaluation skips the KPIs of a table that failed), so how they are worded and stored
sits in one place, apart from how the versions are read and judged.

Grain:

* a batch's and a table's status (`PASSED`, `QUARANTINED`, `FAILED`, `STALE`, `ACCEPTED`);
* `Failure`: one table-level failure (table, column, rule, rows, detail), and
  `table_failures`, the failures of a table from its suites' summed results and profile;
* `TableOutcome`: one table in one run, what the stage returns of it (`summary`);
* `record_outcome`: per table and run, one row per expectation in `ops.dq_results`, the
  day's row of `ops.table_status`, and a row per batch in `ops.validated_batches`;
* `failed_tables`: the tables whose data for a day did not pass.

The quarantine (the versions held, `quarantine.rows`) is `quality.quarantine`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.quality.rules import KIND_WORDS, ROW, TABLE
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse import tables as declared

if TYPE_CHECKING:
    from crm_pipeline.quality.gx import Agg

PASSED, QUARANTINED, FAILED, STALE, ACCEPTED = (
    "passed",
    "quarantined",
    "failed",
    "stale",
    "accepted",
)


def count_text(x: int | float) -> str:
    """A count for a message: 12,345."""
    return f"{int(x):,}"


@dataclass
class Failure:
    """One table-level failure: what `DataQualityError` names, one line of the failure mail."""

    table: str
    column: str
    rule: str
    rows: int
    detail: str

    def message(self) -> str:
        return (
            f"{self.table}.{self.column}: {self.detail} (rule: {self.rule}) - table-level failure"
        )


@dataclass
class TableOutcome:
    """One table in one run: versions read and held, releases, status, failures, batches."""

    table: str
    rows: int = 0
    quarantined: int = 0
    newly_quarantined: int = 0
    released: int = 0
    status: str = PASSED
    failures: list[Failure] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "quarantined": self.quarantined,
            "status": self.status,
            "newly_quarantined": self.newly_quarantined,
            "released": self.released,
            "batches": self.batches,
            "seconds": round(self.seconds, 2),
            "failures": [f.message() for f in self.failures],
        }


def table_failures(
    table: str,
    aggs: list[Agg],
    tab_aggs: list[Agg],
    missing: dict[str, int],
    extra: set[str],
    rows: int,
    profile: dict[str, Any],
) -> list[Failure]:
    """A table's failures: contract columns missing from the source, row-suite expectations
    that could not be evaluated or found values that do not parse, and failed table rules,
    each worded from the summed results (`aggs`, `tab_aggs`) and the table's profile."""
    out: list[Failure] = []
    for col, n in missing.items():
        hint = (
            f"; the source has new column(s) {', '.join(sorted(extra))} - renamed?" if extra else ""
        )
        out.append(
            Failure(
                table,
                col,
                "column_present",
                n,
                f"column missing from the source table ({count_text(n)} rows extracted without it{hint})",
            )
        )
    for agg in aggs:
        meta = agg.meta
        if agg.exception is not None:
            out.append(
                Failure(
                    table,
                    meta.get("column") or "*",
                    meta.get("rule", "?"),
                    rows,
                    f"expectation {agg.expectation.expectation_type} could not be "
                    f"evaluated on {count_text(rows)} rows: {agg.exception}",
                )
            )
        elif (
            meta.get("level") == TABLE
            and meta.get("rule", "").startswith("type_")
            and agg.unexpected_count
        ):
            kind = meta["rule"][len("type_") :]
            sample = ", ".join(repr(v) for v in list(dict.fromkeys(map(str, agg.partial)))[:3])
            out.append(
                Failure(
                    table,
                    meta["column"],
                    meta["rule"],
                    agg.unexpected_count,
                    f"{count_text(agg.unexpected_count)} of {count_text(agg.element_count)} rows do not "
                    f"parse as {KIND_WORDS[kind]} (e.g. {sample})",
                )
            )
    values = profile["values"]
    seen: set[str] = set()
    for agg in tab_aggs:
        rule = agg.meta.get("rule", "?")
        if agg.success or rule in seen:
            continue
        seen.add(rule)
        if agg.exception is not None:
            detail, n = f"could not be evaluated: {agg.exception}", rows
        elif rule == "table_not_empty":
            n = values["rows_read"] or 0
            detail = (
                f"the source table returned {count_text(n)} rows (not even the row at the watermark) "
                f"and raw holds {count_text(values['raw_rows'])}"
            )
        elif rule == "empty_extract":
            n = values["versions_updated_on_day"] or 0
            detail = (
                f"{count_text(n)} rows updated on {profile['day']} ({count_text(values['new_versions'] or 0)} "
                "new versions in this run's extract), rows are expected every day"
            )
        elif rule == "freshness":
            n = values["new_versions"] or 0
            age = values["hours_since_newest_update"]
            newest = profile["newest"]
            detail = (
                f"newest updated_at {newest:%Y-%m-%d %H:%M} is {age:.1f} hours before the end "
                f"of the covered day, more than {agg.expectation.max_value:g} allowed "
                f"({count_text(n)} new rows this run)"
                if newest
                else "no parseable updated_at in raw"
            )
        elif rule == "volume":
            n = values["new_versions"] or 0
            detail = f"{profile['volume_detail']}, more than {agg.expectation.max_value:g}x allowed"
        elif rule == "bad_row_share":
            n = profile["bad"]
            worst = sorted(
                (a for a in aggs if a.meta.get("level") == ROW and a.unexpected_count),
                key=lambda a: -a.unexpected_count,
            )[:3]
            most = "; ".join(
                f"{a.meta['rule']} on {a.meta['column']}: {count_text(a.unexpected_count)}"
                for a in worst
            )
            detail = (
                f"{count_text(n)} of {count_text(rows)} rows ({100 * values['bad_row_share']:.1f}%) failed "
                f"row-level rules ({most}), more than "
                f"{100 * agg.expectation.max_value:g}% allowed; they are quarantined"
            )
        else:
            n, detail = rows, "failed"
        out.append(Failure(table, agg.meta.get("column") or "*", rule, n, detail))
    return out


def _observed(agg: Agg) -> str | None:
    if agg.exception is not None:
        return f"error: {agg.exception}"[:500]
    if agg.observed is not None:
        return str(agg.observed)[:500]
    if agg.partial:
        return ("e.g. " + ", ".join(repr(v) for v in agg.partial[:5]))[:500]
    return None


def ensure_dq_tables(wh: Warehouse, conn: sa.Connection) -> None:
    """Create the ops tables the stage records in, where they do not exist yet."""
    wh.ensure(conn, declared.VALIDATED_BATCHES, declared.DQ_RESULTS, declared.TABLE_STATUS)


def record_outcome(
    conn: sa.Connection,
    table: str,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    out: TableOutcome,
    suites: dict[str, list[Agg]],
) -> None:
    """Record one table's outcome: its results per expectation (`ops.dq_results`), the day's
    status (`ops.table_status`) and its batches' (`ops.validated_batches`), replacing what
    an earlier try of the same run or day wrote."""
    results = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "as_of_date": as_of_date,
                "table_name": table,
                "expectation": agg.expectation.expectation_type,
                "column_name": agg.meta.get("column"),
                "level": agg.meta.get("level"),
                "success": bool(agg.success and agg.exception is None),
                "observed_value": _observed(agg),
                "unexpected_count": agg.unexpected_count,
                "element_count": agg.element_count,
                "rule": agg.meta.get("rule"),
                "suite": suite,
            }
            for suite, aggs in suites.items()
            for agg in aggs
        ]
    )
    conn.execute(
        sa.text("delete from ops.dq_results where run_id = :run_id and table_name = :t"),
        {"run_id": run_id, "t": table},
    )
    _load(conn, "ops.dq_results", results)
    detail = "; ".join(f.message() for f in out.failures) or (
        f"{count_text(out.quarantined)} of {count_text(out.rows)} versions quarantined"
        if out.quarantined
        else f"{count_text(out.rows)} versions passed"
    )
    conn.execute(
        sa.text(
            "delete from ops.table_status where as_of_date = cast(:as_of_date as date) "
            "and table_name = :t"
        ),
        {"as_of_date": as_of_date, "t": table},
    )
    _load(
        conn,
        "ops.table_status",
        pd.DataFrame(
            [
                {
                    "as_of_date": as_of_date,
                    "table_name": table,
                    "status": out.status,
                    "run_id": run_id,
                    "detail": detail[:4000],
                    "rows_validated": out.rows,
                    "quarantined": out.quarantined,
                    "validated_at": now,
                }
            ]
        ),
    )
    if out.batches:
        conn.execute(
            sa.text("delete from ops.validated_batches where batch_id in :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": [int(b) for b in out.batches]},
        )
        status = FAILED if out.failures else (QUARANTINED if out.quarantined else PASSED)
        _load(
            conn,
            "ops.validated_batches",
            pd.DataFrame(
                [
                    {
                        "batch_id": b,
                        "table_name": table,
                        "run_id": run_id,
                        "as_of_date": as_of_date,
                        "status": status,
                        "rows_validated": out.rows,
                        "quarantined": out.quarantined,
                        "validated_at": now,
                    }
                    for b in out.batches
                ]
            ),
        )


def _load(conn: sa.Connection, qualified: str, frame: pd.DataFrame) -> None:
    """Small bookkeeping inserts, with bound parameters (same SQL on both engines)."""
    if frame.empty:
        return
    cols = list(frame.columns)
    records = [
        {k: (None if _isnull(v) else _py(v)) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    conn.execute(
        sa.text(
            f"insert into {qualified} ({', '.join(cols)}) "
            f"values ({', '.join(':' + c for c in cols)})"
        ),
        records,
    )


def _isnull(v: Any) -> bool:
    try:
        return v is None or (not isinstance(v, (list, dict, str)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v


def failed_tables(wh: Warehouse, as_of_date: dt.date) -> set[str]:
    """Tables whose data for the date did not pass (status failed or stale): KPIs reading
    them are not evaluated for that date."""
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
        rows = conn.execute(
            sa.text(
                "select table_name from ops.table_status "
                "where as_of_date = cast(:as_of_date as date) and status in :statuses"
            ).bindparams(sa.bindparam("statuses", expanding=True)),
            {"as_of_date": as_of_date, "statuses": [FAILED, STALE]},
        ).fetchall()
    return {r[0] for r in rows}
