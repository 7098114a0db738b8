"""Churn risk: who among today's active customers will not buy in the next 90 days.

Definitions (docs/kpis.md: active = a completed order in the 90 days ending at d)
---------------------------------------------------------------------------------
* **Population at a cut-off c**: customers active at c (a completed order in c-89 .. c).
* **Features at c** (include/sql/models/churn_features.sql, set-based, one row per
  customer): only what the warehouse knew at the end of c - the version of every source row
  valid at the end of c, events with timestamps before midnight after c, and any step of a
  row (a complaint's first response or closing, a campaign response) dated after c treated
  as not reached yet. Plus P(alive) and expected purchases in the next 90 days from a BG/NBD
  model fitted on the purchases known at c (crm_pipeline.models.clv).
* **Label at c**: 1 (churned) when the customer has no completed order in (c, c+90], as
  known at the end of c+90 (include/sql/models/churn_labels.sql).

Time split, never a random one
------------------------------
For a training day t: train on cut-off c1 = t-180 (labels from (c1, c1+90] = (t-180, t-90]),
validate and calibrate on c2 = t-90 (labels from (t-90, t]). Training labels end where
validation features start, so nothing of the validation period reaches the classifier.
The training day of a run on day d is the Monday of d's week (`training_day`,
`churn.train_every_days`): the model is trained once a week and scores the customers
active at d on every night of that week (crm_pipeline.models.nightly keeps it).

Model
-----
A HistGradientBoostingClassifier (fixed random_state, no early stopping, so no hidden
random split), one thread (deterministic and polite on a shared worker). Its probabilities
are calibrated on the validation cut-off with CalibratedClassifierCV over the frozen
classifier (isotonic with enough validation customers, else sigmoid). The honest validation
metrics are out of time for discrimination (AUC of the classifier on c2, which it never
saw) and cross-fitted for calibration (Brier score and expected calibration error of a
calibrator fitted on 4/5 of the c2 customers and applied to the other fifth, five times).

Reasons
-------
Attribution by local replacement, one group of features at a time: for each customer and
each reason group (recency, activity trend, complaints, CSAT, ...), the group's features
are replaced by the reference value of the scored population (the median of a numeric
feature, the most frequent value of a categorical one, "missing" where most customers have
no value, e.g. no survey answer), and the drop in the classifier's log-odds is that
group's contribution. The top 3 groups with a positive contribution (above
`reasons.min_log_odds`) become plain-words reasons written from the customer's own values.
It is an approximation of the model's attributions (groups are replaced separately, so
interactions between groups are split arbitrarily), documented in docs/models.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from threadpoolctl import threadpool_limits

from crm_pipeline.dates import end_of_day
from crm_pipeline.errors import ConfigError
from crm_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

ACTIVE_DAYS = 90  # contract: active = completed order in the 90 days ending at the date
LABEL_DAYS = 90  # churned = no completed order in the 90 days after the cut-off

CATEGORICAL = ("main_channel", "value_tier", "region", "acquisition_channel")
MODEL_FEATURES = ("p_alive", "expected_purchases_90")


# --------------------------------------------------------------------------------------
# Reading the warehouse
# --------------------------------------------------------------------------------------


def _temp_table(wh: Warehouse, conn: sa.Connection, name: str, sql: str, params: Mapping) -> None:
    conn.exec_driver_sql(f"drop table if exists {name}")
    conn.exec_driver_sql(f"create temporary table {name} as {wh.render(sql, params)}")


@dataclass
class CutoffData:
    """What the models read at one cut-off: CLV inputs for every buyer, churn features for
    the active ones (both sorted by customer_id)."""

    cutoff: dt.date
    summary: pd.DataFrame
    features: pd.DataFrame | None = None


def read_cutoff(
    wh: Warehouse,
    conn: sa.Connection,
    cutoff: dt.date,
    tier_params: Mapping[str, int],
    with_features: bool = True,
) -> CutoffData:
    """Build the `model_orders` and `model_purchase_days` temp tables for the cut-off (the
    purchase days once, for both readers), then read the per-customer CLV summary and
    (optionally) the churn features of the customers active at the cut-off.

    The temp tables stay for the caller (e.g. holdout actuals read model_orders right after)."""
    params = {"as_of_date": cutoff, **tier_params}
    _temp_table(wh, conn, "model_orders", wh.sql_file("models", "model_orders"), params)
    _temp_table(
        wh, conn, "model_purchase_days", wh.sql_file("models", "model_purchase_days"), params
    )
    summary = wh.read_frame(conn, wh.render(wh.sql_file("models", "customer_summary"), params))
    summary = summary.sort_values("customer_id", kind="stable").reset_index(drop=True)
    features = None
    if with_features:
        features = wh.read_frame(conn, wh.render(wh.sql_file("models", "churn_features"), params))
        features = features.sort_values("customer_id", kind="stable").reset_index(drop=True)
        # DuckDB averages doubles in parallel: the last bits may vary from run to run
        numeric = features.select_dtypes("number").columns
        features[numeric] = features[numeric].astype(float).round(6)
    return CutoffData(cutoff=cutoff, summary=summary, features=features)


def read_labels(
    wh: Warehouse, conn: sa.Connection, cutoff: dt.date, label_days: int = LABEL_DAYS
) -> set[str]:
    """Customers with a completed order in (cutoff, cutoff + label_days], as known then."""
    label_end = end_of_day(cutoff + dt.timedelta(days=label_days))
    sql = wh.render(
        wh.sql_file("models", "churn_labels"), {"as_of_date": cutoff, "label_end": label_end}
    )
    return set(wh.read_frame(conn, sql)["customer_id"].astype(str))


def label(features: pd.DataFrame, buyers: set[str]) -> np.ndarray:
    """1 = churned (no completed order in the label window), 0 = bought again."""
    return (~features["customer_id"].astype(str).isin(buyers)).to_numpy(dtype=np.int64)


#: a Monday: with train_every_days = 7 every training day is a Monday
TRAINING_EPOCH = dt.date(1970, 1, 5)


def training_day(as_of_date: dt.date, every_days: int) -> dt.date:
    """The day whose cut-offs train the classifier that scores `as_of_date`: the latest day
    on or before it on a fixed calendar of one training day every `every_days` days from
    TRAINING_EPOCH (7: the Monday of its week; 1: the day itself).

    Fixed by the date alone, so a rerun or backfill of any day of the week uses the same
    model whichever night of the week trained it first."""
    if every_days < 1:
        raise ConfigError(f"churn.train_every_days must be 1 or more, got {every_days}")
    return as_of_date - dt.timedelta(days=(as_of_date - TRAINING_EPOCH).days % every_days)


def time_split(as_of_date: dt.date, label_days: int = LABEL_DAYS) -> tuple[dt.date, dt.date]:
    """(training cut-off c1, validation cut-off c2) for a run on `as_of_date`.

    c2 = d - label_days: its labels end exactly at d. c1 = c2 - label_days: its labels end
    at c2, so training never sees anything after the validation cut-off.
    """
    c2 = as_of_date - dt.timedelta(days=label_days)
    c1 = c2 - dt.timedelta(days=label_days)
    return c1, c2


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


# --------------------------------------------------------------------------------------
# Reasons in plain words
# --------------------------------------------------------------------------------------


def _n(value: float) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{value:.0f}"


def _plural(value: float, word: str) -> str:
    return f"{_n(value)} {word}{'' if round(value) == 1 else 's'}"


def _when(days: float) -> str:
    if not math.isfinite(days):
        return ""
    if days <= 1:
        return "in the last day"
    if days <= 14:
        return f"{days:.0f} days ago"
    if days <= 45:
        return "last month"
    return f"{days / 30.4:.0f} months ago"


def _recency(r: Mapping[str, Any]) -> str:
    days, gap = r["recency_days"], r["usual_gap_days"]
    if not math.isfinite(gap):
        return f"no order for {_plural(days, 'day')} (one purchase day so far)"
    if days < gap:
        return f"orders rarely: usually every {_plural(max(gap, 1), 'day')}"
    return f"no order for {_plural(days, 'day')} (usually every {max(gap, 1):.0f})"


def _activity(r: Mapping[str, Any]) -> str:
    text = f"{_plural(r['orders_90'], 'order')} in the last 90 days vs {_n(r['orders_prev_90'])} before"
    return text if r["orders_30"] > 0 else text + ", none in the last 30"


def _spend(r: Mapping[str, Any]) -> str:
    now, before = r["spend_90"], r["spend_prev_90"]
    if before > 0 and now < before:
        return f"spend down {100 * (1 - now / before):.0f}% on the previous 90 days"
    return f"spend {now:.0f} in the last 90 days (average order {r['avg_order_value_365']:.0f})"


def _buying_pattern(r: Mapping[str, Any]) -> str:
    alive, expected = r["p_alive"], r["expected_purchases_90"]
    if math.isfinite(alive) and alive < 0.5:
        return f"buying pattern suggests they may have stopped (P(alive) {alive:.2f})"
    if math.isfinite(alive) and alive < 0.8:
        return f"buying pattern suggests they are slipping (P(alive) {alive:.2f})"
    return f"only {expected:.1f} orders expected in the next 90 days"


def _history(r: Mapping[str, Any]) -> str:
    if r["tenure_days"] < 90:
        return f"new customer: first order {_plural(r['tenure_days'], 'day')} ago"
    tier = r["value_tier"] if isinstance(r["value_tier"], str) else "no"
    return f"{tier} tier, {_plural(r['orders_365'], 'order')} in 12 months"


def _complaints(r: Mapping[str, Any]) -> str:
    if r["complaints_90"] > 0:
        text = f"{_plural(r['complaints_90'], 'complaint')} in 90 days"
    elif r["complaints_365"] > 0:
        text = f"{_plural(r['complaints_365'], 'complaint')} in 12 months"
    else:
        return "no complaint on record"
    hours = r["complaint_resolution_hours"]
    if math.isfinite(hours) and hours > 48:
        text += f", slow resolution ({hours:.0f} h on average)"
    if r["open_complaints"] > 0:
        text += f", {_n(r['open_complaints'])} still open"
    if r["high_severity_complaints_365"] > 0:
        text += ", high severity"
    return text


def _csat(r: Mapping[str, Any]) -> str:
    if not math.isfinite(r["last_csat"]):
        return "no CSAT answer in 12 months"
    return f"CSAT {r['last_csat']:.0f} {_when(r['days_since_csat'])}".strip()


def _nps(r: Mapping[str, Any]) -> str:
    if not math.isfinite(r["last_nps"]):
        return "no NPS answer in 12 months"
    score = r["last_nps"]
    kind = "detractor" if score <= 6 else ("passive" if score <= 8 else "promoter")
    return f"NPS {score:.0f} ({kind}) {_when(r['days_since_nps'])}".strip()


def _campaigns(r: Mapping[str, Any]) -> str:
    contacts, responses = r["campaign_contacts_180"], r["campaign_responses_180"]
    if contacts == 0:
        return "no campaign contact in 180 days"
    if responses == 0:
        return f"no response to {_plural(contacts, 'campaign contact')} in 180 days"
    return f"answered {_n(responses)} of {_plural(contacts, 'campaign contact')} in 180 days"


def _loyalty(r: Mapping[str, Any]) -> str:
    if r["loyalty_member"] < 0.5:
        return "not a loyalty member"
    days = r["days_since_loyalty_activity"]
    if not math.isfinite(days):
        return "loyalty member with no points activity in 12 months"
    if days > 30:
        return f"no loyalty points activity for {_plural(days, 'day')}"
    return (
        f"loyalty: {_n(r['points_earned_90'])} points earned, "
        f"{_n(r['points_redeemed_90'])} redeemed in 90 days"
    )


def _service(r: Mapping[str, Any]) -> str:
    return (
        f"{_plural(r['inbound_contacts_90'], 'inbound contact')} and "
        f"{_n(r['outbound_contacts_90'])} outbound in 90 days"
    )


def _channel(r: Mapping[str, Any]) -> str:
    channel = r["main_channel"] if isinstance(r["main_channel"], str) else "unknown"
    return (
        f"buys mainly via {channel.replace('_', ' ')} ({_plural(r['n_channels_365'], 'channel')})"
    )


def _profile(r: Mapping[str, Any]) -> str:
    region = r["region"] if isinstance(r["region"], str) else "unknown"
    acq = r["acquisition_channel"] if isinstance(r["acquisition_channel"], str) else "unknown"
    return f"profile: acquired via {acq.replace('_', ' ')}, {region} region"


#: Reason groups: features replaced together, and how to say it in words.
REASON_GROUPS: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str]]] = {
    "recency": (("recency_days", "usual_gap_days"), _recency),
    "activity_trend": (("orders_30", "orders_90", "orders_prev_90"), _activity),
    "spend_trend": (("spend_90", "spend_prev_90", "avg_order_value_365"), _spend),
    "buying_pattern": (MODEL_FEATURES, _buying_pattern),
    "history": (
        (
            "tenure_days",
            "account_age_days",
            "orders_total",
            "orders_365",
            "spend_365",
            "margin_365",
            "value_tier",
        ),
        _history,
    ),
    "complaints": (
        (
            "complaints_90",
            "complaints_365",
            "high_severity_complaints_365",
            "open_complaints",
            "complaint_response_hours",
            "complaint_resolution_hours",
        ),
        _complaints,
    ),
    "csat": (("last_csat", "days_since_csat", "csat_avg_365"), _csat),
    "nps": (("last_nps", "days_since_nps"), _nps),
    "campaigns": (("campaign_contacts_180", "campaign_responses_180"), _campaigns),
    "loyalty": (
        ("loyalty_member", "points_earned_90", "points_redeemed_90", "days_since_loyalty_activity"),
        _loyalty,
    ),
    "service_contacts": (("inbound_contacts_90", "outbound_contacts_90"), _service),
    "channel": (("main_channel", "n_channels_365"), _channel),
    "profile": (("region", "acquisition_channel"), _profile),
}


def reference_values(x: pd.DataFrame) -> dict[str, Any]:
    """The typical customer of the scored population, feature by feature: median (numeric),
    most frequent value (categorical), missing where most customers have no value."""
    ref: dict[str, Any] = {}
    for col in x.columns:
        s = x[col]
        if s.isna().mean() > 0.5:
            ref[col] = np.nan
        elif isinstance(s.dtype, pd.CategoricalDtype):
            counts = s.value_counts(sort=False)
            ref[col] = counts.sort_values(ascending=False, kind="stable").index[0]
        else:
            ref[col] = float(s.median())
    return ref


def _tree_features(classifier: Any, columns: list[str]) -> list[set[str]] | None:
    """The features each tree of a binary HistGradientBoostingClassifier splits on, by
    name; None when the classifier's layout is not the one known here."""
    try:
        predictors = classifier._predictors
        categorical = np.asarray(classifier.is_categorical_, dtype=bool)
    except AttributeError:
        return None
    if classifier.n_trees_per_iteration_ != 1 or len(categorical) != len(columns):
        return None
    # the classifier's own column order: its encoder puts the categorical columns first
    order = [c for c, cat in zip(columns, categorical, strict=True) if cat]
    order += [c for c, cat in zip(columns, categorical, strict=True) if not cat]
    out = []
    for (tree,) in predictors:
        nodes = tree.nodes
        out.append(
            {order[i] for i in np.unique(nodes["feature_idx"][~nodes["is_leaf"].astype(bool)])}
        )
    return out


