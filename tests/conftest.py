"""Shared fixtures: warehouses on both engines, and the PostgreSQL rule.

PostgreSQL tests run against the server named by CRM_TEST_PG_URL (default the local one,
postgresql://postgres@127.0.0.1:5432/postgres, trust auth), each in a database of its
own that is dropped afterwards. Without a reachable server they are skipped loudly; with
CI=true a skip is a failure, since CI must prove the production path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Airflow reads its settings at import: point it at a throwaway home before anything
# imports it, so tests never touch the metadata database of `make run`. Removed at the end
# of the session (pytest_unconfigure below).
AIRFLOW_HOME = tempfile.mkdtemp(prefix="crm-airflow-test-")
_HOME_OWNER = os.getpid()
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
for _var in ("AIRFLOW_CONN_CRM_SOURCE", "AIRFLOW_CONN_CRM_WAREHOUSE"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402 - after the environment above, on purpose
import sqlalchemy as sa  # noqa: E402

from crm_pipeline.warehouse import Warehouse  # noqa: E402

PG_URL = os.environ.get("CRM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_pg_problem: list[str] = []


def _admin_engine() -> sa.Engine:
    from crm_pipeline.config import normalise_url

    return sa.create_engine(
        normalise_url(PG_URL), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated Airflow metadata database in the throwaway AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        with _admin_engine().connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means no server
        message = f"PostgreSQL at {PG_URL} is not reachable: {str(exc).splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: the production-path tests must run)")
        _pg_problem.append(message)
        pytest.skip(message)
    return PG_URL


class PgDatabases:
    """PostgreSQL databases of the tests' own, each dropped when its `with` block ends."""

    @contextmanager
    def create(self, template: str | None = None) -> Iterator[str]:
        """A fresh database, empty or a copy of the database named `template` (no session
        may be connected to that one while it is copied); its SQLAlchemy URL."""
        name = f"crm_test_{uuid.uuid4().hex[:10]}"
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"create database {name}" + (f" template {template}" if template else "")
            )
        try:
            yield (
                sa.engine.make_url(admin.url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(
                    f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
                )
                conn.exec_driver_sql(f"drop database if exists {name}")

    def read_only(self, url: str) -> None:
        """From now on, every session on the database is read-only (a copy made with
        `create(template=...)` is not: a database's settings are not copied)."""
        name = sa.engine.make_url(url).database
        with _admin_engine().connect() as conn:
            conn.exec_driver_sql(f"alter database {name} set default_transaction_read_only = on")


@pytest.fixture(scope="session")
def pg_databases(pg_server: str) -> PgDatabases:
    """Databases for fixtures of any scope (a warehouse shared by several tests)."""
    return PgDatabases()


@pytest.fixture
def pg_database(pg_databases: PgDatabases):
    """A fresh, empty PostgreSQL database; its SQLAlchemy URL."""
    with pg_databases.create() as url:
        yield url


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request, tmp_path) -> Warehouse:
    """The same test on the embedded warehouse and on PostgreSQL."""
    if request.param == "duckdb":
        return Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    return Warehouse(request.getfixturevalue("pg_database"))


def pytest_unconfigure(config):
    """Remove the throwaway AIRFLOW_HOME once the session is over: every test has ended by
    then, and with it every subprocess that used the home (`airflow db migrate`, a DAG run's
    task processes). Only the process that made it removes it: a process forked from the
    session (a task runner) that happened to run this hook must not pull it from under the
    tests."""
    if os.getpid() == _HOME_OWNER:
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if _pg_problem:
        terminalreporter.section("PostgreSQL tests SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.write_line(_pg_problem[0])
        terminalreporter.write_line("Set CRM_TEST_PG_URL to a server to run them (CI must).")
