"""The data engineers' email when a task of the night fails: what failed, for which day,
the whole error, whether Airflow will try again, and where the log is.

Made with the same care as the managers' email: a plain-text part and an HTML part, a
Message-ID (one per task try, so a resent notice is recognisably the same), the Date of
sending, and the error in full: every line of a validation failure (table, column, rule,
rows) kept, long lines wrapped in the text part rather than cut. Airflow-free: the
plugin (plugins/crm_airflow.py) fills it from the task's context and sends it.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import textwrap
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

WIDTH = 100  # the text part's lines, wrapped: mail clients cut or reflow longer ones


def _wrapped(text: str) -> str:
    """Every line of the error, long ones wrapped with their indentation kept."""
    out = []
    for line in text.splitlines() or [""]:
        indent = line[: len(line) - len(line.lstrip())]
        out.extend(
            textwrap.wrap(
                line,
                WIDTH,
                subsequent_indent=indent + "    ",
                break_long_words=True,
                break_on_hyphens=False,
            )
            or [""]
        )
    return "\n".join(out)


def failure_message(
    *,
    dag_id: str,
    task_id: str,
    day: dt.date | str,
    run_id: str,
    try_number: int,
    stopped: bool,
    error: str,
    log_url: str,
    sender: str,
    to: list[str],
    when: dt.datetime | None = None,
) -> EmailMessage:
    """The notice for a task that failed for good (`stopped`: by a PipelineStop, which is
    never retried; else after its last try). `when`: the moment of sending, UTC."""
    when = when or dt.datetime.now(dt.UTC)
    error = (error or "no error message").strip()
    first = error.splitlines()[0] if error else ""
    if stopped:
        next_step = (
            "Not retried: no retry can fix this (bad data, a broken source contract, bad "
            "settings, or a model that failed its gate). Fix what the error names, then clear "
            "the task in Airflow or rerun the day (a rerun gives the same rows). What else "
            "could run for the day did; the run is marked failed."
        )
    else:
        next_step = (
            f"Failed on its last try ({try_number}): a cause that did not go away between "
            "tries (a locked warehouse file, a server down). Check it, then clear the task in "
            "Airflow; the rest of the day waits for it or has run. The run is marked failed."
        )
    msg = _message(
        f"[{dag_id}] {task_id} failed for {day}",
        f"{dag_id}-failure.{run_id}.{task_id}.{try_number}",
        sender=sender,
        to=to,
        when=when,
        day=day,
        run_id=run_id,
    )
    text = (
        f"{dag_id}: the task {task_id} failed for the day {day}\n"
        f"(run {run_id}, try {try_number}).\n\n"
        f"What happened\n{_wrapped(error)}\n\n"
        f"What happens next\n{_wrapped(next_step)}\n\n"
        f"Log: {log_url}\n"
    )
    msg.set_content(text, cte="quoted-printable")
    esc = html.escape
    msg.add_alternative(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"></head>
<body style="margin:0;padding:16px;background:#f5f7fa;font-family:Arial,Helvetica,sans-serif;color:#1f2933">
<div style="max-width:760px;margin:0 auto;background:#fff;border:1px solid #e4e7eb;border-left:5px solid #c0392b;border-radius:4px;padding:16px 20px">
 <div style="font-size:12px;color:#616e7c">{esc(dag_id)} · {esc(str(day))} · run {esc(run_id)} · try {try_number}</div>
 <div style="font-size:18px;font-weight:bold;margin:6px 0 10px 0">{esc(task_id)} failed</div>
 <div style="font-size:14px;margin-bottom:8px">{esc(first)}</div>
 <div style="font-size:11px;color:#616e7c;text-transform:uppercase;margin-top:12px">The whole error</div>
 <pre style="white-space:pre-wrap;word-break:break-word;font-size:12px;background:#f5f7fa;padding:10px;border-radius:4px;margin:4px 0 12px 0">{esc(error)}</pre>
 <div style="font-size:11px;color:#616e7c;text-transform:uppercase">What happens next</div>
 <div style="font-size:13px;margin:4px 0 12px 0">{esc(next_step)}</div>
 <div style="font-size:13px"><a href="{esc(log_url, quote=True)}">The task's log</a></div>
</div></body></html>""",
        subtype="html",
        cte="quoted-printable",
    )
    return msg


