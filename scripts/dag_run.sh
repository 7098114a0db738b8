#!/usr/bin/env bash
# One real DAG run of crm_nightly for a day, judged task by task; sourced environment
# (scripts/airflow_env.sh) expected. Usage: bash scripts/dag_run.sh DAY LOG [--quiet]
# Exit 0 only when every task succeeded: `airflow dags test` reports the run's state, which
# comes from its leaves alone, and says success for a run in which no task ran at all.
set -uo pipefail
day=$1 log=$2 quiet=${3:-}
today=$(date -u +%F)
if [[ ! "$day" < "$today" ]]; then
  echo "crm_nightly: $day has not ended yet (UTC); a run covers a complete day, the latest is $(date -u -d yesterday +%F)" >&2
  exit 2
fi
airflow dags test crm_nightly "$day" >"$log" 2>&1
run_id=$(grep -oE "DagRun Finished: dag_id=crm_nightly, logical_date=[^,]+, run_id=[^,]+" "$log" | tail -1 | sed 's/.*run_id=//')
if [ -z "$run_id" ]; then
  tail -30 "$log" >&2
  echo "crm_nightly: no DAG run finished for $day (log: $log)" >&2
  exit 1
fi
report=$(airflow tasks states-for-dag-run crm_nightly "$run_id" -o json 2>/dev/null | python scripts/task_report.py "$run_id" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] || [ -z "$quiet" ]; then echo "$report"; fi
if [ "$rc" -ne 0 ]; then
  echo "Errors (the failed tasks' own messages, every line; full log: $log):" >&2
  # an error's first line names its class; the lines that follow it indented (a validation
  # failure's table, column, rule and rows) belong to it
  awk '
    /(PipelineStop|DataQualityError|ModelGateError|RunDateError|ConfigError|SourceSchemaError|AirflowFailException)/ && !/^[[:space:]]+(raise|File) / {
      keep = 1; if (!seen[$0]++) print; next }
    keep && /^[[:space:]]+[^[:space:]]/ && !/^[[:space:]]+(raise|File|\^)/ { if (!seen[$0]++) print; next }
    { keep = 0 }
  ' "$log" | tail -60 >&2
  exit 1
fi
