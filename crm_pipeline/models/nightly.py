"""The models stage of crm_nightly: CLV and churn risk as of a day, behind a health gate.

`run_models(wh, d, run_id)` does, in order:

1. **Read** (one read transaction, set-based SQL in include/sql/models): for the day d,
   the purchases known at its end, the per-customer CLV inputs (frequency, recency, T,
   mean repeat spend) and the churn features of the customers active then; the previous
   nights' fitted parameters; the week's training from ops.model_training (models/store.py).
   Only when the week has none yet (its first night, a new model version): the same inputs
   at the training day t (the Monday of d's week, `churn.train_every_days`) and its cut-offs
   c2 = t-90 and c1 = t-180, their churn labels, and the actual repeat purchases in (c2, t].
2. **Fit and score**: when the week is trained tonight, BG/NBD at c2 (the holdout, and the
   churn validation's P(alive)) and c1, the churn classifier trained at c1, calibrated and
   validated at c2 (crm_pipeline.models.churn), kept; then every night BG/NBD and
   Gamma-Gamma on the buyers known at d (distinct (x, t_x, T) rows with weights) ->
   marts.customer_clv rows, and the week's classifier scores the customers active at d ->
   marts.customer_churn_risk rows.
3. **Gate**, per model: every check of include/config/models.yaml `gate` (CLV: fit
   convergence, holdout error, parameter drift; churn: trainable, out-of-time AUC, Brier
   skill over the base rate, ECE), the kept week's figures against tonight's thresholds.
   CLV (BG/NBD with Gamma-Gamma) and churn are judged apart: one failing never withholds
   the other.
4. **Record and publish** (one write transaction): the week's training when trained
   tonight; ops.model_runs gets one row per model (bgnbd, gamma_gamma, churn) with
   params, metrics and checks as JSON text; the day's
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

import copy
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crm_pipeline.config import config_path, read_yaml, settings
from crm_pipeline.errors import ConfigError, MissingInputError, ModelGateError
from crm_pipeline.kpis import tier_params
from crm_pipeline.models import clv as clv_model
from crm_pipeline.models import store
from crm_pipeline.models.churn import classifier as churn_classifier
from crm_pipeline.models.churn import inputs as churn_inputs
from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger(__name__)

MODELS_FILE = config_path("models")
CLV_TABLE = tables.CUSTOMER_CLV.name
CHURN_TABLE = tables.CUSTOMER_CHURN_RISK.name
RUNS_TABLE = tables.MODEL_RUNS.name
MODEL_VERSION = "1"
HOLDOUT_DAYS = 90

#: The gate's groups: what is published together. CLV needs both of its models.
GATED = {"clv": ("bgnbd", "gamma_gamma"), "churn": ("churn",)}
GROUP_TABLES = {"clv": CLV_TABLE, "churn": CHURN_TABLE}


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(overrides: Mapping[str, Any] | None = None, path: Path | None = None) -> dict:
    """include/config/models.yaml (or $CRM_MODELS_CONFIG, see `config.config_path`) with
    `overrides` merged over it (key by key)."""
    return _merge(read_yaml("models", path), overrides or {})


def model_version(cfg: Mapping[str, Any]) -> str:
    """Code version plus a short hash of the settings that change the scores."""
    # the settings that change the scores: not the number of threads (same scores)
    scored = {"clv": cfg["clv"], "churn": {k: v for k, v in cfg["churn"].items() if k != "threads"}}
    settings_json = json.dumps(scored, sort_keys=True, default=str)
    return f"{MODEL_VERSION}+{hashlib.sha1(settings_json.encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _check(passed: bool | None, detail: str, value: Any = None, threshold: Any = None) -> dict:
    """passed None = skipped (not enough evidence); never counts as a failure."""
    return {"passed": passed, "value": value, "threshold": threshold, "detail": detail}


def _model_passed(checks: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(c["passed"] is not False for c in checks.values())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _converged_check(fit: clv_model.FitResult) -> dict:
    return _check(bool(fit.converged), fit.message, fit.converged, True)


def _drift_check(
    fit: clv_model.FitResult,
    previous: Mapping[str, Any] | None,
    predict: Callable[[Mapping[str, float]], np.ndarray],
    what: str,
    cfg: Mapping[str, Any],
) -> dict:
    """Drift against the latest converged fit of the previous nights, measured on what the
    two parameter sets predict for today's customers: sum |new - old| / sum |old|.

    Raw parameters are not the measure because they are not always identified one by one:
    when few customers have dropped out yet, BG/NBD's a and b move together by orders of
    magnitude from one night to the next while a / (a + b) and every prediction stay put.
    Their changes are listed in the detail all the same."""
    limit = float(cfg["gate"]["drift_max_relative_change"])
    if previous is None:
        return _check(None, "no converged fit in the previous nights to compare with", None, limit)
    old = previous["params"]
    if not all(_finite(old.get(k)) and old[k] > 0 for k in fit.params):
        return _check(False, f"previous parameters not comparable: {old}", None, limit)
    raw = ", ".join(f"{k} {fit.params[k] / old[k] - 1.0:+.1%}" for k in fit.params)
    try:
        new_pred, old_pred = predict(fit.params), predict(old)
    except ValueError as exc:
        return _check(False, f"cannot predict with the previous parameters: {exc}", None, limit)
    base = float(np.abs(old_pred).sum())
    moved = float(np.abs(new_pred - old_pred).sum())
    change = moved / base if base > 0 else (0.0 if moved == 0 else math.inf)
    ok = change <= limit
    detail = (
        f"{what} for today's customers moved by {change:.1%} against the fit of "
        f"{previous['as_of_date']} ({'<=' if ok else '>'} {limit:.0%}); parameters: {raw}"
    )
    return _check(ok, detail, round(change, 4) if math.isfinite(change) else None, limit)


def _at_least(name: str, value: float | None, threshold: float) -> dict:
    if value is None or not math.isfinite(value):
        return _check(False, f"{name} could not be computed", None, threshold)
    ok = value >= threshold
    return _check(ok, f"{name} {value:.4g} {'>=' if ok else '<'} {threshold:g}", value, threshold)


def _at_most(name: str, value: float | None, threshold: float) -> dict:
    if value is None or not math.isfinite(value):
        return _check(False, f"{name} could not be computed", None, threshold)
    ok = value <= threshold
    return _check(ok, f"{name} {value:.4g} {'<=' if ok else '>'} {threshold:g}", value, threshold)


# --------------------------------------------------------------------------------------
# CLV
# --------------------------------------------------------------------------------------


@dataclass
class ClvFit:
    bg: clv_model.FitResult
    gg: clv_model.FitResult
    mode: str
    penalizer: float
    gg_params: dict[str, float] = field(default_factory=dict)  # what scored: fitted or fallback
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # the customers scored
    gg_fallback: str = ""  # why the small-data fallback replaced the Gamma-Gamma fit
    skipped: str = ""  # why there is nothing to publish (no buyers, small data not fittable)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, Any] = field(default_factory=dict)


def _penalizer(n_customers: int, cfg: Mapping[str, Any]) -> tuple[str, float]:
    c = cfg["clv"]
    if n_customers < int(c["small_data_customers"]):
        return "small_data", float(c["small_data_penalizer"])
    return "normal", float(c["penalizer"])


def _fit_bgnbd_on(summary: pd.DataFrame, penalizer: float, maxiter: int) -> clv_model.FitResult:
    """BG/NBD on the distinct (x, t_x, T) rows of the summary, weighted by their counts: the
    frame adapter of :func:`crm_pipeline.models.clv.fit_bgnbd`, the one estimator."""
    rows = summary.groupby(["frequency", "recency", "t"], sort=True).size().reset_index(name="w")
    return clv_model.fit_bgnbd(
        rows["frequency"].to_numpy(float),
        rows["recency"].to_numpy(float),
        rows["t"].to_numpy(float),
        weights=rows["w"].to_numpy(float),
        penalizer=penalizer,
        maxiter=maxiter,
    )


def _fit_gamma_gamma_on(
    summary: pd.DataFrame, penalizer: float, maxiter: int
) -> clv_model.FitResult:
    """Gamma-Gamma on the distinct (x, mean repeat spend) rows of the repeat buyers: the
    frame adapter of :func:`crm_pipeline.models.clv.fit_gamma_gamma`, the one estimator."""
    buyers = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    rows = buyers.groupby(["frequency", "monetary_value"], sort=True).size().reset_index(name="w")
    return clv_model.fit_gamma_gamma(
        rows["frequency"].to_numpy(float),
        rows["monetary_value"].to_numpy(float),
        weights=rows["w"].to_numpy(float),
        penalizer=penalizer,
        maxiter=maxiter,
    )


def _usable(fit: clv_model.FitResult) -> bool:
    return fit.n > 0 and all(_finite(v) and v > 0 for v in fit.params.values())


def purchase_scores(bg: clv_model.FitResult, summary: pd.DataFrame, horizon: float) -> pd.DataFrame:
    """P(alive), expected purchases in the horizon and in the next 90 days, per customer."""
    x = summary["frequency"].to_numpy(float)
    tx = summary["recency"].to_numpy(float)
    big_t = summary["t"].to_numpy(float)
    out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
    if not _usable(bg) or summary.empty:
        for c in ("p_alive", "expected_purchases", "expected_purchases_90"):
            out[c] = np.nan
        return out
    out["p_alive"] = clv_model.p_alive(bg, x, tx, big_t)
    out["expected_purchases"] = clv_model.expected_purchases(bg, horizon, x, tx, big_t)
    out["expected_purchases_90"] = clv_model.expected_purchases(bg, HOLDOUT_DAYS, x, tx, big_t)
    return out


def margin_ratios(summary: pd.DataFrame, cfg: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    """Per customer margin / net revenue, shrunk toward the company's ratio by credibility
    n / (n + k) with n the customer's completed orders (or the company's for everyone)."""
    value = summary["historic_value"].to_numpy(float)
    margin = summary["historic_margin"].to_numpy(float)
    company = float(margin.sum() / value.sum()) if value.sum() > 0 else 1.0
    if cfg["clv"]["margin"] == "company":
        return np.full(len(summary), company), company
    if cfg["clv"]["margin"] != "customer":
        raise ConfigError(
            f"clv.margin must be 'customer' or 'company', got {cfg['clv']['margin']!r}"
        )
    n = summary["n_orders"].to_numpy(float)
    k = float(cfg["clv"]["margin_shrinkage_orders"])
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(value > 0, margin / value, company)
    weight = n / (n + k) if k > 0 else np.ones_like(n)
    return weight * own + (1.0 - weight) * company, company


def _gg_ok(fit: clv_model.FitResult) -> bool:
    return fit.converged and _usable(fit) and fit.params["q"] > 1.0


def fallback_gamma_gamma(summary: pd.DataFrame, prior_purchases: float) -> dict[str, float]:
    """Gamma-Gamma parameters set, not fitted, for a business too small to fit them.

    p = 1, q = 1 + k, v = k * mu (mu = mean net value of a purchase day over all buyers)
    make the model's expected value per purchase (v + x m) p / (p x + q - 1) equal to
    (x m + k mu) / (x + k): the customer's own mean spend, credibility-weighted against
    mu as if the population had contributed k purchases."""
    days = float((summary["frequency"] + 1).sum())
    mu = float(summary["historic_value"].sum()) / days if days else 0.0
    k = float(prior_purchases)
    if not (mu > 0 and k > 0):
        return {}
    return {"p": 1.0, "q": 1.0 + k, "v": k * mu}


def fit_clv(summary: pd.DataFrame, cfg: Mapping[str, Any]) -> ClvFit:
    """Both fits on the buyers known at d and the customer_clv rows (without keys).

    In small-data mode (fewer than clv.small_data_customers buyers) a Gamma-Gamma fit that
    does not converge is replaced by :func:`fallback_gamma_gamma`, and a BG/NBD fit that
    does not converge leaves nothing to publish (recorded as skipped, not as a failure)."""
    c = cfg["clv"]
    mode, penalizer = _penalizer(len(summary), cfg)
    bg = _fit_bgnbd_on(summary, penalizer, int(c["maxiter"]))
    gg = _fit_gamma_gamma_on(summary, penalizer, int(c["maxiter"]))
    fitted = ClvFit(bg=bg, gg=gg, mode=mode, penalizer=penalizer, summary=summary)
    fitted.gg_params = dict(gg.params) if _gg_ok(gg) else {}
    if summary.empty:
        fitted.skipped = "no completed purchase known at the end of the day"
    elif mode == "small_data" and not bg.converged:
        fitted.skipped = (
            f"small data ({len(summary)} buyers): the BG/NBD fit did not converge ({bg.message})"
        )
    if mode == "small_data" and not fitted.gg_params and not fitted.skipped:
        k = float(c["small_data_prior_purchases"])
        fitted.gg_params = fallback_gamma_gamma(summary, k)
        fitted.gg_fallback = (
            f"small data: the Gamma-Gamma fit on {gg.n} repeat buyers did not converge "
            f"({gg.message}); expected value per purchase = (x m + k mu) / (x + k) with "
            f"k = {k:g} (p = 1, q = 1 + k, v = k mu)"
        )
    horizon = float(c["horizon_days"])
    scores = purchase_scores(bg, summary, horizon)
    margin, company = margin_ratios(summary, cfg)
    x = summary["frequency"].to_numpy(float)
    m = summary["monetary_value"].to_numpy(float)
    if _usable(bg) and fitted.gg_params:
        scores["expected_avg_value"] = clv_model.expected_avg_value(fitted.gg_params, x, m)
        scores["clv"] = clv_model.clv(
            bg,
            fitted.gg_params,
            x,
            summary["recency"].to_numpy(float),
            summary["t"].to_numpy(float),
            m,
            margin,
            horizon,
            float(c["annual_discount_rate"]),
        )
    else:
        scores["expected_avg_value"] = np.nan
        scores["clv"] = np.nan
    scores["margin_ratio"] = margin
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    corr = (
        float(np.corrcoef(repeat["frequency"], repeat["monetary_value"])[0, 1])
        if len(repeat) > 2
        and repeat["frequency"].nunique() > 1
        and repeat["monetary_value"].nunique() > 1
        else None
    )
    fitted.scores = scores
    fitted.metrics = {
        "mode": mode,
        "penalizer": penalizer,
        "n_customers": len(summary),
        "n_repeat_buyers": len(repeat),
        "company_margin_ratio": round(company, 4),
        "corr_frequency_monetary": None if corr is None else round(corr, 4),
        "total_clv": _round(scores["clv"].sum(), 2) if scores["clv"].notna().all() else None,
        "mean_clv": _round(scores["clv"].mean(), 2) if scores["clv"].notna().all() else None,
        "mean_p_alive": _round(scores["p_alive"].mean()),
        "horizon_days": int(horizon),
    }
    return fitted


def _round(value: Any, digits: int = 4) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, digits) if math.isfinite(value) else None


def holdout(
    summary_c2: pd.DataFrame, actuals: pd.DataFrame, penalizer: float, cfg: Mapping[str, Any]
) -> tuple[clv_model.FitResult, pd.DataFrame, dict[str, Any]]:
    """BG/NBD fitted on what was known at c2 = t-90, predicting repeat purchase days in
    (t-90, t], t the training day.

    Returns (fit at c2, purchase scores at c2, outcome): the outcome holds the figures that
    :func:`holdout_check` judges (kept for the week in ops.model_training) and the metrics."""
    bg = _fit_bgnbd_on(summary_c2, penalizer, int(cfg["clv"]["maxiter"]))
    scores = purchase_scores(bg, summary_c2, HOLDOUT_DAYS)
    outcome: dict[str, Any] = {
        "n_customers": len(summary_c2),
        "usable": _usable(bg),
        "converged": bool(bg.converged),
        "message": bg.message,
        "actual": 0.0,
        "predicted": None,
        "metrics": {},
    }
    if summary_c2.empty:
        return bg, scores, outcome
    joined = scores.merge(actuals, on="customer_id", how="left")
    actual = joined["actual_purchases"].fillna(0).to_numpy(float)
    outcome["actual"] = float(actual.sum())
    if not outcome["usable"] or outcome["actual"] <= 0:
        return bg, scores, outcome
    table = clv_model.holdout_comparison(
        joined["expected_purchases_90"].to_numpy(float), actual, 10
    )
    predicted_sum, actual_sum = (
        float(table.loc[0, "predicted_sum"]),
        float(table.loc[0, "actual_sum"]),
    )
    outcome["predicted"] = predicted_sum
    deciles = [
        {
            "decile": int(r.group),
            "n": int(r.n_customers),
            "predicted": _round(r.predicted_sum, 1),
            "actual": _round(r.actual_sum, 1),
            "relative_error": _round(r.predicted_sum / r.actual_sum - 1.0)
            if r.actual_sum
            else None,
        }
        for r in table.iloc[1:].itertuples()
    ]
    outcome["metrics"] = {
        "calibration_end": None,
        "holdout_days": HOLDOUT_DAYS,
        "n_customers": len(summary_c2),
        "predicted": _round(predicted_sum, 1),
        "actual": _round(actual_sum, 1),
        "relative_error": _round(predicted_sum / actual_sum - 1.0) if actual_sum > 0 else None,
        "mae": _round(table.loc[0, "mae"]),
        "deciles": deciles,
        "fit": _fit_summary(bg),
    }
    return bg, scores, outcome


def holdout_check(outcome: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[dict, dict]:
    """(metrics, check) of a holdout outcome against tonight's gate thresholds."""
    gate = cfg["gate"]
    limit = float(gate["holdout_max_relative_error"])
    if not outcome["n_customers"]:
        return {}, _check(None, "no buyers at c2: nothing to hold out", None, limit)
    minimum = float(gate["holdout_min_actual_purchases"])
    actual = float(outcome["actual"])
    if actual < minimum:
        return (
            {"actual": _round(actual, 1)},
            _check(
                None,
                f"only {actual:.0f} actual repeat purchase days in the holdout, fewer than "
                f"gate.holdout_min_actual_purchases = {minimum:g}: too little evidence",
                None,
                limit,
            ),
        )
    if not outcome["usable"]:
        return {}, _check(False, f"holdout fit failed: {outcome['message']}", None, limit)
    if outcome["predicted"] is None or actual <= 0:
        return {}, _check(None, "no repeat purchase day in the holdout", None, limit)
    predicted = float(outcome["predicted"])
    # the holdout fit is judged by its predictions; whether its optimiser stopped cleanly
    # is recorded (metrics.fit) but only the published fit's convergence is a check
    error = abs(predicted / actual - 1.0)
    check = _check(
        error <= limit,
        f"predicted {predicted:.0f} vs actual {actual:.0f} repeat purchase days in "
        f"the {HOLDOUT_DAYS} days to the training day: |error| {error:.1%} "
        f"{'<=' if error <= limit else '>'} {limit:.0%}"
        + ("" if outcome["converged"] else f" (holdout fit: {outcome['message']})"),
        round(error, 4),
        limit,
    )
    return dict(outcome["metrics"]), check


