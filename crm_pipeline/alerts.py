"""Manager alerts: alert state, the nightly email, and its delivery through an outbox.

Three steps, each its own DAG task (docs/alerts.md):

1. `process_alerts(wh, as_of_date, run_id)` reads `marts.kpi_evaluation` for the day,
   fires the rules of include/config/alerts.yaml on its flagged rows and moves every alert
   through its states (open -> notified -> resolved). It decides what the managers must
   hear: new alerts, alerts materially worse (or escalated, or still firing after the quiet
   period) and alerts that recovered, renders **one** email for all of it (HTML with a
   plain-text alternative, inline charts) and stores it in `ops.alert_outbox`, in the same
   transaction as the state change. Nothing is sent here.
2. `send_pending(wh, smtp)` sends what the outbox holds and marks it sent. SMTP down: the
   message stays pending, the task fails clearly, the next attempt sends it once.
3. The local SMTP sink (crm_pipeline.smtp_sink) receives the email on the embedded default.

State lives in `ops.alert_history` (one row per alert per processed day: the state after
that day) and `ops.alert_runs` (the days processed); `marts.alerts` is the latest row of
each alert. A day's transitions are computed from the state after the previous processed
day, so rerunning a day recomputes the same transitions and replaces that day's rows; a
message already sent for the day is never sent again. Every date and timestamp comes from
the covered day (`last_notified_at` is the end of that day, UTC), never from the clock;
the one exception is `ops.alert_outbox.sent_at`, the wall-clock time of delivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import logging
import math
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import charset as email_charset
from email import policy as email_policy
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, getaddresses, parseaddr
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import yaml

from crm_pipeline.config import CONFIG_DIR
from crm_pipeline.dates import end_of_day
from crm_pipeline.evaluate import (
    EVALUATION_TABLE,
    HIGHER,
    KpiSpec,
    Targets,
    baseline_frame,
    load_targets,
    read_frame,
    read_kpi_daily,
)
from crm_pipeline.evaluate import finite_or_none as _f
from crm_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

ALERTS_FILE = CONFIG_DIR / "alerts.yaml"
HISTORY_TABLE = "ops.alert_history"
RUNS_TABLE = "ops.alert_runs"
OUTBOX_TABLE = "ops.alert_outbox"
ALERTS_TABLE = "marts.alerts"
SEVERITY_RANK = {"warning": 1, "breach": 2}
NOTIFY_EVENTS = ("new", "escalated", "worse", "reminder", "resolved")
EVENT_ORDER = {"new": 0, "escalated": 1, "worse": 2, "reminder": 3, "resolved": 4}
EVENT_WORDS = {
    "new": "new",
    "escalated": "escalated to breach",
    "worse": "worse since the last notice",
    "reminder": "still firing (reminder)",
    "resolved": "recovered",
}
DIMENSION_ORDER = {"all": 0, "tier": 1, "segment": 2, "region": 3, "channel": 4}
TIER_ORDER = {"vip": 0, "key": 1, "regular": 2, "small": 3, "unassigned": 4}
N_LABEL = {
    "churn_rate": "customers active 30 days earlier",
    "retention_rate": "customers active 30 days earlier",
    "csat": "responses",
    "nps": "responses",
    "complaint_sla_rate": "complaints closed",
    "complaint_first_response_hours": "complaints",
    "complaint_resolution_hours": "complaints",
    "campaign_response_rate": "contacts",
    "repeat_purchase_rate": "buyers",
    "loyalty_member_share": "active customers",
    "purchase_frequency": "ordering customers",
    "aov": "orders",
    "complaints_per_1000_orders": "orders",
    "cac": "new customers",
}
# KPIs whose overall value is the denominator-weighted mean of its tier and segment
# values: for these the email shows each group's contribution to the overall change
WEIGHTED_KPIS = {
    "churn_rate",
    "retention_rate",
    "csat",
    "nps",
    "complaint_sla_rate",
    "campaign_response_rate",
    "repeat_purchase_rate",
    "loyalty_member_share",
}

HISTORY_COLUMNS: dict[str, str] = {
    "as_of_date": "date",
    "alert_id": "varchar",
    "kpi": "varchar",
    "dimension": "varchar",
    "dimension_value": "varchar",
    "severity": "varchar",
    "state": "varchar",
    "event": "varchar",
    "message": "varchar",
    "first_seen": "date",
    "last_seen": "date",
    "last_notified_at": "timestamp",
    "last_notified_date": "date",
    "value": "double precision",
    "target": "double precision",
    "baseline": "double precision",
    "change_vs_baseline": "double precision",
    "last_value_notified": "double precision",
    "last_severity_notified": "varchar",
    "message_id": "varchar",
    "run_id": "varchar",
}
RUNS_COLUMNS = {
    "as_of_date": "date",
    "run_id": "varchar",
    "firing": "integer",
    "notified_items": "integer",
    "message_id": "varchar",
}
OUTBOX_COLUMNS = {
    "message_id": "varchar",
    "as_of_date": "date",
    "run_id": "varchar",
    "subject": "varchar",
    "sender": "varchar",
    "recipients": "varchar",
    "mime_text": "varchar",
    "state": "varchar",  # pending | sending | sent | held
    "attempts": "integer",
    "last_error": "varchar",
    "sent_at": "timestamp",
}


class AlertDeliveryError(RuntimeError):
    """The SMTP server could not take the email; it stays pending in ops.alert_outbox."""


# -- configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    kpi: str
    dimensions: Mapping[str, tuple[str, ...] | None]  # None: every value
    on: tuple[str, ...] = ("breach", "unusual")
    worsen_by: float | None = None
    notify: bool = True

    def matches(self, kpi: str, dimension: str, value: str) -> bool:
        if kpi != self.kpi or dimension not in self.dimensions:
            return False
        values = self.dimensions[dimension]
        return values is None or value in values

    def fires(self, row: Mapping[str, Any]) -> str | None:
        """The severity of the alert this rule raises on the row, or None if it does not fire.

        `fire_on` decides whether the rule fires; the severity tells the KPI's state:
        breach when its target is breached, warning when it only left its normal band.
        """
        breached = bool(row.get("target_breached"))
        fired = ("breach" in self.on and breached) or (
            "unusual" in self.on and bool(row.get("unusual_move"))
        )
        if not fired:
            return None
        return "breach" if breached else "warning"


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    sender: str = "CRM pipeline <crm-pipeline@localhost>"
    subject_prefix: str = "[CRM]"
    quiet_period_days: int = 7
    worsen_relative: float = 0.10
    chart_days: int = 90
    max_charts: int = 6
    breakdown_dimensions: tuple[str, ...] = ("tier", "segment")
    footer_note: str = ""
    at_risk: Mapping[str, Any] = field(default_factory=dict)
    on_interrupted: str = "resend"

    def rule_for(self, kpi: str, dimension: str, value: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(kpi, dimension, value):
                return rule
        return None


def load_alert_config(
    source: str | Path | Mapping[str, Any] | AlertConfig | None = None,
) -> AlertConfig:
    """Alert settings from YAML (default include/config/alerts.yaml) or a parsed mapping."""
    if isinstance(source, AlertConfig):
        return source
    if source is None or isinstance(source, str | Path):
        with open(Path(source or ALERTS_FILE), encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    else:
        raw = dict(source)
    rules = []
    for item in raw.get("rules") or []:
        dims = {}
        for dim, values in (item.get("dimensions") or {"all": "*"}).items():
            dims[str(dim)] = None if values in ("*", None) else tuple(str(v) for v in values)
        if True in item or "on" in item:  # YAML 1.1 reads a bare `on:` key as true
            raise ValueError(f"alerts: rule for {item.get('kpi')}: write fire_on, not on")
        on = tuple(item.get("fire_on") or ("breach", "unusual"))
        if not set(on) <= {"breach", "unusual"}:
            raise ValueError(
                f"alerts: rule for {item.get('kpi')}: fire_on takes breach and/or unusual"
            )
        rules.append(
            Rule(
                kpi=str(item["kpi"]),
                dimensions=dims,
                on=on,
                worsen_by=None if item.get("worsen_by") is None else float(item["worsen_by"]),
                notify=bool(item.get("notify", True)),
            )
        )
    recipients = raw.get("recipients") or {}
    email = raw.get("email") or {}
    on_interrupted = (raw.get("delivery") or {}).get("on_interrupted", "resend")
    if on_interrupted not in ("resend", "hold"):
        raise ValueError("alerts: delivery.on_interrupted must be resend or hold")
    return AlertConfig(
        rules=tuple(rules),
        to=tuple(parse_addresses(recipients.get("to"))),
        cc=tuple(parse_addresses(recipients.get("cc"))),
        sender=str(raw.get("sender") or AlertConfig.sender),
        subject_prefix=str(raw.get("subject_prefix", "[CRM]")),
        quiet_period_days=int(raw.get("quiet_period_days", 7)),
        worsen_relative=float((raw.get("material_worsening") or {}).get("relative", 0.10)),
        chart_days=int(email.get("chart_days", 90)),
        max_charts=int(email.get("max_charts", 6)),
        breakdown_dimensions=tuple(email.get("breakdown_dimensions") or ("tier", "segment")),
        footer_note=str(email.get("footer_note") or ""),
        at_risk=dict(raw.get("at_risk") or {}),
        on_interrupted=on_interrupted,
    )


def parse_addresses(value: str | Iterable[str] | None) -> list[str]:
    """Addresses from a list or a comma/semicolon-separated string (an Airflow Variable)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for _, addr in getaddresses([str(item).replace(";", ",")]):
            addr = addr.strip()
            if not addr:
                continue
            if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", addr):
                raise ValueError(f"not an email address: {addr!r}")
            out.append(addr)
    return out


