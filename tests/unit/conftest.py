"""Fixtures for unit tests: the hand-made business built into a warehouse.

The business is built once per engine for the whole session (`built`) and opened
read-only, since most tests only read it; a test that writes takes `built_copy`, a copy of
its own (a file copy on DuckDB, a template copy on PostgreSQL), which costs a fraction of
a build.
"""

import datetime as dt
import shutil
from pathlib import Path

import pytest
from business import D, business
from factories import build_source, order, upsert

from crm_pipeline.extract import extract_table
from crm_pipeline.models.stage import run_models
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.marts import build_marts
from crm_pipeline.transform.snapshots import build_snapshots
from crm_pipeline.transform.staging import build_staging
from crm_pipeline.warehouse import Warehouse

ENGINES = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


def build_business(tmp: Path, warehouse: Warehouse) -> None:
    """Two nights of the business, staging, the marts, the snapshots and the models for D."""
    src = build_source(f"sqlite:///{tmp}/source.db", business())
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, D, "night-1")
    # C05's 06-20 order is refunded on 07-02, after d: a run for d must still count it
    upsert(
        src,
        "orders",
        [
            order(
                "O05b", "C05", "2025-06-20", 40.0, status="refunded", updated_at="2025-07-02 09:00"
            )
        ],
    )
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, dt.date(2025, 7, 2), "night-2")
    build_staging(warehouse)
    build_marts(warehouse, ("fct_orders",), D)
    build_snapshots(warehouse, D, D)
    run_models(warehouse, D, "built")  # 11 buyers: CLV with its small-data fallback, churn skipped
    build_marts(warehouse, ("dim_customer",), D)


@pytest.fixture(scope="session", params=ENGINES)
def built(request, tmp_path_factory) -> Warehouse:
    """The business built once per engine, shared by every test that reads it: read-only
    (DuckDB's access_mode, PostgreSQL's default_transaction_read_only), so a test that
    writes fails at once instead of changing what the next test reads. Restrict a test to
    one engine with `@pytest.mark.parametrize("built", ["duckdb"], indirect=True)`."""
    tmp = tmp_path_factory.mktemp(f"built-{request.param}")
    if request.param == "duckdb":
        path = tmp / "warehouse.duckdb"
        build_business(tmp, Warehouse(f"duckdb:///{path}"))
        yield Warehouse(f"duckdb:///{path}?access_mode=read_only")
        return
    databases = request.getfixturevalue("pg_databases")
    with databases.create() as url:
        build_business(tmp, Warehouse(url))
        databases.read_only(url)
        yield Warehouse(url)


@pytest.fixture
def built_copy(request, built: Warehouse, tmp_path) -> Warehouse:
    """A copy of `built` of the test's own, to write to."""
    if built.dialect == "duckdb":
        source = Path(built.engine.url.database)
        target = tmp_path / "warehouse.duckdb"
        for suffix in ("", ".wal"):  # NullPool closes every connection: normally no WAL
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
        yield Warehouse(f"duckdb:///{target}")
        return
    with request.getfixturevalue("pg_databases").create(template=built.engine.url.database) as url:
        yield Warehouse(url)
