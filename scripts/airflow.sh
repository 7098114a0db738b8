#!/usr/bin/env bash
# A local Airflow a person can open, on the embedded default (or whatever connections and
# metadata database you exported): scheduler, dag-processor, triggerer and api-server, each
# a process group of its own, so that stopping takes their children (LocalExecutor workers,
# the log server, api-server workers) with them.
#
#   bash scripts/airflow.sh start      # `make airflow`: runs in the foreground, Ctrl-C stops
#   bash scripts/airflow.sh stop       # `make airflow-stop`, from another terminal
#   bash scripts/airflow.sh trigger D  # `make trigger DAY=D`: a run for day D (REST API)
#   bash scripts/airflow.sh status
#
# Settings (environment; defaults for a 2-core machine):
#   CRM_AIRFLOW_PORT (8080)  api-server port; UI at http://localhost:PORT
#   CRM_AIRFLOW_LOG_PORT (8793)  served task logs (the LocalExecutor's log server)
#   AIRFLOW__CORE__EXECUTOR (LocalExecutor), AIRFLOW__CORE__PARALLELISM (2)
#   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (SQLite in AIRFLOW_HOME)
#   CRM_AIRFLOW_GRACE (30)   seconds a service gets to stop on SIGTERM before SIGKILL
#   CRM_AIRFLOW_SERVICES     comma-separated list replacing the services started
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/airflow_env.sh

PORT=${CRM_AIRFLOW_PORT:-8080}
URL=http://localhost:$PORT
export AIRFLOW__CORE__EXECUTOR=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
# Airflow starts 32 task slots and 2 parsing processes by default: too many for 2 cores
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-2}
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=${AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES:-1}
export AIRFLOW__API__WORKERS=${AIRFLOW__API__WORKERS:-1}
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-$URL}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-$URL/execution/}
# the log server runs beside the scheduler (LocalExecutor) or the worker (Celery); the
# api-server reads task logs from it or from the shared log folder
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=${CRM_AIRFLOW_LOG_PORT:-8793}
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=${CRM_AIRFLOW_TRIGGER_LOG_PORT:-8794}
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}
PASSWORDS=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$PASSWORDS
STATE=$AIRFLOW_HOME/services
LOGS=$CRM_DATA_DIR/logs
GRACE=${CRM_AIRFLOW_GRACE:-30}
USER_NAME=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS%%:*}

alive() { kill -0 -- "-$1" 2>/dev/null; }  # any process left in the group

running_groups() {
  [ -f "$STATE/pids" ] || return 0
  while read -r name pgid; do alive "$pgid" && echo "$name $pgid"; done <"$STATE/pids"
  return 0
}

stop_services() {
  [ -f "$STATE/pids" ] || { echo "airflow: nothing to stop"; return 0; }
  local left name pgid waited=0
  touch "$STATE/stopping"  # tells the foreground `start` that this stop was asked for
  # the main process of each service first (Airflow shuts its children down itself) ...
  while read -r name pgid; do kill -TERM "$pgid" 2>/dev/null || true; done <"$STATE/pids"
  while [ -n "$(running_groups)" ] && [ "$waited" -lt "$GRACE" ]; do sleep 1; waited=$((waited + 1)); done
  # ... then whatever of a group is left: a LocalExecutor worker that missed its stop
  # message keeps the scheduler waiting forever; an orphaned child keeps a port
  left=$(running_groups)
  if [ -n "$left" ]; then
    echo "airflow: still running after ${GRACE}s, killed: $(echo "$left" | cut -d' ' -f1 | tr '\n' ' ')"
    while read -r name pgid; do kill -KILL -- "-$pgid" 2>/dev/null || true; done <<<"$left"
    sleep 1
  fi
  if [ -f "$CRM_DATA_DIR/smtp_sink.pid" ] && [ -f "$STATE/smtp_sink" ]; then
    stop_smtp_sink
  fi
  rm -f "$STATE/pids" "$STATE/smtp_sink" "$STATE/stopping"
  echo "airflow: stopped (scheduler, dag-processor, triggerer, api-server and their children)"
}

