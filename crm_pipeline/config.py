"""Every name the pipeline is configured by, in one place.

Connection ids and the pool are constants here (the DAG and the CLI use the same ones);
secrets never are: URLs come from Airflow connections (`AIRFLOW_CONN_*`) or the
environment. Business settings (targets, recipients, model thresholds) live in versioned
YAML under include/config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from crm_pipeline.errors import ConfigError

CRM_SOURCE_CONN_ID = "crm_source"
CRM_WAREHOUSE_CONN_ID = "crm_warehouse"
SMTP_CONN_ID = "smtp_default"
# One slot on the embedded DuckDB file: it admits a single writing process at a time.
WAREHOUSE_POOL = "crm_warehouse"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# include/ (SQL and settings) sits beside the package in a checkout; an installed package
# (the Docker image) is told where it is by CRM_INCLUDE_DIR
INCLUDE_DIR = Path(os.environ.get("CRM_INCLUDE_DIR") or PROJECT_ROOT / "include")
SQL_DIR = INCLUDE_DIR / "sql"
TEMPLATE_DIR = INCLUDE_DIR / "templates"
CONFIG_DIR = INCLUDE_DIR / "config"

_DRIVERS = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
}


def sqlalchemy_url(conn: Any) -> str:
    """Build a SQLAlchemy URL from an Airflow Connection (or anything with its fields).

    Done field by field on purpose: `Connection.get_uri()` percent-encodes the path of
    `sqlite:////abs/file.db` into `sqlite:///%2Fabs%2Ffile.db`, which SQLAlchemy then
    opens as a relative file. An explicit `sqlalchemy_url` in the extras wins.
    """
    extra = dict(getattr(conn, "extra_dejson", None) or {})
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type in ("sqlite", "duckdb"):
        path = conn.schema or conn.host or ""
        if not path:
            raise ConfigError(f"connection {conn.conn_id!r} ({conn_type}) names no database file")
        return f"{conn_type}:///{path}"
    driver = _DRIVERS.get(conn_type, conn_type)
    auth = ""
    if conn.login:
        auth = quote(conn.login, safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        auth += "@"
    port = f":{conn.port}" if conn.port else ""
    query = f"?{urlencode(extra)}" if extra else ""
    return f"{driver}://{auth}{conn.host or ''}{port}/{conn.schema or ''}{query}"


def normalise_url(url: str) -> str:
    """Accept Airflow's URI spelling (`postgres://`) where SQLAlchemy wants its own."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


CONFIG_FILES = ("pipeline", "models", "validation", "targets", "alerts")


def config_path(name: str) -> Path:
    """Where include/config/<name>.yaml is read from: one override convention for all five.

    `CRM_<NAME>_CONFIG` names one file elsewhere (`CRM_MODELS_CONFIG=/etc/crm/models.yaml`);
    `CRM_CONFIG_DIR` moves the whole directory; otherwise include/config. The pipeline file's
    older name `CRM_PIPELINE_SETTINGS` is still read."""
    if name not in CONFIG_FILES:
        raise ValueError(f"no settings file {name!r}: one of {', '.join(CONFIG_FILES)}")
    one = os.environ.get(f"CRM_{name.upper()}_CONFIG")
    if not one and name == "pipeline":
        one = os.environ.get("CRM_PIPELINE_SETTINGS")
    if one:
        return Path(one)
    return Path(os.environ.get("CRM_CONFIG_DIR") or CONFIG_DIR) / f"{name}.yaml"


def read_yaml(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The raw mapping of one settings file (`path`, or `config_path(name)`): the one reader
    every typed loader starts from. A file that is not a mapping is a ConfigError naming it."""
    where = Path(path) if path is not None else config_path(name)
    try:
        with open(where, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top, got {type(raw).__name__}")
    return raw


def read_settings(name: str, source: str | os.PathLike | Mapping[str, Any] | None) -> dict:
    """What a typed loader parses: the file (`source` a path, or None for the configured one)
    or a mapping given in code (tests, a rerun with a setting changed)."""
    if source is None or isinstance(source, str | os.PathLike):
        return read_yaml(name, source)
    return dict(source)


@cache
def settings() -> dict[str, Any]:
    """Pipeline settings (windows, thresholds) from include/config/pipeline.yaml."""
    return read_yaml("pipeline")


@dataclass(frozen=True)
class Deadline:
    """When a night that is not done is told to the data engineers (pipeline.yaml
    `deadline`): `after_queued_minutes` after its run was queued, if `enabled`."""

    enabled: bool
    after_queued_minutes: float


def deadline(values: dict[str, Any] | None = None) -> Deadline:
    """The `deadline` settings, checked: a ConfigError names what is wrong."""
    raw = settings().get("deadline") if values is None else values
    raw = {} if raw is None else raw
    if not isinstance(raw, dict) or set(raw) - {"enabled", "after_queued_minutes"}:
        raise ConfigError(
            f"deadline: expected a mapping with enabled and after_queued_minutes, got {raw!r}"
        )
    enabled = raw.get("enabled", False)
    minutes = raw.get("after_queued_minutes", 120)
    if not isinstance(enabled, bool):
        raise ConfigError(f"deadline.enabled: true or false, got {enabled!r}")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        raise ConfigError(f"deadline.after_queued_minutes: a number above 0, got {minutes!r}")
    return Deadline(enabled, float(minutes))
