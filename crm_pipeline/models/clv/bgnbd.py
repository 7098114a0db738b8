"""BG/NBD (Fader, Hardie & Lee 2005): likelihood, fit, expected purchases and P(alive).

While alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after
each repeat purchase they drop out with probability p ~ Beta(a, b). Inputs are each
customer's sufficient statistics (x, t_x, T): repeat purchase days, time of the last
purchase and age, all measured from the first purchase, in any one time unit.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy import integrate, special

from crm_pipeline.models.clv.common import (
    BGNBD_PARAM_NAMES,
    FitResult,
    ParamsLike,
    _distinct,
    _float_array,
    _params,
    _rfm_arrays,
    _weights,
    _wsum,
)
from crm_pipeline.models.clv.fitting import _LOG_BOUND, _empty_fit, _optimise
from crm_pipeline.models.clv.hyp2f1 import _log_hyp2f1

__all__ = [
    "bgnbd_loglik",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fit_bgnbd",
    "p_alive",
]

# E[Y(t)] has a removable singularity at a = 1: closer than this, interpolate across it.
_A_NEAR_ONE = 1e-6
_A_STEP = 1e-5


def _bgnbd_terms(
    log_params: np.ndarray, x, tx, T, by_x: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log-likelihood and its gradient with respect to the log-parameters.

    L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x)),
    written as exp(A1 + A2) * (exp(A3) + exp(A4)) and combined with logaddexp.

    The gamma and digamma terms depend on x alone, which takes few values (repeat
    purchase counts) while (t_x, T) in days take many: they are computed once per distinct
    x (`by_x` = (distinct x, index of each row's x), computed here when not given) and
    spread to the rows, which makes a fit at a million customers several times cheaper.
    """
    r, alpha, a, b = np.exp(log_params)
    ux, xi = by_x if by_x is not None else np.unique(x, return_inverse=True)
    xi = np.ravel(xi)
    rx = r + x
    pos = x > 0
    log_at = np.log(alpha + T)
    log_atx = np.log(alpha + tx)
    # b + x - 1 where it is used (x > 0), else b: per distinct x, like the gamma terms
    ubx1 = b + np.maximum(ux, 1.0) - 1.0
    bx1 = ubx1[xi]
    # per distinct x: A1 and A2 without their alpha term, and the digammas of the gradient
    gl_ab, psi_ab = special.gammaln(a + b), special.digamma(a + b)
    g_a1 = special.gammaln(r + ux) - special.gammaln(r)
    g_a2 = gl_ab + special.gammaln(b + ux) - special.gammaln(b) - special.gammaln(a + b + ux)
    g_dr = special.digamma(r + ux) - special.digamma(r)
    g_psi_abx = special.digamma(a + b + ux)
    g_db = psi_ab + special.digamma(b + ux) - special.digamma(b) - g_psi_abx
    a12 = (g_a1 + g_a2)[xi] + r * np.log(alpha)
    a3 = -rx * log_at
    a4 = np.where(pos, (math.log(a) - np.log(ubx1))[xi] - rx * log_atx, -np.inf)
    l34 = np.logaddexp(a3, a4)
    ll = a12 + l34

    w_alive = np.exp(a3 - l34)  # posterior weight of "still alive" given the data
    w_dead = np.exp(a4 - l34)  # ... of "dropped out after the last purchase"; 0 when x = 0
    d_r = g_dr[xi] + math.log(alpha) - w_alive * log_at - w_dead * log_atx
    d_alpha = r / alpha - rx * (w_alive / (alpha + T) + w_dead / (alpha + tx))
    d_a = (psi_ab - g_psi_abx)[xi] + w_dead / a
    d_b = g_db[xi] - w_dead / bx1
    grad = np.vstack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])  # chain rule to log-params
    return ll, grad


def bgnbd_loglik(params: ParamsLike, frequency, recency, T, weights=None) -> float:
    r"""Total BG/NBD log-likelihood of customers (x, t_x, T), optionally weighted by counts.

    Parameters
    ----------
    params : FitResult, mapping or sequence
        BG/NBD parameters r, alpha, a, b (a FitResult, a name -> value mapping or a sequence
        in that order), all finite and > 0.
    frequency, recency, T : array_like
        Repeat purchase days x, time of the last purchase t_x and age T, both measured from
        the first purchase in one time unit (0 <= t_x <= T); broadcast to one shape.
    weights : array_like, optional
        One count per row (default 1): a row stands for that many identical customers.

    Returns
    -------
    float
        :math:`\sum_i w_i \log L_i`, without any penalty term.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf
    .. [3] Fader, P. S. & Hardie, B. G. S. (2013). Overcoming the BG/NBD model's #NUM!
           error problem. http://brucehardie.com/notes/027/bgnbd_num_error.pdf

    The likelihood of one customer is [1]_ eq. 6, evaluated in logs as in [3]_:

    .. math::

        L(r, \alpha, a, b \mid x, t_x, T) =
        \frac{B(a, b + x)}{B(a, b)} \frac{\Gamma(r + x) \alpha^r}{\Gamma(r) (\alpha + T)^{r + x}}
        + \delta_{x > 0} \frac{B(a + 1, b + x - 1)}{B(a, b)}
          \frac{\Gamma(r + x) \alpha^r}{\Gamma(r) (\alpha + t_x)^{r + x}}
    """
    x, tx, TT = (np.ravel(v) for v in _rfm_arrays(frequency, recency, T))
    w = _weights(weights, x.size)
    ll, _ = _bgnbd_terms(np.log(_params(params, BGNBD_PARAM_NAMES)), x, tx, TT)
    return _wsum(w, ll)


