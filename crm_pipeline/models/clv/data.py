"""The models' inputs from transactions: one row of sufficient statistics per customer."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import pandas as pd

__all__ = [
    "SUMMARY_COLUMNS",
    "summary_from_transactions",
]


def _day(value: date | datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_localize(None)
    return ts.normalize()


def _days_column(series: pd.Series) -> pd.Series:
    """Calendar day of each timestamp (time of day and time zone dropped, local date kept)."""
    s = pd.to_datetime(series)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_localize(None)
    return s.dt.normalize()


SUMMARY_COLUMNS = [
    "customer_id",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "first_purchase",
    "n_purchases_total",
    "historic_value",
]


def summary_from_transactions(
    df: pd.DataFrame,
    customer_col: str,
    date_col: str,
    value_col: str,
    as_of: date | datetime | str,
    *,
    days_per_unit: float = 1.0,
) -> pd.DataFrame:
    """Per-customer sufficient statistics from a transactions frame (one row per purchase).

    Only transactions on or before ``as_of`` count. Purchases on the same calendar day are
    merged into one purchase whose value is the day's net total (the models cannot tell
    same-day orders apart and would otherwise see impossible zero gaps). Per customer:

    * frequency: purchase days - 1; recency: last - first purchase day; T: as_of - first
      purchase day; both divided by ``days_per_unit`` (7 for weeks);
    * monetary_value: mean net value of the repeat purchase days (first day excluded, as the
      Gamma-Gamma model requires), 0.0 when frequency = 0;
    * first_purchase (a date), n_purchases_total (transaction rows, before merging days),
      historic_value (net value of all transactions to date).

    Every row counts as a purchase, refunds included: net them upstream if a refund-only day
    should not count. Rows without customer or date are ignored; a missing value raises.
    Sorted by customer_id.
    """
    missing = [c for c in (customer_col, date_col, value_col) if c not in df.columns]
    if missing:
        raise ValueError(f"transactions frame lacks columns {missing}")
    if not (math.isfinite(days_per_unit) and days_per_unit > 0):
        raise ValueError("days_per_unit must be > 0")
    cutoff = _day(as_of)
    tx = pd.DataFrame(
        {
            "customer_id": df[customer_col].to_numpy(),
            "day": _days_column(df[date_col]).to_numpy(),
            "value": pd.to_numeric(df[value_col]).to_numpy(dtype=float),
        }
    )
    tx = tx[tx["customer_id"].notna() & tx["day"].notna()]
    if tx["value"].isna().any():
        raise ValueError(f"{int(tx['value'].isna().sum())} transactions have no {value_col}")
    tx = tx[tx["day"] <= cutoff]
    if tx.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in SUMMARY_COLUMNS})

    daily = (
        tx.groupby(["customer_id", "day"], sort=True)["value"].agg(["sum", "size"]).reset_index()
    )
    per = daily.groupby("customer_id", sort=True)
    first_day = per["day"].min()
    last_day = per["day"].max()
    n_days = per["day"].size()
    total = per["sum"].sum()
    first_value = per["sum"].first()  # daily is sorted by day within customer
    frequency = n_days - 1
    repeat_value = total - first_value
    monetary = np.where(frequency > 0, repeat_value / frequency.clip(lower=1), 0.0)
    out = pd.DataFrame(
        {
            "customer_id": first_day.index,
            "frequency": frequency.to_numpy(dtype=np.int64),
            "recency": (last_day - first_day).dt.days.to_numpy(dtype=float) / days_per_unit,
            "T": (cutoff - first_day).dt.days.to_numpy(dtype=float) / days_per_unit,
            "monetary_value": monetary.astype(float),
            "first_purchase": first_day.dt.date.to_numpy(),
            "n_purchases_total": per["size"].sum().to_numpy(dtype=np.int64),
            "historic_value": total.to_numpy(dtype=float),
        }
    )
    return out.reset_index(drop=True)
