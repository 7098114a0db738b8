"""Customer lifetime value: BG/NBD repeat purchases times Gamma-Gamma spend per purchase.

Grain
-----
One row per customer, reduced to the sufficient statistics of the two models (build them
with :func:`summary_from_transactions`):

* ``frequency`` *x*: repeat purchase days (purchases on the same day are merged into one and
  the first purchase day is not counted);
* ``recency`` *t_x*: time from the first to the last purchase day (0 when x = 0);
* ``T``: time from the first purchase day to the as-of date;
* ``monetary_value``: mean net value of the repeat purchase days (0 when x = 0).

Times are in whatever unit the caller passes: days in production, weeks in the CDNOW tests.
The fitted ``alpha`` and every horizon are in that same unit; only :func:`clv` needs a
calendar (``month_length`` time units per discounting month, 30 for days).

Models
------
* BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a
  customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat
  purchase they drop out with probability p ~ Beta(a, b).
* Gamma-Gamma (Fader & Hardie 2013, "The Gamma-Gamma model of monetary value"): the value of
  each purchase is Gamma(p, nu) with nu ~ Gamma(q, v) across customers, independent of the
  purchase process.

Both are fitted by maximum likelihood with L-BFGS-B on log-parameters with analytic gradients,
on the distinct rows of the sufficient statistics weighted by their counts (many customers
share a row, so this is both exact and much faster). Predictions use closed forms; the one
special function, the Gauss hypergeometric 2F1 in E[Y(t)], is evaluated on Euler-transformed
arguments that stay bounded for heavy buyers, with a log-space series and then a quadrature
fallback wherever scipy's ``hyp2f1`` fails. docs/models.md has the formulas and the reasons
this is not a library.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special

__all__ = [
    "BGNBD_PARAM_NAMES",
    "GAMMA_GAMMA_PARAM_NAMES",
    "SCORE_COLUMNS",
    "SUMMARY_COLUMNS",
    "FitResult",
    "bgnbd_loglik",
    "clv",
    "expected_avg_value",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fit_and_score",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_loglik",
    "holdout_comparison",
    "holdout_repeat_purchases",
    "monthly_discount_rate",
    "p_alive",
    "summary_from_transactions",
]

BGNBD_PARAM_NAMES = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAM_NAMES = ("p", "q", "v")

# Optimiser box on log-parameters: exp(+-20) spans 2e-9 .. 5e8, far beyond any sane fit, and
# keeps every log-likelihood term finite. A fit that ends on the box has not converged.
_LOG_BOUND = 20.0
# Largest |projected gradient| of the mean negative log-likelihood (per customer, per unit of
# log-parameter) accepted as a converged fit. At that slope the distance to the optimum is
# orders of magnitude below the parameters' standard errors.
_GRAD_TOL = 1e-5
# Gamma-Gamma needs q > 1 for a finite population mean spend (the x = 0 fallback).
_Q_MIN = 1.0 + 1e-6
# E[Y(t)] has a removable singularity at a = 1: closer than this, interpolate across it.
_A_NEAR_ONE = 1e-6
_A_STEP = 1e-5
# Log-space series fallback for 2F1: terms evaluated in chunks, at most this many in all.
_SERIES_MAX_TERMS = 20_000
_SERIES_CHUNK = 256


# --------------------------------------------------------------------------------------
# Fit result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """Outcome of one maximum-likelihood fit, shaped for a ``model_runs`` row.

    ``log_likelihood`` is the total (weighted) log-likelihood at ``params`` without the
    penalty term; ``std_errors`` are asymptotic standard errors of the parameters from the
    observed information of that log-likelihood (NaN when the fit did not converge or the
    information matrix is not positive definite). ``n`` counts customers (the sum of the weights), ``n_distinct`` the distinct
    sufficient-statistic rows the optimiser actually saw. ``converged`` is False when the
    optimiser stopped early, ended on the parameter box, left a non-negligible gradient or the
    data cannot identify the model; ``message`` says which. A fit never raises for such
    reasons: the caller decides whether to publish scores made from it.
    """

    model: str
    params: dict[str, float]
    log_likelihood: float
    converged: bool
    iterations: int
    message: str
    n: int
    n_distinct: int = 0
    penalizer: float = 0.0
    seconds: float = 0.0
    std_errors: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain types; NaN becomes None so the dict serialises strictly."""

        def clean(value: float) -> float | None:
            value = float(value)
            return value if math.isfinite(value) else None

        return {
            "model": self.model,
            "params": {k: clean(v) for k, v in self.params.items()},
            "log_likelihood": clean(self.log_likelihood),
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "message": str(self.message),
            "n": int(self.n),
            "n_distinct": int(self.n_distinct),
            "penalizer": float(self.penalizer),
            "seconds": round(float(self.seconds), 4),
            "std_errors": {k: clean(v) for k, v in self.std_errors.items()},
        }


