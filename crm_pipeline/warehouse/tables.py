"""Every table the pipeline declares in Python, in one registry.

Two kinds of warehouse table exist. Those built from a SQL file (staging, fct_orders,
the snapshot marts, dim_customer) are defined by that file under include/sql and created
by `create table ... as`. The others are appended to row by row or frame by frame: the raw
versions and the bookkeeping of every stage (`ops`), the quarantine, the model and
evaluation marts, the alert state and outbox. They are declared here, once, with their
grain, and every stage creates what it writes with `Warehouse.ensure(conn, *tables)`.

Types are the common subset of DuckDB and PostgreSQL, so one declaration serves both.
A table is only ever created if missing; a nullable column added here is added to a
table an earlier version made by `Warehouse.ensure` (null in the rows already there),
in the one place, not by an `alter` hidden in a stage. Any other change is a migration
by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from crm_pipeline.source_schema import SOURCE_TABLES


@dataclass(frozen=True)
class Table:
    """One table: qualified name, its columns (name -> SQL type and constraints), its grain."""

    name: str
    columns: Mapping[str, str]
    grain: str
    temporary: bool = False

    def ddl(self) -> str:
        cols = ", ".join(f"{name} {kind}" for name, kind in self.columns.items())
        if self.temporary:
            return f"create temporary table {self.name} ({cols})"
        return f"create table if not exists {self.name} ({cols})"

    @property
    def schema(self) -> str | None:
        return None if self.temporary else self.name.split(".")[0]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


def _table(name: str, grain: str, temporary: bool = False, **columns: str) -> Table:
    return Table(name, MappingProxyType(dict(columns)), grain, temporary)


# -- raw and extraction ---------------------------------------------------------------------
META_COLUMNS = ("_row_hash", "_batch_id")

RAW: Mapping[str, Table] = MappingProxyType(
    {
        spec.name: Table(
            f"raw.{spec.name}",
            MappingProxyType(
                {
                    **{c: "varchar" for c in spec.columns},
                    "_row_hash": "varchar not null",
                    "_batch_id": "bigint not null",
                }
            ),
            f"one row per version of a source {spec.name} row, every column as the source's text",
        )
        for spec in SOURCE_TABLES.values()
    }
)

WATERMARKS = _table(
    "ops.watermarks",
    "one row per source table: the highest updated_at pulled",
    table_name="varchar primary key",
    watermark="varchar not null",
    batch_id="bigint not null",
)
EXTRACT_BATCHES = _table(
    "ops.extract_batches",
    "one row per pull of one source table",
    batch_id="bigint primary key",
    table_name="varchar not null",
    run_id="varchar not null",
    as_of_date="date not null",
    watermark_from="varchar",
    watermark_to="varchar",
    rows_read="bigint not null",
    new_versions="bigint not null",
    source_columns="varchar not null",
    missing_columns="varchar not null",
)


def incoming(columns: tuple[str, ...] | list[str], hashed: bool = False) -> Table:
    """The rows of one pull, as the source gave them (text), with or without their hash."""
    return Table(
        "_incoming",
        MappingProxyType(
            {**{c: "varchar" for c in columns}, **({"_row_hash": "varchar"} if hashed else {})}
        ),
        "one row per source row pulled tonight",
        temporary=True,
    )


# -- validation -----------------------------------------------------------------------------
QUARANTINE_ROWS = _table(
    "quarantine.rows",
    "one row per (version, rule) found bad; released_at set when it heals",
    table_name="varchar not null",
    row_key="varchar not null",
    row_hash="varchar not null",
    rule="varchar not null",
    column_name="varchar",
    value="varchar",
    as_of_date="date not null",
    run_id="varchar not null",
    released_at="timestamp",
    release_run_id="varchar",
)
VALIDATED_BATCHES = _table(
    "ops.validated_batches",
    "one row per extract batch validated (or stopped) by a run",
    batch_id="bigint not null",
    table_name="varchar not null",
    run_id="varchar not null",
    as_of_date="date not null",
    status="varchar not null",
    rows_validated="bigint",
    quarantined="bigint",
    validated_at="timestamp",
)
DQ_RESULTS = _table(
    "ops.dq_results",
    "one row per (run, table, expectation): GX's result in figures",
    run_id="varchar not null",
    as_of_date="date not null",
    table_name="varchar not null",
    expectation="varchar not null",
    column_name="varchar",
    level="varchar not null",
    success="boolean not null",
    observed_value="varchar",
    unexpected_count="bigint",
    element_count="bigint",
    rule="varchar not null",
    suite="varchar not null",
)
TABLE_STATUS = _table(
    "ops.table_status",
    "one row per (day, source table): usable, quarantined, failed, stale",
    as_of_date="date not null",
    table_name="varchar not null",
    status="varchar not null",
    run_id="varchar not null",
    detail="varchar",
    rows_validated="bigint",
    quarantined="bigint",
    validated_at="timestamp",
)

DQ_FINDINGS = _table(
    "_dq_findings",
    "one row per (version, rule) GX flagged in this table tonight",
    temporary=True,
    table_name="varchar",
    row_key="varchar",
    row_hash="varchar",
    rule="varchar",
    column_name="varchar",
    value="varchar",
    level="varchar",
)
DQ_PROBE = _table(
    "_dq_probe",
    "one row per held version re-checked",
    temporary=True,
    row_hash="varchar",
)
DQ_VALUES = _table(
    "_dq_values",
    "one row per distinct foreign-key value looked up",
    temporary=True,
    v="varchar",
)

# -- staging --------------------------------------------------------------------------------
STAGING_STATE = _table(
    "ops.staging_state",
    "one row per staging table: its SQL's digest and the last batch in it",
    table_name="varchar not null",
    sql_md5="varchar not null",
    last_batch_id="bigint not null",
)
STAGING_HELD = _table(
    "ops.staging_held",
    "one row per version held out of staging when it was last built",
    table_name="varchar not null",
    row_hash="varchar not null",
)

# -- models ---------------------------------------------------------------------------------
MODEL_RUNS = _table(
    "ops.model_runs",
    "one row per (run, day, model): status, params, metrics, gate checks",
    run_id="varchar",
    as_of_date="date",
    model="varchar",
    model_version="varchar",
    status="varchar",
    passed="boolean",
    published="boolean",
    params="text",
    metrics="text",
    checks="text",
    message="text",
    fit_seconds="double precision",
    n_customers="integer",
    recorded_at="timestamp",
)
CUSTOMER_CLV = _table(
    "marts.customer_clv",
    "one row per (day, buyer): BG/NBD + Gamma-Gamma value",
    as_of_date="date",
    customer_id="varchar",
    frequency="integer",
    recency="integer",
    t="integer",
    monetary_value="decimal(14, 2)",
    p_alive="double precision",
    expected_purchases="double precision",
    expected_avg_value="decimal(14, 2)",
    margin_ratio="double precision",
    clv="decimal(14, 2)",
    historic_value="decimal(14, 2)",
    historic_margin="decimal(14, 2)",
    horizon_days="integer",
    model_version="varchar",
    run_id="varchar",
)
CUSTOMER_CHURN_RISK = _table(
    "marts.customer_churn_risk",
    "one row per (day, active customer): churn risk and reasons",
    as_of_date="date",
    customer_id="varchar",
    churn_probability="double precision",
    risk_band="varchar",
    top_reasons="varchar",
    model_version="varchar",
    run_id="varchar",
)
MODEL_TRAINING = _table(
    "ops.model_training",
    "one row per (training day, model version): the week's churn classifier and the CLV "
    "holdout, trained once and used by every night of the week",
    training_day="date",
    model_version="varchar",
    run_id="varchar",
    status="varchar",
    record="text",
    model="text",
    recorded_at="timestamp",
)
#: what the models stage writes; the marts exist (empty) before it first passes its gate
MODEL_TABLES = (MODEL_RUNS, MODEL_TRAINING, CUSTOMER_CLV, CUSTOMER_CHURN_RISK)
#: the scores in Python, handed to include/sql/models/customer_clv.sql
CLV_SCORES = _table(
    "clv_scores_next",
    "one row per buyer scored tonight",
    temporary=True,
    customer_id="varchar",
    frequency="integer",
    recency="integer",
    t="integer",
    monetary_value="double precision",
    p_alive="double precision",
    expected_purchases="double precision",
    expected_avg_value="double precision",
    margin_ratio="double precision",
    clv="double precision",
    historic_value="double precision",
    historic_margin="double precision",
    horizon_days="integer",
    model_version="varchar",
    run_id="varchar",
)
#: the scores in Python, handed to include/sql/models/customer_churn_risk.sql
CHURN_SCORES = _table(
    "churn_scores_next",
    "one row per active customer scored tonight",
    temporary=True,
    customer_id="varchar",
    churn_probability="double precision",
    risk_band="varchar",
    top_reasons="varchar",
    model_version="varchar",
    run_id="varchar",
)

# -- evaluation and alerts ------------------------------------------------------------------
KPI_EVALUATION = _table(
    "marts.kpi_evaluation",
    "one row per (day, KPI, dimension, dimension value)",
    as_of_date="date",
    kpi="varchar",
    dimension="varchar",
    dimension_value="varchar",
    value="double precision",
    target="double precision",
    direction="varchar",
    status="varchar",
    baseline="double precision",
    change_vs_baseline="double precision",
    baseline_low="double precision",
    baseline_high="double precision",
    baseline_days="integer",
    reference="double precision",
    reference_low="double precision",
    reference_high="double precision",
    change_vs_reference="double precision",
    past_target_since="date",
    outside_band_since="date",
    n="double precision",
    interval_low="double precision",
    interval_high="double precision",
    target_breached="boolean",
    unusual_move="boolean",
    slow_move="boolean",
    flagged="boolean",
    reason="varchar",
    run_id="varchar",
)
ALERT_HISTORY = _table(
    "ops.alert_history",
    "one row per (day, alert): its state and what was notified",
    as_of_date="date",
    alert_id="varchar",
    kpi="varchar",
    dimension="varchar",
    dimension_value="varchar",
    severity="varchar",
    state="varchar",
    event="varchar",
    message="varchar",
    first_seen="date",
    last_seen="date",
    last_notified_at="timestamp",
    last_notified_date="date",
    value="double precision",
    target="double precision",
    baseline="double precision",
    change_vs_baseline="double precision",
    last_value_notified="double precision",
    last_severity_notified="varchar",
    message_id="varchar",
    run_id="varchar",
)
ALERT_RUNS = _table(
    "ops.alert_runs",
    "one row per (day, run) of the alert stage",
    as_of_date="date",
    run_id="varchar",
    firing="integer",
    notified_items="integer",
    message_id="varchar",
)
ALERT_OUTBOX = _table(
    "ops.alert_outbox",
    "one row per email composed: pending, sending, sent or held",
    message_id="varchar",
    as_of_date="date",
    run_id="varchar",
    subject="varchar",
    sender="varchar",
    recipients="varchar",
    mime_text="varchar",
    state="varchar",
    attempts="integer",
    last_error="varchar",
    sent_at="timestamp",
)

#: what every stage stands on: raw versions, the extraction ledger and the quarantine
FOUNDATION = (WATERMARKS, EXTRACT_BATCHES, QUARANTINE_ROWS, *RAW.values())

# -- the public interface -------------------------------------------------------------------
#: The marts analysts query and other DAGs schedule on (the public interface:
#: docs/data_dictionary.md "marts (public)"), in build order. Those not declared above are
#: built from SQL: include/sql/marts/<name>.sql, and marts.alerts from the alert state
#: (crm_pipeline.alerts). The DAG declares each as an Airflow asset, an outlet of the one
#: task that writes it (plugins/crm_airflow.py).
PUBLIC_MARTS: tuple[str, ...] = (
    "marts.fct_orders",
    "marts.customer_rfm",
    "marts.customer_value_tier",
    "marts.kpi_daily",
    "marts.segment_migration",
    CUSTOMER_CLV.name,
    CUSTOMER_CHURN_RISK.name,
    "marts.dim_customer",
    KPI_EVALUATION.name,
    "marts.alerts",
)
