"""KPI targets and marts.kpi_evaluation: targets by effective date, the robust baseline, the
evidence behind survey KPIs, inputs that failed validation; on both engines."""

import datetime as dt
import math

import pandas as pd
import pytest
from factories import kpi_history

from crm_pipeline.alerts import load_alert_config
from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.evaluate import evaluate_day, evaluate_range
from crm_pipeline.kpi.judge import judge
from crm_pipeline.kpi.stats import baseline_frame, nps_interval, wilson_interval
from crm_pipeline.kpi.targets import EvaluationSettings, load_targets

D = dt.date(2026, 11, 22)
Z95 = 1.6448536269514722


def churn(**extra):
    return {
        "label": "Churn rate",
        "inputs": ["orders", "customers"],
        "direction": "lower_is_better",
        "unit": "share",
        "evidence": "proportion",
        "min_n": 20,
        "min_band_width": 0.01,
        **extra,
    }


TARGETS = {
    "evaluation": {"baseline_days": 28, "min_history_days": 14, "band_k": 3, "confidence": 0.95},
    "kpis": {
        "churn_rate": churn(
            targets=[
                {"effective_from": "2025-01-01", "target": 0.12, "warn_margin": 0.02},
                {
                    "effective_from": "2026-06-01",
                    "target": 0.08,
                    "warn_margin": 0.01,
                    "by_dimension": {
                        "tier": {"vip": 0.05, "key": {"target": 0.06, "warn_margin": 0.005}}
                    },
                },
            ]
        ),
        "csat": {
            "direction": "higher_is_better",
            "inputs": ["surveys"],
            "unit": "percent",
            "evidence": "proportion",
            "min_band_width": 2,
            "targets": [{"effective_from": "2025-01-01", "target": 80}],
        },
        "nps": {
            "direction": "higher_is_better",
            "inputs": ["surveys"],
            "unit": "score",
            "evidence": "nps",
            "min_band_width": 4,
            "targets": [{"effective_from": "2025-01-01", "target": 30}],
        },
        "aov": {
            "direction": "higher_is_better",
            "inputs": ["orders", "customers"],
            "unit": "money",
            "min_n": 20,
            "min_band_width": 0.5,
        },
    },
}


def rows(kpi, dimension, value, level, n, days=None, start=D - dt.timedelta(days=40), end=D):
    return kpi_history(kpi, dimension, value, level, n, days, start=start, end=end)


def load(wh, table, ddl, data):
    wh.ensure_schemas()
    with wh.begin() as conn:
        conn.exec_driver_sql(f"create table if not exists {table} ({ddl})")
        wh.bulk_load(conn, table, pd.DataFrame(data))


def kpi_daily(wh, data):
    load(
        wh,
        "marts.kpi_daily",
        "as_of_date date, kpi varchar, dimension varchar, dimension_value "
        "varchar, value double precision, numerator double precision, denominator double precision",
        data,
    )


def evaluation(wh, where="true"):
    with wh.begin() as conn:
        result = conn.exec_driver_sql(
            f"select * from marts.kpi_evaluation where {where} "
            "order by as_of_date, kpi, dimension, dimension_value"
        )
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


# -- pure ---------------------------------------------------------------------------------
def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson_interval(0.7, 10, Z95)
    assert (round(lo, 4), round(hi, 4)) == (0.4417, 0.8731)
    lo, hi = wilson_interval(0.7, 1000, Z95)
    assert hi - lo < 0.05 and lo < 0.7 < hi
    assert (
        wilson_interval(1.0, 5, Z95)[1] == pytest.approx(1.0)
        and wilson_interval(1.0, 5, Z95)[0] < 0.7
    )


def test_nps_interval_uses_a_variance_bound_that_is_never_too_narrow():
    # 50% promoters, 20% detractors: NPS 30, true per-response variance 0.7 - 0.09 = 0.61
    lo, hi = nps_interval(30, 400, Z95)
    true_half = 100 * Z95 * math.sqrt(0.61 / 400)
    assert hi - 30 == pytest.approx(100 * Z95 * math.sqrt(0.91 / 400)) and hi - 30 > true_half
    assert 30 - lo == pytest.approx(hi - 30)
    few = nps_interval(30, 10, Z95)
    assert few[1] - few[0] > 4 * (hi - lo)
    unanimous = nps_interval(100, 6, Z95)
    assert unanimous[1] == pytest.approx(100) and unanimous[0] < 50


