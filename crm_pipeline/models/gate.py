"""The models' health gate: every check of include/config/models.yaml `gate`, per model, and
the verdict per group of models published together.

Why it exists: the stage publishes a night's scores only when they pass; this says what
passing means, from the night's fits and the week's kept training figures, without reading
or writing the warehouse. Grain: one `ModelRun` per model and night (bgnbd, gamma_gamma,
churn), with its checks; one verdict per group (clv: both CLV models; churn).

A check is `{passed, value, threshold, detail}`; passed None means skipped (not enough
evidence) and never counts as a failure. CLV (BG/NBD with Gamma-Gamma) and churn are judged
apart: one failing never withholds the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from crm_pipeline.models.clv.bgnbd import expected_purchases
from crm_pipeline.models.clv.common import FitResult
from crm_pipeline.models.clv.gamma_gamma import expected_avg_value
from crm_pipeline.models.clv.score import HOLDOUT_DAYS, ClvFit, fit_summary, round_finite

#: The gate's groups: what is published together. CLV needs both of its models.
GATED = {"clv": ("bgnbd", "gamma_gamma"), "churn": ("churn",)}


@dataclass
class ModelRun:
    """One model's night as ops.model_runs records it."""

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


def check(passed: bool | None, detail: str, value: Any = None, threshold: Any = None) -> dict:
    """passed None = skipped (not enough evidence); never counts as a failure."""
    return {"passed": passed, "value": value, "threshold": threshold, "detail": detail}


