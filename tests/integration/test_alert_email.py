"""Manager alert emails end to end: kpi_daily history -> evaluation -> alerts -> outbox ->
a real SMTP server on loopback (aiosmtpd, started here) -> parsed .eml files.

The histories are flat so every number in the email can be checked by hand: vip churn sits
at 4.5% (baseline 4.5%, normal band 3.5-5.5% from min_band_width 1 pt) and jumps to 14.2%
on D, with 210 customers behind it (95% Wilson interval 10.7-18.6%: a sure breach of 10%).
"""

import datetime as dt

import pandas as pd
from factories import kpi_history

from crm_devtools.smtp_sink import SmtpSink
from crm_pipeline.alerts import process_alerts, send_pending
from crm_pipeline.kpi.evaluate import evaluate_day, evaluate_range

D = dt.date(2026, 11, 22)
TARGETS = {
    "evaluation": {"baseline_days": 28, "min_history_days": 14, "band_k": 3, "confidence": 0.95},
    "kpis": {
        "churn_rate": {
            "label": "Churn rate (30 days)",
            "n_label": "customers active 30 days earlier",
            "inputs": ["orders", "customers"],
            "direction": "lower_is_better",
            "unit": "share",
            "evidence": "proportion",
            "min_n": 20,
            "min_band_width": 0.01,
            "targets": [{"effective_from": "2025-01-01", "target": 0.10, "warn_margin": 0.02}],
        },
        "csat": {
            "label": "CSAT",
            "inputs": ["surveys"],
            "direction": "higher_is_better",
            "unit": "percent",
            "evidence": "proportion",
            "min_n": 1,
            "min_band_width": 2,
            "targets": [{"effective_from": "2025-01-01", "target": 80, "warn_margin": 3}],
        },
    },
}
ALERTS = {
    "recipients": {"to": ["crm-managers@example.com"], "cc": ["ops@example.com"]},
    "sender": "CRM pipeline <crm@example.com>",
    "quiet_period_days": 7,
    "rules": [
        {"kpi": "churn_rate", "dimensions": {"all": "*", "tier": "*"}, "worsen_by": 0.01},
        {"kpi": "churn_rate", "dimensions": {"segment": "*"}, "fire_on": ["unusual"]},
        {"kpi": "csat", "dimensions": {"all": "*", "segment": "*"}, "worsen_by": 2},
    ],
    "email": {"chart_days": 90, "max_charts": 4},
}
NAME = '<script>alert("x")</script> & Sons'


def rows(kpi, dimension, value, level, n, days=None, start=D - dt.timedelta(days=60), end=D):
    return kpi_history(kpi, dimension, value, level, n, days, start=start, end=end)


def load(wh, table, ddl, data):
    with wh.begin() as conn:
        conn.exec_driver_sql(f"create table if not exists {table} ({ddl})")
        wh.bulk_load(conn, table, pd.DataFrame(data))


def kpi_daily(wh, data):
    wh.ensure_schemas()
    load(
        wh,
        "marts.kpi_daily",
        "as_of_date date, kpi varchar, dimension varchar, dimension_value "
        "varchar, value double precision, numerator double precision, denominator double precision",
        data,
    )


def churn_business(vip_days, end=D):
    data = rows("churn_rate", "all", "all", 0.06, 9000, end=end)
    data += rows("churn_rate", "tier", "vip", 0.045, 210, vip_days, end=end)
    data += rows("churn_rate", "tier", "key", 0.05, 840, end=end)
    data += rows("churn_rate", "tier", "small", 0.062, 7950, end=end)
    data += rows("churn_rate", "segment", "Champions", 0.02, 1500, end=end)
    data += rows("churn_rate", "segment", "At risk", 0.15, 900, end=end)  # above target, as usual
    return data


