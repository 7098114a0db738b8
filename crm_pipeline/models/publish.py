"""Writing the models stage's night: ops.model_runs, the week's training, and the marts.

Why it exists: the stage's one write transaction. Grain: one ops.model_runs row per run and
model (bgnbd, gamma_gamma, churn; a rerun replaces its own rows), one ops.model_training row
per training day and model version (crm_pipeline.models.store), and the day's partition of
marts.customer_clv (one row per buyer) and marts.customer_churn_risk (one row per active
customer), each replaced (delete-insert) only when its model passed the gate; a mart whose
model did not pass is not touched at all (readers keep its latest published day).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.models import store
from crm_pipeline.models.clv.score import ClvFit
from crm_pipeline.models.gate import ModelRun
from crm_pipeline.warehouse import Warehouse, tables

CLV_TABLE = tables.CUSTOMER_CLV.name
CHURN_TABLE = tables.CUSTOMER_CHURN_RISK.name
RUNS_TABLE = tables.MODEL_RUNS.name
#: the mart each gate group publishes
GROUP_TABLES = {"clv": CLV_TABLE, "churn": CHURN_TABLE}


def to_json(value: Any) -> str:
    """Plain JSON text (sorted keys; NaN and infinities as null, dates as ISO text, numpy
    scalars as Python ones): what ops.model_runs and ops.model_training keep."""

    def clean(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dt.date):
            return v.isoformat()
        return v

    return json.dumps(clean(value), sort_keys=True, allow_nan=False, default=str)


def ensure_tables(wh: Warehouse) -> None:
    """Create ops.model_runs, marts.customer_clv and marts.customer_churn_risk if missing
    (empty), for code that reads them before the models stage has ever run."""
    with wh.begin() as conn:
        wh.ensure(conn, *tables.MODEL_TABLES)


def clv_mart_rows(
    summary: pd.DataFrame, fitted: ClvFit, cfg: Mapping[str, Any], version: str, run_id: str
) -> pd.DataFrame:
    """The night's marts.customer_clv rows (without as_of_date): the summary's inputs and
    the scores, rounded as published, in the columns of `tables.CLV_SCORES`."""
    s = fitted.scores
    return pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "frequency": summary["frequency"].to_numpy(np.int64),
            "recency": summary["recency"].to_numpy(np.int64),
            "t": summary["T"].to_numpy(np.int64),  # the mart spells it t (data_dictionary.md)
            "monetary_value": summary["monetary_value"].to_numpy(float).round(2),
            "p_alive": s["p_alive"].to_numpy(float).round(6),
            "expected_purchases": s["expected_purchases"].to_numpy(float).round(4),
            "expected_avg_value": s["expected_avg_value"].to_numpy(float).round(2),
            "margin_ratio": s["margin_ratio"].to_numpy(float).round(4),
            "clv": s["clv"].to_numpy(float).round(2),
            "historic_value": summary["historic_value"].to_numpy(float).round(2),
            "historic_margin": summary["historic_margin"].to_numpy(float).round(2),
            "horizon_days": int(cfg["clv"]["horizon_days"]),
            "model_version": version,
            "run_id": run_id,
        }
    )


def record_and_publish(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    version: str,
    runs: Mapping[str, ModelRun],
    clv_rows: pd.DataFrame | None,
    churn_rows: pd.DataFrame | None,
    trained: store.Training,
) -> dict[str, int]:
    """One transaction: the week's training when this run trained it, the model_runs rows of
    this run (replacing a rerun's), and, when the gate passed, the day's partitions of the
    marts."""
    recorded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    frame = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "as_of_date": as_of_date,
                "model": run.model,
                "model_version": version,
                "status": run.status,
                "passed": run.passed,
                "published": run.published,
                "params": to_json(run.params),
                "metrics": to_json(run.metrics),
                "checks": to_json(run.checks),
                "message": run.message,
                "fit_seconds": round(float(run.fit_seconds), 3),
                "n_customers": int(run.n_customers),
                "recorded_at": recorded_at,
            }
            for run in runs.values()
        ]
    )
    published: dict[str, int] = {}
    with wh.begin() as conn:
        # the marts exist (empty) from the first run on, published or not, so that queries
        # and dim_customer can join them before the first night passes the gate
        wh.ensure(conn, *tables.MODEL_TABLES)
        if trained.trained_now:
            store.save(wh, conn, trained, to_json(trained.record()))
        conn.execute(
            sa.text(f"delete from {RUNS_TABLE} where run_id = :r and as_of_date = :d"),
            {"r": run_id, "d": as_of_date},
        )
        frame["passed"] = frame["passed"].astype(object)
        wh.bulk_load(conn, RUNS_TABLE, frame)
        params = {"as_of_date": as_of_date}
        if clv_rows is not None:
            wh.load_declared(conn, tables.CLV_SCORES, clv_rows)
            published[CLV_TABLE] = wh.replace_partition(
                conn, CLV_TABLE, wh.sql_file("models", "customer_clv"), params
            )
            conn.exec_driver_sql(f"drop table {tables.CLV_SCORES.name}")
        if churn_rows is not None:
            wh.load_declared(conn, tables.CHURN_SCORES, churn_rows)
            published[CHURN_TABLE] = wh.replace_partition(
                conn, CHURN_TABLE, wh.sql_file("models", "customer_churn_risk"), params
            )
            conn.exec_driver_sql(f"drop table {tables.CHURN_SCORES.name}")
    return published
