"""Alert settings: include/config/alerts.yaml read into AlertConfig (rules, recipients,
email and at-risk settings, delivery), the recipients' addresses, and how to reach the SMTP
server (SmtpSettings, from the Airflow `smtp_default` connection).

Also the check that every target of targets.yaml has a rule that alerts on it, and the
words for a dimension value that the stored messages and the email share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from crm_pipeline.config import config_path, read_settings
from crm_pipeline.errors import ConfigError
from crm_pipeline.kpi.targets import Targets

ALERTS_FILE = config_path("alerts")


@dataclass(frozen=True)
class Rule:
    kpi: str
    dimensions: Mapping[str, tuple[str, ...] | None]  # None: every value
    on: tuple[str, ...] = ("breach", "unusual", "slow")
    worsen_by: float | None = None
    notify: bool = True

    def matches(self, kpi: str, dimension: str, value: str) -> bool:
        if kpi != self.kpi or dimension not in self.dimensions:
            return False
        values = self.dimensions[dimension]
        return values is None or value in values

    def fires(self, row: Mapping[str, Any]) -> str | None:
        """The severity of the alert this rule raises on the row, or None if it does not fire.

        `fire_on` decides whether the rule fires; the severity tells the KPI's state:
        breach when its target is breached, warning when it only left its normal band (a
        sudden move) or the level of 8 to 12 weeks before (a slow one).
        """
        breached = bool(row.get("target_breached"))
        fired = (
            ("breach" in self.on and breached)
            or ("unusual" in self.on and bool(row.get("unusual_move")))
            or ("slow" in self.on and bool(row.get("slow_move")))
        )
        if not fired:
            return None
        return "breach" if breached else "warning"


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    sender: str = "CRM pipeline <crm-pipeline@localhost>"
    subject_prefix: str = "[CRM]"
    quiet_period_days: int = 7
    worsen_relative: float = 0.10
    chart_days: int = 90
    max_charts: int = 6
    breakdown_dimensions: tuple[str, ...] = ("tier", "segment")
    footer_note: str = ""
    at_risk: Mapping[str, Any] = field(default_factory=dict)
    on_interrupted: str = "resend"

    def rule_for(self, kpi: str, dimension: str, value: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(kpi, dimension, value):
                return rule
        return None


def load_alert_config(
    source: str | Path | Mapping[str, Any] | AlertConfig | None = None,
) -> AlertConfig:
    """Alert settings from YAML (default include/config/alerts.yaml, or $CRM_ALERTS_CONFIG)
    or a parsed mapping."""
    if isinstance(source, AlertConfig):
        return source
    raw = read_settings("alerts", source)
    rules = []
    for item in raw.get("rules") or []:
        dims = {}
        for dim, values in (item.get("dimensions") or {"all": "*"}).items():
            dims[str(dim)] = None if values in ("*", None) else tuple(str(v) for v in values)
        if True in item or "on" in item:  # YAML 1.1 reads a bare `on:` key as true
            raise ConfigError(f"alerts: rule for {item.get('kpi')}: write fire_on, not on")
        on = tuple(item.get("fire_on") or Rule.on)
        if not set(on) <= set(Rule.on):
            raise ConfigError(
                f"alerts: rule for {item.get('kpi')}: fire_on takes breach, unusual and/or slow"
            )
        rules.append(
            Rule(
                kpi=str(item["kpi"]),
                dimensions=dims,
                on=on,
                worsen_by=None if item.get("worsen_by") is None else float(item["worsen_by"]),
                notify=bool(item.get("notify", True)),
            )
        )
    recipients = raw.get("recipients") or {}
    email = raw.get("email") or {}
    on_interrupted = (raw.get("delivery") or {}).get("on_interrupted", "resend")
    if on_interrupted not in ("resend", "hold"):
        raise ConfigError("alerts: delivery.on_interrupted must be resend or hold")
    return AlertConfig(
        rules=tuple(rules),
        to=tuple(parse_addresses(recipients.get("to"))),
        cc=tuple(parse_addresses(recipients.get("cc"))),
        sender=str(raw.get("sender") or AlertConfig.sender),
        subject_prefix=str(raw.get("subject_prefix", "[CRM]")),
        quiet_period_days=int(raw.get("quiet_period_days", 7)),
        worsen_relative=float((raw.get("material_worsening") or {}).get("relative", 0.10)),
        chart_days=int(email.get("chart_days", 90)),
        max_charts=int(email.get("max_charts", 6)),
        breakdown_dimensions=tuple(email.get("breakdown_dimensions") or ("tier", "segment")),
        footer_note=str(email.get("footer_note") or ""),
        at_risk=dict(raw.get("at_risk") or {}),
        on_interrupted=on_interrupted,
    )


def uncovered_targets(config: AlertConfig, targets: Targets) -> list[str]:
    """Every target that no rule would alert on: a KPI with a target and no rule that fires
    on its breach for the whole base (or, for a per-dimension target, for that value).

    A target nobody hears about is a plan nobody watches (a complaints target breached for
    months reached no email): the settings check refuses it. A rule with `notify: false`
    counts, since it records the alert in marts.alerts on purpose.
    """
    missing = []
    for kpi, spec in sorted(targets.kpis.items()):
        wanted = set()
        for version in spec.versions:
            if version.target is not None:
                wanted.add(("all", "all"))
            wanted.update(
                key for key, (target, _) in version.overrides.items() if target is not None
            )
        for dimension, value in sorted(wanted):
            rule = config.rule_for(kpi, dimension, value)
            if rule is None or "breach" not in rule.on:
                missing.append(f"{kpi} ({dimension_text(dimension, value)})")
    return missing


def check_rules_cover_targets(config: AlertConfig, targets: Targets) -> None:
    """Raise ConfigError naming each target that no alert rule fires on."""
    missing = uncovered_targets(config, targets)
    if missing:
        raise ConfigError(
            "targets.yaml sets targets that no rule in alerts.yaml alerts on: "
            + ", ".join(missing)
            + ". Add a rule for each (fire_on including breach; notify: false to record "
            "the alert without emailing it) or remove the target."
        )


def parse_addresses(value: str | Iterable[str] | None) -> list[str]:
    """Addresses from a list or a comma/semicolon-separated string (an Airflow Variable)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for _, addr in getaddresses([str(item).replace(";", ",")]):
            addr = addr.strip()
            if not addr:
                continue
            if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", addr):
                raise ConfigError(f"not an email address: {addr!r}")
            out.append(addr)
    return out


