"""What the alert email shows, as data: EmailContext (the day's notified alerts, the
evaluation, and what the alert stage read for the email: KPI history, customers at risk,
rendered charts), the subject, and the words and rows the text and HTML parts share
(why an alert fired, the breakdown rows, the footer, the palette). Reads nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from crm_pipeline.alerts.config import AlertConfig, dimension_text
from crm_pipeline.alerts.state import (
    DIMENSION_ORDER,
    SEVERITY_RANK,
    TIER_ORDER,
    Item,
    _d,
)
from crm_pipeline.kpi.format import money_text
from crm_pipeline.kpi.registry import HIGHER, KpiSpec
from crm_pipeline.kpi.targets import Targets
from crm_pipeline.values import finite_or_none as _f

EVENT_WORDS = {
    "new": "new",
    "escalated": "escalated to breach",
    "worse": "worse since the last notice",
    "reminder": "still firing (reminder)",
    "resolved": "recovered",
}


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
    return f"{n:,.0f} {item.spec.n_label if item.spec else 'observations'}"


def _target_text(spec: KpiSpec, target: float | None) -> str:
    return "no target" if target is None else f"{spec.op()} {spec.fmt(target, True)}"


def email_subject(ctx: EmailContext) -> str:
    """'[CRM] Churn rate (30 days) breach: vip tier 14.2% (target ≤ 10%) — 2026-11-22': the
    first item (the most severe news, headline KPIs first) in the KPI's own words."""
    head = ctx.items[0]
    spec = head.spec
    value = _f(head.state.get("value"))
    target = _f(head.state.get("target"))
    where = dimension_text(*head.key[1:])
    fmt = spec.fmt if spec else (lambda v, compact=False: f"{v}")
    title = spec.title if spec else head.kpi
    row = head.row or {}
    low, high = _f(row.get("baseline_low")), _f(row.get("baseline_high"))
    if target is not None and (head.state.get("severity") == "breach" or head.event == "resolved"):
        ref = f"target {spec.op() if spec else ''} {fmt(target, True)}"
    elif spec is not None and low is not None and high is not None:
        ref = f"normal {spec.fmt_range(low, high)}"
    else:
        ref = f"baseline {fmt(_f(head.state.get('baseline')))}"
    if head.event == "resolved":
        text = f"resolved: {title}, {where} back to {fmt(value)} ({ref})"
    else:
        qualifier = {"worse": ", worse", "escalated": ", escalated", "reminder": ", still"}.get(
            head.event, ""
        )
        text = f"{title} {head.state['severity']}{qualifier}: {where} {fmt(value)} ({ref})"
    more = len(ctx.items) - 1
    if more:
        text += f" +{more} more"
    return f"{ctx.config.subject_prefix} {text} — {ctx.day.isoformat()}".strip()


def _standing(item: Item, day: dt.date) -> str:
    """How long the KPI has been where it is, from its history (not from the alert's state,
    which starts with the first night that alerted): 'Below target since 2026-08-01 (128
    days).', or out of its normal band since, and how far it moved from 8 to 12 weeks ago."""
    spec, row = item.spec, item.row or {}
    if spec is None:
        return ""
    higher = spec.direction == HIGHER
    out = []
    for key, words in (
        ("past_target_since", "Below target" if higher else "Above target"),
        ("outside_band_since", "Out of its normal band"),
    ):
        since = _d(row.get(key))
        if since is not None and since < day:
            out.append(f"{words} since {since.isoformat()} ({(day - since).days + 1} days).")
            break
    reference, change = _f(row.get("reference")), _f(row.get("change_vs_reference"))
    if row.get("slow_move") and reference is not None and change is not None:
        word = "Down" if change < 0 else "Up"
        out.append(
            f"{word} {spec.fmt_change(change).lstrip('+−')} from {spec.fmt(reference)} "
            "8 to 12 weeks ago."
        )
    return " ".join(out)


def _why(item: Item, day: dt.date | None = None) -> str:
    spec, s, before = item.spec, item.state, item.previous or {}
    fmt = spec.fmt if spec else str
    last_date = _d(before.get("last_notified_date"))
    standing = _standing(item, day or _d(s.get("as_of_date")) or dt.date.max)
    if item.event == "new":
        return f"{standing} First alert today." if standing else "New today."
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


def _cid(ctx: EmailContext, index: int) -> str:
    domain = ctx.message_id.strip("<>").rpartition("@")[2]
    return f"chart{index}.{ctx.day.isoformat()}@{domain}"


def _chart_cids(ctx: EmailContext) -> dict[tuple[str, str, str], str]:
    return {key: _cid(ctx, i + 1) for i, key in enumerate(ctx.charts)}


def breakdown_rows(ctx: EmailContext, kpi: str) -> list[dict[str, Any]]:
    """The day's evaluation rows of a KPI for 'all' and the breakdown dimensions, with
    each group's contribution to the overall change (weighted KPIs only)."""
    spec = ctx.targets.spec(kpi)
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
            spec is not None
            and spec.weighted
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


def _status_word(row: Mapping[str, Any], alerted: bool) -> str:
    """Only an alerted row is called a breach; a row past its target that no rule alerts on
    (a segment judged against its own level, say) is 'past target'."""
    status = str(row.get("status") or "").replace("_", " ")
    return "past target" if status == "breach" and not alerted else status


RISK_MEASURES = (
    "Churn risk and P(alive) answer different questions: churn risk is the chance of no "
    "order in the next 90 days, from the customer's recent behaviour (orders, complaints, "
    "surveys); P(alive) is the chance the customer has not left for good, from the rhythm "
    "of their orders alone. A regular customer who has slowed down can still be alive "
    "(0.98) and at risk of a quiet quarter (57%)."
)


def _money(ctx: EmailContext, v: float | None) -> str:
    return "" if v is None else money_text(v, ctx.targets.currency, 0)


def _footer_text(ctx: EmailContext) -> list[str]:
    """What a manager reads at the bottom: the day covered and who to ask. Where the figures
    live in the warehouse is for the data team: in the X-CRM-* headers, not here."""
    return [
        f"Figures as of the end of {ctx.day:%A %-d %B %Y} (UTC).",
        ctx.config.footer_note,
    ]