def test_the_baseline_is_the_median_of_the_previous_days_with_a_robust_band():
    settings = EvaluationSettings(baseline_days=28, min_history_days=14, band_k=3)
    days = pd.date_range("2026-10-01", periods=40)
    values = pd.Series([0.05 + 0.002 * (i % 3 - 1) for i in range(40)], index=days)
    values.iloc[30] = 0.50  # one wild day inside the window moves neither median nor band
    values.iloc[39] = 0.90  # the day itself is never part of its own baseline
    out = baseline_frame(values, settings).iloc[-1]
    assert out["baseline"] == pytest.approx(0.05)
    assert out["baseline_days"] == 28
    # MAD of {0.048, 0.05, 0.052, 0.5...} = 0.002 -> band 0.05 +/- 3 x 1.4826 x 0.002
    assert out["baseline_high"] - out["baseline"] == pytest.approx(3 * 1.4826 * 0.002)
    flat = baseline_frame(pd.Series(0.05, index=days), settings, min_width=0.01).iloc[-1]
    assert (flat["baseline_low"], flat["baseline_high"]) == pytest.approx((0.04, 0.06))
    short = baseline_frame(values.iloc[:10], settings).iloc[-1]
    assert math.isnan(short["baseline"]) and short["baseline_days"] == 9


def test_the_shipped_configuration_covers_every_kpi_and_loads():
    import yaml

    from crm_pipeline.config import CONFIG_DIR

    targets = load_targets()
    assert set(targets.kpis) == {  # every KPI marts.kpi_daily builds (tests/unit/test_kpis.py)
        "active_customers", "churn_rate", "retention_rate", "new_customers",
        "repeat_purchase_rate", "purchase_frequency", "aov", "csat", "nps", "cac",
        "complaints_per_1000_orders", "complaint_first_response_hours",
        "complaint_resolution_hours", "complaint_sla_rate", "campaign_response_rate",
        "loyalty_member_share", "points_redemption_rate", "reactivated_customers",
        "completed_orders", "net_revenue", "overdue_regulars",
    }  # fmt: skip
    # each says what it reads, in the one place a KPI is described
    raw = yaml.safe_load((CONFIG_DIR / "targets.yaml").read_text())["kpis"]
    assert all(raw[kpi].get("inputs") for kpi in raw)
    assert targets.spec("csat").inputs == ("surveys",)
    assert targets.spec("cac").inputs == ("marketing_spend", "orders")
    with pytest.raises(ConfigError, match="unknown: ordres"):
        load_targets({"kpis": {"x": {"direction": "higher_is_better", "inputs": ["ordres"]}}})
    # a KPI that does not say is taken to read every source table
    assert (
        len(load_targets({"kpis": {"x": {"direction": "higher_is_better"}}}).spec("x").inputs) > 5
    )
    churn_spec = targets.spec("churn_rate")
    assert churn_spec.target_for(dt.date(2026, 11, 22)) == (0.10, 0.02)
    assert churn_spec.target_for(dt.date(2025, 6, 1)) == (0.12, 0.02)
    assert (
        targets.spec("csat").target_for(D)[0] == 65 and targets.spec("nps").target_for(D)[0] == 10
    )
    assert targets.spec("csat").target_for(dt.date(2027, 1, 1)) == (70, 3)  # the plan's next step
    alerts = load_alert_config()
    assert alerts.to and alerts.quiet_period_days > 0
    assert {r.kpi for r in alerts.rules} >= {
        "churn_rate",
        "retention_rate",
        "csat",
        "nps",
        "complaint_sla_rate",
    }
    assert all(r.kpi in targets.kpis for r in alerts.rules)
    segment_churn = alerts.rule_for("churn_rate", "segment", "At risk")
    assert segment_churn.on == ("unusual", "slow")


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="direction"):
        load_targets({"kpis": {"x": {"direction": "up"}}})
    with pytest.raises(ValueError, match="same day"):
        load_targets(
            {
                "kpis": {
                    "x": {
                        "direction": "higher_is_better",
                        "targets": [
                            {"effective_from": "2025-01-01", "target": 1},
                            {"effective_from": "2025-01-01", "target": 2},
                        ],
                    }
                }
            }
        )