def resolve_recipients(
    config: AlertConfig, override: str | Iterable[str] | Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """(to, cc): the override (e.g. an Airflow Variable) when given, else the YAML's."""
    if override:
        if isinstance(override, Mapping):
            return parse_addresses(override.get("to")), parse_addresses(override.get("cc"))
        return parse_addresses(override), []
    return list(config.to), list(config.cc)


def dimension_text(dimension: str, value: str) -> str:
    if dimension == "all":
        return "all customers"
    if dimension == "tier":
        return f"{value} tier"
    if dimension == "segment":
        return f"{value} segment"
    return f"{dimension} {value}"


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server; the DAG builds it from the `smtp_default` connection."""

    host: str = "127.0.0.1"
    port: int | None = None
    login: str | None = None
    password: str | None = None
    use_ssl: bool = False
    starttls: bool = False
    from_email: str | None = None
    timeout: float = 30.0
    ssl_context: str = "default"  # 'none': no certificate check (lab servers only)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> SmtpSettings:
        known = {k: m[k] for k in cls.__dataclass_fields__ if k in m and m[k] is not None}
        for flag in ("use_ssl", "starttls"):
            if flag in known:
                known[flag] = _truthy(known[flag])
        if "port" in known:
            known["port"] = int(known["port"])
        return cls(**known)

    def describe(self) -> str:
        mode = "ssl" if self.use_ssl else ("starttls" if self.starttls else "plain")
        return f"{self.host}:{self.effective_port} ({mode})"

    @property
    def effective_port(self) -> int:
        return self.port or (465 if self.use_ssl else 587 if self.starttls else 25)


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def smtp_settings_from_connection(conn: Any) -> SmtpSettings:
    """SmtpSettings from an Airflow Connection (or anything with its fields).

    Same reading as the SMTP provider's hook: SSL unless the extra `disable_ssl` is true,
    STARTTLS unless `disable_tls` is true (not both: SSL wins), `from_email`, `timeout`
    and `ssl_context` from the extras. Extras given as strings ('true', 'false', as in an
    AIRFLOW_CONN_SMTP_DEFAULT URI) are read as booleans.
    """
    extra = dict(getattr(conn, "extra_dejson", None) or {})
    use_ssl = not _truthy(extra.get("disable_ssl", False))
    return SmtpSettings(
        host=conn.host or "127.0.0.1",
        port=int(conn.port) if conn.port else None,
        login=conn.login or None,
        password=conn.password or None,
        use_ssl=use_ssl,
        starttls=(not use_ssl) and not _truthy(extra.get("disable_tls", False)),
        from_email=extra.get("from_email") or None,
        timeout=float(extra.get("timeout", 30)),
        ssl_context=str(extra.get("ssl_context") or "default"),
    )
