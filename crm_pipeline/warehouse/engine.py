"""The warehouse: one SQLAlchemy engine over DuckDB (embedded) or PostgreSQL (production).

Everything that writes goes through `Warehouse.begin()`, one transaction per task, and
through two rebuild patterns that readers can never catch half-done:

* `replace_table`: build `x__next`, drop `x`, rename, all in one transaction (tables
  that hold the state as of the latest run: dim_customer, fct_orders, staging);
* `replace_partition`: delete the run date's rows and insert the new ones in one
  transaction (snapshot tables keyed by `as_of_date`).

SQL files are plain SQL with `{{ name }}` placeholders filled with typed literals
(dates, timestamps, numbers) only, so the same file runs on both engines.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from crm_pipeline.config import SQL_DIR, normalise_url
from crm_pipeline.dates import end_of_day
from crm_pipeline.errors import SchemaMismatchError
from crm_pipeline.warehouse import frames, tables
from crm_pipeline.warehouse.tables import Table

log = logging.getLogger(__name__)

SCHEMAS = ("raw", "staging", "marts", "quarantine", "ops")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


class WarehouseLockedError(RuntimeError):
    """The embedded DuckDB file stayed locked by another process for the whole wait."""


class Warehouse:
    """A handle on the warehouse; cheap to create, one per task."""

    def __init__(self, url: str, lock_wait_seconds: float = 600.0, lock_poll_seconds: float = 5.0):
        self.url = normalise_url(url)
        connect_args = {}
        if self.url.startswith("duckdb"):
            # DuckDB takes 80% of the machine's memory by default; cap it and let it spill
            # to disk, so a long history never starves the scheduler beside it
            connect_args["config"] = {
                "memory_limit": os.environ.get("CRM_DUCKDB_MEMORY_LIMIT", "2GB"),
            }
        self.engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        self.dialect = self.engine.dialect.name  # 'duckdb' or 'postgresql'
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_poll_seconds = lock_poll_seconds

    def __repr__(self) -> str:
        return f"Warehouse({self.engine.url.render_as_string(hide_password=True)})"

    # -- connections ---------------------------------------------------------------
    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction; on DuckDB, wait for the file lock with a log line per try.

        DuckDB lets one process at a time open the file for writing, and an analyst's
        session holds a lock too. Rather than fail at once (or silently), the task waits
        up to `lock_wait_seconds`, saying who holds the lock, then fails with that name.
        """
        conn = self._connect()
        try:
            with conn.begin():
                yield conn
        finally:
            conn.close()

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection for several transactions (`with conn.begin():` each), with the same
        wait for the DuckDB file lock as `begin`. A long build commits in parts: on DuckDB,
        what a transaction writes and drops again (temporary tables of each part) is only
        freed when it commits, so one transaction over many parts fills the disk."""
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def _connect(self) -> sa.Connection:
        deadline = time.monotonic() + self.lock_wait_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.engine.connect()
            except sa.exc.DBAPIError as exc:
                message = str(exc.orig or exc)
                if "lock" not in message.lower() or self.dialect != "duckdb":
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLockedError(
                        f"warehouse file {self.engine.url.database} is still locked after "
                        f"{self.lock_wait_seconds:.0f}s: {message.splitlines()[0]} - close other "
                        "sessions on it (analysts: see README, 'Reading the warehouse')"
                    ) from exc
                log.warning(
                    "warehouse file %s is locked by another process (attempt %d): %s; "
                    "retrying in %.0fs",
                    self.engine.url.database,
                    attempt,
                    message.splitlines()[0],
                    self.lock_poll_seconds,
                )
                time.sleep(self.lock_poll_seconds)

    # -- SQL -----------------------------------------------------------------------
    def render(self, sql: str, params: Mapping[str, Any] | None = None) -> str:
        """Fill `{{ name }}` placeholders with typed SQL literals (never free text).

        The result is run with `exec_driver_sql`; psycopg2 reads `%` there as a parameter
        marker, so on PostgreSQL a literal `%` (in a comment, say) is doubled.
        """
        params = dict(params or {})
        if "as_of_date" in params and "as_of_end" not in params:
            params["as_of_end"] = end_of_day(params["as_of_date"])

        def literal(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in params:
                raise KeyError(f"SQL placeholder {{{{ {name} }}}} has no value")
            return sql_literal(params[name])

        rendered = _PLACEHOLDER.sub(literal, sql)
        return rendered.replace("%", "%%") if self.dialect == "postgresql" else rendered

    @staticmethod
    def sql_file(layer: str, name: str) -> str:
        path = Path(SQL_DIR, layer, f"{name}.sql")
        return path.read_text(encoding="utf-8")

    def execute(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None):
        return conn.exec_driver_sql(self.render(sql, params))

    # information_schema and cursor metadata, not SQLAlchemy's inspector: duckdb-engine's
    # inspector runs PostgreSQL catalog queries that DuckDB does not answer
    def tables(self, conn: sa.Connection, schema: str) -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                sa.text(
                    "select table_name from information_schema.tables where table_schema = :s "
                    "order by table_name"
                ),
                {"s": schema},
            )
        ]

    def table_exists(self, conn: sa.Connection, qualified: str) -> bool:
        schema, name = qualified.split(".")
        return name in self.tables(conn, schema)

    def columns(self, conn: sa.Connection, qualified: str) -> list[str]:
        _check_ident(qualified)
        return list(conn.exec_driver_sql(f"select * from {qualified} where 1 = 0").keys())

    # -- rebuild patterns ----------------------------------------------------------
    def replace_table(
        self,
        conn: sa.Connection,
        qualified: str,
        select_sql: str,
        params: Mapping[str, Any] | None = None,
        more_sql: Sequence[str] = (),
    ) -> int:
        """Build-and-swap: readers see the old table until the transaction commits.

        `more_sql`: further selects of the same columns appended before the swap, for a
        table built in parts (each part's rows apart from the others')."""
        _check_ident(qualified)
        nxt = f"{qualified}__next"
        conn.exec_driver_sql(f"drop table if exists {nxt}")
        conn.exec_driver_sql(f"create table {nxt} as {self.render(select_sql, params)}")
        for part in more_sql:
            conn.exec_driver_sql(f"insert into {nxt} {self.render(part, params)}")
        conn.exec_driver_sql(f"drop table if exists {qualified}")
        conn.exec_driver_sql(f"alter table {nxt} rename to {qualified.split('.')[1]}")
        return conn.exec_driver_sql(f"select count(*) from {qualified}").scalar_one()

    def replace_partition(
        self,
        conn: sa.Connection,
        qualified: str,
        select_sql: str,
        params: Mapping[str, Any],
        key: str = "as_of_date",
    ) -> int:
        """Delete-insert of one `as_of_date` (or a range of them) in one transaction.

        `params` carries `as_of_date`, or `date_from`/`date_to` for a set-based range;
        the select must only produce rows inside what it is asked to replace.
        """
        _check_ident(qualified)
        rendered = self.render(select_sql, params)
        conn.exec_driver_sql("drop table if exists _partition_next")
        conn.exec_driver_sql(f"create temporary table _partition_next as {rendered}")
        if not self.table_exists(conn, qualified):
            conn.exec_driver_sql(
                f"create table {qualified} as select * from _partition_next where 1 = 0"
            )
        if "date_from" in params:
            lo, hi = params["date_from"], params["date_to"]
        else:
            lo = hi = params[key]
        conn.exec_driver_sql(
            f"delete from {qualified} where {key} between {sql_literal(lo)} and {sql_literal(hi)}"
        )
        cols = ", ".join(self.columns(conn, qualified))
        conn.exec_driver_sql(f"insert into {qualified} ({cols}) select {cols} from _partition_next")
        inserted = conn.exec_driver_sql("select count(*) from _partition_next").scalar_one()
        conn.exec_driver_sql("drop table _partition_next")
        return inserted

    # -- frames and declared tables ------------------------------------------------
    def read_frame(self, conn: sa.Connection, sql: str) -> pd.DataFrame:
        """A rendered select as a DataFrame, the fast way per engine (warehouse.frames)."""
        return frames.read_frame(self.dialect, conn, sql)

    def bulk_load(self, conn: sa.Connection, qualified: str, frame: pd.DataFrame) -> int:
        """Append a frame to an existing table by column name, the fastest way per engine."""
        return frames.load_frame(self.dialect, conn, qualified, frame)

    def ensure(self, conn: sa.Connection, *declared: Table) -> None:
        """Create the declared tables (warehouse.tables) that are missing, with their schema.

        The foundation (raw versions, extraction ledger, quarantine) comes with every call:
        each stage stands on it, and a stage run first on a new warehouse must find it."""
        wanted = [*tables.FOUNDATION, *(t for t in declared if t not in tables.FOUNDATION)]
        for schema in SCHEMAS:
            conn.exec_driver_sql(f"create schema if not exists {schema}")
        conn.exec_driver_sql("create sequence if not exists ops.batch_id_seq")
        for table in wanted:
            if table.temporary:
                self.create_temp(conn, table)
            else:
                conn.exec_driver_sql(table.ddl())
        for table in declared:
            if not table.temporary and table not in tables.FOUNDATION:
                self._add_missing_columns(conn, table)
        conn.exec_driver_sql(
            "create or replace view quarantine.held_rows as select distinct table_name, "
            "row_hash from quarantine.rows where released_at is null"
        )
        if self.dialect == "postgresql":
            for raw in tables.RAW.values():
                name = raw.name.split(".")[1]
                conn.exec_driver_sql(
                    f"create index if not exists {name}_row_hash_idx on {raw.name} (_row_hash)"
                )

    def _add_missing_columns(self, conn: sa.Connection, table: Table) -> None:
        """Additive schema change: a nullable column declared in warehouse.tables that a
        table made by an earlier version lacks is added (null in the rows already there).
        Anything else (a column dropped, renamed, retyped or not null) is not done silently."""
        have = set(self.columns(conn, table.name))
        for name, kind in table.columns.items():
            if name in have:
                continue
            if "not null" in kind or "primary key" in kind:
                raise SchemaMismatchError(
                    f"{table.name} lacks column {name} ({kind}), which cannot be added to "
                    "rows already there: migrate the table by hand (docs/operations.md, "
                    "Upgrading between versions)"
                )
            log.info("warehouse: adding column %s %s to %s", name, kind, table.name)
            conn.exec_driver_sql(f"alter table {table.name} add column {name} {kind}")

    def create_temp(self, conn: sa.Connection, table: Table) -> None:
        """A declared temporary table, new and empty (a previous one of the name dropped)."""
        conn.exec_driver_sql(f"drop table if exists {table.name}")
        conn.exec_driver_sql(table.ddl())

    def temp_table(
        self,
        conn: sa.Connection,
        name: str,
        frame: pd.DataFrame,
        columns: Mapping[str, str] | None = None,
    ) -> None:
        """A temporary table holding the frame's rows, for SQL to join: of these columns
        (name -> type), or of the frame's own (integers as integer, the rest as text)."""
        columns = columns or {
            c: "integer" if pd.api.types.is_integer_dtype(frame[c]) else "varchar"
            for c in frame.columns
        }
        self.load_declared(
            conn, Table(name, columns, "a frame handed to SQL", temporary=True), frame
        )

    def load_declared(self, conn: sa.Connection, table: Table, frame: pd.DataFrame) -> int:
        """(Re)create a temporary declared table, or ensure a permanent one, and load the
        frame's columns of it."""
        if table.temporary:
            self.create_temp(conn, table)
        else:
            self.ensure(conn, table)
        return self.bulk_load(conn, table.name, frame[table.column_names])

    def ensure_schemas(self) -> None:
        with self.begin() as conn:
            for schema in SCHEMAS:
                conn.exec_driver_sql(f"create schema if not exists {schema}")

    def row_counts(self, schemas: tuple[str, ...] = ("marts",)) -> dict[str, int]:
        """Row count of every table in the given schemas, for the run summary."""
        with self.begin() as conn:
            out = {}
            for schema in schemas:
                for name in self.tables(conn, schema):
                    if name.endswith("__next"):
                        continue
                    out[f"{schema}.{name}"] = conn.exec_driver_sql(
                        f"select count(*) from {schema}.{name}"
                    ).scalar_one()
            return out


def sql_literal(value: Any) -> str:
    """A typed SQL literal for the few kinds of value SQL files are given: None is null
    (`as_of_date = null` matches nothing), a tuple a parenthesised list for `in`."""
    if value is None:
        return "null"
    if isinstance(value, tuple) and value:
        return "(" + ", ".join(sql_literal(v) for v in value) + ")"
    if isinstance(value, dt.datetime):
        return f"timestamp '{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, dt.date):
        return f"date '{value:%Y-%m-%d}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_\- .:]*", value):
        return "'" + value + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__} {value!r}")


def _check_ident(qualified: str) -> None:
    if not _IDENT.match(qualified):
        raise ValueError(f"not a plain table name: {qualified!r}")
