"""One night of crm_nightly's stages in the DAG's order, outside Airflow.

    python -m bench.night SOURCE_URL WAREHOUSE_URL DAY [--kill-at N] [--marks]
        [--only models [--models-config JSON]]

Each DAG task calls one `crm_pipeline.stages` function; this runs the same functions in
the same order (a model gate failure does not stop the stages after it, as in the DAG), so
killing it anywhere is killing a task anywhere: `--kill-at N` SIGKILLs the process (no
cleanup, no rollback, no `finally`) at its N-th SQL statement, for the kill tests. With
`--marks` it prints one JSON line as each stage starts and ends, for the benchmark. Prints
`statements: N` at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from crm_pipeline import stages
from crm_pipeline.errors import ModelGateError
from crm_pipeline.source_schema import TABLE_ORDER

_count = 0


def _counter(kill_at: int) -> Callable[..., None]:
    def before_cursor_execute(*_args, **_kw) -> None:
        global _count
        _count += 1
        if _count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return before_cursor_execute


def night(
    source_url: str,
    warehouse_url: str,
    day: dt.date,
    run_id: str,
    data_dir: Path,
    marks: bool = False,
    only: str = "",
    models_config: dict | None = None,
) -> None:
    run = stages.Run(
        day=day,
        run_id=run_id,
        started=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2)),
        warehouse_url=warehouse_url,
        source_url=source_url,
        data_dir=data_dir,
    )

    def step(name: str, fn: Callable[[], object]) -> object:
        if marks:
            print(json.dumps({"stage": name, "start": time.time()}), flush=True)
        result = fn()
        if marks:
            print(json.dumps({"stage": name, "end": time.time()}), flush=True)
        return result

    def models() -> None:
        from crm_pipeline.models.stage import run_models

        try:
            run_models(run.warehouse, run.day, run.run_id, config=models_config)
        except ModelGateError:
            pass  # publish, KPIs and alerts still run, as in the DAG

    if only == "models":  # the models stage alone, e.g. on a night that trains the week
        step("models", models)
        return

    step("check_run", lambda: stages.preflight(run, can_mail=False, engineers=""))
    step("extract", lambda: [stages.extract(run, table) for table in TABLE_ORDER])
    step("validate", lambda: stages.validate(run))
    step("staging", lambda: stages.stage(run))
    step("fct_orders", lambda: stages.build_marts(run, "fct_orders"))
    first_day = step("snapshots", lambda: stages.snapshots(run))
    step("models", models)
    step("dim_customer", lambda: stages.build_marts(run, "dim_customer"))
    step("evaluate", lambda: stages.evaluate(run, first_day))
    step(
        "alerts",
        lambda: (stages.prepare_alerts(run, "managers@example.com"), stages.send_alerts(run, None)),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("warehouse")
    parser.add_argument("day", type=dt.date.fromisoformat)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--run-id", default="bench")
    parser.add_argument("--marks", action="store_true")
    parser.add_argument(
        "--only",
        choices=["models"],
        default="",
        help="run this stage alone (on a warehouse built up to it)",
    )
    parser.add_argument(
        "--models-config",
        type=json.loads,
        default=None,
        help="JSON merged over include/config/models.yaml for this run",
    )
    args = parser.parse_args()
    event.listen(sa.engine.Engine, "before_cursor_execute", _counter(args.kill_at))
    if args.marks:  # the benchmark keeps the pipeline's own log lines beside the marks
        logging.basicConfig(
            stream=sys.stdout,
            level=logging.WARNING,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
        logging.getLogger("crm_pipeline").setLevel(logging.INFO)
    night(
        args.source,
        args.warehouse,
        args.day,
        args.run_id,
        Path(tempfile.mkdtemp()),
        marks=args.marks,
        only=args.only,
        models_config=args.models_config,
    )
    print(f"statements: {_count}")


if __name__ == "__main__":
    main()
