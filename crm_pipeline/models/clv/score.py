"""The CLV of a day: both fits on the buyers' summary and every score, as the nightly publishes it.

Why it exists: the one CLV pipeline. The nightly models stage (crm_pipeline.models.stage)
calls :func:`fit_clv` on the buyers known at the end of the day, the week's training calls
:func:`fit_bgnbd_on` and :func:`purchase_scores` at its cut-offs, and
:func:`fit_and_score` (one frame in, one frame out, for a summary built with
:func:`summary_from_transactions`) goes through the same path. Grain: one row per customer
of the summary (frequency, recency, T, monetary_value and, for margins and the small-data
fallback, historic_value, historic_margin, n_orders).

The fits run on the distinct rows of the summary weighted by their counts (exact, and much
faster: many customers share a row). Below ``clv.small_data_customers`` buyers the fits are
penalised (mode 'small_data'), a Gamma-Gamma fit that does not converge is replaced by
:func:`fallback_gamma_gamma`, and a BG/NBD fit that does not converge leaves nothing to
publish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from crm_pipeline.errors import ConfigError
from crm_pipeline.models.clv.bgnbd import expected_purchases, fit_bgnbd, p_alive
from crm_pipeline.models.clv.common import FitResult
from crm_pipeline.models.clv.data import _day
from crm_pipeline.models.clv.gamma_gamma import expected_avg_value, fit_gamma_gamma
from crm_pipeline.models.clv.value import clv

__all__ = [
    "HOLDOUT_DAYS",
    "SCORE_COLUMNS",
    "ClvFit",
    "fallback_gamma_gamma",
    "fit_and_score",
    "fit_bgnbd_on",
    "fit_clv",
    "fit_gamma_gamma_on",
    "margin_ratios",
    "purchase_scores",
]

#: the days of expected_purchases_90 (a churn feature) and of the CLV holdout
HOLDOUT_DAYS = 90


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass
class ClvFit:
    """The night's CLV: both fits, what scored (fitted or fallback Gamma-Gamma), the
    scores per customer, and why nothing is published when that is so."""

    bg: FitResult
    gg: FitResult
    mode: str
    penalizer: float
    gg_params: dict[str, float] = field(default_factory=dict)  # what scored: fitted or fallback
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # the customers scored
    gg_fallback: str = ""  # why the small-data fallback replaced the Gamma-Gamma fit
    skipped: str = ""  # why there is nothing to publish (no buyers, small data not fittable)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, Any] = field(default_factory=dict)


def penalizer_for(n_customers: int, cfg: Mapping[str, Any]) -> tuple[str, float]:
    """(mode, penalizer) for that many buyers: 'small_data' with `clv.small_data_penalizer`
    below `clv.small_data_customers`, else 'normal' with `clv.penalizer`."""
    c = cfg["clv"]
    if n_customers < int(c["small_data_customers"]):
        return "small_data", float(c["small_data_penalizer"])
    return "normal", float(c["penalizer"])


def fit_bgnbd_on(summary: pd.DataFrame, penalizer: float, maxiter: int) -> FitResult:
    r"""BG/NBD on the distinct (x, t_x, T) rows of the summary, weighted by their counts: the
    frame adapter of :func:`crm_pipeline.models.clv.fit_bgnbd`, the one estimator.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per customer with ``frequency`` x, ``recency`` t_x and ``T``.
    penalizer : float
        L2 penalty on the parameters (lifetimes' penalizer_coef), >= 0.
    maxiter : int
        Optimiser iterations.

    Returns
    -------
    FitResult
        r, alpha, a, b; the same as an unweighted fit on every customer's row.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf

    Maximises :math:`\sum_k w_k \log L(r, \alpha, a, b \mid x_k, t_{x,k}, T_k)` over the
    distinct rows k, :math:`w_k` the number of customers on row k.
    """
    rows = summary.groupby(["frequency", "recency", "T"], sort=True).size().reset_index(name="w")
    return fit_bgnbd(
        rows["frequency"].to_numpy(float),
        rows["recency"].to_numpy(float),
        rows["T"].to_numpy(float),
        weights=rows["w"].to_numpy(float),
        penalizer=penalizer,
        maxiter=maxiter,
    )


def fit_gamma_gamma_on(summary: pd.DataFrame, penalizer: float, maxiter: int) -> FitResult:
    r"""Gamma-Gamma on the distinct (x, mean repeat spend) rows of the repeat buyers: the
    frame adapter of :func:`crm_pipeline.models.clv.fit_gamma_gamma`, the one estimator.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per customer with ``frequency`` x and ``monetary_value`` m (mean value of
        the repeat purchase days); only rows with x > 0 and m > 0 are fitted.
    penalizer : float
        L2 penalty on the parameters, >= 0.
    maxiter : int
        Optimiser iterations.

    Returns
    -------
    FitResult
        p, q, v.

    References
    ----------
    .. [2] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    Maximises :math:`\sum_k w_k \log L(p, q, v \mid x_k, \bar m_k)` over the distinct
    (x, m) rows k of the repeat buyers, :math:`w_k` their counts.
    """
    buyers = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    rows = buyers.groupby(["frequency", "monetary_value"], sort=True).size().reset_index(name="w")
    return fit_gamma_gamma(
        rows["frequency"].to_numpy(float),
        rows["monetary_value"].to_numpy(float),
        weights=rows["w"].to_numpy(float),
        penalizer=penalizer,
        maxiter=maxiter,
    )


def usable(fit: FitResult) -> bool:
    """Fitted on some data, every parameter finite and > 0 (converged or not)."""
    return fit.n > 0 and all(_finite(v) and v > 0 for v in fit.params.values())


def purchase_scores(bg: FitResult, summary: pd.DataFrame, horizon: float) -> pd.DataFrame:
    r"""P(alive), expected purchases in the horizon and in the next 90 days, per customer.

    Parameters
    ----------
    bg : FitResult
        A BG/NBD fit; when it is not :func:`usable` (or the summary is empty) every score
        is NaN.
    summary : pandas.DataFrame
        One row per customer with ``customer_id``, ``frequency``, ``recency``, ``T``.
    horizon : float
        The horizon of ``expected_purchases``, in the summary's time unit.

    Returns
    -------
    pandas.DataFrame
        customer_id, p_alive, expected_purchases (over `horizon`), expected_purchases_90
        (over HOLDOUT_DAYS), in the summary's row order.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf

    :math:`P(\text{alive})` and :math:`E[Y(t) \mid x, t_x, T]` (FHL eq. 10) as
    :func:`crm_pipeline.models.clv.p_alive` and
    :func:`crm_pipeline.models.clv.expected_purchases` compute them.
    """
    x = summary["frequency"].to_numpy(float)
    tx = summary["recency"].to_numpy(float)
    big_t = summary["T"].to_numpy(float)
    out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
    if not usable(bg) or summary.empty:
        for c in ("p_alive", "expected_purchases", "expected_purchases_90"):
            out[c] = np.nan
        return out
    out["p_alive"] = p_alive(bg, x, tx, big_t)
    out["expected_purchases"] = expected_purchases(bg, horizon, x, tx, big_t)
    out["expected_purchases_90"] = expected_purchases(bg, HOLDOUT_DAYS, x, tx, big_t)
    return out


def margin_ratios(summary: pd.DataFrame, cfg: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    r"""Per customer margin / net revenue, shrunk toward the company's ratio by credibility
    n / (n + k) with n the customer's completed orders (or the company's for everyone).

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per customer with ``historic_value`` (net revenue to date),
        ``historic_margin`` and ``n_orders`` (completed orders).
    cfg : mapping
        The models settings; reads ``clv.margin`` ('customer' or 'company') and
        ``clv.margin_shrinkage_orders`` k.

    Returns
    -------
    (numpy.ndarray, float)
        The ratio per customer, and the company's ratio
        :math:`\rho = \sum \text{margin} / \sum \text{value}` (1 when there is no
        revenue).

    References
    ----------
    .. [1] Bühlmann, H. & Gisler, A. (2005). A Course in Credibility Theory and its
           Applications. Springer (the credibility weight n / (n + k)).

    For 'customer':
    :math:`\rho_i = \frac{n_i}{n_i + k} \frac{\text{margin}_i}{\text{value}_i}
    + \frac{k}{n_i + k} \rho` (the company's ratio where the customer has no revenue).
    """
    value = summary["historic_value"].to_numpy(float)
    margin = summary["historic_margin"].to_numpy(float)
    company = float(margin.sum() / value.sum()) if value.sum() > 0 else 1.0
    if cfg["clv"]["margin"] == "company":
        return np.full(len(summary), company), company
    if cfg["clv"]["margin"] != "customer":
        raise ConfigError(
            f"clv.margin must be 'customer' or 'company', got {cfg['clv']['margin']!r}"
        )
    n = summary["n_orders"].to_numpy(float)
    k = float(cfg["clv"]["margin_shrinkage_orders"])
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(value > 0, margin / value, company)
    weight = n / (n + k) if k > 0 else np.ones_like(n)
    return weight * own + (1.0 - weight) * company, company


def _gg_ok(fit: FitResult) -> bool:
    """A Gamma-Gamma fit that can score: converged, usable, and q > 1 (a finite mean)."""
    return fit.converged and usable(fit) and fit.params["q"] > 1.0


def fallback_gamma_gamma(summary: pd.DataFrame, prior_purchases: float) -> dict[str, float]:
    r"""Gamma-Gamma parameters set, not fitted, for a business too small to fit them.

    p = 1, q = 1 + k, v = k * mu (mu = mean net value of a purchase day over all buyers)
    make the model's expected value per purchase (v + x m) p / (p x + q - 1) equal to
    (x m + k mu) / (x + k): the customer's own mean spend, credibility-weighted against
    mu as if the population had contributed k purchases.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per buyer with ``frequency`` and ``historic_value``.
    prior_purchases : float
        k, the purchases the population's mean counts for (> 0).

    Returns
    -------
    dict
        ``{"p": 1, "q": 1 + k, "v": k mu}``, or empty when mu or k is not > 0.

    References
    ----------
    .. [2] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    With these parameters the Gamma-Gamma expected value per purchase
    :math:`E[M \mid x, \bar m] = \frac{(v + x \bar m) p}{p x + q - 1}` is
    :math:`\frac{x \bar m + k \mu}{x + k}`, with
    :math:`\mu = \sum_i \text{value}_i / \sum_i (x_i + 1)`.
    """
    days = float((summary["frequency"] + 1).sum())
    mu = float(summary["historic_value"].sum()) / days if days else 0.0
    k = float(prior_purchases)
    if not (mu > 0 and k > 0):
        return {}
    return {"p": 1.0, "q": 1.0 + k, "v": k * mu}


def fit_clv(
    summary: pd.DataFrame, cfg: Mapping[str, Any], margin_ratio: np.ndarray | None = None
) -> ClvFit:
    r"""Both fits on the buyers known at d and every score: the one CLV pipeline.

    In small-data mode (fewer than clv.small_data_customers buyers) a Gamma-Gamma fit that
    does not converge is replaced by :func:`fallback_gamma_gamma`, and a BG/NBD fit that
    does not converge leaves nothing to publish (recorded as skipped, not as a failure).

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per buyer: ``customer_id``, ``frequency``, ``recency``, ``T``,
        ``monetary_value``, and for the margins and the fallback ``historic_value``,
        ``historic_margin``, ``n_orders``; times in days (or any one unit).
    cfg : mapping
        The models settings; reads the ``clv`` section (horizon_days,
        annual_discount_rate, margin, margin_shrinkage_orders, penalizer, maxiter,
        small_data_customers, small_data_penalizer, small_data_prior_purchases).
    margin_ratio : array_like, optional
        The margin ratio per summary row, when the caller has one; None (the nightly): from
        the summary's historic margin by :func:`margin_ratios`.

    Returns
    -------
    ClvFit
        The fits, the mode, ``scores`` (customer_id, p_alive, expected_purchases,
        expected_purchases_90, expected_avg_value, margin_ratio, clv; NaN where a fit is
        not usable) and ``metrics`` (what ops.model_runs records).

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf
    .. [2] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    :math:`\text{CLV}_i = \rho_i \, E[M \mid x_i, \bar m_i] \sum_{m=1}^{M}
    \frac{E[Y_m \mid x_i, t_{x,i}, T_i]}{(1 + d)^m}`, :math:`Y_m` the purchases in
    discounting month m of the horizon and d the monthly rate
    (:func:`crm_pipeline.models.clv.clv`).
    """
    c = cfg["clv"]
    mode, penalizer = penalizer_for(len(summary), cfg)
    bg = fit_bgnbd_on(summary, penalizer, int(c["maxiter"]))
    gg = fit_gamma_gamma_on(summary, penalizer, int(c["maxiter"]))
    fitted = ClvFit(bg=bg, gg=gg, mode=mode, penalizer=penalizer, summary=summary)
    fitted.gg_params = dict(gg.params) if _gg_ok(gg) else {}
    if summary.empty:
        fitted.skipped = "no completed purchase known at the end of the day"
    elif mode == "small_data" and not bg.converged:
        fitted.skipped = (
            f"small data ({len(summary)} buyers): the BG/NBD fit did not converge ({bg.message})"
        )
    if mode == "small_data" and not fitted.gg_params and not fitted.skipped:
        k = float(c["small_data_prior_purchases"])
        fitted.gg_params = fallback_gamma_gamma(summary, k)
        fitted.gg_fallback = (
            f"small data: the Gamma-Gamma fit on {gg.n} repeat buyers did not converge "
            f"({gg.message}); expected value per purchase = (x m + k mu) / (x + k) with "
            f"k = {k:g} (p = 1, q = 1 + k, v = k mu)"
        )
    horizon = float(c["horizon_days"])
    scores = purchase_scores(bg, summary, horizon)
    if margin_ratio is None:
        margin, company = margin_ratios(summary, cfg)
    else:
        margin, company = np.broadcast_to(np.asarray(margin_ratio, dtype=float), len(summary)), None
    x = summary["frequency"].to_numpy(float)
    m = summary["monetary_value"].to_numpy(float)
    if usable(bg) and fitted.gg_params:
        scores["expected_avg_value"] = expected_avg_value(fitted.gg_params, x, m)
        scores["clv"] = clv(
            bg,
            fitted.gg_params,
            x,
            summary["recency"].to_numpy(float),
            summary["T"].to_numpy(float),
            m,
            margin,
            horizon,
            float(c["annual_discount_rate"]),
        )
    else:
        scores["expected_avg_value"] = np.nan
        scores["clv"] = np.nan
    scores["margin_ratio"] = margin
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    corr = (
        float(np.corrcoef(repeat["frequency"], repeat["monetary_value"])[0, 1])
        if len(repeat) > 2
        and repeat["frequency"].nunique() > 1
        and repeat["monetary_value"].nunique() > 1
        else None
    )
    fitted.scores = scores
    fitted.metrics = {
        "mode": mode,
        "penalizer": penalizer,
        "n_customers": len(summary),
        "n_repeat_buyers": len(repeat),
        "company_margin_ratio": None if company is None else round(company, 4),
        "corr_frequency_monetary": None if corr is None else round(corr, 4),
        "total_clv": round_finite(scores["clv"].sum(), 2) if scores["clv"].notna().all() else None,
        "mean_clv": round_finite(scores["clv"].mean(), 2) if scores["clv"].notna().all() else None,
        "mean_p_alive": round_finite(scores["p_alive"].mean()),
        "horizon_days": int(horizon),
    }
    return fitted


def round_finite(value: Any, digits: int = 4) -> float | None:
    """The value rounded, or None when it is not a finite number (strict JSON)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, digits) if math.isfinite(value) else None


