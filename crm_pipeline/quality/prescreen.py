"""Which raw versions could fail a table's row suite: one SQL condition, so that Great
Expectations checks those versions only.

Running every expectation over every version in pandas was most of validation's time (the
frame built row by row, GX's per-expectation bookkeeping over object columns), although on a
normal night almost every version passes every rule. The row suite itself stays the judge:
this module translates each of its expectations into a SQL condition that is true for every
version the expectation could flag (a superset: a few versions that pass are let through to
GX too, none that fails is kept from it), over the raw text columns, in DuckDB's dialect.
The versions outside the condition pass every expectation by construction and are added to
each expectation's element count, so `ops.dq_results`, the findings and the Data Docs are the
same as when GX reads every version (tests/unit/test_quality.py checks both ways).

An expectation this module does not know makes every version a suspect: a new rule is
correct before it is fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import great_expectations.expectations as gxe

from crm_pipeline import source_schema as ss
from crm_pipeline.quality.rules import _LIMITS, _PATTERNS, NET_DIFF, column_kind

__all__ = ["suspect_condition"]

_CAST = {"number": "double", "integer": "double", "timestamp": "timestamp", "date": "timestamp"}
_FK_MARK = "__in_"
_MAX_LISTED_ORPHANS = 50_000


def _param(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return params[value["$PARAMETER"]]
    return value


class _Columns:
    """Frame columns of check_frame as SQL over the raw text columns (alias r)."""

    def __init__(self, table: str, orphans: Mapping[str, set[str]], batches: str):
        self.table = table
        self.orphans = orphans
        self.batches = batches
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        """A bound parameter for `value`: $p0, $p1, ... (DuckDB's syntax: the condition runs
        on the DuckDB connection as is), its value kept in `params`."""
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def literal(self, value: Any) -> str:
        """A range's limit, bound: a time as its text cast to timestamp (as the literal
        `timestamp '...'` was), a number as a double."""
        if hasattr(value, "isoformat"):
            return f"cast({self.bind(value.isoformat(sep=' '))} as timestamp)"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.bind(float(value))
        return self.bind(value)

    def raw(self, frame_column: str) -> str | None:
        name = frame_column.removesuffix("__text")
        return f"r.{name}" if name in ss.SOURCE_TABLES[self.table].columns else None

    def typed(self, frame_column: str) -> str | None:
        """The value check_frame gives the column (null where it does not parse)."""
        if frame_column == NET_DIFF:
            n, g, d = (self.typed(c) for c in ("net_amount", "gross_amount", "discount_amount"))
            return f"({n} - ({g} - {d}))"
        raw = self.raw(frame_column)
        if raw is None or frame_column.endswith("__text"):
            return raw
        kind = column_kind(self.table, frame_column)
        if kind == "text":
            return raw
        if kind == "boolean":
            return None
        return f"try_cast({raw} as {_CAST[kind]})"

    def condition(self, cond: Any) -> str | None:
        """A GX row condition on a text column, or None (then the check applies to all)."""
        kind = getattr(cond, "type", None)
        column = getattr(getattr(cond, "column", None), "name", None)
        if column is None or column_kind(self.table, column) != "text":
            return None
        raw = self.raw(column)
        if kind == "comparison" and cond.operator == "==" and isinstance(cond.parameter, str):
            return f"{raw} = {self.bind(cond.parameter)}"
        if kind == "nullity":
            return f"{raw} is {'' if cond.is_null else 'not '}null"
        return None


def _parses(raw: str, kind: str, cols: _Columns) -> str:
    """check_frame's parse (rules.parse_values) in SQL: the text matches and casts."""
    ok = f"regexp_full_match({raw}, {cols.bind(_PATTERNS[kind].pattern)})"
    if kind in ("number", "integer"):
        ok += f" and abs(try_cast({raw} as double)) <= {cols.bind(_LIMITS[kind])}"
    elif kind in ("timestamp", "date"):
        ok += f" and {raw} not like '0000%' and try_cast({raw} as timestamp) is not null"
    return ok


