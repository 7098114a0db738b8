"""The churn scores of a day: probability, risk band and top reasons per active customer.

Why it exists: it puts the classifier (`classifier.py`) and the reasons (`reasons.py`)
together into the rows marts.customer_churn_risk publishes, so that neither of those two
needs the other (reasons read the model; the classifier knows nothing of reasons). Grain:
one row per customer active at the scoring date.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from crm_pipeline.models.churn.classifier import ChurnModel, predict, risk_band
from crm_pipeline.models.churn.reasons import contributions, reason_summary, top_reasons


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
