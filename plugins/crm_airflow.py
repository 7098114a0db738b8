"""Airflow glue for crm_nightly: default task arguments, the failure notifier, the run.

Lives in plugins/ (on Airflow's import path) because it is Airflow-specific, while
crm_pipeline stays free of Airflow. Nothing here touches a database at import.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

from crm_pipeline import config, stages

log = logging.getLogger(__name__)


def notify_data_engineers(context) -> None:
    """Failure callback of validation and the model gate: email CRM_DATA_ENGINEERS
    (comma-separated, read when it fires) through `smtp_default`, with the error itself,
    using the SMTP provider's notifier."""
    to = os.environ.get("CRM_DATA_ENGINEERS", "")
    if not to:
        log.warning("CRM_DATA_ENGINEERS is not set: nobody is told that %s failed",
                    context["ti"].task_id)
        return
    SmtpNotifier(
        to=to, smtp_conn_id=config.SMTP_CONN_ID,
        subject="[crm_nightly] {{ ti.task_id }} failed for {{ ds }}",
        html_content="<p>{{ ti.task_id }} failed for {{ ds }}:</p><pre>{{ exception | e }}</pre>"
                     "<p>Log: {{ ti.log_url }}</p>",
    )(context)


NOTIFY = [notify_data_engineers]

# Bad data or a failed model gate (crm_pipeline.errors.PipelineStop) fails at once, since
# a retry would fail the same way; anything else (a locked file, a dropped connection) retries.
RETRY_POLICY = ExceptionRetryPolicy(rules=[RetryRule(
    exception="crm_pipeline.errors.PipelineStop", action=RetryAction.FAIL,
    reason="bad data or a failed model gate: a person must look")])

DEFAULT_ARGS = {
    "owner": "crm-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_policy": RETRY_POLICY,
    "pool": config.WAREHOUSE_POOL,
}


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
