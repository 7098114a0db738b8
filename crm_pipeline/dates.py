"""Which day a DAG run covers, decided in one place.

The contract keys every snapshot on `as_of_date`: the run's logical date, with rows that
reflect events up to the end of that day (UTC). A scheduled run (plugins/crm_timetable.py)
gets the start of the day that just ended as logical date, while `airflow dags test
crm_nightly 2026-11-22` and manual triggers get the date they were given (any time of it).
In both cases the covered day is the UTC calendar date of the logical date. A run without a logical date (Airflow 3 allows
that for triggered runs) covers the last complete day before it started.
"""

from __future__ import annotations

import datetime as dt


def covered_day(logical_date: dt.datetime | None, run_after: dt.datetime | None = None) -> dt.date:
    if logical_date is not None:
        return naive_utc(logical_date).date()
    if run_after is None:
        raise ValueError("a run needs a logical date or a run_after time to know its day")
    return naive_utc(run_after).date() - dt.timedelta(days=1)


def end_of_day(day: dt.date) -> dt.datetime:
    """Exclusive upper bound for a day's events: midnight UTC after it (naive, UTC)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time())


def naive_utc(ts: dt.datetime) -> dt.datetime:
    """The same instant as a naive UTC datetime, the warehouse's convention."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(dt.UTC).replace(tzinfo=None)
