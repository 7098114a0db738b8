"""A value from a SQL row as the Python value a stage computes with, one cell at a time.

Rows come back from the warehouse as the driver or pandas hands them over: a missing
number as None or NaN, a day as a date, a datetime, a pandas Timestamp or NaT. The
evaluation, the alert state and the alert email all judge and print single values, so
they read each cell through these few functions instead of testing for each spelling of
"missing" themselves. Grain: one value.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd


def finite_or_none(v: Any) -> float | None:
    """A float, or None for null, NaN and anything that is not a number (rows from SQL)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def as_date(v: Any) -> dt.date:
    """A day from a date, a datetime, a Timestamp or an ISO string."""
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return pd.Timestamp(v).date()


def date_or_none(v: Any) -> dt.date | None:
    """`as_date`, or None for null, NaT and NaN."""
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    return as_date(v)
