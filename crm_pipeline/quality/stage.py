"""The validate stage: Great Expectations suites over the raw layer, between extract and stage.

Why a module of its own: this is the DAG step (`stages.validate`), the order of the work
for each table, read, judge, write; how the versions are read is `quality.reader`, what the
results lead to is `quality.quarantine` and `quality.outcome`, the rules are
`quality.rules`, their settings `quality.settings`, the GX plumbing `quality.gx`.

Grain: one run validates every source table, in `TABLE_ORDER`, each over its pending
batches (the versions of the extract batches not validated yet).

On DuckDB a SQL screen (`quality.prescreen`) first keeps only the versions some rule could
flag; the others pass every expectation by construction and are counted in. Each chunk of
what is left goes through the table's row suite (`<table>.rows`; a cheap BOOLEAN_ONLY pass,
then result_format COMPLETE keyed by `_row_hash` for the expectations that failed) on the
frame `rules.check_frame` builds. After the chunks, the table's one-row profile goes
through `<table>.table`.

Every expectation carries `meta = {"rule", "level", "column"}`:

* level `row`: the offending versions go to `quarantine.rows` (staging leaves held versions
  out) and the night goes on with the others;
* level `table`: `DataQualityError` after everything is recorded, naming table, column, rule
  and row count, for every table that failed. Versions whose value does not parse as its
  type are held as well, so that staging can never meet them.

Everything a run writes (quarantine, `ops.dq_results`, `ops.table_status`,
`ops.validated_batches`, orphan releases) is one transaction: a killed run leaves nothing
half-written. Data Docs (HTML) are built into `docs_dir` from a file-backed results store in
`docs_dir/_results`, so the site keeps every run. docs/data_quality.md lists the rules.
`validate_frame` runs a table's row suite on a few rows, with no warehouse.

No wall clock is read here: `now` (the DAG run's run_after) bounds "future" timestamps.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline import source_schema as ss
from crm_pipeline.dates import naive_utc
from crm_pipeline.errors import DataQualityError
from crm_pipeline.quality.gx import Agg, DataDocs, gx_engine, suite_result
from crm_pipeline.quality.outcome import (
    FAILED,
    QUARANTINED,
    STALE,
    Failure,
    TableOutcome,
    ensure_dq_tables,
    record_outcome,
    table_failures,
)
from crm_pipeline.quality.prescreen import suspect_condition
from crm_pipeline.quality.quarantine import (
    Findings,
    auto_release_due,
    auto_release_orphans,
    create_findings_table,
    hold_findings,
)
from crm_pipeline.quality.reader import (
    orphan_values,
    pending_batches,
    raw_chunks,
    table_profile,
)
from crm_pipeline.quality.rules import (
    FOREIGN_KEYS,
    check_frame,
    row_expectations,
    suite_parameters,
    table_expectations,
)
from crm_pipeline.quality.settings import load_config
from crm_pipeline.warehouse import Warehouse

# the log name the validate stage has always had (operators filter the task log by it)
log = logging.getLogger("crm_pipeline.validate")


def validate_run(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    docs_dir: str | os.PathLike | None = None,
    *,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate every table's unvalidated batches; write quarantine, dq_results, table_status;
    build Data Docs into `docs_dir`; raise DataQualityError after recording everything if a
    table-level rule failed. Returns {table: {"rows", "quarantined", "status", ...}, "docs": path}.

    `now` is the DAG run's run_after: timestamps after it are "in the future".
    """
    cfg = config or load_config()
    now = naive_utc(now)
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
    docs = DataDocs(docs_dir) if docs_dir else None
    summary: dict[str, Any] = {}
    failures: list[Failure] = []
    started = time.monotonic()
    # one transaction for everything the run writes (a killed run leaves nothing half-done);
    # raw is read on a second connection, streamed
    with wh.begin() as conn, wh.engine.connect() as reader:
        for table in ss.TABLE_ORDER:
            outcome = _validate_table(wh, conn, reader, table, as_of_date, run_id, now, cfg, docs)
            summary[table] = outcome.summary()
            failures += outcome.failures
    summary["docs"] = None
    if docs is not None:
        try:
            summary["docs"] = docs.build()
        except Exception:  # noqa: BLE001 - the results are recorded; the HTML is a view of them
            log.exception("Data Docs could not be built into %s", docs.dir)
    log.info("validation of %s (%s) took %.1fs", as_of_date, run_id, time.monotonic() - started)
    if failures:
        raise DataQualityError(failures, summary)
    return summary


