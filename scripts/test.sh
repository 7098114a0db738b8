#!/usr/bin/env bash
# `make test`: install what the tests need and run them (CI runs exactly this).
# PostgreSQL tests use CRM_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres);
# without a server they are skipped loudly, and with CI=true that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/lint_sql.sh
exec .venv/bin/python -m pytest "$@"
