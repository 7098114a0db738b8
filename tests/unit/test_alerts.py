"""Alert state transitions, configuration, delivery through the outbox to a real SMTP
server on loopback (aiosmtpd), and the sink's background helpers."""

import datetime as dt
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import pandas as pd
import pytest

from crm_devtools.smtp_sink import SmtpSink, free_port, is_listening, read_messages
from crm_pipeline.alerts import (
    HISTORY_COLUMNS,
    AlertDeliveryError,
    SmtpSettings,
    check_rules_cover_targets,
    load_alert_config,
    process_alerts,
    resolve_recipients,
    send_pending,
    smtp_settings_from_connection,
    transitions,
    uncovered_targets,
)
from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.evaluate import evaluate_day
from crm_pipeline.kpi.targets import load_targets
from crm_pipeline.stages import check_settings

D = dt.date(2026, 11, 22)
TARGETS_RAW = {
    "churn_rate": {
        "direction": "lower_is_better",
        "unit": "share",
        "min_band_width": 0.01,
        "targets": [{"effective_from": "2025-01-01", "target": 0.10}],
    },
    "csat": {
        "direction": "higher_is_better",
        "unit": "percent",
        "targets": [{"effective_from": "2025-01-01", "target": 80}],
    },
}
TARGETS = load_targets({"kpis": TARGETS_RAW})
ALERTS = {
    "recipients": {"to": ["crm-managers@example.com"]},
    "sender": "CRM pipeline <crm@example.com>",
    "quiet_period_days": 7,
    "material_worsening": {"relative": 0.10},
    "rules": [
        {"kpi": "churn_rate", "dimensions": {"all": "*", "tier": ["vip", "key"]}},
        {"kpi": "csat", "dimensions": {"all": "*"}, "notify": False},
    ],
}


def ev(
    kpi="churn_rate",
    dimension="tier",
    value_name="vip",
    value=0.142,
    status="breach",
    breached=True,
    unusual=False,
):
    return {
        "kpi": kpi,
        "dimension": dimension,
        "dimension_value": value_name,
        "value": value,
        "target": 0.10,
        "baseline": 0.05,
        "change_vs_baseline": value - 0.05,
        "status": status,
        "target_breached": breached,
        "unusual_move": unusual,
        "flagged": (breached or unusual) and status != "not_evaluated",
    }


def before(last_notified, last_value=0.142, severity="breach", state="notified", kpi="churn_rate"):
    row = dict.fromkeys(HISTORY_COLUMNS)
    row.update(
        kpi=kpi,
        dimension="tier",
        dimension_value="vip",
        alert_id=f"{kpi}|tier|vip|2026-11-01",
        first_seen=dt.date(2026, 11, 1),
        last_seen=D - dt.timedelta(days=1),
        state=state,
        severity=severity,
        last_notified_date=last_notified,
        last_value_notified=last_value,
        last_severity_notified=severity if last_notified else None,
        last_notified_at=None
        if last_notified is None
        else dt.datetime.combine(last_notified + dt.timedelta(days=1), dt.time()),
    )
    return row


def one(evaluation, previous=(), config=ALERTS):
    items = transitions(
        D,
        pd.DataFrame(evaluation),
        pd.DataFrame(list(previous), columns=list(HISTORY_COLUMNS)),
        load_alert_config(config),
        TARGETS,
        "run",
    )
    assert len(items) == 1
    return items[0]


# -- transitions (pure) ---------------------------------------------------------------------
def test_a_new_alert_opens_and_is_notified_with_a_deterministic_id():
    item = one([ev()])
    assert (item.event, item.notify, item.state["state"]) == ("new", True, "notified")
    assert item.state["alert_id"] == "churn_rate|tier|vip|2026-11-22"
    assert item.state["last_notified_at"] == dt.datetime(
        2026, 11, 23
    )  # from the day, not the clock
    assert item.state["severity"] == "breach"
    assert item.state["message"] == (
        "churn_rate, vip tier: 14.2% (target ≤ 10%; baseline 5.0% (+9.2 pts)) - breach"
    )
    # not a watched tier, or not flagged: nothing
    assert (
        transitions(
            D,
            pd.DataFrame([ev(value_name="small"), ev(value_name="key", breached=False)]),
            pd.DataFrame(columns=list(HISTORY_COLUMNS)),
            load_alert_config(ALERTS),
            TARGETS,
            "r",
        )
        == []
    )