def resolve_recipients(
    config: AlertConfig, override: str | Iterable[str] | Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """(to, cc): the override (e.g. an Airflow Variable) when given, else the YAML's."""
    if override:
        if isinstance(override, Mapping):
            return parse_addresses(override.get("to")), parse_addresses(override.get("cc"))
        return parse_addresses(override), []
    return list(config.to), list(config.cc)


# -- tables -----------------------------------------------------------------------------
def _create(conn: sa.Connection, table: str, columns: Mapping[str, str]) -> None:
    conn.exec_driver_sql(f"create schema if not exists {table.split('.')[0]}")
    cols = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    conn.exec_driver_sql(f"create table if not exists {table} ({cols})")


def ensure_tables(wh: Warehouse, conn: sa.Connection) -> None:
    _create(conn, HISTORY_TABLE, HISTORY_COLUMNS)
    _create(conn, RUNS_TABLE, RUNS_COLUMNS)
    _create(conn, OUTBOX_TABLE, OUTBOX_COLUMNS)


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


# -- the state machine -------------------------------------------------------------------
@dataclass
class Item:
    """One alert's outcome for the day, with what the email needs to tell it."""

    key: tuple[str, str, str]
    event: str  # new | escalated | worse | reminder | ongoing | resolved | carried
    state: dict[str, Any]  # the history row after the day
    row: dict[str, Any] | None  # the day's kpi_evaluation row
    previous: dict[str, Any] | None  # the history row before the day
    spec: KpiSpec | None
    notify: bool = False

    @property
    def kpi(self) -> str:
        return self.key[0]


def _d(v: Any) -> dt.date | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return pd.Timestamp(v).date()


def dimension_text(dimension: str, value: str) -> str:
    if dimension == "all":
        return "all customers"
    if dimension == "tier":
        return f"{value} tier"
    if dimension == "segment":
        return f"{value} segment"
    return f"{dimension} {value}"


def alert_message(
    spec: KpiSpec | None,
    kpi: str,
    dimension: str,
    value: str,
    row: Mapping[str, Any],
    severity: str,
) -> str:
    """The one-line message stored in marts.alerts."""
    if spec is None:
        return f"{kpi} {dimension_text(dimension, value)}: {row.get('value')}"
    parts = [f"{spec.title}, {dimension_text(dimension, value)}: {spec.fmt(_f(row.get('value')))}"]
    target = _f(row.get("target"))
    if target is not None:
        parts.append(f"target {spec.op()} {spec.fmt(target, True)}")
    base = _f(row.get("baseline"))
    if base is not None:
        parts.append(
            f"baseline {spec.fmt(base)} ({spec.fmt_change(_f(row.get('change_vs_baseline')))})"
        )
    return (
        f"{parts[0]} ({'; '.join(parts[1:])}) - {severity}"
        if len(parts) > 1
        else f"{parts[0]} - {severity}"
    )


def materially_worse(
    spec: KpiSpec | None,
    rule: Rule | None,
    value: float | None,
    last: float | None,
    relative: float,
) -> bool:
    if spec is None or value is None or last is None:
        return False
    step = rule.worsen_by if rule and rule.worsen_by is not None else relative * abs(last)
    moved = (last - value) if spec.direction == HIGHER else (value - last)
    return moved > 0 and moved >= step


def transitions(
    day: dt.date,
    evaluation: pd.DataFrame,
    previous: pd.DataFrame,
    config: AlertConfig,
    targets: Targets,
    run_id: str,
) -> list[Item]:
    """Every active or firing alert's outcome for `day` (pure: no I/O)."""
    notified_at = end_of_day(day)
    rows = {
        (r["kpi"], r["dimension"], r["dimension_value"]): r for r in evaluation.to_dict("records")
    }
    prev = {
        (r["kpi"], r["dimension"], r["dimension_value"]): r for r in previous.to_dict("records")
    }
    firing: dict[tuple[str, str, str], tuple[str, Rule]] = {}
    for key, row in rows.items():
        if row.get("status") == "not_evaluated" or not row.get("flagged"):
            continue
        rule = config.rule_for(*key)
        severity = rule.fires(row) if rule else None
        if severity:
            firing[key] = (severity, rule)

    items = []
    for key in sorted(set(firing) | set(prev)):
        kpi, dimension, dim_value = key
        spec = targets.spec(kpi)
        row = rows.get(key)
        before = prev.get(key)
        if key in firing:
            severity, rule = firing[key]
            value = _f(row.get("value"))
            state = {
                "as_of_date": day,
                "kpi": kpi,
                "dimension": dimension,
                "dimension_value": dim_value,
                "severity": severity,
                "message": alert_message(spec, kpi, dimension, dim_value, row, severity),
                "last_seen": day,
                "value": value,
                "target": _f(row.get("target")),
                "baseline": _f(row.get("baseline")),
                "change_vs_baseline": _f(row.get("change_vs_baseline")),
                "run_id": run_id,
                "message_id": None,
            }
            if before is None:
                event = "new"
                state.update(
                    alert_id=f"{kpi}|{dimension}|{dim_value}|{day.isoformat()}",
                    first_seen=day,
                    last_notified_at=None,
                    last_notified_date=None,
                    last_value_notified=None,
                    last_severity_notified=None,
                    state="open",
                )
                notify = rule.notify
            else:
                state.update(
                    alert_id=before["alert_id"],
                    first_seen=_d(before["first_seen"]),
                    last_notified_at=before.get("last_notified_at"),
                    last_notified_date=_d(before.get("last_notified_date")),
                    last_value_notified=_f(before.get("last_value_notified")),
                    last_severity_notified=before.get("last_severity_notified"),
                    state=before["state"],
                )
                last_date = state["last_notified_date"]
                if state["state"] == "open" or last_date is None:
                    event, notify = ("new", rule.notify)
                elif SEVERITY_RANK[severity] > SEVERITY_RANK.get(
                    state["last_severity_notified"] or "", 0
                ):
                    event, notify = "escalated", True
                elif materially_worse(
                    spec, rule, value, state["last_value_notified"], config.worsen_relative
                ):
                    event, notify = "worse", True
                elif (day - last_date).days >= config.quiet_period_days:
                    event, notify = "reminder", True
                else:
                    event, notify = "ongoing", False
                notify = notify and rule.notify
            if notify:
                state.update(
                    state="notified",
                    last_notified_at=notified_at,
                    last_notified_date=day,
                    last_value_notified=value,
                    last_severity_notified=severity,
                )
            state["event"] = event
            items.append(Item(key, event, state, row, before, spec, notify))
            continue

        # active before, not firing today
        state = {k: before.get(k) for k in HISTORY_COLUMNS}
        state.update(as_of_date=day, run_id=run_id, message_id=None)
        if row is None or row.get("status") == "not_evaluated":
            state["event"] = "carried"  # cannot tell today: no change, no notice
            items.append(Item(key, "carried", state, row, before, spec, False))
            continue
        state.update(
            state="resolved",
            event="resolved",
            last_seen=_d(before.get("last_seen")),
            value=_f(row.get("value")),
            target=_f(row.get("target")),
            baseline=_f(row.get("baseline")),
            change_vs_baseline=_f(row.get("change_vs_baseline")),
        )
        if spec is not None:
            state["message"] = (
                f"resolved: {spec.title}, {dimension_text(dimension, dim_value)} back to "
                f"{spec.fmt(_f(row.get('value')))}"
            )
        notify = before.get("state") == "notified"
        items.append(Item(key, "resolved", state, row, before, spec, notify))
    return items


def _sort_key(item: Item) -> tuple:
    change = _f(item.state.get("change_vs_baseline")) or 0.0
    return (
        EVENT_ORDER.get(item.event, 9) if item.event == "resolved" else 0,
        -SEVERITY_RANK.get(item.state.get("severity") or "", 0),
        EVENT_ORDER.get(item.event, 9),
        item.kpi,
        DIMENSION_ORDER.get(item.key[1], 9),
        TIER_ORDER.get(item.key[2], 9) if item.key[1] == "tier" else 0,
        -abs(change),
        item.key[2],
    )


# -- the main step -------------------------------------------------------------------------
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
        previous_day = conn.exec_driver_sql(
            wh.render(
                f"select max(as_of_date) from {RUNS_TABLE} where as_of_date < {{{{ d }}}}",
                {"d": as_of_date},
            )
        ).scalar_one()
        if previous_day is None:
            previous = pd.DataFrame(columns=list(HISTORY_COLUMNS))
        else:
            previous = read_frame(
                conn,
                wh.render(
                    f"select * from {HISTORY_TABLE} where as_of_date = {{{{ p }}}} "
                    "and state in ('open', 'notified')",
                    {"p": _d(previous_day)},
                ),
            )
        if wh.table_exists(conn, EVALUATION_TABLE):
            evaluation = read_frame(
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

        items = transitions(as_of_date, evaluation, previous, cfg, tgt, run_id)
        items.sort(key=_sort_key)
        to_tell = [i for i in items if i.notify and i.event in NOTIFY_EVENTS]
        message_id = _message_id(as_of_date, sender)
        existing = conn.execute(
            sa.text(f"select state from {OUTBOX_TABLE} where message_id = :m"), {"m": message_id}
        ).scalar_one_or_none()
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
            conn.execute(
                sa.text(f"delete from {OUTBOX_TABLE} where message_id = :m"), {"m": message_id}
            )
        if to_tell and not already_out:
            if not to:
                raise ValueError(
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
            )
            context.load(wh, conn)
            msg = build_email(context)
            values = {
                "message_id": message_id,
                "as_of_date": as_of_date,
                "run_id": run_id,
                "subject": context.subject,
                "sender": sender,
                "recipients": ", ".join(to + cc),
                "mime": msg,
            }
            if existing == "pending":  # a rerun before delivery: today's rendering, same attempts
                conn.execute(
                    sa.text(
                        f"update {OUTBOX_TABLE} set run_id = :run_id, subject = :subject, sender = :sender, "
                        "recipients = :recipients, mime_text = :mime where message_id = :message_id "
                        "and as_of_date = :as_of_date"
                    ),
                    values,
                )
            else:
                conn.execute(
                    sa.text(
                        f"insert into {OUTBOX_TABLE} (message_id, as_of_date, run_id, subject, sender, "
                        "recipients, mime_text, state, attempts, last_error, sent_at) values "
                        "(:message_id, :as_of_date, :run_id, :subject, :sender, :recipients, :mime, "
                        "'pending', 0, null, null)"
                    ),
                    values,
                )
            summary.update(message_id=message_id, subject=context.subject)
        if to_tell:
            for item in to_tell:
                item.state["message_id"] = message_id

        history = pd.DataFrame([i.state for i in items], columns=list(HISTORY_COLUMNS))
        wh.execute(
            conn, f"delete from {HISTORY_TABLE} where as_of_date = {{{{ d }}}}", {"d": as_of_date}
        )
        _load(wh, conn, HISTORY_TABLE, history, HISTORY_COLUMNS)
        wh.execute(
            conn, f"delete from {RUNS_TABLE} where as_of_date = {{{{ d }}}}", {"d": as_of_date}
        )
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

    for event in ("new", "escalated", "worse", "reminder", "ongoing", "resolved", "carried"):
        summary[event] = sum(1 for i in items if i.event == event)
    summary["notified_items"] = len(to_tell)
    log.info("alerts for %s: %s", as_of_date, summary)
    return summary


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


def _message_id(day: dt.date, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "crm-pipeline.local"
    return f"<crm-alerts.{day.isoformat()}@{domain}>"


# -- the email -----------------------------------------------------------------------------
@dataclass
class EmailContext:
    day: dt.date
    run_id: str
    items: list[Item]
    config: AlertConfig
    targets: Targets
    evaluation: pd.DataFrame
    sender: str
    to: list[str]
    cc: list[str]
    message_id: str
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    at_risk: pd.DataFrame | None = None
    at_risk_note: str = ""
    charts: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def load(self, wh: Warehouse, conn: sa.Connection) -> None:
        """Read what the email shows beyond the evaluation: KPI history and customers."""
        open_items = [i for i in self.items if i.event != "resolved"]
        kpis = sorted({i.kpi for i in open_items})
        if kpis:
            history_from = self.day - dt.timedelta(
                days=self.config.chart_days + self.targets.settings.baseline_days
            )
            self.history = read_kpi_daily(wh, history_from, self.day, kpis, conn=conn)
        self.at_risk, self.at_risk_note = at_risk_customers(wh, conn, self.day, self.config.at_risk)
        # one chart for the lead alert of each KPI first, then the others in reading order
        groups = grouped(open_items)
        leads = [items[0] for _, items in groups]
        rest = [i for _, items in groups for i in items[1:]]
        chosen = {i.key for i in (leads + rest)[: self.config.max_charts] if i.spec is not None}
        for _, items in groups:
            for item in items:
                if item.key in chosen:
                    self.charts[item.key] = render_chart(self, item)

    @property
    def subject(self) -> str:
        return email_subject(self)


def grouped(items: list[Item]) -> list[tuple[str, list[Item]]]:
    """Alerts by KPI, the KPI with the most severe alert first; within a KPI the whole base,
    then tiers (vip first), then segments, each by severity and size of the move."""
    order = list(dict.fromkeys(i.kpi for i in items))  # items come most severe first
    return [
        (
            kpi,
            sorted(
                (i for i in items if i.kpi == kpi),
                key=lambda i: (
                    DIMENSION_ORDER.get(i.key[1], 9),
                    -SEVERITY_RANK.get(i.state.get("severity") or "", 0),
                    TIER_ORDER.get(i.key[2], 9) if i.key[1] == "tier" else 0,
                    -abs(_f(i.state.get("change_vs_baseline")) or 0.0),
                    i.key[2],
                ),
            ),
        )
        for kpi in order
    ]


def _n_text(item: Item) -> str:
    n = _f((item.row or {}).get("n"))
    if n is None:
        return ""
    return f"{n:,.0f} {N_LABEL.get(item.kpi, 'observations')}"


def _target_text(spec: KpiSpec, target: float | None) -> str:
    return "no target" if target is None else f"{spec.op()} {spec.fmt(target, True)}"


def email_subject(ctx: EmailContext) -> str:
    """'[CRM] churn_rate breach: vip tier 14.2% (target 10%) — 2026-11-22' and variants."""
    head = ctx.items[0]
    spec = head.spec
    value = _f(head.state.get("value"))
    target = _f(head.state.get("target"))
    where = dimension_text(*head.key[1:])
    fmt = spec.fmt if spec else (lambda v, compact=False: f"{v}")
    ref = (
        f"target {fmt(target, True)}"
        if target is not None
        else f"baseline {fmt(_f(head.state.get('baseline')))}"
    )
    if head.event == "resolved":
        text = f"resolved: {head.kpi} {where} back to {fmt(value)} ({ref})"
    else:
        qualifier = {"worse": ", worse", "escalated": ", escalated", "reminder": ", still"}.get(
            head.event, ""
        )
        text = f"{head.kpi} {head.state['severity']}{qualifier}: {where} {fmt(value)} ({ref})"
    more = len(ctx.items) - 1
    if more:
        text += f" +{more} more"
    return f"{ctx.config.subject_prefix} {text} — {ctx.day.isoformat()}".strip()


def _why(item: Item) -> str:
    spec, s, before = item.spec, item.state, item.previous or {}
    fmt = spec.fmt if spec else str
    last_date = _d(before.get("last_notified_date"))
    if item.event == "new":
        return f"New today (first seen {s['first_seen']})."
    if item.event == "escalated":
        return f"Escalated from warning to breach since the notice of {last_date}."
    if item.event == "worse":
        return (
            f"Worse since the notice of {last_date}: {fmt(_f(before.get('last_value_notified')))} "
            f"→ {fmt(_f(s['value']))}."
        )
    if item.event == "reminder":
        return (
            f"Still firing since {s['first_seen']}; last notice {last_date} "
            f"(reminder after the quiet period)."
        )
    return ""


COLORS = {
    "breach": "#c0392b",
    "warning": "#d97706",
    "resolved": "#2e7d32",
    "ink": "#1f2933",
    "muted": "#616e7c",
    "line": "#e4e7eb",
    "soft": "#f5f7fa",
    "blue": "#1f4e79",
}
E = html.escape


def _badge(text: str, color: str) -> str:
    return (
        f'<span style="display:inline-block;padding:2px 8px;border-radius:10px;'
        f"background:{color};color:#fff;font-size:11px;font-weight:bold;letter-spacing:.5px;"
        f'text-transform:uppercase">{E(text)}</span>'
    )


def _metric(label: str, value: str, sub: str = "", color: str = COLORS["ink"]) -> str:
    return (
        f'<td style="padding:6px 14px 6px 0;vertical-align:top">'
        f'<div style="font-size:11px;color:{COLORS["muted"]};text-transform:uppercase;'
        f'letter-spacing:.4px">{E(label)}</div>'
        f'<div style="font-size:20px;font-weight:bold;color:{color}">{E(value)}</div>'
        f'<div style="font-size:11px;color:{COLORS["muted"]}">{E(sub)}</div></td>'
    )


def _cid(ctx: EmailContext, index: int) -> str:
    domain = ctx.message_id.strip("<>").rpartition("@")[2]
    return f"chart{index}.{ctx.day.isoformat()}@{domain}"


def _chart_cids(ctx: EmailContext) -> dict[tuple[str, str, str], str]:
    return {key: _cid(ctx, i + 1) for i, key in enumerate(ctx.charts)}


def _alert_card_html(ctx: EmailContext, item: Item, cid: str | None) -> str:
    spec, s, row = item.spec, item.state, item.row or {}
    sev = s["severity"]
    color = COLORS.get(sev, COLORS["warning"])
    title = f"{spec.title if spec else item.kpi} — {dimension_text(*item.key[1:])}"
    base, low, high = (
        _f(s.get("baseline")),
        _f(row.get("baseline_low")),
        _f(row.get("baseline_high")),
    )
    fmt = spec.fmt
    metrics = (
        _metric("Value", fmt(_f(s["value"])), _n_text(item), color)
        + _metric("Target", _target_text(spec, _f(s.get("target"))), "")
        + _metric(
            "Baseline",
            fmt(base),
            f"normal {fmt(low)}–{fmt(high)}"
            if low is not None and high is not None
            else "too little history",
        )
        + _metric("Change", spec.fmt_change(_f(s.get("change_vs_baseline"))), "vs baseline")
    )
    chart = (
        f'<div style="font-size:11px;color:{COLORS["muted"]};margin-top:12px">Last '
        f"{ctx.config.chart_days} days: {E(dimension_text(*item.key[1:]))}"
        f"{'' if item.key[1] == 'all' else ' against all customers'}, with the target and the "
        f"normal band</div>"
        f'<img src="cid:{E(cid)}" width="680" alt="{E(title)}: last {ctx.config.chart_days} days, '
        f'with target and normal band" style="display:block;width:100%;max-width:680px;'
        f'border:0;margin-top:4px">'
        if cid
        else ""
    )
    return f"""
<tr><td style="padding:0 24px 18px 24px">
 <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border:1px solid {COLORS["line"]};border-left:5px solid {color};border-radius:4px">
  <tr><td style="padding:14px 16px">
   <div>{_badge(sev, color)} {_badge(item.event, COLORS["muted"])} <span style="font-size:12px;color:{COLORS["muted"]}">{E(item.kpi)}</span></div>
   <div style="font-size:18px;font-weight:bold;margin:8px 0 4px 0;color:{COLORS["ink"]}">{E(title)}</div>
   <table role="presentation" cellpadding="0" cellspacing="0"><tr>{metrics}</tr></table>
   <div style="font-size:13px;color:{COLORS["ink"]};margin-top:6px">{E(_why(item))}</div>
   <div style="font-size:12px;color:{COLORS["muted"]};margin-top:4px">Why it fired: {E(str(row.get("reason") or ""))}</div>
   {chart}
  </td></tr>
 </table>
</td></tr>"""


def breakdown_rows(ctx: EmailContext, kpi: str) -> list[dict[str, Any]]:
    """The day's evaluation rows of a KPI for 'all' and the breakdown dimensions, with
    each group's contribution to the overall change (weighted KPIs only)."""
    ev = ctx.evaluation
    if ev.empty:
        return []
    frame = ev[(ev["kpi"] == kpi) & ev["dimension"].isin(("all", *ctx.config.breakdown_dimensions))]
    records = frame.to_dict("records")
    overall_n = next((_f(r.get("n")) for r in records if r["dimension"] == "all"), None)
    for r in records:
        r["contribution"] = None
        n, change = _f(r.get("n")), _f(r.get("change_vs_baseline"))
        if (
            kpi in WEIGHTED_KPIS
            and r["dimension"] != "all"
            and overall_n
            and n is not None
            and change is not None
        ):
            r["contribution"] = n / overall_n * change
    records.sort(
        key=lambda r: (
            DIMENSION_ORDER.get(r["dimension"], 9),
            TIER_ORDER.get(r["dimension_value"], 9) if r["dimension"] == "tier" else 0,
            -(_f(r.get("n")) or 0) if r["dimension"] != "tier" else 0,
            str(r["dimension_value"]),
        )
    )
    return records


def _breakdown_html(ctx: EmailContext, kpi: str, alerted: set[tuple[str, str, str]]) -> str:
    spec = ctx.targets.spec(kpi)
    records = breakdown_rows(ctx, kpi)
    if spec is None or not records:
        return ""
    weighted = kpi in WEIGHTED_KPIS
    th = (
        f'style="text-align:right;padding:5px 8px;font-size:11px;color:{COLORS["muted"]};'
        f'text-transform:uppercase;border-bottom:2px solid {COLORS["line"]}"'
    )
    head = "".join(
        f"<th {th.replace('right', 'left') if i == 0 else th}>{E(h)}</th>"
        for i, h in enumerate(
            [
                "Group",
                "Value",
                "Target",
                "Baseline",
                "Change",
                *(["Contribution"] if weighted else []),
                "n",
                "Status",
            ]
        )
    )
    body = []
    last_dim = None
    for r in records:
        if r["dimension"] != last_dim:
            last_dim = r["dimension"]
            body.append(
                f'<tr><td colspan="8" style="padding:8px 8px 2px 8px;font-size:11px;font-weight:bold;'
                f'color:{COLORS["muted"]};text-transform:uppercase">{E("overall" if last_dim == "all" else "by " + last_dim)}</td></tr>'
            )
        key = (kpi, r["dimension"], r["dimension_value"])
        status = str(r.get("status") or "")
        flagged = bool(r.get("flagged")) and status != "not_evaluated"
        bg = "#fdecea" if key in alerted else ("#fff7e6" if flagged else "#ffffff")
        scolor = {
            "breach": COLORS["breach"],
            "warn": COLORS["warning"],
            "ok": COLORS["resolved"],
        }.get(status, COLORS["muted"])
        td = f'style="text-align:right;padding:4px 8px;font-size:13px;border-bottom:1px solid {COLORS["line"]}"'
        label = "all customers" if r["dimension"] == "all" else str(r["dimension_value"])
        cells = [
            f'<td style="padding:4px 8px;font-size:13px;border-bottom:1px solid {COLORS["line"]}">{E(label)}</td>',
            f"<td {td}><b>{E(spec.fmt(_f(r.get('value'))))}</b></td>",
            f"<td {td}>{E(spec.fmt(_f(r.get('target')), True) if _f(r.get('target')) is not None else '–')}</td>",
            f"<td {td}>{E(spec.fmt(_f(r.get('baseline'))))}</td>",
            f"<td {td}>{E(spec.fmt_change(_f(r.get('change_vs_baseline'))))}</td>",
        ]
        if weighted:
            contribution = r.get("contribution")
            cells.append(
                f"<td {td}>{E(spec.fmt_change(contribution) if contribution is not None else '')}</td>"
            )
        n = _f(r.get("n"))
        cells.append(f"<td {td}>{E(f'{n:,.0f}' if n is not None else '')}</td>")
        cells.append(
            f'<td {td}><span style="color:{scolor};font-weight:bold">{E(status.replace("_", " "))}</span></td>'
        )
        body.append(f'<tr style="background:{bg}">{"".join(cells)}</tr>')
    note = (
        "Contribution: each group's change weighted by its share of the base (n); the "
        "groups of one breakdown add up to about the overall change. "
        if weighted
        else ""
    )
    return f"""
<tr><td style="padding:4px 24px 18px 24px">
 <div style="font-size:15px;font-weight:bold;color:{COLORS["ink"]};margin-bottom:6px">Where the move comes from: {E(spec.title)}, {ctx.day.isoformat()}</div>
 <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse">
  <tr>{head}</tr>{"".join(body)}
 </table>
 <div style="font-size:11px;color:{COLORS["muted"]};margin-top:4px">{E(note)}Red rows are alerted; amber rows are flagged without a rule. Change is against the group's own baseline (median of its previous {ctx.targets.settings.baseline_days} days).</div>
</td></tr>"""


def _resolved_html(items: list[Item]) -> str:
    if not items:
        return ""
    lines = []
    for item in items:
        spec, s = item.spec, item.state
        title = f"{spec.title if spec else item.kpi} — {dimension_text(*item.key[1:])}"
        value = spec.fmt(_f(s.get("value"))) if spec else str(s.get("value"))
        target = _target_text(spec, _f(s.get("target"))) if spec else ""
        lines.append(
            f'<li style="margin:4px 0">{_badge("resolved", COLORS["resolved"])} <b>{E(title)}</b>: back to '
            f"{E(value)} (target {E(target)}, baseline {E(spec.fmt(_f(s.get('baseline'))) if spec else '')}); "
            f"alert open since {E(str(s.get('first_seen')))}.</li>"
        )
    return f"""
<tr><td style="padding:4px 24px 18px 24px">
 <div style="font-size:15px;font-weight:bold;color:{COLORS["ink"]}">Recovered</div>
 <ul style="padding-left:18px;margin:6px 0;font-size:13px;color:{COLORS["ink"]}">{"".join(lines)}</ul>
</td></tr>"""


def _at_risk_html(ctx: EmailContext) -> str:
    title = (
        f'<div style="font-size:15px;font-weight:bold;color:{COLORS["ink"]};margin-bottom:6px">'
        f"High-value customers now at risk</div>"
    )
    if ctx.at_risk is None or ctx.at_risk.empty:
        return (
            f'<tr><td style="padding:4px 24px 18px 24px">{title}<div style="font-size:13px;'
            f'color:{COLORS["muted"]};background:{COLORS["soft"]};padding:10px;border-radius:4px">'
            f"{E(ctx.at_risk_note)}</div></td></tr>"
        )
    frame = ctx.at_risk
    th = (
        f'style="text-align:left;padding:5px 8px;font-size:11px;color:{COLORS["muted"]};'
        f'text-transform:uppercase;border-bottom:2px solid {COLORS["line"]}"'
    )
    td = f'style="padding:4px 8px;font-size:13px;border-bottom:1px solid {COLORS["line"]};vertical-align:top"'
    cols = ["Customer", "Tier", "Region", "CLV", "Churn risk", "P(alive)", "Why"]
    rows = []
    for r in frame.to_dict("records"):
        name = r.get("name")
        who = (
            f'<b>{E(str(name))}</b><br><span style="color:{COLORS["muted"]};font-size:11px">{E(str(r["customer_id"]))}</span>'
            if name
            else f"<b>{E(str(r['customer_id']))}</b>"
        )
        p_alive = _f(r.get("p_alive"))
        before = _f(r.get("p_alive_before"))
        alive = (
            ""
            if p_alive is None
            else (f"{before:.2f} → {p_alive:.2f}" if before is not None else f"{p_alive:.2f}")
        )
        churn = _f(r.get("churn_probability"))
        rows.append(
            "<tr>"
            f"<td {td}>{who}</td><td {td}>{E(str(r.get('tier') or ''))}</td>"
            f"<td {td}>{E(str(r.get('region') or ''))}</td>"
            f"<td {td}>{E(_money(_f(r.get('clv'))))}</td>"
            f"<td {td}>{E('' if churn is None else f'{churn:.0%}')}</td>"
            f"<td {td}>{E(alive)}</td><td {td}>{E(str(r.get('why') or ''))}</td></tr>"
        )
    head = "".join(f"<th {th}>{E(c)}</th>" for c in cols)
    return f"""
<tr><td style="padding:4px 24px 18px 24px">{title}
 <div style="font-size:12px;color:{COLORS["muted"]};margin-bottom:6px">{E(ctx.at_risk_note)}</div>
 <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse"><tr>{head}</tr>{"".join(rows)}</table>
</td></tr>"""


def _money(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}"


def _footer_text(ctx: EmailContext) -> list[str]:
    return [
        f"Covered day {ctx.day.isoformat()} (UTC), run {ctx.run_id}.",
        f"In the warehouse: select * from {EVALUATION_TABLE} where as_of_date = date "
        f"'{ctx.day.isoformat()}' and flagged; {ALERTS_TABLE} (alert states); "
        f"marts.kpi_daily (every KPI by day and breakdown); {OUTBOX_TABLE} (this email).",
        ctx.config.footer_note,
    ]


def email_html(ctx: EmailContext) -> str:
    cids = _chart_cids(ctx)
    open_items = [i for i in ctx.items if i.event != "resolved"]
    resolved = [i for i in ctx.items if i.event == "resolved"]
    counts = {}
    for item in ctx.items:
        counts[item.event] = counts.get(item.event, 0) + 1
    summary = " · ".join(
        f"{n} {EVENT_WORDS[e]}"
        for e, n in sorted(counts.items(), key=lambda kv: EVENT_ORDER[kv[0]])
    )
    alerted = {i.key for i in open_items}
    sections = []
    for kpi, items in grouped(open_items):
        spec = ctx.targets.spec(kpi)
        sections.append(
            f'<tr><td style="padding:6px 24px 12px 24px"><div style="font-size:13px;'
            f"font-weight:bold;color:{COLORS['muted']};text-transform:uppercase;letter-spacing:.6px;"
            f'padding-bottom:6px;border-bottom:2px solid {COLORS["line"]}">'
            f"{E(spec.title if spec else kpi)}</div></td></tr>"
        )
        sections.extend(_alert_card_html(ctx, i, cids.get(i.key)) for i in items)
        sections.append(_breakdown_html(ctx, kpi, alerted))
    body = _glance_html(ctx, open_items) + "".join(sections)
    footer = "<br>".join(E(line) for line in _footer_text(ctx) if line)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{E(ctx.subject)}</title></head>
<body style="margin:0;padding:0;background:#eef1f5;font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:{COLORS["ink"]}">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#eef1f5"><tr><td align="center" style="padding:20px 8px">
<table role="presentation" width="728" cellpadding="0" cellspacing="0" style="max-width:728px;width:100%;background:#ffffff;border-radius:6px;overflow:hidden">
<tr><td style="background:{COLORS["blue"]};padding:18px 24px;color:#ffffff">
 <div style="font-size:12px;opacity:.8;letter-spacing:.5px;text-transform:uppercase">CRM KPI alerts · {ctx.day.isoformat()}</div>
 <div style="font-size:20px;font-weight:bold;margin-top:4px">{E(_headline(ctx))}</div>
 <div style="font-size:13px;opacity:.9;margin-top:4px">{E(summary)}</div>
</td></tr>
<tr><td style="height:18px"></td></tr>
{body}{_resolved_html(resolved)}{_at_risk_html(ctx)}
<tr><td style="padding:14px 24px 20px 24px;border-top:1px solid {COLORS["line"]};font-size:11px;color:{COLORS["muted"]};line-height:1.5">{footer}</td></tr>
</table></td></tr></table></body></html>"""


def _glance_html(ctx: EmailContext, open_items: list[Item]) -> str:
    """A one-line-per-alert table at the top when there is more than one thing to tell."""
    if len(ctx.items) < 2:
        return ""
    td = f'style="padding:5px 8px;font-size:13px;border-bottom:1px solid {COLORS["line"]}"'
    tdr = td.replace('style="', 'style="text-align:right;')
    rows = []
    for _, items in grouped(open_items):
        for item in items:
            spec, st = item.spec, item.state
            sev = st["severity"]
            rows.append(
                f"<tr><td {td}>{_badge(sev, COLORS.get(sev, COLORS['warning']))}</td>"
                f"<td {td}><b>{E(spec.title if spec else item.kpi)}</b> — "
                f"{E(dimension_text(*item.key[1:]))}</td>"
                f"<td {tdr}><b>{E(spec.fmt(_f(st['value'])))}</b></td>"
                f"<td {tdr}>{E(_target_text(spec, _f(st.get('target'))))}</td>"
                f"<td {tdr}>{E(spec.fmt_change(_f(st.get('change_vs_baseline'))))}</td>"
                f"<td {td}>{E(EVENT_WORDS[item.event])}</td></tr>"
            )
    for item in (i for i in ctx.items if i.event == "resolved"):
        spec, st = item.spec, item.state
        rows.append(
            f"<tr><td {td}>{_badge('resolved', COLORS['resolved'])}</td>"
            f"<td {td}><b>{E(spec.title if spec else item.kpi)}</b> — "
            f"{E(dimension_text(*item.key[1:]))}</td>"
            f"<td {tdr}><b>{E(spec.fmt(_f(st.get('value'))))}</b></td>"
            f"<td {tdr}>{E(_target_text(spec, _f(st.get('target'))))}</td>"
            f"<td {tdr}>{E(spec.fmt_change(_f(st.get('change_vs_baseline'))))}</td>"
            f"<td {td}>{E(EVENT_WORDS['resolved'])}</td></tr>"
        )
    th = (
        f'style="text-align:left;padding:5px 8px;font-size:11px;color:{COLORS["muted"]};'
        f'text-transform:uppercase;border-bottom:2px solid {COLORS["line"]}"'
    )
    thr = th.replace("text-align:left", "text-align:right")
    head = (
        f"<tr><th {th}></th><th {th}>KPI</th><th {thr}>Value</th><th {thr}>Target</th>"
        f"<th {thr}>vs baseline</th><th {th}>News</th></tr>"
    )
    return f"""
<tr><td style="padding:0 24px 22px 24px">
 <div style="font-size:15px;font-weight:bold;color:{COLORS["ink"]};margin-bottom:6px">At a glance</div>
 <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse">{head}{"".join(rows)}</table>
</td></tr>"""


def _headline(ctx: EmailContext) -> str:
    head = ctx.items[0]
    spec = head.spec
    if spec is None:
        return head.state.get("message") or head.kpi
    where = dimension_text(*head.key[1:])
    value = spec.fmt(_f(head.state.get("value")))
    if head.event == "resolved":
        return f"{spec.title} recovered for {where}: {value}"
    target = _f(head.state.get("target"))
    ref = (
        f"target {_target_text(spec, target)}"
        if target is not None
        else f"baseline {spec.fmt(_f(head.state.get('baseline')))}"
    )
    return f"{spec.title} {head.state['severity']} for {where}: {value} ({ref})"


def email_text(ctx: EmailContext) -> str:
    out = [ctx.subject, "=" * min(len(ctx.subject), 78), ""]
    open_items = [i for i in ctx.items if i.event != "resolved"]
    for item in [i for _, items in grouped(open_items) for i in items]:
        spec, s, row = item.spec, item.state, item.row or {}
        out.append(
            f"* {s['severity'].upper()} ({item.event}): {spec.title} — {dimension_text(*item.key[1:])}"
        )
        out.append(f"  value    {spec.fmt(_f(s['value']))}   {_n_text(item)}")
        out.append(f"  target   {_target_text(spec, _f(s.get('target')))}")
        low, high = _f(row.get("baseline_low")), _f(row.get("baseline_high"))
        band = (
            f" (normal {spec.fmt(low)}–{spec.fmt(high)})"
            if low is not None and high is not None
            else ""
        )
        out.append(f"  baseline {spec.fmt(_f(s.get('baseline')))}{band}")
        out.append(f"  change   {spec.fmt_change(_f(s.get('change_vs_baseline')))} vs baseline")
        out.append(f"  {_why(item)}")
        out.append(f"  why it fired: {row.get('reason') or ''}")
        out.append("")
    for kpi in dict.fromkeys(i.kpi for i in open_items):
        spec = ctx.targets.spec(kpi)
        records = breakdown_rows(ctx, kpi)
        if spec is None or not records:
            continue
        out.append(f"Where the move comes from: {spec.title}, {ctx.day.isoformat()}")
        out.append(
            f"  {'group':<24}{'value':>10}{'baseline':>10}{'change':>12}{'contrib.':>12}{'n':>9}  status"
        )
        for r in records:
            label = (
                "all customers"
                if r["dimension"] == "all"
                else f"{r['dimension']}: {r['dimension_value']}"
            )
            contribution = r.get("contribution")
            n = _f(r.get("n"))
            out.append(
                f"  {label[:24]:<24}{spec.fmt(_f(r.get('value'))):>10}{spec.fmt(_f(r.get('baseline'))):>10}"
                f"{spec.fmt_change(_f(r.get('change_vs_baseline'))):>12}"
                f"{(spec.fmt_change(contribution) if contribution is not None else ''):>12}"
                f"{(f'{n:,.0f}' if n is not None else ''):>9}  {r.get('status')}"
            )
        out.append("")
    resolved = [i for i in ctx.items if i.event == "resolved"]
    if resolved:
        out.append("Recovered")
        for item in resolved:
            spec, s = item.spec, item.state
            out.append(
                f"  - {spec.title} — {dimension_text(*item.key[1:])}: back to {spec.fmt(_f(s.get('value')))} "
                f"(target {_target_text(spec, _f(s.get('target')))}); open since {s.get('first_seen')}"
            )
        out.append("")
    out.append("High-value customers now at risk")
    if ctx.at_risk is None or ctx.at_risk.empty:
        out.append(f"  {ctx.at_risk_note}")
    else:
        out.append(f"  {ctx.at_risk_note}")
        for r in ctx.at_risk.to_dict("records"):
            churn = _f(r.get("churn_probability"))
            out.append(
                f"  - {r['customer_id']} {r.get('name') or ''} ({r.get('tier')}, {r.get('region') or '-'}): "
                f"CLV {_money(_f(r.get('clv')))}"
                + (f", churn risk {churn:.0%}" if churn is not None else "")
                + f"; {r.get('why') or ''}"
            )
    out.append("")
    out.append("-- ")
    out.extend(line for line in _footer_text(ctx) if line)
    return "\n".join(out) + "\n"


def build_email(ctx: EmailContext) -> str:
    """The MIME text: multipart/related [multipart/alternative [plain, html], PNG charts]."""
    qp = email_charset.Charset("utf-8")
    qp.body_encoding = email_charset.QP
    seed = hashlib.sha1(f"{ctx.message_id}|{ctx.run_id}".encode()).hexdigest()[:20]
    pol = email_policy.SMTP
    root = MIMEMultipart("related", boundary=f"=_crm_rel_{seed}", policy=pol)
    root.set_param("type", "multipart/alternative")
    root["Subject"] = ctx.subject
    root["From"] = ctx.sender
    root["To"] = ", ".join(ctx.to)
    if ctx.cc:
        root["Cc"] = ", ".join(ctx.cc)
    root["Date"] = formatdate(end_of_day(ctx.day).replace(tzinfo=dt.UTC).timestamp(), usegmt=True)
    root["Message-ID"] = ctx.message_id
    root["X-CRM-As-Of-Date"] = ctx.day.isoformat()
    root["X-CRM-Run-Id"] = ctx.run_id
    alt = MIMEMultipart("alternative", boundary=f"=_crm_alt_{seed}", policy=pol)
    alt.attach(MIMEText(email_text(ctx), "plain", qp, policy=pol))
    alt.attach(MIMEText(email_html(ctx), "html", qp, policy=pol))
    root.attach(alt)
    for key, cid in _chart_cids(ctx).items():
        image = MIMEImage(ctx.charts[key], "png", policy=pol)
        image["Content-ID"] = f"<{cid}>"
        image.add_header(
            "Content-Disposition", "inline", filename=f"{'-'.join(key)}.png".replace(" ", "_")
        )
        root.attach(image)
    text = root.as_string()
    text.encode("ascii")  # 7-bit clean: quoted-printable bodies, RFC 2047 headers
    return text


# -- charts ------------------------------------------------------------------------------
def chart_series(ctx: EmailContext, item: Item) -> pd.DataFrame:
    """Daily value, baseline band and target of an alert's KPI over the chart window."""
    kpi, dimension, dim_value = item.key
    spec = item.spec
    settings = ctx.targets.settings
    days = pd.date_range(
        ctx.day - dt.timedelta(days=settings.baseline_days + ctx.config.chart_days - 1), ctx.day
    )
    hist = ctx.history
    frame = pd.DataFrame(index=days)
    mine = hist[
        (hist["kpi"] == kpi)
        & (hist["dimension"] == dimension)
        & (hist["dimension_value"] == dim_value)
    ]
    frame["value"] = _series(mine, days)
    if dimension != "all":
        overall = hist[(hist["kpi"] == kpi) & (hist["dimension"] == "all")]
        frame["overall"] = _series(overall, days)
    band = baseline_frame(frame["value"], settings, spec.min_band_width)
    frame = frame.join(band)
    frame["target"] = [spec.target_for(d.date(), dimension, dim_value)[0] for d in days]
    return frame.iloc[settings.baseline_days :]


def _series(rows: pd.DataFrame, days: pd.DatetimeIndex) -> pd.Series:
    if rows.empty:
        return pd.Series(float("nan"), index=days)
    s = (
        rows.assign(ts=pd.to_datetime(rows["as_of_date"].map(_d)))
        .drop_duplicates("ts")
        .set_index("ts")["value"]
    )
    return pd.to_numeric(s, errors="coerce").astype(float).reindex(days)


def render_chart(ctx: EmailContext, item: Item) -> bytes:
    """PNG: the KPI's last days, its target (as in force each day) and its normal band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    spec = item.spec
    data = chart_series(ctx, item)
    fig = Figure(figsize=(6.8, 2.3), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = data.index
    ax.fill_between(
        x,
        data["baseline_low"],
        data["baseline_high"],
        color="#dbe7f3",
        linewidth=0,
        label="normal band",
    )
    ax.plot(x, data["baseline"], color="#7f9bb8", linewidth=1, linestyle="--", label="baseline")
    if "overall" in data:
        ax.plot(x, data["overall"], color="#b0b8c1", linewidth=1.2, label="all customers")
    label = dimension_text(*item.key[1:])
    ax.plot(x, data["value"], color=COLORS["blue"], linewidth=2, label=label)
    if data["target"].notna().any():
        ax.step(
            x,
            data["target"],
            where="mid",
            color=COLORS["breach"],
            linewidth=1.2,
            linestyle=(0, (5, 3)),
            label="target",
        )
    last = data["value"].iloc[-1]
    color = COLORS.get(item.state.get("severity"), COLORS["warning"])
    if pd.notna(last):
        ax.scatter([x[-1]], [last], color=color, s=36, zorder=5)
        ax.annotate(
            spec.fmt(last),
            (x[-1], last),
            textcoords="offset points",
            xytext=(-6, 8),
            ha="right",
            fontsize=9,
            fontweight="bold",
            color=color,
        )
    ax.margins(y=0.18)  # room for the value's label above the last point
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: spec.fmt(v, True)))
    ax.tick_params(labelsize=8, colors="#52606d")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#cbd2d9")
    ax.grid(axis="y", color="#eef1f5", linewidth=0.8)
    ax.set_xlim(x[0], x[-1] + pd.Timedelta(days=1))
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=5, frameon=False, fontsize=7.5)
    # fixed margins rather than tight_layout: every chart of the email lines up
    fig.subplots_adjust(left=0.085, right=0.985, top=0.95, bottom=0.24)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# -- high-value customers at risk -------------------------------------------------------------
def at_risk_customers(
    wh: Warehouse, conn: sa.Connection, day: dt.date, settings: Mapping[str, Any]
) -> tuple[pd.DataFrame | None, str]:
    """vip/key customers with a high churn probability or a steep drop in P(alive), by CLV.

    Returns (frame or None, a line for the email: what is shown, or why nothing is).
    """
    tiers = tuple(settings.get("tiers") or ("vip", "key"))
    min_churn = float(settings.get("min_churn_probability", 0.5))
    drop = float(settings.get("p_alive_drop", 0.25))
    lookback = int(settings.get("p_alive_lookback_days", 28))
    limit = int(settings.get("max_customers", 15))
    has = {
        t: wh.table_exists(conn, t)
        for t in ("marts.customer_value_tier", "marts.customer_churn_risk", "marts.customer_clv")
    }
    unavailable = (
        f"Not available yet: the customer models (marts.customer_churn_risk, marts.customer_clv "
        f"with marts.customer_value_tier) have no rows for {day.isoformat()}."
    )
    if not has["marts.customer_value_tier"] or not (
        has["marts.customer_churn_risk"] or has["marts.customer_clv"]
    ):
        return None, unavailable
    params = {"d": day, "before": day - dt.timedelta(days=lookback)}
    tier_list = ", ".join(wh.render("{{ t }}", {"t": t}) for t in tiers)
    frame = read_frame(
        conn,
        wh.render(
            "select customer_id, tier from marts.customer_value_tier "
            f"where as_of_date = {{{{ d }}}} and tier in ({tier_list})",
            params,
        ),
    )
    risk = clv = prev = pd.DataFrame(columns=["customer_id"])
    if has["marts.customer_churn_risk"]:
        cols = wh.columns(conn, "marts.customer_churn_risk")
        reasons = "top_reasons" if "top_reasons" in cols else "cast(null as varchar)"
        risk = read_frame(
            conn,
            wh.render(
                f"select customer_id, churn_probability, risk_band, {reasons} as top_reasons "
                "from marts.customer_churn_risk where as_of_date = {{ d }}",
                params,
            ),
        )
    if has["marts.customer_clv"]:
        clv = read_frame(
            conn,
            wh.render(
                "select customer_id, clv, p_alive from marts.customer_clv where as_of_date = {{ d }}",
                params,
            ),
        )
        prev = read_frame(
            conn,
            wh.render(
                "select customer_id, p_alive as p_alive_before from marts.customer_clv "
                "where as_of_date = {{ before }}",
                params,
            ),
        )
    if risk.empty and clv.empty:
        return None, unavailable
    if frame.empty:
        return None, f"No customer is in the {' or '.join(tiers)} tiers on {day.isoformat()}."
    for other in (risk, clv, prev):
        frame = frame.merge(other, on="customer_id", how="left")
    for col in (
        "churn_probability",
        "risk_band",
        "top_reasons",
        "clv",
        "p_alive",
        "p_alive_before",
    ):
        if col not in frame:
            frame[col] = None
    for col in ("tier", "risk_band", "top_reasons"):  # text: missing is None, never NaN
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    churn = pd.to_numeric(frame["churn_probability"], errors="coerce")
    alive = pd.to_numeric(frame["p_alive"], errors="coerce")
    alive_before = pd.to_numeric(frame["p_alive_before"], errors="coerce")
    high = (churn >= min_churn) | (frame["risk_band"].astype(object) == "high")
    falling = (alive_before - alive) >= drop
    frame = frame[high.fillna(False) | falling.fillna(False)].copy()
    if frame.empty:
        return None, (
            f"No {' or '.join(tiers)} customer has a churn probability of {min_churn:.0%} or more "
            f"or a drop in P(alive) of {drop:.2f} or more over {lookback} days."
        )
    frame["clv"] = pd.to_numeric(frame["clv"], errors="coerce")
    frame["churn_probability"] = pd.to_numeric(frame["churn_probability"], errors="coerce")
    frame["p_alive"] = pd.to_numeric(frame["p_alive"], errors="coerce")
    frame["p_alive_before"] = pd.to_numeric(frame["p_alive_before"], errors="coerce")

    def why(r: Mapping[str, Any]) -> str:
        parts = []
        if _f(r.get("churn_probability")) is not None and (
            r["churn_probability"] >= min_churn or r.get("risk_band") == "high"
        ):
            parts.append(
                str(r.get("top_reasons") or f"churn probability {r['churn_probability']:.0%}")
            )
        before, now = _f(r.get("p_alive_before")), _f(r.get("p_alive"))
        if before is not None and now is not None and before - now >= drop:
            parts.append(f"P(alive) fell from {before:.2f} to {now:.2f} in {lookback} days")
        return "; ".join(parts)

    frame["why"] = [why(r) for r in frame.to_dict("records")]
    total = len(frame)
    frame = frame.sort_values(
        ["clv", "churn_probability", "customer_id"],
        ascending=[False, False, True],
        na_position="last",
    ).head(limit)
    names = _customer_names(wh, conn, day, list(frame["customer_id"]))
    frame = frame.merge(names, on="customer_id", how="left")
    for col in ("name", "region"):
        if col not in frame:
            frame[col] = None
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    shown = f"the {len(frame)} with the highest CLV" if total > len(frame) else "all of them"
    note = (
        f"{total} {' and '.join(tiers)} customer(s) with a churn probability of {min_churn:.0%} "
        f"or more, or P(alive) down {drop:.2f} or more in {lookback} days; {shown}, by CLV."
    )
    return frame.reset_index(drop=True), note


def _customer_names(
    wh: Warehouse, conn: sa.Connection, day: dt.date, ids: list[str]
) -> pd.DataFrame:
    """Name (staging, as known at the end of the day) and region of some customers."""
    out = pd.DataFrame({"customer_id": ids})
    if not ids:
        return out
    by_ids = sa.bindparam("ids", expanding=True)
    if wh.table_exists(conn, "staging.stg_customers"):
        cols = wh.columns(conn, "staging.stg_customers")
        where = "customer_id in :ids"
        params: dict[str, Any] = {"ids": ids}
        if "valid_from" in cols and "valid_to" in cols:
            where += " and valid_from < :end and valid_to >= :end"
            params["end"] = end_of_day(day)
        names = conn.execute(
            sa.text(
                f"select customer_id, name from staging.stg_customers where {where}"
            ).bindparams(by_ids),
            params,
        ).fetchall()
        out = out.merge(
            pd.DataFrame(names, columns=["customer_id", "name"]).drop_duplicates(
                "customer_id", keep="last"
            ),
            on="customer_id",
            how="left",
        )
    if wh.table_exists(conn, "marts.dim_customer") and "region" in wh.columns(
        conn, "marts.dim_customer"
    ):
        regions = conn.execute(
            sa.text(
                "select customer_id, region from marts.dim_customer where customer_id in :ids"
            ).bindparams(by_ids),
            {"ids": ids},
        ).fetchall()
        out = out.merge(
            pd.DataFrame(regions, columns=["customer_id", "region"]).drop_duplicates("customer_id"),
            on="customer_id",
            how="left",
        )
    return out


# -- delivery -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server; the DAG builds it from the `smtp_default` connection."""

    host: str = "127.0.0.1"
    port: int | None = None
    login: str | None = None
    password: str | None = None
    use_ssl: bool = False
    starttls: bool = False
    from_email: str | None = None
    timeout: float = 30.0
    ssl_context: str = "default"  # 'none': no certificate check (lab servers only)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> SmtpSettings:
        known = {k: m[k] for k in cls.__dataclass_fields__ if k in m and m[k] is not None}
        for flag in ("use_ssl", "starttls"):
            if flag in known:
                known[flag] = _truthy(known[flag])
        if "port" in known:
            known["port"] = int(known["port"])
        return cls(**known)

    def describe(self) -> str:
        mode = "ssl" if self.use_ssl else ("starttls" if self.starttls else "plain")
        return f"{self.host}:{self.effective_port} ({mode})"

    @property
    def effective_port(self) -> int:
        return self.port or (465 if self.use_ssl else 587 if self.starttls else 25)


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def smtp_settings_from_connection(conn: Any) -> SmtpSettings:
    """SmtpSettings from an Airflow Connection (or anything with its fields).

    Same reading as the SMTP provider's hook: SSL unless the extra `disable_ssl` is true,
    STARTTLS unless `disable_tls` is true (not both: SSL wins), `from_email`, `timeout`
    and `ssl_context` from the extras. Extras given as strings ('true', 'false', as in an
    AIRFLOW_CONN_SMTP_DEFAULT URI) are read as booleans.
    """
    extra = dict(getattr(conn, "extra_dejson", None) or {})
    use_ssl = not _truthy(extra.get("disable_ssl", False))
    return SmtpSettings(
        host=conn.host or "127.0.0.1",
        port=int(conn.port) if conn.port else None,
        login=conn.login or None,
        password=conn.password or None,
        use_ssl=use_ssl,
        starttls=(not use_ssl) and not _truthy(extra.get("disable_tls", False)),
        from_email=extra.get("from_email") or None,
        timeout=float(extra.get("timeout", 30)),
        ssl_context=str(extra.get("ssl_context") or "default"),
    )


def _open_smtp(s: SmtpSettings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if s.ssl_context == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if s.use_ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            s.host, s.effective_port, timeout=s.timeout, context=context
        )
    else:
        client = smtplib.SMTP(s.host, s.effective_port, timeout=s.timeout)
        if s.starttls:
            client.starttls(context=context)
            client.ehlo()
    if s.login and s.password:
        client.login(s.login, s.password)
    return client


def _set_outbox(wh: Warehouse, message_id: str, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values if k != "attempts_plus")
    if "attempts_plus" in values:
        sets = ", ".join(filter(None, [sets, "attempts = attempts + 1"]))
    params = {k: v for k, v in values.items() if k != "attempts_plus"}
    with wh.begin() as conn:
        conn.execute(
            sa.text(f"update {OUTBOX_TABLE} set {sets} where message_id = :mid"),
            {**params, "mid": message_id},
        )


def send_pending(
    wh: Warehouse,
    smtp: SmtpSettings | Mapping[str, Any],
    *,
    config: str | Path | Mapping[str, Any] | AlertConfig | None = None,
    raise_on_error: bool = True,
) -> dict[str, Any]:
    """Send every pending message of ops.alert_outbox, oldest first; mark each one sent.

    Each message is marked 'sending' (committed) before the SMTP exchange and 'sent'
    right after it, so the only window for a duplicate is a crash between the server's
    acceptance and that second commit. A message found in 'sending' was interrupted in
    that window: `delivery.on_interrupted` says whether it is sent again (resend: at least
    once; the copy has the same Message-ID, which mail systems use to drop duplicates) or
    held for a person (hold: at most once). SMTP unreachable or refusing: the message goes
    back to pending with the error, and AlertDeliveryError is raised (the task fails, its
    retry or the next night sends it).
    """
    cfg = load_alert_config(config)
    settings = smtp if isinstance(smtp, SmtpSettings) else SmtpSettings.from_mapping(smtp)
    with wh.begin() as conn:
        ensure_tables(wh, conn)
        pending = conn.execute(
            sa.text(
                f"select message_id, sender, recipients, mime_text, state from {OUTBOX_TABLE} "
                "where state in ('pending', 'sending') order by as_of_date, message_id"
            )
        ).fetchall()
    result: dict[str, Any] = {"sent": [], "pending": [], "held": [], "errors": []}
    if not pending:
        return result
    todo = []
    for row in pending:
        if row.state == "sending" and cfg.on_interrupted == "hold":
            _set_outbox(
                wh,
                row.message_id,
                state="held",
                last_error="interrupted while sending: may have been delivered; held (on_interrupted: hold)",
            )
            log.warning(
                "outbox: %s was interrupted while sending; held for a person to check",
                row.message_id,
            )
            result["held"].append(row.message_id)
        else:
            if row.state == "sending":
                log.warning(
                    "outbox: %s was interrupted while sending last time: sending again "
                    "(a duplicate, if any, has the same Message-ID)",
                    row.message_id,
                )
            todo.append(row)
    if not todo:
        return result
    try:
        client = _open_smtp(settings)
    except (OSError, smtplib.SMTPException) as exc:
        error = f"SMTP {settings.describe()} unreachable: {type(exc).__name__}: {exc}"
        for row in todo:
            _set_outbox(
                wh, row.message_id, state="pending", last_error=error[:1000], attempts_plus=True
            )
            result["pending"].append(row.message_id)
        result["errors"].append(error)
        log.error("outbox: %s; %d message(s) stay pending in %s", error, len(todo), OUTBOX_TABLE)
        if raise_on_error:
            raise AlertDeliveryError(
                f"{error}; {len(todo)} alert email(s) stay pending in {OUTBOX_TABLE} and go "
                "out on the next attempt"
            ) from exc
        return result
    try:
        for row in todo:
            recipients = parse_addresses(row.recipients)
            envelope_from = settings.from_email or parseaddr(row.sender)[1]
            _set_outbox(wh, row.message_id, state="sending", attempts_plus=True)
            try:
                refused = client.sendmail(envelope_from, recipients, row.mime_text.encode("ascii"))
            except (OSError, smtplib.SMTPException) as exc:
                error = f"SMTP {settings.describe()} did not take {row.message_id}: {type(exc).__name__}: {exc}"
                _set_outbox(wh, row.message_id, state="pending", last_error=error[:1000])
                result["pending"].append(row.message_id)
                result["errors"].append(error)
                log.error("outbox: %s", error)
                continue
            note = f"refused by the server for: {', '.join(refused)}" if refused else None
            _set_outbox(
                wh,
                row.message_id,
                state="sent",
                last_error=note,
                sent_at=dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0),
            )
            if refused:
                log.warning("outbox: %s sent, but %s", row.message_id, note)
            log.info("outbox: sent %s to %s", row.message_id, ", ".join(recipients))
            result["sent"].append(row.message_id)
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    if result["errors"] and raise_on_error:
        raise AlertDeliveryError(
            "; ".join(result["errors"]) + f" (the message stays pending in {OUTBOX_TABLE})"
        )
    return result