#: customers per block of the per-tree values (rows x trees x 8 bytes: 160 MB at 200 trees)
CONTRIBUTION_BLOCK = 100_000


def _replace(
    x: pd.DataFrame, cols: list[str], ref: Mapping[str, Any]
) -> tuple[np.ndarray, pd.DataFrame]:
    """(rows whose values differ from the reference in any of `cols`, x with `cols` set to
    the reference)."""
    differs = np.zeros(len(x), dtype=bool)
    replaced = x.copy()
    for c in cols:
        if isinstance(replaced[c].dtype, pd.CategoricalDtype):
            value = ref[c] if isinstance(ref[c], str) else None
            differs |= ~_same(x[c].astype(object), value)
            replaced[c] = pd.Categorical(
                [value] * len(replaced), categories=replaced[c].cat.categories
            )
        else:
            differs |= ~_same(x[c], ref[c])
            replaced[c] = ref[c]
    return differs, replaced


def _tree_values(classifier: Any, x: pd.DataFrame, trees: list[int], threads: int) -> np.ndarray:
    """Each given tree's value for each row (trees x rows), by the classifier's own code."""
    bitsets, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()
    pre = classifier._preprocess_X(x, reset=False)
    out = np.empty((len(trees), len(x)))
    for j, t in enumerate(trees):
        (tree,) = classifier._predictors[t]
        out[j] = tree.predict(
            pre, known_cat_bitsets=bitsets, f_idx_map=f_idx_map, n_threads=threads
        )
    return out


