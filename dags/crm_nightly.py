"""
### crm_nightly: the nightly watch over the CRM plan

Pulls the CRM and order source incrementally, rebuilds the warehouse for the day the run
covers, and (as later stages land) validates, scores, evaluates KPIs and emails managers.

**Schedule**: every day at 02:00 UTC, for the UTC day that just ended
(`CronDataIntervalTimetable`: the run's logical date is the covered day; `airflow dags
test crm_nightly 2026-11-22` builds 2026-11-22 as well).

**Connections**: `crm_source` (any SQLAlchemy database holding the contract's source
tables) and `crm_warehouse` (DuckDB file or PostgreSQL). Writes to the warehouse go
through the pool `crm_warehouse` (1 slot on DuckDB, which admits a single writer).

**Tables written**
- `raw.<table>`: every version of every source row, as text; `ops.extract_batches`,
  `ops.watermarks`
- `staging.stg_<table>`: typed versions with validity intervals
- `marts.fct_orders`, `marts.dim_customer`: state as of the covered day
- `marts.customer_rfm`, `marts.customer_value_tier`, `marts.kpi_daily`,
  `marts.segment_migration`: snapshots keyed by `as_of_date` (delete-insert of the
  run's day; a first run on a new warehouse builds `history_days` days in one pass)

See README.md and docs/data_dictionary.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task, task_group

from crm_pipeline.config import (
    CRM_SOURCE_CONN_ID,
    CRM_WAREHOUSE_CONN_ID,
    WAREHOUSE_POOL,
    sqlalchemy_url,
)
from crm_pipeline.source_schema import TABLE_ORDER

DEFAULT_ARGS = {
    "owner": "crm-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "pool": WAREHOUSE_POOL,
}


def _connection_url(conn_id: str) -> str:
    from airflow.sdk import Connection

    return sqlalchemy_url(Connection.get(conn_id))


def _warehouse():
    from crm_pipeline.warehouse import Warehouse

    return Warehouse(_connection_url(CRM_WAREHOUSE_CONN_ID))


def _run() -> tuple:
    """The day this run covers and its run id, derived in one place (crm_pipeline.dates)."""
    from crm_pipeline.dates import covered_day

    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    return covered_day(ctx.get("logical_date"), dag_run.run_after), dag_run.run_id


@dag(
    dag_id="crm_nightly",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["crm", "nightly"],
    doc_md=__doc__,
    params={
        "history_days": Param(
            0, type="integer", minimum=0,
            description="Days of snapshot history to (re)build ending at the run's day; "
            "0: the configured history on a new warehouse, else the run's day only",
        ),
    },
)
def crm_nightly():
    @task_group(tooltip="Pull new and changed source rows into raw, by updated_at watermark")
    def extract():
        @task(map_index_template="{{ task.op_kwargs['table'] }}")
        def extract_table(table: str) -> dict:
            from crm_pipeline.extract import extract_table as pull

            day, run_id = _run()
            stats = pull(_connection_url(CRM_SOURCE_CONN_ID), _warehouse(), table, day, run_id)
            return {k: str(v) for k, v in stats.items()}

        return extract_table.expand(table=list(TABLE_ORDER))

    @task_group(tooltip="Typed, versioned staging tables")
    def stage():
        @task
        def build_staging() -> dict:
            from crm_pipeline.transform import build_staging as build

            return build(_warehouse())

        return build_staging()

    @task_group(tooltip="Contract tables: state and snapshots as of the covered day")
    def marts():
        @task
        def build_fct_orders() -> dict:
            from crm_pipeline.transform import build_marts

            day, _ = _run()
            return build_marts(_warehouse(), ("fct_orders",), day)

        @task
        def build_snapshots(params=None) -> dict:
            from crm_pipeline.config import settings
            from crm_pipeline.kpis import build_snapshots as build
            from crm_pipeline.kpis import history_start

            day, _ = _run()
            wh = _warehouse()
            days = params["history_days"] or settings()["kpis"]["history_days"]
            start = history_start(wh, day, days) if not params["history_days"] else (
                day - timedelta(days=days - 1))
            return build(wh, start, day)

        @task
        def build_dim_customer() -> dict:
            from crm_pipeline.transform import build_marts

            day, _ = _run()
            return build_marts(_warehouse(), ("dim_customer",), day)

        build_fct_orders() >> build_snapshots() >> build_dim_customer()

    extract() >> stage() >> marts()


crm_nightly()
