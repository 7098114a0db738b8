"""The outbox: ops.alert_outbox holds each day's rendered email until it is sent.

`send_pending(wh, smtp)` sends what the outbox holds and marks it sent. SMTP down: the
message stays pending, the task fails clearly, the next attempt sends it once. The stored
message is dated when it is handed to SMTP (`_dated`); `send_now` sends one message
without the outbox (the data engineers' failure notice). `ops.alert_outbox.sent_at` is the
one wall-clock time of the alert tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from collections.abc import Mapping
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crm_pipeline.alerts.config import (
    AlertConfig,
    SmtpSettings,
    load_alert_config,
    parse_addresses,
)
from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger("crm_pipeline.alerts")

OUTBOX_TABLE = tables.ALERT_OUTBOX.name
OUTBOX_COLUMNS = tables.ALERT_OUTBOX.columns


class AlertDeliveryError(RuntimeError):
    """The SMTP server could not take the email; it stays pending in ops.alert_outbox."""


def ensure_tables(wh: Warehouse, conn: sa.Connection) -> None:
    """The alert tables: history and runs (the stage's) and the outbox."""
    wh.ensure(conn, tables.ALERT_HISTORY, tables.ALERT_RUNS, tables.ALERT_OUTBOX)


def _message_id(day: dt.date, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "crm-pipeline.local"
    return f"<crm-alerts.{day.isoformat()}@{domain}>"


def outbox_state(conn: sa.Connection, message_id: str) -> str | None:
    """The state of a message in the outbox (pending, sending, sent, held), or None."""
    return conn.execute(
        sa.text(f"select state from {OUTBOX_TABLE} where message_id = :m"), {"m": message_id}
    ).scalar_one_or_none()


def drop(conn: sa.Connection, message_id: str) -> None:
    """Remove a message from the outbox (a pending one that a rerun has nothing to tell)."""
    conn.execute(sa.text(f"delete from {OUTBOX_TABLE} where message_id = :m"), {"m": message_id})


def queue(conn: sa.Connection, *, replace: bool, **values: Any) -> None:
    """Put a rendered message in the outbox, pending, in the caller's transaction (the one
    that changes the alert state). `replace`: a rerun before delivery stores today's
    rendering over the pending message and keeps its attempts."""
    if replace:
        conn.execute(
            sa.text(
                f"update {OUTBOX_TABLE} set run_id = :run_id, subject = :subject, sender = :sender, "
                "recipients = :recipients, mime_text = :mime where message_id = :message_id "
                "and as_of_date = :as_of_date"
            ),
            values,
        )
    else:
        conn.execute(
            sa.text(
                f"insert into {OUTBOX_TABLE} (message_id, as_of_date, run_id, subject, sender, "
                "recipients, mime_text, state, attempts, last_error, sent_at) values "
                "(:message_id, :as_of_date, :run_id, :subject, :sender, :recipients, :mime, "
                "'pending', 0, null, null)"
            ),
            values,
        )


def _open_smtp(s: SmtpSettings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if s.ssl_context == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if s.use_ssl:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            s.host, s.effective_port, timeout=s.timeout, context=context
        )
    else:
        client = smtplib.SMTP(s.host, s.effective_port, timeout=s.timeout)
        if s.starttls:
            client.starttls(context=context)
            client.ehlo()
    if s.login and s.password:
        client.login(s.login, s.password)
    return client


def send_now(smtp: SmtpSettings, msg: Any) -> None:
    """Send one message at once, without the outbox: the data engineers' failure notice,
    which concerns a night that has already failed (SMTP errors propagate)."""
    client = _open_smtp(smtp)
    try:
        client.send_message(msg, from_addr=smtp.from_email or parseaddr(str(msg["From"]))[1])
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _set_outbox(wh: Warehouse, message_id: str, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values if k != "attempts_plus")
    if "attempts_plus" in values:
        sets = ", ".join(filter(None, [sets, "attempts = attempts + 1"]))
    params = {k: v for k, v in values.items() if k != "attempts_plus"}
    with wh.begin() as conn:
        conn.execute(
            sa.text(f"update {OUTBOX_TABLE} set {sets} where message_id = :mid"),
            {**params, "mid": message_id},
        )


def _dated(mime_text: str, when: dt.datetime) -> str:
    """The stored message with its Date header set to the moment it is handed to SMTP.

    The message is rendered from the covered day alone (a rerun renders the same bytes and
    the same Message-ID); the Date a reader sees is the send time, as mail clients expect,
    not the end of the covered day."""
    head, sep, body = mime_text.partition("\r\n\r\n")
    if not sep:
        head, sep, body = mime_text.partition("\n\n")
    newline = "\r\n" if sep == "\r\n\r\n" else "\n"
    stamp = f"Date: {formatdate(when.timestamp(), usegmt=True)}"
    lines = head.split(newline)
    dated = [stamp if line.lower().startswith("date:") else line for line in lines]
    if stamp not in dated:
        dated.insert(0, stamp)
    return newline.join(dated) + sep + body


def send_pending(
    wh: Warehouse,
    smtp: SmtpSettings | Mapping[str, Any],
    *,
    config: str | Path | Mapping[str, Any] | AlertConfig | None = None,
    raise_on_error: bool = True,
) -> dict[str, Any]:
    """Send every pending message of ops.alert_outbox, oldest first; mark each one sent.

    Each message is marked 'sending' (committed) before the SMTP exchange and 'sent'
    right after it, so the only window for a duplicate is a crash between the server's
    acceptance and that second commit. A message found in 'sending' was interrupted in
    that window: `delivery.on_interrupted` says whether it is sent again (resend: at least
    once; the copy has the same Message-ID, which mail systems use to drop duplicates) or
    held for a person (hold: at most once). SMTP unreachable or refusing: the message goes
    back to pending with the error, and AlertDeliveryError is raised (the task fails, its
    retry or the next night sends it).
    """
    cfg = load_alert_config(config)
    settings = smtp if isinstance(smtp, SmtpSettings) else SmtpSettings.from_mapping(smtp)
    with wh.begin() as conn:
        ensure_tables(wh, conn)
        pending = conn.execute(
            sa.text(
                f"select message_id, sender, recipients, mime_text, state from {OUTBOX_TABLE} "
                "where state in ('pending', 'sending') order by as_of_date, message_id"
            )
        ).fetchall()
    result: dict[str, Any] = {"sent": [], "pending": [], "held": [], "errors": []}
    if not pending:
        return result
    todo = []
    for row in pending:
        if row.state == "sending" and cfg.on_interrupted == "hold":
            _set_outbox(
                wh,
                row.message_id,
                state="held",
                last_error="interrupted while sending: may have been delivered; held (on_interrupted: hold)",
            )
            log.warning(
                "outbox: %s was interrupted while sending; held for a person to check",
                row.message_id,
            )
            result["held"].append(row.message_id)
        else:
            if row.state == "sending":
                log.warning(
                    "outbox: %s was interrupted while sending last time: sending again "
                    "(a duplicate, if any, has the same Message-ID)",
                    row.message_id,
                )
            todo.append(row)
    if not todo:
        return result
    try:
        client = _open_smtp(settings)
    except (OSError, smtplib.SMTPException) as exc:
        error = f"SMTP {settings.describe()} unreachable: {type(exc).__name__}: {exc}"
        for row in todo:
            _set_outbox(
                wh, row.message_id, state="pending", last_error=error[:1000], attempts_plus=True
            )
            result["pending"].append(row.message_id)
        result["errors"].append(error)
        log.error("outbox: %s; %d message(s) stay pending in %s", error, len(todo), OUTBOX_TABLE)
        if raise_on_error:
            raise AlertDeliveryError(
                f"{error}; {len(todo)} alert email(s) stay pending in {OUTBOX_TABLE} and go "
                "out on the next attempt"
            ) from exc
        return result
    try:
        for row in todo:
            recipients = parse_addresses(row.recipients)
            envelope_from = settings.from_email or parseaddr(row.sender)[1]
            _set_outbox(wh, row.message_id, state="sending", attempts_plus=True)
            now = dt.datetime.now(dt.UTC)
            try:
                refused = client.sendmail(
                    envelope_from, recipients, _dated(row.mime_text, now).encode("ascii")
                )
            except (OSError, smtplib.SMTPException) as exc:
                error = f"SMTP {settings.describe()} did not take {row.message_id}: {type(exc).__name__}: {exc}"
                _set_outbox(wh, row.message_id, state="pending", last_error=error[:1000])
                result["pending"].append(row.message_id)
                result["errors"].append(error)
                log.error("outbox: %s", error)
                continue
            note = f"refused by the server for: {', '.join(refused)}" if refused else None
            _set_outbox(
                wh,
                row.message_id,
                state="sent",
                last_error=note,
                sent_at=dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0),
            )
            if refused:
                log.warning("outbox: %s sent, but %s", row.message_id, note)
            log.info("outbox: sent %s to %s", row.message_id, ", ".join(recipients))
            result["sent"].append(row.message_id)
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    if result["errors"] and raise_on_error:
        raise AlertDeliveryError(
            "; ".join(result["errors"]) + f" (the message stays pending in {OUTBOX_TABLE})"
        )
    return result
