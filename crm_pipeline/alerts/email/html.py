"""The HTML part of the alert email: a header, the glance table, one card per alert with
its chart, the breakdown tables, the recoveries and the customers at risk. Inline styles
only (mail clients drop style sheets); every value is escaped.
"""

from __future__ import annotations

import functools
import html

import jinja2
from markupsafe import Markup

from crm_pipeline.alerts.config import dimension_text
from crm_pipeline.alerts.email.context import (
    COLORS,
    EVENT_WORDS,
    RISK_MEASURES,
    EmailContext,
    _chart_cids,
    _footer_text,
    _money,
    _n_text,
    _status_word,
    _target_text,
    _why,
    breakdown_rows,
    grouped,
)
from crm_pipeline.alerts.state import (
    EVENT_ORDER,
    Item,
)
from crm_pipeline.config import TEMPLATE_DIR
from crm_pipeline.values import finite_or_none as _f

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


@functools.cache
def _template() -> jinja2.Template:
    """include/templates/alert_email.html: the page around the cards and tables. Autoescape
    on; the pieces built here come in as Markup (escaped with html.escape, as before)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("alert_email.html")


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
    return _template().render(
        title=Markup(E(ctx.subject)),
        colors=COLORS,
        day=ctx.day.isoformat(),
        headline=Markup(E(_headline(ctx))),
        summary=Markup(E(summary)),
        body=Markup(body),
        resolved=Markup(_resolved_html(resolved)),
        at_risk=Markup(_at_risk_html(ctx)),
        footer=Markup(footer),
    )


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
