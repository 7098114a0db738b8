"""The Gauss hypergeometric function 2F1 in log space, robust where scipy's fails.

BG/NBD's conditional expectation E[Y(t)] needs log 2F1(A, B; c; z) for 0 <= z < 1 with c
growing with the customer's purchase count. scipy's ``hyp2f1`` is tried first; where it
returns NaN or overflows, a power series summed in log space takes over. The caller falls
back to quadrature where both fail (z extremely close to 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

# Log-space series fallback for 2F1: terms evaluated in chunks, at most this many in all.
_SERIES_MAX_TERMS = 20_000
_SERIES_CHUNK = 256


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