def _fit_summary(fit: clv_model.FitResult) -> dict[str, Any]:
    d = fit.to_dict()
    d.pop("model", None)
    return d


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


@dataclass
class _Run:
    model: str
    status: str
    passed: bool | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    checks: dict[str, Any]
    message: str
    fit_seconds: float
    n_customers: int
    published: bool = False


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
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tiers = tier_params(settings())
    day = churn_inputs.training_day(as_of_date, int(cfg["churn"]["train_every_days"]))
    c1, c2 = churn_inputs.time_split(day)

    # 1. read: the day's inputs; the training day's cut-offs only when its week has no
    #    training kept yet (the first night of a week, a new model version)
    with wh.begin() as conn:
        if not wh.table_exists(conn, "staging.stg_orders"):
            raise MissingInputError("staging.stg_orders does not exist: run the staging step first")
        trained = store.load(wh, conn, day, version)
        inputs = None if trained is not None else _read_training(wh, conn, day, tiers)
        at_d = churn_inputs.read_cutoff(wh, conn, as_of_date, tiers)
        previous = _previous_fits(wh, conn, as_of_date, cfg)
    timings["read_seconds"] = time.perf_counter() - started

    # 2. the week's training, when not kept yet: the CLV holdout and the churn classifier
    if trained is None:
        t0 = time.perf_counter()
        trained = train_week(inputs, day, version, run_id, cfg)
        # the night that trains reads the record as the later nights will (plain JSON)
        record = json.loads(_json(trained.record()))
        for key in ("holdout", "churn_params", "churn_metrics", "fits", "left_out"):
            setattr(trained, key, record[key])
        timings["train_seconds"] = time.perf_counter() - t0
        del inputs

    # 3. CLV ------------------------------------------------------------------------------
    runs: dict[str, _Run] = {}
    t0 = time.perf_counter()
    fitted = fit_clv(at_d.summary, cfg)
    holdout_metrics, holdout_gate = holdout_check(trained.holdout, cfg)
    holdout_metrics["calibration_end"] = c2.isoformat()
    holdout_metrics["training_day"] = day.isoformat()
    timings["clv_seconds"] = time.perf_counter() - t0
    runs.update(_clv_runs(fitted, holdout_metrics, holdout_gate, previous, cfg))

    # 4. churn: the week's classifier scores the customers active at d --------------------
    t0 = time.perf_counter()
    churn_run, churn_scores = _churn(at_d, fitted, trained, cfg)
    runs["churn"] = churn_run
    timings["churn_seconds"] = time.perf_counter() - t0

    # 5. gate, record, publish: each model on its own checks ------------------------------
    # CLV needs both of its models; churn is judged apart, so a failing churn model never
    # withholds a healthy CLV, and the reverse
    failures = {
        group: [
            f"{name}.{check_name}: {check['detail']}"
            for name in members
            for check_name, check in runs[name].checks.items()
            if check["passed"] is False
        ]
        for group, members in GATED.items()
    }
    passed = {group: not failed for group, failed in failures.items()}
    for group, members in GATED.items():
        for name in members:
            run = runs[name]
            run.published = passed[group] and run.status != "skipped"
            if run.status != "skipped":
                run.status = (
                    "published" if passed[group] else ("failed" if run.passed is False else "held")
                )

    clv_rows = None
    if passed["clv"] and not fitted.skipped:
        clv_rows = _clv_rows(at_d.summary, fitted, cfg, version, run_id)
    churn_rows = None
    if passed["churn"] and churn_scores is not None:
        churn_rows = churn_scores.assign(model_version=version, run_id=run_id)
    t0 = time.perf_counter()
    published = _record_and_publish(
        wh, as_of_date, run_id, version, runs, clv_rows, churn_rows, trained
    )
    timings["write_seconds"] = time.perf_counter() - t0
    timings["total_seconds"] = time.perf_counter() - started
    timings = {k: round(v, 3) for k, v in timings.items()}

    result = {
        "as_of_date": as_of_date.isoformat(),
        "run_id": run_id,
        "model_version": version,
        "passed": all(passed.values()),
        "gate": passed,
        "published": published,
        "cutoffs": {
            "training_day": day.isoformat(),
            "train": c1.isoformat(),
            "validation": c2.isoformat(),
            "trained_by": trained.run_id,
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
            "holdout": {k: v for k, v in holdout_metrics.items() if k != "fit"},
            "clv": fitted.metrics,
            "churn": {k: v for k, v in runs["churn"].metrics.items() if k != "calibration_table"},
        },
        "timings": timings,
    }
    result = json.loads(_json(result))  # plain JSON types: it is the task's XCom
    log.info(
        "models for %s: passed=%s published=%s timings=%s", as_of_date, passed, published, timings
    )
    failed = {group: items for group, items in failures.items() if items}
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