def failure_summary(
    *,
    dag_id: str,
    task_id: str,
    day: dt.date | str,
    run_id: str,
    try_number: int,
    error: str,
    log_url: str,
) -> str:
    """The failure notice in a few lines, for a chat channel (Slack): what failed, for
    which day, the error's first line and where the log is."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    text = f"{dag_id}: {task_id} failed for {day} (run {run_id}, try {try_number})\n"
    text += lines[0] if lines else "no error message"
    return text + (f"\nLog: {log_url}" if log_url else "")


def deadline_headline(dag_id: str, day: dt.date | str, deadline: dt.datetime) -> str:
    """'crm_nightly for 2026-06-30 not done by 04:00 UTC' (the deadline in UTC)."""
    return f"{dag_id} for {day} not done by {deadline.astimezone(dt.UTC):%H:%M} UTC"


_RUN_STATES = {
    "failed": (
        "The run failed: each failed task was told with its error. Fix what they name, then "
        "clear the failed tasks in Airflow or rerun the day (a rerun gives the same rows)."
    ),
    "success": "The run has finished since, late: the marts are there.",
}
_STILL_RUNNING = (
    "The run is still {state}: a task is slow, retrying or waiting for a slot (the warehouse "
    "pool admits one writer at a time). Look at the run in Airflow; the managers' alert "
    "email goes out when the run reaches it."
)


def deadline_text(
    *,
    dag_id: str,
    day: dt.date | str,
    run_id: str,
    deadline: dt.datetime,
    queued_at: dt.datetime | None,
    state: str,
) -> str:
    """The deadline notice's body, plain text (the email's and Slack's)."""
    what = _RUN_STATES.get(state) or _STILL_RUNNING.format(state=state or "queued")
    queued = f"{queued_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" if queued_at else "unknown"
    return (
        f"{deadline_headline(dag_id, day, deadline)}.\n"
        f"Run {run_id}: queued {queued}, deadline {deadline.astimezone(dt.UTC):%Y-%m-%d %H:%M} "
        f"UTC.\n\n{textwrap.fill(what, 88)}"
    )


def deadline_message(
    *,
    dag_id: str,
    day: dt.date | str,
    run_id: str,
    deadline: dt.datetime,
    queued_at: dt.datetime | None,
    state: str,
    sender: str,
    to: list[str],
    when: dt.datetime | None = None,
) -> EmailMessage:
    """The data engineers' email when a night is not done by its deadline (Airflow's
    DeadlineAlert fired): one per run, text and HTML."""
    when = when or dt.datetime.now(dt.UTC)
    headline = deadline_headline(dag_id, day, deadline)
    text = deadline_text(
        dag_id=dag_id, day=day, run_id=run_id, deadline=deadline, queued_at=queued_at, state=state
    )
    msg = _message(
        f"[{dag_id}] {headline}",
        f"{dag_id}-deadline.{run_id}",
        sender=sender,
        to=to,
        when=when,
        day=day,
        run_id=run_id,
    )
    msg.set_content(_wrapped(text) + "\n", cte="quoted-printable")
    esc = html.escape
    head, _, rest = text.partition("\n")
    msg.add_alternative(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"></head>
<body style="margin:0;padding:16px;background:#f5f7fa;font-family:Arial,Helvetica,sans-serif;color:#1f2933">
<div style="max-width:760px;margin:0 auto;background:#fff;border:1px solid #e4e7eb;border-left:5px solid #d68910;border-radius:4px;padding:16px 20px">
 <div style="font-size:12px;color:#616e7c">{esc(dag_id)} · {esc(str(day))} · run {esc(run_id)}</div>
 <div style="font-size:18px;font-weight:bold;margin:6px 0 10px 0">{esc(head)}</div>
 <div style="font-size:13px;white-space:pre-wrap">{esc(rest)}</div>
</div></body></html>""",
        subtype="html",
        cte="quoted-printable",
    )
    return msg


def _message(
    subject: str,
    ident: str,
    *,
    sender: str,
    to: list[str],
    when: dt.datetime,
    day: dt.date | str,
    run_id: str,
) -> EmailMessage:
    """The headers both emails share: a Message-ID from the run (so a resend is the same
    message) on the sender's domain, and the day and run as X-CRM headers for filters."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(when.timestamp(), usegmt=True)
    msg["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9._-]', '-', ident)}@{domain}>"
    msg["X-CRM-As-Of-Date"] = str(day)
    msg["X-CRM-Run-Id"] = run_id
    return msg