# -- on the warehouse -----------------------------------------------------------------------
def test_a_past_day_is_judged_against_the_targets_then_in_force(warehouse):
    past = dt.date(2026, 3, 1)
    data = []
    for day in (past, D):
        start = day - dt.timedelta(days=30)
        data += rows("churn_rate", "all", "all", 0.10, 5000, start=start, end=day)
        data += rows("churn_rate", "tier", "vip", 0.04, 300, start=start, end=day)
        data += rows("churn_rate", "tier", "key", 0.058, 900, start=start, end=day)
    kpi_daily(warehouse, data)
    evaluate_day(warehouse, past, "backfill", targets=TARGETS)
    evaluate_day(warehouse, D, "nightly", targets=TARGETS)
    out = evaluation(warehouse).set_index(["as_of_date", "dimension_value"])
    # March: 12% overall (10% is inside the 2-pt warn margin), no tier override yet
    assert out.loc[(past, "all"), ["target", "status"]].tolist() == [0.12, "warn"]
    assert out.loc[(past, "vip"), ["target", "status"]].tolist() == [0.12, "ok"]
    # November: 8% overall (10% on 5,000 customers: a sure breach), vip 5%, key 6% +/- 0.5 pt
    assert out.loc[(D, "all"), ["target", "status", "target_breached"]].tolist() == [
        0.08,
        "breach",
        True,
    ]
    assert out.loc[(D, "vip"), ["target", "status"]].tolist() == [0.05, "ok"]
    assert out.loc[(D, "key"), ["target", "status"]].tolist() == [0.06, "warn"]
    assert out.loc[(D, "all"), "direction"] == "lower_is_better"
    assert out.loc[(D, "all"), "reason"].startswith(
        # its data start 30 days before: above the 8% (effective 2026-06-01) all along
        "above target 8% since 2026-10-23 (31 days) (95% interval 9.3% to 10.7%"
    )


def test_evaluation_is_a_replaced_partition_and_a_rerun_gives_the_same_rows(warehouse):
    kpi_daily(
        warehouse,
        # 8% on 4,000: the whole 95% interval (7.3% to 8.7%) is above the band 5% to 7%
        rows("churn_rate", "all", "all", 0.06, 4000, {D: 0.08})
        + rows("aov", "all", "all", 42.0, 900, {D: None}),
    )
    summary = evaluate_range(warehouse, D - dt.timedelta(days=9), D, "history", targets=TARGETS)
    assert summary["rows"] == 20
    first = evaluation(warehouse)
    again = evaluate_day(warehouse, D, "history", targets=TARGETS)
    assert again["rows"] == 2 and again["flagged"] == 1
    assert again["flagged_rows"] == [
        "churn_rate all=all warn: within 1.0 pts of target; "
        "above its normal band 5.0% to 7.0% (+2.0 pts vs baseline 6.0%)"
    ]
    pd.testing.assert_frame_equal(evaluation(warehouse), first)
    today = first[first["as_of_date"] == D].set_index("kpi")
    row = today.loc["churn_rate"]
    assert (
        row["value"],
        row["baseline"],
        row["baseline_low"],
        row["baseline_high"],
        row["n"],
    ) == pytest.approx((0.08, 0.06, 0.05, 0.07, 4000))
    assert row["change_vs_baseline"] == pytest.approx(0.02)
    assert (row["status"], row["unusual_move"], row["target_breached"], row["flagged"]) == (
        "warn",
        True,
        False,
        True,
    )
    assert row["baseline_days"] == 28
    # a null value (zero denominator) is not evaluated, never an alarm
    assert today.loc["aov", "status"] == "not_evaluated" and not today.loc["aov", "flagged"]
    assert today.loc["aov", "reason"] == "no value (nothing to measure)"


