"""The week's training: the CLV holdout and the churn classifier of a training day.

Why it exists: training reads two earlier cut-offs over all history and fits and
calibrates the classifier, most of the models stage's time at a million customers, and it
gives the same model every night of a week; so it is computed once per training day (the
Monday of the run's week, `churn.train_every_days`) from what was known at its cut-offs
only, and kept (crm_pipeline.models.store). Pure: the stage reads its inputs
(`TrainingInputs`) and writes its outcome. Grain: one `store.Training` per training day and
model version.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crm_pipeline.models import store
from crm_pipeline.models.churn import classifier as churn_classifier
from crm_pipeline.models.churn import inputs as churn_inputs
from crm_pipeline.models.clv.common import FitResult
from crm_pipeline.models.clv.holdout import fit_holdout
from crm_pipeline.models.clv.score import (
    HOLDOUT_DAYS,
    fit_bgnbd_on,
    penalizer_for,
    purchase_scores,
    usable,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingInputs:
    """What the training day's cut-offs give: its buyers (for the penalizer), the actual
    repeat purchases of the holdout, and the churn features and labels at c2 and c1."""

    summary: pd.DataFrame
    actuals: pd.DataFrame
    at_c2: churn_inputs.CutoffData
    at_c1: churn_inputs.CutoffData
    buyers_c2: set[str]
    buyers_c1: set[str]


def fit_info(fit: FitResult) -> dict[str, Any]:
    """What the churn gate needs of a BG/NBD fit behind the P(alive) feature."""
    return {
        "usable": usable(fit),
        "converged": bool(fit.converged),
        "message": fit.message,
        "params": dict(fit.params),
    }


def train_week(
    inputs: TrainingInputs, day: dt.date, version: str, run_id: str, cfg: Mapping[str, Any]
) -> store.Training:
    """The training day's CLV holdout and churn classifier (trained, skipped or failed),
    from what was known at its cut-offs only: the same whichever night trains it."""
    _, penalizer = penalizer_for(len(inputs.summary), cfg)
    bg_c2, scores_c2, outcome = fit_holdout(inputs.at_c2.summary, inputs.actuals, penalizer, cfg)
    trained = store.Training(
        training_day=day,
        model_version=version,
        run_id=run_id,
        holdout=outcome,
        churn_status="skipped",
        trained_now=True,
    )
    c = cfg["churn"]
    at_c1, at_c2 = inputs.at_c1, inputs.at_c2
    y_train = churn_inputs.label(at_c1.features, inputs.buyers_c1)
    y_valid = churn_inputs.label(at_c2.features, inputs.buyers_c2)
    trained.churn_metrics = {
        "n_train": len(y_train),
        "n_valid": len(y_valid),
        "train_cutoff": at_c1.cutoff.isoformat(),
        "valid_cutoff": at_c2.cutoff.isoformat(),
    }
    try:
        churn_classifier.check_trainable(f"training cut-off {at_c1.cutoff}", y_train, c)
        churn_classifier.check_trainable(f"validation cut-off {at_c2.cutoff}", y_valid, c)
    except churn_classifier.NotTrainable as exc:
        trained.churn_reason = str(exc)
        log.warning("churn model skipped: %s", exc)
        return trained

    t0 = time.perf_counter()
    bg_c1 = fit_bgnbd_on(at_c1.summary, penalizer, int(cfg["clv"]["maxiter"]))
    trained.fits = {"train": fit_info(bg_c1), "validation": fit_info(bg_c2)}
    scores_c1 = purchase_scores(bg_c1, at_c1.summary, HOLDOUT_DAYS)
    train_x = churn_inputs.with_purchase_model(at_c1.features, scores_c1)
    train_x, y_train = churn_classifier.subsample(train_x, y_train, int(c["max_train_customers"]))
    left_out = churn_classifier.features_without_data(train_x)
    if left_out:
        log.info("churn: features left out for want of data: %s", ", ".join(left_out))
    trained.left_out = left_out
    train_x = train_x.drop(columns=list(left_out))
    valid_x = churn_inputs.with_purchase_model(at_c2.features, scores_c2).drop(
        columns=list(left_out)
    )
    try:
        model = churn_classifier.train(
            train_x, y_train, valid_x, y_valid, at_c1.cutoff, at_c2.cutoff, c
        )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # the data cannot train this classifier: a failed model (no retry would help),
        # recorded with the error; CLV is judged and published on its own
        trained.churn_status = "failed"
        trained.churn_reason = f"the classifier could not be trained: {type(exc).__name__}: {exc}"
        trained.churn_metrics = {"n_train": len(y_train), "n_valid": len(y_valid)}
        trained.churn_params = {
            "features": churn_classifier.feature_columns(train_x),
            "features_left_out": left_out,
        }
        trained.fit_seconds = time.perf_counter() - t0
        log.error("churn: %s", trained.churn_reason)
        return trained
    trained.churn_status = "trained"
    trained.model = model
    trained.fit_seconds = time.perf_counter() - t0
    trained.churn_metrics = {**model.metrics, "train_seconds": round(model.seconds, 3)}
    trained.churn_params = {
        "classifier": "HistGradientBoostingClassifier",
        **model.params,
        "calibration": model.method,
        "features": churn_classifier.feature_columns(train_x),
        "features_left_out": left_out,
        "risk_bands": dict(c["risk_bands"]),
        "purchase_model_at_train_cutoff": dict(bg_c1.params),
    }
    return trained
