"""Customer lifetime value: BG/NBD repeat purchases times Gamma-Gamma spend per purchase.

Moved from the single module ``crm_pipeline/models/clv.py``; every name it exported is
re-exported here, so ``from crm_pipeline.models.clv import X`` and ``clv.X`` keep working.
"""

from crm_pipeline.models.clv.bgnbd import (
    BGNBD_PARAM_NAMES,
    GAMMA_GAMMA_PARAM_NAMES,
    SCORE_COLUMNS,
    SUMMARY_COLUMNS,
    FitResult,
    _bgnbd_terms,  # noqa: F401 (tests reach it)
    _expected_given_alive,  # noqa: F401 (tests reach it)
    _expected_given_alive_quad,  # noqa: F401 (tests reach it)
    _gamma_gamma_terms,  # noqa: F401 (tests reach it)
    _log_hyp2f1,  # noqa: F401 (tests reach it)
    _log_hyp2f1_series,  # noqa: F401 (tests reach it)
    bgnbd_loglik,
    clv,
    expected_avg_value,
    expected_purchases,
    expected_purchases_new_customer,
    fit_and_score,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_loglik,
    holdout_comparison,
    holdout_repeat_purchases,
    monthly_discount_rate,
    p_alive,
    summary_from_transactions,
)

__all__ = [
    "BGNBD_PARAM_NAMES",
    "GAMMA_GAMMA_PARAM_NAMES",
    "SCORE_COLUMNS",
    "SUMMARY_COLUMNS",
    "FitResult",
    "bgnbd_loglik",
    "clv",
    "expected_avg_value",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fit_and_score",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_loglik",
    "holdout_comparison",
    "holdout_repeat_purchases",
    "monthly_discount_rate",
    "p_alive",
    "summary_from_transactions",
]
