#!/usr/bin/env bash
# SQL lint of include/sql, run by `make test` (scripts/test.sh) and `make lint`; rules and the
# placeholders' sample values are in .sqlfluff. About 10-20 s on a laptop.
set -euo pipefail
cd "$(dirname "$0")/.."
SQLFLUFF=${SQLFLUFF:-.venv/bin/sqlfluff}
# the layout and reference rules, in DuckDB's dialect (.sqlfluff)
"$SQLFLUFF" lint include/sql
# the same files run on PostgreSQL: a file that does not parse as PostgreSQL fails (PRS). Lint
# needs a rule to run; CP01 (lower-case keywords) is one the files already keep.
"$SQLFLUFF" lint include/sql --dialect postgres --rules CP01
