#!/usr/bin/env bash
# The compose stack's airflow-init (docker-compose.yaml): `docker compose up airflow-init` once
# before `docker compose up -d`, and again after changing .env (or to advance the demo source).
#   1. refuses a Fernet key that is not one, and a demo switch on a real source database;
#   2. migrates Airflow's metadata database and sets the warehouse pool;
#   3. writes the UI login (SimpleAuthManager's passwords file) from .env AIRFLOW_ADMIN_PASSWORD
#      for the user named in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (.env AIRFLOW_ADMIN_USER);
#   4. with CRM_DEMO_SOURCE=true, generates the demo source (or advances it to yesterday) into
#      the SQLite file that AIRFLOW_CONN_CRM_SOURCE names under CRM_DATA_DIR (the data volume);
#   5. hands the shared volumes to the airflow user and says where to log in.
# It runs as root (to own the volumes); Airflow's commands go through the image's /entrypoint,
# which puts the airflow user's packages on root's path. Without /entrypoint (a test on a
# checkout) they run as they are.
set -euo pipefail
umask 0002

run() { if [ -x /entrypoint ]; then /entrypoint "$@"; else "$@"; fi; }
say() { echo "airflow-init: $*"; }
fail() { echo "airflow-init: $*" >&2; exit 1; }

home=${AIRFLOW_HOME:-/opt/airflow}
data=${CRM_DATA_DIR:?CRM_DATA_DIR is not set}
passwords=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the passwords file is not set}
users=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:?no UI user is configured}
user=${users%%:*}
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"

# 1. a bad key fails only later, when a connection or variable is first encrypted; a Fernet
# key is 32 bytes in URL-safe base64 (comma-separated keys: the first encrypts, all decrypt)
python - <<'EOF' || fail "AIRFLOW_FERNET_KEY in .env is not a Fernet key: make one as .env.example says"
import base64, binascii, os, sys
keys = os.environ.get("AIRFLOW__CORE__FERNET_KEY", "").split(",")
try:
    sys.exit(not all(len(base64.urlsafe_b64decode(k.strip().encode())) == 32 for k in keys))
except (binascii.Error, ValueError):
    sys.exit(1)
EOF
demo=${CRM_DEMO_SOURCE:-false}
if [ "$demo" = true ]; then  # the demo business is never written into a real CRM database
  case "${AIRFLOW_CONN_CRM_SOURCE:-}" in
    "sqlite:///$data/"*.db) ;;
    *) fail "CRM_DEMO_SOURCE=true generates a business into the source, so AIRFLOW_CONN_CRM_SOURCE" \
         "must be a SQLite file in the data volume (sqlite:///$data/demo/source.db); it names" \
         "another database: set CRM_DEMO_SOURCE=false for a real source" ;;
  esac
fi
mkdir -p "$home/logs" "$data" "$(dirname "$passwords")"

# 2.
say "migrating Airflow's metadata database"
run airflow db migrate
run airflow pools set crm_warehouse 4 "Writers on the PostgreSQL warehouse"

# 3. SimpleAuthManager reads {"user": "password"} at each login; the api-server adds (and
# prints) a generated password only for a configured user missing from the file
(umask 0077 && python - "$passwords" "$user" <<'EOF'
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as fh:
    json.dump({sys.argv[2]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
    fh.write("\n")
EOF
)
say "UI login written for user '$user' ($passwords)"

# 4.
if [ "$demo" = true ]; then
  source_file=${AIRFLOW_CONN_CRM_SOURCE#sqlite:///}
  mkdir -p "$(dirname "$source_file")"
  run python -m crm_devtools prepare-demo --day "$(date -u -d yesterday +%F)" \
    --customers "${CRM_DEMO_CUSTOMERS:-20000}" --days "${CRM_DEMO_DAYS:-730}" \
    --seed "${CRM_DEMO_SEED:-42}"
fi

# 5. the other containers run as AIRFLOW_UID (the image's airflow user) with group 0
if [ "$(id -u)" = 0 ]; then
  chown -R "${AIRFLOW_UID:-50000}:0" "$home/logs" "$data" "$(dirname "$passwords")"
fi
echo
echo "Airflow UI:      ${AIRFLOW_UI_URL:-http://localhost:8080}  (user '$user', password: AIRFLOW_ADMIN_PASSWORD in .env)"
echo "Mail (Mailpit):  ${MAILPIT_UI_URL:-http://localhost:8025}  (when smtp_default points at mailpit)"
echo "Next: docker compose up -d, then unpause crm_nightly in the UI (new DAGs start paused)."
