"""The warehouse layer: the engine and its rebuild patterns (`engine`), frames in and out
(`frames`), and every table declared in Python (`tables`). Stages import `Warehouse` from
here and their table definitions from `crm_pipeline.warehouse.tables`; none declares DDL
of its own.

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
