"""Customer lifetime value: BG/NBD purchases per month times Gamma-Gamma value, discounted."""

from __future__ import annotations

import math

import numpy as np

from crm_pipeline.models.clv.bgnbd import _expected_given_alive, p_alive
from crm_pipeline.models.clv.common import (
    BGNBD_PARAM_NAMES,
    ParamsLike,
    _distinct,
    _float_array,
    _params,
    _rfm_arrays,
)
from crm_pipeline.models.clv.gamma_gamma import expected_avg_value

__all__ = [
    "clv",
    "monthly_discount_rate",
]


def monthly_discount_rate(annual_discount_rate: float) -> float:
    """Monthly rate that compounds to the annual one: (1 + annual)^(1/12) - 1."""
    if not (math.isfinite(annual_discount_rate) and annual_discount_rate > -1.0):
        raise ValueError("annual_discount_rate must be finite and > -1")
    return (1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0


def _monthly_purchases(params, x, tx, TT, horizon: float, month_length: float) -> np.ndarray:
    """Expected repeat purchases per discounting month, shape (n customers, n months).

    Month m covers ((m-1) L, min(m L, H)], so the months add up to E[Y(H)] exactly; the last
    one is a stub when H is not a multiple of L. E[Y | alive] depends on (x, T) only, so it
    is evaluated once per distinct (x, T) and month end, then scaled by P(alive).
    """
    r, alpha, a, b = _params(params, BGNBD_PARAM_NAMES)
    n_months = max(1, math.ceil(horizon / month_length - 1e-9))
    ends = np.minimum(np.arange(1, n_months + 1) * month_length, horizon)
    (xu, Tu), _, inverse = _distinct([x, TT])
    cum = _expected_given_alive(r, alpha, a, b, ends[None, :], xu[:, None], Tu[:, None])
    monthly = np.diff(cum, axis=1, prepend=0.0)
    monthly = np.maximum(monthly, 0.0)  # E[Y(t)] is increasing; clip rounding noise only
    return monthly[inverse] * p_alive(params, x, tx, TT)[:, None]


def clv(
    bg_params: ParamsLike,
    gg_params: ParamsLike,
    frequency,
    recency,
    T,
    monetary_value,
    margin_ratio=1.0,
    horizon_days: float = 365.0,
    annual_discount_rate: float = 0.10,
    *,
    month_length: float = 30.0,
) -> np.ndarray:
    """Discounted expected margin over the horizon, per customer.

        CLV = sum_{m=1..M} [E[Y(t_m)] - E[Y(t_{m-1})]] * E[value] * margin / (1 + d)^m

    with t_m = min(m L, H), M = ceil(H / L), L = ``month_length`` (30 days), H =
    ``horizon_days``, d = (1 + annual_discount_rate)^(1/12) - 1 and E[value] from
    :func:`expected_avg_value`. Purchases are discounted to the end of the month they fall
    in; for H = 365 that is 12 months of 30 days plus a 5-day stub discounted as month 13,
    so the undiscounted sum equals E[Y(365)] * E[value] * margin. ``horizon_days`` and
    ``month_length`` are in the unit of recency and T (for weeks use month_length=30/7).
    ``margin_ratio`` is a scalar or one value per customer; 1.0 gives discounted revenue.
    """
    if not (math.isfinite(horizon_days) and horizon_days > 0):
        raise ValueError("horizon_days must be finite and > 0")
    if not (math.isfinite(month_length) and month_length > 0):
        raise ValueError("month_length must be finite and > 0")
    d = monthly_discount_rate(annual_discount_rate)
    x, tx, TT = (np.ravel(v) for v in _rfm_arrays(frequency, recency, T))
    m = np.ravel(np.broadcast_to(np.asarray(monetary_value, dtype=float), x.shape))
    margin = np.ravel(np.broadcast_to(_float_array(margin_ratio, "margin_ratio"), x.shape))
    value = expected_avg_value(gg_params, x, m)
    if x.size == 0:
        return np.zeros(0)
    monthly = _monthly_purchases(bg_params, x, tx, TT, float(horizon_days), float(month_length))
    discount = (1.0 + d) ** -np.arange(1, monthly.shape[1] + 1, dtype=float)
    return np.sum(monthly * discount, axis=1) * value * margin
