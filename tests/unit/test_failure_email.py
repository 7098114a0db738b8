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
        task_id="validate.validate_sources",
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
    assert msg["Subject"] == "[crm_nightly] validate.validate_sources failed for 2026-06-30"
    assert msg["Message-ID"] == (
        "<crm_nightly-failure.scheduled__2026-06-30T02-00-00-00-00.validate.validate_sources.1"
        "@example.com>"
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
