"""One night of crm_nightly's stages in the DAG's order, outside Airflow, in a process a
test can kill (SIGKILL: no cleanup, no rollback, no `finally`) at its N-th SQL statement.

    python tests/nightly_driver.py SOURCE_URL WAREHOUSE_URL DAY [--kill-at N]

Each DAG task calls one `crm_pipeline.stages` function; this runs the same functions in
the same order (a model gate failure does not stop the stages after it, as in the DAG), so
killing it anywhere is killing a task anywhere. Prints `statements: N` at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from crm_pipeline import stages
from crm_pipeline.models.nightly import ModelGateError
from crm_pipeline.source_schema import TABLE_ORDER

_count = 0


def _kill_at(n: int) -> None:
    def before_cursor_execute(*_args, **_kw):
        global _count
        _count += 1
        if _count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(sa.engine.Engine, "before_cursor_execute", before_cursor_execute)


def night(source_url: str, warehouse_url: str, day: dt.date, run_id: str,
          data_dir: Path) -> None:
    run = stages.Run(day=day, run_id=run_id,
                     started=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2)),
                     warehouse_url=warehouse_url, source_url=source_url, data_dir=data_dir)
    stages.preflight(run, can_mail=False, engineers="")
    for table in TABLE_ORDER:
        stages.extract(run, table)
    stages.validate(run)
    stages.stage(run)
    stages.build_marts(run, "fct_orders")
    first_day = stages.snapshots(run)
    try:
        stages.models(run)
    except ModelGateError:
        pass  # publish, KPIs and alerts still run, as in the DAG
    stages.build_marts(run, "dim_customer")
    stages.evaluate(run, first_day)
    stages.prepare_alerts(run, "managers@example.com")
    stages.send_alerts(run, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("warehouse")
    parser.add_argument("day", type=dt.date.fromisoformat)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--run-id", default="driver")
    args = parser.parse_args()
    if args.kill_at:
        _kill_at(args.kill_at)
    else:
        event.listen(sa.engine.Engine, "before_cursor_execute", _counter)
    night(args.source, args.warehouse, args.day, args.run_id, Path(tempfile.mkdtemp()))
    print(f"statements: {_count}")


def _counter(*_args, **_kw) -> None:
    global _count
    _count += 1


if __name__ == "__main__":
    main()