def contributions(model: ChurnModel, features: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Per customer and reason group: classifier log-odds minus the log-odds with the group's
    features set to the population's reference values (positive = raises the risk).

    The log-odds is a sum over trees, and only the trees that split on one of the group's
    features can differ between the two: each tree's value is computed once per customer,
    and only those trees again on the replaced values (at a million customers, 60% of the
    tree evaluations of scoring the whole classifier once per group). A test compares it
    with the whole classifier's difference."""
    if features.empty:
        return pd.DataFrame(columns=list(REASON_GROUPS), index=features.index, dtype=float)
    x = model.encoder.transform(features)
    ref = reference_values(x)
    clf = model.classifier
    per_tree = _tree_features(clf, list(x.columns))
    groups = {
        group: [c for c in cols if c in x.columns]
        for group, (cols, _) in REASON_GROUPS.items()
        if any(c in x.columns for c in cols)
    }
    out = {group: np.zeros(len(x)) for group in groups}
    with threadpool_limits(limits=threads):
        if per_tree is None:  # a classifier laid out otherwise: the whole of it, per group
            base = clf.decision_function(x)
            for group, cols in groups.items():
                differs, replaced = _replace(x, cols, ref)
                if differs.any():
                    out[group][differs] = base[differs] - clf.decision_function(replaced[differs])
            return pd.DataFrame(out, index=features.index)
        every_tree = list(range(len(per_tree)))
        for start in range(0, len(x), CONTRIBUTION_BLOCK):
            block = x.iloc[start : start + CONTRIBUTION_BLOCK]
            values = _tree_values(clf, block, every_tree, threads)
            for group, cols in groups.items():
                # a customer whose values already are the reference ones gets exactly 0:
                # only the others are scored again (most have no complaint or survey)
                differs, replaced = _replace(block, cols, ref)
                trees = [t for t in every_tree if per_tree[t].intersection(cols)]
                if differs.any() and trees:
                    own = np.zeros(len(block))
                    for t in trees:
                        own += values[t]
                    again = _tree_values(clf, replaced[differs], trees, threads).sum(axis=0)
                    out[group][start : start + len(block)][differs] = own[differs] - again
    return pd.DataFrame(out, index=features.index)


def _same(values: pd.Series, reference: Any) -> np.ndarray:
    """Where a column already holds the reference value (missing equals missing)."""
    if reference is None or (isinstance(reference, float) and np.isnan(reference)):
        return values.isna().to_numpy()
    return (values == reference).fillna(False).to_numpy(dtype=bool)


class _Row(Mapping[str, Any]):
    """One customer's values, read from per-column lists (floats, NaN for missing, or text)
    only as a reason's words ask for them: a dict per customer cost most of the scoring
    time at a million customers."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: Mapping[str, list], i: int):
        self._columns, self._i = columns, i

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._i]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _plain_column(values: pd.Series) -> list:
    """A column as plain Python values: numbers as float, missing as NaN, text as text
    (the features are numbers or text, never numbers in a text column)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan).tolist()
    values = values.astype(object)
    return values.where(values.notna(), np.nan).tolist()


