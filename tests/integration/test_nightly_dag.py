"""crm_nightly end to end through Airflow (`dag.test()`), on a generated business large
enough for every model to publish, and on CDNOW, a real source with an order database only.

A real DAG run: the preflight, mapped extract tasks, Great Expectations validation,
staging, marts, the models stage, KPI evaluation and the alert email through a real SMTP
conversation with the local sink, with the connections given as AIRFLOW_CONN_* URIs exactly
as a user would. Every run is judged task by task (a run's own state comes from its leaves:
a failed task with successful children would pass unseen), and the models' published rows
are checked. Then the same date again (same rows, no second email), the next night (only
what changed), reruns and a backfill followed by a real night (which must still pass
validation), a model that fails its gate (the run fails, the notifier fires, CLV is still
published), and a day that has not ended (refused). Each night's asset events are read back
from Airflow's metadata database: one per public mart, with the day and what was published;
a failure reaches Slack (a webhook on a local HTTP server) only when CRM_SLACK_CONN_ID is set.

The nights build on each other, and each test stands alone all the same: the story is a
chain of module fixtures, each run once (the first night; the next night, on a copy of
the first), and a test that runs more nights does so on a copy of the nights it builds on,
so the fixtures' own warehouses stay as they were for the tests that read them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cdnow
import pytest
import sqlalchemy
from airflow.dag_processing.dagbag import DagBag
from factories import ROOT
from webhook import SlackWebhook

from crm_devtools import demo
from crm_devtools.smtp_sink import SmtpSink
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse.tables import PUBLIC_MARTS

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 6, 30)
SNAPSHOTS = (
    "marts.fct_orders",
    "marts.dim_customer",
    "marts.customer_rfm",
    "marts.customer_value_tier",
    "marts.kpi_daily",
    "marts.kpi_evaluation",
    "marts.segment_migration",
    "marts.customer_clv",
    "marts.customer_churn_risk",
)
ENGINEERS = "data-team@example.com"


@dataclass
class Night:
    """A source and a warehouse after some nights, and the connections that name them."""

    env: dict[str, str]
    source: str
    wh: Warehouse

    def copy(self, tmp: Path) -> Night:
        """The same nights in `tmp`, for a test that runs more of them."""
        source, warehouse = tmp / "source.db", tmp / "warehouse.duckdb"
        shutil.copy(self.source.removeprefix("sqlite:///"), source)
        for suffix in ("", ".wal"):  # every connection is closed after use: normally no WAL
            if Path(f"{self.wh.engine.url.database}{suffix}").exists():
                shutil.copy(f"{self.wh.engine.url.database}{suffix}", f"{warehouse}{suffix}")
        env = {
            **self.env,
            "AIRFLOW_CONN_CRM_SOURCE": f"sqlite:///{source}",
            "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{warehouse}",
            "CRM_DATA_DIR": str(tmp),
        }
        return Night(
            env, env["AIRFLOW_CONN_CRM_SOURCE"], Warehouse(env["AIRFLOW_CONN_CRM_WAREHOUSE"])
        )


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, airflow_db):
    """The DAG, the environment a user gives it (a generated source, a warehouse, the
    local SMTP sink), and the sink. No night has run: `first_night` runs it here."""
    tmp = tmp_path_factory.mktemp("e2e")
    source = f"sqlite:///{tmp}/source.db"
    # 800 customers over 400 days: enough at d-180 and d-90 to train and validate churn
    demo.generate(source, customers=800, days=400, seed=7, end_date=DAY)
    with SmtpSink(tmp / "mail") as sink:
        env = {
            "AIRFLOW_CONN_CRM_SOURCE": source,
            "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp}/warehouse.duckdb",
            "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{sink.port}?disable_ssl=true"
            "&disable_tls=true&from_email=crm%40localhost",
            "CRM_DATA_DIR": str(tmp),
            "CRM_DATA_ENGINEERS": ENGINEERS,
        }
        dag = DagBag(dag_folder=str(ROOT / "dags")).dags["crm_nightly"]
        yield dag, env, source, Warehouse(env["AIRFLOW_CONN_CRM_WAREHOUSE"]), sink


@dataclass
class FirstNight(Night):
    events: dict[str, list[dict]]  # the asset events of its run


@pytest.fixture(scope="module")
def first_night(nightly):
    """DAY on the empty warehouse of `nightly`, which every task must pass, run once for
    the tests that read it or build on it. Read it, never write it: a test that runs
    another night does so on a `.copy()`."""
    dag, env, source, wh, _ = nightly
    with pytest.MonkeyPatch.context() as monkeypatch:
        succeeded(dag, env, DAY, monkeypatch)
    return FirstNight(env, source, wh, asset_events(RUNS[-1]))


@dataclass
class SecondNight(Night):
    changes: dict[str, int]  # what demo.advance changed in the source for the day


@pytest.fixture(scope="module")
def second_night(first_night, nightly, tmp_path_factory):
    """The next day's changes in the source, then its night, on a copy of the first night;
    run once, read-only like `first_night`."""
    dag = nightly[0]
    night = first_night.copy(tmp_path_factory.mktemp("second-night"))
    changes = demo.advance(night.source, DAY + dt.timedelta(days=1))
    with pytest.MonkeyPatch.context() as monkeypatch:
        succeeded(dag, night.env, DAY + dt.timedelta(days=1), monkeypatch)
    return SecondNight(night.env, night.source, night.wh, changes)


@pytest.fixture
def slack():
    """A Slack webhook connection (AIRFLOW_CONN_CRM_SLACK) to a local server of the test's
    own; the option is on for a test that sets CRM_SLACK_CONN_ID=crm_slack."""
    with SlackWebhook() as hook:
        yield hook


@dataclass(frozen=True)
class RunRef:
    run_id: str
    started: dt.datetime


def run(dag, env, day, monkeypatch, logical_date=None):
    """One DAG run; returns (run state, {task: state}) with mapped tasks as task[table],
    and keeps the run's id and start in RUNS (its asset events are read by them)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    when = logical_date or dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    started = dt.datetime.now(dt.UTC)
    dag_run = dag.test(logical_date=when)
    RUNS.append(RunRef(dag_run.run_id, started))
    states = {}
    for ti in dag_run.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[name] = ti.state
    return dag_run.state, states


