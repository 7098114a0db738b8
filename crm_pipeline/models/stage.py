"""The models stage of crm_nightly: CLV and churn risk as of a day, behind a health gate.

Why it exists: the one function the DAG's models task calls, `run_models(wh, d, run_id)`,
and the order of its work; what each step computes lives in the modules it calls. Grain:
one run per (day, run_id): one ops.model_runs row per model (bgnbd, gamma_gamma, churn),
the day's partition of marts.customer_clv (one row per buyer known at the end of d) and of
marts.customer_churn_risk (one row per customer active at d).

1. **Read** (`_read`, one read transaction, set-based SQL in include/sql/models): for the
   day d, the purchases known at its end, the per-customer CLV inputs (frequency, recency,
   T, mean repeat spend) and the churn features of the customers active then; the previous
   nights' fitted parameters; the week's training from ops.model_training (store.py). Only
   when the week has none yet (its first night, a new model version): the same inputs at
   the training day t (the Monday of d's week, `churn.train_every_days`) and its cut-offs
   c2 = t-90 and c1 = t-180, their churn labels, and the actual repeat purchases in (c2, t].
2. **Compute** (`_compute`, pure: no warehouse): when the week is trained tonight, the CLV
   holdout at c2 and the churn classifier trained at c1, calibrated and validated at c2
   (training.py); then every night BG/NBD and Gamma-Gamma on the buyers known at d
   (clv.score.fit_clv) and the week's classifier scoring the customers active at d; each
   model judged by every check of include/config/models.yaml `gate` (gate.py), the kept
   week's figures against tonight's thresholds. CLV (BG/NBD with Gamma-Gamma) and churn are
   judged apart: one failing never withholds the other.
3. **Write** (publish.py, one write transaction): the week's training when trained
   tonight; ops.model_runs with params, metrics and checks as JSON text; the day's
   partition of each mart whose model passed is replaced (delete-insert), the other is not
   touched at all (readers keep its latest published as_of_date), and `ModelGateError` is
   raised after the commit when any model failed, so the DAG task fails and notifies.

Small businesses degrade instead of failing: below `clv.small_data_customers` buyers the
fits are penalised (mode 'small_data'), the holdout check is skipped when the holdout
holds fewer than `gate.holdout_min_actual_purchases` purchases, and churn is recorded as
'skipped' (with the reason) when a cut-off has too few active customers or labels; CLV is
then published alone.

Every random choice has a fixed seed and every frame is sorted by customer_id before a
model sees it, so a rerun for the same day and data gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.config import settings
from crm_pipeline.errors import MissingInputError, ModelGateError
from crm_pipeline.models import store
from crm_pipeline.models.churn import inputs as churn_inputs
from crm_pipeline.models.churn.score import score_frame
from crm_pipeline.models.clv.score import (
    HOLDOUT_DAYS,
    ClvFit,
    fit_bgnbd_on,
    fit_clv,
    penalizer_for,
    purchase_scores,
)
from crm_pipeline.models.gate import (
    GATED,
    ModelRun,
    check,
    churn_checks,
    clv_runs,
    failed_text,
    holdout_check,
    judge,
    model_passed,
)
from crm_pipeline.models.publish import (
    GROUP_TABLES,
    RUNS_TABLE,
    clv_mart_rows,
    record_and_publish,
    to_json,
)
from crm_pipeline.models.settings import load_config, model_version
from crm_pipeline.models.training import TrainingInputs, fit_info, train_week
from crm_pipeline.transform.settings import tier_params
from crm_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


def run_models(
    wh: Warehouse, as_of_date: dt.date, run_id: str, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Fit, gate, record in ops.model_runs, and publish the day's CLV and churn risk.

    Returns a summary (per model: status, checks, key metrics; rows published; timings).
    Raises ModelGateError, after recording model_runs and without touching the marts,
    when any gate check fails.
    """
    cfg = load_config(config)
    version = model_version(cfg)
    started = time.perf_counter()
    read = _read(wh, as_of_date, version, cfg)
    timings = {"read_seconds": time.perf_counter() - started}
    night = _compute(read, run_id, version, cfg, timings)
    t0 = time.perf_counter()
    published = record_and_publish(
        wh,
        as_of_date,
        run_id,
        version,
        night.runs,
        night.clv_rows,
        night.churn_rows,
        night.trained,
    )
    timings["write_seconds"] = time.perf_counter() - t0
    timings["total_seconds"] = time.perf_counter() - started
    timings = {k: round(v, 3) for k, v in timings.items()}
    result = _result(read, night, published, run_id, version, timings)
    log.info(
        "models for %s: passed=%s published=%s timings=%s",
        as_of_date,
        night.passed,
        published,
        timings,
    )
    failed = {group: items for group, items in night.failures.items() if items}
    if failed:
        verdict = ", ".join(
            f"{GROUP_TABLES[g]} {'published' if g not in failed else 'NOT published'}"
            for g in GATED
        )
        raise ModelGateError(
            f"model health gate failed for {as_of_date} ({verdict}; a table not published keeps "
            f"its latest published day; details in {RUNS_TABLE} run_id={run_id}): "
            + "; ".join(item for items in failed.values() for item in items),
            [item for items in failed.values() for item in items],
            result,
        )
    return result