def test_renotified_only_when_materially_worse_escalated_or_after_the_quiet_period():
    recent = D - dt.timedelta(days=3)
    assert one([ev(value=0.15)], [before(recent)]).event == "ongoing"  # +0.8 pt < 10% of 14.2%
    item = one([ev(value=0.157)], [before(recent)])  # +1.5 pt >= 1.42 pt
    assert (item.event, item.notify, item.state["last_value_notified"]) == ("worse", True, 0.157)
    assert item.state["alert_id"] == "churn_rate|tier|vip|2026-11-01"
    assert one([ev(value=0.12)], [before(recent)]).notify is False  # better: nothing to say
    item = one([ev(value=0.142)], [before(recent, severity="warning")])
    assert (item.event, item.state["severity"]) == ("escalated", "breach")
    # a warning after a breach notice is not news
    assert one([ev(breached=False, unusual=True)], [before(recent)]).event == "ongoing"
    assert one([ev()], [before(D - dt.timedelta(days=6))]).event == "ongoing"
    item = one([ev()], [before(D - dt.timedelta(days=7))])
    assert (item.event, item.state["last_notified_date"]) == ("reminder", D)
    # an absolute step in the rule wins over the relative one
    config = {
        **ALERTS,
        "rules": [{"kpi": "churn_rate", "dimensions": {"tier": "*"}, "worsen_by": 0.005}],
    }
    assert one([ev(value=0.148)], [before(recent)], config).event == "worse"


BOTH_WAYS = {
    **ALERTS,
    "rules": [
        {"kpi": "churn_rate", "dimensions": {"tier": "*"}},
        {"kpi": "csat", "dimensions": {"tier": "*"}},
    ],
}


@pytest.mark.parametrize(
    "kpi, target, bad",
    [("churn_rate", 0.10, +1.0), ("csat", 80.0, -1.0)],  # lower and higher is better
)
def test_every_rule_works_for_a_kpi_of_either_direction(kpi, target, bad):
    """new, worse (and not worse when it moved the good way), the quiet period and its
    reminder, resolution: the same for a KPI that must stay low and one that must stay high."""
    last = target * (1 + bad * 0.4)  # notified at 40% past the target, the bad way

    def row(value, breached=True):
        status = "breach" if breached else "ok"
        return {**ev(kpi=kpi, value=value, status=status, breached=breached), "target": target}

    def prior(days_ago):
        return before(D - dt.timedelta(days=days_ago), last_value=last, kpi=kpi)

    assert one([row(last)], config=BOTH_WAYS).event == "new"
    further = last * (1 + bad * 0.15)  # 15% further the bad way: materially worse
    item = one([row(further)], [prior(2)], BOTH_WAYS)
    assert (item.event, item.notify, item.state["last_value_notified"]) == ("worse", True, further)
    back = last * (1 - bad * 0.15)  # 15% back the good way, still past the target
    assert (back - target) * bad > 0
    item = one([row(back)], [prior(2)], BOTH_WAYS)
    assert (item.event, item.notify) == ("ongoing", False)
    assert one([row(last * (1 + bad * 0.05))], [prior(2)], BOTH_WAYS).event == "ongoing"
    assert one([row(last)], [prior(6)], BOTH_WAYS).event == "ongoing"
    item = one([row(last)], [prior(7)], BOTH_WAYS)
    assert (item.event, item.notify, item.state["last_notified_date"]) == ("reminder", True, D)
    good = target * (1 - bad * 0.2)
    item = one([row(good, breached=False)], [prior(2)], BOTH_WAYS)
    assert (item.event, item.notify, item.state["state"]) == ("resolved", True, "resolved")


def test_recovery_resolves_and_an_unjudged_day_changes_nothing():
    recent = D - dt.timedelta(days=2)
    item = one([ev(value=0.05, status="ok", breached=False)], [before(recent)])
    assert (item.event, item.notify, item.state["state"]) == ("resolved", True, "resolved")
    assert item.state["last_value_notified"] == 0.142 and item.state["value"] == 0.05
    item = one([ev(status="not_evaluated", breached=False)], [before(recent)])
    assert (item.event, item.notify, item.state["state"]) == ("carried", False, "notified")
    item = one([], [before(recent)])
    assert item.event == "carried"


def test_fire_on_decides_whether_a_rule_fires_and_the_kpi_its_severity():
    config = {
        **ALERTS,
        "rules": [{"kpi": "churn_rate", "dimensions": {"tier": "*"}, "fire_on": ["unusual"]}],
    }
    assert one([ev(breached=True, unusual=True)], config=config).state["severity"] == "breach"
    assert one([ev(breached=False, unusual=True)], config=config).state["severity"] == "warning"
    assert (
        transitions(
            D,
            pd.DataFrame([ev(breached=True, unusual=False)]),
            pd.DataFrame(columns=list(HISTORY_COLUMNS)),
            load_alert_config(config),
            TARGETS,
            "r",
        )
        == []
    )


