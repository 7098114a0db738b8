"""The validation corpus: one hand-made bad night per defect, each with its expected outcome.

Every case starts from the same good history (four nights: extract -> validate_run, then
staging and the marts of the last night), on DuckDB and on PostgreSQL, then adds one defect
to the next night. Row-level defects are quarantined with the right rule, column and value
and the night goes on (staging and marts are built and keep the good rows). Table-level
defects stop the night with one DataQualityError naming table, column, rule and rows; the
marts are not rebuilt, so they still equal the previous night's. Raw rows are never touched.

The good history is built once per engine and copied per case (a file copy for DuckDB, a
template database for PostgreSQL), which keeps the corpus fast.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
import yaml
from corpus import (
    add_rows,
    base_rows,
    drop_primary_key,
    execute,
    night_rows,
    with_line,
)
from factories import build_source, complaint, order, survey

from crm_pipeline.config import CONFIG_DIR
from crm_pipeline.errors import DataQualityError
from crm_pipeline.extract import extract_table
from crm_pipeline.quality.outcome import failed_tables
from crm_pipeline.quality.stage import validate_run
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.marts import build_marts
from crm_pipeline.transform.snapshots import build_snapshots
from crm_pipeline.transform.staging import build_staging
from crm_pipeline.warehouse import Warehouse

D = dt.date(2025, 3, 10)  # the last good night
HISTORY = [D - dt.timedelta(days=k) for k in (3, 2, 1, 0)]
MARTS = ("marts.fct_orders", "marts.dim_customer")


def now_of(day: dt.date) -> dt.datetime:
    """run_after of the night that covers `day`: early the next morning."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1, 0), tzinfo=dt.UTC)


def extract_all(src: str, wh: Warehouse, day: dt.date, run_id: str) -> None:
    for table in TABLE_ORDER:
        extract_table(src, wh, table, day, run_id)


def build_day(wh: Warehouse, day: dt.date) -> None:
    """stage -> marts, as crm_nightly does after a validation that passed."""
    build_staging(wh)
    build_marts(wh, ("fct_orders",), day)
    build_snapshots(wh, day, day)
    build_marts(wh, ("dim_customer",), day)


def rows(wh: Warehouse, sql: str) -> list[tuple]:
    with wh.begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).fetchall()]


def raw_counts(wh: Warehouse) -> dict[str, int]:
    union = " union all ".join(f"select '{t}', count(*) from raw.{t}" for t in TABLE_ORDER)
    return dict(rows(wh, union))


def marts(wh: Warehouse) -> dict[str, list[tuple]]:
    with wh.begin() as conn:
        return {
            t: [tuple(r) for r in conn.exec_driver_sql(f"select * from {t} order by 1")]
            for t in MARTS
        }


# -- the good history, once per engine --------------------------------------------------------


@dataclass
class History:
    engine: str
    source: str  # path of the SQLite source file
    warehouse: str  # DuckDB file or PostgreSQL template database name
    snapshot: dict[str, list[tuple]]
    admin_url: str | None = None
    copies: list[str] = field(default_factory=list)

    def fresh(self, tmp_path) -> tuple[str, Warehouse]:
        """A copy of the source and of the warehouse, for one case."""
        src = tmp_path / "source.db"
        shutil.copy(self.source, src)
        if self.engine == "duckdb":
            target = tmp_path / "warehouse.duckdb"
            shutil.copy(self.warehouse, target)
            return f"sqlite:///{src}", Warehouse(f"duckdb:///{target}")
        name = f"crm_case_{uuid.uuid4().hex[:10]}"
        with _admin(self.admin_url).connect() as conn:
            conn.exec_driver_sql(f"create database {name} template {self.warehouse}")
        self.copies.append(name)
        url = sa.engine.make_url(self.admin_url).set(database=name)
        return f"sqlite:///{src}", Warehouse(url.render_as_string(hide_password=False))


