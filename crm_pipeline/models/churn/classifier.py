"""The churn classifier: training on one cut-off, calibration and validation on a later one,
calibrated probabilities, risk bands.

Why it exists: the scikit-learn part of churn risk, kept apart from the warehouse reads
(`inputs.py`) and from the words of the reasons (`reasons.py`). Grain: one model per
training day (`ChurnModel`), one probability and band per customer scored.

Model
-----
A HistGradientBoostingClassifier (fixed random_state, no early stopping, so no hidden
random split), one thread (deterministic and polite on a shared worker). Its probabilities
are calibrated on the validation cut-off with CalibratedClassifierCV over the frozen
classifier (isotonic with enough validation customers, else sigmoid). The honest validation
metrics are out of time for discrimination (AUC of the classifier on c2, which it never
saw) and cross-fitted for calibration (Brier score and expected calibration error of a
calibrator fitted on 4/5 of the c2 customers and applied to the other fifth, five times).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from crm_pipeline.errors import ConfigError
from crm_pipeline.models.churn.inputs import LABEL_DAYS

CATEGORICAL = ("main_channel", "value_tier", "region", "acquisition_channel")

# --------------------------------------------------------------------------------------
# The model matrix
# --------------------------------------------------------------------------------------


def feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c != "customer_id"]


def features_without_data(train: pd.DataFrame) -> dict[str, str]:
    """The features to leave out, with why: those the training cut-off has no data for.

    A source without surveys, complaints or loyalty events (a company starting out) gives
    features that are missing for every customer (CSAT, complaint hours) or the same for
    every customer (0 complaints): the classifier can learn nothing from them, and
    scikit-learn's binning fails on an all-missing column. They are recorded in
    ops.model_runs (params.features_left_out) and come back once the data does."""
    out = {}
    for col in feature_columns(train):
        values = train[col]
        if values.isna().all():
            out[col] = "no value for any customer at the training cut-off"
        elif values.nunique(dropna=False) == 1:
            out[col] = (
                f"the same value ({values.iloc[0]}) for every customer at the training cut-off"
            )
    return out


@dataclass
class Encoder:
    """Categorical columns as pandas categories with the training cut-off's levels (a level
    unseen in training becomes missing), numeric ones as float."""

    columns: list[str]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, features: pd.DataFrame) -> Encoder:
        cols = feature_columns(features)
        cats = {
            c: sorted(features[c].dropna().astype(str).unique().tolist())
            for c in cols
            if c in CATEGORICAL
        }
        return cls(columns=cols, categories=cats)

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for c in self.columns:
            if c in self.categories:
                values = features[c].astype(object).where(features[c].notna(), None)
                out[c] = pd.Categorical(values, categories=self.categories[c])
            else:
                out[c] = pd.to_numeric(features[c]).astype(float).to_numpy()
        return pd.DataFrame(out, index=features.index)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over 10 equal-width probability bins of (bin share) * |mean p - churn rate|."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.size == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    bins = np.minimum((np.asarray(p) * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append(
                {
                    "bin": f"{b / n_bins:.1f}-{(b + 1) / n_bins:.1f}",
                    "n": int(mask.sum()),
                    "mean_predicted": round(float(np.mean(p[mask])), 4),
                    "churn_rate": round(float(np.mean(y[mask])), 4),
                }
            )
    return rows


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


# --------------------------------------------------------------------------------------
# Training, calibration, validation
# --------------------------------------------------------------------------------------


@dataclass
class ChurnModel:
    classifier: Any
    calibrator: Any
    encoder: Encoder
    method: str
    train_cutoff: dt.date
    valid_cutoff: dt.date
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class NotTrainable(Exception):
    """Too few customers or labels to train and validate the classifier (not an error)."""


def check_trainable(name: str, y: np.ndarray, cfg: Mapping[str, Any]) -> None:
    n, churned = int(y.size), int(y.sum())
    kept = n - churned
    if n < int(cfg["min_customers"]):
        raise NotTrainable(
            f"{name}: {n} active customers, fewer than churn.min_customers = {cfg['min_customers']}"
        )
    if min(churned, kept) < int(cfg["min_per_class"]):
        raise NotTrainable(
            f"{name}: {churned} churned and {kept} retained customers, need at least "
            f"churn.min_per_class = {cfg['min_per_class']} of each"
        )


def subsample(
    features: pd.DataFrame, y: np.ndarray, max_customers: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """At most `max_customers` training rows, chosen by a hash of customer_id (the same
    customers every night, whatever the row order), kept in customer_id order."""
    if max_customers <= 0 or len(features) <= max_customers:
        return features, y
    keys = pd.util.hash_pandas_object(features["customer_id"].astype(str), index=False)
    keep = np.sort(np.argsort(keys.to_numpy(), kind="stable")[:max_customers])
    return features.iloc[keep].reset_index(drop=True), y[keep]


def classifier_params(cfg: Mapping[str, Any], n_train: int) -> dict[str, Any]:
    params = dict(cfg["classifier"])
    # a leaf must stay a small share of a small training set, or nothing can be learnt
    params["min_samples_leaf"] = int(min(params["min_samples_leaf"], max(5, n_train // 20)))
    params.update(early_stopping=False, random_state=int(cfg["random_state"]))
    return params


def train(
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
    train_cutoff: dt.date,
    valid_cutoff: dt.date,
    cfg: Mapping[str, Any],
) -> ChurnModel:
    """Fit on the training cut-off, validate and calibrate on the later validation cut-off.

    Raises NotTrainable when either cut-off has too few customers or labels, and ValueError
    when the cut-offs are not in time order (a random or reversed split is refused).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.metrics import brier_score_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if not valid_cutoff >= train_cutoff + dt.timedelta(days=LABEL_DAYS):
        raise ValueError(
            f"validation cut-off {valid_cutoff} must be at least {LABEL_DAYS} days after the "
            f"training cut-off {train_cutoff}, so training labels end before validation starts"
        )
    check_trainable(f"training cut-off {train_cutoff}", y_train, cfg)
    check_trainable(f"validation cut-off {valid_cutoff}", y_valid, cfg)
    started = time.perf_counter()
    encoder = Encoder.fit(train)
    x_train, x_valid = encoder.transform(train), encoder.transform(valid)
    params = classifier_params(cfg, len(train))
    method = "isotonic" if len(valid) >= int(cfg["isotonic_min_customers"]) else "sigmoid"
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=int(cfg["random_state"]))
    with threadpool_limits(limits=int(cfg["threads"])):
        clf = HistGradientBoostingClassifier(categorical_features="from_dtype", **params)
        clf.fit(x_train, y_train)
        raw_valid = clf.predict_proba(x_valid)[:, 1]
        calibrator = CalibratedClassifierCV(FrozenEstimator(clf), method=method)
        cross_fitted = cross_val_predict(
            calibrator, x_valid, y_valid, cv=folds, method="predict_proba"
        )[:, 1]
        calibrator.fit(x_valid, y_valid)
    base = float(y_valid.mean())
    brier = float(brier_score_loss(y_valid, cross_fitted))
    brier_base = base * (1.0 - base)
    metrics = {
        "train_cutoff": train_cutoff.isoformat(),
        "valid_cutoff": valid_cutoff.isoformat(),
        "label_days": LABEL_DAYS,
        "n_train": len(train),
        "n_valid": len(valid),
        "churn_rate_train": round(float(y_train.mean()), 4),
        "churn_rate_valid": round(base, 4),
        "auc": round(_auc(y_valid, raw_valid), 4),
        "auc_calibrated": round(_auc(y_valid, cross_fitted), 4),
        "brier": round(brier, 5),
        "brier_uncalibrated": round(float(brier_score_loss(y_valid, raw_valid)), 5),
        "brier_base_rate": round(brier_base, 5),
        "brier_skill": round(1.0 - brier / brier_base, 4) if brier_base > 0 else None,
        "ece": round(expected_calibration_error(y_valid, cross_fitted), 4),
        "ece_uncalibrated": round(expected_calibration_error(y_valid, raw_valid), 4),
        "calibration_method": method,
        "calibration_table": calibration_table(y_valid, cross_fitted),
        "n_iterations": int(clf.n_iter_),
    }
    return ChurnModel(
        classifier=clf,
        calibrator=calibrator,
        encoder=encoder,
        method=method,
        train_cutoff=train_cutoff,
        valid_cutoff=valid_cutoff,
        metrics=metrics,
        params={k: v for k, v in params.items()},
        seconds=time.perf_counter() - started,
    )


def predict(model: ChurnModel, features: pd.DataFrame, threads: int = 1) -> np.ndarray:
    """Calibrated churn probability per row of `features`."""
    if features.empty:
        return np.zeros(0)
    with threadpool_limits(limits=threads):
        return model.calibrator.predict_proba(model.encoder.transform(features))[:, 1]


def risk_band(probability: np.ndarray, bands: Mapping[str, float]) -> np.ndarray:
    """'high' at or above bands['high'], 'medium' at or above bands['medium'], else 'low'."""
    high, medium = float(bands["high"]), float(bands["medium"])
    if not 0.0 < medium < high <= 1.0:
        raise ConfigError(
            f"churn.risk_bands must satisfy 0 < medium < high <= 1, got {dict(bands)}"
        )
    p = np.asarray(probability, dtype=float)
    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low")).astype(object)
