"""Print a DAG run's tasks with state and duration, from `airflow tasks states-for-dag-run -o json`."""

import datetime as dt
import json
import sys


def main() -> None:
    print(f"Tasks of run {sys.argv[1]}:")
    for task in json.load(sys.stdin):
        start, end = task.get("start_date"), task.get("end_date")
        secs = ((dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
                if start and end else float("nan"))
        index = str(task.get("map_index", "-1"))
        name = task["task_id"] + (f"[{index}]" if index not in ("-1", "", "None") else "")
        print(f"  {name:<36} {task['state']:<8} {secs:7.1f} s")


if __name__ == "__main__":
    main()
