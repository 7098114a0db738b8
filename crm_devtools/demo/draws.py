"""Calendar arithmetic and the counter-based random draws the simulation is built on.

Why: a "day" is a day number since 1970-01-01 and times are epoch seconds throughout, and
plans that unfold later must be reproducible from (seed, row number) alone, without a
state table. These helpers are shared by every part of the simulator.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from crm_devtools.demo.settings import DAY, EPOCH, HOUR

# --------------------------------------------------------------------------------------
# Calendar helpers. A "day" is a day number since 1970-01-01; times are epoch seconds.
# --------------------------------------------------------------------------------------


def _day_number(date: dt.date) -> int:
    return (date - EPOCH).days


def _date_of(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


def _calendar(days: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month 1-12, day of year 0-365) of day numbers, vectorised."""
    d = np.asarray(days, dtype="int64").astype("datetime64[D]")
    years = d.astype("datetime64[Y]")
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    doy = (d - years.astype("datetime64[D]")).astype(np.int64)
    return years.astype(np.int64) + 1970, month, doy


def _seconds(day: int, hours: float = 0.0) -> int:
    return int(day) * DAY + int(round(hours * HOUR))


def _uniform_times(rng: np.random.Generator, day: int, n: int, hours=(0.0, 24.0)) -> np.ndarray:
    """n times on `day`, uniform between the given hours (end exclusive)."""
    lo, hi = hours
    return day * DAY + (lo * HOUR + rng.random(n) * (hi - lo) * HOUR).astype(np.int64)


# --------------------------------------------------------------------------------------
# Counter-based hashing: reproducible plans keyed by row numbers (see crm_devtools.demo).
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms(seed: int, stream: int, keys: np.ndarray, n: int) -> np.ndarray:
    """A (len(keys), n) array of uniforms in (0, 1) that depends only on the arguments.

    This is what lets advance() know a customer's traits or a complaint's planned steps
    without storing them: the same (seed, stream, key) always gives the same numbers.
    """
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed & (2**63 - 1), stream], dtype=np.uint64))
        k = np.asarray(keys, dtype=np.int64).astype(np.uint64)
        x = _mix64(k * _GOLDEN ^ base[0] ^ (base[1] * _GOLDEN))
        cols = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        bits = _mix64(x[:, None] + cols[None, :]) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) / 2.0**53


def _normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Box-Muller: a standard normal from two uniforms."""
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _pick(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Categorical draw by inverse CDF; `probs` is one row per draw or one shared row."""
    cdf = np.cumsum(np.asarray(probs, dtype=float), axis=-1)
    cdf = cdf / cdf[..., -1:]
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)