def succeeded(dag, env, day, monkeypatch):
    """A good night: every task succeeded (the watcher, which runs only on failure, skipped)."""
    state, states = run(dag, env, day, monkeypatch)
    assert state == "success", states
    assert states.pop("watcher") == "skipped"
    assert {t: s for t, s in states.items() if s != "success"} == {}
    assert len(states) == len(dag.tasks) - 1 + 10  # extract_table mapped over 11 tables
    return states


RUNS: list[RunRef] = []


def asset_events(run: RunRef):
    """{asset name: [extra, ...]} of the events a run emitted, from Airflow's metadata. A
    run for a day that another test ran too has the same run id (manual__<day>): only the
    events since this one started are its own."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    events: dict[str, list[dict]] = {}
    with create_session() as session:
        for event in session.scalars(
            select(AssetEvent).where(
                AssetEvent.source_run_id == run.run_id, AssetEvent.timestamp >= run.started
            )
        ):
            events.setdefault(event.asset.name, []).append(event.extra)
    return events


def snapshot(wh, table):
    """The table's rows, without the audit column naming the run that wrote them."""
    with wh.begin() as conn:
        cols = [c for c in wh.columns(conn, table) if c != "run_id"]
        rows = conn.exec_driver_sql(f"select {', '.join(cols)} from {table}").fetchall()
    return sorted(map(tuple, rows), key=repr)


def scalar(wh, sql):
    with wh.begin() as conn:
        return conn.exec_driver_sql(sql).scalar_one()


def model_runs(wh, day):
    with wh.begin() as conn:
        return {
            m: (s, json.loads(p))
            for m, s, p in conn.exec_driver_sql(
                "select model, status, params from ops.model_runs "
                f"where as_of_date = date '{day}' order by recorded_at"
            ).fetchall()
        }