def top_reasons(
    features: pd.DataFrame, contrib: pd.DataFrame, top_n: int = 3, min_log_odds: float = 0.05
) -> list[str]:
    """The top `top_n` groups raising each customer's risk, in words, joined by '; '."""
    groups = list(contrib.columns)
    say = [REASON_GROUPS[g][1] for g in groups]
    values = contrib.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :top_n]
    strong = np.take_along_axis(values, order, axis=1) > min_log_odds
    columns = {c: _plain_column(features[c]) for c in features.columns}
    texts = []
    for i in range(len(values)):
        row = _Row(columns, i)
        words = [say[j](row) for j, ok in zip(order[i], strong[i], strict=True) if ok]
        texts.append("; ".join(words) if words else "no single factor stands out")
    return texts


def reason_summary(contrib: pd.DataFrame, min_log_odds: float = 0.05) -> dict[str, float]:
    """Share of scored customers for whom each group is the first reason (for model_runs)."""
    if contrib.empty:
        return {}
    first = contrib.idxmax(axis=1).where(contrib.max(axis=1) > min_log_odds, "none")
    shares = first.value_counts(normalize=True).sort_index()
    return {k: round(float(v), 4) for k, v in shares.items()}


# --------------------------------------------------------------------------------------
# Putting a cut-off's features together with the purchase model
# --------------------------------------------------------------------------------------


