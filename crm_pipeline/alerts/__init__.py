"""Manager alerts: alert state, and delivery of the nightly email through an outbox.

What belongs here (docs/alerts.md):

- config: AlertConfig from include/config/alerts.yaml, recipients, SmtpSettings.
- state: the pure transitions of a day (open -> notified -> resolved), the email's order.
- at_risk: the high-value customers at risk that the email lists (a warehouse read).
- stage: process_alerts, the DAG step: read, compute, write the state and the outbox.
- outbox: send_pending (and send_now), the Date header set at delivery.

The email itself (text, HTML, charts, MIME) is crm_pipeline.alerts.email. This package
re-exports the names the DAG, the plugins, the CLI and the tests use.
"""

from crm_pipeline.alerts.at_risk import at_risk_customers
from crm_pipeline.alerts.config import (
    ALERTS_FILE,
    AlertConfig,
    Rule,
    SmtpSettings,
    check_rules_cover_targets,
    dimension_text,
    load_alert_config,
    parse_addresses,
    resolve_recipients,
    smtp_settings_from_connection,
    uncovered_targets,
)
from crm_pipeline.alerts.outbox import (
    OUTBOX_COLUMNS,
    OUTBOX_TABLE,
    AlertDeliveryError,
    ensure_tables,
    send_now,
    send_pending,
)
from crm_pipeline.alerts.stage import ALERTS_SQL, process_alerts
from crm_pipeline.alerts.state import (
    ALERTS_TABLE,
    DIMENSION_ORDER,
    EVENT_ORDER,
    HISTORY_COLUMNS,
    HISTORY_TABLE,
    NOTIFY_EVENTS,
    RUNS_COLUMNS,
    RUNS_TABLE,
    SEVERITY_RANK,
    TIER_ORDER,
    Item,
    alert_message,
    materially_worse,
    transitions,
)

__all__ = [
    "ALERTS_FILE",
    "ALERTS_SQL",
    "ALERTS_TABLE",
    "DIMENSION_ORDER",
    "EVENT_ORDER",
    "HISTORY_COLUMNS",
    "HISTORY_TABLE",
    "NOTIFY_EVENTS",
    "OUTBOX_COLUMNS",
    "OUTBOX_TABLE",
    "RUNS_COLUMNS",
    "RUNS_TABLE",
    "SEVERITY_RANK",
    "TIER_ORDER",
    "AlertConfig",
    "AlertDeliveryError",
    "Item",
    "Rule",
    "SmtpSettings",
    "alert_message",
    "at_risk_customers",
    "check_rules_cover_targets",
    "dimension_text",
    "ensure_tables",
    "load_alert_config",
    "materially_worse",
    "parse_addresses",
    "process_alerts",
    "resolve_recipients",
    "send_now",
    "send_pending",
    "smtp_settings_from_connection",
    "transitions",
    "uncovered_targets",
]
