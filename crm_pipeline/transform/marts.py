"""The state-as-of-the-run marts (fct_orders, dim_customer): rebuilt whole and swapped.

These tables hold one state, the latest, built from the staging versions valid at the end
of the run's day by the SQL files under include/sql/marts; unlike the snapshot marts
(crm_pipeline.transform.snapshots) they are not kept by day. A backfill of an earlier day
leaves a newer state in place unless asked to roll it back. Grain: one row per order
(fct_orders) or per customer (dim_customer), as of the latest run.
"""

from __future__ import annotations

import datetime as dt
import logging

from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger(__name__)


def build_marts(
    wh: Warehouse, names: tuple[str, ...], as_of_date: dt.date, allow_rollback: bool = False
) -> dict[str, int]:
    """Rebuild state-as-of-the-run marts (build and swap), in order, in one transaction.

    These tables hold one state, the latest: a backfill of an earlier day leaves a newer
    state in place (its snapshot marts are what it rebuilds), unless `allow_rollback`.
    """
    counts = {}
    with wh.begin() as conn:
        # dim_customer reads the latest published CLV and churn risk: before the models
        # first pass their gate, those marts are there and empty
        wh.ensure(conn, *(tables.MODEL_TABLES if "dim_customer" in names else ()))
        for name in names:
            table = f"marts.{name}"
            newer = _built_for(wh, conn, table)
            if newer is not None and newer > as_of_date and not allow_rollback:
                log.info(
                    "kept %s as of %s: a run for %s does not roll it back", table, newer, as_of_date
                )
                continue
            counts[table] = wh.replace_table(
                conn, table, wh.sql_file("marts", name), {"as_of_date": as_of_date}
            )
    log.info("marts rebuilt for %s: %s", as_of_date, counts)
    return counts


def _built_for(wh: Warehouse, conn, table: str) -> dt.date | None:
    if not wh.table_exists(conn, table):
        return None
    return conn.exec_driver_sql(f"select max(as_of_date) from {table}").scalar()