def test_a_rule_without_notification_keeps_the_alert_open_and_silent():
    csat = {**ev(kpi="csat", dimension="all", value_name="all", value=70.0), "target": 80.0}
    item = one([csat])
    assert (item.event, item.notify, item.state["state"]) == ("new", False, "open")
    item = one(
        [{**csat, "status": "ok", "flagged": False, "target_breached": False}],
        [{**before(None, state="open", kpi="csat"), "dimension": "all", "dimension_value": "all"}],
    )
    assert (item.event, item.notify) == ("resolved", False)


# -- configuration --------------------------------------------------------------------------
def test_configuration_and_recipient_override():
    with pytest.raises(ValueError, match="fire_on"):
        load_alert_config({"rules": [{"kpi": "x", True: ["breach"]}]})
    config = load_alert_config(ALERTS)
    assert resolve_recipients(config) == (["crm-managers@example.com"], [])
    assert resolve_recipients(config, "a@example.com; B <b@example.com>,") == (
        ["a@example.com", "b@example.com"],
        [],
    )
    assert resolve_recipients(config, {"to": ["x@example.com"], "cc": "y@example.com"}) == (
        ["x@example.com"],
        ["y@example.com"],
    )
    assert resolve_recipients(config, "") == (["crm-managers@example.com"], [])
    with pytest.raises(ValueError, match="not an email address"):
        resolve_recipients(config, "managers")


def test_a_target_without_a_rule_is_a_configuration_error(monkeypatch, tmp_path):
    targets = load_targets(
        {
            "kpis": {
                **TARGETS_RAW,
                "complaints_per_1000_orders": {
                    "direction": "lower_is_better",
                    "targets": [
                        {
                            "effective_from": "2025-01-01",
                            "target": 5,
                            "by_dimension": {"tier": {"vip": 3}},
                        }
                    ],
                },
            }
        }
    )
    covered = {"kpi": "complaints_per_1000_orders", "dimensions": {"all": "*"}}
    config = load_alert_config({**ALERTS, "rules": [*ALERTS["rules"], covered]})
    # the vip override is a target of its own; a rule firing on unusual moves only is no cover
    assert uncovered_targets(config, targets) == ["complaints_per_1000_orders (vip tier)"]
    unusual_only = {**covered, "dimensions": {"tier": "*"}, "fire_on": ["unusual"]}
    config = load_alert_config({**ALERTS, "rules": [unusual_only, covered]})
    with pytest.raises(ConfigError, match=r"complaints_per_1000_orders \(vip tier\)"):
        check_rules_cover_targets(config, targets)
    # the settings check of every run refuses it too; the shipped settings pass
    assert "alerts.yaml" in check_settings()
    monkeypatch.setenv("CRM_ALERTS_CONFIG", str(tmp_path / "alerts.yaml"))
    (tmp_path / "alerts.yaml").write_text(
        "recipients: {to: [m@example.com]}\nrules:\n  - kpi: churn_rate\n"
    )
    with pytest.raises(ConfigError, match=r"alerts.yaml: .*retention_rate \(all customers\)"):
        check_settings()


def test_smtp_settings_read_the_airflow_connection_like_the_provider():
    def conn(**extra):
        return SimpleNamespace(
            host="127.0.0.1", port=8025, login=None, password=None, extra_dejson=extra
        )

    default = smtp_settings_from_connection(conn())
    assert (default.use_ssl, default.starttls) == (True, False)  # SSL by default; SSL wins
    loopback = smtp_settings_from_connection(
        conn(disable_ssl="true", disable_tls="true", from_email="crm@example.com")
    )
    assert (loopback.use_ssl, loopback.starttls, loopback.from_email) == (
        False,
        False,
        "crm@example.com",
    )
    assert loopback.describe() == "127.0.0.1:8025 (plain)"
    tls = smtp_settings_from_connection(conn(disable_ssl=True))
    assert (tls.use_ssl, tls.starttls) == (False, True)
    assert SmtpSettings.from_mapping({"host": "h", "port": "2525", "use_ssl": "false"}).port == 2525


# -- delivery (a real SMTP server on loopback) -------------------------------------------------
def churn_breach(wh):
    wh.ensure_schemas()
    data = []
    for i in range(30):
        day = D - dt.timedelta(days=29 - i)
        v = 0.13 if day == D else 0.06
        data.append(
            {
                "as_of_date": day,
                "kpi": "churn_rate",
                "dimension": "all",
                "dimension_value": "all",
                "value": v,
                "numerator": v * 5000,
                "denominator": 5000.0,
            }
        )
    with wh.begin() as conn:
        conn.exec_driver_sql(
            "create table marts.kpi_daily (as_of_date date, kpi varchar, dimension varchar, dimension_value "
            "varchar, value double precision, numerator double precision, denominator double precision)"
        )
        wh.bulk_load(conn, "marts.kpi_daily", pd.DataFrame(data))
    evaluate_day(wh, D, "run-1", targets=TARGETS)


