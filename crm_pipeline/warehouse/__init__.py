"""The warehouse layer: the engine and its rebuild patterns (`engine`), frames in and out
(`frames`), and every table declared in Python (`tables`). Stages import `Warehouse` from
here and their table definitions from `crm_pipeline.warehouse.tables`; none declares DDL
of its own.

What belongs here: how the pipeline talks to the warehouse, whatever it computes: the
connection and its transactions, waiting for a locked DuckDB file, the rebuild patterns,
filling SQL placeholders with typed literals, reading and bulk-loading frames, and the
declarations (name, columns, types, grain) of every table not built from a SQL file.
What does not: what a table holds or how it is computed (the stages, include/sql), which
rows a stage reads or writes (its own module), business settings, and Airflow
(plugins/crm_airflow.py reads the `crm_warehouse` connection, `crm_pipeline.config` makes
it a URL, and a `Warehouse` is built from that URL).

The engine is imported on first use, not with the package: the DAG reads the table
registry (`tables.PUBLIC_MARTS`, its Airflow assets) when the scheduler parses it, which
must not load SQLAlchemy and pandas."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crm_pipeline.warehouse.engine import (
        SCHEMAS,
        Warehouse,
        WarehouseLockedError,
        sql_literal,
    )

__all__ = ["SCHEMAS", "Warehouse", "WarehouseLockedError", "sql_literal"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crm_pipeline.warehouse import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
