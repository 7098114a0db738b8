"""The night's deadline under a real scheduler and triggerer.

Airflow's DeadlineAlert is experimental in 3.3 and `airflow dags test` never fires it:
only the scheduler marks a deadline missed, and only the triggerer runs its callback. So
this starts them, on a metadata database of its own in the local PostgreSQL, with the
deadline on (a copy of pipeline.yaml) and a few seconds long. The DAG stays paused: its
triggered run is queued and no task starts, so the run is not done when the deadline
passes, as a night stuck behind a slow task would be. The data engineers must then get
"crm_nightly for DAY not done by HH:MM UTC" by email (the local SMTP sink) and on Slack (a
webhook connection to a local HTTP server), from `crm_airflow.notify_deadline_missed`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from factories import ROOT
from webhook import SlackWebhook

from crm_devtools.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DAY = dt.date(2026, 6, 30)
ENGINEERS = "data-team@example.com"


def airflow(env, *args, timeout=300):
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def start(env, log: Path, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc):
    """The component and every process it started (its own session), TERM then KILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a worker that missed its stop message
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def test_a_night_not_done_by_its_deadline_is_told_by_email_and_slack(pg_database, tmp_path):
    settings = tmp_path / "pipeline.yaml"
    text = (ROOT / "include" / "config" / "pipeline.yaml").read_text()
    assert "deadline:\n  enabled: false\n  after_queued_minutes: 120" in text
    settings.write_text(
        text.replace(
            "enabled: false\n  after_queued_minutes: 120",
            "enabled: true\n  after_queued_minutes: 0.05",
        )
    )  # 3 s
    with SmtpSink(tmp_path / "mail") as sink, SlackWebhook() as slack:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__CAPACITY": "10",
            "CRM_PIPELINE_SETTINGS": str(settings),
            "CRM_DATA_ENGINEERS": ENGINEERS,
            "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{sink.port}?disable_ssl=true"
            "&disable_tls=true&from_email=crm%40localhost",
            **slack.env(),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        airflow(env, "db", "migrate")
        airflow(env, "dags", "reserialize")
        airflow(env, "dags", "trigger", "crm_nightly", "--logical-date", f"{DAY}T00:00:00+00:00")
        procs = [start(env, tmp_path / f"{name}.log", name) for name in ("scheduler", "triggerer")]
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not (sink.messages() and slack.posts):
                assert all(p.poll() is None for p in procs), "a component died: see its log"
                time.sleep(2)
        finally:
            for proc in procs:
                stop(proc)
        mails, posts = sink.messages(), list(slack.posts)

    logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
    assert len(mails) == 1 and len(posts) == 1, logs
    subject = mails[0]["Subject"]
    assert mails[0]["To"] == ENGINEERS
    assert re.fullmatch(
        rf"\[crm_nightly\] crm_nightly for {DAY} not done by \d\d:\d\d UTC", subject
    ), subject
    headline = subject.removeprefix("[crm_nightly] ")
    assert posts[0]["text"].startswith(headline) and "still queued" in posts[0]["text"]
    with sa.create_engine(pg_database, poolclass=sa.pool.NullPool).connect() as conn:
        missed, when = conn.execute(sa.text("select missed, deadline_time from deadline")).one()
        state = conn.execute(sa.text("select state from callback")).scalar_one()
    assert missed and state == "success"
    assert headline.endswith(f"{when.astimezone(dt.UTC):%H:%M} UTC")
