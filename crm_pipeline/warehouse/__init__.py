"""The warehouse layer: the engine and its rebuild patterns (`engine`), frames in and out
(`frames`), and every table declared in Python (`tables`). Stages import `Warehouse` from
here and their table definitions from `crm_pipeline.warehouse.tables`; none declares DDL
of its own."""

from crm_pipeline.warehouse.engine import (
    SCHEMAS,
    Warehouse,
    WarehouseLockedError,
    sql_literal,
)

__all__ = ["SCHEMAS", "Warehouse", "WarehouseLockedError", "sql_literal"]
