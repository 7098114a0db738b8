"""The plain-text part of the alert email: the same content as the HTML part, in words."""

from __future__ import annotations

from crm_pipeline.alerts.config import dimension_text
from crm_pipeline.alerts.email.context import (
    RISK_MEASURES,
    EmailContext,
    _footer_text,
    _money,
    _n_text,
    _status_word,
    _target_text,
    _why,
    breakdown_rows,
    grouped,
)
from crm_pipeline.values import finite_or_none as _f


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
