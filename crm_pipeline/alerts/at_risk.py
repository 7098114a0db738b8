"""High-value customers at risk, for the alert email: vip/key customers (settings
`at_risk` of alerts.yaml) with a high churn probability or a steep drop in P(alive), by CLV,
from the latest scores the model gate published. Read by the alert stage, shown by the email.

The selection is include/sql/alerts/at_risk.sql (the tiers, the scores on their days, the
two thresholds), so only the few customers at risk leave the warehouse, not a day of scores
per customer; here: which night's scores are the latest published, the reason each customer
is listed, the order, the names, and the sentence the email says about it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline.dates import end_of_day
from crm_pipeline.values import finite_or_none as _f
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse.frames import read_rows


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
    marts = ("marts.customer_value_tier", "marts.customer_churn_risk", "marts.customer_clv")
    unavailable = (
        f"Not available yet: the customer models (marts.customer_churn_risk, marts.customer_clv "
        f"with marts.customer_value_tier) have no rows for {day.isoformat()}."
    )
    # the models stage creates both model marts (empty) the first time it runs
    if not all(wh.table_exists(conn, t) for t in marts):
        return None, unavailable
    # the latest scores the model gate published, on the day or (held that night) before
    max_age = int(settings.get("max_score_age_days", 7))
    days = {t: _latest_published(conn, t, day, max_age) for t in marts[1:]}
    if all(d is None for d in days.values()):
        return None, unavailable
    held = [
        f"{'Churn risk' if t.endswith('churn_risk') else 'CLV and P(alive)'} as of {d}: the "
        f"model gate held the scores of {day} (ops.model_runs says why)."
        for t, d in days.items()
        if d is not None and d < day
    ]
    held_note = "".join(f" {h}" for h in held)
    params = {
        "d": day,
        "tiers": tiers,
        "risk_d": days["marts.customer_churn_risk"],
        "clv_d": days["marts.customer_clv"],
        "before": (days["marts.customer_clv"] or day) - dt.timedelta(days=lookback),
        "min_churn": min_churn,
        "p_alive_drop": drop,
    }
    frame = read_rows(conn, wh.render(wh.sql_file("alerts", "at_risk"), params))
    for col in ("tier", "risk_band", "top_reasons"):  # text: missing is None, never NaN
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    if frame.empty:
        tiered = conn.execute(
            sa.text(
                "select count(*) from marts.customer_value_tier "
                "where as_of_date = :d and tier in :tiers"
            ).bindparams(sa.bindparam("tiers", expanding=True)),
            {"d": day, "tiers": list(tiers)},
        ).scalar()
        if not tiered:
            return None, (
                f"No customer is in the {' or '.join(tiers)} tiers on {day.isoformat()}.{held_note}"
            )
        return None, (
            f"No {' or '.join(tiers)} customer has a churn probability of {min_churn:.0%} or more "
            f"or a drop in P(alive) of {drop:.2f} or more over {lookback} days.{held_note}"
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
        f"{held_note}"
    )
    return frame.reset_index(drop=True), note


def _latest_published(
    conn: sa.Connection, table: str, day: dt.date, max_age_days: int
) -> dt.date | None:
    """The latest as_of_date of a model mart on or before the day, at most max_age_days old."""
    latest = conn.execute(
        sa.text(
            f"select max(as_of_date) from {table} where as_of_date <= :d and as_of_date >= :lo"
        ),
        {"d": day, "lo": day - dt.timedelta(days=max_age_days)},
    ).scalar()
    if latest is None:
        return None
    return latest if isinstance(latest, dt.date) else dt.date.fromisoformat(str(latest)[:10])


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
