"""The demo source database: schema reset, bulk inserts, updates, demo_meta, reading back.

Why: the simulation works in internal units (timestamps as epoch seconds, money as cents, ids
as integers); this module converts them when written (SQLite through the raw DBAPI in
SQLAlchemy's storage format, other URLs through SQLAlchemy Core) and back when advance()
reads the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import sqlalchemy as sa

from crm_devtools.demo.draws import _date_of
from crm_devtools.demo.settings import DAY, ID_FORMATS, NULL
from crm_pipeline import source_schema as ss

# --------------------------------------------------------------------------------------
# Storage.
# --------------------------------------------------------------------------------------

_meta_md = sa.MetaData()
demo_meta = sa.Table(
    "demo_meta",
    _meta_md,
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("value", sa.String(), nullable=False),
)
_TIME_OF_DAY: list[str] = []
_BATCH = 100_000


def _time_of_day_strings() -> list[str]:
    if not _TIME_OF_DAY:
        _TIME_OF_DAY.extend(
            f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000" for s in range(DAY)
        )
    return _TIME_OF_DAY


def _convert(column: sa.Column, values: np.ndarray, sqlite: bool) -> list:
    """Internal column -> DBAPI values (SQLite: SQLAlchemy's own storage format) or
    Python objects for SQLAlchemy Core. Text columns carry None for NULL already; every
    other column is integer-coded internally with NULL (-1) for a missing value."""
    kind = column.type
    if column.name not in ID_FORMATS and not isinstance(kind, _CODED_TYPES):
        return np.asarray(values).tolist()
    ints = np.asarray(values).astype(np.int64)
    if column.name in ID_FORMATS:
        prefix, width = ID_FORMATS[column.name]
        out = [prefix + str(v).zfill(width) for v in ints.tolist()]
    elif isinstance(kind, sa.DateTime):
        out = _timestamps(ints, sqlite)
    elif isinstance(kind, sa.Date):
        out = [_date_of(v).isoformat() if sqlite else _date_of(v) for v in ints.tolist()]
    elif isinstance(kind, sa.Numeric):  # cents
        out = (ints / 100).tolist() if sqlite else [Decimal(c).scaleb(-2) for c in ints.tolist()]
    elif isinstance(kind, sa.Boolean):
        out = ints.tolist() if sqlite else ints.astype(bool).tolist()
    else:
        out = ints.tolist()
    if column.nullable:
        for i in np.flatnonzero(ints == NULL).tolist():
            out[i] = None
    return out


_CODED_TYPES = (sa.DateTime, sa.Date, sa.Numeric, sa.Integer, sa.Boolean)


def _timestamps(sec: np.ndarray, sqlite: bool) -> list:
    """Epoch seconds -> naive UTC datetimes, or for SQLite the text SQLAlchemy stores."""
    if not sqlite:
        return sec.astype("datetime64[s]").astype(object).tolist()
    valid = sec != NULL
    if not valid.any():
        return [None] * sec.size
    sec = np.where(valid, sec, sec[valid][0])  # NULLs are patched back by the caller
    days = sec // DAY
    lo = int(days.min())
    dates = [_date_of(lo + i).isoformat() for i in range(int(days.max()) - lo + 1)]
    tod = _time_of_day_strings()
    pairs = zip((days - lo).tolist(), (sec - days * DAY).tolist(), strict=True)
    return [dates[a] + tod[b] for a, b in pairs]


class _Store:
    """The source database: schema reset, bulk inserts, updates and demo_meta."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    def reset(self) -> None:
        with self.engine.begin() as conn:
            _meta_md.drop_all(conn)
            ss.metadata.drop_all(conn)
            ss.metadata.create_all(conn)
            _meta_md.create_all(conn)

    def _rows(self, table: str, columns: dict[str, np.ndarray], sqlite: bool) -> tuple:
        t = ss.metadata.tables[table]
        names = [c for c in ss.SOURCE_TABLES[table].columns if c in columns]
        return names, [_convert(t.c[c], columns[c], sqlite) for c in names]

    def bulk_insert(self, tables: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
        """Insert many rows in one transaction: raw executemany for SQLite, Core otherwise."""
        counts = {}
        if self.sqlite:
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=OFF")
                for table, columns in tables.items():
                    names = [c for c in ss.SOURCE_TABLES[table].columns if c in columns]
                    marks = ", ".join("?" * len(names))
                    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
                    n = len(columns[names[0]])
                    for lo in range(0, n, _BATCH):  # batches bound the Python objects alive
                        batch = {c: columns[c][lo : lo + _BATCH] for c in names}
                        _, cols = self._rows(table, batch, sqlite=True)
                        cur.executemany(sql, zip(*cols, strict=True))
                    counts[table] = n
                raw.commit()
            finally:
                raw.close()
            return counts
        with self.engine.begin() as conn:
            for table, columns in tables.items():
                counts[table] = self.insert(conn, table, columns)
        return counts

    def insert(self, conn, table: str, columns: dict[str, np.ndarray]) -> int:
        """SQLAlchemy Core executemany, in batches."""
        n = len(next(iter(columns.values())))
        for lo in range(0, n, _BATCH):
            batch = {c: v[lo : lo + _BATCH] for c, v in columns.items()}
            names, cols = self._rows(table, batch, sqlite=False)
            rows = [dict(zip(names, r, strict=True)) for r in zip(*cols, strict=True)]
            conn.execute(ss.metadata.tables[table].insert(), rows)
        return n

    def update(self, conn, table: str, columns: dict[str, np.ndarray]) -> int:
        """Update rows by key; `columns` holds the key columns and the new values."""
        t = ss.metadata.tables[table]
        names, cols = self._rows(table, columns, sqlite=False)
        if not cols or not cols[0]:
            return 0
        key = ss.SOURCE_TABLES[table].key
        stmt = (
            t.update()
            .where(*[t.c[k] == sa.bindparam(f"k_{k}") for k in key])
            .values({c: sa.bindparam(f"v_{c}") for c in names if c not in key})
        )
        params = [
            {(f"k_{n}" if n in key else f"v_{n}"): v for n, v in zip(names, r, strict=True)}
            for r in zip(*cols, strict=True)
        ]
        conn.execute(stmt, params)
        return len(params)

    def add_indexes(self) -> None:
        """updated_at indexes for incremental extraction, and the lookups advance() does.
        Created after the bulk load (faster) and outside the shared schema metadata."""
        ddl = [f"CREATE INDEX ix_{t}_updated_at ON {t} (updated_at)" for t in ss.TABLE_ORDER]
        ddl += [
            "CREATE INDEX ix_orders_customer ON orders (customer_id, ordered_at)",
            "CREATE INDEX ix_orders_ordered_at ON orders (ordered_at)",
            "CREATE INDEX ix_complaints_customer ON complaints (customer_id)",
            "CREATE INDEX ix_contacts_contacted_at ON campaign_contacts (contacted_at)",
        ]
        with self.engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)

    def read_meta(self, conn) -> dict[str, str]:
        try:
            return dict(conn.execute(sa.select(demo_meta.c.key, demo_meta.c.value)).all())
        except sa.exc.DBAPIError as exc:
            raise RuntimeError("no demo data here: run generate() first") from exc

    def write_meta(self, conn, meta: dict[str, object]) -> None:
        conn.execute(demo_meta.delete())
        conn.execute(demo_meta.insert(), [{"key": k, "value": str(v)} for k, v in meta.items()])


def _column_arrays(conn, stmt, n_columns: int) -> list[list]:
    rows = conn.execute(stmt).all()
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n_columns)]


def _epoch(values: Sequence) -> np.ndarray:
    """datetimes (or None) -> epoch seconds (NULL)."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    arr = np.array(values, dtype="datetime64[s]")
    return np.where(np.isnat(arr), NULL, arr.astype(np.int64))


def _naive(seconds: int) -> dt.datetime:
    """Epoch seconds -> naive UTC datetime, for query bounds."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(seconds))


def _id_numbers(values: Sequence) -> np.ndarray:
    return np.array([NULL if v is None else int(v[1:]) for v in values], dtype=np.int64)
