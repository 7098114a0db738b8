"""Customer lifetime value: BG/NBD repeat purchases times Gamma-Gamma spend per purchase.

Grain
-----
One row per customer, reduced to the sufficient statistics of the two models (build them
with :func:`summary_from_transactions`):

* ``frequency`` *x*: repeat purchase days (purchases on the same day are merged into one and
  the first purchase day is not counted);
* ``recency`` *t_x*: time from the first to the last purchase day (0 when x = 0);
* ``T``: time from the first purchase day to the as-of date;
* ``monetary_value``: mean net value of the repeat purchase days (0 when x = 0).

Times are in whatever unit the caller passes: days in production, weeks in the CDNOW tests.
The fitted ``alpha`` and every horizon are in that same unit; only :func:`clv` needs a
calendar (``month_length`` time units per discounting month, 30 for days).

Models
------
* BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a
  customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat
  purchase they drop out with probability p ~ Beta(a, b).
* Gamma-Gamma (Fader & Hardie 2013, "The Gamma-Gamma model of monetary value"): the value of
  each purchase is Gamma(p, nu) with nu ~ Gamma(q, v) across customers, independent of the
  purchase process.

Both are fitted by maximum likelihood with L-BFGS-B on log-parameters with analytic gradients,
on the distinct rows of the sufficient statistics weighted by their counts (many customers
share a row, so this is both exact and much faster). Predictions use closed forms; the one
special function, the Gauss hypergeometric 2F1 in E[Y(t)], is evaluated on Euler-transformed
arguments that stay bounded for heavy buyers, with a log-space series and then a quadrature
fallback wherever scipy's ``hyp2f1`` fails. docs/models.md has the formulas and the reasons
this is not a library.

Modules
-------
* ``common``: FitResult, parameter names and handling, input checks, distinct rows;
* ``fitting``: the maximum-likelihood driver both models share (L-BFGS-B, standard errors);
* ``hyp2f1``: the Gauss hypergeometric function in log space;
* ``bgnbd``: BG/NBD likelihood, fit, expected purchases, P(alive);
* ``gamma_gamma``: Gamma-Gamma likelihood, fit, expected value per purchase;
* ``value``: discounting and CLV;
* ``data``: the per-customer summary from transactions;
* ``holdout``: holdout actuals, predicted-vs-actual by decile, and the training day's holdout
  fit (the evidence of the nightly gate);
* ``score``: the one CLV pipeline: both fits on a summary frame (small-data mode, margins)
  and every score, as the nightly publishes them.

Every public name is re-exported here, so ``from crm_pipeline.models.clv import X`` and
``clv.X`` work as they did when this package was one module.
"""

from crm_pipeline.models.clv.bgnbd import (
    _bgnbd_terms,  # noqa: F401 (tests reach it)
    _expected_given_alive,  # noqa: F401 (tests reach it)
    _expected_given_alive_quad,  # noqa: F401 (tests reach it)
    bgnbd_loglik,
    expected_purchases,
    expected_purchases_new_customer,
    fit_bgnbd,
    p_alive,
)
from crm_pipeline.models.clv.common import (
    BGNBD_PARAM_NAMES,
    GAMMA_GAMMA_PARAM_NAMES,
    FitResult,
)
from crm_pipeline.models.clv.data import SUMMARY_COLUMNS, summary_from_transactions
from crm_pipeline.models.clv.gamma_gamma import (
    _gamma_gamma_terms,  # noqa: F401 (tests reach it)
    expected_avg_value,
    fit_gamma_gamma,
    gamma_gamma_loglik,
)
from crm_pipeline.models.clv.holdout import (
    fit_holdout,
    holdout_comparison,
    holdout_repeat_purchases,
)
from crm_pipeline.models.clv.hyp2f1 import (
    _log_hyp2f1,  # noqa: F401 (tests reach it)
    _log_hyp2f1_series,  # noqa: F401 (tests reach it)
)
from crm_pipeline.models.clv.score import (
    HOLDOUT_DAYS,
    SCORE_COLUMNS,
    ClvFit,
    fallback_gamma_gamma,
    fit_and_score,
    fit_bgnbd_on,
    fit_clv,
    fit_gamma_gamma_on,
    margin_ratios,
    purchase_scores,
)
from crm_pipeline.models.clv.value import clv, monthly_discount_rate

__all__ = [
    "BGNBD_PARAM_NAMES",
    "GAMMA_GAMMA_PARAM_NAMES",
    "HOLDOUT_DAYS",
    "SCORE_COLUMNS",
    "SUMMARY_COLUMNS",
    "ClvFit",
    "FitResult",
    "bgnbd_loglik",
    "clv",
    "expected_avg_value",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fallback_gamma_gamma",
    "fit_and_score",
    "fit_bgnbd",
    "fit_bgnbd_on",
    "fit_clv",
    "fit_gamma_gamma",
    "fit_gamma_gamma_on",
    "fit_holdout",
    "gamma_gamma_loglik",
    "holdout_comparison",
    "holdout_repeat_purchases",
    "margin_ratios",
    "monthly_discount_rate",
    "p_alive",
    "purchase_scores",
    "summary_from_transactions",
]
