"""The nightly manager alert email: what it says and how it looks.

crm_pipeline.alerts decides which alerts the managers must hear about (alert state) and
delivers the message (outbox, SMTP); this package only turns that decision into the
message, so its wording, layout and charts can change without touching either. No Airflow
imports, no warehouse: it renders from plain data. The alert stage reads the KPI history
and the customers at risk (crm_pipeline.alerts.stage.read_email_data) before rendering and
passes them in EmailContext.

- context: EmailContext, the subject, and the words and rows the text and HTML share.
- text: the plain-text part.  html: the HTML part.  charts: the PNG charts.
- mime: build_email, the 7-bit MIME message.

Grain: one email per covered day (`as_of_date`), `build_email(EmailContext)` -> 7-bit MIME
text, multipart/related [multipart/alternative [plain, HTML], PNG charts]. Inside it: one
card per notified alert, grouped by KPI (the KPI with the most severe alert first); one
breakdown table per alerted KPI (its evaluation rows for all customers and the breakdown
dimensions); one chart per alert, up to `email.max_charts`, lead alert of each KPI first;
one row per high-value customer at risk, up to `at_risk.max_customers`, by CLV. Every date
shown comes from the covered day, never from the clock (the stored Date header is the end
of that day; crm_pipeline.alerts.outbox.send_pending dates the message when it sends it).

It imports Item, AlertConfig and the shared orderings from the submodules of
crm_pipeline.alerts (config, state, outbox); none of them imports it back.
"""

from crm_pipeline.alerts.email.charts import chart_series, render_chart, render_charts
from crm_pipeline.alerts.email.context import (
    EVENT_WORDS,
    EmailContext,
    breakdown_rows,
    email_subject,
    grouped,
)
from crm_pipeline.alerts.email.html import email_html
from crm_pipeline.alerts.email.mime import build_email
from crm_pipeline.alerts.email.text import email_text

__all__ = [
    "EVENT_WORDS",
    "EmailContext",
    "breakdown_rows",
    "build_email",
    "chart_series",
    "email_html",
    "email_subject",
    "email_text",
    "grouped",
    "render_chart",
    "render_charts",
]
