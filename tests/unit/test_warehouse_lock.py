"""The embedded DuckDB file admits one process at a time: the run waits, says so, or fails clearly."""

import logging
import subprocess
import sys
import time

import pytest

from crm_pipeline.warehouse import Warehouse, WarehouseLockedError

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)   # an analyst's read-only session
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def wh_file(tmp_path):
    wh = Warehouse(f"duckdb:///{tmp_path}/wh.duckdb", lock_wait_seconds=20, lock_poll_seconds=0.2)
    wh.ensure_schemas()
    return wh


def hold(path, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, path, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_writer_waits_for_an_analysts_session_and_logs_why(wh_file, caplog):
    proc = hold(wh_file.engine.url.database, 1.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="crm_pipeline.warehouse"):
        with wh_file.begin() as conn:
            conn.exec_driver_sql("create table marts.t as select 1 as x")
    proc.wait()
    assert time.monotonic() - started >= 0.5
    assert any("is locked by another process" in r.getMessage() for r in caplog.records)


def test_a_lock_held_too_long_fails_naming_the_file(wh_file):
    proc = hold(wh_file.engine.url.database, 5)
    impatient = Warehouse(wh_file.url, lock_wait_seconds=1, lock_poll_seconds=0.2)
    try:
        with pytest.raises(
            WarehouseLockedError, match="still locked after 1s.*Reading the warehouse"
        ):
            with impatient.begin():
                pass
    finally:
        proc.kill()
