"""
### crm_nightly: the nightly watch over the CRM plan

Pulls the CRM and order source incrementally, validates it, rebuilds the warehouse for
the day the run covers, scores customers, evaluates the plan's KPIs and emails managers.

**Schedule**: 02:00 UTC, for the UTC day that just ended: a run's data interval is the day it
builds, its logical date the day's start (plugins/crm_timetable.py); a manual run for
2026-11-22 (UI, REST, `airflow dags test`) builds 2026-11-22, one without a logical date the
day before it started. Param `history_days` rebuilds that many days of snapshots at once.

**Any ended day** can be built (no start_date); `check_run` refuses a day not ended, broken
settings, and mail without `CRM_DATA_ENGINEERS` to tell.

**Connections**: `crm_source`, `crm_warehouse`, `smtp_default`; writers run in the pool
`crm_warehouse` (1 slot on DuckDB: one writer at a time). A failed task, or a night past its
`deadline`, tells `CRM_DATA_ENGINEERS` (Slack too: `CRM_SLACK_CONN_ID`); `watcher` fails the run.

**Tables written**: `raw`, `quarantine`, `ops` (every source version, validation outcome,
model health, alert state), `staging` (typed versions), and the public `marts`, each an
asset `crm_warehouse.marts.<table>` of its one writer (docs/data_dictionary.md, docs/assets.md).
"""

from __future__ import annotations

import crm_airflow as af
from airflow.sdk import Param, TriggerRule, dag, task
from airflow.sdk import task_group as stage
from crm_airflow import current_run as _run
from crm_timetable import CoveredDayTimetable

from crm_pipeline import stages
from crm_pipeline.source_schema import TABLE_ORDER


@dag(
    dag_id="crm_nightly",
    schedule=CoveredDayTimetable(hour=2),
    start_date=None,
    catchup=False,
    max_active_runs=1,
    deadline=af.nightly_deadline(),
    default_args=af.DEFAULT_ARGS,
    tags=["crm", "nightly"],
    doc_md=__doc__,
    params={"history_days": Param(0, type="integer", minimum=0, description=af.HISTORY_HELP)},
)
def crm_nightly():
    @task(**af.PREFLIGHT_ARGS)
    def check_run() -> dict:
        return af.preflight()

    @stage(tooltip="Pull new and changed source rows into raw, by updated_at watermark")
    def extract():
        @task(map_index_template="{{ task.op_kwargs['table'] }}")
        def extract_table(table: str) -> dict:
            return stages.extract(_run(), table)

        extract_table.expand(table=list(TABLE_ORDER))

    @task(doc_md="Great Expectations: quarantine bad rows, stop on broken tables")
    def validate_sources() -> dict:
        return stages.validate(_run())

    @task(doc_md="Typed, versioned staging tables")
    def build_staging() -> dict:
        return stages.stage(_run())

    @task(outlets=af.writes("fct_orders"))
    def build_fct_orders() -> dict:
        return stages.build_marts(_run(), "fct_orders")

    @task(
        outlets=af.writes("customer_rfm", "customer_value_tier", "kpi_daily", "segment_migration")
    )
    def build_snapshots(params=None) -> str:  # the first day it built, for evaluate_kpis
        return stages.snapshots(_run(), params["history_days"])

    @task(outlets=af.writes("customer_clv", "customer_churn_risk"))
    def score_customers() -> dict:  # a failed health gate: the task fails, no event for either
        return stages.models(_run())

    # runs once the marts are built, also when the model gate kept yesterday's scores
    @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS, outlets=af.writes("dim_customer"))
    def build_dim_customer() -> dict:  # today's segment and tier, latest published CLV
        return stages.build_marts(_run(), "dim_customer")

    @task(outlets=af.writes("kpi_evaluation"))
    def evaluate_kpis(first_day: str) -> dict:  # against targets and their recent level
        return stages.evaluate(_run(), first_day)

    @stage(tooltip="One email per night: what is new, worse or resolved")
    def alerts():
        @task(outlets=af.writes("alerts"))
        def prepare_alert_email() -> dict:
            from airflow.sdk import Variable  # recipients: the Variable wins over alerts.yaml

            return stages.prepare_alerts(_run(), Variable.get("crm_alert_recipients", None))

        @task(retries=3, retry_delay=120)  # seconds
        def send_alert_email() -> dict:  # no smtp_default connection: the email waits
            return stages.send_alerts(_run(), af.smtp_connection())

        prepare_alert_email() >> send_alert_email()

    # Airflow's watcher: runs only if a task failed, and fails the run (else green leaves win)
    @task(trigger_rule=TriggerRule.ONE_FAILED, **af.CONTROL_ARGS)
    def watcher(ti=None) -> None:
        af.fail_if_any_task_failed(ti)

    orders, first_day = build_fct_orders(), build_snapshots()
    check_run() >> extract() >> validate_sources() >> build_staging() >> orders >> first_day
    scored, published, evaluated = score_customers(), build_dim_customer(), evaluate_kpis(first_day)
    first_day >> scored
    [first_day, scored] >> published
    [published, evaluated] >> alerts()
    watch = watcher()
    [t for t in watch.operator.dag.tasks if t is not watch.operator] >> watch


crm_nightly()