ParamsLike = FitResult | Mapping[str, float] | Sequence[float]


def _params(params: ParamsLike, names: tuple[str, ...]) -> tuple[float, ...]:
    """Accept a FitResult, a name -> value mapping or a sequence in ``names`` order."""
    if isinstance(params, FitResult):
        params = params.params
    if isinstance(params, Mapping):
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"missing parameters {missing}; expected {list(names)}")
        values = tuple(float(params[n]) for n in names)
    else:
        values = tuple(float(v) for v in params)
        if len(values) != len(names):
            raise ValueError(f"expected {len(names)} parameters {list(names)}, got {len(values)}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"parameters must be finite and positive: {dict(zip(names, values, strict=True))}"
        )
    return values


# --------------------------------------------------------------------------------------
# Input checks and distinct-row compression
# --------------------------------------------------------------------------------------


def _float_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or infinite values")
    return arr


def _rfm_arrays(frequency: Any, recency: Any, T: Any) -> tuple[np.ndarray, ...]:
    """Validate (x, t_x, T) and broadcast them to one shape."""
    x = _float_array(frequency, "frequency")
    tx = _float_array(recency, "recency")
    TT = _float_array(T, "T")
    x, tx, TT = np.broadcast_arrays(x, tx, TT)
    if np.any(x < 0):
        raise ValueError("frequency must be >= 0")
    if np.any(tx < 0):
        raise ValueError("recency must be >= 0")
    # Allow rounding noise (published summaries are rounded to 2 decimals) but no more.
    if np.any(tx > TT + 1e-9 * np.maximum(1.0, TT)):
        raise ValueError("recency must be <= T (last purchase after the as-of date?)")
    return x, np.minimum(tx, TT), TT


def _weights(weights: Any, size: int) -> np.ndarray:
    if weights is None:
        return np.ones(size)
    w = _float_array(weights, "weights").ravel()
    if w.size != size:
        raise ValueError(f"weights has {w.size} values for {size} customers")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    return w


def _wsum(weights: np.ndarray, values: np.ndarray) -> float:
    """Weighted sum by pairwise summation (no BLAS: more accurate, and a BLAS dot can be
    slow under some OpenBLAS core settings)."""
    return float(np.sum(weights * values))


def _int_key(stacked: np.ndarray) -> np.ndarray | None:
    """Rows of non-negative whole numbers as one int64 each, ordered as the rows sort; None
    when a value is not a whole number or the product of the ranges would overflow."""
    if not (np.all(stacked >= 0) and np.all(stacked == np.floor(stacked))):
        return None
    spans = stacked.max(axis=0).astype(np.int64) + 1
    if float(np.prod(spans.astype(float))) >= 2.0**62:
        return None
    key = np.zeros(stacked.shape[0], dtype=np.int64)
    for col, span in zip(stacked.T.astype(np.int64), spans, strict=True):
        key = key * span + col
    return key


