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
    r"""Monthly rate that compounds to the annual one.

    Parameters
    ----------
    annual_discount_rate : float
        Yearly discount rate d_year, finite and > -1 (0.10 for 10 %).

    Returns
    -------
    float
        :math:`d = (1 + d_{year})^{1/12} - 1`.
    """
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
    r"""Discounted expected margin over the horizon, per customer.

    Purchases are discounted to the end of the month they fall in; for H = 365 that is 12
    months of 30 days plus a 5-day stub discounted as month 13, so the undiscounted sum
    equals E[Y(365)] * E[value] * margin.

    Parameters
    ----------
    bg_params : FitResult, mapping or sequence
        BG/NBD parameters r, alpha, a, b.
    gg_params : FitResult, mapping or sequence
        Gamma-Gamma parameters p, q, v (q > 1).
    frequency, recency, T : array_like
        Repeat purchase days x, time of the last purchase t_x and age T, both measured from
        the first purchase in one time unit (0 <= t_x <= T); broadcast to one shape.
    monetary_value : array_like
        Mean value m of the repeat purchases (see :func:`expected_avg_value`).
    margin_ratio : float or array_like
        Margin / net revenue, a scalar or one value per customer; 1.0 gives discounted revenue.
    horizon_days : float
        Horizon H, > 0, in the unit of recency and T.
    annual_discount_rate : float
        Yearly discount rate, turned into a monthly one by :func:`monthly_discount_rate`.
    month_length : float
        Length L of a discounting month in the unit of recency and T (30 for days, 30/7
        for weeks).

    Returns
    -------
    numpy.ndarray
        CLV per customer (1-D, one per customer after broadcasting).

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284 (E[Y(t)], eq. 10).
    .. [2] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf (E[Z]).

    With :math:`t_m = \min(m L, H)`, :math:`M = \lceil H / L \rceil` and d the monthly rate:

    .. math::

        \text{CLV} = \sum_{m=1}^{M} \frac{E[Y(t_m)] - E[Y(t_{m-1})]}{(1 + d)^m}
        \, E[Z \mid x, m] \, \text{margin}
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