# --------------------------------------------------------------------------------------
# 1. Read
# --------------------------------------------------------------------------------------


@dataclass
class _Read:
    """What the night reads: the day's cut-off, the kept training of its week (or the
    training day's inputs when none is kept), the previous nights' fits."""

    as_of_date: dt.date
    day: dt.date  # the training day
    c1: dt.date
    c2: dt.date
    at_d: churn_inputs.CutoffData
    trained: store.Training | None
    training: TrainingInputs | None
    previous: dict[str, dict[str, Any]]


def _read(wh: Warehouse, as_of_date: dt.date, version: str, cfg: Mapping[str, Any]) -> _Read:
    """The day's inputs; the training day's cut-offs only when its week has no training
    kept yet (the first night of a week, a new model version). One read transaction."""
    tiers = tier_params(settings())
    day = churn_inputs.training_day(as_of_date, int(cfg["churn"]["train_every_days"]))
    c1, c2 = churn_inputs.time_split(day)
    with wh.begin() as conn:
        if not wh.table_exists(conn, "staging.stg_orders"):
            raise MissingInputError("staging.stg_orders does not exist: run the staging step first")
        trained = store.load(wh, conn, day, version)
        training = None if trained is not None else _read_training(wh, conn, day, tiers)
        at_d = churn_inputs.read_cutoff(wh, conn, as_of_date, tiers)
        previous = _previous_fits(wh, conn, as_of_date, cfg)
    return _Read(as_of_date, day, c1, c2, at_d, trained, training, previous)


def _read_training(
    wh: Warehouse, conn: sa.Connection, day: dt.date, tiers: Mapping[str, int]
) -> TrainingInputs:
    c1, c2 = churn_inputs.time_split(day)
    at_day = churn_inputs.read_cutoff(wh, conn, day, tiers, with_features=False)
    actuals = wh.read_frame(
        conn,
        wh.render(
            wh.sql_file("models", "holdout_actuals"), {"as_of_date": day, "holdout_from": c2}
        ),
    )
    at_c2 = churn_inputs.read_cutoff(wh, conn, c2, tiers)
    buyers_c2 = churn_inputs.read_labels(wh, conn, c2)
    at_c1 = churn_inputs.read_cutoff(wh, conn, c1, tiers)
    buyers_c1 = churn_inputs.read_labels(wh, conn, c1)
    return TrainingInputs(at_day.summary, actuals, at_c2, at_c1, buyers_c2, buyers_c1)


