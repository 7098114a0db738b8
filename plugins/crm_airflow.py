"""Airflow glue for crm_nightly: default task arguments, the notifiers (email, and Slack as
an option), the run, the preflight checks, the watcher, the marts' assets and the deadline.

Lives in plugins/ (on Airflow's import path) because it is Airflow-specific, while
crm_pipeline stays free of Airflow. Nothing here touches a database at import.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, ExceptionRetryPolicy, RetryAction, RetryRule

from crm_pipeline import config, stages
from crm_pipeline.warehouse.tables import PUBLIC_MARTS

log = logging.getLogger(__name__)

ENGINEERS_VAR = "CRM_DATA_ENGINEERS"
# Names an Airflow connection of type slackwebhook (apache-airflow-providers-slack: the
# webhook URL, or its token with the host): failures and the deadline also go to Slack.
# Unset (the default): nothing is posted. Read when a notice is sent, like the addresses.
SLACK_VAR = "CRM_SLACK_CONN_ID"


def tell_data_engineers(what: str, text: str, email: Callable[[str, list[str]], Any]) -> None:
    """Tell the data engineers on every channel configured: by email (`email(sender, to)`
    builds it) to CRM_DATA_ENGINEERS through `smtp_default`, and on Slack (`text`) when
    CRM_SLACK_CONN_ID names a connection. One channel failing does not keep the other from
    being tried; the first error is raised after both. `what` names the event in the log."""
    from crm_pipeline.alerts import AlertConfig, load_alert_config, parse_addresses, send_now
    from crm_pipeline.alerts import smtp_settings_from_connection as smtp_settings

    errors: list[Exception] = []
    to = parse_addresses(os.environ.get(ENGINEERS_VAR, ""))
    conn = smtp_connection()
    if to and conn is not None:
        try:
            try:
                sender = load_alert_config().sender
            except Exception:  # noqa: BLE001 - a broken alerts.yaml may be what is reported
                sender = AlertConfig.sender
            send_now(smtp_settings(conn), email(sender, to))
        except Exception as exc:  # noqa: BLE001 - Slack is still tried
            log.exception("the email to %s about %s failed", ENGINEERS_VAR, what)
            errors.append(exc)
    else:
        log.error(
            "%s: nobody is told by email of %s",
            f"{ENGINEERS_VAR} is not set" if not to else "no smtp_default connection",
            what,
        )
    try:
        post_to_slack(text)
    except Exception as exc:  # noqa: BLE001 - raised below, after the email was tried
        log.exception("the Slack notice about %s failed", what)
        errors.append(exc)
    if errors:
        raise errors[0]


def post_to_slack(text: str) -> bool:
    """Post `text` through the Slack provider's SlackWebhookNotifier to the connection that
    CRM_SLACK_CONN_ID names; False (nothing posted) when it is unset. The text is sent as
    it is: an error quoting `{{ ... }}` is not rendered as a template."""
    conn_id = os.environ.get(SLACK_VAR, "").strip()
    if not conn_id:
        return False
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=text).notify({})
    return True


def notify_data_engineers(context) -> None:
    """Failure callback of every task: email CRM_DATA_ENGINEERS (comma-separated, read when
    it fires) through `smtp_default` with the whole error (crm_pipeline.failure_email: text
    and HTML, a Message-ID, the send time), and post its summary to Slack when
    CRM_SLACK_CONN_ID is set. The preflight task refuses a run that could mail but has
    nobody to tell, so an unset variable here means no SMTP connection either: said loudly
    in the log."""
    from crm_pipeline.dates import covered_day
    from crm_pipeline.errors import PipelineStop
    from crm_pipeline.failure_email import failure_message, failure_summary

    ti = context["ti"]
    exc = context.get("exception")
    dag_run = context["dag_run"]
    facts = dict(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        day=covered_day(context.get("logical_date"), dag_run.run_after),
        run_id=ti.run_id,
        try_number=int(ti.try_number or 1),
        error=f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc),
        log_url=str(getattr(ti, "log_url", "") or ""),
    )
    tell_data_engineers(
        f"the failure of {ti.task_id}",
        failure_summary(**facts),
        lambda sender, to: failure_message(
            **facts, stopped=isinstance(exc, PipelineStop), sender=sender, to=to
        ),
    )


# -- assets: the public marts, for other DAGs and BI refreshes to schedule on ---------------
def mart_asset(table: str) -> Asset:
    """`marts.customer_rfm` -> Asset 'crm_warehouse.marts.customer_rfm', URI
    'x-crm-warehouse://marts/customer_rfm': named after the warehouse connection, whatever
    engine is behind it (an `x-` scheme is the user-defined kind that Airflow never reads a
    meaning into, unlike `postgres://` or `file://`)."""
    schema, name = table.split(".")
    return Asset(
        name=f"crm_warehouse.{table}",
        uri=f"x-crm-warehouse://{schema}/{name}",
        group="crm_warehouse",
    )


MART_ASSETS = {table: mart_asset(table) for table in PUBLIC_MARTS}
_TABLE_OF = {asset.name: table for table, asset in MART_ASSETS.items()}


def writes(*names: str) -> list[Asset]:
    """The assets of the public marts a task writes: `writes("fct_orders")`."""
    return [MART_ASSETS[f"marts.{name}"] for name in names]


def announce_marts(context, result) -> None:
    """Every task's post-execute hook (DEFAULT_ARGS): on each asset event of the task's
    outlets (emitted when it succeeds), the day it covers and what the step did to that
    mart: {"as_of_date": "2026-06-30", "published": true, "rows": ...} (stages.mart_event).
    Tasks without a mart outlet are left alone. A consumer reads the events from its
    `triggering_asset_events`: docs/assets.md."""
    marts = [a for a in context["task"].outlets if getattr(a, "name", None) in _TABLE_OF]
    if not marts:
        return
    from crm_pipeline.dates import covered_day

    day = covered_day(context.get("logical_date"), context["dag_run"].run_after).isoformat()
    for asset in marts:
        extra = stages.mart_event(_TABLE_OF[asset.name], result)
        context["outlet_events"][asset].extra = {"as_of_date": day, **extra}


NOTIFY = [notify_data_engineers]

# What no retry can fix (crm_pipeline.errors.PipelineStop: bad data, a broken source
# contract or configuration, a day that cannot be built, a model that cannot be trained or
# fails its gate) fails at once; anything else (a locked file, a dropped connection) retries.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="crm_pipeline.errors.PipelineStop",
            action=RetryAction.FAIL,
            reason="no retry can fix this: a person must look",
        )
    ]
)

DEFAULT_ARGS = {
    "owner": "crm-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_policy": RETRY_POLICY,
    "pool": config.WAREHOUSE_POOL,
    "on_failure_callback": NOTIFY,
    "post_execute": announce_marts,  # the day and what was published, on the marts' events
}

# The DAG's one param, `history_days`
HISTORY_HELP = (
    "Days of snapshots to rebuild ending at the run's day; 0: the configured history on a new "
    "warehouse, else the run's day only"
)

# Tasks that never open the warehouse: outside its one-writer pool, never retried. The
# preflight tells the data engineers when it refuses a night (broken settings at 02:00
# would otherwise fail the run unseen); the watcher tells nobody: the failure it reports
# was told already.
PREFLIGHT_ARGS = {"pool": "default_pool", "retries": 0, "on_failure_callback": NOTIFY}
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
    return stages.preflight(
        current_run(),
        can_mail=smtp_connection() is not None,
        engineers=os.environ.get(ENGINEERS_VAR, ""),
    )


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
        f"notified to {ENGINEERS_VAR} with its error)"
    )


# -- the deadline ------------------------------------------------------------------------------
def nightly_deadline():
    """The night's DeadlineAlert (include/config/pipeline.yaml `deadline`), or None when off.

    Airflow's DeadlineAlert is experimental in 3.1 to 3.3, hence the setting, off by
    default. Measured from the run's queued time (DAGRUN_QUEUED_AT), so a manual run for an
    earlier day gets the same allowance as the scheduled night. Airflow creates the deadline
    with the run and drops it when the run succeeds in time (not when it fails: a failed
    night is told again at its deadline); the scheduler marks it missed and the triggerer
    runs `notify_deadline_missed`, so it needs both (tests/integration/test_deadline.py).

    `airflow dags test` never fires a deadline, and in Airflow 3.3 it crashes when a run
    of a DAG with one succeeds (`DagRun.update_state` looks the unsaved alert up as a
    database id: AttributeError 'dict' object has no attribute 'hex'), so the DAG parsed
    by that command (`make run`, `make backfill`) has none. `dag.test()` called from
    Python is not recognised: keep the setting off there."""
    setting = config.deadline()
    if not setting.enabled:
        return None
    if sys.argv[1:3] == ["dags", "test"]:
        log.info("airflow dags test: crm_nightly without its deadline (never fired here)")
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=setting.after_queued_minutes),
        callback=AsyncCallback(notify_deadline_missed),
        name="crm_nightly not done in time",
    )


async def notify_deadline_missed(context: dict | None = None, **_: Any) -> None:
    """The deadline's callback, run by the triggerer (an AsyncCallback, imported there by
    its path crm_airflow.notify_deadline_missed): the blocking SMTP and Slack calls run in
    a thread, off the triggerer's event loop."""
    await asyncio.to_thread(tell_deadline_missed, context or {})


