"""Fit both models on a summary and score every customer in it (one frame, no warehouse).

Not the production path: the nightly models stage fits and scores with
``crm_pipeline.models.nightly.fit_clv`` (small-data mode, margins, the published rows).
:func:`fit_and_score` is used only by tests/unit/test_clv.py, whose CDNOW holdout test
asserts a frame shape (``SCORE_COLUMNS``, an ``as_of`` column) that fit_clv does not
produce; it goes when that test is pointed at fit_clv (issue 14, item 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd

from crm_pipeline.models.clv.bgnbd import expected_purchases, fit_bgnbd, p_alive
from crm_pipeline.models.clv.common import FitResult
from crm_pipeline.models.clv.data import _day
from crm_pipeline.models.clv.gamma_gamma import expected_avg_value, fit_gamma_gamma
from crm_pipeline.models.clv.value import clv

__all__ = [
    "SCORE_COLUMNS",
    "fit_and_score",
]

SCORE_COLUMNS = [
    "customer_id",
    "as_of",
    "horizon_days",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "p_alive",
    "expected_purchases",
    "expected_avg_value",
    "clv",
]


def fit_and_score(
    summary: pd.DataFrame,
    as_of: date | datetime | str,
    horizon_days: float = 365.0,
    annual_discount_rate: float = 0.10,
    margin_ratio: float | Sequence[float] | np.ndarray | str = 1.0,
    *,
    penalizer: float = 0.0,
    maxiter: int = 1000,
    month_length: float = 30.0,
) -> tuple[pd.DataFrame, FitResult, FitResult]:
    """Fit both models on ``summary`` and score every customer in it.

    ``summary`` is the output of :func:`summary_from_transactions` (customer_id, frequency,
    recency, T, monetary_value; other columns are ignored). ``margin_ratio`` is a scalar,
    one value per summary row, or the name of a summary column. Returns (scores, bg_fit,
    gg_fit); scores has one row per customer with SCORE_COLUMNS, ``expected_purchases`` over
    ``horizon_days``. The scores are computed even when a fit did not converge: check
    ``bg_fit.converged and gg_fit.converged`` before publishing them. If either fit had no
    data at all (no customers, or no repeat buyer with positive value), the columns that
    depend on it are NaN.
    """
    required = ["customer_id", "frequency", "recency", "T", "monetary_value"]
    missing = [c for c in required if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}")
    x = summary["frequency"].to_numpy(dtype=float)
    tx = summary["recency"].to_numpy(dtype=float)
    TT = summary["T"].to_numpy(dtype=float)
    m = summary["monetary_value"].to_numpy(dtype=float)
    if isinstance(margin_ratio, str):
        margin = summary[margin_ratio].to_numpy(dtype=float)
    else:
        margin = np.broadcast_to(np.asarray(margin_ratio, dtype=float), x.shape)

    bg = fit_bgnbd(x, tx, TT, penalizer=penalizer, maxiter=maxiter)
    gg = fit_gamma_gamma(x, m, penalizer=penalizer, maxiter=maxiter)
    n = x.size
    nan = np.full(n, np.nan)
    bg_ok = n > 0 and all(math.isfinite(v) for v in bg.params.values())
    gg_ok = n > 0 and all(math.isfinite(v) for v in gg.params.values())
    alive = p_alive(bg, x, tx, TT) if bg_ok else nan
    purchases = expected_purchases(bg, horizon_days, x, tx, TT) if bg_ok else nan
    value = expected_avg_value(gg, x, m) if gg_ok else nan
    if bg_ok and gg_ok:
        lifetime = clv(
            bg,
            gg,
            x,
            tx,
            TT,
            m,
            margin,
            horizon_days,
            annual_discount_rate,
            month_length=month_length,
        )
    else:
        lifetime = nan
    scores = pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "as_of": [_day(as_of).date()] * n,
            "horizon_days": np.full(n, float(horizon_days)),
            "frequency": x,
            "recency": tx,
            "T": TT,
            "monetary_value": m,
            "p_alive": alive,
            "expected_purchases": purchases,
            "expected_avg_value": value,
            "clv": lifetime,
        },
        columns=SCORE_COLUMNS,
    )
    return scores, bg, gg
