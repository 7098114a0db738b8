"""The nightly models stage: CLV and churn risk written on both engines, reruns give the same
rows, the health gate refuses to publish a broken night, and a generated demo passes it."""

import base64
import datetime as dt
import json

import pandas as pd
import pytest
import sqlalchemy as sa
from business import D
from factories import ROOT

from crm_devtools import demo
from crm_pipeline.errors import ModelGateError
from crm_pipeline.extract import extract_table
from crm_pipeline.models import clv, store
from crm_pipeline.models.churn.inputs import read_cutoff
from crm_pipeline.models.publish import ensure_tables
from crm_pipeline.models.stage import run_models
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.staging import build_staging
from crm_pipeline.warehouse import Warehouse

DEMO_DAY = dt.date(2026, 6, 30)
CLV_TABLE, CHURN_TABLE = "marts.customer_clv", "marts.customer_churn_risk"


def rows(wh, table, where="1 = 1"):
    with wh.begin() as conn:
        return conn.exec_driver_sql(
            f"select * from {table} where {where} order by as_of_date, customer_id"
        ).fetchall()


def model_runs(wh, as_of_date):
    with wh.begin() as conn:
        result = conn.exec_driver_sql(
            "select model, status, passed, published, params, metrics, checks, run_id "
            f"from ops.model_runs where as_of_date = date '{as_of_date}' order by model, run_id"
        )
        return [dict(zip(result.keys(), r, strict=True)) for r in result.fetchall()]


