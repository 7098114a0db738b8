"""The quarantine: raw versions held back from staging, each with the rule it broke.

Why a module of its own: holding and releasing versions is what the validate stage does
every night and what an operator's release does by hand (`quality.commands`), on the same
table, `quarantine.rows` (staging leaves out the versions held there, through the view
`quarantine.held_rows`).

Grain: one quarantine entry per version (`row_hash`), rule and column, held until
`released_at` is set.

* `Findings`: the offending versions of one chunk, from a suite's results, as quarantine
  rows; they are gathered in the temporary table `_dq_findings` (`create_findings_table`)
  and held at the end of a table (`hold_findings`);
* the stage's own releases, at the start of a table: versions held for a foreign key whose
  parent has arrived since (`auto_release_orphans`), and versions held for a timestamp that
  was only in the future of an earlier run (`auto_release_due`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from great_expectations.core import ExpectationValidationResult

from crm_pipeline import source_schema as ss
from crm_pipeline.quality.rules import FOREIGN_KEYS, ROW, TABLE, parse_values
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse import tables as declared


def held_hashes_sql(param: str = "held_table") -> str:
    """A subquery of the row hashes of a table's versions held now (for `not in`); the
    table's name is the bound parameter `:<param>`, for the caller to give."""
    return f"(select row_hash from quarantine.held_rows where table_name = :{param})"


def held_count(conn: sa.Connection, table: str) -> int:
    """The table's quarantine entries not released."""
    return conn.execute(
        sa.text(
            "select count(*) from quarantine.rows where table_name = :t and released_at is null"
        ),
        {"t": table},
    ).scalar_one()


