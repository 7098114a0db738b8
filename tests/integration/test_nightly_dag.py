"""crm_nightly end to end through Airflow (`dag.test()`), on a small generated business.

A real DAG run: mapped extract tasks, Great Expectations validation, staging, marts, the
models stage, KPI evaluation and the alert email through a real SMTP conversation with
the local sink, with the connections given as AIRFLOW_CONN_* URIs exactly as a user
would. Then the same date again (same rows, no second email), then the demo business
advances a day and the next date picks up only what changed.
"""

import datetime as dt

import pytest
import sqlalchemy
from airflow.dag_processing.dagbag import DagBag
from factories import ROOT

from crm_pipeline import demo
from crm_pipeline.smtp_sink import SmtpSink
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 6, 30)
SNAPSHOTS = ("marts.fct_orders", "marts.dim_customer", "marts.customer_rfm",
             "marts.customer_value_tier", "marts.kpi_daily", "marts.kpi_evaluation",
             "marts.segment_migration")


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, airflow_db):
    tmp = tmp_path_factory.mktemp("e2e")
    source = f"sqlite:///{tmp}/source.db"
    demo.generate(source, customers=400, days=200, seed=7, end_date=DAY)
    with SmtpSink(tmp / "mail") as sink:
        env = {
            "AIRFLOW_CONN_CRM_SOURCE": source,
            "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp}/warehouse.duckdb",
            "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{sink.port}?disable_ssl=true"
                                         "&disable_tls=true&from_email=crm%40localhost",
            "CRM_DATA_DIR": str(tmp),
        }
        dag = DagBag(dag_folder=str(ROOT / "dags")).dags["crm_nightly"]
        yield dag, env, source, Warehouse(env["AIRFLOW_CONN_CRM_WAREHOUSE"]), sink


def run(dag, env, day, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dag_run = dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    failed = [ti.task_id for ti in dag_run.get_task_instances() if ti.state != "success"]
    assert dag_run.state == "success", failed


def snapshot(wh, table):
    """The table's rows, without the audit column naming the run that wrote them."""
    with wh.begin() as conn:
        cols = [c for c in wh.columns(conn, table) if c != "run_id"]
        rows = conn.exec_driver_sql(f"select {', '.join(cols)} from {table}").fetchall()
    return sorted(map(tuple, rows), key=repr)


def scalar(wh, sql):
    with wh.begin() as conn:
        return conn.exec_driver_sql(sql).scalar_one()


def test_a_night_builds_every_stage_and_a_rerun_gives_the_same_rows(nightly, monkeypatch):
    dag, env, source, wh, sink = nightly
    run(dag, env, DAY, monkeypatch)
    counts = wh.row_counts(("marts", "ops"))
    assert counts["marts.fct_orders"] > 1000 and counts["marts.dim_customer"] > 300
    assert scalar(wh, "select max(order_date) from marts.fct_orders") == DAY
    # a first run builds 90 days of KPI history in one pass, and evaluates them
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_daily") == 90
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_evaluation") == 90
    # the clean demo passes validation with nothing quarantined; the gate's verdict is kept
    assert scalar(wh, "select count(*) from quarantine.rows") == 0
    assert scalar(wh, "select count(*) from ops.table_status where status <> 'passed'") == 0
    assert counts["ops.model_runs"] >= 1
    assert (sink.directory.parent / "dq_docs" / "index.html").exists()  # GX Data Docs
    first = {t: snapshot(wh, t) for t in SNAPSHOTS}
    mails = len(sink.messages())
    batches = scalar(wh, "select max(batch_id) from ops.extract_batches")

    run(dag, env, DAY, monkeypatch)
    assert {t: snapshot(wh, t) for t in SNAPSHOTS} == first
    assert scalar(wh, "select coalesce(sum(new_versions), 0) from ops.extract_batches "
                      f"where batch_id > {batches}") == 0
    assert len(sink.messages()) == mails  # nothing new, worse or resolved: no second email


def test_the_next_night_pulls_only_what_changed(nightly, monkeypatch):
    dag, env, source, wh, sink = nightly
    next_day = DAY + dt.timedelta(days=1)
    changes = demo.advance(source, next_day)
    run(dag, env, next_day, monkeypatch)
    with wh.begin() as conn:
        pulled = dict(conn.exec_driver_sql(
            "select table_name, new_versions from ops.extract_batches "
            f"where as_of_date = date '{next_day}'").fetchall())
    assert pulled["orders"] > 0
    assert scalar(wh, "select max(order_date) from marts.fct_orders") == next_day
    assert sum(pulled.values()) <= sum(changes.values())  # the day's changes, not the history
    # the nightly run builds its own day only, on top of the 90-day history
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_daily") == 91


def test_a_broken_source_stops_before_any_mart_and_tells_the_data_engineers(
        nightly, tmp_path, monkeypatch):
    from factories import build_source, customer, order

    dag, env, _, _, sink = nightly
    source = build_source(f"sqlite:///{tmp_path}/broken.db", {
        "customers": [customer("C1", "2025-01-01")],
        "orders": [order("O1", "C1", "2025-03-01")],
    })
    with sqlalchemy.create_engine(source).begin() as conn:
        conn.exec_driver_sql("alter table orders rename column channel to sales_channel")
    broken = {**env, "AIRFLOW_CONN_CRM_SOURCE": source,
              "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp_path}/warehouse.duckdb",
              "CRM_DATA_ENGINEERS": "data-team@example.com"}
    for key, value in broken.items():
        monkeypatch.setenv(key, value)
    before = len(sink.messages())
    dag_run = dag.test(logical_date=dt.datetime(2025, 3, 10, tzinfo=dt.UTC))
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "failed" and states["validate.validate_sources"] == "failed"
    assert states["marts.build_fct_orders"] == "upstream_failed"  # no mart was touched
    assert not Warehouse(broken["AIRFLOW_CONN_CRM_WAREHOUSE"]).row_counts(("marts",))
    # at once (bad data is not retried), with the message naming table, column and rule
    [notice] = sink.messages()[before:]
    assert notice["To"] == "data-team@example.com"
    assert "validate.validate_sources failed for 2025-03-10" in notice["Subject"]
    body = notice.get_body(("html",)).get_content()
    assert "orders.channel" in body and "rule: column_present" in body
