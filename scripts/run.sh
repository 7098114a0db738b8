#!/usr/bin/env bash
# `make run`: the nightly DAG end to end on the embedded default (or on whatever
# AIRFLOW_CONN_CRM_SOURCE / AIRFLOW_CONN_CRM_WAREHOUSE you exported).
#   DAY=YYYY-MM-DD  the day to build (default: yesterday, the latest complete UTC day)
#   DEMO_CUSTOMERS / DEMO_DAYS / DEMO_SEED  size of a newly generated demo source
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/bootstrap.sh
. scripts/airflow_env.sh
DAY=${DAY:-$(date -u -d yesterday +%F)}
mkdir -p "$CRM_DATA_DIR/logs"
if [[ ! "$DAY" < "$(date -u +%F)" ]]; then
  echo "run: $DAY has not ended yet (UTC): a run covers a complete day; the latest is $(date -u -d yesterday +%F)" >&2
  exit 2
fi

if [ "$AIRFLOW_CONN_CRM_SOURCE" = "sqlite:///$CRM_DATA_DIR/source.db" ]; then
  python -m crm_devtools prepare-demo --day "$DAY" \
    --customers "${DEMO_CUSTOMERS:-20000}" --days "${DEMO_DAYS:-730}" --seed "${DEMO_SEED:-42}"
fi

log=$CRM_DATA_DIR/logs/crm_nightly-$DAY.log
if uses_smtp_sink; then
  start_smtp_sink
  trap stop_smtp_sink EXIT
fi
mails_before=$(ls "$CRM_SMTP_SINK_DIR" 2>/dev/null | wc -l)
airflow db migrate >"$CRM_DATA_DIR/logs/airflow-db-migrate.log" 2>&1 \
  || { cat "$CRM_DATA_DIR/logs/airflow-db-migrate.log"; exit 1; }
airflow pools set crm_warehouse 1 "Single writer on the warehouse (DuckDB admits one)" >/dev/null
echo "run: airflow dags test crm_nightly $DAY (full log: $log)"
if ! bash scripts/dag_run.sh "$DAY" "$log"; then
  echo "run: crm_nightly FAILED for $DAY; full log: $log" >&2
  exit 1
fi
python -m crm_pipeline.cli summary --day "$DAY"
echo
echo "Data quality docs: $CRM_DATA_DIR/dq_docs/index.html"
new_mail=$(ls -t "$CRM_SMTP_SINK_DIR" 2>/dev/null | head -n $(( $(ls "$CRM_SMTP_SINK_DIR" 2>/dev/null | wc -l) - mails_before )) || true)
if [ -n "$new_mail" ]; then
  echo "Alert email(s) sent this run, saved by the SMTP sink:"
  for f in $new_mail; do echo "  $CRM_SMTP_SINK_DIR/$f"; done
else
  echo "No alert email reached the SMTP sink this run (why: the 'Alert email' line above); mail folder: $CRM_SMTP_SINK_DIR"
fi
echo "run: done in $(( $(date +%s) - start )) s; log: $log"