def key_text(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.Series:
    """The key as text: 'O123', or 'O1|2' for a composite key."""
    out = frame[key[0]].fillna("").astype(str)
    for col in key[1:]:
        out = out + "|" + frame[col].fillna("").astype(str)
    return out


@dataclass
class Findings:
    """Offending versions of a chunk, as quarantine rows."""

    frame: pd.DataFrame

    @classmethod
    def collect(
        cls,
        table: str,
        raw: pd.DataFrame,
        results: list[ExpectationValidationResult],
        levels: tuple[str, ...] = (ROW, TABLE),
    ) -> Findings:
        spec = ss.SOURCE_TABLES[table]
        by_hash = raw.set_index("_row_hash")
        parts = []
        for r in results:
            meta = r.expectation_config.meta or {}
            if r.success or meta.get("level") not in levels or not meta.get("value_columns"):
                continue
            hashes = [d["_row_hash"] for d in (r.result or {}).get("unexpected_index_list") or []]
            if not hashes:
                continue
            rows = by_hash.loc[list(dict.fromkeys(hashes))]
            cols = meta["value_columns"]
            if len(cols) == 1:
                value = rows[cols[0]].astype(object).where(rows[cols[0]].notna(), None)
            else:
                value = pd.Series("", index=rows.index)
                for i, c in enumerate(cols):
                    value = (
                        value
                        + ("" if i == 0 else ", ")
                        + c
                        + "="
                        + rows[c].fillna("null").astype(str)
                    )
            parts.append(
                pd.DataFrame(
                    {
                        "table_name": table,
                        "row_key": key_text(rows, spec.key).to_numpy(),
                        "row_hash": rows.index.to_numpy(),
                        "rule": meta["rule"],
                        "column_name": meta["column"],
                        "value": value.to_numpy(),
                        "level": meta["level"],
                    }
                )
            )
        if not parts:
            return cls(
                pd.DataFrame(
                    columns=[
                        "table_name",
                        "row_key",
                        "row_hash",
                        "rule",
                        "column_name",
                        "value",
                        "level",
                    ]
                )
            )
        return cls(pd.concat(parts, ignore_index=True))


def create_findings_table(wh: Warehouse, conn: sa.Connection) -> None:
    """The temporary `_dq_findings` (the table's findings, gathered over its chunks)."""
    wh.create_temp(conn, declared.DQ_FINDINGS)


def hold_findings(
    conn: sa.Connection, table: str, as_of_date: dt.date, run_id: str
) -> tuple[int, int, int]:
    """Hold what `_dq_findings` holds (row-level findings, and values staging could not
    cast) in `quarantine.rows`, once per version, rule and column still held. Returns the
    versions found, those found by a row-level rule, and the quarantine entries added."""
    quarantined = conn.exec_driver_sql(
        "select count(distinct row_hash) from _dq_findings"
    ).scalar_one()
    bad_row_versions = conn.execute(
        sa.text("select count(distinct row_hash) from _dq_findings where level = :level"),
        {"level": ROW},
    ).scalar_one()
    count_sql = sa.text("select count(*) from quarantine.rows where table_name = :t")
    before = conn.execute(count_sql, {"t": table}).scalar_one()
    conn.execute(
        sa.text(
            """insert into quarantine.rows (table_name, row_key, row_hash, rule, column_name, value,
                as_of_date, run_id, released_at, release_run_id)
            select distinct f.table_name, f.row_key, f.row_hash, f.rule, f.column_name, f.value,
                   cast(:as_of_date as date), :run_id, cast(null as timestamp),
                   cast(null as varchar)
            from _dq_findings f
            where not exists (
                select 1 from quarantine.rows q
                where q.table_name = f.table_name and q.row_hash = f.row_hash
                  and q.rule = f.rule and coalesce(q.column_name, '') = coalesce(f.column_name, '')
                  and q.released_at is null)"""
        ),
        {"as_of_date": as_of_date, "run_id": run_id},
    )
    newly_quarantined = conn.execute(count_sql, {"t": table}).scalar_one() - before
    return quarantined, bad_row_versions, newly_quarantined


def auto_release_orphans(conn: sa.Connection, table: str, run_id: str, now: dt.datetime) -> int:
    """Release held orphan-FK versions of `table` whose parent has arrived since."""
    before = held_count(conn, table)
    held_orphans = conn.execute(
        sa.text(
            "select count(*) from quarantine.rows where table_name = :t "
            "and substr(rule, 1, 3) = 'fk_' and released_at is null"
        ),
        {"t": table},
    ).scalar_one()
    if not held_orphans:  # nothing to release: no scan of the child and parent tables
        return 0
    for col, parent in FOREIGN_KEYS.get(table, ()):
        pk = ss.SOURCE_TABLES[parent].key[0]
        conn.execute(
            sa.text(
                f"""update quarantine.rows set released_at = :now, release_run_id = :run_id
                where table_name = :t and rule = :rule and released_at is null
                  and exists (
                    select 1 from raw.{table} c
                    where c._row_hash = quarantine.rows.row_hash
                      and exists (select 1 from raw.{parent} p
                                  where p.{pk} = c.{col} and p._row_hash not in {held_hashes_sql()}))"""
            ),
            {
                "now": now,
                "run_id": run_id,
                "t": table,
                "rule": "fk_" + parent,
                "held_table": parent,
            },
        )
    return before - held_count(conn, table)


def auto_release_due(conn: sa.Connection, table: str, run_id: str, now: dt.datetime) -> int:
    """Release held versions whose only fault was a timestamp after an earlier run's start.

    A run's "future" is its run_after, and extraction reads the live source a little later
    (seconds under a scheduler, hours when runs queue): a row changed in between is stored
    and held as `not_in_future`, and the watermark, which never passes the run's start,
    brings the same version back unchanged the next night, when it is no longer in the
    future. Re-judged here against this run's start, it is released (and staged) then; a
    timestamp still ahead of it (a wrong clock, the year 2099) stays held.
    """
    held = conn.execute(
        sa.text(
            "select row_hash, column_name, value from quarantine.rows "
            "where table_name = :t and rule = 'not_in_future' and released_at is null"
        ),
        {"t": table},
    ).fetchall()
    if not held:
        return 0
    stamps = parse_values(pd.Series([v for _, _, v in held], dtype=object), "timestamp")
    due = [
        (h, c)
        for (h, c, _), ts in zip(held, stamps, strict=True)
        if not pd.isna(ts) and ts.to_pydatetime() <= now
    ]
    before = held_count(conn, table)
    for row_hash, column in due:
        conn.execute(
            sa.text(
                "update quarantine.rows set released_at = :now, release_run_id = :run "
                "where table_name = :t and rule = 'not_in_future' and released_at is null "
                "and row_hash = :h and column_name = :c"
            ),
            {"now": now, "run": run_id, "t": table, "h": row_hash, "c": column},
        )
    return before - held_count(conn, table)
