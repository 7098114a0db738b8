"""CLV models: published CDNOW results, lifetimes cross-checks, recovery, numerical edges.

Reference numbers come from three independent places, each named where it is used:
* the papers (Fader, Hardie & Lee 2005 for BG/NBD; Fader & Hardie 2013 for Gamma-Gamma);
* lifetimes 0.11.3 run once in a throwaway venv (python3.11 -m venv /tmp/lt;
  /tmp/lt/bin/pip install lifetimes==0.11.3 "numpy<2" "pandas<2" "scipy<1.12"), never
  imported here;
* mpmath 1.4.1 at 40 significant digits, evaluating FHL (2005) eq. 10 in its original,
  untransformed form.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from crm_pipeline.models import clv as M

DATA = Path(__file__).resolve().parent.parent / "data" / "cdnow"
CALIBRATION_END = "1997-09-30"  # 39 weeks after 1997-01-01, as in both papers
HOLDOUT_END = "1998-06-30"  # weeks 40-78

# FHL (2005) parameters as published (rounded), used wherever a fixed model is needed.
FHL = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
FH_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    """Published 39-week calibration summary (weeks): ID, x, t_x, T, zbar."""
    return pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def cdnow_transactions() -> pd.DataFrame:
    tx = pd.read_csv(
        DATA / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "value"],
        dtype={"date": str},
    )
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    return tx


def simulate(n, r, alpha, a, b, p, q, v, t_min, t_max, seed):
    """Customers drawn from BG/NBD x Gamma-Gamma with known parameters.

    lambda ~ Gamma(r, rate alpha), dropout p ~ Beta(a, b); purchases after the first one
    (at time 0) arrive as a Poisson process until T, and after each repeat purchase the
    customer drops out with probability p. Spend: nu ~ Gamma(q, rate v) per customer, each
    purchase Gamma(p, rate nu), so the mean of x purchases is Gamma(p x, rate x nu).
    T is uniform on whole days in [t_min, t_max); t_x is rounded to whole days as real data is.
    """
    rng = np.random.default_rng(seed)
    T = np.floor(rng.uniform(t_min, t_max, n))
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    x = np.zeros(n)
    tx = np.zeros(n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        now[idx] += rng.exponential(1.0 / lam[idx])
        in_window = now[idx] <= T[idx]
        alive[idx[~in_window]] = False
        buyers = idx[in_window]
        x[buyers] += 1
        tx[buyers] = now[buyers]
        alive[buyers[rng.random(buyers.size) < drop[buyers]]] = False
    nu = rng.gamma(q, 1.0 / v, n)
    shape = np.maximum(p * x, 1e-12)
    m = np.where(x > 0, rng.gamma(shape, 1.0 / np.maximum(x * nu, 1e-300)), 0.0)
    return x, np.minimum(np.round(tx), T), T, m


# --------------------------------------------------------------------------------------
# published results
# --------------------------------------------------------------------------------------


def test_cdnow_bgnbd_reproduces_fader_hardie_lee_2005(cdnow_summary):
    fit = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])
    assert fit.converged, fit.message
    assert fit.n == 2357
    for name, published in FHL.items():
        assert fit.params[name] == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(-9582.4, rel=0.01)
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)  # in fact to the digit


def test_cdnow_gamma_gamma_reproduces_fader_hardie_2013(cdnow_summary):
    fit = M.fit_gamma_gamma(cdnow_summary["x"], cdnow_summary["zbar"])
    assert fit.converged, fit.message
    assert fit.n == 946  # the note's repeat buyers; the other 1,411 are dropped
    for name, published in FH_GG.items():
        assert fit.params[name] == pytest.approx(published, rel=0.01), name


def test_summary_from_cdnow_transactions_matches_the_published_summary(
    cdnow_transactions, cdnow_summary
):
    summary = M.summary_from_transactions(
        cdnow_transactions, "customer_id", "date", "value", CALIBRATION_END, days_per_unit=7
    )
    pub = cdnow_summary.set_index("ID").loc[summary["customer_id"]]
    assert len(summary) == 2357
    np.testing.assert_array_equal(summary["frequency"].to_numpy(), pub["x"].to_numpy())
    # the published file is rounded to 2 decimals
    np.testing.assert_allclose(summary["recency"], pub["t_x"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(summary["T"], pub["T"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(summary["monetary_value"], pub["zbar"], atol=0.005 + 1e-9)
    fit = M.fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    for name, published in FHL.items():
        assert fit.params[name] == pytest.approx(published, rel=0.01), name


def test_time_unit_is_the_unit_of_the_inputs(cdnow_summary):
    weeks = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])
    days = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"] * 7, cdnow_summary["T"] * 7)
    assert days.params["alpha"] == pytest.approx(7 * weeks.params["alpha"], rel=1e-5)
    for name in ("r", "a", "b"):
        assert days.params[name] == pytest.approx(weeks.params[name], rel=1e-5)


# --------------------------------------------------------------------------------------
# predictions against lifetimes 0.11.3 (fixed FHL / FH parameters, inputs in weeks)
# --------------------------------------------------------------------------------------

# x, t_x, T, mean repeat value: CDNOW customers 1 and 2 and a zero-repeat one, plus
# synthetic rows covering recent and lapsed repeat buyers and heavy buyers.
LT_ROWS = np.array(
    [
        (0, 0, 38.86, 0),
        (2, 30.43, 38.86, 22.35),
        (1, 1.71, 38.86, 11.77),
        (7, 29.43, 31.0, 73.74),
        (29, 37.0, 38.0, 35.0),
        (5, 3.0, 38.0, 20.0),
        (0, 0, 27.0, 0),
        (1, 26.0, 27.0, 100.0),
        (60, 70.0, 78.0, 15.0),
        (200, 150.0, 156.0, 40.0),
    ]
)
# Printed by /tmp/lt/bin/python with lifetimes 0.11.3, BetaGeoFitter.params_ = FHL and
# GammaGammaFitter.params_ = FH_GG set by hand:
# conditional_probability_alive, conditional_expected_number_of_purchases_up_to_time(39 and
# 104), expected_number_of_purchases_up_to_time([1, 10, 39, 78, 520]),
# conditional_expected_average_profit, and customer_lifetime_value(bg, ..., time=12,
# discount_rate=0.01, freq="W") (12 months of 4.345 weeks, 1% a month).
LT_P_ALIVE = [1.0, 0.726578570080673, 0.2121009853773791, 0.8844044304495576, 0.9502401333648617, 0.0008648614690386015, 1.0, 0.7461085037468709, 0.14164163385080952, 0.10948206772324674]  # fmt: skip
LT_EY39 = [0.19509805201125396, 1.2260281747671318, 0.2031869870797511, 5.4030056206705135, 19.662095274406553, 0.0033477276887062773, 0.2593953814922083, 0.9393220227217268, 3.457187603726933, 4.8839409592371155]  # fmt: skip
LT_EY104 = [0.4538042350773342, 2.669257951006139, 0.4527743424683992, 11.007801747663072, 40.12669226192483, 0.007049599476089435, 0.5860076288835269, 2.018711713228112, 7.649664942455695, 11.562298276854579]  # fmt: skip
LT_EX = [0.05326789117165627, 0.4324133622344203, 1.1967231933207985, 1.8605190579427455, 4.974617861849564]  # fmt: skip
LT_VALUE = [35.21897810218978, 24.663713910761157, 18.91685205784205, 71.46967089696707, 35.00326104679603, 21.22683142100618, 35.21897810218978, 80.25583982202447, 15.14666172499603, 39.98954292191517]  # fmt: skip
LT_CLV = [8.369004358920185, 36.28921112559936, 4.637294659747194, 456.0051319173526, 813.1610406147402, 0.08461198357019464, 11.049842515466164, 90.1537091688516, 63.11241530728293, 239.05148496936062]  # fmt: skip


def test_predictions_match_lifetimes():
    x, tx, T, m = LT_ROWS.T
    np.testing.assert_allclose(M.p_alive(FHL, x, tx, T), LT_P_ALIVE, rtol=1e-12)
    np.testing.assert_allclose(M.expected_purchases(FHL, 39, x, tx, T), LT_EY39, rtol=1e-9)
    np.testing.assert_allclose(M.expected_purchases(FHL, 104, x, tx, T), LT_EY104, rtol=1e-9)
    np.testing.assert_allclose(
        M.expected_purchases_new_customer(FHL, [1, 10, 39, 78, 520]), LT_EX, rtol=1e-9
    )
    np.testing.assert_allclose(M.expected_avg_value(FH_GG, x, m), LT_VALUE, rtol=1e-12)
    # lifetimes discounts month i by 1.01**i over 12 months of 4.345 weeks: the same formula
    # as ours with that month length and the annual rate that compounds to 1% a month.
    ours = M.clv(
        FHL,
        FH_GG,
        x,
        tx,
        T,
        m,
        margin_ratio=1.0,
        horizon_days=12 * 4.345,
        annual_discount_rate=1.01**12 - 1,
        month_length=4.345,
    )
    np.testing.assert_allclose(ours, LT_CLV, rtol=1e-9)


def test_fhl_worked_example():
    # FHL (2005): a customer with x = 2, t_x = 30.43, T = 38.86 is expected to make 1.226
    # purchases in the next 39 weeks.
    assert float(M.expected_purchases(FHL, 39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=5e-4)


# --------------------------------------------------------------------------------------
# the hypergeometric term, path by path, against mpmath
# --------------------------------------------------------------------------------------


def test_log_hyp2f1_series_matches_mpmath():
    # log 2F1(A, B; c; z) from mpmath.log(mpmath.hyp2f1(...)) at 40 digits. The first case
    # is one where scipy.special.hyp2f1 returns NaN (BG/NBD r=0.5, a=1.5, b=3, x=2000).
    cases = [
        ((3.0, 0.5, 2003.5, 0.924), 0.00069250803810368840674),
        ((2.0, -0.2, 1e5, 0.99), -3.960054886454348124e-6),
        ((-2.3, -0.8, 4.7, 0.5), 0.17691784031613632158),
        ((1.976, -0.207, 2.219, 0.98), -0.54336281448264839831),
    ]
    for (A, B, c, z), expected in cases:
        got = M._log_hyp2f1_series(A, B, np.array([c]), np.array([z]))[0]
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-15), (A, B, c, z)
    # scipy fails on the first case; the public wrapper must not
    assert math.isnan(special.hyp2f1(3.0, 0.5, 2003.5, 0.924))
    got = M._log_hyp2f1(3.0, 0.5, np.array([2003.5]), np.array([0.924]))[0]
    assert got == pytest.approx(cases[0][1], rel=1e-10)


# (r, alpha, a, b, t, x, T) -> E[Y(t) | alive] = FHL eq. 10 numerator, mpmath at 40 digits
MPMATH_GIVEN_ALIVE = [
    ((2.0, 100.0, 0.2, 0.5, 365.0, 0.0, 0.0), 4.4236488509160610084),
    ((0.243, 4.414, 0.793, 2.426, 39.0, 2.0, 38.86), 1.6873993058053130407),
    ((0.5, 30.0, 1.5, 3.0, 1e5, 2000.0, 0.0), 3937.5551162691723516),
    ((0.2, 0.5, 0.3, 0.05, 1825.0, 0.0, 0.0), 14.26545974899205038),
]


@pytest.mark.parametrize(("args", "expected"), MPMATH_GIVEN_ALIVE)
def test_quadrature_fallback_and_closed_form_match_mpmath(args, expected):
    r, alpha, a, b, t, x, T = args
    arrays = (np.array([t]), np.array([x]), np.array([T]))
    quad = M._expected_given_alive_quad(r, alpha, a, b, *arrays)[0]
    closed = M._expected_given_alive(r, alpha, a, b, *arrays)[0]
    assert quad == pytest.approx(expected, rel=1e-10)
    assert closed == pytest.approx(expected, rel=1e-10)


def test_heavy_buyers_match_mpmath():
    # (params, (x, t_x, T, t)) -> E[Y(t) | x, t_x, T] and P(alive), mpmath at 40 digits.
    day = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 4.0}
    cases = [
        (day, (2000, 1800, 1825, 1825), 5.9021977009799106748e-6, 4.1756429612710759368e-9),
        (day, (2000, 1825, 1825, 365), 360.71964947714911034, 0.99955087579220519985),
        (FHL, (2000, 259, 260, 260), 829.03010569719493402, 0.56325702809205449572),
    ]
    for params, (x, tx, T, t), expected, alive in cases:
        assert float(M.expected_purchases(params, t, x, tx, T)) == pytest.approx(expected, rel=1e-9)
        assert float(M.p_alive(params, x, tx, T)) == pytest.approx(alive, rel=1e-12)


def test_a_near_one_is_continuous():
    base = {"r": 0.3, "alpha": 200.0, "b": 0.3}
    x, tx, T = np.array([0.0, 3.0, 50.0]), np.array([0.0, 100.0, 300.0]), np.full(3, 365.0)
    values = [
        M.expected_purchases({**base, "a": a}, 365, x, tx, T)
        for a in (1 - 1e-3, 1 - 1e-7, 1.0, 1 + 1e-7, 1 + 1e-3)
    ]
    assert all(np.all(np.isfinite(v)) for v in values)
    np.testing.assert_allclose(values[2], values[1], rtol=1e-6)
    np.testing.assert_allclose(values[2], values[3], rtol=1e-6)
    np.testing.assert_allclose(values[2], values[0], rtol=1e-2)


# --------------------------------------------------------------------------------------
# edge cases
# --------------------------------------------------------------------------------------

PARAM_GRID = [
    FHL,
    {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 4.0},
    {"r": 0.5, "alpha": 30.0, "a": 1.5, "b": 3.0},
    {"r": 2.0, "alpha": 100.0, "a": 0.2, "b": 0.5},
    {"r": 0.05, "alpha": 1.0, "a": 5.0, "b": 50.0},
    {"r": 10.0, "alpha": 0.01, "a": 0.9, "b": 1000.0},
    {"r": 0.3, "alpha": 200.0, "a": 1.0, "b": 0.3},
    {"r": 3.0, "alpha": 50.0, "a": 40.0, "b": 0.2},
    {"r": 0.2, "alpha": 0.5, "a": 0.3, "b": 0.05},
]


@pytest.mark.parametrize("params", PARAM_GRID, ids=lambda p: "-".join(f"{v:g}" for v in p.values()))
def test_no_nan_or_inf_on_extreme_inputs(params):
    xs, Ts, fracs, ts = [0, 1, 10, 2000, 1e5], [0, 1, 365, 36500], [0, 0.5, 1], [1, 365, 1825, 1e6]
    grid = np.array(
        [(x, f * T if x > 0 else 0.0, T, t) for x in xs for T in Ts for f in fracs for t in ts]
    )
    x, tx, T, t = grid.T
    alive = M.p_alive(params, x, tx, T)
    e = M.expected_purchases(params, t, x, tx, T)
    assert np.all(np.isfinite(alive)) and np.all((alive >= 0) & (alive <= 1))
    assert np.all(alive[x == 0] == 1.0)  # BG/NBD: no dropout before the first repeat purchase
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    upper = t * (params["r"] + x) / (params["alpha"] + T)  # posterior mean rate, no dropout
    assert np.all(e <= upper * (1 + 1e-9))
    assert np.all(e[alive > 1e-6] > 0)
    # more time, more purchases
    e_longer = M.expected_purchases(params, t * 2, x, tx, T)
    assert np.all(e_longer >= e * (1 - 1e-9))
    values = M.clv(params, FH_GG, x, tx, T, np.full(x.size, 20.0), horizon_days=1825)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)


def test_heavy_buyers_long_horizon_finite_and_positive():
    day = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 4.0}
    x = np.array([500.0, 1000.0, 2000.0, 5000.0])
    T = np.full(4, 1825.0)
    tx = T - 1
    for horizon in (30, 365, 1825):
        e = M.expected_purchases(day, horizon, x, tx, T)
        assert np.all(np.isfinite(e)) and np.all(e > 0)
        # recent heavy buyers are almost surely alive and keep their posterior rate
        rate = (day["r"] + x) / (day["alpha"] + T)
        assert np.all(e < rate * horizon) and np.all(e > 0.5 * rate * horizon)
    assert np.all(np.diff(M.expected_purchases(day, 1825, x, tx, T)) > 0)


def test_one_time_buyers():
    x, tx = np.zeros(4), np.zeros(4)
    T = np.array([0.0, 10.0, 100.0, 1000.0])
    np.testing.assert_array_equal(M.p_alive(FHL, x, tx, T), 1.0)
    e = M.expected_purchases(FHL, 39, x, tx, T)
    assert np.all(np.isfinite(e)) and np.all(e > 0)
    assert np.all(np.diff(e) < 0)  # the longer the silence, the lower the expected rate
    # a customer first seen today is a new customer: E[Y(t) | 0, 0, 0] = E[X(t)]
    assert e[0] == pytest.approx(float(M.expected_purchases_new_customer(FHL, 39)), rel=1e-12)
    # and their value falls back to the population mean p v / (q - 1)
    pop = FH_GG["p"] * FH_GG["v"] / (FH_GG["q"] - 1)
    np.testing.assert_allclose(M.expected_avg_value(FH_GG, x, 0.0), pop)


def test_zero_horizon_and_invalid_inputs():
    assert float(M.expected_purchases(FHL, 0, 3, 10, 20)) == 0.0
    with pytest.raises(ValueError, match="recency"):
        M.p_alive(FHL, 2, 30, 20)
    with pytest.raises(ValueError, match="NaN"):
        M.expected_purchases(FHL, 10, np.nan, 0, 1)
    with pytest.raises(ValueError, match="t must be"):
        M.expected_purchases(FHL, -1, 1, 0, 1)
    with pytest.raises(ValueError, match="positive"):
        M.p_alive({**FHL, "a": -1}, 1, 0, 1)
    with pytest.raises(ValueError, match="q <= 1"):
        M.expected_avg_value({"p": 1, "q": 0.9, "v": 1}, 1, 1)


# --------------------------------------------------------------------------------------
# likelihood, weighting, gradients
# --------------------------------------------------------------------------------------


def test_weighted_fit_on_distinct_tuples_equals_unweighted(cdnow_summary):
    x, tx, T = (cdnow_summary[c].to_numpy() for c in ("x", "t_x", "T"))
    rows = pd.DataFrame({"x": x, "tx": tx, "T": T})
    distinct = rows.value_counts().reset_index(name="n")
    assert len(distinct) < len(rows) / 2
    # the likelihood itself, at fixed parameters
    assert M.bgnbd_loglik(FHL, distinct["x"], distinct["tx"], distinct["T"], distinct["n"]) == (
        pytest.approx(M.bgnbd_loglik(FHL, x, tx, T), rel=1e-12)
    )
    raw = M.fit_bgnbd(x, tx, T)
    weighted = M.fit_bgnbd(distinct["x"], distinct["tx"], distinct["T"], weights=distinct["n"])
    assert weighted.n == raw.n == 2357 and weighted.n_distinct == raw.n_distinct
    for name in M.BGNBD_PARAM_NAMES:
        assert weighted.params[name] == pytest.approx(raw.params[name], rel=1e-8)
    assert weighted.log_likelihood == pytest.approx(raw.log_likelihood, rel=1e-12)

    buyers = cdnow_summary[cdnow_summary["x"] > 0]
    gg_rows = buyers[["x", "zbar"]].value_counts().reset_index(name="n")
    gg_raw = M.fit_gamma_gamma(buyers["x"], buyers["zbar"])
    gg_w = M.fit_gamma_gamma(gg_rows["x"], gg_rows["zbar"], weights=gg_rows["n"])
    for name in M.GAMMA_GAMMA_PARAM_NAMES:
        assert gg_w.params[name] == pytest.approx(gg_raw.params[name], rel=1e-8)


def test_fit_on_two_threads_equals_the_fit_on_one(cdnow_summary, monkeypatch):
    """Large fits sum the likelihood of two halves of the rows on two threads: the halves
    must add up to the whole (same parameters, log-likelihood and standard errors)."""
    x, tx, T, m = (cdnow_summary[c].to_numpy() for c in ("x", "t_x", "T", "zbar"))
    buyers = x > 0
    one = (M.fit_bgnbd(x, tx, T), M.fit_gamma_gamma(x[buyers], m[buyers]))
    calls: list[int] = []
    real = M._bgnbd_terms

    def counted(theta, xs, *args):
        calls.append(xs.size)
        return real(theta, xs, *args)

    monkeypatch.setattr(M.fitting, "_SHARD_MIN_ROWS", 100)
    monkeypatch.setattr(M.bgnbd, "_bgnbd_terms", counted)
    two = (M.fit_bgnbd(x, tx, T), M.fit_gamma_gamma(x[buyers], m[buyers]))
    assert set(calls) == {one[0].n_distinct // 2, one[0].n_distinct - one[0].n_distinct // 2}
    for a, b in zip(one, two, strict=True):
        assert a.converged and b.converged
        assert b.log_likelihood == pytest.approx(a.log_likelihood, rel=1e-12)
        for name, value in a.params.items():
            assert b.params[name] == pytest.approx(value, rel=1e-6), name
            assert b.std_errors[name] == pytest.approx(a.std_errors[name], rel=1e-4), name


def test_analytic_gradients_match_finite_differences(cdnow_summary):
    x, tx, T, m = (cdnow_summary[c].to_numpy() for c in ("x", "t_x", "T", "zbar"))
    buyers = x > 0
    cases = [
        (lambda th: M._bgnbd_terms(th, x, tx, T), np.log([0.3, 5.0, 0.7, 2.0])),
        (lambda th: M._gamma_gamma_terms(th, x[buyers], m[buyers]), np.log([5.0, 3.0, 12.0])),
    ]
    for terms, theta in cases:
        _, grad = terms(theta)
        analytic = grad.sum(axis=1)
        numeric = []
        for i in range(theta.size):
            d = np.zeros(theta.size)
            d[i] = 1e-6
            numeric.append((terms(theta + d)[0].sum() - terms(theta - d)[0].sum()) / 2e-6)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


# --------------------------------------------------------------------------------------
# parameter recovery on simulated customers
# --------------------------------------------------------------------------------------


def test_parameter_recovery_from_simulation():
    truth = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 4.0}  # days: one purchase per ~50 days
    gg_truth = {"p": 6.0, "q": 4.0, "v": 15.0}
    x, tx, T, m = simulate(20_000, **truth, **gg_truth, t_min=180, t_max=730, seed=0)
    bg = M.fit_bgnbd(x, tx, T)
    gg = M.fit_gamma_gamma(x, m)
    assert bg.converged and gg.converged, (bg.message, gg.message)
    # 15% is about 3 standard errors for the least precise parameter (b: SE ~5%); check the
    # z-scores too, with the fit's own standard errors.
    for fit, true in ((bg, truth), (gg, gg_truth)):
        for name, value in true.items():
            assert fit.params[name] == pytest.approx(value, rel=0.15), name
            z = (fit.params[name] - value) / fit.std_errors[name]
            assert abs(z) < 4, (name, z)
    # and the fitted model predicts the next year like the true one does
    e_fit = M.expected_purchases(bg, 365, x, tx, T).sum()
    e_true = M.expected_purchases(truth, 365, x, tx, T).sum()
    assert e_fit == pytest.approx(e_true, rel=0.03)


# --------------------------------------------------------------------------------------
# broken fits report, never raise
# --------------------------------------------------------------------------------------


def test_fit_without_repeat_purchases_reports_not_converged():
    fit = M.fit_bgnbd(np.zeros(500), np.zeros(500), np.linspace(1, 300, 500))
    assert fit.converged is False
    assert "not identifiable" in fit.message
    assert all(math.isfinite(v) and v > 0 for v in fit.params.values())
    gg = M.fit_gamma_gamma(np.zeros(500), np.zeros(500))
    assert gg.converged is False and gg.n == 0 and "no repeat buyers" in gg.message
    assert all(math.isnan(v) for v in gg.params.values())


def test_fit_stopped_after_one_iteration_reports_not_converged(cdnow_summary):
    fit = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"], maxiter=1)
    assert fit.converged is False and fit.iterations <= 1
    assert "ITERATIONS" in fit.message.upper()
    gg = M.fit_gamma_gamma(cdnow_summary["x"], cdnow_summary["zbar"], maxiter=1)
    assert gg.converged is False


def test_gamma_gamma_with_q_on_its_bound_reports_not_converged():
    # Spend so heavy-tailed (q < 1) that the population mean p v / (q - 1) does not exist:
    # q stops at its lower bound just above 1 and the fit says so.
    rng = np.random.default_rng(1)
    x = rng.integers(1, 5, 3000).astype(float)
    m = rng.gamma(6.0 * x, 1.0 / (x * rng.gamma(0.6, 1.0 / 15.0, x.size)))
    fit = M.fit_gamma_gamma(x, m)
    assert fit.converged is False
    assert "['q'] ended on the optimiser bound" in fit.message
    assert fit.params["q"] > 1
    assert all(math.isnan(v) for v in fit.std_errors.values())


def test_empty_input_reports_not_converged():
    fit = M.fit_bgnbd([], [], [])
    assert fit.converged is False and fit.n == 0


def test_penalizer_shrinks_towards_zero(cdnow_summary):
    free = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])
    pen = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"], penalizer=0.1)
    assert pen.converged and pen.penalizer == 0.1
    assert pen.log_likelihood < free.log_likelihood
    assert pen.params["b"] < free.params["b"]


def test_fit_result_to_dict_is_strict_json(cdnow_summary):
    fit = M.fit_bgnbd(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])
    payload = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert payload["model"] == "bgnbd" and payload["converged"] is True
    assert set(payload["params"]) == set(M.BGNBD_PARAM_NAMES) == set(payload["std_errors"])
    empty = M.fit_gamma_gamma([0], [0]).to_dict()
    json.dumps(empty, allow_nan=False)
    assert empty["params"]["p"] is None


# --------------------------------------------------------------------------------------
# CLV formula
# --------------------------------------------------------------------------------------


def test_clv_formula():
    day = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 4.0}
    x = np.array([0.0, 1.0, 5.0, 20.0])
    tx = np.array([0.0, 30.0, 200.0, 380.0])
    T = np.full(4, 400.0)
    m = np.array([0.0, 50.0, 30.0, 80.0])
    value = M.expected_avg_value(FH_GG, x, m)
    # undiscounted: the monthly pieces add up to E[Y(365)] (12 months + a 5-day stub)
    flat = M.clv(day, FH_GG, x, tx, T, m, 1.0, 365, annual_discount_rate=0.0)
    np.testing.assert_allclose(flat, M.expected_purchases(day, 365, x, tx, T) * value, rtol=1e-12)
    # discounted by hand: month k covers (30(k-1), min(30k, 365)], discounted (1+d)^k
    d = 1.10 ** (1 / 12) - 1
    ends = np.minimum(30 * np.arange(1, 14), 365)
    cum = np.array([M.expected_purchases(day, e, x, tx, T) for e in ends])
    monthly = np.diff(cum, axis=0, prepend=0.0)
    by_hand = (monthly / (1 + d) ** np.arange(1, 14)[:, None]).sum(axis=0) * value * 0.3
    np.testing.assert_allclose(M.clv(day, FH_GG, x, tx, T, m, 0.3), by_hand, rtol=1e-12)
    # per-customer margins
    margins = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(
        M.clv(day, FH_GG, x, tx, T, m, margins),
        M.clv(day, FH_GG, x, tx, T, m, 1.0) * margins,
        rtol=1e-12,
    )
    assert M.monthly_discount_rate(0.10) == pytest.approx(0.007974140428903741, rel=1e-12)


# --------------------------------------------------------------------------------------
# data preparation and holdout helpers
# --------------------------------------------------------------------------------------


def test_summary_from_transactions_small_frame():
    tx = pd.DataFrame(
        {
            "cust": ["a", "a", "a", "a", "b", "c", "c"],
            "ts": [
                "2024-01-01 09:00",
                "2024-01-01 17:30",  # same day: merged with the first purchase
                "2024-01-11 12:00",
                "2024-01-11 13:00",  # same day: merged, value 30 + 10
                "2024-01-05 10:00",
                "2024-01-20 08:00",
                "2024-02-10 08:00",  # after as_of: ignored
            ],
            "amount": [10.0, 5.0, 30.0, 10.0, 7.0, 3.0, 99.0],
        }
    )
    out = M.summary_from_transactions(tx, "cust", "ts", "amount", "2024-01-31").set_index(
        "customer_id"
    )
    assert list(out.columns) == M.SUMMARY_COLUMNS[1:]
    a, b, c = out.loc["a"], out.loc["b"], out.loc["c"]
    assert (a["frequency"], a["recency"], a["T"]) == (1, 10.0, 30.0)
    assert a["monetary_value"] == 40.0  # the repeat day's total; the first day is excluded
    assert a["n_purchases_total"] == 4 and a["historic_value"] == 55.0
    assert str(a["first_purchase"]) == "2024-01-01"
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0, 0.0, 26.0, 0.0)
    assert (c["frequency"], c["T"], c["historic_value"]) == (0, 11.0, 3.0)
    weeks = M.summary_from_transactions(tx, "cust", "ts", "amount", "2024-01-31", days_per_unit=7)
    assert weeks.set_index("customer_id").loc["a", "T"] == pytest.approx(30 / 7)


def test_holdout_helpers_small_frame():
    tx = pd.DataFrame(
        {
            "cust": [1, 1, 1, 1, 2, 3],
            "day": pd.to_datetime(
                ["2024-01-01", "2024-02-02", "2024-02-02", "2024-02-20", "2024-01-15", "2024-02-05"]
            ),
        }
    )
    actual = M.holdout_repeat_purchases(tx, "cust", "day", "2024-01-31", "2024-02-29")
    # customer 3 first bought in the holdout: not a calibration customer
    assert actual.to_dict() == {1: 2, 2: 0}

    cmp = M.holdout_comparison([0.1, 0.2, 0.3, 2.0], [0, 1, 0, 3], n_groups=2)
    assert list(cmp["segment"]) == ["all", "group_01", "group_02"]
    overall = cmp.iloc[0]
    assert overall["n_customers"] == 4 and overall["predicted_sum"] == pytest.approx(2.6)
    assert overall["actual_sum"] == 4 and overall["relative_error"] == pytest.approx(-0.35)
    assert cmp.iloc[2]["actual_sum"] == 3 and cmp.iloc[2]["predicted_sum"] == pytest.approx(2.3)


def test_cdnow_holdout_check(cdnow_transactions):
    # Calibrate on weeks 1-39 in days, predict weeks 40-78 (273 days), compare with actuals.
    summary = M.summary_from_transactions(
        cdnow_transactions, "customer_id", "date", "value", CALIBRATION_END
    )
    summary["margin"] = 0.25
    scores, bg, gg = M.fit_and_score(
        summary, CALIBRATION_END, horizon_days=273, margin_ratio="margin"
    )
    assert bg.converged and gg.converged
    assert list(scores.columns) == M.SCORE_COLUMNS
    assert len(scores) == 2357 and not scores.drop(columns="as_of").isna().any().any()
    assert scores["as_of"].iloc[0].isoformat() == CALIBRATION_END
    assert bg.params["alpha"] == pytest.approx(7 * FHL["alpha"], rel=0.01)  # days, not weeks
    assert (scores.loc[scores["frequency"] == 0, "p_alive"] == 1.0).all()
    assert (scores["clv"] >= 0).all()
    revenue, _, _ = M.fit_and_score(summary, CALIBRATION_END, horizon_days=273)
    np.testing.assert_allclose(scores["clv"], 0.25 * revenue["clv"], rtol=1e-12)

    actual = M.holdout_repeat_purchases(
        cdnow_transactions, "customer_id", "date", CALIBRATION_END, HOLDOUT_END
    )
    assert int(actual.sum()) == 1882  # repeat purchase days in weeks 40-78
    cmp = M.holdout_comparison(scores["expected_purchases"], actual.loc[scores["customer_id"]])
    assert len(cmp) == 11
    overall = cmp.iloc[0]
    assert abs(overall["relative_error"]) < 0.15  # predicted 1,653 vs 1,882 actual
    top = cmp.iloc[-1]
    assert abs(top["relative_error"]) < 0.10  # the top decile carries half the volume
    assert top["actual_mean"] > 3 * cmp.iloc[1:6]["actual_mean"].max()
