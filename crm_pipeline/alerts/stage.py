"""Manager alerts: alert state, and delivery of the nightly email through an outbox.

Three steps, each its own DAG task (docs/alerts.md):

1. `process_alerts(wh, as_of_date, run_id)` reads `marts.kpi_evaluation` for the day,
   fires the rules of include/config/alerts.yaml on its flagged rows and moves every alert
   through its states (open -> notified -> resolved). It decides what the managers must
   hear: new alerts, alerts materially worse (or escalated, or still firing after the quiet
   period) and alerts that recovered, has crm_pipeline.alerts.email render **one** email for
   all of it and stores it in `ops.alert_outbox`, in the same transaction as the state
   change. Nothing is sent here.
2. `send_pending(wh, smtp)` sends what the outbox holds and marks it sent. SMTP down: the
   message stays pending, the task fails clearly, the next attempt sends it once.
3. The local SMTP sink (crm_devtools.smtp_sink) receives the email on the embedded default.

State lives in `ops.alert_history` (one row per alert per processed day: the state after
that day) and `ops.alert_runs` (the days processed); `marts.alerts` is the latest row of
each alert. A day's transitions are computed from the state after the previous processed
day, so rerunning a day recomputes the same transitions and replaces that day's rows; a
message already sent for the day is never sent again. Every date and timestamp comes from
the covered day (`last_notified_at` is the end of that day, UTC), never from the clock;
the one exception is `ops.alert_outbox.sent_at`, the wall-clock time of delivery.

This module is step 1: read, compute (crm_pipeline.alerts.state), write. Settings are
crm_pipeline.alerts.config, delivery crm_pipeline.alerts.outbox, the at-risk customers
crm_pipeline.alerts.at_risk; how the email reads and looks is crm_pipeline.alerts.email.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline.alerts.at_risk import at_risk_customers
from crm_pipeline.alerts.config import AlertConfig, load_alert_config, resolve_recipients
from crm_pipeline.alerts.email import EmailContext, build_email, render_charts
from crm_pipeline.alerts.outbox import _message_id, drop, ensure_tables, outbox_state, queue
from crm_pipeline.alerts.state import (
    ALERTS_TABLE,
    HISTORY_COLUMNS,
    HISTORY_TABLE,
    NOTIFY_EVENTS,
    RUNS_COLUMNS,
    RUNS_TABLE,
    Item,
    _d,
    _sort_key,
    transitions,
)
from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.evaluate import EVALUATION_TABLE, read_kpi_daily
from crm_pipeline.kpi.targets import Targets, load_targets
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse.frames import read_rows

log = logging.getLogger("crm_pipeline.alerts")

ALERTS_SQL = f"""
select alert_id, as_of_date, kpi, dimension, dimension_value, severity, message, state,
       first_seen, last_seen, last_notified_at, value, target, baseline, change_vs_baseline,
       last_value_notified, event as last_event
from (
    select history.*,
           row_number() over (partition by alert_id order by as_of_date desc) as rn
    from {HISTORY_TABLE} as history
) as latest
where rn = 1
"""


def process_alerts(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    *,
    config: str | Path | Mapping[str, Any] | AlertConfig | None = None,
    targets: str | Path | Mapping[str, Any] | Targets | None = None,
    recipients: str | Iterable[str] | Mapping[str, Any] | None = None,
    sender: str | None = None,
) -> dict[str, Any]:
    """Alert transitions for the day and, if anything is worth telling, one email in the outbox.

    `recipients` overrides the YAML's (a comma-separated string such as an Airflow
    Variable, a list, or {to, cc}); `sender` overrides its From address. Returns a summary
    (counts per event, the message id and subject, or None when there is nothing to tell).
    """
    cfg = load_alert_config(config)
    tgt = load_targets(targets)
    to, cc = resolve_recipients(cfg, recipients)
    sender = sender or cfg.sender
    summary: dict[str, Any] = {"as_of_date": str(as_of_date), "message_id": None, "subject": None}
    with wh.begin() as conn:
        ensure_tables(wh, conn)
        later = conn.exec_driver_sql(
            wh.render(
                f"select max(as_of_date) from {RUNS_TABLE} where as_of_date > {{{{ d }}}}",
                {"d": as_of_date},
            )
        ).scalar_one()
        if later is not None:
            log.warning(
                "alerts: %s is older than the last alerted day %s: alert state moves forward "
                "only, so this (backfill) run changes no alert and sends nothing",
                as_of_date,
                later,
            )
            return {**summary, "skipped": f"later day {later} already alerted"}
        previous, evaluation = read_day(wh, conn, as_of_date)

        items = transitions(as_of_date, evaluation, previous, cfg, tgt, run_id)
        items.sort(key=_sort_key)
        to_tell = [i for i in items if i.notify and i.event in NOTIFY_EVENTS]
        message_id = _message_id(as_of_date, sender)
        existing = outbox_state(conn, message_id)
        already_out = existing in ("sent", "sending", "held")
        if already_out and to_tell:
            log.warning(
                "alerts: the email for %s (%s) has already gone out (%s): not sending it again",
                as_of_date,
                message_id,
                existing,
            )
            summary.update(message_id=message_id, already_sent=True)
        if existing == "pending" and not to_tell:  # a rerun now has nothing to tell
            drop(conn, message_id)
        if to_tell and not already_out:
            if not to:
                raise ConfigError(
                    "alerts: no recipients (alerts.yaml recipients.to or the override)"
                )
            context = EmailContext(
                day=as_of_date,
                run_id=run_id,
                items=to_tell,
                config=cfg,
                targets=tgt,
                evaluation=evaluation,
                sender=sender,
                to=to,
                cc=cc,
                message_id=message_id,
                **read_email_data(wh, conn, as_of_date, to_tell, cfg, tgt),
            )
            context.charts = render_charts(context)
            msg = build_email(context)
            queue(
                conn,
                message_id=message_id,
                as_of_date=as_of_date,
                run_id=run_id,
                subject=context.subject,
                sender=sender,
                recipients=", ".join(to + cc),
                mime=msg,
                replace=existing == "pending",
            )
            summary.update(message_id=message_id, subject=context.subject)
        if to_tell:
            for item in to_tell:
                item.state["message_id"] = message_id

        write_day(wh, conn, as_of_date, run_id, items, to_tell, message_id)

    for event in ("new", "escalated", "worse", "reminder", "ongoing", "resolved", "carried"):
        summary[event] = sum(1 for i in items if i.event == event)
    summary["notified_items"] = len(to_tell)
    log.info("alerts for %s: %s", as_of_date, summary)
    return summary


def read_day(
    wh: Warehouse, conn: sa.Connection, as_of_date: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the day's transitions start from: the state after the previous processed day
    (its open and notified alerts) and the day's rows of marts.kpi_evaluation."""
    previous_day = conn.exec_driver_sql(
        wh.render(
            f"select max(as_of_date) from {RUNS_TABLE} where as_of_date < {{{{ d }}}}",
            {"d": as_of_date},
        )
    ).scalar_one()
    if previous_day is None:
        previous = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    else:
        previous = read_rows(
            conn,
            wh.render(
                f"select * from {HISTORY_TABLE} where as_of_date = {{{{ p }}}} "
                "and state in ('open', 'notified')",
                {"p": _d(previous_day)},
            ),
        )
    if wh.table_exists(conn, EVALUATION_TABLE):
        evaluation = read_rows(
            conn,
            wh.render(
                f"select * from {EVALUATION_TABLE} where as_of_date = {{{{ d }}}}",
                {"d": as_of_date},
            ),
        )
    else:
        evaluation = pd.DataFrame()
    if evaluation.empty:
        log.warning(
            "alerts: no kpi_evaluation rows for %s (run evaluate_day first): "
            "active alerts are carried unchanged",
            as_of_date,
        )
        evaluation = pd.DataFrame(
            columns=["kpi", "dimension", "dimension_value", "status", "flagged"]
        )
    return previous, evaluation


