"""The yardstick: what most tutorials do, on the same source, in its own environment.

    bench/.venv-yardstick/bin/python bench/yardstick.py SOURCE.db DAY

Plain pandas over the source's orders: RFM scores and segments, the 1/4/15/80 value tiers
and the contract's order-based KPIs for one day, then `lifetimes` (BG/NBD + Gamma-Gamma,
the archived reference library). Prints one JSON line of timings. It reads the source
directly (no versions, no validation): what it does is a subset of the pipeline's work, so
the ratio flatters it.
"""

import datetime as dt
import json
import sqlite3
import sys
import time

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data


def main() -> None:
    path, day = sys.argv[1], pd.Timestamp(dt.date.fromisoformat(sys.argv[2]))
    out = {}
    t = time.perf_counter()
    with sqlite3.connect(path) as conn:
        orders = pd.read_sql(
            "select customer_id, ordered_at, status, net_amount, cost_amount from orders",
            conn,
            parse_dates=["ordered_at"],
        )
    out["load_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    orders = orders[
        (orders["status"] == "completed") & (orders["ordered_at"] < day + pd.Timedelta(days=1))
    ]
    orders["date"] = orders["ordered_at"].dt.normalize()
    orders["margin"] = orders["net_amount"] - orders["cost_amount"]
    year = orders[orders["date"] > day - pd.Timedelta(days=365)]
    rfm = year.groupby("customer_id").agg(
        last=("date", "max"), frequency=("date", "size"), monetary=("net_amount", "sum")
    )
    rfm["recency"] = (day - rfm["last"]).dt.days
    for col, asc in (("recency", False), ("frequency", True), ("monetary", True)):
        rank = rfm[col].rank(method="min", ascending=asc)
        rfm[col[0] + "_score"] = (5 * (rank - 1) // len(rfm) + 1).astype(int)
    rfm["segment"] = "Other"
    rfm.loc[(rfm.r_score == 5) & (rfm.f_score >= 4), "segment"] = "Champions"
    rfm.loc[(rfm.r_score <= 2) & (rfm.f_score >= 3), "segment"] = "At risk"
    tiers = year.groupby("customer_id")["margin"].sum().sort_values(ascending=False).to_frame()
    share = (pd.RangeIndex(len(tiers)) * 100) / len(tiers)
    tiers["tier"] = pd.cut(
        share, [-1, 1, 5, 20, 101], right=False, labels=["vip", "key", "regular", "small"]
    ).astype(str)
    first = orders.groupby("customer_id")["date"].min()
    active = set(orders.loc[orders["date"] > day - pd.Timedelta(days=90), "customer_id"])
    then = day - pd.Timedelta(days=30)
    start = orders[(orders["date"] > then - pd.Timedelta(days=90)) & (orders["date"] <= then)]
    cohort = set(start["customer_id"])
    period = orders[orders["date"] > day - pd.Timedelta(days=30)]
    kpis = {
        "active_customers": len(active),
        "churn_rate": len(cohort - active) / len(cohort) if cohort else None,
        "new_customers": int((first > day - pd.Timedelta(days=30)).sum()),
        "aov": float(period["net_amount"].mean()),
        "purchase_frequency": len(period) / period["customer_id"].nunique(),
    }
    out["rfm_tiers_kpis_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = summary_data_from_transaction_data(
        orders,
        "customer_id",
        "date",
        monetary_value_col="net_amount",
        observation_period_end=day,
        freq="D",
    )
    out["lifetimes_summary_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    bg = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    gg = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])
    out["lifetimes_fit_seconds"] = time.perf_counter() - t
    out["total_seconds"] = sum(v for k, v in out.items() if k.endswith("_seconds"))
    out["customers"] = len(summary)
    out["bgnbd"] = {k: float(v) for k, v in bg.params_.items()}
    out["gamma_gamma"] = {k: float(v) for k, v in gg.params_.items()}
    out["kpis"] = kpis
    out["segments"] = int(rfm["segment"].nunique()) + int(tiers["tier"].nunique())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