def model_passed(checks: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(c["passed"] is not False for c in checks.values())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def converged_check(fit: FitResult) -> dict:
    return check(bool(fit.converged), fit.message, fit.converged, True)


def drift_check(
    fit: FitResult,
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
        return check(None, "no converged fit in the previous nights to compare with", None, limit)
    old = previous["params"]
    if not all(_finite(old.get(k)) and old[k] > 0 for k in fit.params):
        return check(False, f"previous parameters not comparable: {old}", None, limit)
    raw = ", ".join(f"{k} {fit.params[k] / old[k] - 1.0:+.1%}" for k in fit.params)
    try:
        new_pred, old_pred = predict(fit.params), predict(old)
    except ValueError as exc:
        return check(False, f"cannot predict with the previous parameters: {exc}", None, limit)
    base = float(np.abs(old_pred).sum())
    moved = float(np.abs(new_pred - old_pred).sum())
    change = moved / base if base > 0 else (0.0 if moved == 0 else math.inf)
    ok = change <= limit
    detail = (
        f"{what} for today's customers moved by {change:.1%} against the fit of "
        f"{previous['as_of_date']} ({'<=' if ok else '>'} {limit:.0%}); parameters: {raw}"
    )
    return check(ok, detail, round(change, 4) if math.isfinite(change) else None, limit)


def at_least(name: str, value: float | None, threshold: float) -> dict:
    if value is None or not math.isfinite(value):
        return check(False, f"{name} could not be computed", None, threshold)
    ok = value >= threshold
    return check(ok, f"{name} {value:.4g} {'>=' if ok else '<'} {threshold:g}", value, threshold)


def at_most(name: str, value: float | None, threshold: float) -> dict:
    if value is None or not math.isfinite(value):
        return check(False, f"{name} could not be computed", None, threshold)
    ok = value <= threshold
    return check(ok, f"{name} {value:.4g} {'<=' if ok else '>'} {threshold:g}", value, threshold)


def failed_text(checks: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{k}: {c['detail']}" for k, c in checks.items() if c["passed"] is False)


def holdout_check(outcome: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[dict, dict]:
    """(metrics, check) of a holdout outcome against tonight's gate thresholds."""
    gate = cfg["gate"]
    limit = float(gate["holdout_max_relative_error"])
    if not outcome["n_customers"]:
        return {}, check(None, "no buyers at c2: nothing to hold out", None, limit)
    minimum = float(gate["holdout_min_actual_purchases"])
    actual = float(outcome["actual"])
    if actual < minimum:
        return (
            {"actual": round_finite(actual, 1)},
            check(
                None,
                f"only {actual:.0f} actual repeat purchase days in the holdout, fewer than "
                f"gate.holdout_min_actual_purchases = {minimum:g}: too little evidence",
                None,
                limit,
            ),
        )
    if not outcome["usable"]:
        return {}, check(False, f"holdout fit failed: {outcome['message']}", None, limit)
    if outcome["predicted"] is None or actual <= 0:
        return {}, check(None, "no repeat purchase day in the holdout", None, limit)
    predicted = float(outcome["predicted"])
    # the holdout fit is judged by its predictions; whether its optimiser stopped cleanly
    # is recorded (metrics.fit) but only the published fit's convergence is a check
    error = abs(predicted / actual - 1.0)
    verdict = check(
        error <= limit,
        f"predicted {predicted:.0f} vs actual {actual:.0f} repeat purchase days in "
        f"the {HOLDOUT_DAYS} days to the training day: |error| {error:.1%} "
        f"{'<=' if error <= limit else '>'} {limit:.0%}"
        + ("" if outcome["converged"] else f" (holdout fit: {outcome['message']})"),
        round(error, 4),
        limit,
    )
    return dict(outcome["metrics"]), verdict


def clv_runs(
    fitted: ClvFit,
    holdout_metrics: dict[str, Any],
    holdout_gate: dict[str, Any],
    previous: Mapping[str, Any],
    cfg: Mapping[str, Any],
) -> dict[str, ModelRun]:
    """The runs of BG/NBD and Gamma-Gamma: convergence, tonight's holdout check
    (`holdout_gate`, from :func:`holdout_check`), drift against the previous nights' fits,
    finite scores; both 'skipped' when the fit left nothing to publish."""
    bg, gg = fitted.bg, fitted.gg
    bg_metrics = {**fit_summary(bg), **fitted.metrics, "holdout": holdout_metrics}
    gg_metrics = {
        **fit_summary(gg),
        "mode": fitted.mode,
        "n_repeat_buyers": fitted.metrics["n_repeat_buyers"],
        "corr_frequency_monetary": fitted.metrics["corr_frequency_monetary"],
        "fallback": bool(fitted.gg_fallback),
    }
    if fitted.skipped:
        skipped = {"data": check(None, fitted.skipped)}
        return {
            name: ModelRun(
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
        fitted.summary[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value")
    )
    values = scores[["p_alive", "expected_purchases", "expected_avg_value", "clv"]]
    finite = bool(np.isfinite(values.to_numpy(float)).all())
    bg_checks = {
        "converged": converged_check(bg),
        "holdout": holdout_gate,
        "drift": drift_check(
            bg,
            previous.get("bgnbd"),
            lambda params: expected_purchases(params, horizon, x, tx, big_t),
            f"expected purchases over {horizon:g} days",
            cfg,
        ),
        "scores_finite": check(
            finite, "every score finite" if finite else "NaN or infinite scores", finite, True
        ),
    }
    if fitted.gg_fallback:
        gg_checks = {
            "converged": check(None, fitted.gg_fallback, False, True),
            "drift": check(None, "fallback parameters are not compared", None, None),
        }
    else:
        gg_checks = {
            "converged": converged_check(gg),
            "drift": drift_check(
                gg,
                previous.get("gamma_gamma"),
                lambda params: expected_avg_value(params, x, m),
                "expected value per purchase",
                cfg,
            ),
        }
    if fitted.gg_params:
        p, q, v = (fitted.gg_params[k] for k in ("p", "q", "v"))
        gg_metrics["population_mean_spend"] = round_finite(p * v / (q - 1.0), 2)
    gg_params = dict(fitted.gg_params) if fitted.gg_fallback else dict(gg.params)
    out = {}
    for name, fit, params, checks, metrics in (
        ("bgnbd", bg, dict(bg.params), bg_checks, bg_metrics),
        ("gamma_gamma", gg, gg_params, gg_checks, gg_metrics),
    ):
        note = fitted.gg_fallback if name == "gamma_gamma" else ""
        out[name] = ModelRun(
            model=name,
            status="pending",
            passed=model_passed(checks),
            params=params,
            metrics=metrics,
            checks=checks,
            message=failed_text(checks) or note or "all checks passed",
            fit_seconds=fit.seconds,
            n_customers=int(fit.n),
        )
    return out


def churn_checks(
    metrics: Mapping[str, Any], fits: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]
) -> dict[str, dict]:
    """The churn model's checks: the week's kept validation metrics against tonight's
    thresholds, and the BG/NBD fits behind its P(alive) feature (`fits`: train, validation,
    scoring, each as crm_pipeline.models.training.fit_info gives it)."""
    m = metrics
    gate = cfg["gate"]
    # the P(alive) feature needs finite parameters at every cut-off; a fit that stopped a
    # little early still ranks customers, and the classifier is judged on its own metrics
    usable = all(f["usable"] for f in fits.values())
    stopped = [f"{k}: {f['message']}" for k, f in fits.items() if not f["converged"]]
    checks = {
        "purchase_model_fits": check(
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
        "auc": at_least("out-of-time AUC", m["auc"], float(gate["churn_min_auc"])),
        # the Brier score against its own no-skill value p(1 - p), p the validation churn
        # rate: an absolute bound would fail every model of a business where half churn
        "brier_skill": at_least(
            f"Brier skill score (1 - Brier {m['brier']:.4g} / {m['brier_base_rate']:.4g}, the "
            f"Brier of always predicting the churn rate {m['churn_rate_valid']:.1%})",
            m["brier_skill"],
            float(gate["churn_min_brier_skill"]),
        ),
        "ece": at_most("expected calibration error", m["ece"], float(gate["churn_max_ece"])),
    }
    if m["n_valid"] < int(gate["churn_ece_min_customers"]):
        checks["ece"] = check(
            None,
            f"expected calibration error {m['ece']:.4g} on {m['n_valid']} validation customers, "
            f"fewer than gate.churn_ece_min_customers = {gate['churn_ece_min_customers']}: "
            "too noisy to judge (recorded, not checked)",
            m["ece"],
            float(gate["churn_max_ece"]),
        )
    return checks


def judge(runs: Mapping[str, ModelRun]) -> tuple[dict[str, list[str]], dict[str, bool]]:
    """Each group of GATED on its own checks: (failures per group, passed per group), and
    every run's status and published flag set accordingly ('published'; 'failed' for a
    model that failed a check; 'held' for one that passed but whose group did not;
    'skipped' stays)."""
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
    return failures, passed