def test_kpis_whose_inputs_failed_or_are_stale_are_not_evaluated(warehouse):
    kpi_daily(
        warehouse,
        rows("csat", "all", "all", 88, 900, {D: 60.0})
        + rows("nps", "all", "all", 40, 900, {D: 0.0})
        + rows("churn_rate", "all", "all", 0.06, 4000)
        + rows("churn_rate", "region", "north", 0.06, 400),
    )
    load(
        warehouse,
        "ops.table_status",
        "as_of_date date, table_name varchar, status varchar, run_id varchar, detail varchar",
        [
            {
                "as_of_date": D,
                "table_name": "surveys",
                "status": "failed",
                "run_id": "r",
                "detail": "x",
            },
            {
                "as_of_date": D,
                "table_name": "customers",
                "status": "stale",
                "run_id": "r",
                "detail": "y",
            },
            {
                "as_of_date": D,
                "table_name": "orders",
                "status": "quarantined",
                "run_id": "r",
                "detail": "",
            },
            {
                "as_of_date": D - dt.timedelta(days=1),
                "table_name": "orders",
                "status": "failed",
                "run_id": "r",
                "detail": "another day",
            },
        ],
    )
    evaluate_day(warehouse, D, "r", targets=TARGETS)
    out = evaluation(warehouse).set_index(["kpi", "dimension"])
    assert out.loc[("csat", "all"), "status"] == "not_evaluated"
    assert out.loc[("csat", "all"), "reason"] == "input not usable for the day: surveys failed"
    assert out.loc[("nps", "all"), "status"] == "not_evaluated" and not out["flagged"].any()
    # churn reads orders and customers: customers is stale
    assert (
        out.loc[("churn_rate", "all"), "reason"] == "input not usable for the day: customers stale"
    )
    # without ops.table_status nothing failed
    warehouse.ensure_schemas()
    with warehouse.begin() as conn:
        conn.exec_driver_sql("drop table ops.table_status")
    evaluate_day(warehouse, D, "r", targets=TARGETS)
    out = evaluation(warehouse).set_index(["kpi", "dimension"])
    assert out.loc[("csat", "all"), "status"] == "breach"
    assert out.loc[("nps", "all"), "status"] == "breach"


def test_few_responses_need_a_bigger_move_than_many(warehouse):
    data = []
    for n in (8, 40, 80, 800):
        data += rows("csat", "segment", f"n{n}", 88, n, {D: 75.0})
        data += rows("nps", "segment", f"n{n}", 40, n, {D: 20.0})
    data += rows("csat", "tier", "n200", 88, 200, {D: 83.0})
    data += rows("churn_rate", "tier", "vip", 0.04, 10, {D: 0.30})  # fewer than min_n 20
    kpi_daily(warehouse, data)
    targets = {**TARGETS, "kpis": {**TARGETS["kpis"]}}
    targets["kpis"]["nps"] = {**TARGETS["kpis"]["nps"], "min_n_by_dimension": {"segment": 50}}
    evaluate_day(warehouse, D, "r", targets=targets)
    out = evaluation(warehouse).set_index(["kpi", "dimension_value"])
    flags = out[["status", "target_breached", "unusual_move", "flagged"]]
    # csat 75% vs target 80% and baseline 88%: on 8 responses nothing is judged (fewer than
    # the 30 a share needs by default); on 40 and 80 the drop from the baseline is shown,
    # not the breach; on 800 both
    assert flags.loc[("csat", "n8")].tolist() == ["not_evaluated", False, False, False]
    assert out.loc[("csat", "n8"), "reason"] == "too few to judge (n=8, needs 30)"
    assert flags.loc[("csat", "n40")].tolist() == ["warn", False, True, True]
    assert flags.loc[("csat", "n80")].tolist() == ["warn", False, True, True]
    assert flags.loc[("csat", "n800")].tolist() == ["breach", True, True, True]
    # a minimum per dimension: NPS of a segment needs 50 responses here
    assert flags.loc[("nps", "n40")].tolist() == ["not_evaluated", False, False, False]
    assert flags.loc[("nps", "n80")].tolist() == ["warn", False, False, False]  # 38 in band
    assert flags.loc[("nps", "n800")].tolist() == ["breach", True, True, True]
    lo, hi = out.loc[("csat", "n40"), ["interval_low", "interval_high"]]
    assert lo < 75 < hi < 86
    # 83% on 200 responses: below the band 86%-90%, but the interval reaches 86.9%, inside
    # it: the band rule reads the interval, not the point
    row = out.loc[("csat", "n200")]
    assert row["interval_high"] == pytest.approx(86.92, abs=0.01)
    assert (row["status"], row["unusual_move"]) == ("ok", False)
    assert row["reason"].startswith("outside its normal band 86.0% to 90.0% but not significantly")
    assert out.loc[("churn_rate", "vip"), "status"] == "not_evaluated"
    assert out.loc[("churn_rate", "vip"), "reason"] == "too few to judge (n=10, needs 20)"


