"""Gamma-Gamma (Fader & Hardie 2013): likelihood, fit and expected value per purchase.

The value of each purchase is Gamma(p, nu) with nu ~ Gamma(q, v) across customers,
independent of the purchase process. Inputs are each repeat buyer's number of repeat
purchases x and their mean value m.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
from scipy import special

from crm_pipeline.models.clv.common import (
    GAMMA_GAMMA_PARAM_NAMES,
    FitResult,
    ParamsLike,
    _distinct,
    _float_array,
    _params,
    _weights,
    _wsum,
)
from crm_pipeline.models.clv.fitting import _LOG_BOUND, _empty_fit, _optimise

__all__ = [
    "expected_avg_value",
    "fit_gamma_gamma",
    "gamma_gamma_loglik",
]

# Gamma-Gamma needs q > 1 for a finite population mean spend (the x = 0 fallback).
_Q_MIN = 1.0 + 1e-6


def _gamma_gamma_terms(
    log_params: np.ndarray, x, m, by_x: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log density of the mean spend m over x purchases, and its log-parameter gradient.

    f(m | x) = G(px+q) / (G(px) G(q)) * v^q m^(px-1) x^(px) / (v + x m)^(px+q), rearranged
    with log1p so that neither tiny nor huge spends lose precision. The gamma and digamma
    terms depend on x alone: computed once per distinct x (`by_x`, as for BG/NBD).
    """
    p, q, v = np.exp(log_params)
    ux, xi = by_x if by_x is not None else np.unique(x, return_inverse=True)
    xi = np.ravel(xi)
    upx = p * ux
    g_ll = special.gammaln(upx + q) - special.gammaln(upx) - special.gammaln(q)
    u_psi = special.digamma(upx + q)
    g_dp = ux * (u_psi - special.digamma(upx))
    g_dq = u_psi - special.digamma(q)
    px = p * x
    xm = x * m
    lv = np.log1p(v / xm)
    lx = np.log1p(xm / v)
    ll = g_ll[xi] - np.log(m) - px * lv - q * lx
    d_p = g_dp[xi] - x * lv
    d_q = g_dq[xi] - lx
    d_v = (q * xm / v - px) / (v + xm)
    return ll, np.vstack([d_p * p, d_q * q, d_v * v])


def gamma_gamma_loglik(params: ParamsLike, frequency, monetary_value, weights=None) -> float:
    r"""Total Gamma-Gamma log-likelihood of repeat buyers (x >= 1, mean value > 0).

    Parameters
    ----------
    params : FitResult, mapping or sequence
        Gamma-Gamma parameters p, q, v (``v`` is the note's gamma), all finite and > 0.
    frequency : array_like
        Repeat purchases x of each buyer, >= 1.
    monetary_value : array_like
        Mean value m of those purchases, > 0.
    weights : array_like, optional
        One count per row (default 1).

    Returns
    -------
    float
        :math:`\sum_i w_i \log f(m_i \mid x_i)`.

    References
    ----------
    .. [1] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    The density of the mean spend over x purchases ([1]_, with :math:`\gamma` = v):

    .. math::

        f(m \mid p, q, \gamma, x) = \frac{\Gamma(p x + q)}{\Gamma(p x) \Gamma(q)}
        \frac{\gamma^q m^{p x - 1} x^{p x}}{(\gamma + m x)^{p x + q}}
    """
    x = np.ravel(_float_array(frequency, "frequency"))
    m = np.ravel(_float_array(monetary_value, "monetary_value"))
    w = _weights(weights, x.size)
    if np.any(x < 1) or np.any(m <= 0):
        raise ValueError("Gamma-Gamma needs frequency >= 1 and monetary_value > 0")
    ll, _ = _gamma_gamma_terms(np.log(_params(params, GAMMA_GAMMA_PARAM_NAMES)), x, m)
    return _wsum(w, ll)