def outbox(wh):
    with wh.begin() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "select message_id, state, attempts, recipients, last_error is not null, sent_at is not null "
                "from ops.alert_outbox order by message_id"
            ).fetchall()
        ]


def test_smtp_down_then_up_delivers_exactly_once(warehouse, tmp_path):
    churn_breach(warehouse)
    summary = process_alerts(
        warehouse,
        D,
        "run-1",
        config=ALERTS,
        targets=TARGETS,
        recipients="a@example.com, b@example.com",
    )
    mid = summary["message_id"]
    assert (
        summary["subject"]
        == "[CRM] churn_rate breach: all customers 13.0% (target ≤ 10%) — 2026-11-22"
    )
    port = free_port()
    smtp = {"host": "127.0.0.1", "port": port}
    with pytest.raises(AlertDeliveryError, match="unreachable.*stay pending in ops.alert_outbox"):
        send_pending(warehouse, smtp, config=ALERTS)
    assert outbox(warehouse) == [(mid, "pending", 1, "a@example.com, b@example.com", True, False)]
    # the night is rerun while the server is still down: still one message, still pending
    process_alerts(
        warehouse,
        D,
        "run-1",
        config=ALERTS,
        targets=TARGETS,
        recipients="a@example.com, b@example.com",
    )
    assert [r[1] for r in outbox(warehouse)] == ["pending"]
    with SmtpSink(tmp_path / "sink", port=port) as sink:
        assert send_pending(warehouse, smtp, config=ALERTS)["sent"] == [mid]
        assert send_pending(warehouse, smtp, config=ALERTS)["sent"] == []
        process_alerts(warehouse, D, "run-1", config=ALERTS, targets=TARGETS)  # rerun after sending
        assert send_pending(warehouse, smtp, config=ALERTS)["sent"] == []
        (msg,) = sink.messages()
    assert msg["Message-ID"] == mid and msg["To"] == "a@example.com, b@example.com"
    # dated when it was sent, not at the end of the covered day
    sent = parsedate_to_datetime(msg["Date"])
    assert abs((sent - dt.datetime.now(dt.UTC)).total_seconds()) < 300
    assert len([k for k in msg.keys() if k.lower() == "date"]) == 1
    assert msg["X-Sink-Envelope-To"] == "a@example.com, b@example.com"
    assert outbox(warehouse) == [(mid, "sent", 2, "a@example.com, b@example.com", False, True)]


@pytest.mark.parametrize("policy", ["resend", "hold"])
def test_a_send_interrupted_by_a_crash_is_resent_or_held(warehouse, tmp_path, policy):
    churn_breach(warehouse)
    mid = process_alerts(warehouse, D, "run-1", config=ALERTS, targets=TARGETS)["message_id"]
    with warehouse.begin() as conn:  # the process died after the SMTP exchange began
        conn.exec_driver_sql("update ops.alert_outbox set state = 'sending', attempts = 1")
    config = {**ALERTS, "delivery": {"on_interrupted": policy}}
    with SmtpSink(tmp_path / "sink") as sink:
        result = send_pending(warehouse, {"host": "127.0.0.1", "port": sink.port}, config=config)
        assert len(sink.messages()) == (1 if policy == "resend" else 0)
    assert result["sent" if policy == "resend" else "held"] == [mid]
    assert outbox(warehouse)[0][1:3] == (("sent", 2) if policy == "resend" else ("held", 1))


def test_the_sink_runs_in_the_background_from_the_command_line(tmp_path):
    port, pid_file, folder = free_port(), tmp_path / "sink.pid", tmp_path / "eml"
    cli = [sys.executable, "-m", "crm_devtools.smtp_sink"]
    started = subprocess.run(
        [*cli, "start", "--dir", str(folder), "--port", str(port), "--pid-file", str(pid_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    try:
        assert is_listening("127.0.0.1", port) and pid_file.read_text().strip().isdigit()
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = (
            "a@example.com",
            "b@example.com",
            "hello",
            "<m1@example.com>",
        )
        msg.set_content("body")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(msg)
        (saved,) = read_messages(folder)
        assert saved["Subject"] == "hello" and list(folder.glob("*-m1_example.com.eml"))
    finally:
        stopped = subprocess.run(
            [*cli, "stop", "--pid-file", str(pid_file)], capture_output=True, text=True, timeout=30
        )
    assert "stopped" in stopped.stdout
    assert not is_listening("127.0.0.1", port) and not pid_file.exists()