def with_purchase_model(features: pd.DataFrame, summary_scores: pd.DataFrame) -> pd.DataFrame:
    """Add P(alive) and expected purchases in the next 90 days (BG/NBD at the same cut-off)."""
    cols = ["customer_id", *MODEL_FEATURES]
    out = features.merge(summary_scores[cols], on="customer_id", how="left", validate="1:1")
    for c in MODEL_FEATURES:
        out[c] = out[c].astype(float).round(6)
    return out


def score_frame(
    model: ChurnModel,
    features: pd.DataFrame,
    cfg: Mapping[str, Any],
    reason_features: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Probability, band and top reasons for every active customer at the scoring date.

    `features` are the model's columns; `reason_features` (default the same) the customer's
    values the reasons are written from, which may hold features left out of the model."""
    started = time.perf_counter()
    threads = int(cfg["threads"])
    probability = predict(model, features, threads)
    contrib = contributions(model, features, threads)
    reasons = top_reasons(
        features if reason_features is None else reason_features,
        contrib,
        int(cfg["reasons"]["top_n"]),
        float(cfg["reasons"]["min_log_odds"]),
    )
    scores = pd.DataFrame(
        {
            "customer_id": features["customer_id"].to_numpy(),
            "churn_probability": np.round(probability, 6),
            "risk_band": risk_band(probability, cfg["risk_bands"]),
            "top_reasons": reasons,
        }
    )
    info = {
        "n_scored": len(scores),
        "band_counts": {
            b: int((scores["risk_band"] == b).sum()) for b in ("high", "medium", "low")
        },
        "mean_probability": round(float(probability.mean()), 4) if len(scores) else None,
        "first_reason_shares": reason_summary(contrib, float(cfg["reasons"]["min_log_odds"])),
        "score_seconds": round(time.perf_counter() - started, 3),
    }
    return scores, info
