"""The operator's commands after a validation: release held versions, accept failed batches.

Why a module of its own: these are a person's decisions, run by hand (`crm-pipeline
release-quarantine`, `crm-pipeline accept-batches`, crm_pipeline/cli.py) with the wall clock
the caller reads, never by the nightly run; docs/operations.md says when to use them.

Grain:

* `release_quarantine`: per table (all, or one, and optionally one rule), the held versions
  re-validated against the current settings and raw layer; the entries that now pass are
  released and staging picks them up at its next build;
* `accept_failed_batches`: per table, its failed batches count as validated from now on
  (their offending versions stay held).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline import source_schema as ss
from crm_pipeline.dates import naive_utc
from crm_pipeline.quality.gx import gx_engine
from crm_pipeline.quality.outcome import (
    ACCEPTED,
    FAILED,
    ensure_dq_tables,
)
from crm_pipeline.quality.quarantine import Findings, create_findings_table, held_count
from crm_pipeline.quality.reader import orphan_values
from crm_pipeline.quality.rules import (
    FOREIGN_KEYS,
    check_frame,
    row_expectations,
    suite_parameters,
)
from crm_pipeline.quality.settings import load_config
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse import tables as declared

# the log name the validate stage has always had (operators filter the task log by it)
log = logging.getLogger("crm_pipeline.validate")


def release_quarantine(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    released_at: dt.datetime,
    table: str | None = None,
    rule: str | None = None,
    *,
    config: dict[str, Any] | None = None,
) -> int:
    """Re-validate held versions (all, or of one table / one rule) against the current config
    and the current raw layer; release the quarantine entries that now pass. Returns the
    number of entries released. Staging picks the released versions up at its next build.
    `released_at` is also the "now" of the future-timestamp rule."""
    cfg = config or load_config()
    released_at = naive_utc(released_at)
    tables = [table] if table else list(ss.TABLE_ORDER)
    if table and table not in ss.SOURCE_TABLES:
        raise ValueError(f"unknown table {table!r}")
    engine = gx_engine()
    params = suite_parameters(released_at)
    total = 0
    for name in tables:
        spec = ss.SOURCE_TABLES[name]
        with wh.begin() as conn:
            ensure_dq_tables(wh, conn)
            rule_sql = " and rule = :rule" if rule else ""
            held = {"t": name, "rule": rule} if rule else {"t": name}
            hashes = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "select distinct row_hash from quarantine.rows where table_name = :t "
                        f"and released_at is null{rule_sql}"
                    ),
                    held,
                ).fetchall()
            ]
            if not hashes:
                continue
            missing_sql = conn.execute(
                sa.text(
                    f"""select distinct e.missing_columns from ops.extract_batches e
                    where e.table_name = :t and e.batch_id in (
                        select _batch_id from raw.{name} where _row_hash in
                        (select row_hash from quarantine.rows where table_name = :t
                         and released_at is null))"""
                ),
                {"t": name},
            ).fetchall()
            missing = {c for r in missing_sql for c in (r[0] or "").split(",") if c}
            present = [c for c in spec.columns if c not in missing]
            suite = engine.suite(f"{name}.rows", row_expectations(name, present, cfg))
            wh.create_temp(conn, declared.DQ_PROBE)
            create_findings_table(wh, conn)
            step = cfg["chunk_rows"]
            for i in range(0, len(hashes), step):
                conn.exec_driver_sql("delete from _dq_probe")
                wh.bulk_load(conn, "_dq_probe", pd.DataFrame({"row_hash": hashes[i : i + step]}))
                key_match = " and ".join(f"s.{k} = h.{k}" for k in spec.key)
                # the held versions, plus the other versions of their key in the same batch
                # (a duplicate is still a duplicate)
                rows = conn.exec_driver_sql(
                    f"""select {", ".join("s." + c for c in spec.columns)}, s._row_hash, s._batch_id
                        from raw.{name} s
                        where exists (select 1 from raw.{name} h join _dq_probe p
                                      on p.row_hash = h._row_hash
                                      where h._batch_id = s._batch_id and {key_match})"""
                ).fetchall()
                raw = pd.DataFrame.from_records(
                    rows, columns=[*spec.columns, "_row_hash", "_batch_id"], coerce_float=False
                )
                if raw.empty:
                    continue
                orphans = {}
                for col, parent in FOREIGN_KEYS.get(name, ()):
                    if col in present:
                        wh.create_temp(conn, declared.DQ_VALUES)
                        wh.bulk_load(
                            conn,
                            "_dq_values",
                            pd.DataFrame({"v": raw[col].dropna().unique().astype(object)}),
                        )
                        orphans[col] = orphan_values(conn, parent, "select v from _dq_values")
                frame = check_frame(name, raw, present, orphans)
                results, _meta = engine.run(suite, frame, params)
                wh.bulk_load(conn, "_dq_findings", Findings.collect(name, raw, results).frame)
                for col, _parent in FOREIGN_KEYS.get(name, ()):
                    if col in present:
                        conn.exec_driver_sql("drop table if exists _dq_values")
            held_before = held_count(conn, name)
            conn.execute(
                sa.text(
                    f"""update quarantine.rows set released_at = :released_at,
                        release_run_id = :run_id
                    where table_name = :t and released_at is null{rule_sql}
                      and not exists (
                        select 1 from _dq_findings f
                        where f.row_hash = quarantine.rows.row_hash
                          and f.rule = quarantine.rows.rule
                          and coalesce(f.column_name, '') = coalesce(quarantine.rows.column_name, ''))"""
                ),
                {**held, "released_at": released_at, "run_id": run_id},
            )
            released = held_before - held_count(conn, name)
            conn.exec_driver_sql("drop table if exists _dq_findings")
            conn.exec_driver_sql("drop table if exists _dq_probe")
        log.info(
            "release_quarantine %s (%s): %d of the held entries released for %s by %s",
            name,
            rule or "all rules",
            released,
            as_of_date,
            run_id,
        )
        total += released
    return total


def accept_failed_batches(wh: Warehouse, table: str, run_id: str, accepted_at: dt.datetime) -> int:
    """An operator's decision after a table-level failure that will not go away by itself
    (a real volume spike, a column the source dropped for good): the table's failed batches
    count as validated from now on. Their offending rows stay held. Returns the batch count."""
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
        where = "where table_name = :t and status = :failed"
        failed = {"t": table, "failed": FAILED}
        count = conn.execute(
            sa.text(f"select count(*) from ops.validated_batches {where}"), failed
        ).scalar_one()
        conn.execute(
            sa.text(
                f"""update ops.validated_batches set status = :accepted, run_id = :run_id,
                    validated_at = :accepted_at {where}"""
            ),
            {
                **failed,
                "accepted": ACCEPTED,
                "run_id": run_id,
                "accepted_at": naive_utc(accepted_at),
            },
        )
    log.warning("%s: %d failed batch(es) accepted by %s", table, count, run_id)
    return count
