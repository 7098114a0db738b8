"""Print a DAG run's tasks with state and duration, from `airflow tasks states-for-dag-run -o json`,
and exit 1 unless it was a good night: at least one task ran and every task succeeded (the
watcher, which runs only when a task failed, skipped). `airflow dags test` prints the run's
state, which comes from its leaves only; this judges every task.

    airflow tasks states-for-dag-run crm_nightly RUN_ID -o json | python scripts/task_report.py RUN_ID
"""

import datetime as dt
import json
import sys

OK = {"success"}
WATCHER_OK = {"skipped"}


def verdict(tasks: list[dict]) -> list[str]:
    """What was wrong with the run, one line per task; empty for a good night."""
    if not tasks:
        return ["no task ran for this run"]
    bad = []
    for task in tasks:
        ok = WATCHER_OK if task["task_id"] == "watcher" else OK
        if task["state"] not in ok:
            bad.append(f"{_name(task)} {task['state']}")
    return bad


def _name(task: dict) -> str:
    """A mapped task by what it works on: extract.extract_table[orders], not [3]."""
    index = str(task.get("map_index", "-1"))
    if index in ("-1", "", "None"):
        return task["task_id"]
    label = task.get("rendered_map_index")
    if not label and task["task_id"].startswith("extract."):
        from crm_pipeline.source_schema import TABLE_ORDER  # the DAG maps over it in order

        label = TABLE_ORDER[int(index)] if int(index) < len(TABLE_ORDER) else index
    return f"{task['task_id']}[{label or index}]"


def main() -> None:
    tasks = json.load(sys.stdin)
    print(f"Tasks of run {sys.argv[1]}:")
    for task in tasks:
        start, end = task.get("start_date"), task.get("end_date")
        secs = (
            (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
            if start and end
            else float("nan")
        )
        print(f"  {_name(task):<36} {str(task['state']):<16} {secs:7.1f} s")
    bad = verdict(tasks)
    if bad:
        print("NOT a good night: " + "; ".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