token() {  # a JWT for the REST API, from the printed login
  local password
  password=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$PASSWORDS" "$USER_NAME")
  curl -sf -X POST "$URL/auth/token" -H 'Content-Type: application/json' \
    -d "{\"username\": \"$USER_NAME\", \"password\": \"$password\"}" \
    | python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

start() {
  if [ -n "$(running_groups)" ]; then
    echo "airflow: already running (make airflow-stop first):" >&2; running_groups >&2; exit 1
  fi
  bash scripts/bootstrap.sh
  mkdir -p "$STATE" "$LOGS"
  local day
  day=$(date -u -d yesterday +%F)
  if [ "$AIRFLOW_CONN_CRM_SOURCE" = "sqlite:///$CRM_DATA_DIR/source.db" ]; then
    python -m crm_devtools prepare-demo --day "$day" \
      --customers "${DEMO_CUSTOMERS:-20000}" --days "${DEMO_DAYS:-730}" --seed "${DEMO_SEED:-42}"
  fi
  # one signing secret for every service: each would otherwise make its own, and the
  # api-server would refuse the task tokens of the others ("Invalid auth token")
  if [ -z "${AIRFLOW__API_AUTH__JWT_SECRET:-}" ]; then
    [ -s "$STATE/jwt_secret" ] || (umask 077; python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$STATE/jwt_secret")
    AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$STATE/jwt_secret")
    export AIRFLOW__API_AUTH__JWT_SECRET
  fi
  if [ ! -s "$PASSWORDS" ]; then
    (umask 077; python -c 'import json,secrets,sys; print(json.dumps({sys.argv[1]: secrets.token_urlsafe(12)}))' "$USER_NAME" >"$PASSWORDS")
  fi
  airflow db migrate >"$LOGS/airflow-db-migrate.log" 2>&1 || { cat "$LOGS/airflow-db-migrate.log"; exit 1; }
  airflow pools set crm_warehouse "${CRM_WAREHOUSE_POOL_SLOTS:-1}" "Writers on the warehouse (DuckDB admits one)" >/dev/null
  if uses_smtp_sink; then start_smtp_sink && touch "$STATE/smtp_sink"; fi
  trap 'stop_services; exit 0' INT TERM
  : >"$STATE/pids"
  rm -f "$STATE/stopping"
  local services=(scheduler dag-processor triggerer api-server) svc
  [ "$AIRFLOW__CORE__EXECUTOR" = CeleryExecutor ] && services+=("celery worker")
  # CRM_AIRFLOW_SERVICES replaces the list (a test starts its own Celery worker)
  if [ -n "${CRM_AIRFLOW_SERVICES:-}" ]; then IFS=, read -r -a services <<<"$CRM_AIRFLOW_SERVICES"; fi
  for svc in "${services[@]}"; do
    # setsid: a session and process group of its own, so a stop reaches every child
    # shellcheck disable=SC2086
    setsid airflow $svc >"$LOGS/airflow-${svc// /-}.log" 2>&1 </dev/null &
    echo "${svc// /-} $!" >>"$STATE/pids"
  done
  for _ in $(seq 1 120); do
    curl -sf "$URL/api/v2/monitor/health" >/dev/null 2>&1 && break
    [ "$(running_groups | wc -l)" -eq "${#services[@]}" ] || break
    sleep 1
  done
  if ! curl -sf "$URL/api/v2/monitor/health" >/dev/null 2>&1; then
    echo "airflow: the api-server did not answer at $URL; service logs: $LOGS/airflow-*.log" >&2
    tail -5 "$LOGS"/airflow-{scheduler,dag-processor,triggerer,api-server}.log >&2 || true
    stop_services; exit 1
  fi
  cat <<EOF

Airflow is up ($AIRFLOW__CORE__EXECUTOR, $AIRFLOW__CORE__PARALLELISM task slots): $URL
  login: $USER_NAME / $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$PASSWORDS" "$USER_NAME")   (in $PASSWORDS)
  run a day:  make trigger DAY=$day   (also unpauses crm_nightly: from then on it runs at
              02:00 UTC for the day before, while this Airflow is up)
  logs:       services $LOGS/airflow-*.log, tasks $AIRFLOW_HOME/logs (also in the UI)
  stop:       Ctrl-C here, or make airflow-stop
EOF
  # stay in the foreground until stopped; a service that dies stops the rest
  while [ "$(running_groups | wc -l)" -eq "${#services[@]}" ]; do sleep 2; done
  if [ -f "$STATE/stopping" ]; then  # make airflow-stop, from elsewhere
    while [ -f "$STATE/stopping" ]; do sleep 1; done
    exit 0
  fi
  echo "airflow: a service stopped on its own: $(comm -23 <(cut -d' ' -f1 "$STATE/pids" | sort) <(running_groups | cut -d' ' -f1 | sort) | tr '\n' ' ')(its log: $LOGS/airflow-<name>.log)" >&2
  stop_services
  exit 1
}

trigger() {
  local day=${1:?usage: trigger YYYY-MM-DD} tok body code
  tok=$(token) || { echo "trigger: no token from $URL (is make airflow running?)" >&2; exit 1; }
  # the run first, then unpause: the scheduler then skips the scheduled run for the same
  # day (same logical date) instead of starting a second one
  body=$(mktemp)
  code=$(curl -s -o "$body" -w '%{http_code}' -X POST "$URL/api/v2/dags/crm_nightly/dagRuns" \
    -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    -d "{\"dag_run_id\": \"manual__$day\", \"logical_date\": \"${day}T00:00:00Z\", \"note\": \"make trigger DAY=$day\"}")
  if [ "$code" != 200 ]; then
    echo "trigger: the API answered $code: $(cat "$body")" >&2
    [ "$code" = 409 ] && echo "trigger: $day has a run already: clear it in the UI (or airflow tasks clear crm_nightly -s $day -e ${day}T23:59:59 --yes) to run it again" >&2
    rm -f "$body"; exit 1
  fi
  local run_id
  run_id=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["dag_run_id"])' "$body")
  rm -f "$body"
  curl -sf -o /dev/null -X PATCH "$URL/api/v2/dags/crm_nightly" -H "Authorization: Bearer $tok" \
    -H 'Content-Type: application/json' -d '{"is_paused": false}'
  echo "trigger: crm_nightly for $day queued as $run_id"
  echo "  $URL/dags/crm_nightly/runs/$run_id"
}

case "${1:-start}" in
  start) start ;;
  stop) stop_services ;;
  trigger) shift; trigger "$@" ;;
  status) running_groups ;;
  *) echo "usage: $0 start|stop|trigger DAY|status" >&2; exit 2 ;;
esac
