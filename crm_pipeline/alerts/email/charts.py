"""The alert email's charts: per alert, the KPI's last `email.chart_days` days with its
target (as in force each day) and its normal band, as a PNG (matplotlib, imported inside).
Drawn from EmailContext.history; reads nothing.
"""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd

from crm_pipeline.alerts.config import dimension_text
from crm_pipeline.alerts.email.context import (
    COLORS,
    EmailContext,
    grouped,
)
from crm_pipeline.alerts.state import (
    Item,
    _d,
)
from crm_pipeline.kpi.stats import baseline_frame


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
