"""The nightly's schedule: one run per UTC day, whose data interval is that day.

A plain `CronDataIntervalTimetable("0 2 * * *")` builds the right day (the pipeline keys on
the logical date) but shows the wrong one: its intervals run 02:00 to 02:00, a run
triggered from the UI or the REST API for 2026-12-06 shows an interval ending two days
earlier (the latest complete period before the given date), and data engineers read the
interval. Here the interval *is* the covered day, [D 00:00, D+1 00:00) UTC, the logical
date is its start, and the scheduled run waits `hour` hours after midnight for late rows.

Registered as a plugin because the scheduler and the api-server rebuild a DAG's timetable
from its serialized form by class path (Airflow's custom timetable how-to).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DataInterval
from airflow.timetables.interval import CronDataIntervalTimetable

DAY = timedelta(days=1)


class CoveredDayTimetable(CronDataIntervalTimetable):
    """Daily UTC intervals [D, D+1); the run for D starts at D+1 `hour`:00 UTC.

    Manual runs: a logical date anywhere in day D (the UI's and the REST API's trigger)
    gets D's interval. Unpausing with catchup off starts the run for the latest complete
    day at once, as every Airflow interval schedule does.
    """

    def __init__(self, hour: int = 2) -> None:
        if not 0 <= hour < 24:
            raise ValueError(f"hour must be 0..23, not {hour}")
        super().__init__("0 0 * * *", "UTC")
        self.hour = hour
        self.description = f"At {hour:02d}:00 UTC, for the UTC day that ended {hour} h before"

    @property
    def summary(self) -> str:
        return f"daily {self.hour:02d}:00 UTC, the UTC day before"

    def serialize(self) -> dict[str, Any]:
        return {"hour": self.hour}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> CoveredDayTimetable:
        return cls(int(data.get("hour", 2)))

    def __eq__(self, other: object) -> bool:
        # by name: Airflow's plugin manager imports this file as a module of its own, so
        # the scheduler's copy of the class is not this one
        return type(other).__name__ == type(self).__name__ and other.serialize() == self.serialize()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.hour))

    def next_dagrun_info(self, *, last_automated_data_interval, restriction):
        info = super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )
        if info is None or info.data_interval is None:
            return info
        return info._replace(run_after=info.data_interval.end + timedelta(hours=self.hour))

    def infer_manual_data_interval(self, *, run_after) -> DataInterval:
        start = run_after.in_timezone("UTC").start_of("day")
        return DataInterval(start=start, end=start + DAY)


class CrmTimetablePlugin(AirflowPlugin):
    name = "crm_timetable"
    timetables = [CoveredDayTimetable]
