"""The alert email as 7-bit MIME text: multipart/related [multipart/alternative [plain,
HTML], PNG charts], with deterministic boundaries, Message-ID and Date (the end of the
covered day; crm_pipeline.alerts.outbox dates the message when it sends it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from email import charset as email_charset
from email import policy as email_policy
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

from crm_pipeline.alerts.email.context import (
    EmailContext,
    _chart_cids,
)
from crm_pipeline.alerts.email.html import email_html
from crm_pipeline.alerts.email.text import email_text
from crm_pipeline.alerts.outbox import OUTBOX_TABLE
from crm_pipeline.alerts.state import ALERTS_TABLE
from crm_pipeline.dates import end_of_day
from crm_pipeline.kpi.evaluate import EVALUATION_TABLE


def build_email(ctx: EmailContext) -> str:
    """The MIME text: multipart/related [multipart/alternative [plain, html], PNG charts]."""
    qp = email_charset.Charset("utf-8")
    qp.body_encoding = email_charset.QP
    seed = hashlib.sha1(f"{ctx.message_id}|{ctx.run_id}".encode()).hexdigest()[:20]
    pol = email_policy.SMTP
    root = MIMEMultipart("related", boundary=f"=_crm_rel_{seed}", policy=pol)
    root.set_param("type", "multipart/alternative")
    root["Subject"] = ctx.subject
    root["From"] = ctx.sender
    root["To"] = ", ".join(ctx.to)
    if ctx.cc:
        root["Cc"] = ", ".join(ctx.cc)
    root["Date"] = formatdate(end_of_day(ctx.day).replace(tzinfo=dt.UTC).timestamp(), usegmt=True)
    root["Message-ID"] = ctx.message_id
    root["X-CRM-As-Of-Date"] = ctx.day.isoformat()
    root["X-CRM-Run-Id"] = ctx.run_id
    root["X-CRM-Tables"] = (
        f"{EVALUATION_TABLE} (where as_of_date = '{ctx.day.isoformat()}' and flagged), "
        f"{ALERTS_TABLE}, marts.kpi_daily, {OUTBOX_TABLE}"
    )
    alt = MIMEMultipart("alternative", boundary=f"=_crm_alt_{seed}", policy=pol)
    alt.attach(MIMEText(email_text(ctx), "plain", qp, policy=pol))
    alt.attach(MIMEText(email_html(ctx), "html", qp, policy=pol))
    root.attach(alt)
    for key, cid in _chart_cids(ctx).items():
        image = MIMEImage(ctx.charts[key], "png", policy=pol)
        image["Content-ID"] = f"<{cid}>"
        image.add_header(
            "Content-Disposition", "inline", filename=f"{'-'.join(key)}.png".replace(" ", "_")
        )
        root.attach(image)
    text = root.as_string()
    text.encode("ascii")  # 7-bit clean: quoted-printable bodies, RFC 2047 headers
    return text