def _clv_runs(
    fitted: ClvFit,
    holdout_metrics: dict[str, Any],
    holdout_check: dict[str, Any],
    previous: Mapping[str, Any],
    cfg: Mapping[str, Any],
) -> dict[str, _Run]:
    bg, gg = fitted.bg, fitted.gg
    bg_metrics = {**_fit_summary(bg), **fitted.metrics, "holdout": holdout_metrics}
    gg_metrics = {
        **_fit_summary(gg),
        "mode": fitted.mode,
        "n_repeat_buyers": fitted.metrics["n_repeat_buyers"],
        "corr_frequency_monetary": fitted.metrics["corr_frequency_monetary"],
        "fallback": bool(fitted.gg_fallback),
    }
    if fitted.skipped:
        skipped = {"data": _check(None, fitted.skipped)}
        return {
            name: _Run(
                name,
                "skipped",
                None,
                dict(fit.params),
                metrics,
                skipped,
                f"not published: {fitted.skipped}",
                fit.seconds,
                int(fit.n),
            )
            for name, fit, metrics in (("bgnbd", bg, bg_metrics), ("gamma_gamma", gg, gg_metrics))
        }
    scores = fitted.scores
    horizon = float(cfg["clv"]["horizon_days"])
    x, tx, big_t, m = (
        fitted.summary[c].to_numpy(float) for c in ("frequency", "recency", "t", "monetary_value")
    )
    values = scores[["p_alive", "expected_purchases", "expected_avg_value", "clv"]]
    finite = bool(np.isfinite(values.to_numpy(float)).all())
    bg_checks = {
        "converged": _converged_check(bg),
        "holdout": holdout_check,
        "drift": _drift_check(
            bg,
            previous.get("bgnbd"),
            lambda params: clv_model.expected_purchases(params, horizon, x, tx, big_t),
            f"expected purchases over {horizon:g} days",
            cfg,
        ),
        "scores_finite": _check(
            finite, "every score finite" if finite else "NaN or infinite scores", finite, True
        ),
    }
    if fitted.gg_fallback:
        gg_checks = {
            "converged": _check(None, fitted.gg_fallback, False, True),
            "drift": _check(None, "fallback parameters are not compared", None, None),
        }
    else:
        gg_checks = {
            "converged": _converged_check(gg),
            "drift": _drift_check(
                gg,
                previous.get("gamma_gamma"),
                lambda params: clv_model.expected_avg_value(params, x, m),
                "expected value per purchase",
                cfg,
            ),
        }
    if fitted.gg_params:
        p, q, v = (fitted.gg_params[k] for k in ("p", "q", "v"))
        gg_metrics["population_mean_spend"] = _round(p * v / (q - 1.0), 2)
    gg_params = dict(fitted.gg_params) if fitted.gg_fallback else dict(gg.params)
    out = {}
    for name, fit, params, checks, metrics in (
        ("bgnbd", bg, dict(bg.params), bg_checks, bg_metrics),
        ("gamma_gamma", gg, gg_params, gg_checks, gg_metrics),
    ):
        note = fitted.gg_fallback if name == "gamma_gamma" else ""
        out[name] = _Run(
            model=name,
            status="pending",
            passed=_model_passed(checks),
            params=params,
            metrics=metrics,
            checks=checks,
            message=_failed_text(checks) or note or "all checks passed",
            fit_seconds=fit.seconds,
            n_customers=int(fit.n),
        )
    return out