def test_a_night_builds_every_stage_and_a_rerun_gives_the_same_rows(
    nightly, first_night, tmp_path, monkeypatch
):
    dag, _, _, _, sink = nightly
    night = first_night.copy(tmp_path)  # the rerun writes
    env, wh = night.env, night.wh
    counts = wh.row_counts(("marts", "ops"))
    assert counts["marts.fct_orders"] > 1000 and counts["marts.dim_customer"] > 600
    assert scalar(wh, "select max(order_date) from marts.fct_orders") == DAY
    # a first run builds 90 days of KPI history in one pass, and evaluates them
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_daily") == 90
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_evaluation") == 90
    # the clean demo passes validation with nothing quarantined
    assert scalar(wh, "select count(*) from quarantine.rows") == 0
    assert scalar(wh, "select count(*) from ops.table_status where status <> 'passed'") == 0
    # both models passed their gates and were published through Airflow
    assert {m: s for m, (s, _) in model_runs(wh, DAY).items()} == {
        "bgnbd": "published",
        "gamma_gamma": "published",
        "churn": "published",
    }
    buyers = scalar(
        wh, "select count(distinct customer_id) from marts.fct_orders where is_purchase"
    )
    assert (
        scalar(wh, f"select count(*) from marts.customer_clv where as_of_date = '{DAY}'") == buyers
    )
    active = scalar(
        wh,
        "select count(distinct customer_id) from marts.fct_orders where "
        f"is_purchase and order_date > date '{DAY}' - 90",
    )
    assert (
        scalar(
            wh,
            "select count(*) from marts.customer_churn_risk "
            f"where as_of_date = '{DAY}' and top_reasons <> ''",
        )
        == active
    )
    assert scalar(wh, "select count(clv) from marts.dim_customer") == buyers
    assert (sink.directory.parent / "dq_docs" / "index.html").exists()  # GX Data Docs
    # one asset event per public mart, saying the day and that it was published for it
    events = first_night.events
    assert sorted(events) == sorted(f"crm_warehouse.{t}" for t in PUBLIC_MARTS)
    for name, [extra] in events.items():
        assert extra["as_of_date"] == str(DAY) and extra["published"] is True, (name, extra)
    assert events["crm_warehouse.marts.customer_clv"][0]["rows"] == buyers
    assert events["crm_warehouse.marts.kpi_daily"][0]["from_date"] == str(
        DAY - dt.timedelta(days=89)
    )
    first = {t: snapshot(wh, t) for t in SNAPSHOTS}
    mails = len(sink.messages())
    batches = scalar(wh, "select max(batch_id) from ops.extract_batches")

    succeeded(dag, env, DAY, monkeypatch)
    assert {t: snapshot(wh, t) for t in SNAPSHOTS} == first
    assert (
        scalar(
            wh,
            "select coalesce(sum(new_versions), 0) from ops.extract_batches "
            f"where batch_id > {batches}",
        )
        == 0
    )
    assert len(sink.messages()) == mails  # nothing new, worse or resolved: no second email


def test_the_next_night_pulls_only_what_changed(second_night):
    wh, changes = second_night.wh, second_night.changes
    next_day = DAY + dt.timedelta(days=1)  # advanced and run by the fixture
    with wh.begin() as conn:
        pulled = dict(
            conn.exec_driver_sql(
                "select table_name, new_versions from ops.extract_batches "
                f"where as_of_date = date '{next_day}'"
            ).fetchall()
        )
    assert pulled["orders"] > 0
    assert scalar(wh, "select max(order_date) from marts.fct_orders") == next_day
    assert sum(pulled.values()) <= sum(changes.values())  # the day's changes, not the history
    # the nightly run builds its own day only, on top of the 90-day history
    assert scalar(wh, "select count(distinct as_of_date) from marts.kpi_daily") == 91


def test_reruns_and_a_backfill_do_not_make_the_next_real_night_fail(
    nightly, second_night, tmp_path, monkeypatch
):
    dag = nightly[0]
    night = second_night.copy(tmp_path)
    env, source, wh = night.env, night.source, night.wh
    last = DAY + dt.timedelta(days=1)
    for _ in range(3):  # a day rerun three times: three pulls with nothing new
        succeeded(dag, env, last, monkeypatch)
    for back in (3, 2, 1):  # a backfill of three earlier days
        succeeded(dag, env, DAY - dt.timedelta(days=back), monkeypatch)
    # the backfill rebuilt its day's snapshots, not the latest state: its events say so
    events = asset_events(RUNS[-1])
    assert events["crm_warehouse.marts.customer_rfm"] == [
        {
            "as_of_date": str(DAY - dt.timedelta(days=1)),
            "published": True,
            "from_date": str(DAY - dt.timedelta(days=1)),
        }
    ]
    for kept in ("fct_orders", "dim_customer", "alerts"):
        assert events[f"crm_warehouse.marts.{kept}"][0]["published"] is False, kept
    assert (
        scalar(
            wh,
            "select count(*) from ops.extract_batches where table_name = 'orders' "
            "and watermark_from is not null and new_versions = 0",
        )
        >= 6
    )
    # the next real night brings a normal day's orders: 0 is not "the usual" for it
    nxt = last + dt.timedelta(days=1)
    assert demo.advance(source, nxt)["orders.inserted"] > 20
    succeeded(dag, env, nxt, monkeypatch)
    assert (
        scalar(
            wh,
            f"select count(*) from ops.table_status where as_of_date = '{nxt}' "
            "and status <> 'passed'",
        )
        == 0
    )


