#!/usr/bin/env bash
# `make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD`: one real DAG run per day, oldest first,
# as a scheduler's backfill would do. Each run replaces only its own day's rows; a day
# counts as done only when every one of its tasks succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FROM:?set FROM=YYYY-MM-DD}" "${TO:?set TO=YYYY-MM-DD}"
bash scripts/bootstrap.sh
. scripts/airflow_env.sh
mkdir -p "$CRM_DATA_DIR/logs"
airflow db migrate >"$CRM_DATA_DIR/logs/airflow-db-migrate.log" 2>&1
airflow pools set crm_warehouse 1 "Single writer on the warehouse (DuckDB admits one)" >/dev/null
if uses_smtp_sink; then  # a backfilled day past the last alerted one sends its email
  start_smtp_sink >/dev/null
  trap stop_smtp_sink EXIT
fi
start=$(date +%s)
day=$FROM
while [[ ! "$day" > "$TO" ]]; do
  log=$CRM_DATA_DIR/logs/crm_nightly-$day.log
  if bash scripts/dag_run.sh "$day" "$log" --quiet; then
    echo "backfill: $day ok (every task succeeded)"
  else
    echo "backfill: $day FAILED (log: $log)" >&2
    exit 1
  fi
  day=$(date -u -d "$day + 1 day" +%F)
done
echo "backfill: $FROM .. $TO done in $(( $(date +%s) - start )) s"
