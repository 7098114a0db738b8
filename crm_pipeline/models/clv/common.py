"""What every CLV model shares: the fit result, parameter handling and input checks.

``FitResult`` is the outcome of a fit, shaped for an ``ops.model_runs`` row; ``ParamsLike``
is what every prediction accepts as parameters (a FitResult, a name -> value mapping or a
sequence in the model's order). The private helpers validate (x, t_x, T) and weights and
compress customers to distinct sufficient-statistic rows with summed weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BGNBD_PARAM_NAMES",
    "GAMMA_GAMMA_PARAM_NAMES",
    "FitResult",
    "ParamsLike",
]

BGNBD_PARAM_NAMES = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAM_NAMES = ("p", "q", "v")


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
