"""Fixtures for unit tests: the hand-made business built into a warehouse."""

import datetime as dt

import pytest
from business import D, business
from factories import build_source, order, upsert

from crm_pipeline.extract import extract_table
from crm_pipeline.kpis import build_snapshots
from crm_pipeline.models.nightly import run_models
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform import build_marts, build_staging


@pytest.fixture
def built(tmp_path, warehouse):
    src = build_source(f"sqlite:///{tmp_path}/source.db", business())
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, D, "night-1")
    # C05's 06-20 order is refunded on 07-02, after d: a run for d must still count it
    upsert(src, "orders", [order("O05b", "C05", "2025-06-20", 40.0, status="refunded",
                                 updated_at="2025-07-02 09:00")])
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, dt.date(2025, 7, 2), "night-2")
    build_staging(warehouse)
    build_marts(warehouse, ("fct_orders",), D)
    build_snapshots(warehouse, D, D)
    run_models(warehouse, D, "built")  # 11 buyers: CLV with its small-data fallback, churn skipped
    build_marts(warehouse, ("dim_customer",), D)
    return warehouse