def test_a_failed_model_fails_the_run_tells_data_engineers_and_clv_still_publishes(
    nightly, first_night, slack, tmp_path, monkeypatch
):
    dag, _, _, _, sink = nightly
    night = first_night.copy(tmp_path)
    source, wh = night.source, night.wh
    env = {**night.env, **slack.env()}
    env.pop("CRM_SLACK_CONN_ID")  # the connection exists, the option is off
    day = scalar(wh, "select max(order_date) from marts.fct_orders") + dt.timedelta(days=1)
    demo.advance(source, day)
    impossible = tmp_path / "models.yaml"
    text = (ROOT / "include" / "config" / "models.yaml").read_text()
    impossible.write_text(text.replace("churn_min_auc: 0.65", "churn_min_auc: 1.01"))
    before = len(sink.messages())
    state, states = run(dag, env | {"CRM_MODELS_CONFIG": str(impossible)}, day, monkeypatch)
    assert state == "failed" and states["score_customers"] == "failed"
    assert states["watcher"] == "failed"
    # what could still run did: the customer dimension, the KPIs and the alerts
    for task in (
        "build_dim_customer",
        "evaluate_kpis",
        "alerts.prepare_alert_email",
        "alerts.send_alert_email",
    ):
        assert states[task] == "success", task
    statuses = {m: s for m, (s, _) in model_runs(wh, day).items()}
    assert statuses == {"bgnbd": "published", "gamma_gamma": "published", "churn": "failed"}
    assert scalar(wh, f"select count(*) from marts.customer_clv where as_of_date = '{day}'") > 0
    assert (
        scalar(wh, f"select count(*) from marts.customer_churn_risk where as_of_date = '{day}'")
        == 0
    )
    notices = [m for m in sink.messages()[before:] if m["To"] == ENGINEERS]
    assert [m["Subject"] for m in notices] == [f"[crm_nightly] score_customers failed for {day}"]
    body = notices[0].get_body(("html",)).get_content()
    assert "churn.auc" in body and "customer_churn_risk NOT published" in body
    assert slack.posts == []  # CRM_SLACK_CONN_ID unset: nothing posted
    # a failed task emits no event, even for CLV, which it published before its churn
    # gate failed; what ran after it emits its own
    events = asset_events(RUNS[-1])
    assert "crm_warehouse.marts.customer_clv" not in events
    assert "crm_warehouse.marts.customer_churn_risk" not in events
    for mart in ("dim_customer", "kpi_evaluation", "alerts"):
        assert events[f"crm_warehouse.marts.{mart}"][0]["as_of_date"] == str(day), mart


def test_a_day_that_has_not_ended_is_refused(nightly, first_night, tmp_path, monkeypatch):
    dag, _, _, _, sink = nightly
    night = first_night.copy(tmp_path)  # a warehouse with nights behind it, to stay as it is
    env, wh = night.env, night.wh
    batches = scalar(wh, "select count(*) from ops.extract_batches")
    now = dt.datetime.now(dt.UTC)
    before = len(sink.messages())
    state, states = run(dag, env, now.date(), monkeypatch, logical_date=now)
    assert state == "failed" and states["check_run"] == "failed"
    assert states["watcher"] == "failed"
    assert all(
        s == "upstream_failed" for t, s in states.items() if t not in ("check_run", "watcher")
    )
    assert scalar(wh, "select count(*) from ops.extract_batches") == batches  # nothing pulled
    # the refusal is told (a night refused at 02:00 would otherwise fail unseen), once: the
    # watcher tells nobody
    [notice] = sink.messages()[before:]
    assert notice["To"] == ENGINEERS
    assert f"check_run failed for {now.date()}" in notice["Subject"]
    assert "RunDateError" in notice.get_body(("plain",)).get_content()


