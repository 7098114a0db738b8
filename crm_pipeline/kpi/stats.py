"""The statistics a KPI value is judged with: evidence intervals and the robust baseline.

Pure functions on numbers and arrays, no warehouse: the Wilson score interval for a share,
a conservative normal interval for NPS, the interval of a KPI's evidence kind, and the
baseline of a daily series (the median of the previous `baseline_days` values) with its
normal band (median +/- k * 1.4826 * MAD), for one series (`baseline_frame`, which the
alert email's charts draw) or for every series of an evaluation at once
(`baseline_bands`). Grain: one value (intervals) or one series of days (bands).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from crm_pipeline.kpi.registry import KpiSpec
    from crm_pipeline.kpi.targets import EvaluationSettings


def wilson_interval(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a share observed on n trials.

    Parameters
    ----------
    p : float
        The observed share, 0..1 (clipped into it).
    n : float
        The number of trials behind it (a KPI's denominator); 0 or less gives 0..1.
    z : float
        The standard normal quantile of one side: 1.645 for a one-sided 95%.

    Returns
    -------
    tuple of float
        (low, high), inside 0..1:
        (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).

    References
    ----------
    E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
    Journal of the American Statistical Association 22 (1927) 209-212.
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(max(p, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def nps_interval(nps: float, n: float, z: float) -> tuple[float, float]:
    """Normal interval for NPS (-100..100) on n responses, with the conservative variance.

    Per response the score is +1 (promoter), 0 or -1 (detractor): its variance is
    (P + D) - (P - D)^2 <= 1 - nps^2, so only the net share is needed and the interval
    is never too narrow.

    Parameters
    ----------
    nps : float
        The observed NPS, -100..100 (clipped into it).
    n : float
        The survey responses behind it; 0 or less gives -100..100.
    z : float
        The standard normal quantile of one side: 1.645 for a one-sided 95%.

    Returns
    -------
    tuple of float
        (low, high), inside -100..100: 100 · (d ± z · sqrt((1 - d²) / n)) with
        d = nps / 100. At d = ±1 the bound has no spread; then the Wilson interval of the
        promoter share (d + 1) / 2 is mapped back, 100 · (2 · wilson - 1).

    References
    ----------
    F. F. Reichheld, "The one number you need to grow", Harvard Business Review 81 (2003)
    (the score); the bound is Var(X) = (P + D) - (P - D)² <= 1 - (P - D)² for X in
    {-1, 0, 1} with P(X = 1) = P, P(X = -1) = D.
    """
    if n <= 0:
        return -100.0, 100.0
    d = min(max(nps / 100.0, -1.0), 1.0)
    se = math.sqrt(max(1.0 - d * d, 0.0) / n)
    # a net share at +/-1 has no spread in this bound: fall back to the Wilson width of
    # the promoter (or detractor) share so a unanimous handful is still uncertain
    if se == 0.0:
        lo, hi = wilson_interval((d + 1) / 2, n, z)
        return 100 * (2 * lo - 1), 100 * (2 * hi - 1)
    return max(-100.0, 100 * (d - z * se)), min(100.0, 100 * (d + z * se))


def evidence_interval(
    spec: KpiSpec, value: float, n: float | None, z: float
) -> tuple[float, float]:
    """The one-sided-at-each-end interval around the value, in the KPI's own units.

    Parameters
    ----------
    spec : KpiSpec
        The KPI: its `evidence` (none, proportion, nps) and `unit` (a percent is scaled
        to a share and back).
    value : float
        The day's value.
    n : float or None
        The observations behind it (the denominator).
    z : float
        The standard normal quantile of one side.

    Returns
    -------
    tuple of float
        (low, high): the value itself without evidence or without n; `nps_interval` for
        NPS; for a share the Wilson interval, widened to contain the value (a share above
        1, retention with reactivations, keeps its point).

    References
    ----------
    See `wilson_interval` and `nps_interval`.
    """
    if spec.evidence == "none" or n is None or n <= 0:
        return value, value
    if spec.evidence == "nps":
        return nps_interval(value, n, z)
    scale = 100.0 if spec.unit == "percent" else 1.0
    lo, hi = wilson_interval(value / scale, n, z)
    # a share above 1 (retention can be, with reactivations) keeps its own point
    return min(lo * scale, value), max(hi * scale, value)


def baseline_frame(
    series: pd.Series,
    settings: EvaluationSettings,
    min_width: float = 0.0,
    valid_range: tuple[float | None, float | None] = (None, None),
) -> pd.DataFrame:
    """Baseline, band and history count for every day of a daily series (d excluded).

    `series` is indexed by consecutive days (missing days NaN). For day d the window is
    the `baseline_days` days before it; the baseline needs `min_history_days` values. The
    band is clipped to the KPI's `valid_range` (a share's band ends at 0% and 100%).

    Parameters
    ----------
    series : pandas.Series
        One KPI series' daily values, indexed by consecutive days.
    settings : EvaluationSettings
        `baseline_days` (the window), `min_history_days`, `band_k`.
    min_width : float
        The band's least half-width (the KPI's `min_band_width`).
    valid_range : tuple
        (low, high) the KPI's values can take; None is unbounded.

    Returns
    -------
    pandas.DataFrame
        Indexed like `series`: baseline, baseline_low, baseline_high (NaN with fewer than
        `min_history_days` values in the window) and baseline_days (the values in it), as
        `baseline_bands` computes them.

    References
    ----------
    See `baseline_bands`.
    """
    lo, hi = valid_range
    bands = baseline_bands(
        series.astype(float).to_numpy()[None, :],
        settings,
        np.array([[min_width]]),
        np.array([[-np.inf if lo is None else lo]]),
        np.array([[np.inf if hi is None else hi]]),
    )
    return pd.DataFrame(
        {
            "baseline": bands["baseline"][0],
            "baseline_low": bands["baseline_low"][0],
            "baseline_high": bands["baseline_high"][0],
            "baseline_days": bands["baseline_days"][0].astype(int),
        },
        index=series.index,
    )


def baseline_bands(
    values: np.ndarray,
    settings: EvaluationSettings,
    min_width: np.ndarray,
    range_low: np.ndarray,
    range_high: np.ndarray,
) -> dict[str, np.ndarray]:
    """`baseline_frame` for many series at once, as arrays.

    Every day's window of every series is one view (series x days x window): an
    evaluation reads a year of history for "since when" and stays a matter of seconds.

    Parameters
    ----------
    values : numpy.ndarray
        (series, days): each series' daily values over consecutive days, NaN where none.
    settings : EvaluationSettings
        `baseline_days` (k, the window), `min_history_days`, `band_k`.
    min_width, range_low, range_high : numpy.ndarray
        (series, 1): each series' least half-width and the range its band is clipped to
        (-inf / inf: unbounded).

    Returns
    -------
    dict of numpy.ndarray
        Each (series, days). For day d with the window W = the values of days d-k..d-1
        (NaN left out): baseline = median(W); with MAD = median(|W - median(W)|),
        half = max(band_k · 1.4826 · MAD, min_width), baseline_low =
        max(baseline - half, range_low), baseline_high = min(baseline + half,
        range_high); all three NaN when |W| < min_history_days; baseline_days = |W|.

    References
    ----------
    F. R. Hampel, "The influence curve and its role in robust estimation", Journal of the
    American Statistical Association 69 (1974) 383-393 (the median absolute deviation;
    1.4826 · MAD estimates the standard deviation of a normal sample).
    """
    k = settings.baseline_days
    n_series, n_days = values.shape
    prev = np.full((n_series, n_days + k - 1), np.nan)
    prev[:, k:] = values[:, : n_days - 1] if n_days > 1 else prev[:, k:]
    windows = np.lib.stride_tricks.sliding_window_view(prev, k, axis=1)
    count = np.sum(~np.isnan(windows), axis=2)
    median = _medians(windows, count)
    mad = _medians(np.abs(windows - median[..., None]), count)
    half = np.maximum(settings.band_k * 1.4826 * mad, min_width)
    low = np.maximum(median - half, range_low)
    high = np.minimum(median + half, range_high)
    enough = count >= settings.min_history_days
    return {
        "baseline": np.where(enough, median, np.nan),
        "baseline_low": np.where(enough, low, np.nan),
        "baseline_high": np.where(enough, high, np.nan),
        "baseline_days": count,
    }


def _medians(windows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The median of the non-NaN values along the last axis (NaN where there are none):
    sorted with NaNs last, the middle value or the mean of the middle two."""
    if windows.size == 0:
        return np.full(windows.shape[:-1], np.nan)
    ordered = np.sort(windows, axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[..., None], -1)[..., 0]
    hi_at = np.minimum(count // 2, windows.shape[-1] - 1)
    hi = np.take_along_axis(ordered, hi_at[..., None], -1)[..., 0]
    return np.where(count > 0, (lo + hi) / 2, np.nan)