def fit_bgnbd(
    frequency,
    recency,
    T,
    weights=None,
    penalizer: float = 0.0,
    *,
    maxiter: int = 1000,
) -> FitResult:
    r"""Fit BG/NBD (params r, alpha, a, b) by maximum likelihood.

    Customers are compressed to distinct (x, t_x, T) rows with summed weights before the
    optimiser runs, so passing raw customers or pre-aggregated rows with ``weights`` = counts
    gives the same fit. Start: r = 1, a = b = 1, alpha = r * sum(T) / sum(x) (the pooled
    purchase rate). A fit that cannot succeed (no repeat purchases at all, optimiser stopped
    by ``maxiter``) comes back with ``converged=False`` and a message, never an exception;
    invalid inputs (negative counts, recency > T, NaN) raise ValueError.

    Parameters
    ----------
    frequency, recency, T : array_like
        Repeat purchase days x, time of the last purchase t_x and age T, both measured from
        the first purchase in one time unit (0 <= t_x <= T); broadcast to one shape.
    weights : array_like, optional
        One count per row (default 1); rows with weight 0 are ignored.
    penalizer : float
        L2 penalty on the parameters (lifetimes' ``penalizer_coef``, alpha on lifetimes'
        time scale max(T) = 10), added to the mean negative log-likelihood. 0 = plain MLE.
    maxiter : int
        Most L-BFGS-B iterations.

    Returns
    -------
    FitResult
        ``model="bgnbd"``, params r, alpha (in the unit of recency and T), a, b, the total
        log-likelihood, standard errors, ``converged`` and why not.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf

    The estimates maximise :math:`\sum_i w_i \log L(r, \alpha, a, b \mid x_i, t_{x,i}, T_i)`
    with L as in :func:`bgnbd_loglik` ([1]_ eq. 6), over log-parameters in a box.
    """
    t0 = time.perf_counter()
    x, tx, TT = (np.ravel(v) for v in _rfm_arrays(frequency, recency, T))
    w = _weights(weights, x.size)
    keep = w > 0
    (x, tx, TT), w, _ = _distinct([x[keep], tx[keep], TT[keep]], w[keep])
    if w.size == 0:
        return _empty_fit("bgnbd", BGNBD_PARAM_NAMES, "no customers to fit", penalizer, t0)
    notes = []
    if not np.any(x > 0):
        notes.append("no repeat purchases in the data: BG/NBD is not identifiable")
    total_x = _wsum(w, x)
    total_t = _wsum(w, TT)
    alpha0 = total_t / max(total_x, 1.0) if total_t > 0 else 1.0
    x0 = np.log([1.0, alpha0, 1.0, 1.0])
    x0 = np.clip(x0, -_LOG_BOUND + 1, _LOG_BOUND - 1)
    # lifetimes scales time so that max(T) = 10 before fitting; use the same scale for the
    # penalty on alpha so that a penalizer means the same thing in both.
    alpha_scale = max(float(TT.max()), 1e-12) / 10.0
    ux, xi = np.unique(x, return_inverse=True)
    return _optimise(
        "bgnbd",
        BGNBD_PARAM_NAMES,
        lambda theta, rows: _bgnbd_terms(theta, x[rows], tx[rows], TT[rows], (ux, xi[rows])),
        w,
        x0,
        [(-_LOG_BOUND, _LOG_BOUND)] * 4,
        np.array([1.0, alpha_scale, 1.0, 1.0]),
        penalizer,
        maxiter,
        notes,
        t0,
    )