def test_a_broken_source_stops_before_any_mart_and_tells_the_data_engineers(
    nightly, slack, tmp_path, monkeypatch
):
    from factories import build_source, customer, order

    dag, env, _, _, sink = nightly
    source = build_source(
        f"sqlite:///{tmp_path}/broken.db",
        {
            "customers": [customer("C1", "2025-01-01")],
            "orders": [order("O1", "C1", "2025-03-01")],
        },
    )
    with sqlalchemy.create_engine(source).begin() as conn:
        conn.exec_driver_sql("alter table orders rename column channel to sales_channel")
    broken = {
        **env,
        **slack.env(),
        "AIRFLOW_CONN_CRM_SOURCE": source,
        "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp_path}/warehouse.duckdb",
    }
    before, posted = len(sink.messages()), len(slack.posts)
    state, states = run(dag, broken, dt.date(2025, 3, 10), monkeypatch)
    assert state == "failed" and states["validate_sources"] == "failed"
    assert states["build_fct_orders"] == "upstream_failed"  # no mart was touched
    assert states["watcher"] == "failed"
    assert not Warehouse(broken["AIRFLOW_CONN_CRM_WAREHOUSE"]).row_counts(("marts",))
    # at once (bad data is not retried), with the message naming table, column and rule
    [notice] = sink.messages()[before:]
    assert notice["To"] == ENGINEERS
    assert "validate_sources failed for 2025-03-10" in notice["Subject"]
    body = notice.get_body(("html",)).get_content()
    assert "orders.channel" in body and "rule: column_present" in body
    # and on Slack (CRM_SLACK_CONN_ID set), through the provider's webhook notifier
    [post] = slack.posts[posted:]
    assert post["text"].startswith("crm_nightly: validate_sources failed for 2025-03-10 (run ")
    _, error, log_line = post["text"].splitlines()
    assert error.startswith("DataQualityError: data quality: 1 table-level failure(s) in orders")
    assert log_line.startswith("Log: http") and "validate_sources" in log_line


def test_cdnow_an_order_database_only_from_1997_publishes_clv_and_churn(
    nightly, tmp_path, monkeypatch
):
    """A real data set, years before any default start date, with no CRM table beyond the
    orders: validation passes, the empty features are left out, CLV reproduces the paper."""
    dag, env, _, _, _ = nightly
    minimal = {
        **env,
        "AIRFLOW_CONN_CRM_SOURCE": cdnow.build(f"sqlite:///{tmp_path}/cdnow.db", crm_tables=False),
        "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp_path}/warehouse.duckdb",
    }
    day = cdnow.CALIBRATION_END
    succeeded(dag, minimal, day, monkeypatch)
    wh = Warehouse(minimal["AIRFLOW_CONN_CRM_WAREHOUSE"])
    runs = model_runs(wh, day)
    assert {m: s for m, (s, _) in runs.items()} == {
        "bgnbd": "published",
        "gamma_gamma": "published",
        "churn": "published",
    }
    # Fader, Hardie & Lee (2005) on the same 2,357 customers: r 0.243, alpha 4.414 weeks,
    # a 0.793, b 2.426 (alpha here in days)
    bg = runs["bgnbd"][1]
    assert bg["r"] == pytest.approx(0.243, abs=5e-4) and bg["a"] == pytest.approx(0.793, abs=5e-4)
    assert bg["alpha"] / 7 == pytest.approx(4.414, abs=5e-3)
    assert bg["b"] == pytest.approx(2.426, abs=5e-3)
    left_out = runs["churn"][1]["features_left_out"]
    assert {"last_csat", "complaint_resolution_hours", "days_since_loyalty_activity"} <= set(
        left_out
    )
    assert "recency_days" in runs["churn"][1]["features"]
    assert scalar(wh, f"select count(*) from marts.customer_clv where as_of_date = '{day}'") == 2357
    with wh.begin() as conn:
        k = dict(
            conn.exec_driver_sql(
                "select kpi, value from marts.kpi_daily where dimension = 'all' "
                f"and as_of_date = '{day}'"
            ).fetchall()
        )
    for kpi in (
        "csat",
        "nps",
        "cac",
        "complaints_per_1000_orders",
        "complaint_sla_rate",
        "campaign_response_rate",
        "points_redemption_rate",
    ):
        assert k[kpi] is None, kpi  # no input table: no value, never 0
    assert k["active_customers"] > 300 and 0 < k["retention_rate"] <= 1
    assert k["churn_rate"] + k["retention_rate"] == pytest.approx(1)
    assert k["active_customers"] == pytest.approx(
        k["retention_rate"]
        * scalar(
            wh,
            "select denominator from marts.kpi_daily where "
            f"kpi = 'retention_rate' and dimension = 'all' "
            f"and as_of_date = '{day}'",
        )
        + k["new_customers"]
        + k["reactivated_customers"]
    )