def _admin(url: str) -> sa.Engine:
    from crm_pipeline.config import normalise_url

    return sa.create_engine(
        normalise_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


def _make_history(tmp, wh: Warehouse) -> str:
    src = f"sqlite:///{tmp}/source.db"
    build_source(src, base_rows(HISTORY[0] - dt.timedelta(days=1)))
    for day in HISTORY:  # four nights of extracts (the volume rule's usual), validated at once
        add_rows(src, night_rows(day))
        extract_all(src, wh, day, f"run-{day}")
    summary = validate_run(wh, D, f"run-{D}", now_of(D))
    assert all(summary[t]["status"] == "passed" for t in TABLE_ORDER), summary
    build_day(wh, D)
    return str(tmp / "source.db")


@pytest.fixture(
    scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def history(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"history-{request.param}")
    if request.param == "duckdb":
        wh = Warehouse(f"duckdb:///{tmp}/warehouse.duckdb")
        source = _make_history(tmp, wh)
        yield History("duckdb", source, f"{tmp}/warehouse.duckdb", marts(wh))
        return
    admin_url = request.getfixturevalue("pg_server")
    name = f"crm_tmpl_{uuid.uuid4().hex[:10]}"
    with _admin(admin_url).connect() as conn:
        conn.exec_driver_sql(f"create database {name}")
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    wh = Warehouse(url)
    source = _make_history(tmp, wh)
    hist = History("postgres", source, name, marts(wh), admin_url)
    yield hist
    with _admin(admin_url).connect() as conn:
        for db in [*hist.copies, name]:
            conn.exec_driver_sql(
                f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{db}'"
            )
            conn.exec_driver_sql(f"drop database if exists {db}")


# -- the corpus -------------------------------------------------------------------------------

BAD_DAY = D + dt.timedelta(days=1)


@dataclass
class Case:
    name: str
    defect: Callable[[str, dt.date], None]  # changes the source for the bad night
    # quarantine cases: (table, rule, column, value, row_key) expected in quarantine.rows
    quarantined: list[tuple[str, str, str, str | None, str]] = field(default_factory=list)
    # stop cases: (table, column, rule, rows) each in the error message
    stops: list[tuple[str, str, str, int]] = field(default_factory=list)
    absent_orders: tuple[str, ...] = ()  # bad orders that must not reach fct_orders
    day: dt.date = BAD_DAY
    status: str = "failed"


def _night(src: str, day: dt.date, n: int = 5) -> None:
    add_rows(src, night_rows(day, n))


def duplicate_key(src, day):
    _night(src, day)
    drop_primary_key(src, "orders")
    o, line = with_line(order("ODUP", "C1", f"{day} 09:00", 30.0))
    add_rows(src, {"orders": [o, {**o, "channel": "shop"}], "order_lines": [line]})


def orphan_fk(src, day):
    _night(src, day)
    o, line = with_line(order("OORPH", "C999", f"{day} 09:00", 30.0))
    add_rows(src, {"orders": [o], "order_lines": [line]})


def score_out_of_range(src, day):
    _night(src, day)
    add_rows(
        src,
        {
            "surveys": [
                survey("SBAD", "C1", f"{day} 10:00", "nps", 11),
                survey("SOK", "C2", f"{day} 10:00", "nps", 10),
            ]
        },
    )


def negative_amount(src, day):
    _night(src, day)
    o, line = with_line(order("ONEG", "C1", f"{day} 09:00", 30.0, discount=0.0))
    add_rows(
        src,
        {"orders": [{**o, "discount_amount": -5.0, "gross_amount": 25.0}], "order_lines": [line]},
    )


def net_mismatch(src, day):
    _night(src, day)
    o, line = with_line(order("ONET", "C1", f"{day} 09:00", 20.0))
    add_rows(
        src,
        {"orders": [{**o, "gross_amount": 30.0, "discount_amount": 5.0}], "order_lines": [line]},
    )


def future_timestamp(src, day):
    _night(src, day)
    when = f"{day + dt.timedelta(days=3)} 09:00"
    o, line = with_line(order("OFUT", "C1", when, 30.0))
    add_rows(src, {"orders": [o], "order_lines": [line]})


def complaint_steps(src, day):
    _night(src, day)
    add_rows(
        src,
        {
            "complaints": [
                complaint(
                    "TBAD",
                    "C1",
                    f"{day} 08:00",
                    first_response_at=f"{day} 11:00",
                    cause_found_at=f"{day} 10:00",
                ),
                complaint(
                    "TGAP",
                    "C2",
                    f"{day} 08:00",
                    first_response_at=None,
                    cause_found_at=f"{day} 10:00",
                ),
                complaint(
                    "TOK",
                    "C3",
                    f"{day} 08:00",
                    first_response_at=f"{day} 09:00",
                    cause_found_at=f"{day} 10:00",
                ),
            ]
        },
    )


def unknown_status(src, day):
    _night(src, day)
    o, line = with_line(order("OSTAT", "C1", f"{day} 09:00", 30.0, status="pending"))
    add_rows(src, {"orders": [o], "order_lines": [line]})


def missing_column(src, day):
    _night(src, day)
    execute(src, "alter table orders drop column cost_amount")


def renamed_column(src, day):
    _night(src, day)
    execute(src, "alter table orders rename column channel to sales_channel")


def text_in_numeric(src, day):
    _night(src, day)
    execute(src, f"update orders set net_amount = 'n/a' where updated_at >= '{day}'")


def empty_table(src, day):
    _night(src, day)
    execute(src, "delete from customers")


def stale_table(src, day):
    pass  # the source stopped changing: nothing new for two days


def ten_times_volume(src, day):
    _night(src, day, n=60)


def line_of(order_id: str) -> tuple[str, str, str, str, str]:
    """The line of a quarantined order: its parent is held, so it is an orphan too."""
    return ("order_lines", "fk_orders", "order_id", order_id, f"{order_id}|1")


CASES = [
    Case(
        "duplicate_key",
        duplicate_key,
        quarantined=[("orders", "unique_key", "order_id", "ODUP", "ODUP"), line_of("ODUP")],
        absent_orders=("ODUP",),
    ),
    Case(
        "orphan_foreign_key",
        orphan_fk,
        quarantined=[
            ("orders", "fk_customers", "customer_id", "C999", "OORPH"),
            ("order_lines", "fk_orders", "order_id", "OORPH", "OORPH|1"),
        ],
        absent_orders=("OORPH",),
    ),
    Case(
        "score_out_of_range",
        score_out_of_range,
        quarantined=[("surveys", "score_range", "score", "survey_type=nps, score=11", "SBAD")],
    ),
    Case(
        "negative_amount",
        negative_amount,
        quarantined=[("orders", "non_negative", "discount_amount", "-5", "ONEG"), line_of("ONEG")],
        absent_orders=("ONEG",),
    ),
    Case(
        "net_not_gross_minus_discount",
        net_mismatch,
        quarantined=[
            (
                "orders",
                "net_equals_gross_minus_discount",
                "net_amount",
                "net_amount=20, gross_amount=30, discount_amount=5",
                "ONET",
            ),
            line_of("ONET"),
        ],
        absent_orders=("ONET",),
    ),
    Case(
        "future_timestamp",
        future_timestamp,
        quarantined=[
            (
                "orders",
                "not_in_future",
                "ordered_at",
                f"{BAD_DAY + dt.timedelta(days=3)} 09:00:00.000000",
                "OFUT",
            ),
            line_of("OFUT"),
        ],
        absent_orders=("OFUT",),
    ),
    Case(
        "complaint_steps_out_of_order",
        complaint_steps,
        quarantined=[
            (
                "complaints",
                "complaint_step_order",
                "cause_found_at",
                f"first_response_at={BAD_DAY} 11:00:00.000000, "
                f"cause_found_at={BAD_DAY} 10:00:00.000000",
                "TBAD",
            ),
            (
                "complaints",
                "complaint_step_order",
                "cause_found_at",
                f"first_response_at=null, cause_found_at={BAD_DAY} 10:00:00.000000",
                "TGAP",
            ),
        ],
    ),
    Case(
        "unknown_status",
        unknown_status,
        quarantined=[("orders", "accepted_values", "status", "pending", "OSTAT"), line_of("OSTAT")],
        absent_orders=("OSTAT",),
    ),
    Case("missing_column", missing_column, stops=[("orders", "cost_amount", "column_present", 6)]),
    Case("renamed_column", renamed_column, stops=[("orders", "channel", "column_present", 6)]),
    Case(
        "text_in_numeric_column",
        text_in_numeric,
        stops=[("orders", "net_amount", "type_number", 5)],
    ),
    Case("empty_table", empty_table, stops=[("customers", "*", "table_not_empty", 0)]),
    Case(
        "stale_table",
        stale_table,
        day=D + dt.timedelta(days=2),
        status="stale",
        stops=[
            ("orders", "updated_at", "freshness", 0),
            ("order_lines", "updated_at", "freshness", 0),
        ],
    ),
    Case(
        "ten_times_the_usual_volume",
        ten_times_volume,
        stops=[("orders", "*", "volume", 60), ("order_lines", "*", "volume", 60)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(case: Case, history: History, tmp_path):
    src, wh = history.fresh(tmp_path)
    run_id = f"run-{case.day}"
    case.defect(src, case.day)
    extract_all(src, wh, case.day, run_id)
    raw_before = raw_counts(wh)

    error = None
    try:
        summary = validate_run(wh, case.day, run_id, now_of(case.day))
    except DataQualityError as exc:
        error, summary = exc, exc.summary

    assert raw_counts(wh) == raw_before  # validation never deletes a raw version
    if case.stops:
        assert error is not None, summary
        message = str(error)
        for table, column, rule, n in case.stops:
            line = next(
                (
                    ln
                    for ln in message.splitlines()
                    if ln.strip().startswith(f"- {table}.{column}:") and f"(rule: {rule})" in ln
                ),
                None,
            )
            assert line is not None, message
            assert f" {n:,} " in line or f"{n:,} of" in line or f"({n:,} " in line, line
            assert summary[table]["status"] == case.status
        assert failed_tables(wh, case.day) == {t for t, *_ in case.stops}
        assert marts(wh) == history.snapshot  # like the DAG: nothing is built after a failure
        return

    assert error is None, str(error)
    if history.engine == "duckdb":
        screened, whole = outcome(wh), whole_read_outcome(history, case, tmp_path / "whole")
        for key in screened:
            diff = set(screened[key]) ^ set(whole[key])
            assert screened[key] == whole[key], (key, sorted(diff, key=str))
    held = rows(
        wh,
        "select table_name, rule, column_name, value, row_key from quarantine.rows "
        "where released_at is null",
    )
    for expected in case.quarantined:
        assert expected in held, held
    quarantined_tables = {t for t, *_ in case.quarantined}
    for table in TABLE_ORDER:
        expected_status = "quarantined" if table in quarantined_tables else "passed"
        assert summary[table]["status"] == expected_status, (table, summary[table])
    assert summary["orders"]["rows"] >= 5
    assert failed_tables(wh, case.day) == set()
    # the night goes on with the good rows
    build_day(wh, case.day)
    orders = {r[0] for r in rows(wh, "select order_id from marts.fct_orders")}
    assert {f"ON{case.day:%m%d}-{i}" for i in range(5)} <= orders
    assert not orders & set(case.absent_orders)
    assert orders >= {r[0] for r in history.snapshot["marts.fct_orders"]}


def outcome(wh: Warehouse) -> dict[str, list[tuple]]:
    """What validation wrote, without run ids and timings."""
    return {
        "quarantine": rows(
            wh,
            "select table_name, row_key, row_hash, rule, column_name, value from quarantine.rows "
            "order by all",
        ),
        "results": rows(
            wh,
            "select table_name, suite, expectation, column_name, level, rule, success, "
            "observed_value, unexpected_count, element_count from ops.dq_results order by all",
        ),
        "status": rows(
            wh,
            "select table_name, status, rows_validated, quarantined from ops.table_status "
            "order by all",
        ),
    }


def whole_read_outcome(history: History, case: Case, tmp_path) -> dict[str, list[tuple]]:
    """The same night validated with GX reading every version, three versions per chunk
    (prescreen off): the SQL screen must change nothing that validation writes."""
    tmp_path.mkdir()
    src, wh = history.fresh(tmp_path)
    case.defect(src, case.day)
    extract_all(src, wh, case.day, f"run-{case.day}")
    config = tmp_path / "validation.yaml"
    settings = yaml.safe_load(open(CONFIG_DIR / "validation.yaml", encoding="utf-8"))
    config.write_text(yaml.safe_dump({**settings, "prescreen": False, "chunk_rows": 3}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_VALIDATION_CONFIG", str(config))
        validate_run(wh, case.day, f"run-{case.day}", now_of(case.day))
    return outcome(wh)


# -- the clean demo business passes untouched ----------------------------------------------------


def test_the_demo_business_passes_with_zero_quarantined_rows(tmp_path, warehouse):
    from crm_devtools import demo

    src = f"sqlite:///{tmp_path}/demo.db"
    demo.generate(src, customers=300, days=120, seed=11, end_date=D)
    for day, run_id in ((D, "demo-1"), (D + dt.timedelta(days=1), "demo-2")):
        if day > D:
            demo.advance(src, day)  # one more day of business, late changes included
        extract_all(src, warehouse, day, run_id)
        summary = validate_run(warehouse, day, run_id, now_of(day))
        assert {t: summary[t]["quarantined"] for t in TABLE_ORDER} == dict.fromkeys(TABLE_ORDER, 0)
        assert {summary[t]["status"] for t in TABLE_ORDER} == {"passed"}
    assert rows(warehouse, "select count(*) from quarantine.rows") == [(0,)]
    assert rows(warehouse, "select count(*) from ops.dq_results where not success") == [(0,)]