def _expected_given_alive_quad(r, alpha, a, b, t, x, T) -> np.ndarray:
    """E[Y(t) | alive at T, x] by quadrature over the posterior of the dropout probability.

    Given alive, lambda | data ~ Gamma(r+x, alpha+T) and p | data ~ Beta(a, b+x), and
    E[Y(t) | lambda, p] = (1 - exp(-lambda p t)) / p. Integrating lambda out gives
    E = Int_0^1 (1 - (1 + p t/(alpha+T))^-(r+x)) / p  Beta(p; a, b+x) dp, evaluated on
    u = log p, where the integrand is smooth and bounded. Slow (one quad per value) but valid
    for every argument: it is the last resort when 2F1 cannot be evaluated.
    """
    out = np.empty(t.shape)
    for i, (ti, xi, Ti) in enumerate(zip(t, x, T, strict=True)):
        k = ti / (alpha + Ti)
        n = r + xi
        beta = b + xi
        log_norm = -special.betaln(a, beta)

        def integrand(u: float, k=k, n=n, beta=beta, log_norm=log_norm) -> float:
            y = n * math.log1p(k * math.exp(u))
            if u >= 0.0 or y <= 0.0:
                return 0.0
            # Everything in logs: p^(a-1) alone overflows far out in the left tail.
            log_h = math.log(-math.expm1(-y))
            return math.exp(
                log_h + log_norm + (a - 1.0) * u + (beta - 1.0) * math.log(-math.expm1(u))
            )

        u_mode = math.log(a / (a + beta))
        left = integrate.quad(integrand, -np.inf, u_mode, limit=400, epsabs=0.0, epsrel=1e-11)[0]
        right = integrate.quad(integrand, u_mode, 0.0, limit=400, epsabs=0.0, epsrel=1e-11)[0]
        out[i] = left + right
    return out


def _expected_given_alive(r, alpha, a, b, t, x, T) -> np.ndarray:
    """E[Y(t) | customer alive at T with x repeat purchases]; t_x does not enter.

    FHL (2005) eq. 10 numerator:
        (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)],
    z = t/(alpha+T+t). Euler's transformation turns the bracketed product into
        (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z),
    whose upper parameters do not grow with x: the original form multiplies an underflowing
    power by an overflowing 2F1 (0 * inf = NaN) for heavy buyers, this one stays O(1).
    Each value is checked against 0 <= E <= t (r+x)/(alpha+T) (no dropout, posterior mean
    rate); anything outside, or not finite, is recomputed by quadrature.
    """
    if abs(a - 1.0) < _A_NEAR_ONE:
        # (a-1) cancels between the factor and the bracket; E is smooth in a, so interpolate.
        lo = _expected_given_alive(r, alpha, 1.0 - _A_STEP, b, t, x, T)
        hi = _expected_given_alive(r, alpha, 1.0 + _A_STEP, b, t, x, T)
        return lo + (a - (1.0 - _A_STEP)) / (2.0 * _A_STEP) * (hi - lo)
    t, x, T = (np.array(v, dtype=float) for v in np.broadcast_arrays(t, x, T))
    shape = t.shape
    t, x, T = t.ravel(), x.ravel(), T.ravel()
    k = t / (alpha + T)
    z = k / (1.0 + k)
    log_1mz = -np.log1p(k)
    c = a + b + x - 1.0
    log_f = _log_hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
    with np.errstate(all="ignore"):
        e = c / (a - 1.0) * -np.expm1((a - 1.0) * log_1mz + log_f)
    upper = k * (r + x)
    bad = ~np.isfinite(e) | (e < -1e-12 * upper) | (e > upper * (1.0 + 1e-9))
    if np.any(bad):
        e[bad] = _expected_given_alive_quad(r, alpha, a, b, t[bad], x[bad], T[bad])
    e = np.clip(e, 0.0, upper)
    return e.reshape(shape)


def p_alive(params: ParamsLike, frequency, recency, T) -> np.ndarray:
    r"""P(alive at T | x, t_x, T): the probability that a customer has not dropped out.

    Exactly 1 for x = 0: in BG/NBD a customer can only drop out right after a repeat purchase,
    so a one-time buyer is "alive" by construction (their low value shows in the purchase
    rate, not here). Computed as expit of a log-odds, so it never overflows.

    Parameters
    ----------
    params : FitResult, mapping or sequence
        BG/NBD parameters r, alpha, a, b (a FitResult, a name -> value mapping or a sequence
        in that order), all finite and > 0.
    frequency, recency, T : array_like
        Repeat purchase days x, time of the last purchase t_x and age T, both measured from
        the first purchase in one time unit (0 <= t_x <= T); broadcast to one shape.

    Returns
    -------
    numpy.ndarray
        One probability in (0, 1] per customer, in the broadcast shape of the inputs.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf
    .. [2] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2008). Computing P(alive) using
           the BG/NBD model. http://brucehardie.com/notes/021/palive_for_BGNBD.pdf

    From [2]_:

    .. math::

        P(\text{alive} \mid x, t_x, T) = 1 \Big/ \left\{1 + \delta_{x > 0}
        \frac{a}{b + x - 1} \left(\frac{\alpha + T}{\alpha + t_x}\right)^{r + x}\right\}
    """
    r, alpha, a, b = _params(params, BGNBD_PARAM_NAMES)
    x, tx, TT = _rfm_arrays(frequency, recency, T)
    out = np.ones(x.shape)
    pos = x > 0
    if np.any(pos):
        xp = x[pos]
        log_odds_dead = (
            math.log(a)
            - np.log(b + xp - 1.0)
            + (r + xp) * np.log1p((TT[pos] - tx[pos]) / (alpha + tx[pos]))
        )
        out[pos] = special.expit(-log_odds_dead)
    return out


