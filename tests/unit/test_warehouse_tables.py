"""The warehouse layer: declared tables, the frame reader and the bulk loader, both engines."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd

from crm_pipeline.errors import PipelineStop
from crm_pipeline.warehouse import tables
from crm_pipeline.warehouse.tables import Table

PACKAGE = Path(__file__).resolve().parents[2] / "crm_pipeline"
DECLARED = [t for t in vars(tables).values() if isinstance(t, Table) and not t.temporary]


def test_ensure_creates_every_declared_table_with_its_columns(warehouse):
    with warehouse.begin() as conn:
        warehouse.ensure(conn, *DECLARED)
        warehouse.ensure(conn, *DECLARED)  # a second call changes nothing
        for table in [*DECLARED, *tables.RAW.values()]:
            assert warehouse.columns(conn, table.name) == table.column_names, table.name
        held = conn.exec_driver_sql("select count(*) from quarantine.held_rows").scalar_one()
    assert held == 0


def test_a_column_added_to_a_declaration_is_added_to_an_older_table(warehouse):
    """A warehouse made by an earlier version keeps its rows; the new nullable columns
    arrive null, and a column that cannot be added that way stops with its name."""
    old = Table("marts.t_old", {"as_of_date": "date", "value": "double precision"}, "a day")
    new = Table("marts.t_old", {**old.columns, "since": "date", "slow": "boolean"}, "a day")
    with warehouse.begin() as conn:
        warehouse.ensure(conn, old)
        conn.exec_driver_sql("insert into marts.t_old values (date '2026-12-01', 1.5)")
    with warehouse.begin() as conn:
        warehouse.ensure(conn, new)
        assert warehouse.columns(conn, "marts.t_old") == new.column_names
        row = conn.exec_driver_sql("select * from marts.t_old").fetchone()
    assert tuple(row) == (dt.date(2026, 12, 1), 1.5, None, None)
    strict = Table("marts.t_old", {**new.columns, "key": "varchar not null"}, "a day")
    with warehouse.begin() as conn:
        try:
            warehouse.ensure(conn, strict)
        except RuntimeError as exc:
            assert "marts.t_old lacks column key (varchar not null)" in str(exc)
            # no retry can add it: the task fails at once and a person is told
            assert isinstance(exc, PipelineStop)
        else:
            raise AssertionError("a not null column was added to existing rows")


def test_no_stage_declares_a_table_of_its_own():
    """Column lists are declared in crm_pipeline/warehouse/tables.py only; a stage creates
    tables from SQL (`create ... as select`) or through Warehouse.ensure/create_temp."""
    ddl = re.compile(
        r"create\s+(temporary\s+)?table\s+(if\s+not\s+exists\s+)?[\w.{}]+\s*\(", re.IGNORECASE
    )
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "warehouse" not in path.parts and ddl.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_read_frame_keeps_types_on_both_engines(warehouse):
    with warehouse.begin() as conn:
        frame = warehouse.read_frame(
            conn,
            warehouse.render(
                "select '00123' as id, cast(1.5 as double precision) as x, 2 as n, "
                "date '2025-01-02' as day, cast(null as double precision) as missing, "
                "'50%' as share"
            ),
        )
    row = frame.iloc[0]
    assert row["id"] == "00123" and row["x"] == 1.5 and row["n"] == 2 and row["share"] == "50%"
    assert pd.Timestamp(row["day"]) == pd.Timestamp("2025-01-02") and pd.isna(row["missing"])


def test_load_declared_round_trip_on_both_engines(warehouse):
    frame = pd.DataFrame(
        {
            "as_of_date": [dt.date(2026, 1, 2), dt.date(2026, 1, 2)],
            "run_id": ["r1", "r,2"],
            "firing": [3, 0],
            "notified_items": [1, 0],
            "message_id": ["<a@b>", None],
        }
    )
    with warehouse.begin() as conn:
        assert warehouse.load_declared(conn, tables.ALERT_RUNS, frame) == 2
        back = warehouse.read_frame(conn, "select * from ops.alert_runs order by run_id")
        warehouse.temp_table(conn, "_t", pd.DataFrame({"k": [1, 2], "v": ["a", "b"]}))
        assert conn.exec_driver_sql("select sum(k) from _t where v = 'b'").scalar_one() == 2
    assert back["run_id"].tolist() == ["r,2", "r1"]
    assert back["firing"].tolist() == [0, 3]
    assert back["message_id"].isna().tolist() == [True, False]