def test_bands_and_intervals_stay_inside_the_kpi_range_and_print_as_words():
    settings = EvaluationSettings(baseline_days=28, min_history_days=14, band_k=3)
    flat = pd.Series([0.004] * 40, index=pd.date_range("2026-01-01", periods=40))
    base = baseline_frame(flat, settings, 0.01, (0.0, 1.0))
    assert base["baseline_low"].iloc[-1] == 0.0  # not -0.6%
    assert base["baseline_high"].iloc[-1] == pytest.approx(0.014)
    full = pd.Series([0.995] * 40, index=pd.date_range("2026-01-01", periods=40))
    assert baseline_frame(full, settings, 0.01, (0.0, 1.0))["baseline_high"].iloc[-1] == 1.0
    targets = load_targets(TARGETS)
    churn_spec, nps_spec = targets.spec("churn_rate"), targets.spec("nps")
    assert churn_spec.valid_range == (0.0, 1.0) and nps_spec.valid_range == (-100.0, 100.0)
    assert nps_spec.fmt_range(-32.6, -11.0) == "−32.6 to −11.0"
    # a churn of 0 on 25 customers: the interval is 0% to 10.3%, never below 0
    verdict = judge(churn_spec, 0.0, 25, 0.12, 0.0, {}, targets.settings)
    assert verdict["interval_low"] == 0.0
    # a range of its own, or none
    spec = load_targets(
        {
            "kpis": {
                "retention_rate": {
                    "direction": "higher_is_better",
                    "unit": "share",
                    "range": [0, None],
                }
            }
        }
    )
    assert spec.spec("retention_rate").valid_range == (0.0, None)
    with pytest.raises(ConfigError, match="range"):
        load_targets({"kpis": {"x": {"direction": "higher_is_better", "range": [1, 0]}}})


def test_a_slow_fall_is_reported_as_a_fall_with_since_when(warehouse):
    """NPS of a tier falls from +5 to -20 over six weeks: the 28-day baseline follows it
    down (the change against it is small), the level of 8 to 12 weeks ago does not."""
    start, fall = D - dt.timedelta(days=200), 42
    level = {}
    for i in range(fall + 1):  # +5 on D-42, -20 on D
        level[D - dt.timedelta(days=fall - i)] = 5.0 - 25.0 * i / fall
    targets = {**TARGETS, "kpis": {**TARGETS["kpis"]}}
    targets["kpis"]["nps"] = {
        **TARGETS["kpis"]["nps"],
        "targets": [{"effective_from": "2025-01-01", "target": 0}],
    }
    kpi_daily(warehouse, rows("nps", "tier", "key", 5.0, 2000, level, start=start))
    evaluate_range(warehouse, D - dt.timedelta(days=2), D, "r", targets=targets)
    row = evaluation(warehouse, f"as_of_date = '{D}'").iloc[0]
    assert row["change_vs_baseline"] == pytest.approx(-8.6, abs=0.1)  # what the email showed
    assert row["reference"] == pytest.approx(5.0)
    assert row["change_vs_reference"] == pytest.approx(-25.0)
    assert row["slow_move"] and row["flagged"] and row["status"] == "breach"
    # below 0 since the first day of the fall under it: 5 - 25 i / 42 < 0 from i = 9
    crossed = D - dt.timedelta(days=fall - 9)
    assert row["past_target_since"] == crossed
    assert f"below target 0 since {crossed} (34 days)" in row["reason"]
    assert "down 25.0 from 5.0 8 to 12 weeks ago (its band then 1.0 to 9.0)" in row["reason"]
    # the same day alone gives the same row (every window it rests on was read)
    evaluate_day(warehouse, D, "r", targets=targets)
    alone = evaluation(warehouse, f"as_of_date = '{D}'").iloc[0]
    pd.testing.assert_series_equal(alone.drop("run_id"), row.drop("run_id"))
    # steady at +5: nothing slow, nothing since
    kpi_daily(warehouse, rows("nps", "tier", "vip", 5.0, 2000, start=start))
    evaluate_day(warehouse, D, "r", targets=targets)
    steady = evaluation(warehouse, f"as_of_date = '{D}' and dimension_value = 'vip'").iloc[0]
    assert not steady["slow_move"] and steady["past_target_since"] is None
    assert steady["change_vs_reference"] == 0.0


def test_money_carries_the_currency_of_the_business():
    targets = load_targets(
        {"currency": "EUR", "kpis": {"aov": {"direction": "higher_is_better", "unit": "money"}}}
    )
    aov = targets.spec("aov")
    assert aov.fmt(1234.5) == "€1,234.50" and aov.fmt_change(-2.1) == "−€2.10"
    assert aov.fmt_change(0.001) == "€0.00"
    chf = load_targets(
        {"currency": "chf", "kpis": {"aov": {"direction": "higher_is_better", "unit": "money"}}}
    )
    assert chf.spec("aov").fmt(10) == "CHF 10.00"
    assert load_targets().currency == "EUR"  # the demo's
