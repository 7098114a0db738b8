"""Churn inputs at a cut-off: the population, its features, its labels, and the cut-offs.

Why it exists: everything the churn classifier learns from or scores is read here, from
the warehouse as it was known at the end of a cut-off day, so the classifier
(`classifier.py`) and the reasons (`reasons.py`) never touch the warehouse. Grain: one
row per customer active at a cut-off (features), one per buyer known then (the CLV
summary), one customer id per buyer in the label window (labels).

Definitions (docs/kpis.md: active = a completed order in the 90 days ending at d)
---------------------------------------------------------------------------------
* **Population at a cut-off c**: customers active at c (a completed order in c-89 .. c).
* **Features at c** (include/sql/models/churn_features.sql, set-based, one row per
  customer): only what the warehouse knew at the end of c - the version of every source row
  valid at the end of c, events with timestamps before midnight after c, and any step of a
  row (a complaint's first response or closing, a campaign response) dated after c treated
  as not reached yet. Plus P(alive) and expected purchases in the next 90 days from a BG/NBD
  model fitted on the purchases known at c (crm_pipeline.models.clv), added by
  :func:`with_purchase_model`.
* **Label at c**: 1 (churned) when the customer has no completed order in (c, c+90], as
  known at the end of c+90 (include/sql/models/churn_labels.sql).

Time split, never a random one
------------------------------
For a training day t: train on cut-off c1 = t-180 (labels from (c1, c1+90] = (t-180, t-90]),
validate and calibrate on c2 = t-90 (labels from (t-90, t]). Training labels end where
validation features start, so nothing of the validation period reaches the classifier.
The training day of a run on day d is the Monday of d's week (`training_day`,
`churn.train_every_days`): the model is trained once a week and scores the customers
active at d on every night of that week (crm_pipeline.models.store keeps it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.dates import end_of_day
from crm_pipeline.errors import ConfigError
from crm_pipeline.warehouse import Warehouse

ACTIVE_DAYS = 90  # contract: active = completed order in the 90 days ending at the date
LABEL_DAYS = 90  # churned = no completed order in the 90 days after the cut-off
#: the purchase model's features, added to the SQL features by `with_purchase_model`
MODEL_FEATURES = ("p_alive", "expected_purchases_90")

# --------------------------------------------------------------------------------------
# Reading the warehouse
# --------------------------------------------------------------------------------------


def _temp_table(wh: Warehouse, conn: sa.Connection, name: str, sql: str, params: Mapping) -> None:
    conn.exec_driver_sql(f"drop table if exists {name}")
    conn.exec_driver_sql(f"create temporary table {name} as {wh.render(sql, params)}")


@dataclass
class CutoffData:
    """What the models read at one cut-off: CLV inputs for every buyer (frequency, recency,
    T, monetary_value, ...), churn features for the active ones (both sorted by
    customer_id)."""

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
    # SQL names are lower case; in frames the customer's age is T, as in lifetimes,
    # pymc-marketing and crm_pipeline.models.clv (the marts keep t: docs/data_dictionary.md)
    summary = summary.rename(columns={"t": "T"})
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
# Putting a cut-off's features together with the purchase model
# --------------------------------------------------------------------------------------


def with_purchase_model(features: pd.DataFrame, summary_scores: pd.DataFrame) -> pd.DataFrame:
    """Add P(alive) and expected purchases in the next 90 days (BG/NBD at the same cut-off)."""
    cols = ["customer_id", *MODEL_FEATURES]
    out = features.merge(summary_scores[cols], on="customer_id", how="left", validate="1:1")
    for c in MODEL_FEATURES:
        out[c] = out[c].astype(float).round(6)
    return out
