"""Alert state: the pure transitions of a day (no I/O) and where the state lives.

Every alert moves open -> notified -> resolved. `transitions` takes the day's evaluation
rows and the state after the previous processed day and returns each active or firing
alert's outcome (an Item): new, escalated, worse, reminder, ongoing, resolved or carried,
and whether the managers must hear about it. `_sort_key` is the email's reading order.

State lives in `ops.alert_history` (one row per alert per processed day: the state after
that day) and `ops.alert_runs` (the days processed); `marts.alerts` is the latest row of
each alert (crm_pipeline.alerts.stage writes them).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crm_pipeline.alerts.config import AlertConfig, Rule, dimension_text
from crm_pipeline.dates import end_of_day
from crm_pipeline.kpi.registry import HIGHER, KpiSpec
from crm_pipeline.kpi.targets import Targets
from crm_pipeline.values import finite_or_none as _f
from crm_pipeline.warehouse import tables

HISTORY_TABLE = tables.ALERT_HISTORY.name
RUNS_TABLE = tables.ALERT_RUNS.name
ALERTS_TABLE = "marts.alerts"
HISTORY_COLUMNS = tables.ALERT_HISTORY.columns
RUNS_COLUMNS = tables.ALERT_RUNS.columns
SEVERITY_RANK = {"warning": 1, "breach": 2}
NOTIFY_EVENTS = ("new", "escalated", "worse", "reminder", "resolved")
EVENT_ORDER = {"new": 0, "escalated": 1, "worse": 2, "reminder": 3, "resolved": 4}
DIMENSION_ORDER = {"all": 0, "tier": 1, "segment": 2, "region": 3, "channel": 4}
TIER_ORDER = {"vip": 0, "key": 1, "regular": 2, "small": 3, "unassigned": 4}


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