def fit_gamma_gamma(
    frequency,
    monetary_value,
    weights=None,
    penalizer: float = 0.0,
    *,
    maxiter: int = 1000,
) -> FitResult:
    r"""Fit Gamma-Gamma (params p, q, v; v is the note's gamma) by maximum likelihood.

    Only repeat buyers carry information: rows with x = 0 or a non-positive mean value are
    dropped (counted in the message), so the whole customer summary can be passed in. q is
    kept above 1 so that the population mean spend p v / (q - 1) exists; a fit pinned at that
    bound reports ``converged=False``. Rows are compressed to distinct (x, m) with weights.
    The model assumes spend is independent of purchase frequency: check
    corr(frequency, monetary_value) over repeat buyers before trusting it.

    Parameters
    ----------
    frequency : array_like
        Repeat purchases x per customer (>= 0).
    monetary_value : array_like
        Mean value m of the repeat purchases per customer.
    weights : array_like, optional
        One count per row (default 1); rows with weight 0 are ignored.
    penalizer : float
        L2 penalty on (p, q, v) added to the mean negative log-likelihood; 0 = plain MLE.
    maxiter : int
        Most L-BFGS-B iterations.

    Returns
    -------
    FitResult
        ``model="gamma_gamma"``, params p, q, v, the total log-likelihood, standard errors,
        ``converged`` and why not.

    References
    ----------
    .. [1] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    The estimates maximise :math:`\sum_i w_i \log f(m_i \mid p, q, \gamma, x_i)` with f as
    in :func:`gamma_gamma_loglik` ([1]_), subject to q > 1.
    """
    t0 = time.perf_counter()
    x = np.ravel(_float_array(frequency, "frequency"))
    m = np.ravel(_float_array(monetary_value, "monetary_value"))
    if x.size != m.size:
        raise ValueError("frequency and monetary_value differ in length")
    if np.any(x < 0):
        raise ValueError("frequency must be >= 0")
    w = _weights(weights, x.size)
    usable = (x >= 1) & (m > 0) & (w > 0)
    notes_info = []
    dropped = int(np.count_nonzero((w > 0) & ~usable))
    if dropped:
        notes_info.append(f"{dropped} rows without repeat purchases or with value <= 0 excluded")
    (x, m), w, _ = _distinct([x[usable], m[usable]], w[usable])
    if w.size == 0:
        msg = "; ".join(["no repeat buyers with positive value to fit", *notes_info])
        return _empty_fit("gamma_gamma", GAMMA_GAMMA_PARAM_NAMES, msg, penalizer, t0)
    mean_m = _wsum(w, m) / float(w.sum())
    x0 = np.log([1.0, 2.0, mean_m])  # start with population mean p v / (q - 1) = mean spend
    x0 = np.clip(x0, -_LOG_BOUND + 1, _LOG_BOUND - 1)
    ux, xi = np.unique(x, return_inverse=True)
    bounds = [(-_LOG_BOUND, _LOG_BOUND), (math.log(_Q_MIN), _LOG_BOUND), (-_LOG_BOUND, _LOG_BOUND)]
    fit = _optimise(
        "gamma_gamma",
        GAMMA_GAMMA_PARAM_NAMES,
        lambda theta, rows: _gamma_gamma_terms(theta, x[rows], m[rows], (ux, xi[rows])),
        w,
        x0,
        bounds,
        np.ones(3),
        penalizer,
        maxiter,
        [],
        t0,
    )
    if notes_info:
        fit = replace(fit, message="; ".join([fit.message, *notes_info]))
    return fit


def expected_avg_value(gg_params: ParamsLike, frequency, monetary_value) -> np.ndarray:
    r"""E[value per purchase | x, m]: the Gamma-Gamma conditional expectation.

    A credibility-weighted average of the population mean p v / (q - 1) and the customer's
    own mean m, with weight p x / (p x + q - 1) on m. For x = 0, or a non-positive or missing
    repeat mean (refunds), the population mean. Requires q > 1 (guaranteed by
    :func:`fit_gamma_gamma`); raises ValueError otherwise.

    Parameters
    ----------
    gg_params : FitResult, mapping or sequence
        Gamma-Gamma parameters p, q, v (``v`` is the note's gamma), all finite and > 0.
    frequency : array_like
        Repeat purchases x per customer (>= 0).
    monetary_value : array_like
        Mean value m of the repeat purchases (NaN or <= 0 counts as no information).

    Returns
    -------
    numpy.ndarray
        Expected value per purchase, in the broadcast shape of (x, m).

    References
    ----------
    .. [1] Fader, P. S. & Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary
           value. http://brucehardie.com/notes/025/gamma_gamma.pdf

    From [1]_, with :math:`\gamma` = v:

    .. math::

        E[Z \mid p, q, \gamma, m, x] = \frac{(\gamma + m x) p}{p x + q - 1}
        = \frac{q - 1}{p x + q - 1} \frac{p \gamma}{q - 1} + \frac{p x}{p x + q - 1} m
    """
    p, q, v = _params(gg_params, GAMMA_GAMMA_PARAM_NAMES)
    if q <= 1.0:
        raise ValueError("Gamma-Gamma population mean spend is undefined for q <= 1")
    x = _float_array(frequency, "frequency")
    m = np.asarray(monetary_value, dtype=float)
    x, m = np.broadcast_arrays(x, m)
    if np.any(x < 0):
        raise ValueError("frequency must be >= 0")
    out = np.full(x.shape, p * v / (q - 1.0))
    use = (x >= 1) & np.isfinite(m) & (m > 0)
    out[use] = (v + x[use] * m[use]) * p / (p * x[use] + q - 1.0)
    return out
