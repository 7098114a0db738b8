"""Holdout checks of a BG/NBD fit: actual repeat purchases after the calibration end, and
predicted against actual, overall and by decile (the nightly model-health gate).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from crm_pipeline.models.clv.common import _float_array
from crm_pipeline.models.clv.data import _day, _days_column

__all__ = [
    "holdout_comparison",
    "holdout_repeat_purchases",
]


def holdout_repeat_purchases(
    df: pd.DataFrame,
    customer_col: str,
    date_col: str,
    calibration_end: date | datetime | str,
    holdout_end: date | datetime | str,
) -> pd.Series:
    """Actual purchase days in (calibration_end, holdout_end] per calibration customer.

    Counts distinct purchase days (same-day purchases merged, as in the calibration summary)
    for every customer whose first purchase is on or before ``calibration_end``; customers
    with no holdout purchase get 0. Indexed by customer_id, sorted, named
    ``actual_purchases``: align it with scores made at ``calibration_end`` with horizon
    ``holdout_end - calibration_end``.
    """
    cal_end = _day(calibration_end)
    hold_end = _day(holdout_end)
    if hold_end <= cal_end:
        raise ValueError("holdout_end must be after calibration_end")
    tx = pd.DataFrame(
        {"customer_id": df[customer_col].to_numpy(), "day": _days_column(df[date_col]).to_numpy()}
    )
    tx = tx[tx["customer_id"].notna() & tx["day"].notna()]
    first = tx.groupby("customer_id", sort=True)["day"].min()
    customers = first.index[first <= cal_end]
    hold = tx[(tx["day"] > cal_end) & (tx["day"] <= hold_end)].drop_duplicates()
    counts = hold.groupby("customer_id")["day"].size()
    out = counts.reindex(customers, fill_value=0).astype(np.int64)
    out.index.name = "customer_id"
    return out.rename("actual_purchases")


def holdout_comparison(predicted, actual, n_groups: int = 10) -> pd.DataFrame:
    """Predicted vs actual holdout purchases, overall and by group (decile) of prediction.

    Customers are ranked by prediction (ties broken by position) and cut into ``n_groups``
    groups of equal size: group 1 has the lowest predictions, group n_groups the highest.
    One row per group plus a first row ``segment='all'`` with group NA. Columns: segment,
    group, n_customers, predicted_sum, actual_sum, predicted_mean, actual_mean,
    relative_error (predicted_sum / actual_sum - 1, NaN when actual_sum is 0: the number a
    gate bounds), mae (mean absolute per-customer error).
    """
    pred = np.ravel(_float_array(predicted, "predicted"))
    act = np.ravel(_float_array(actual, "actual"))
    if pred.size != act.size:
        raise ValueError("predicted and actual differ in length")
    if n_groups < 1:
        raise ValueError("n_groups must be >= 1")
    n = pred.size
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(pred, kind="stable")] = np.arange(1, n + 1)
    group = np.ceil(rank * n_groups / max(n, 1)).astype(np.int64)

    def row(segment: str, grp: Any, mask: np.ndarray) -> dict[str, Any]:
        p, a = pred[mask], act[mask]
        ps, as_ = float(p.sum()), float(a.sum())
        return {
            "segment": segment,
            "group": grp,
            "n_customers": int(mask.sum()),
            "predicted_sum": ps,
            "actual_sum": as_,
            "predicted_mean": float(p.mean()) if p.size else float("nan"),
            "actual_mean": float(a.mean()) if a.size else float("nan"),
            "relative_error": ps / as_ - 1.0 if as_ != 0 else float("nan"),
            "mae": float(np.abs(p - a).mean()) if p.size else float("nan"),
        }

    rows = [row("all", pd.NA, np.ones(n, dtype=bool))]
    for g in range(1, n_groups + 1):
        rows.append(row(f"group_{g:02d}", g, group == g))
    out = pd.DataFrame(rows)
    out["group"] = out["group"].astype("Int64")
    return out