def tell_deadline_missed(context: dict) -> None:
    """'crm_nightly for DAY not done by HH:MM UTC' to the data engineers (email, Slack).

    `context` is what Airflow 3.3 gives a deadline callback: the run as the REST API shows
    it (`dag_run`: dag_id, dag_run_id, logical_date, run_after, queued_at, state, run_type)
    and `deadline` (deadline_time). Backfill runs are not told: queued together, they wait
    for one another and would each miss a deadline counted from their queued time."""
    from crm_pipeline.dates import covered_day
    from crm_pipeline.failure_email import deadline_message, deadline_text

    run = context.get("dag_run") or {}
    if run.get("run_type") == "backfill":
        log.info("deadline missed by backfill run %s: not told", run.get("dag_run_id"))
        return
    facts = dict(
        dag_id=run.get("dag_id", "crm_nightly"),
        run_id=str(run.get("dag_run_id")),
        day=covered_day(_when(run.get("logical_date")), _when(run.get("run_after"))),
        deadline=_when((context.get("deadline") or {}).get("deadline_time")),
        queued_at=_when(run.get("queued_at")),
        state=str(run.get("state") or ""),
    )
    tell_data_engineers(
        f"the deadline of {facts['run_id']}",
        deadline_text(**facts),
        lambda sender, to: deadline_message(**facts, sender=sender, to=to),
    )


def _when(value) -> dt.datetime | None:
    """A datetime from the callback's context, which carries them as ISO strings."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