def fit_summary(fit: FitResult) -> dict[str, Any]:
    """A fit as ops.model_runs records it: FitResult.to_dict without the model name."""
    d = fit.to_dict()
    d.pop("model", None)
    return d


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
) -> tuple[pd.DataFrame, FitResult, FitResult]:
    r"""Fit both models on ``summary`` and score every customer in it, by :func:`fit_clv`.

    A thin call into the nightly's pipeline for a summary built with
    :func:`summary_from_transactions` (any time unit; discounting months of 30 units):
    the same weighted fits, the same Gamma-Gamma condition (converged, q > 1) and the same
    scores, with the given penalizer for any number of customers (no small-data mode) and
    the given margin instead of the nightly's margin rule.

    Parameters
    ----------
    summary : pandas.DataFrame
        customer_id, frequency, recency, T, monetary_value (other columns are ignored
        unless ``margin_ratio`` names one).
    as_of : date, datetime or str
        The day the summary was built for (the ``as_of`` column).
    horizon_days : float
        Horizon of ``expected_purchases`` and ``clv``, in the summary's time unit.
    annual_discount_rate : float
        Yearly discount rate of :func:`crm_pipeline.models.clv.clv`.
    margin_ratio : float, sequence or str
        A scalar, one value per summary row, or the name of a summary column.
    penalizer : float
        L2 penalty of both fits.
    maxiter : int
        Optimiser iterations per fit.

    Returns
    -------
    (pandas.DataFrame, FitResult, FitResult)
        The scores, one row per customer with SCORE_COLUMNS, and the BG/NBD and
        Gamma-Gamma fits. A column is NaN where the fit it depends on is not usable (no
        customer, no repeat buyer with positive value, parameters not finite and > 0, or
        for Gamma-Gamma not converged or q <= 1): check ``bg_fit.converged and
        gg_fit.converged`` before publishing them.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf
    .. [2] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    The formulas are those of :func:`fit_clv`.
    """
    required = ["customer_id", "frequency", "recency", "T", "monetary_value"]
    missing = [c for c in required if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}")
    if isinstance(margin_ratio, str):
        margin = summary[margin_ratio].to_numpy(dtype=float)
    else:
        margin = np.broadcast_to(np.asarray(margin_ratio, dtype=float), len(summary))
    settings = {
        "horizon_days": horizon_days,
        "annual_discount_rate": annual_discount_rate,
        "penalizer": penalizer,
        "maxiter": maxiter,
        "small_data_customers": 0,  # never small-data mode: the given penalizer throughout
        "small_data_penalizer": penalizer,
        "small_data_prior_purchases": 0,
    }
    fitted = fit_clv(summary, {"clv": settings}, margin_ratio=margin)
    n = len(summary)
    s = fitted.scores
    scores = pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "as_of": [_day(as_of).date()] * n,
            "horizon_days": np.full(n, float(horizon_days)),
            "frequency": summary["frequency"].to_numpy(dtype=float),
            "recency": summary["recency"].to_numpy(dtype=float),
            "T": summary["T"].to_numpy(dtype=float),
            "monetary_value": summary["monetary_value"].to_numpy(dtype=float),
            "p_alive": s["p_alive"].to_numpy(dtype=float),
            "expected_purchases": s["expected_purchases"].to_numpy(dtype=float),
            "expected_avg_value": s["expected_avg_value"].to_numpy(dtype=float),
            "clv": s["clv"].to_numpy(dtype=float),
        },
        columns=SCORE_COLUMNS,
    )
    return scores, fitted.bg, fitted.gg