def customer_models(wh):
    far = {"valid_from": dt.datetime(1900, 1, 1), "valid_to": dt.datetime(9999, 12, 31)}
    load(
        wh,
        "marts.customer_value_tier",
        "as_of_date date, customer_id varchar, revenue_12m double "
        "precision, margin_12m double precision, rank integer, tier varchar",
        [
            {
                "as_of_date": D,
                "customer_id": c,
                "revenue_12m": r,
                "margin_12m": r / 3,
                "rank": i + 1,
                "tier": t,
            }
            for i, (c, r, t) in enumerate(
                [
                    ("V1", 9000.0, "vip"),
                    ("V2", 8000.0, "vip"),
                    ("K1", 3000.0, "key"),
                    ("K2", 2500.0, "key"),
                    ("R1", 900.0, "regular"),
                ]
            )
        ],
    )
    load(
        wh,
        "marts.customer_clv",
        "as_of_date date, customer_id varchar, p_alive double precision, clv double precision",
        [
            {"as_of_date": D, "customer_id": "V1", "p_alive": 0.35, "clv": 5200.0},
            {"as_of_date": D, "customer_id": "V2", "p_alive": 0.45, "clv": 3100.0},
            {"as_of_date": D, "customer_id": "K1", "p_alive": 0.6, "clv": 900.0},
            {"as_of_date": D, "customer_id": "K2", "p_alive": 0.9, "clv": 8000.0},
            {
                "as_of_date": D - dt.timedelta(days=28),
                "customer_id": "V2",
                "p_alive": 0.92,
                "clv": 3500.0,
            },
        ],
    )
    load(
        wh,
        "marts.customer_churn_risk",
        "as_of_date date, customer_id varchar, churn_probability "
        "double precision, risk_band varchar, top_reasons varchar",
        [
            {
                "as_of_date": D,
                "customer_id": "V1",
                "churn_probability": 0.81,
                "risk_band": "high",
                "top_reasons": "no order for 35 days; 2 complaints",
            },
            {
                "as_of_date": D,
                "customer_id": "V2",
                "churn_probability": 0.22,
                "risk_band": "low",
                "top_reasons": "order gap widening",
            },
            {
                "as_of_date": D,
                "customer_id": "K1",
                "churn_probability": 0.6,
                "risk_band": "medium",
                "top_reasons": "switched channel",
            },
            {
                "as_of_date": D,
                "customer_id": "K2",
                "churn_probability": 0.1,
                "risk_band": "low",
                "top_reasons": None,
            },
            {
                "as_of_date": D,
                "customer_id": "R1",
                "churn_probability": 0.95,
                "risk_band": "high",
                "top_reasons": "not high value",
            },
        ],
    )
    load(
        wh,
        "staging.stg_customers",
        "customer_id varchar, name varchar, valid_from timestamp, valid_to timestamp",
        [
            {
                "customer_id": "V1",
                "name": "Old name",
                "valid_from": dt.datetime(1900, 1, 1),
                "valid_to": dt.datetime(2026, 5, 1),
            },
            {
                "customer_id": "V1",
                "name": NAME,
                "valid_from": dt.datetime(2026, 5, 1),
                "valid_to": dt.datetime(9999, 12, 31),
            },
            {"customer_id": "V2", "name": "Anna Müller", **far},
            {"customer_id": "K1", "name": "O'Brien Dairy", **far},
        ],
    )
    load(
        wh,
        "marts.dim_customer",
        "customer_id varchar, region varchar",
        [{"customer_id": "V1", "region": "north"}, {"customer_id": "V2", "region": "south"}],
    )


def night(wh, day, sink, **kwargs):
    evaluate_day(wh, day, f"run-{day}", targets=TARGETS)
    summary = process_alerts(wh, day, f"run-{day}", config=ALERTS, targets=TARGETS, **kwargs)
    sent = send_pending(wh, {"host": "127.0.0.1", "port": sink.port}, config=ALERTS)
    return summary, sent


def parts(msg):
    html = text = None
    images = {}
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            html = part.get_content()
        elif part.get_content_type() == "text/plain":
            text = part.get_content()
        elif part.get_content_type() == "image/png":
            images[part["Content-ID"].strip("<>")] = part.get_payload(decode=True)
    return html, text, images


