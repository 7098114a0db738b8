"""Airflow glue for crm_nightly: default task arguments, the failure notifier, the run,
the preflight checks and the watcher.

Lives in plugins/ (on Airflow's import path) because it is Airflow-specific, while
crm_pipeline stays free of Airflow. Nothing here touches a database at import.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

from crm_pipeline import config, stages

log = logging.getLogger(__name__)

ENGINEERS_VAR = "CRM_DATA_ENGINEERS"


def notify_data_engineers(context) -> None:
    """Failure callback of every task: email CRM_DATA_ENGINEERS (comma-separated, read when
    it fires) through `smtp_default` with the whole error (crm_pipeline.failure_email: text
    and HTML, a Message-ID, the send time). The preflight task refuses a run that could
    mail but has nobody to tell, so an unset variable here means no SMTP connection either:
    said loudly in the log."""
    from crm_pipeline.alerts import load_alert_config, parse_addresses, send_now
    from crm_pipeline.alerts import smtp_settings_from_connection as smtp_settings
    from crm_pipeline.dates import covered_day
    from crm_pipeline.errors import PipelineStop
    from crm_pipeline.failure_email import failure_message

    ti = context["ti"]
    to = parse_addresses(os.environ.get(ENGINEERS_VAR, ""))
    conn = smtp_connection()
    if not to or conn is None:
        log.error("%s: nobody is told that %s failed",
                  f"{ENGINEERS_VAR} is not set" if not to else "no smtp_default connection",
                  ti.task_id)
        return
    exc = context.get("exception")
    dag_run = context["dag_run"]
    msg = failure_message(
        dag_id=ti.dag_id, task_id=ti.task_id,
        day=covered_day(context.get("logical_date"), dag_run.run_after),
        run_id=ti.run_id, try_number=int(ti.try_number or 1),
        stopped=isinstance(exc, PipelineStop),
        error=f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc),
        log_url=str(getattr(ti, "log_url", "") or ""),
        sender=load_alert_config().sender, to=to,
    )
    send_now(smtp_settings(conn), msg)


NOTIFY = [notify_data_engineers]

# What no retry can fix (crm_pipeline.errors.PipelineStop: bad data, a broken source
# contract or configuration, a day that cannot be built, a model that cannot be trained or
# fails its gate) fails at once; anything else (a locked file, a dropped connection) retries.
RETRY_POLICY = ExceptionRetryPolicy(rules=[RetryRule(
    exception="crm_pipeline.errors.PipelineStop", action=RetryAction.FAIL,
    reason="no retry can fix this: a person must look")])

DEFAULT_ARGS = {
    "owner": "crm-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_policy": RETRY_POLICY,
    "pool": config.WAREHOUSE_POOL,
    "on_failure_callback": NOTIFY,
}

# Tasks that never open the warehouse: outside its one-writer pool, told nothing twice.
CONTROL_ARGS = {"pool": "default_pool", "retries": 0, "on_failure_callback": None}


def current_run() -> stages.Run:
    """The running task's day (crm_pipeline.dates decides it), run id, start and URLs."""
    from airflow.sdk import Connection, get_current_context

    from crm_pipeline.dates import covered_day

    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    return stages.Run(
        day=covered_day(ctx.get("logical_date"), dag_run.run_after),
        run_id=dag_run.run_id,
        started=dag_run.run_after,
        warehouse_url=config.sqlalchemy_url(Connection.get(config.CRM_WAREHOUSE_CONN_ID)),
        source_url=config.sqlalchemy_url(Connection.get(config.CRM_SOURCE_CONN_ID)),
    )


def smtp_connection():
    """The `smtp_default` connection, or None when alert mail is not configured at all."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(config.SMTP_CONN_ID)
    except AirflowNotFoundException:
        return None


def preflight() -> dict:
    """The run's day can be built, the settings load, and a failure would reach someone."""
    return stages.preflight(current_run(), can_mail=smtp_connection() is not None,
                            engineers=os.environ.get(ENGINEERS_VAR, ""))


def fail_if_any_task_failed(ti) -> None:
    """The watcher's body: it runs only when a task of the run failed (trigger rule
    one_failed), and fails, so that the run does too; a run's state otherwise comes from
    its leaves alone, and a failed task with successful children would leave it green."""
    from airflow.sdk.exceptions import AirflowFailException

    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    bad = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))
    raise AirflowFailException(
        f"crm_nightly {ti.run_id}: {len(bad)} task(s) failed or could not run: {', '.join(bad)}; "
        "the run is failed so that nobody reads it as a good night (each failure was "
        f"notified to {ENGINEERS_VAR} with its error)")