def _flagged(e: gxe.Expectation, cols: _Columns, params: Mapping[str, Any]) -> str | None:
    """SQL true for every version `e` could flag; None: `e` judges no row; 'true': unknown."""
    if isinstance(e, gxe.ExpectTableColumnsToMatchSet):
        return None
    kind = getattr(e, "kind", None)
    if type(e).__name__ == "ExpectColumnValuesToParseAs" and kind in _PATTERNS:
        raw = cols.raw(e.column)
        return None if raw is None else f"({raw} is not null and not ({_parses(raw, kind, cols)}))"
    if isinstance(e, gxe.ExpectColumnValuesToNotBeNull):
        value = cols.typed(e.column)
        return None if value is None else f"({value} is null)"
    if isinstance(e, gxe.ExpectColumnValuesToBeNull):
        value = cols.raw(e.column)
        out = None if value is None else f"{value} is not null"
    elif isinstance(e, gxe.ExpectColumnValuesToBeInSet) and _FK_MARK in e.column:
        column = e.column.split(_FK_MARK)[0]
        orphans = cols.orphans.get(column, set())
        if len(orphans) > _MAX_LISTED_ORPHANS:
            return f"(r.{column} is not null)"
        if not orphans:
            return None
        return f"(r.{column} in ({', '.join(cols.bind(v) for v in sorted(orphans))}))"
    elif isinstance(e, gxe.ExpectColumnValuesToBeInSet):
        value = cols.typed(e.column)
        if value is None or column_kind(cols.table, e.column.removesuffix("__text")) != "text":
            return "true"
        allowed = ", ".join(cols.bind(v) for v in e.value_set)
        out = f"{value} is not null and {value} not in ({allowed})"
    elif isinstance(e, gxe.ExpectColumnValuesToBeBetween):
        value = cols.typed(e.column)
        if value is None:
            return "true"
        lo, hi = _param(e.min_value, params), _param(e.max_value, params)
        if e.column == NET_DIFF:  # pandas rounds the difference to 6 places: a margin
            tol = min(abs(float(lo)), abs(float(hi)))
            return f"(abs({value}) > {cols.bind(tol - 1e-6)})"
        parts = []
        if lo is not None:
            parts.append(f"{value} {'<=' if e.strict_min else '<'} {cols.literal(lo)}")
        if hi is not None:
            parts.append(f"{value} {'>=' if e.strict_max else '>'} {cols.literal(hi)}")
        if not parts:
            return None
        out = "(" + " or ".join(parts) + ")"
    elif isinstance(e, gxe.ExpectColumnPairValuesAToBeGreaterThanB):
        a, b = cols.typed(e.column_A), cols.typed(e.column_B)
        if a is None or b is None:
            return "true"
        out = f"{a} {'<' if e.or_equal else '<='} {b}"
    elif isinstance(e, gxe.ExpectCompoundColumnsToBeUnique):
        keys = [c for c in e.column_list if c != "_batch_id"]
        raws = [cols.raw(c) for c in keys]
        if None in raws or "_batch_id" not in e.column_list:
            return "true"
        names = ", ".join(r[2:] for r in raws)
        same = " and ".join(f"d.{r[2:]} = {r}" for r in raws)
        duplicated = (
            f"select {names}, _batch_id from raw.{cols.table} where _batch_id in ({cols.batches})"
            f" group by {names}, _batch_id having count(*) > 1"
        )
        return (
            f"(exists (select 1 from ({duplicated}) d where {same} and d._batch_id = r._batch_id))"
        )
    else:
        return "true"
    if out is None:
        return None
    row_condition = getattr(e, "row_condition", None)
    where = cols.condition(row_condition) if row_condition else None
    return f"({out})" if where is None else f"({where} and {out})"


def suspect_condition(
    table: str,
    expectations: Iterable[gxe.Expectation],
    params: Mapping[str, Any],
    orphans: Mapping[str, set[str]],
    batches: str,
) -> tuple[str, dict[str, Any]]:
    """One SQL condition over `raw.<table> r`, for the versions of `batches` (a SQL list of
    batch ids): true for every version any of the row suite's `expectations` could flag
    ('false' when none can flag a row); with the values of its bound parameters ($p0, ...)."""
    cols = _Columns(table, orphans, batches)
    parts = [p for p in (_flagged(e, cols, params) for e in expectations) if p is not None]
    if "true" in parts:
        return "true", {}
    return (" or ".join(parts), cols.params) if parts else ("false", {})
