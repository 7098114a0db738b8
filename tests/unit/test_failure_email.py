"""The data engineers' failure notice: both parts, its identity, the whole error."""

import datetime as dt
import email
import email.policy

from crm_pipeline.failure_email import failure_message

ERROR = (
    "DataQualityError: data quality: 2 table-level failure(s) in orders; quarantined rows "
    "stay in quarantine.rows\n"
    "  orders.channel: column missing from the source (rule: column_present) - table-level "
    "failure, 12,345 rows of batch 17 cannot be read without it and every later stage of the "
    "night would build on a table without its sales channel\n"
    "  orders.net_amount: 3 rows below 0 (rule: non_negative) - table-level failure"
)


def message(**kw):
    args = dict(
        dag_id="crm_nightly",
        task_id="validate_sources",
        day=dt.date(2026, 6, 30),
        run_id="scheduled__2026-06-30T02:00:00+00:00",
        try_number=1,
        stopped=True,
        error=ERROR,
        log_url="http://airflow:8080/log?x=1&y=2",
        sender="CRM pipeline <crm-pipeline@example.com>",
        to=["data@example.com"],
        when=dt.datetime(2026, 7, 1, 2, 3, 4, tzinfo=dt.UTC),
    )
    args.update(kw)
    raw = failure_message(**args).as_bytes(policy=email.policy.SMTP)
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_the_notice_has_text_and_html_a_message_id_and_the_whole_error():
    msg = message()
    assert msg["Subject"] == "[crm_nightly] validate_sources failed for 2026-06-30"
    assert msg["Message-ID"] == (
        "<crm_nightly-failure.scheduled__2026-06-30T02-00-00-00-00.validate_sources.1@example.com>"
    )
    assert msg["Date"].datetime == dt.datetime(2026, 7, 1, 2, 3, 4, tzinfo=dt.UTC)
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    # every line of the error is there, none longer than the wrap width, nothing cut
    assert all(len(line) <= 100 for line in text.splitlines())
    assert " ".join(text.split()).count("orders.channel: column missing") == 1
    assert "every later stage of the night would build on a table without its sales channel" in (
        " ".join(text.split())
    )
    assert "(rule: non_negative)" in text and "(rule: non_negative)" in html
    assert "Not retried: no retry can fix this" in text
    assert 'href="http://airflow:8080/log?x=1&amp;y=2"' in html
    # a transient failure that outlasted its tries says so
    retried = message(stopped=False, try_number=3, error="OperationalError: database is locked")
    assert "Failed on its last try (3)" in retried.get_body(("plain",)).get_content()
    assert retried["Message-ID"] != msg["Message-ID"]


def test_the_chat_summary_is_the_first_line_of_the_error_and_the_log():
    from crm_pipeline.failure_email import failure_summary

    text = failure_summary(
        dag_id="crm_nightly",
        task_id="validate_sources",
        day=dt.date(2026, 6, 30),
        run_id="r1",
        try_number=2,
        error=ERROR,
        log_url="http://airflow:8080/log",
    )
    assert text.splitlines() == [
        "crm_nightly: validate_sources failed for 2026-06-30 (run r1, try 2)",
        ERROR.splitlines()[0],
        "Log: http://airflow:8080/log",
    ]


def deadline_notice(state):
    from crm_pipeline.failure_email import deadline_message

    raw = deadline_message(
        dag_id="crm_nightly",
        day=dt.date(2026, 6, 30),
        run_id="scheduled__2026-06-30",
        deadline=dt.datetime(2026, 7, 1, 4, 0, 30, tzinfo=dt.UTC),
        queued_at=dt.datetime(2026, 7, 1, 2, 0, 1, tzinfo=dt.UTC),
        state=state,
        sender="CRM pipeline <crm-pipeline@example.com>",
        to=["data@example.com"],
        when=dt.datetime(2026, 7, 1, 4, 1, tzinfo=dt.UTC),
    ).as_bytes(policy=email.policy.SMTP)
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_the_deadline_notice_says_the_day_the_time_and_what_the_run_is_doing():
    msg = deadline_notice("running")
    assert msg["Subject"] == "[crm_nightly] crm_nightly for 2026-06-30 not done by 04:00 UTC"
    assert msg["Message-ID"] == "<crm_nightly-deadline.scheduled__2026-06-30@example.com>"
    text = msg.get_body(("plain",)).get_content()
    assert "queued 2026-07-01 02:00 UTC, deadline 2026-07-01 04:00 UTC" in text
    assert "still running" in text
    assert (
        "crm_nightly for 2026-06-30 not done by 04:00 UTC" in msg.get_body(("html",)).get_content()
    )
    failed = deadline_notice("failed").get_body(("plain",)).get_content()
    assert "The run failed" in failed and "still" not in failed