def load(source_url, wh, day=DEMO_DAY):
    for table in TABLE_ORDER:
        extract_table(source_url, wh, table, day, "night-1")
    build_staging(wh)
    return wh


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """A small generated business, enough customers at d-180 to train churn."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo')}/source.db"
    demo.generate(url, customers=600, days=730, seed=11, end_date=DEMO_DAY)
    return url


# --------------------------------------------------------------------------------------
# The hand-made business: 11 buyers, too few for churn, CLV in small-data mode
# --------------------------------------------------------------------------------------


def test_the_built_business_gets_clv_and_churn_is_skipped_with_a_reason(built_copy):
    result = run_models(built_copy, D, "built-1")
    assert result["passed"] and result["models"]["churn"]["status"] == "skipped"
    assert "min_customers" in result["models"]["churn"]["message"]
    assert result["metrics"]["clv"]["mode"] == "small_data"
    assert result["published"] == {CLV_TABLE: 11}

    clv = {r.customer_id: r._mapping for r in rows(built_copy, CLV_TABLE)}
    assert sorted(clv) == [f"C{i:02d}" for i in range(1, 12)]  # buyers up to D; not C13 (D+1)

    def inputs(customer_id):
        r = clv[customer_id]
        return r["frequency"], r["recency"], r["t"], float(r["monetary_value"])

    assert inputs("C05") == (1, 10, 20, 40.0)  # 06-10, 06-20: still completed at D
    assert float(clv["C05"]["historic_value"]) == 70.0
    assert inputs("C07")[:3] == (2, 503, 532)  # 2024-01-15, 05-31 23:00, 06-01 00:00
    assert inputs("C06") == (0, 0, 15, 0.0)  # its first order was refunded
    assert inputs("C11")[:3] == (1, 60, 60)  # 06-30 23:59 counts
    for r in clv.values():
        assert r["as_of_date"] == D and r["horizon_days"] == 365 and r["run_id"] == "built-1"
        assert 0 <= r["p_alive"] <= 1 and r["expected_purchases"] >= 0 and r["clv"] >= 0
        assert r["margin_ratio"] == pytest.approx(0.4)  # factory orders have a 40% margin
    assert rows(built_copy, CHURN_TABLE) == []  # exists, empty, for queries that join it

    runs = {r["model"]: r for r in model_runs(built_copy, D) if r["run_id"] == "built-1"}
    assert set(runs) == {"bgnbd", "gamma_gamma", "churn"}
    assert runs["bgnbd"]["passed"] and runs["bgnbd"]["published"]
    assert runs["churn"]["status"] == "skipped" and runs["churn"]["passed"] is None
    assert json.loads(runs["bgnbd"]["checks"])["holdout"]["passed"] is None  # too little data

    first = rows(built_copy, CLV_TABLE)
    run_models(built_copy, D, "built-1")
    assert rows(built_copy, CLV_TABLE) == first
    # the rerun replaced its own model_runs rows (the fixture's run "built" keeps its own)
    assert len([r for r in model_runs(built_copy, D) if r["run_id"] == "built-1"]) == 3


def test_the_tables_can_exist_before_the_first_run(warehouse):
    ensure_tables(warehouse)
    ensure_tables(warehouse)
    assert rows(warehouse, CLV_TABLE) == [] and rows(warehouse, CHURN_TABLE) == []
    with warehouse.begin() as conn:
        assert warehouse.columns(conn, CLV_TABLE)[:6] == [
            "as_of_date",
            "customer_id",
            "frequency",
            "recency",
            "t",
            "monetary_value",
        ]


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_a_kept_model_whose_class_has_moved_is_trained_again_not_a_crash(warehouse):
    """A row of ops.model_training pickled by a release whose ChurnModel lived elsewhere
    (crm_pipeline.models.churn.ChurnModel, before issue 14) reads as no training kept."""
    ensure_tables(warehouse)
    old = base64.b64encode(b"ccrm_pipeline.models.churn\nChurnModel\n)\x81.").decode("ascii")
    record = json.dumps(
        {
            "holdout": {},
            "churn_status": "trained",
            "churn_reason": "",
            "churn_params": {},
            "churn_metrics": {},
            "fits": {},
            "left_out": {},
            "fit_seconds": 0.0,
        }
    )
    with warehouse.begin() as conn:
        conn.execute(
            sa.text(
                "insert into ops.model_training (training_day, model_version, run_id, status, "
                "record, model, recorded_at) values (:d, 'v', 'old', 'trained', :r, :m, :t)"
            ),
            {"d": D, "r": record, "m": old, "t": dt.datetime(2026, 1, 1)},
        )
        assert store.load(warehouse, conn, D, "v") is None


def test_tier_vs_clv_example_runs_on_the_built_business(built_copy):
    run_models(built_copy, D, "built-1")
    sql = (ROOT / "examples" / "queries" / "tier_vs_clv.sql").read_text()
    with built_copy.begin() as conn:
        result = conn.exec_driver_sql(built_copy.render(sql))
        columns, found = list(result.keys()), result.fetchall()
    assert columns[:3] == ["disagreement", "customer_id", "tier"]
    assert all(r[0] in ("rising star", "fading VIP") for r in found)


# --------------------------------------------------------------------------------------
# A small generated business, on both engines
# --------------------------------------------------------------------------------------


def test_a_night_publishes_both_tables_and_a_rerun_gives_the_same_rows(small_demo, warehouse):
    wh = load(small_demo, warehouse)
    result = run_models(wh, DEMO_DAY, "night-1")
    assert result["passed"], result["models"]
    assert all(m["status"] == "published" for m in result["models"].values())
    ece = result["models"]["churn"]["checks"]["ece"]
    assert ece["passed"] is None and ece["value"] is not None  # < 1,000 validation customers
    with wh.begin() as conn:
        buyers, active = conn.exec_driver_sql(
            "select count(distinct customer_id), count(distinct case when ordered_at >= "
            "timestamp '2026-04-02 00:00:00' then customer_id end) from staging.stg_orders "
            "where status = 'completed' and valid_to > timestamp '3000-01-01 00:00:00' "
            "and ordered_at < timestamp '2026-07-01 00:00:00'"
        ).one()
    assert result["published"] == {CLV_TABLE: buyers, CHURN_TABLE: active}

    churn_rows = rows(wh, CHURN_TABLE)
    assert {r.risk_band for r in churn_rows} == {"high", "medium", "low"}
    assert all(0 <= r.churn_probability <= 1 and r.top_reasons for r in churn_rows)
    clv_rows = rows(wh, CLV_TABLE)
    assert all(r._mapping["t"] >= r.recency >= 0 and r.clv >= 0 for r in clv_rows)

    run_models(wh, DEMO_DAY, "night-1")
    assert rows(wh, CLV_TABLE) == clv_rows and rows(wh, CHURN_TABLE) == churn_rows
    runs = model_runs(wh, DEMO_DAY)
    assert [(r["model"], r["published"]) for r in runs] == [
        ("bgnbd", True),
        ("churn", True),
        ("gamma_gamma", True),
    ]


def test_the_gate_refuses_to_publish_a_broken_night(small_demo, warehouse):
    wh = load(small_demo, warehouse)
    run_models(wh, DEMO_DAY, "night-1")
    published = {t: rows(wh, t) for t in (CLV_TABLE, CHURN_TABLE)}

    # the optimiser cannot converge in one iteration: a rerun of the published day fails
    # the CLV gate, records why, and leaves the day's published CLV exactly as it was
    with pytest.raises(ModelGateError, match="bgnbd.converged") as caught:
        run_models(wh, DEMO_DAY, "night-1-rerun", config={"clv": {"maxiter": 1}})
    assert f"{CLV_TABLE} NOT published" in str(caught.value)
    assert CLV_TABLE not in caught.value.result["published"]
    runs = {r["model"]: r for r in model_runs(wh, DEMO_DAY) if r["run_id"] == "night-1-rerun"}
    assert runs["bgnbd"]["passed"] is False and runs["bgnbd"]["status"] == "failed"
    assert not runs["bgnbd"]["published"] and not runs["gamma_gamma"]["published"]
    assert json.loads(runs["bgnbd"]["checks"])["converged"]["passed"] is False
    assert rows(wh, CLV_TABLE) == published[CLV_TABLE]
    # churn is judged on its own checks: published exactly when they pass
    assert runs["churn"]["published"] == bool(runs["churn"]["passed"])

    # the next night: parameters drifting from last night's (here: by any amount at all)
    # and an impossible AUC; neither model is published for that night
    next_day = DEMO_DAY + dt.timedelta(days=1)
    strict = {"gate": {"drift_max_relative_change": 1e-9, "churn_min_auc": 1.01}}
    with pytest.raises(ModelGateError) as caught:
        run_models(wh, next_day, "night-2", config=strict)
    failed = {f.split(":")[0] for f in caught.value.failures}
    assert {"bgnbd.drift", "churn.auc"} <= failed
    drift = caught.value.result["models"]["bgnbd"]["checks"]["drift"]
    assert str(DEMO_DAY) in drift["detail"] and 0 < drift["value"] < 0.05  # fine at 50%
    runs = {r["model"]: r for r in model_runs(wh, next_day)}
    assert runs["bgnbd"]["status"] == runs["churn"]["status"] == "failed"
    assert runs["bgnbd"]["passed"] is False and not runs["gamma_gamma"]["published"]
    assert rows(wh, CLV_TABLE, f"as_of_date = date '{next_day}'") == []
    assert rows(wh, CHURN_TABLE, f"as_of_date = date '{next_day}'") == []


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_a_failing_churn_model_never_withholds_a_healthy_clv_nor_the_reverse(small_demo, warehouse):
    wh = load(small_demo, warehouse)
    # churn cannot reach an AUC above 1: CLV is published all the same, and the task fails
    with pytest.raises(ModelGateError, match="churn.auc") as caught:
        run_models(wh, DEMO_DAY, "churn-bad", config={"gate": {"churn_min_auc": 1.01}})
    assert caught.value.result["gate"] == {"clv": True, "churn": False}
    assert set(caught.value.result["published"]) == {CLV_TABLE}
    assert f"{CLV_TABLE} published" in str(caught.value)
    assert f"{CHURN_TABLE} NOT published" in str(caught.value)
    runs = {r["model"]: r for r in model_runs(wh, DEMO_DAY) if r["run_id"] == "churn-bad"}
    assert runs["bgnbd"]["status"] == runs["gamma_gamma"]["status"] == "published"
    assert runs["churn"]["status"] == "failed" and not runs["churn"]["published"]
    assert rows(wh, CHURN_TABLE) == [] and len(rows(wh, CLV_TABLE)) > 0

    # a CLV holdout bound no model meets: churn is published, CLV is not
    next_day = DEMO_DAY + dt.timedelta(days=1)
    with pytest.raises(ModelGateError, match="bgnbd.holdout") as caught:
        run_models(wh, next_day, "clv-bad", config={"gate": {"holdout_max_relative_error": 0}})
    assert caught.value.result["gate"] == {"clv": False, "churn": True}
    assert set(caught.value.result["published"]) == {CHURN_TABLE}
    runs = {r["model"]: r for r in model_runs(wh, next_day)}
    assert runs["bgnbd"]["status"] == "failed" and runs["gamma_gamma"]["status"] == "held"
    assert rows(wh, CLV_TABLE, f"as_of_date = date '{next_day}'") == []
    assert len(rows(wh, CHURN_TABLE, f"as_of_date = date '{next_day}'")) > 0


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_churn_is_judged_against_its_base_rate_not_an_absolute_brier(small_demo, warehouse):
    wh = load(small_demo, warehouse)
    result = run_models(wh, DEMO_DAY, "night-1")
    checks = result["models"]["churn"]["checks"]
    assert "brier" not in checks  # no absolute bound: 0.25 is no skill at a 50% churn rate
    churn = result["metrics"]["churn"]
    base = churn["churn_rate_valid"]
    assert churn["brier_base_rate"] == pytest.approx(base * (1 - base), abs=1e-4)
    assert checks["brier_skill"]["value"] == pytest.approx(
        1 - churn["brier"] / churn["brier_base_rate"], abs=1e-3
    )
    assert checks["brier_skill"]["threshold"] == 0.05 and checks["auc"]["threshold"] == 0.65


# --------------------------------------------------------------------------------------
# End to end on a generated demo: the gate passes with sane figures
# --------------------------------------------------------------------------------------


def test_a_generated_demo_passes_the_gate_with_sane_figures(tmp_path):
    url = f"sqlite:///{tmp_path}/source.db"
    demo.generate(url, customers=1500, days=400, seed=42, end_date=DEMO_DAY)
    wh = load(url, Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb"))
    result = run_models(wh, DEMO_DAY, "e2e")
    assert result["passed"], result["models"]
    churn, holdout = result["metrics"]["churn"], result["metrics"]["holdout"]
    assert churn["auc"] > 0.6 and churn["ece"] <= 0.05 and churn["brier_skill"] > 0.05
    assert abs(holdout["relative_error"]) <= 0.25 and holdout["actual"] > 1000
    # trained on the Monday of DEMO_DAY's week (a Tuesday): validation labels end there
    assert result["cutoffs"]["training_day"] == "2026-06-29"
    assert churn["n_train"] > 300 and churn["valid_cutoff"] == "2026-03-31"
    with wh.begin() as conn:
        high_share, mean_p_alive = conn.exec_driver_sql(
            "select avg(case when risk_band = 'high' then 1.0 else 0.0 end), "
            "(select avg(p_alive) from marts.customer_clv) from marts.customer_churn_risk"
        ).one()
    assert 0 < high_share < 0.5 and 0.3 < mean_p_alive < 1
    assert result["timings"]["total_seconds"] < 60


def test_the_sql_summary_is_the_clv_modules_summary(built_copy):
    """customer_summary.sql (set-based, for a million customers) computes exactly what
    clv.summary_from_transactions defines, on the purchases known at the end of D. (A copy:
    read_cutoff makes temporary tables, which a read-only PostgreSQL session refuses.)"""
    with built_copy.begin() as conn:
        data = read_cutoff(
            built_copy,
            conn,
            D,
            {"vip_cum_pct": 1, "key_cum_pct": 5, "regular_cum_pct": 20},
            with_features=False,
        )
        result = conn.exec_driver_sql(
            "select customer_id, ordered_at, net_amount from marts.fct_orders where is_purchase"
        )
        purchases = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    purchases["net_amount"] = purchases["net_amount"].astype(float)
    expected = clv.summary_from_transactions(
        purchases, "customer_id", "ordered_at", "net_amount", D
    )
    got = data.summary
    for col in ("frequency", "recency", "T", "monetary_value", "historic_value"):
        assert got[col].astype(float).tolist() == pytest.approx(
            expected[col].astype(float).tolist()
        )
    assert got["customer_id"].tolist() == expected["customer_id"].tolist()


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_churn_scores_are_the_same_on_one_thread_or_two(small_demo, warehouse, tmp_path):
    one = load(small_demo, warehouse)
    two = load(small_demo, Warehouse(f"duckdb:///{tmp_path}/two.duckdb"))
    run_models(one, DEMO_DAY, "t", config={"churn": {"threads": 1}})
    run_models(two, DEMO_DAY, "t", config={"churn": {"threads": 2}})
    assert rows(one, CHURN_TABLE) == rows(two, CHURN_TABLE) != []


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_the_week_is_trained_once_and_scores_the_same_whichever_night_trains_it(
    small_demo, warehouse, tmp_path
):
    """Monday trains the week's classifier and keeps it; Tuesday only scores with it, and
    gives the rows a warehouse whose first night is that Tuesday gives (it trains the same
    Monday model); a night of the next week trains again."""
    monday, tuesday = dt.date(2026, 6, 29), DEMO_DAY
    wh = load(small_demo, warehouse)
    first = run_models(wh, monday, "mon")
    assert first["models"]["churn"]["status"] == "published"
    assert "train_seconds" in first["timings"]
    assert first["metrics"]["churn"]["trained_tonight"] is True
    second = run_models(wh, tuesday, "tue")
    assert "train_seconds" not in second["timings"]  # nothing of the training read again
    churn_tue = second["metrics"]["churn"]
    assert churn_tue["trained_tonight"] is False and churn_tue["trained_by"] == "mon"
    assert churn_tue["training_day"] == "2026-06-29" and churn_tue["valid_cutoff"] == "2026-03-31"
    assert churn_tue["auc"] == first["metrics"]["churn"]["auc"]  # the kept validation
    assert second["metrics"]["holdout"] == {**first["metrics"]["holdout"]}  # the kept holdout
    assert second["models"]["churn"]["status"] == "published"

    alone = load(small_demo, Warehouse(f"duckdb:///{tmp_path}/alone.duckdb"))
    third = run_models(alone, tuesday, "tue")
    assert third["metrics"]["churn"]["trained_tonight"] is True
    assert rows(alone, CHURN_TABLE) == rows(wh, CHURN_TABLE, f"as_of_date = date '{tuesday}'")

    with wh.begin() as conn:
        kept = conn.exec_driver_sql(
            "select training_day, run_id, status from ops.model_training order by training_day"
        ).fetchall()
    assert kept == [(monday, "mon", "trained")]
    next_week = run_models(wh, monday + dt.timedelta(days=7), "next-mon")
    assert next_week["metrics"]["churn"]["valid_cutoff"] == "2026-04-07"
    assert "train_seconds" in next_week["timings"]


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_train_every_night_uses_the_days_own_cut_offs(small_demo, warehouse):
    wh = load(small_demo, warehouse)
    result = run_models(wh, DEMO_DAY, "n", config={"churn": {"train_every_days": 1}})
    assert result["cutoffs"]["training_day"] == DEMO_DAY.isoformat()
    assert result["metrics"]["churn"]["valid_cutoff"] == "2026-04-01"  # d - 90