def _distinct(columns: Sequence[np.ndarray], weights: np.ndarray | None = None):
    """Distinct rows of ``columns`` with summed weights (or counts) and the inverse index."""
    stacked = np.column_stack([np.ravel(c) for c in columns])
    if stacked.shape[0] == 0:
        return [np.empty(0) for _ in columns], np.empty(0), np.empty(0, dtype=np.intp)
    key = _int_key(stacked)
    if key is not None:  # whole days and counts: one int64 key sorts 3-4x faster than rows
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        uniq = stacked[first]
    else:
        uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    w = np.bincount(inverse, weights=weights, minlength=uniq.shape[0]).astype(float)
    return [uniq[:, i] for i in range(uniq.shape[1])], w, inverse


# --------------------------------------------------------------------------------------
# BG/NBD likelihood
# --------------------------------------------------------------------------------------


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
    """Total BG/NBD log-likelihood of customers (x, t_x, T), optionally weighted by counts."""
    x, tx, TT = (np.ravel(v) for v in _rfm_arrays(frequency, recency, T))
    w = _weights(weights, x.size)
    ll, _ = _bgnbd_terms(np.log(_params(params, BGNBD_PARAM_NAMES)), x, tx, TT)
    return _wsum(w, ll)


# --------------------------------------------------------------------------------------
# Gamma-Gamma likelihood
# --------------------------------------------------------------------------------------


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
    """Total Gamma-Gamma log-likelihood of repeat buyers (x >= 1, mean value > 0)."""
    x = np.ravel(_float_array(frequency, "frequency"))
    m = np.ravel(_float_array(monetary_value, "monetary_value"))
    w = _weights(weights, x.size)
    if np.any(x < 1) or np.any(m <= 0):
        raise ValueError("Gamma-Gamma needs frequency >= 1 and monetary_value > 0")
    ll, _ = _gamma_gamma_terms(np.log(_params(params, GAMMA_GAMMA_PARAM_NAMES)), x, m)
    return _wsum(w, ll)


# --------------------------------------------------------------------------------------
# Shared optimiser driver
# --------------------------------------------------------------------------------------


# rows per half below which a fit's likelihood is evaluated on one thread only
_SHARD_MIN_ROWS = 50_000

Terms = Callable[[np.ndarray, slice], tuple[np.ndarray, np.ndarray]]


