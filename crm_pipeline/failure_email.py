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
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    ident = re.sub(r"[^A-Za-z0-9._-]", "-", f"{run_id}.{task_id}.{try_number}")
    msg = EmailMessage()
    msg["Subject"] = f"[{dag_id}] {task_id} failed for {day}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(when.timestamp(), usegmt=True)
    msg["Message-ID"] = f"<{dag_id}-failure.{ident}@{domain}>"
    msg["X-CRM-As-Of-Date"] = str(day)
    msg["X-CRM-Run-Id"] = run_id
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