def _previous_fits(
    wh: Warehouse, conn: sa.Connection, as_of_date: dt.date, cfg: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Latest converged BG/NBD and Gamma-Gamma parameters of the previous nights."""
    if not wh.table_exists(conn, RUNS_TABLE):
        return {}
    lookback = as_of_date - dt.timedelta(days=int(cfg["gate"]["drift_lookback_days"]))
    rows = conn.execute(
        sa.text(
            f"select model, as_of_date, params, metrics from {RUNS_TABLE} "
            "where model in ('bgnbd', 'gamma_gamma') and as_of_date < :d and as_of_date >= :lo "
            "order by as_of_date desc, recorded_at desc"
        ),
        {"d": as_of_date, "lo": lookback},
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for model, day, params, metrics in rows:
        if model in out:
            continue
        try:
            metrics_d, params_d = json.loads(metrics or "{}"), json.loads(params or "{}")
        except ValueError:
            continue
        if metrics_d.get("converged") and params_d:
            out[model] = {"as_of_date": str(day), "params": params_d}
    return out


# --------------------------------------------------------------------------------------
# 2. Compute (pure)
# --------------------------------------------------------------------------------------


@dataclass
class _Night:
    """What the night computed: the week's training, the CLV fit, each model's run with
    its checks, the gate's verdict, and the rows to publish (None: not published)."""

    trained: store.Training
    fitted: ClvFit
    holdout_metrics: dict[str, Any]
    runs: dict[str, ModelRun]
    failures: dict[str, list[str]]
    passed: dict[str, bool]
    clv_rows: pd.DataFrame | None = None
    churn_rows: pd.DataFrame | None = None


def _compute(
    read: _Read, run_id: str, version: str, cfg: Mapping[str, Any], timings: dict[str, float]
) -> _Night:
    """Train the week when it is not kept yet, fit and score CLV, score churn with the
    week's classifier, judge each model, and shape the rows to publish. No warehouse."""
    # the week's training, when not kept yet: the CLV holdout and the churn classifier
    trained = read.trained
    if trained is None:
        t0 = time.perf_counter()
        trained = train_week(read.training, read.day, version, run_id, cfg)
        # the night that trains reads the record as the later nights will (plain JSON)
        record = json.loads(to_json(trained.record()))
        for key in ("holdout", "churn_params", "churn_metrics", "fits", "left_out"):
            setattr(trained, key, record[key])
        timings["train_seconds"] = time.perf_counter() - t0
        read.training = None  # the training day's frames are not needed any more

    # CLV ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    fitted = fit_clv(read.at_d.summary, cfg)
    holdout_metrics, holdout_gate = holdout_check(trained.holdout, cfg)
    holdout_metrics["calibration_end"] = read.c2.isoformat()
    holdout_metrics["training_day"] = read.day.isoformat()
    timings["clv_seconds"] = time.perf_counter() - t0
    runs = dict(clv_runs(fitted, holdout_metrics, holdout_gate, read.previous, cfg))

    # churn: the week's classifier scores the customers active at d --------------------
    t0 = time.perf_counter()
    runs["churn"], churn_scores = _churn(read.at_d, fitted, trained, cfg)
    timings["churn_seconds"] = time.perf_counter() - t0

    # the gate: each model on its own checks; CLV needs both of its models, churn is
    # judged apart, so a failing churn model never withholds a healthy CLV, and the reverse
    failures, passed = judge(runs)
    night = _Night(trained, fitted, holdout_metrics, runs, failures, passed)
    if passed["clv"] and not fitted.skipped:
        night.clv_rows = clv_mart_rows(read.at_d.summary, fitted, cfg, version, run_id)
    if passed["churn"] and churn_scores is not None:
        night.churn_rows = churn_scores.assign(model_version=version, run_id=run_id)
    return night


def _churn(
    at_d: churn_inputs.CutoffData,
    fitted: ClvFit,
    trained: store.Training,
    cfg: Mapping[str, Any],
) -> tuple[ModelRun, pd.DataFrame | None]:
    """Score the customers active at d with the week's classifier, judged against tonight's
    gate thresholds on its kept validation metrics."""
    c = cfg["churn"]
    n_scored = len(at_d.features)
    week = {
        "training_day": trained.training_day.isoformat(),
        "trained_by": trained.run_id,
        "trained_tonight": trained.trained_now,
    }
    metrics = {**trained.churn_metrics, "n_active": n_scored, **week}
    skipped = trained.churn_reason if trained.churn_status == "skipped" else ""
    if fitted.skipped:
        skipped = f"no purchase model for the P(alive) feature: {fitted.skipped}"
    if skipped:
        reason = f"churn model skipped: {skipped}"
        if trained.churn_status != "skipped":
            log.warning(reason)
        checks = {"trainable": check(None, skipped)}
        return ModelRun("churn", "skipped", None, {}, metrics, checks, reason, 0.0, n_scored), None

    def untrainable(reason: str) -> tuple[ModelRun, None]:
        checks = {"trainable": check(False, reason, False, True)}
        params = dict(trained.churn_params)
        seconds = trained.fit_seconds
        run = ModelRun(
            "churn", "pending", False, params, metrics, checks, reason, seconds, n_scored
        )
        return run, None

    if trained.churn_status == "failed":
        return untrainable(trained.churn_reason)

    t0 = time.perf_counter()
    left_out = trained.left_out
    score_x = churn_inputs.with_purchase_model(at_d.features, fitted.scores)
    try:
        scores, info = score_frame(
            trained.model, score_x.drop(columns=list(left_out)), c, reason_features=score_x
        )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        reason = f"the classifier could not score the day: {type(exc).__name__}: {exc}"
        log.error("churn: %s", reason)
        return untrainable(reason)
    m = trained.churn_metrics
    # the P(alive) feature needs finite parameters at every cut-off (gate.churn_checks)
    checks = churn_checks(m, {**trained.fits, "scoring": fit_info(fitted.bg)}, cfg)
    ok = model_passed(checks)
    params = {**trained.churn_params, "risk_bands": dict(c["risk_bands"])}
    metrics = {**m, **info, **week}
    run = ModelRun(
        "churn",
        "pending",
        ok,
        params,
        metrics,
        checks,
        failed_text(checks) or "all checks passed",
        (trained.fit_seconds if trained.trained_now else 0.0) + time.perf_counter() - t0,
        n_scored,
    )
    return run, scores


# --------------------------------------------------------------------------------------
# The task's summary
# --------------------------------------------------------------------------------------


def _result(
    read: _Read,
    night: _Night,
    published: dict[str, int],
    run_id: str,
    version: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Per model: status, checks, key metrics; rows published; timings. Plain JSON types:
    it is the task's XCom."""
    runs, passed = night.runs, night.passed
    result = {
        "as_of_date": read.as_of_date.isoformat(),
        "run_id": run_id,
        "model_version": version,
        "passed": all(passed.values()),
        "gate": passed,
        "published": published,
        "cutoffs": {
            "training_day": read.day.isoformat(),
            "train": read.c1.isoformat(),
            "validation": read.c2.isoformat(),
            "trained_by": night.trained.run_id,
        },
        "models": {
            name: {
                "status": run.status,
                "passed": run.passed,
                "published": run.published,
                "message": run.message,
                "checks": run.checks,
                "fit_seconds": round(run.fit_seconds, 3),
                "n_customers": run.n_customers,
            }
            for name, run in runs.items()
        },
        "metrics": {
            "holdout": {k: v for k, v in night.holdout_metrics.items() if k != "fit"},
            "clv": night.fitted.metrics,
            "churn": {k: v for k, v in runs["churn"].metrics.items() if k != "calibration_table"},
        },
        "timings": timings,
    }
    return json.loads(to_json(result))


def features_at(
    wh: Warehouse, cutoff: dt.date, config: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The churn model matrix at one cut-off, exactly as the nightly run builds it: the
    SQL features of the customers active at the cut-off plus P(alive) and expected
    purchases from a BG/NBD fit on the purchases known at the cut-off (penalised as the
    CLV fit would be for that many buyers). For tests and for looking into a score."""
    cfg = load_config(config)
    with wh.begin() as conn:
        data = churn_inputs.read_cutoff(wh, conn, cutoff, tier_params(settings()))
    _, penalizer = penalizer_for(len(data.summary), cfg)
    bg = fit_bgnbd_on(data.summary, penalizer, int(cfg["clv"]["maxiter"]))
    return churn_inputs.with_purchase_model(
        data.features, purchase_scores(bg, data.summary, HOLDOUT_DAYS)
    )
