"""The nightly run's steps, one function per DAG task, so the DAG file only wires them.

Each step takes a `Run`: the day the run covers, its id and start time, and where the
source and the warehouse are. Nothing here imports Airflow; the DAG builds the `Run`
from its context and connections, and tests can call the steps directly. Heavy modules
(Great Expectations, scikit-learn, matplotlib) are imported inside the step that needs
them, so a task loads only its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the DAG imports this module at parse time: keep it light
    from crm_pipeline.warehouse import Warehouse


@dataclass(frozen=True)
class Run:
    day: dt.date
    run_id: str
    started: dt.datetime
    warehouse_url: str
    source_url: str = ""
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("CRM_DATA_DIR", "data")))

    @property
    def warehouse(self) -> Warehouse:
        from crm_pipeline.warehouse import Warehouse

        return Warehouse(self.warehouse_url)


def preflight(run: Run, can_mail: bool, engineers: str) -> dict[str, Any]:
    """Refuse, before any work, what would fail later or fail silently.

    * A day that has not ended when the run starts: its rows would be incomplete, and
      validation would see the future (a scheduled run starts after its day; `airflow dags
      test crm_nightly <today>` and a manual trigger for today are refused here).
    * Settings that do not load (include/config/*.yaml): a ConfigError naming the file.
    * A run that can send mail (an smtp_default connection) but has nobody to tell of a
      failure (CRM_DATA_ENGINEERS unset): failures would go unseen.
    """
    from crm_pipeline.dates import end_of_day, naive_utc
    from crm_pipeline.errors import ConfigError, RunDateError

    started = naive_utc(run.started)
    if started < end_of_day(run.day):
        raise RunDateError(
            f"crm_nightly cannot build {run.day}: the day has not ended (the run started "
            f"{started:%Y-%m-%d %H:%M} UTC). A run covers a complete UTC day; the latest one "
            f"that has ended is {started.date() - dt.timedelta(days=1)}."
        )
    checked = check_settings()
    if can_mail and not engineers.strip():
        raise ConfigError(
            "CRM_DATA_ENGINEERS is not set: alert mail is configured (smtp_default), but a "
            "failed night would tell nobody. Set it (comma-separated addresses) in the "
            "environment of the Airflow workers."
        )
    return {
        "day": run.day.isoformat(),
        "settings": checked,
        "data_engineers": engineers.strip() or None,
    }


def check_settings() -> list[str]:
    """Load every settings file as the stages will; a ConfigError names what is wrong."""
    import yaml

    from crm_pipeline.alerts import check_rules_cover_targets, load_alert_config
    from crm_pipeline.config import config_path, deadline, settings
    from crm_pipeline.errors import ConfigError
    from crm_pipeline.kpi.targets import load_targets
    from crm_pipeline.models.settings import load_config as load_models
    from crm_pipeline.quality.settings import load_config as load_validation
    from crm_pipeline.transform.settings import segment_map, sql_params

    checks = {
        "pipeline.yaml": lambda: (segment_map(settings()), sql_params(settings()), deadline()),
        "models.yaml": load_models,
        "validation.yaml": load_validation,
        "targets.yaml": load_targets,
        "alerts.yaml": lambda: check_rules_cover_targets(load_alert_config(), load_targets()),
    }
    for name, load in checks.items():
        try:
            load()
        except (ValueError, KeyError, TypeError, OSError, yaml.YAMLError) as exc:
            kind = "" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: "
            raise ConfigError(f"{config_path(name.removesuffix('.yaml'))}: {kind}{exc}") from exc
    return list(checks)


def extract(run: Run, table: str) -> dict[str, str]:
    from crm_pipeline.extract import extract_table

    stats = extract_table(
        run.source_url, run.warehouse, table, run.day, run.run_id, now=run.started
    )
    return {k: str(v) for k, v in stats.items()}


def validate(run: Run) -> dict[str, Any]:
    # GX's INFO about its own registries and docs sites (~200 lines a run, "Skipping
    # registering function ... closure") buried the validation's lines in the task log: quiet
    # before GX is imported, and again for the one module that sets its own level at import
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from crm_pipeline.quality.stage import validate_run

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

    return validate_run(
        run.warehouse, run.day, run.run_id, now=run.started, docs_dir=run.data_dir / "dq_docs"
    )


def stage(run: Run) -> dict[str, int]:
    from crm_pipeline.transform.staging import build_staging

    return build_staging(run.warehouse)


def build_marts(run: Run, *names: str) -> dict[str, int]:
    from crm_pipeline.transform.marts import build_marts as build

    return build(run.warehouse, names, run.day)


def snapshots(run: Run, history_days: int = 0) -> str:
    """Build the snapshot marts; return the first day built (the KPI evaluation's too).

    `history_days` > 0 rebuilds that many days ending at the run's day; 0 builds the
    configured history on a new warehouse and the run's day otherwise.
    """
    from crm_pipeline.config import settings
    from crm_pipeline.transform.snapshots import build_snapshots, history_start

    wh = run.warehouse
    if history_days:
        first = run.day - dt.timedelta(days=history_days - 1)
    else:
        first = history_start(wh, run.day, int(settings()["kpis"]["history_days"]))
    build_snapshots(wh, first, run.day)
    return first.isoformat()


def models(run: Run) -> dict[str, Any]:
    from crm_pipeline.models.stage import run_models

    return run_models(run.warehouse, run.day, run.run_id)


def evaluate(run: Run, first_day: str) -> dict[str, Any]:
    from crm_pipeline.kpi.evaluate import evaluate_range

    return evaluate_range(run.warehouse, dt.date.fromisoformat(first_day), run.day, run.run_id)


def prepare_alerts(run: Run, recipients: str | None) -> dict[str, Any]:
    from crm_pipeline.alerts import process_alerts

    return process_alerts(run.warehouse, run.day, run.run_id, recipients=recipients)


def send_alerts(run: Run, smtp_connection: Any | None) -> dict[str, Any]:
    """Send the outbox. With no SMTP connection configured at all, the email stays pending
    (ops.alert_outbox) and goes out, once, from the first run that has one."""
    from crm_pipeline.alerts import send_pending, smtp_settings_from_connection

    if smtp_connection is None:
        wh = run.warehouse
        with wh.begin() as conn:
            pending = (
                conn.exec_driver_sql(
                    "select count(*) from ops.alert_outbox where state = 'pending'"
                ).scalar_one()
                if wh.table_exists(conn, "ops.alert_outbox")
                else 0
            )
        log.warning(
            "no smtp_default connection: %d alert email(s) stay pending in "
            "ops.alert_outbox until one is configured",
            pending,
        )
        return {"sent": [], "pending": pending, "reason": "no smtp_default connection"}
    return send_pending(run.warehouse, smtp_settings_from_connection(smtp_connection))


def mart_event(table: str, result: Any) -> dict[str, Any]:
    """What a step's result says of one public mart it writes, for that mart's asset event.

    `published`: whether the step wrote the mart for the run's day. False when a backfill
    kept the newer state of `fct_orders` or `dim_customer`, when a model was skipped (too
    little data), or when the alert state had already moved past the day; a model that
    fails its gate fails its task, and a failed task emits no event at all. `rows`: rows
    written, where the step counts them; `from_date`: the first day of a history rebuilt in
    the same pass (the snapshots and their evaluation on a new warehouse).
    """
    from crm_pipeline.transform.snapshots import SNAPSHOT_MARTS
    from crm_pipeline.warehouse import tables

    if table in ("marts.fct_orders", "marts.dim_customer"):  # build_marts: rows by table
        return {"published": table in result, "rows": result.get(table)}
    if table in {f"marts.{name}" for name in SNAPSHOT_MARTS}:  # snapshots: first day built
        return {"published": True, "from_date": result}
    if table in (tables.CUSTOMER_CLV.name, tables.CUSTOMER_CHURN_RISK.name):  # models
        rows = (result.get("published") or {}).get(table)
        return {"published": rows is not None, "rows": rows}
    if table == tables.KPI_EVALUATION.name:
        return {"published": True, "rows": result.get("rows"), "from_date": result.get("date_from")}
    if table == "marts.alerts":  # process_alerts: skipped for a day older than the state
        return {"published": "skipped" not in result}
    raise KeyError(f"{table} is not a public mart that a step reports on")