def _weighted_totals(
    terms: Terms, weights: np.ndarray
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """theta -> (sum of w * log-likelihood, sum of w * gradient) over every row.

    ``terms(theta, rows)`` gives the per-row values of a slice of rows. With enough rows the
    two halves are evaluated on two threads (numpy and scipy's ufuncs release the GIL in
    their loops), which nearly halves a fit at a million customers on two cores; the split
    depends on the row count alone, so the same data always sums in the same order.
    """
    n = weights.size
    half = n // 2
    cuts = [slice(0, n)] if half < _SHARD_MIN_ROWS else [slice(0, half), slice(half, n)]

    def part(theta: np.ndarray, rows: slice) -> tuple[float, np.ndarray]:
        ll, grad = terms(theta, rows)
        w = weights[rows]
        return float(np.sum(w * ll)), np.sum(grad * w, axis=1)

    def totals(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if len(cuts) == 1:
            return part(theta, cuts[0])
        with ThreadPoolExecutor(max_workers=len(cuts)) as pool:
            parts = list(pool.map(lambda rows: part(theta, rows), cuts))
        return sum(p[0] for p in parts), np.sum([p[1] for p in parts], axis=0)

    return totals


def _optimise(
    model: str,
    names: tuple[str, ...],
    terms: Terms,
    weights: np.ndarray,
    x0: np.ndarray,
    bounds: list[tuple[float, float]],
    penalty_scale: np.ndarray,
    penalizer: float,
    maxiter: int,
    notes: list[str],
    started: float,
) -> FitResult:
    """Minimise the mean weighted negative log-likelihood (+ L2 penalty) with L-BFGS-B.

    The objective is divided by the number of customers so tolerances and the penalizer mean
    the same whatever the data size (the penalty is lifetimes' penalizer_coef * sum(theta^2),
    with alpha measured in lifetimes' internal time scale so the two agree).
    """
    wsum = float(weights.sum())
    totals = _weighted_totals(terms, weights)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        with np.errstate(all="ignore"):
            ll, grad = totals(theta)
            value = -ll / wsum
            gradient = -grad / wsum
        if penalizer:
            scaled = np.exp(theta) / penalty_scale
            value += penalizer * float(np.sum(scaled**2))
            gradient = gradient + 2.0 * penalizer * scaled**2
        if not (np.isfinite(value) and np.all(np.isfinite(gradient))):
            return 1e300, np.zeros_like(theta)  # refused step; L-BFGS-B backtracks
        return value, gradient

    res = optimize.minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": int(maxiter), "ftol": 1e-14, "gtol": 1e-10},
    )
    theta = np.asarray(res.x, dtype=float)
    value, gradient = objective(theta)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    on_lo = theta <= lo + 1e-7
    on_hi = theta >= hi - 1e-7
    projected = np.where((on_lo & (gradient > 0)) | (on_hi & (gradient < 0)), 0.0, gradient)
    gnorm = float(np.max(np.abs(projected))) if projected.size else 0.0
    with np.errstate(all="ignore"):
        loglik, _ = totals(theta)

    messages = [str(res.message)]
    finite = bool(np.isfinite(loglik) and np.all(np.isfinite(theta)) and value < 1e299)
    if not finite:
        messages.append("non-finite log-likelihood at the end point")
    if np.any(on_lo | on_hi):
        at = [names[i] for i in np.flatnonzero(on_lo | on_hi)]
        messages.append(f"parameter(s) {at} ended on the optimiser bound")
    if gnorm > _GRAD_TOL:
        messages.append(f"gradient not small: max |grad| = {gnorm:.3g} > {_GRAD_TOL:g}")
    messages.extend(notes)
    converged = finite and not np.any(on_lo | on_hi) and gnorm <= _GRAD_TOL and not notes
    # Standard errors only mean something at an interior optimum.
    std_errors = _std_errors(totals, theta) if converged else np.full(theta.size, np.nan)
    return FitResult(
        model=model,
        params=dict(zip(names, (float(v) for v in np.exp(theta)), strict=True)),
        log_likelihood=loglik,
        converged=bool(converged),
        iterations=int(getattr(res, "nit", 0)),
        message="; ".join(messages),
        n=int(round(wsum)),
        n_distinct=int(weights.size),
        penalizer=float(penalizer),
        seconds=time.perf_counter() - started,
        std_errors=dict(zip(names, (float(v) for v in std_errors), strict=True)),
    )


def _std_errors(totals, theta: np.ndarray) -> np.ndarray:
    """Standard errors on the natural scale from the observed information matrix.

    The Hessian of the total log-likelihood in log-parameters comes from central differences
    of the analytic gradient; SE(theta) = theta * SE(log theta) by the delta method.
    """
    k = theta.size
    hess = np.empty((k, k))
    step = 1e-5
    with np.errstate(all="ignore"):
        for i in range(k):
            d = np.zeros(k)
            d[i] = step
            g_hi = totals(theta + d)[1]
            g_lo = totals(theta - d)[1]
            hess[:, i] = (g_hi - g_lo) / (2 * step)
    info = -(hess + hess.T) / 2
    try:
        if not np.all(np.isfinite(info)):
            raise np.linalg.LinAlgError
        np.linalg.cholesky(info)  # positive definite, or this raises
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    return np.exp(theta) * np.sqrt(np.clip(np.diag(cov), 0.0, None))


def _empty_fit(model: str, names: tuple[str, ...], message: str, penalizer: float, t0: float):
    return FitResult(
        model=model,
        params=dict.fromkeys(names, float("nan")),
        log_likelihood=float("nan"),
        converged=False,
        iterations=0,
        message=message,
        n=0,
        n_distinct=0,
        penalizer=float(penalizer),
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------


def fit_bgnbd(
    frequency,
    recency,
    T,
    weights=None,
    penalizer: float = 0.0,
    *,
    maxiter: int = 1000,
) -> FitResult:
    """Fit BG/NBD (params r, alpha, a, b) by maximum likelihood.

    Customers are compressed to distinct (x, t_x, T) rows with summed weights before the
    optimiser runs, so passing raw customers or pre-aggregated rows with ``weights`` = counts
    gives the same fit. Start: r = 1, a = b = 1, alpha = r * sum(T) / sum(x) (the pooled
    purchase rate). A fit that cannot succeed (no repeat purchases at all, optimiser stopped
    by ``maxiter``) comes back with ``converged=False`` and a message, never an exception;
    invalid inputs (negative counts, recency > T, NaN) raise ValueError.
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


def fit_gamma_gamma(
    frequency,
    monetary_value,
    weights=None,
    penalizer: float = 0.0,
    *,
    maxiter: int = 1000,
) -> FitResult:
    """Fit Gamma-Gamma (params p, q, v; v is the note's gamma) by maximum likelihood.

    Only repeat buyers carry information: rows with x = 0 or a non-positive mean value are
    dropped (counted in the message), so the whole customer summary can be passed in. q is
    kept above 1 so that the population mean spend p v / (q - 1) exists; a fit pinned at that
    bound reports ``converged=False``. Rows are compressed to distinct (x, m) with weights.
    The model assumes spend is independent of purchase frequency: check
    corr(frequency, monetary_value) over repeat buyers before trusting it.
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


# --------------------------------------------------------------------------------------
# Gauss hypergeometric function, robustly
# --------------------------------------------------------------------------------------


def _log_hyp2f1_series(A: float, B: float, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1(A, B; c; z) for 0 <= z < 1 by the power series summed in log space.

    Terms t_k = (A)_k (B)_k / ((c)_k k!) z^k are carried as (log|t_k|, sign) so neither a
    huge c (heavy buyers) nor large intermediate terms can overflow. Returns NaN where the
    series would need more than _SERIES_MAX_TERMS terms (z too close to 1), where the signed
    sum lost more than 8 digits to cancellation, or where it is not positive: the caller then
    falls back to quadrature.
    """
    c = np.asarray(c, dtype=float).ravel()
    z = np.asarray(z, dtype=float).ravel()
    out = np.full(c.shape, np.nan)
    with np.errstate(divide="ignore"):
        log_z = np.log(z)
        # Geometric decay z^k reaches 1e-17 after about 39 / -log(z) terms.
        needed = np.where(z > 0, 39.0 / np.maximum(-log_z, 1e-300), 0.0)
    active = np.flatnonzero(needed < _SERIES_MAX_TERMS)
    log_s = np.zeros(active.size)  # partial sum, starting with t_0 = 1
    sign_s = np.ones(active.size)
    log_t = np.zeros(active.size)  # last term
    sign_t = np.ones(active.size)
    log_max = np.zeros(active.size)  # largest term, to measure cancellation
    k0 = 1
    while active.size and k0 <= _SERIES_MAX_TERMS:
        k = np.arange(k0, k0 + _SERIES_CHUNK, dtype=float)[None, :]
        na = A + k - 1.0
        nb = B + k - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = (
                np.log(np.abs(na))
                + np.log(np.abs(nb))
                + log_z[active][:, None]
                - np.log(c[active][:, None] + k - 1.0)
                - np.log(k)
            )
            terms_log = log_t[:, None] + np.cumsum(log_ratio, axis=1)
            terms_sign = sign_t[:, None] * np.cumprod(np.sign(na) * np.sign(nb), axis=1)
            terms_log = np.where(terms_sign == 0, -np.inf, terms_log)
            stacked = np.concatenate([log_s[:, None], terms_log], axis=1)
            signs = np.concatenate([sign_s[:, None], terms_sign], axis=1)
            log_s, sign_s = special.logsumexp(stacked, axis=1, b=signs, return_sign=True)
        log_t = terms_log[:, -1]
        sign_t = terms_sign[:, -1]
        log_max = np.maximum(log_max, terms_log.max(axis=1))
        rho = np.exp(log_ratio[:, -1])  # ratio of the next term to the last one, ~ z
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = log_t + np.log(rho) - np.log1p(-rho) - log_s
        done = np.isneginf(log_t) | ((rho < 1.0) & (tail < math.log(1e-17)))
        if np.any(done):
            ok = done & (sign_s > 0) & (log_max - log_s < math.log(1e8))
            out[active[ok]] = log_s[ok]
            keep = ~done
            active, log_s, sign_s = active[keep], log_s[keep], sign_s[keep]
            log_t, sign_t, log_max = log_t[keep], sign_t[keep], log_max[keep]
        k0 += _SERIES_CHUNK
    return out


def _log_hyp2f1(A: float, B: float, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log 2F1(A, B; c; z), 0 <= z < 1: scipy first, the log-space series where it fails.

    scipy's hyp2f1 returns NaN for some large-c arguments (e.g. c - A - B a large integer)
    and overflows where 2F1 itself exceeds 1e308; both are caught here. NaN remains only
    where the series cannot converge either (z extremely close to 1).
    """
    with np.errstate(all="ignore"):
        f = special.hyp2f1(A, B, c, z)
        good = np.isfinite(f) & (f > 0)
        out = np.where(good, np.log(np.where(good, f, 1.0)), np.nan)
    if not np.all(good):
        bad = ~good
        out[bad] = _log_hyp2f1_series(A, B, c[bad], z[bad])
    return out


# --------------------------------------------------------------------------------------
# BG/NBD predictions
# --------------------------------------------------------------------------------------


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
    """P(alive at T | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

    Exactly 1 for x = 0: in BG/NBD a customer can only drop out right after a repeat purchase,
    so a one-time buyer is "alive" by construction (their low value shows in the purchase
    rate, not here). Computed as expit of a log-odds, so it never overflows.
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
    """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T + t] for each customer.

    = P(alive) * (a+b+x-1)/(a-1) * [1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)],
    z = t / (alpha + T + t). Finite and >= 0 for every valid input (see
    :func:`_expected_given_alive`). Evaluated once per distinct (t, x, t_x, T).
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
    """E[X(t)]: expected repeat purchases of a just-acquired customer in (0, t] (FHL eq. 9).

    = (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))], the x = 0,
    T = 0 case of the conditional expectation. Summed over a cohort's ages it is the
    aggregate forecast used for holdout checks of the population-level fit.
    """
    r, alpha, a, b = _params(params, BGNBD_PARAM_NAMES)
    t = _check_horizon(t)
    return _expected_given_alive(r, alpha, a, b, t, np.zeros_like(t), np.zeros_like(t))


# --------------------------------------------------------------------------------------
# Gamma-Gamma prediction and CLV
# --------------------------------------------------------------------------------------


def expected_avg_value(gg_params: ParamsLike, frequency, monetary_value) -> np.ndarray:
    """E[value per purchase | x, mean value m] from Gamma-Gamma.

    For x >= 1 and m > 0: (v + x m) p / (p x + q - 1), a credibility-weighted average of the
    population mean p v / (q - 1) and the customer's own mean m (weight p x / (p x + q - 1)).
    For x = 0, or a non-positive or missing repeat mean (refunds), the population mean.
    Requires q > 1 (guaranteed by :func:`fit_gamma_gamma`).
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


# --------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Holdout checks (the nightly model-health gate)
# --------------------------------------------------------------------------------------


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
