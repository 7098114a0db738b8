"""Frames in and out of the warehouse: one reader and one bulk loader per engine.

Reading: DuckDB hands over a result as columns (no row objects); PostgreSQL streams it
with COPY as CSV, read as text and converted by the column types the server reports, so
a text id such as '00123' stays text. `read_rows` is the plain row-by-row read that
`read_frame` falls back to: its cells are the driver's Python values (None, date), which
is what code judging a few rows one cell at a time (the evaluation's reads of
ops.table_status, the alert state and the at-risk list) was written against; a large
read (a year of kpi_daily) takes `read_frame`. Loading: DuckDB inserts from the registered frame
(no copy); PostgreSQL takes it with COPY. Any other dialect falls back to SQLAlchemy's
row by row (tests and odd warehouses only).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import sqlalchemy as sa

# PostgreSQL type oids that need converting from COPY's text
_PG_INTEGERS = (20, 21, 23)
_PG_FLOATS = (700, 701, 1700)
_PG_TIMES = (1082, 1114, 1184)
_PG_BOOLEAN = 16


def read_frame(dialect: str, conn: sa.Connection, sql: str) -> pd.DataFrame:
    """Run a rendered select and return it as a DataFrame, text columns as Python str."""
    if dialect == "duckdb":
        frame = conn.connection.driver_connection.execute(sql).df()
        for col in frame.columns:
            if frame[col].dtype == object or str(frame[col].dtype).startswith("str"):
                frame[col] = frame[col].astype(object)
        return frame
    if dialect != "postgresql":
        return read_rows(conn, sql)
    cur = conn.connection.driver_connection.cursor()
    sql = sql.replace("%%", "%")  # render() doubled it for exec_driver_sql; COPY takes it raw
    cur.execute(f"select * from ({sql}) as q limit 0")
    types = [(d.name, d.type_code) for d in cur.description]
    buf = io.StringIO()
    cur.copy_expert(f"copy ({sql}) to stdout with (format csv, header true, null '\\N')", buf)
    buf.seek(0)
    frame = pd.read_csv(buf, dtype=str, keep_default_na=False, na_values=["\\N"])
    for name, oid in types:
        if oid in _PG_INTEGERS or oid in _PG_FLOATS:
            frame[name] = pd.to_numeric(frame[name]).astype(float if oid in _PG_FLOATS else "Int64")
            if oid in _PG_INTEGERS and not frame[name].isna().any():
                frame[name] = frame[name].astype(np.int64)
        elif oid in _PG_TIMES:
            frame[name] = pd.to_datetime(frame[name])
        elif oid == _PG_BOOLEAN:
            frame[name] = frame[name].map({"t": True, "f": False})
        else:
            frame[name] = frame[name].astype(object)
    return frame


def read_rows(conn: sa.Connection, sql: str) -> pd.DataFrame:
    """A rendered select read row by row into a DataFrame: cells are the driver's values
    (None for null, datetime.date for a date), on every engine alike."""
    result = conn.exec_driver_sql(sql)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def load_frame(dialect: str, conn: sa.Connection, qualified: str, frame: pd.DataFrame) -> int:
    """Append a frame to an existing table by column name; returns the rows loaded."""
    if frame.empty:
        return 0
    cols = ", ".join(frame.columns)
    if dialect == "duckdb":
        duck = conn.connection.driver_connection
        duck.register("_bulk_frame", frame)
        try:
            conn.exec_driver_sql(f"insert into {qualified} ({cols}) select {cols} from _bulk_frame")
        finally:
            duck.unregister("_bulk_frame")
    elif dialect == "postgresql":
        buf = io.StringIO()
        frame.to_csv(buf, index=False, header=False, na_rep="\\N")
        buf.seek(0)
        cur = conn.connection.driver_connection.cursor()
        cur.copy_expert(f"copy {qualified} ({cols}) from stdin with (format csv, null '\\N')", buf)
    else:
        values = ", ".join(":" + c for c in frame.columns)
        conn.execute(
            sa.text(f"insert into {qualified} ({cols}) values ({values})"),
            frame.to_dict("records"),
        )
    return len(frame)
