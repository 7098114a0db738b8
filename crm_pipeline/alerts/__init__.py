"""Manager alerts: alert state, and delivery of the nightly email through an outbox.

Three steps, each its own DAG task (docs/alerts.md):

1. `process_alerts(wh, as_of_date, run_id)` reads `marts.kpi_evaluation` for the day,
   fires the rules of include/config/alerts.yaml on its flagged rows and moves every alert
   through its states (open -> notified -> resolved). It decides what the managers must
   hear: new alerts, alerts materially worse (or escalated, or still firing after the quiet
   period) and alerts that recovered, has crm_pipeline.alert_email render **one** email for
   all of it and stores it in `ops.alert_outbox`, in the same transaction as the state
   change. Nothing is sent here.
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

This module decides whether there is something to tell and about which alerts, and
delivers the message; how the email reads and looks (HTML, plain text, charts, the at-risk
customers, the MIME message) is crm_pipeline.alert_email. That module reads this one's
Item, AlertConfig and orderings, so this one imports it only inside process_alerts.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, getaddresses, parseaddr
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import yaml

from crm_pipeline.config import CONFIG_DIR
from crm_pipeline.dates import end_of_day
from crm_pipeline.errors import ConfigError
from crm_pipeline.evaluate import (
    EVALUATION_TABLE,
    HIGHER,
    KpiSpec,
    Targets,
    load_targets,
    read_frame,
)
from crm_pipeline.evaluate import finite_or_none as _f
from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger(__name__)

ALERTS_FILE = CONFIG_DIR / "alerts.yaml"
HISTORY_TABLE = tables.ALERT_HISTORY.name
RUNS_TABLE = tables.ALERT_RUNS.name
OUTBOX_TABLE = tables.ALERT_OUTBOX.name
ALERTS_TABLE = "marts.alerts"
SEVERITY_RANK = {"warning": 1, "breach": 2}
NOTIFY_EVENTS = ("new", "escalated", "worse", "reminder", "resolved")
EVENT_ORDER = {"new": 0, "escalated": 1, "worse": 2, "reminder": 3, "resolved": 4}
DIMENSION_ORDER = {"all": 0, "tier": 1, "segment": 2, "region": 3, "channel": 4}
TIER_ORDER = {"vip": 0, "key": 1, "regular": 2, "small": 3, "unassigned": 4}

HISTORY_COLUMNS = tables.ALERT_HISTORY.columns
RUNS_COLUMNS = tables.ALERT_RUNS.columns
OUTBOX_COLUMNS = tables.ALERT_OUTBOX.columns


class AlertDeliveryError(RuntimeError):
    """The SMTP server could not take the email; it stays pending in ops.alert_outbox."""


# -- configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    kpi: str
    dimensions: Mapping[str, tuple[str, ...] | None]  # None: every value
    on: tuple[str, ...] = ("breach", "unusual", "slow")
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
        breach when its target is breached, warning when it only left its normal band (a
        sudden move) or the level of 8 to 12 weeks before (a slow one).
        """
        breached = bool(row.get("target_breached"))
        fired = (
            ("breach" in self.on and breached)
            or ("unusual" in self.on and bool(row.get("unusual_move")))
            or ("slow" in self.on and bool(row.get("slow_move")))
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
            raise ConfigError(f"alerts: rule for {item.get('kpi')}: write fire_on, not on")
        on = tuple(item.get("fire_on") or Rule.on)
        if not set(on) <= set(Rule.on):
            raise ConfigError(
                f"alerts: rule for {item.get('kpi')}: fire_on takes breach, unusual and/or slow"
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
        raise ConfigError("alerts: delivery.on_interrupted must be resend or hold")
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


def uncovered_targets(config: AlertConfig, targets: Targets) -> list[str]:
    """Every target that no rule would alert on: a KPI with a target and no rule that fires
    on its breach for the whole base (or, for a per-dimension target, for that value).

    A target nobody hears about is a plan nobody watches (a complaints target breached for
    months reached no email): the settings check refuses it. A rule with `notify: false`
    counts, since it records the alert in marts.alerts on purpose.
    """
    missing = []
    for kpi, spec in sorted(targets.kpis.items()):
        wanted = set()
        for version in spec.versions:
            if version.target is not None:
                wanted.add(("all", "all"))
            wanted.update(
                key for key, (target, _) in version.overrides.items() if target is not None
            )
        for dimension, value in sorted(wanted):
            rule = config.rule_for(kpi, dimension, value)
            if rule is None or "breach" not in rule.on:
                missing.append(f"{kpi} ({dimension_text(dimension, value)})")
    return missing


def check_rules_cover_targets(config: AlertConfig, targets: Targets) -> None:
    """Raise ConfigError naming each target that no alert rule fires on."""
    missing = uncovered_targets(config, targets)
    if missing:
        raise ConfigError(
            "targets.yaml sets targets that no rule in alerts.yaml alerts on: "
            + ", ".join(missing)
            + ". Add a rule for each (fire_on including breach; notify: false to record "
            "the alert without emailing it) or remove the target."
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
                raise ConfigError(f"not an email address: {addr!r}")
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
def ensure_tables(wh: Warehouse, conn: sa.Connection) -> None:
    wh.ensure(conn, tables.ALERT_HISTORY, tables.ALERT_RUNS, tables.ALERT_OUTBOX)


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
    """The email's order: news before reminders and recoveries, then by severity, then the
    plan's headline KPIs (targets.yaml `headline`) before the operational ones."""
    change = _f(item.state.get("change_vs_baseline")) or 0.0
    return (
        EVENT_ORDER.get(item.event, 9) if item.event in ("reminder", "resolved") else 0,
        -SEVERITY_RANK.get(item.state.get("severity") or "", 0),
        0 if item.spec is not None and item.spec.headline else 1,
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
    # here, not at module level: alert_email imports this module's Item and AlertConfig
    from crm_pipeline.alert_email import EmailContext, build_email

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


def send_now(smtp: SmtpSettings, msg: Any) -> None:
    """Send one message at once, without the outbox: the data engineers' failure notice,
    which concerns a night that has already failed (SMTP errors propagate)."""
    client = _open_smtp(smtp)
    try:
        client.send_message(msg, from_addr=smtp.from_email or parseaddr(str(msg["From"]))[1])
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


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


def _dated(mime_text: str, when: dt.datetime) -> str:
    """The stored message with its Date header set to the moment it is handed to SMTP.

    The message is rendered from the covered day alone (a rerun renders the same bytes and
    the same Message-ID); the Date a reader sees is the send time, as mail clients expect,
    not the end of the covered day."""
    head, sep, body = mime_text.partition("\r\n\r\n")
    if not sep:
        head, sep, body = mime_text.partition("\n\n")
    newline = "\r\n" if sep == "\r\n\r\n" else "\n"
    stamp = f"Date: {formatdate(when.timestamp(), usegmt=True)}"
    lines = head.split(newline)
    dated = [stamp if line.lower().startswith("date:") else line for line in lines]
    if stamp not in dated:
        dated.insert(0, stamp)
    return newline.join(dated) + sep + body


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
            now = dt.datetime.now(dt.UTC)
            try:
                refused = client.sendmail(
                    envelope_from, recipients, _dated(row.mime_text, now).encode("ascii")
                )
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