def write_day(
    wh: Warehouse,
    conn: sa.Connection,
    as_of_date: dt.date,
    run_id: str,
    items: list[Item],
    to_tell: list[Item],
    message_id: str,
) -> None:
    """The day's state: its rows of ops.alert_history and ops.alert_runs (replaced, so a
    rerun of the day gives the same rows) and marts.alerts rebuilt from the history."""
    history = pd.DataFrame([i.state for i in items], columns=list(HISTORY_COLUMNS))
    wh.execute(
        conn, f"delete from {HISTORY_TABLE} where as_of_date = {{{{ d }}}}", {"d": as_of_date}
    )
    _load(wh, conn, HISTORY_TABLE, history, HISTORY_COLUMNS)
    wh.execute(conn, f"delete from {RUNS_TABLE} where as_of_date = {{{{ d }}}}", {"d": as_of_date})
    runs = pd.DataFrame(
        [
            {
                "as_of_date": as_of_date,
                "run_id": run_id,
                "firing": sum(1 for i in items if i.event not in ("resolved", "carried")),
                "notified_items": len(to_tell),
                "message_id": message_id if to_tell else None,
            }
        ]
    )
    _load(wh, conn, RUNS_TABLE, runs, RUNS_COLUMNS)
    wh.replace_table(conn, ALERTS_TABLE, ALERTS_SQL)


def read_email_data(
    wh: Warehouse,
    conn: sa.Connection,
    day: dt.date,
    items: list[Item],
    config: AlertConfig,
    targets: Targets,
) -> dict[str, Any]:
    """What the email shows beyond the evaluation, read before it is rendered (the
    renderer does not query): the KPI history of the alerted KPIs, for the charts, and the
    high-value customers at risk, with the line that says what is shown or why nothing is."""
    open_items = [i for i in items if i.event != "resolved"]
    kpis = sorted({i.kpi for i in open_items})
    history = pd.DataFrame()
    if kpis:
        history_from = day - dt.timedelta(days=config.chart_days + targets.settings.baseline_days)
        history = read_kpi_daily(wh, history_from, day, kpis, conn=conn)
    at_risk, at_risk_note = at_risk_customers(wh, conn, day, config.at_risk)
    return {"history": history, "at_risk": at_risk, "at_risk_note": at_risk_note}


def _load(
    wh: Warehouse, conn: sa.Connection, table: str, frame: pd.DataFrame, columns: Mapping[str, str]
) -> None:
    if frame.empty:
        return
    frame = frame[list(columns)].copy()
    for col, kind in columns.items():
        if kind == "double precision":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        elif kind == "integer":
            frame[col] = frame[col].fillna(0).astype("int64")
        elif kind == "timestamp":
            frame[col] = pd.to_datetime(frame[col])
        elif kind == "date":
            frame[col] = pd.to_datetime(frame[col].map(_d)).dt.date
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        else:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    wh.bulk_load(conn, table, frame)
