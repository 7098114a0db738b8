"""Where the week's training is kept: one row of ops.model_training per training day and
model version.

Why it exists: training the churn classifier reads the features of two earlier cut-offs
over all history, their labels, and fits and calibrates the classifier; at a million
customers that is most of the models stage, and it gives the same model every night of a
week. So the classifier, with the CLV holdout that shares its validation cut-off, is
trained once per training day (crm_pipeline.models.churn.inputs.training_day) and kept here; every
night of the week reads it back and only scores. The gate judges the kept metrics against
the night's own thresholds, so a changed threshold takes effect the same night; a changed
model setting is a new model version, trained anew.

Grain: one row per (training_day, model_version). `record` is the JSON of everything but
the fitted classifier (holdout outcome, churn status, params, metrics, the fits behind the
P(alive) feature); `model` is the pickled classifier, base64 text (both engines store it
as text), empty when no classifier was trained. The pickle is read back only from this
table, which only this stage writes. A rerun on the training day writes the same row again
(delete-insert), so reruns and backfills give the same rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import pickle
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline.models.churn.classifier import ChurnModel
from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger(__name__)

TRAINING_TABLE = tables.MODEL_TRAINING.name


@dataclass
class Training:
    """One training day's outcome: the CLV holdout and the churn classifier (or why none)."""

    training_day: dt.date
    model_version: str
    run_id: str
    holdout: dict[str, Any]  # what gate.holdout_check judges, with the metrics
    churn_status: str  # trained, skipped (not enough data) or failed (cannot be trained)
    churn_reason: str = ""
    churn_params: dict[str, Any] = field(default_factory=dict)
    churn_metrics: dict[str, Any] = field(default_factory=dict)
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)  # train, validation
    left_out: dict[str, str] = field(default_factory=dict)
    fit_seconds: float = 0.0
    model: ChurnModel | None = None
    trained_now: bool = False  # trained by this run (to be saved with its model_runs)

    def record(self) -> dict[str, Any]:
        return {
            "holdout": self.holdout,
            "churn_status": self.churn_status,
            "churn_reason": self.churn_reason,
            "churn_params": self.churn_params,
            "churn_metrics": self.churn_metrics,
            "fits": self.fits,
            "left_out": self.left_out,
            "fit_seconds": self.fit_seconds,
        }


def load(wh: Warehouse, conn: sa.Connection, day: dt.date, version: str) -> Training | None:
    """The training kept for (day, version), or None when that week has not been trained."""
    if not wh.table_exists(conn, TRAINING_TABLE):
        return None
    row = conn.execute(
        sa.text(
            f"select run_id, record, model from {TRAINING_TABLE} "
            "where training_day = :d and model_version = :v"
        ),
        {"d": day, "v": version},
    ).first()
    if row is None:
        return None
    run_id, record, model = row
    try:
        classifier = pickle.loads(base64.b64decode(model)) if model else None  # noqa: S301 (ours)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        # kept by a release whose classes lived elsewhere (issue 14 moved ChurnModel to
        # crm_pipeline.models.churn.classifier): train the week again, which gives the same
        # model (it depends on the training day's cut-offs only) and replaces this row
        log.warning(
            "the model kept for %s (%s) cannot be read back (%s): training it again",
            day,
            version,
            exc,
        )
        return None
    rec = json.loads(record)
    return Training(
        training_day=day,
        model_version=version,
        run_id=run_id,
        holdout=rec["holdout"],
        churn_status=rec["churn_status"],
        churn_reason=rec["churn_reason"],
        churn_params=rec["churn_params"],
        churn_metrics=rec["churn_metrics"],
        fits=rec["fits"],
        left_out=rec["left_out"],
        fit_seconds=float(rec["fit_seconds"]),
        model=classifier,
    )


def save(wh: Warehouse, conn: sa.Connection, training: Training, record_json: str) -> None:
    """Replace the row of (training_day, model_version), inside the caller's transaction."""
    model = ""
    if training.model is not None:
        model = base64.b64encode(pickle.dumps(training.model, protocol=5)).decode("ascii")
    conn.execute(
        sa.text(f"delete from {TRAINING_TABLE} where training_day = :d and model_version = :v"),
        {"d": training.training_day, "v": training.model_version},
    )
    frame = pd.DataFrame(
        [
            {
                "training_day": training.training_day,
                "model_version": training.model_version,
                "run_id": training.run_id,
                "status": training.churn_status,
                "record": record_json,
                "model": model,
                "recorded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0),
            }
        ]
    )
    wh.bulk_load(conn, TRAINING_TABLE, frame)
