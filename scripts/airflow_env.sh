# Sourced by the run and test scripts: the embedded default environment.
# Every variable keeps a value the user already exported, so production settings win.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CRM_DATA_DIR=${CRM_DATA_DIR:-$ROOT/data}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$ROOT/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}
export AIRFLOW__LOGGING__LOGGING_LEVEL=${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}
export AIRFLOW_CONN_CRM_SOURCE=${AIRFLOW_CONN_CRM_SOURCE:-sqlite:///$CRM_DATA_DIR/source.db}
export AIRFLOW_CONN_CRM_WAREHOUSE=${AIRFLOW_CONN_CRM_WAREHOUSE:-duckdb:///$CRM_DATA_DIR/warehouse.duckdb}
# Alert mail: the embedded default is a local SMTP sink that keeps each message as a file
# (scripts/run.sh starts it); plain SMTP on loopback, so no SSL and no STARTTLS.
export CRM_SMTP_SINK_PORT=${CRM_SMTP_SINK_PORT:-8025}
export CRM_SMTP_SINK_DIR=${CRM_SMTP_SINK_DIR:-$CRM_DATA_DIR/mail}
CRM_SMTP_SINK_URL="smtp://127.0.0.1:$CRM_SMTP_SINK_PORT?disable_ssl=true&disable_tls=true&from_email=crm-pipeline%40localhost"
export AIRFLOW_CONN_SMTP_DEFAULT=${AIRFLOW_CONN_SMTP_DEFAULT:-$CRM_SMTP_SINK_URL}
export CRM_DATA_ENGINEERS=${CRM_DATA_ENGINEERS:-data-engineers@localhost}
export PATH=$ROOT/.venv/bin:$PATH

# The sink runs only while alert mail goes to it (the embedded default); a scheduler, a
# backfill or a run that sends an alert needs it up.
uses_smtp_sink() { [ "$AIRFLOW_CONN_SMTP_DEFAULT" = "$CRM_SMTP_SINK_URL" ]; }
start_smtp_sink() {
  python -m crm_devtools.smtp_sink start --dir "$CRM_SMTP_SINK_DIR" --port "$CRM_SMTP_SINK_PORT" \
    --pid-file "$CRM_DATA_DIR/smtp_sink.pid"
}
stop_smtp_sink() {
  python -m crm_devtools.smtp_sink stop --pid-file "$CRM_DATA_DIR/smtp_sink.pid" >/dev/null 2>&1 || true
}