def test_a_vip_churn_breach_sends_one_email_with_everything_a_manager_needs(warehouse, tmp_path):
    kpi_daily(warehouse, churn_business({D: 0.142}))
    customer_models(warehouse)
    evaluate_range(
        warehouse, D - dt.timedelta(days=3), D - dt.timedelta(days=1), "history", targets=TARGETS
    )
    with SmtpSink(tmp_path / "sink") as sink:
        summary, sent = night(warehouse, D, sink)
        messages = sink.messages()
    assert summary["new"] == 1 and len(sent["sent"]) == 1
    assert len(messages) == 1
    msg = messages[0]
    assert (
        msg["Subject"]
        == "[CRM] Churn rate (30 days) breach: vip tier 14.2% (target ≤ 10%) — 2026-11-22"
    )
    assert msg["Message-ID"] == "<crm-alerts.2026-11-22@example.com>"
    assert msg["X-Sink-Envelope-To"] == "crm-managers@example.com, ops@example.com"
    # multipart/alternative (plain + html) inside multipart/related, with the chart inline
    assert msg.get_content_type() == "multipart/related"
    alternative, *images = list(msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert [p.get_content_type() for p in images] == ["image/png"]
    assert images[0].get_content_disposition() == "inline"
    html, text, pngs = parts(msg)
    ((cid, png),) = pngs.items()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert f'src="cid:{cid}"' in html
    # the headline: KPI, value, target, baseline, change, severity
    for fragment in (
        "Churn rate (30 days) — vip tier",
        "14.2%",
        "≤ 10%",
        "4.5%",
        "normal 3.5% to 5.5%",
        "+9.7 pts",
        ">breach<",
        "210 customers active 30 days earlier",
    ):
        assert fragment in html, fragment
    # the breakdown: every tier and segment, vip's contribution to the overall change
    assert "Where the move comes from" in html and "At risk" in html and "Champions" in html
    assert "+0.2 pts" in html  # 210 / 9000 x 9.7 pts
    assert "tier: vip" in text and "+9.7 pts" in text
    # high-value customers at risk: V1 (churn 81%), V2 (P(alive) 0.92 -> 0.45), K1 (60%),
    # ranked by CLV; K2 (low risk) and R1 (regular tier) are not listed
    assert html.index("&amp; Sons") < html.index("Anna Müller") < html.index("O&#x27;Brien Dairy")
    assert "K2" not in html and "R1" not in html and "not high value" not in html
    assert "P(alive) fell from 0.92 to 0.45 in 28 days" in html
    assert "no order for 35 days; 2 complaints" in html
    # customer-provided text is escaped, and the name is the one valid on the day
    assert (
        "<script>" not in html
        and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Sons" in html
    )
    assert "Old name" not in html
    assert NAME in text  # the plain-text part shows it as typed
    # the "At risk" segment is above the churn target by design and has no rule for it: it
    # is shown as past target, not as a breach; the two risk measures are told apart
    assert "past target" in html and "past target" in text
    assert "Churn risk and P(alive) answer different questions" in html
    # the managers' footer says the day and whom to ask; the tables are for the data team,
    # in a header
    assert "Figures as of the end of Sunday 22 November 2026 (UTC)." in html
    assert "select " not in html and "include/config" not in html and "marts." not in text
    assert (
        "marts.kpi_evaluation (where as_of_date = '2026-11-22' and flagged)" in msg["X-CRM-Tables"]
    )
    with warehouse.begin() as conn:
        alert = conn.exec_driver_sql(
            "select alert_id, state, severity, first_seen, last_notified_at, value, target "
            "from marts.alerts"
        ).fetchall()
    assert [tuple(a) for a in alert] == [
        (
            "churn_rate|tier|vip|2026-11-22",
            "notified",
            "breach",
            D,
            dt.datetime(2026, 11, 23),
            0.142,
            0.10,
        )
    ]


def test_without_the_customer_models_the_email_says_so(warehouse, tmp_path):
    kpi_daily(warehouse, churn_business({D: 0.142}))
    with SmtpSink(tmp_path / "sink") as sink:
        night(warehouse, D, sink)
        (msg,) = sink.messages()
    html, text, _ = parts(msg)
    assert "High-value customers now at risk" in html
    assert "Not available yet: the customer models" in html and "Not available yet" in text


def test_a_night_whose_churn_scores_were_held_uses_the_last_published_and_says_so(
    warehouse, tmp_path
):
    kpi_daily(warehouse, churn_business({D: 0.142}))
    customer_models(warehouse)
    with warehouse.begin() as conn:  # the model gate held D's churn scores: D-1's stand
        conn.exec_driver_sql("update marts.customer_churn_risk set as_of_date = as_of_date - 1")
    with SmtpSink(tmp_path / "sink") as sink:
        night(warehouse, D, sink)
        (msg,) = sink.messages()
    html, text, _ = parts(msg)
    held = "Churn risk as of 2026-11-21: the model gate held the scores of 2026-11-22"
    assert held in html and held in text
    assert "no order for 35 days; 2 complaints" in html  # V1, from the scores of 2026-11-21
    assert "CLV and P(alive) as of" not in html  # CLV of the day was published


def test_next_nights_quiet_then_worse_then_resolved(warehouse, tmp_path):
    days = [D + dt.timedelta(days=i) for i in range(4)]
    vip = dict(zip(days, [0.142, 0.145, 0.17, 0.045], strict=True))
    kpi_daily(warehouse, churn_business(vip, end=days[-1]))
    with SmtpSink(tmp_path / "sink") as sink:
        night(warehouse, days[0], sink)
        assert len(sink.messages()) == 1
        # the next night, no material change (+0.3 pts < 1 pt): nothing is sent
        summary, sent = night(warehouse, days[1], sink)
        assert summary["ongoing"] == 1 and summary["message_id"] is None and sent["sent"] == []
        assert len(sink.messages()) == 1
        # worse by 2.8 pts since the notice: an update
        summary, _ = night(warehouse, days[2], sink)
        assert summary["worse"] == 1
        update = sink.messages()[-1]
        assert (
            update["Subject"]
            == "[CRM] Churn rate (30 days) breach, worse: vip tier 17.0% (target ≤ 10%) — 2026-11-24"
        )
        html, _, _ = parts(update)
        assert "Worse since the notice of 2026-11-22: 14.2% → 17.0%." in html
        # back to normal: a short resolved notice
        summary, _ = night(warehouse, days[3], sink)
        assert summary["resolved"] == 1
        resolved = sink.messages()[-1]
        assert (
            resolved["Subject"]
            == "[CRM] resolved: Churn rate (30 days), vip tier back to 4.5% (target ≤ 10%) — 2026-11-25"
        )
        html, _, images = parts(resolved)
        assert "Recovered" in html and "alert open since 2026-11-22" in html and not images
        # rerunning the last night changes nothing and sends nothing
        night(warehouse, days[3], sink)
        assert len(sink.messages()) == 3
    with warehouse.begin() as conn:
        alert = conn.exec_driver_sql(
            "select alert_id, state, first_seen, last_notified_at, last_value_notified, last_event "
            "from marts.alerts"
        ).fetchall()
        events = conn.exec_driver_sql(
            "select as_of_date, event, state from ops.alert_history order by as_of_date"
        ).fetchall()
        outbox = conn.exec_driver_sql(
            "select as_of_date, state, attempts from ops.alert_outbox order by as_of_date"
        ).fetchall()
    assert [tuple(a) for a in alert] == [
        (
            "churn_rate|tier|vip|2026-11-22",
            "resolved",
            D,
            dt.datetime(2026, 11, 25),
            0.17,
            "resolved",
        )
    ]
    assert [tuple(e) for e in events] == [
        (days[0], "new", "notified"),
        (days[1], "ongoing", "notified"),
        (days[2], "worse", "notified"),
        (days[3], "resolved", "resolved"),
    ]
    assert [tuple(o) for o in outbox] == [
        (days[0], "sent", 1),
        (days[2], "sent", 1),
        (days[3], "sent", 1),
    ]


def test_stale_survey_data_is_not_evaluated_and_sends_nothing(warehouse, tmp_path):
    data = churn_business({})
    data += rows("csat", "all", "all", 88, 900, {D: 70.0})  # would be a sure breach
    kpi_daily(warehouse, data)
    load(
        warehouse,
        "ops.table_status",
        "as_of_date date, table_name varchar, status varchar, run_id varchar, detail varchar",
        [
            {
                "as_of_date": D,
                "table_name": "surveys",
                "status": "stale",
                "run_id": "r",
                "detail": "no new rows for 3 days",
            },
            {
                "as_of_date": D,
                "table_name": "orders",
                "status": "passed",
                "run_id": "r",
                "detail": "",
            },
        ],
    )
    with SmtpSink(tmp_path / "sink") as sink:
        summary, sent = night(warehouse, D, sink)
        assert sink.messages() == []
    assert summary["message_id"] is None and sent["sent"] == []
    with warehouse.begin() as conn:
        csat = conn.exec_driver_sql(
            "select status, flagged, reason from marts.kpi_evaluation where kpi = 'csat'"
        ).fetchall()
        churn = conn.exec_driver_sql(
            "select count(*) from marts.kpi_evaluation where kpi = 'churn_rate' "
            "and status <> 'not_evaluated'"
        ).scalar_one()
    assert [tuple(r) for r in csat] == [
        ("not_evaluated", False, "input not usable for the day: surveys stale")
    ]
    assert churn == 6


def test_a_drop_on_a_handful_of_responses_does_not_alert_the_same_drop_on_many_does(
    warehouse, tmp_path
):
    data = churn_business({})
    data += rows("csat", "all", "all", 88, 2000)
    data += rows("csat", "segment", "Few", 88, 8, {D: 75.0})  # 6 of 8 satisfied
    data += rows("csat", "segment", "Many", 88, 800, {D: 75.0})  # 600 of 800
    kpi_daily(warehouse, data)
    with SmtpSink(tmp_path / "sink") as sink:
        summary, _ = night(warehouse, D, sink)
        (msg,) = sink.messages()
    assert summary["new"] == 1
    assert msg["Subject"] == "[CRM] CSAT breach: Many segment 75.0% (target ≥ 80%) — 2026-11-22"
    with warehouse.begin() as conn:
        few = conn.exec_driver_sql(
            "select status, flagged, reason from marts.kpi_evaluation where dimension_value = 'Few'"
        ).fetchone()
    assert few[0] == "warn" and few[1] is False
    assert "below target 80% but not significantly" in few[2]
    assert "outside its normal band 86.0% to 90.0% but not significantly" in few[2]


def test_a_slow_fall_below_target_reads_as_a_fall_and_says_since_when(warehouse, tmp_path):
    """CSAT of a segment slides from 88% to 70% over six weeks, below its 80% target for
    the last three of them: the first email (the alert state starts today) says how long
    it has been below target and how far it fell from 8 to 12 weeks ago, not "new"."""
    start, fall = D - dt.timedelta(days=150), 42
    slide = {D - dt.timedelta(days=fall - i): 88.0 - 18.0 * i / fall for i in range(fall + 1)}
    data = rows("csat", "all", "all", 88, 5000, start=start)
    data += rows("csat", "segment", "Loyal", 88, 600, slide, start=start)
    kpi_daily(warehouse, data)
    with SmtpSink(tmp_path / "sink") as sink:
        summary, _ = night(warehouse, D, sink)
        (msg,) = sink.messages()
    assert summary["new"] == 1
    html, text, _ = parts(msg)
    below = min(day for day, v in slide.items() if v < 80)  # 88 - 18 i / 42 < 80 from i = 19
    assert below == D - dt.timedelta(days=fall - 19)
    for body in (html, text):
        assert (
            f"Below target since {below} (24 days). Down 18.0 pts from 88.0% 8 to 12 weeks ago. First alert today."
            in body
        )
        assert "New today" not in body
    assert "8–12 weeks ago" in html and "−18.0 pts since" in html