def _check_horizon(t: Any, name: str = "t") -> np.ndarray:
    arr = _float_array(t, name)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    return arr


def expected_purchases(params: ParamsLike, t, frequency, recency, T) -> np.ndarray:
    r"""E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T + t] for each customer.

    Finite and >= 0 for every valid input: the 2F1 is evaluated on Euler-transformed
    arguments that stay bounded for heavy buyers, with a log-space series and quadrature
    where scipy's ``hyp2f1`` fails (see :func:`_expected_given_alive`). Evaluated once per
    distinct (t, x, t_x, T).

    Parameters
    ----------
    params : FitResult, mapping or sequence
        BG/NBD parameters r, alpha, a, b (a FitResult, a name -> value mapping or a sequence
        in that order), all finite and > 0.
    t : array_like
        Horizon(s), >= 0, in the unit of recency and T.
    frequency, recency, T : array_like
        Repeat purchase days x, time of the last purchase t_x and age T, both measured from
        the first purchase in one time unit (0 <= t_x <= T); broadcast to one shape.

    Returns
    -------
    numpy.ndarray
        Expected repeat purchases per customer, in the broadcast shape of (t, x, t_x, T).

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf

    [1]_ eq. 10, computed as P(alive) times the expectation given alive, with z =
    t / (alpha + T + t) and Euler's transformation of the 2F1:

    .. math::

        E[Y(t) \mid x, t_x, T] = P(\text{alive} \mid x, t_x, T)\,
        \frac{a + b + x - 1}{a - 1} \left[1 - \left(\frac{\alpha + T}{\alpha + T + t}\right)^{r + x}
        {}_2F_1(r + x, b + x; a + b + x - 1; z)\right]

        = P(\text{alive})\, \frac{a + b + x - 1}{a - 1}
        \left[1 - (1 - z)^{a - 1} {}_2F_1(a + b - 1 - r, a - 1; a + b + x - 1; z)\right]
    """
    r, alpha, a, b = _params(params, BGNBD_PARAM_NAMES)
    t = _check_horizon(t)
    x, tx, TT = _rfm_arrays(frequency, recency, T)
    t, x, tx, TT = np.broadcast_arrays(t, x, tx, TT)
    shape = x.shape
    (tu, xu, txu, Tu), _, inverse = _distinct([t, x, tx, TT])
    if tu.size == 0:
        return np.zeros(shape)
    e = _expected_given_alive(r, alpha, a, b, tu, xu, Tu) * p_alive(params, xu, txu, Tu)
    return e[inverse].reshape(shape)


def expected_purchases_new_customer(params: ParamsLike, t) -> np.ndarray:
    r"""E[X(t)]: expected repeat purchases of a just-acquired customer in (0, t].

    The x = 0, T = 0 case of the conditional expectation. Summed over a cohort's ages it is
    the aggregate forecast used for holdout checks of the population-level fit.

    Parameters
    ----------
    params : FitResult, mapping or sequence
        BG/NBD parameters r, alpha, a, b (a FitResult, a name -> value mapping or a sequence
        in that order), all finite and > 0.
    t : array_like
        Time(s) since acquisition, >= 0, in the unit the model was fitted in.

    Returns
    -------
    numpy.ndarray
        Expected repeat purchases, one per value of ``t``.

    References
    ----------
    .. [1] Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005). "Counting your customers"
           the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2),
           275-284. http://brucehardie.com/papers/018/fader_et_al_mksc_05.pdf

    [1]_ eq. 9:

    .. math::

        E[X(t)] = \frac{a + b - 1}{a - 1} \left[1 - \left(\frac{\alpha}{\alpha + t}\right)^r
        {}_2F_1\left(r, b; a + b - 1; \frac{t}{\alpha + t}\right)\right]
    """
    r, alpha, a, b = _params(params, BGNBD_PARAM_NAMES)
    t = _check_horizon(t)
    return _expected_given_alive(r, alpha, a, b, t, np.zeros_like(t), np.zeros_like(t))