def _validate_table(
    wh: Warehouse,
    conn: sa.Connection,
    reader: sa.Connection,
    table: str,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    cfg: dict[str, Any],
    docs: DataDocs | None = None,
) -> TableOutcome:
    """Validate one table's pending batches; writes go through `conn` (the run's transaction)."""
    started = time.monotonic()
    spec = ss.SOURCE_TABLES[table]
    rules = cfg["tables"][table]
    out = TableOutcome(table)
    out.released = auto_release_orphans(conn, table, run_id, now)
    out.released += auto_release_due(conn, table, run_id, now)
    batches = pending_batches(conn, table, run_id)
    out.batches = [int(b["batch_id"]) for b in batches]
    missing: dict[str, int] = {}
    extra: set[str] = set()
    for b in batches:
        for col in filter(None, (b["missing_columns"] or "").split(",")):
            missing[col] = missing.get(col, 0) + int(b["new_versions"])
        extra |= set(filter(None, (b["source_columns"] or "").split(","))) - set(spec.columns)
    present = [c for c in spec.columns if c not in missing]
    engine = gx_engine()
    params = suite_parameters(now)
    row_suite = engine.suite(f"{table}.rows", row_expectations(table, present, cfg))
    aggs = [Agg(e) for e in row_suite.expectations]
    batch_list = ", ".join(str(b) for b in out.batches) or "null"
    orphans = {
        col: orphan_values(
            conn,
            parent,
            f"select distinct {col} as v from raw.{table} where _batch_id in ({batch_list})",
        )
        for col, parent in FOREIGN_KEYS.get(table, ())
        if col in present
    }
    create_findings_table(wh, conn)
    meta: dict[str, Any] = {}
    if out.batches:
        # GX reads only the versions that could fail a rule (quality.prescreen); the others pass
        # every expectation and are counted in below
        suspect, suspect_params = (
            suspect_condition(table, row_suite.expectations, params, orphans, batch_list)
            if reader.dialect.name == "duckdb" and cfg.get("prescreen", True)
            else ("true", {})
        )
        total = reader.exec_driver_sql(
            f"select count(*) from raw.{table} where _batch_id in ({batch_list})"
        ).scalar_one()
        chunks = raw_chunks(reader, table, batch_list, cfg["chunk_rows"], suspect, suspect_params)
        for raw in chunks if total else ():
            meta = _check_chunk(
                wh, conn, engine, row_suite, aggs, table, raw, present, orphans, params
            )
            out.rows += len(raw)
        if total and not out.rows:  # no suspect: the table-level checks still run, on no row
            empty = pd.DataFrame(columns=[*spec.columns, "_row_hash", "_batch_id"])
            meta = _check_chunk(
                wh, conn, engine, row_suite, aggs, table, empty, present, orphans, params
            )
        for agg in aggs:
            last = (agg.last.result or {}) if agg.last is not None else {}
            if agg.exception is None and (not last or "element_count" in last):
                agg.element_count += total - out.rows
        out.rows = total
    # quarantine: row-level findings, and values staging could not cast
    out.quarantined, bad_row_versions, out.newly_quarantined = hold_findings(
        conn, table, as_of_date, run_id
    )
    # the table profile, then its suite
    profile = table_profile(
        conn, table, batches, now, as_of_date, rules, out.rows, bad_row_versions
    )
    tab_suite = engine.suite(f"{table}.table", table_expectations(table, cfg))
    tab_results, tab_meta = engine.run(tab_suite, pd.DataFrame([profile["values"]]), params)
    tab_aggs = [Agg(e) for e in tab_suite.expectations]
    for agg, r in zip(tab_aggs, tab_results, strict=True):
        agg.add(r, 1)
        agg.observed = profile["values"].get(r.expectation_config.kwargs.get("column"))
    out.failures = table_failures(table, aggs, tab_aggs, missing, extra, out.rows, profile)
    stale_only = out.failures and all(
        f.rule in ("freshness", "empty_extract") for f in out.failures
    )
    if out.failures:
        out.status = (
            STALE if stale_only and any(f.rule == "freshness" for f in out.failures) else FAILED
        )
    elif out.quarantined:
        out.status = QUARANTINED
    record_outcome(
        conn, table, as_of_date, run_id, now, out, {row_suite.name: aggs, tab_suite.name: tab_aggs}
    )
    conn.exec_driver_sql("drop table if exists _dq_findings")
    out.seconds = time.monotonic() - started
    if docs is not None:
        batch_name = (
            f"batches-{out.batches[0]}-{out.batches[-1]}" if out.batches else "no-new-batch"
        )
        docs.store(
            suite_result(row_suite.name, aggs, meta),
            row_expectations(table, present, cfg),
            run_id,
            now,
            batch_name,
        )
        docs.store(
            suite_result(tab_suite.name, tab_aggs, tab_meta),
            table_expectations(table, cfg),
            run_id,
            now,
            batch_name,
        )
    log.info(
        "validated %s: %d versions in batch(es) %s, %d quarantined (%d new), %d orphan(s) "
        "released, status %s, %.1fs",
        table,
        out.rows,
        out.batches or "-",
        out.quarantined,
        out.newly_quarantined,
        out.released,
        out.status,
        out.seconds,
    )
    return out


def _check_chunk(
    wh: Warehouse,
    conn: sa.Connection,
    engine: Any,
    row_suite: Any,
    aggs: list[Agg],
    table: str,
    raw: pd.DataFrame,
    present: list[str],
    orphans: dict[str, set[str]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The row suite over one chunk of versions: results summed, findings kept; GX's meta."""
    frame = check_frame(table, raw, present, orphans)
    results, meta = engine.run(row_suite, frame, params)
    for agg, r in zip(aggs, results, strict=True):
        agg.add(r, len(frame))
    wh.bulk_load(conn, "_dq_findings", Findings.collect(table, raw, results).frame)
    return meta


def validate_frame(
    table: str,
    raw: pd.DataFrame,
    now: dt.datetime,
    *,
    config: dict[str, Any] | None = None,
    orphans: dict[str, set[str]] | None = None,
) -> pd.DataFrame:
    """Run a table's row suite on a frame of raw text rows (contract columns, `_row_hash`,
    `_batch_id`); return the findings (row_key, row_hash, rule, column_name, value, level).
    `orphans` maps a foreign-key column to the values that do not resolve. No warehouse
    involved: this is how the rules can be tried on a handful of rows."""
    cfg = config or load_config()
    spec = ss.SOURCE_TABLES[table]
    present = [c for c in spec.columns if c in raw.columns]
    raw = raw.copy()
    for col in spec.columns:
        if col not in raw.columns:
            raw[col] = None
    raw = raw.astype(object).where(raw.notna(), None)
    engine = gx_engine()
    suite = engine.suite(f"{table}.rows", row_expectations(table, present, cfg))
    frame = check_frame(table, raw, present, orphans or {})
    results, _meta = engine.run(suite, frame, suite_parameters(naive_utc(now)))
    return Findings.collect(table, raw, results).frame
