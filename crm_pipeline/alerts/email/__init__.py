"""The nightly manager alert email: what it says and how it looks.

crm_pipeline.alerts decides which alerts the managers must hear about (alert state) and
delivers the message (outbox, SMTP); this module only turns that decision into the
message, so its wording, layout and charts can change without touching either. No Airflow
imports, no warehouse: it renders from plain data.

Grain: one email per covered day (`as_of_date`), `build_email(EmailContext)` -> 7-bit MIME
text, multipart/related [multipart/alternative [plain, HTML], PNG charts]. Inside it: one
card per notified alert, grouped by KPI (the KPI with the most severe alert first); one
breakdown table per alerted KPI (its evaluation rows for all customers and the breakdown
dimensions); one chart per alert, up to `email.max_charts`, lead alert of each KPI first;
one row per high-value customer at risk, up to `at_risk.max_customers`, by CLV. It reads
nothing: the alert stage reads the KPI history and the customers at risk
(crm_pipeline.alerts.stage.read_email_data) and passes them in EmailContext; every date shown comes
from the covered day, never from the clock (the stored Date header is the end of that day;
crm_pipeline.alerts.send_pending dates the message when it sends it).

It imports Item, AlertConfig and the shared orderings from the submodules of
crm_pipeline.alerts (config, state, outbox); none of them imports it back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import charset as email_charset
from email import policy as email_policy
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from typing import Any

import pandas as pd

from crm_pipeline.alerts.config import AlertConfig, dimension_text
from crm_pipeline.alerts.outbox import OUTBOX_TABLE
from crm_pipeline.alerts.state import (
    ALERTS_TABLE,
    DIMENSION_ORDER,
    EVENT_ORDER,
    SEVERITY_RANK,
    TIER_ORDER,
    Item,
    _d,
)
from crm_pipeline.dates import end_of_day
from crm_pipeline.evaluate import (
    EVALUATION_TABLE,
    HIGHER,
    KpiSpec,
    Targets,
    baseline_frame,
    money_text,
)
from crm_pipeline.evaluate import finite_or_none as _f

EVENT_WORDS = {
    "new": "new",
    "escalated": "escalated to breach",
    "worse": "worse since the last notice",
    "reminder": "still firing (reminder)",
    "resolved": "recovered",
}


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


def render_charts(ctx: EmailContext) -> dict[tuple[str, str, str], bytes]:
    """The PNG charts of the email, from `ctx.history`: one for the lead alert of each KPI
    first, then the others in reading order, up to `email.max_charts`."""
    open_items = [i for i in ctx.items if i.event != "resolved"]
    groups = grouped(open_items)
    leads = [items[0] for _, items in groups]
    rest = [i for _, items in groups for i in items[1:]]
    chosen = {i.key for i in (leads + rest)[: ctx.config.max_charts] if i.spec is not None}
    charts = {}
    for _, items in groups:
        for item in items:
            if item.key in chosen:
                charts[item.key] = render_chart(ctx, item)
    return charts


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
            f"normal {spec.fmt_range(low, high)}"
            if low is not None and high is not None
            else "too little history",
        )
        + _metric("Change", spec.fmt_change(_f(s.get("change_vs_baseline"))), "vs baseline")
        + _metric(
            "8–12 weeks ago",
            fmt(_f(row.get("reference"))),
            f"{spec.fmt_change(_f(row.get('change_vs_reference')))} since"
            if _f(row.get("reference")) is not None
            else "too little history",
        )
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
   <div style="font-size:13px;color:{COLORS["ink"]};margin-top:6px">{E(_why(item, ctx.day))}</div>
   <div style="font-size:12px;color:{COLORS["muted"]};margin-top:4px">Why it fired: {E(str(row.get("reason") or ""))}</div>
   {chart}
  </td></tr>
 </table>
</td></tr>"""


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


def _breakdown_html(ctx: EmailContext, kpi: str, alerted: set[tuple[str, str, str]]) -> str:
    spec = ctx.targets.spec(kpi)
    records = breakdown_rows(ctx, kpi)
    if spec is None or not records:
        return ""
    weighted = spec.weighted
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
        word = _status_word(r, key in alerted)
        cells.append(
            f'<td {td}><span style="color:{scolor};font-weight:bold">{E(word)}</span></td>'
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
            f"<td {td}>{E(_money(ctx, _f(r.get('clv'))))}</td>"
            f"<td {td}>{E('' if churn is None else f'{churn:.0%}')}</td>"
            f"<td {td}>{E(alive)}</td><td {td}>{E(str(r.get('why') or ''))}</td></tr>"
        )
    head = "".join(f"<th {th}>{E(c)}</th>" for c in cols)
    return f"""
<tr><td style="padding:4px 24px 18px 24px">{title}
 <div style="font-size:12px;color:{COLORS["muted"]};margin-bottom:6px">{E(ctx.at_risk_note)}</div>
 <table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse"><tr>{head}</tr>{"".join(rows)}</table>
 <div style="font-size:11px;color:{COLORS["muted"]};margin-top:4px">{E(RISK_MEASURES)}</div>
</td></tr>"""


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
            f" (normal {spec.fmt_range(low, high)})" if low is not None and high is not None else ""
        )
        out.append(f"  baseline {spec.fmt(_f(s.get('baseline')))}{band}")
        out.append(f"  change   {spec.fmt_change(_f(s.get('change_vs_baseline')))} vs baseline")
        if _f(row.get("reference")) is not None:
            out.append(
                f"  8-12 weeks ago {spec.fmt(_f(row.get('reference')))} "
                f"({spec.fmt_change(_f(row.get('change_vs_reference')))} since)"
            )
        out.append(f"  {_why(item, ctx.day)}")
        out.append(f"  why it fired: {row.get('reason') or ''}")
        out.append("")
    alerted = {i.key for i in open_items}
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
                f"{(f'{n:,.0f}' if n is not None else ''):>9}  "
                f"{_status_word(r, (kpi, r['dimension'], r['dimension_value']) in alerted)}"
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
                f"CLV {_money(ctx, _f(r.get('clv')))}"
                + (f", churn risk {churn:.0%}" if churn is not None else "")
                + f"; {r.get('why') or ''}"
            )
        out.append(f"  {RISK_MEASURES}")
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
    root["X-CRM-Tables"] = (
        f"{EVALUATION_TABLE} (where as_of_date = '{ctx.day.isoformat()}' and flagged), "
        f"{ALERTS_TABLE}, marts.kpi_daily, {OUTBOX_TABLE}"
    )
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