def _failed_text(checks: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{k}: {c['detail']}" for k, c in checks.items() if c["passed"] is False)


@dataclass
class _TrainingInputs:
    """What the training day's cut-offs give: its buyers (for the penalizer), the actual
    repeat purchases of the holdout, and the churn features and labels at c2 and c1."""

    summary: pd.DataFrame
    actuals: pd.DataFrame
    at_c2: churn_inputs.CutoffData
    at_c1: churn_inputs.CutoffData
    buyers_c2: set[str]
    buyers_c1: set[str]


def _read_training(
    wh: Warehouse, conn: sa.Connection, day: dt.date, tiers: Mapping[str, int]
) -> _TrainingInputs:
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
    return _TrainingInputs(at_day.summary, actuals, at_c2, at_c1, buyers_c2, buyers_c1)


def _fit_info(fit: clv_model.FitResult) -> dict[str, Any]:
    return {
        "usable": _usable(fit),
        "converged": bool(fit.converged),
        "message": fit.message,
        "params": dict(fit.params),
    }


def train_week(
    inputs: _TrainingInputs, day: dt.date, version: str, run_id: str, cfg: Mapping[str, Any]
) -> store.Training:
    """The training day's CLV holdout and churn classifier (trained, skipped or failed),
    from what was known at its cut-offs only: the same whichever night trains it."""
    _, penalizer = _penalizer(len(inputs.summary), cfg)
    bg_c2, scores_c2, outcome = holdout(inputs.at_c2.summary, inputs.actuals, penalizer, cfg)
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
    bg_c1 = _fit_bgnbd_on(at_c1.summary, penalizer, int(cfg["clv"]["maxiter"]))
    trained.fits = {"train": _fit_info(bg_c1), "validation": _fit_info(bg_c2)}
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


def _churn(
    at_d: churn_inputs.CutoffData,
    fitted: ClvFit,
    trained: store.Training,
    cfg: Mapping[str, Any],
) -> tuple[_Run, pd.DataFrame | None]:
    """Score the customers active at d with the week's classifier, judged against tonight's
    gate thresholds on its kept validation metrics."""
    c = cfg["churn"]
    gate = cfg["gate"]
    n_scored = len(at_d.features)
    week = {
        "training_day": trained.training_day.isoformat(),
        "trained_by": trained.run_id,
        "trained_tonight": trained.trained_now,
    }
    skipped = trained.churn_reason if trained.churn_status == "skipped" else ""
    if fitted.skipped:
        skipped = f"no purchase model for the P(alive) feature: {fitted.skipped}"
    if skipped:
        reason = f"churn model skipped: {skipped}"
        if trained.churn_status != "skipped":
            log.warning(reason)
        metrics = {**trained.churn_metrics, "n_active": n_scored, **week}
        checks = {"trainable": _check(None, skipped)}
        return _Run("churn", "skipped", None, {}, metrics, checks, reason, 0.0, n_scored), None
    if trained.churn_status == "failed":
        metrics = {**trained.churn_metrics, "n_active": n_scored, **week}
        checks = {"trainable": _check(False, trained.churn_reason, False, True)}
        return _Run(
            "churn",
            "pending",
            False,
            dict(trained.churn_params),
            metrics,
            checks,
            trained.churn_reason,
            trained.fit_seconds,
            n_scored,
        ), None

    t0 = time.perf_counter()
    left_out = trained.left_out
    score_x = churn_inputs.with_purchase_model(at_d.features, fitted.scores)
    try:
        scores, info = churn_classifier.score_frame(
            trained.model, score_x.drop(columns=list(left_out)), c, reason_features=score_x
        )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        reason = f"the classifier could not score the day: {type(exc).__name__}: {exc}"
        log.error("churn: %s", reason)
        checks = {"trainable": _check(False, reason, False, True)}
        metrics = {**trained.churn_metrics, "n_active": n_scored, **week}
        return _Run(
            "churn",
            "pending",
            False,
            dict(trained.churn_params),
            metrics,
            checks,
            reason,
            trained.fit_seconds,
            n_scored,
        ), None
    m = trained.churn_metrics
    # the P(alive) feature needs finite parameters at every cut-off; a fit that stopped a
    # little early still ranks customers, and the classifier is judged on its own metrics
    fits = {**trained.fits, "scoring": _fit_info(fitted.bg)}
    usable = all(f["usable"] for f in fits.values())
    stopped = [f"{k}: {f['message']}" for k, f in fits.items() if not f["converged"]]
    checks = {
        "purchase_model_fits": _check(
            usable,
            (
                "BG/NBD parameters finite at every cut-off"
                if usable
                else "a BG/NBD fit behind the P(alive) feature has no usable parameters"
            )
            + (f" (not converged: {'; '.join(stopped)})" if stopped else ""),
            usable,
            True,
        ),
        "auc": _at_least("out-of-time AUC", m["auc"], float(gate["churn_min_auc"])),
        # the Brier score against its own no-skill value p(1 - p), p the validation churn
        # rate: an absolute bound would fail every model of a business where half churn
        "brier_skill": _at_least(
            f"Brier skill score (1 - Brier {m['brier']:.4g} / {m['brier_base_rate']:.4g}, the "
            f"Brier of always predicting the churn rate {m['churn_rate_valid']:.1%})",
            m["brier_skill"],
            float(gate["churn_min_brier_skill"]),
        ),
        "ece": _at_most("expected calibration error", m["ece"], float(gate["churn_max_ece"])),
    }
    if m["n_valid"] < int(gate["churn_ece_min_customers"]):
        checks["ece"] = _check(
            None,
            f"expected calibration error {m['ece']:.4g} on {m['n_valid']} validation customers, "
            f"fewer than gate.churn_ece_min_customers = {gate['churn_ece_min_customers']}: "
            "too noisy to judge (recorded, not checked)",
            m["ece"],
            float(gate["churn_max_ece"]),
        )
    ok = _model_passed(checks)
    params = {**trained.churn_params, "risk_bands": dict(c["risk_bands"])}
    metrics = {**m, **info, **week}
    run = _Run(
        "churn",
        "pending",
        ok,
        params,
        metrics,
        checks,
        _failed_text(checks) or "all checks passed",
        (trained.fit_seconds if trained.trained_now else 0.0) + time.perf_counter() - t0,
        n_scored,
    )
    return run, scores


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
    _, penalizer = _penalizer(len(data.summary), cfg)
    bg = _fit_bgnbd_on(data.summary, penalizer, int(cfg["clv"]["maxiter"]))
    return churn_inputs.with_purchase_model(
        data.features, purchase_scores(bg, data.summary, HOLDOUT_DAYS)
    )


def _clv_rows(
    summary: pd.DataFrame, fitted: ClvFit, cfg: Mapping[str, Any], version: str, run_id: str
) -> pd.DataFrame:
    s = fitted.scores
    return pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "frequency": summary["frequency"].to_numpy(np.int64),
            "recency": summary["recency"].to_numpy(np.int64),
            "t": summary["t"].to_numpy(np.int64),
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


# --------------------------------------------------------------------------------------
# ops.model_runs and publication
# --------------------------------------------------------------------------------------


def _json(value: Any) -> str:
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


def ensure_tables(wh: Warehouse) -> None:
    """Create ops.model_runs, marts.customer_clv and marts.customer_churn_risk if missing
    (empty), for code that reads them before the models stage has ever run."""
    with wh.begin() as conn:
        wh.ensure(conn, *tables.MODEL_TABLES)


def _record_and_publish(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    version: str,
    runs: Mapping[str, _Run],
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
                "params": _json(run.params),
                "metrics": _json(run.metrics),
                "checks": _json(run.checks),
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
            store.save(wh, conn, trained, _json(trained.record()))
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
