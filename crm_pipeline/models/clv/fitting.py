"""The maximum-likelihood driver both CLV models share: L-BFGS-B on log-parameters.

A model hands :func:`_optimise` its per-row log-likelihood and gradient (``terms``), the
row weights, a start and the box; the driver minimises the mean weighted negative
log-likelihood plus an optional L2 penalty, judges convergence (bound, gradient, finite
end point), and computes standard errors from the observed information.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import optimize

from crm_pipeline.models.clv.common import FitResult

# Optimiser box on log-parameters: exp(+-20) spans 2e-9 .. 5e8, far beyond any sane fit, and
# keeps every log-likelihood term finite. A fit that ends on the box has not converged.
_LOG_BOUND = 20.0
# Largest |projected gradient| of the mean negative log-likelihood (per customer, per unit of
# log-parameter) accepted as a converged fit. At that slope the distance to the optimum is
# orders of magnitude below the parameters' standard errors.
_GRAD_TOL = 1e-5


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
