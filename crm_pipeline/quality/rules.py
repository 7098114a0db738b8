"""The data-quality rules: what the contract expects of each raw table, as code.

Why a module of its own: the rules are the part people read and change (a new value set, a
new range, a threshold), so they sit apart from the machinery that runs them (`quality.gx`),
from their settings (`quality.settings`) and from the stage that decides what to validate and
what follows from a failure (the stage). Nothing here touches the warehouse, a GX
context or a file: every function is a function of the table, the contract columns the
source had and the settings.

Grain: per table, two Great Expectations 1.x suites, built in `row_expectations` and
`table_expectations`.

* `<table>.rows` runs on a frame of raw versions (one chunk), one row per version, as
  `check_frame` builds it: every contract column typed as staging will cast it, its text as
  extracted in `<column>__text`, and derived columns (`<fk>__in_<parent>`,
  `net_amount__minus_gross_less_discount`);
* `<table>.table` runs on a one-row profile of the table and the run's batches.

Every expectation carries `meta = {"rule", "level", "column", "value_columns"}`; level `row`
(`ROW`) holds the offending versions, level `table` (`TABLE`) fails the table. Parsing text
the way staging casts it (`parse_values`, the custom `ExpectColumnValuesToParseAs`) is here
too. docs/data_quality.md lists the rules.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any, ClassVar

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.expectations.row_conditions import Column as Col
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer
from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric

from crm_pipeline import source_schema as ss

ROW, TABLE = "row", "table"  # an expectation's level: hold the rows, or fail the table

# -- what the contract says about each table ----------------------------------------------------

FOREIGN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "orders": (("customer_id", "customers"),),
    "order_lines": (("order_id", "orders"), ("product_id", "products")),
    "surveys": (("customer_id", "customers"),),
    "complaints": (("customer_id", "customers"),),
    "interactions": (("customer_id", "customers"),),
    "campaign_contacts": (("campaign_id", "campaigns"), ("customer_id", "customers")),
    "loyalty_events": (("customer_id", "customers"),),
}

VALUE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "orders": {"status": ss.ORDER_STATUSES, "channel": ss.ORDER_CHANNELS},
    "surveys": {"survey_type": ss.SURVEY_TYPES},
    "complaints": {"severity": ss.SEVERITIES},
    "interactions": {"channel": ss.INTERACTION_CHANNELS, "direction": ss.DIRECTIONS},
    "campaigns": {"objective": ss.CAMPAIGN_OBJECTIVES},
    "marketing_spend": {"objective": ss.CAMPAIGN_OBJECTIVES},
    "loyalty_events": {"kind": ss.LOYALTY_KINDS},
}

NON_NEGATIVE: dict[str, tuple[str, ...]] = {
    "orders": ("gross_amount", "discount_amount", "net_amount", "cost_amount"),
    "order_lines": ("unit_price", "net_amount"),
    "campaigns": ("spend",),
    "marketing_spend": ("amount",),
}

# Timestamps of things that happened: never after the run's `now`, never after the row's own
# updated_at. Planned dates (campaign start/end, product launch/discontinuation) are not here.
EVENT_TIMESTAMPS: dict[str, tuple[str, ...]] = {
    "customers": ("created_at",),
    "orders": ("ordered_at",),
    "surveys": ("responded_at",),
    "complaints": ("opened_at", *ss.COMPLAINT_STEPS),
    "interactions": ("occurred_at",),
    "campaign_contacts": ("contacted_at", "responded_at"),
    "loyalty_events": ("occurred_at",),
}

# (later, earlier): the later one may not come before the earlier one
PERIODS: dict[str, tuple[tuple[str, str], ...]] = {
    "products": (("discontinued_at", "launched_at"),),
    "campaigns": (("ended_at", "started_at"),),
    "campaign_contacts": (("responded_at", "contacted_at"),),
}

NET_TOLERANCE = 0.01


def column_kind(table: str, column: str) -> str:
    """'number' | 'integer' | 'timestamp' | 'date' | 'boolean' | 'text', from source_schema."""
    col_type = ss.metadata.tables[table].c[column].type
    if isinstance(col_type, Boolean):
        return "boolean"
    if isinstance(col_type, Integer):
        return "integer"
    if isinstance(col_type, Numeric):
        return "number"
    if isinstance(col_type, DateTime):
        return "timestamp"
    if isinstance(col_type, Date):
        return "date"
    return "text"


def _required(table: str, column: str) -> bool:
    return not ss.metadata.tables[table].c[column].nullable


# -- parsing text the way staging will cast it --------------------------------------------------

_PATTERNS = {
    "number": re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"),
    "integer": re.compile(r"[+-]?\d+"),
    "timestamp": re.compile(
        r"\d{4}-\d{2}-\d{2}(?:[ T](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?)?"
    ),
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "boolean": re.compile(r"(?i:true|false|t|f|1|0|yes|no|y|n)"),
}
_LIMITS = {"number": 1e12, "integer": 2**31 - 1}  # decimal(14, 2), integer
_TRUE = {"true", "t", "1", "yes", "y"}
_NS_MIN, _NS_MAX = pd.Timestamp("1678-01-02"), pd.Timestamp("2262-04-10")
KIND_WORDS = {
    "number": "a number",
    "integer": "an integer",
    "timestamp": "a timestamp",
    "date": "a date",
    "boolean": "a boolean",
}


def as_text(values: pd.Series) -> pd.Series:
    """Text as object values with None for null (whatever dtype the driver gave)."""
    return values.astype(object).where(values.notna(), None)


def parse_values(text: pd.Series, kind: str) -> pd.Series:
    """Typed values; null where the text is null or does not parse as `kind` (like a cast).

    Timestamps come back as datetime64[us] (years 1-9999, as the warehouse casts them).
    Values are matched and cast in DuckDB, vectorised: one Python `re` call and one pandas
    conversion per value made half of validation's time."""
    text = as_text(text)
    if kind == "text":
        return text
    pattern = _PATTERNS[kind].pattern
    if kind == "boolean":
        candidate = text.where(pd.Series(_parsed(text, pattern, None), index=text.index), None)
        return candidate.str.lower().isin(_TRUE).astype(object).where(candidate.notna(), None)
    if kind in ("number", "integer"):
        values = pd.Series(_parsed(text, pattern, "double"), index=text.index)
        return values.where(values.abs() <= _LIMITS[kind])
    return pd.Series(_parsed(text, pattern, "timestamp"), index=text.index)


_MATCHER: list[Any] = []


def _parsed(text: pd.Series, pattern: str, cast: str | None) -> np.ndarray:
    """Each value matched whole against `pattern` (RE2, in DuckDB) and, with `cast`, cast
    to it: float64 (NaN) or datetime64[us] (NaT) where it does not match or cast; without,
    whether it matches (False for null). The patterns above are plain enough to mean the
    same in RE2 as in Python's `re`."""
    import duckdb

    if not _MATCHER:
        _MATCHER.append(duckdb.connect())
    con = _MATCHER[0].cursor()  # a cursor of its own: safe from several threads
    con.register("_parse_input", pd.DataFrame({"v": text.to_numpy(dtype=object)}))
    try:
        value = "regexp_full_match(v, ?)"
        if cast == "double":
            value = f"case when {value} then try_cast(v as double) end"
        elif cast == "timestamp":  # DuckDB reads year 0 as 1 BC; the other engines refuse it
            value = f"case when {value} and v not like '0000%' then try_cast(v as timestamp) end"
        out = con.execute(f"select {value} as x from _parse_input", [pattern]).fetchnumpy()["x"]
    finally:
        con.close()
    if cast is None:
        return np.ma.filled(np.ma.asarray(out), False).astype(bool)
    if cast == "double":
        return np.ma.filled(np.ma.asarray(out, dtype=float), np.nan)
    return np.ma.filled(np.ma.asarray(out).astype("datetime64[us]"), np.datetime64("NaT"))


def parses(text: pd.Series, kind: str) -> pd.Series:
    """True where the text is null or parses as `kind`."""
    return text.isna() | parse_values(text, kind).notna()


class ColumnValuesParseAs(ColumnMapMetricProvider):
    """Map metric: the text value parses as the column's contract type (nulls are skipped)."""

    condition_metric_name = "column_values.crm_parse_as"
    condition_value_keys = ("kind",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, kind, **kwargs):
        return parses(column, kind)


class ExpectColumnValuesToParseAs(ColumnMapExpectation):
    """Expect every non-null text value of the column to parse as `kind` (number, integer,
    timestamp, date, boolean), exactly as the staging cast will need it to."""

    kind: str
    map_metric: ClassVar[str] = "column_values.crm_parse_as"
    success_keys: ClassVar[tuple[str, ...]] = ("kind", "mostly")
    args_keys: ClassVar[tuple[str, ...]] = ("column", "kind")

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration=None, result=None, runtime_configuration=None, **kwargs
    ):
        params = dict(configuration.kwargs if configuration else {})
        params["kind_words"] = KIND_WORDS.get(params.get("kind", ""), params.get("kind"))
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": "values must parse as $kind_words (the staging cast).",
                    "params": params,
                    "styling": (runtime_configuration or {}).get("styling"),
                },
            )
        ]


# -- the suites -----------------------------------------------------------------------------------


def _meta(rule: str, level: str, column: str | None, *value_columns: str) -> dict[str, Any]:
    return {
        "rule": rule,
        "level": level,
        "column": column,
        "value_columns": list(value_columns or ([column] if column else [])),
    }


def text_column(table: str, column: str) -> str:
    """The frame column holding a contract column's text as the source gave it."""
    return column if column_kind(table, column) == "text" else f"{column}__text"


def fk_column(column: str, parent: str) -> str:
    return f"{column}__in_{parent}"


NET_DIFF = "net_amount__minus_gross_less_discount"


NOW = {"$PARAMETER": "now"}  # the run's run_after, given when the suite runs
THIS_YEAR = {"$PARAMETER": "this_year"}


def suite_parameters(now: dt.datetime) -> dict[str, Any]:
    return {"now": now, "this_year": now.year}


def _not_before(later: str, earlier: str, rule: str) -> gxe.Expectation:
    """A row-level order between two timestamps of a row, judged where both are set."""
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=later,
        column_B=earlier,
        or_equal=True,
        ignore_row_if="either_value_is_missing",
        meta=_meta(rule, ROW, later, earlier, later),
    )


def row_expectations(
    table: str, present: Iterable[str], cfg: dict[str, Any]
) -> list[gxe.Expectation]:
    """The row suite of a table, for the contract columns the source actually had."""
    spec = ss.SOURCE_TABLES[table]
    present = set(present)
    out: list[gxe.Expectation] = []
    # table-level: the contract's columns are there (extra source columns are allowed) and parse
    out.append(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(spec.columns),
            exact_match=False,
            meta=_meta("column_present", TABLE, None),
        )
    )
    has = present.__contains__
    for col in spec.columns:
        kind = column_kind(table, col)
        if has(col) and kind != "text":
            out.append(
                ExpectColumnValuesToParseAs(
                    column=f"{col}__text", kind=kind, meta=_meta(f"type_{kind}", TABLE, col)
                )
            )
    # keys and required columns
    for col in spec.columns:
        if has(col) and _required(table, col):
            out.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=text_column(table, col), meta=_meta("not_null", ROW, col)
                )
            )
    if all(map(has, spec.key)):
        out.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=[text_column(table, k) for k in spec.key] + ["_batch_id"],
                meta=_meta("unique_key", ROW, ",".join(spec.key), *spec.key),
            )
        )
    for col, parent in FOREIGN_KEYS.get(table, ()):
        if has(col):
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=fk_column(col, parent),
                    value_set=[True],
                    meta=_meta(f"fk_{parent}", ROW, col),
                )
            )
    # value sets
    for col, values in VALUE_SETS.get(table, {}).items():
        if has(col):
            allowed = list(values) + [
                v for v in cfg["extra_values"].get(f"{table}.{col}", []) if v not in values
            ]
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col, value_set=allowed, meta=_meta("accepted_values", ROW, col)
                )
            )
    # ranges
    for col in NON_NEGATIVE.get(table, ()):
        if has(col):
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=0, meta=_meta("non_negative", ROW, col)
                )
            )
    if table == "order_lines" and has("quantity"):
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="quantity",
                min_value=0,
                strict_min=True,
                meta=_meta("positive", ROW, "quantity"),
            )
        )
    if table == "loyalty_events" and has("points") and has("kind"):
        for kind in ("earn", "redeem"):  # a tier_change moves no points (0)
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column="points",
                    min_value=0,
                    strict_min=True,
                    row_condition=Col("kind") == kind,
                    meta=_meta("positive", ROW, "points"),
                )
            )
    if table == "surveys" and has("score") and has("survey_type"):
        for survey_type, lo, hi in (("csat", 1, 5), ("nps", 0, 10)):
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column="score",
                    min_value=lo,
                    max_value=hi,
                    row_condition=Col("survey_type") == survey_type,
                    meta=_meta("score_range", ROW, "score", "survey_type", "score"),
                )
            )
    if table == "customers" and has("birth_year"):
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="birth_year",
                min_value=1900,
                max_value=THIS_YEAR,
                meta=_meta("birth_year_range", ROW, "birth_year"),
            )
        )
    if table == "orders" and all(map(has, ("gross_amount", "discount_amount", "net_amount"))):
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=NET_DIFF,
                min_value=-NET_TOLERANCE,
                max_value=NET_TOLERANCE,
                meta=_meta(
                    "net_equals_gross_minus_discount",
                    ROW,
                    "net_amount",
                    "net_amount",
                    "gross_amount",
                    "discount_amount",
                ),
            )
        )
    # timestamps: not in the future of the run, not after the row's own updated_at
    for col in (*EVENT_TIMESTAMPS.get(table, ()), "updated_at"):
        if has(col):
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, max_value=NOW, meta=_meta("not_in_future", ROW, col)
                )
            )
    for col in EVENT_TIMESTAMPS.get(table, ()):
        if has(col) and has("updated_at"):
            out.append(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="updated_at",
                    column_B=col,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                    meta=_meta("not_after_updated_at", ROW, col, col, "updated_at"),
                )
            )
    for later, earlier in PERIODS.get(table, ()):
        if has(later) and has(earlier):
            out.append(_not_before(later, earlier, "period_order"))
    if table == "complaints":
        chain = ("opened_at", *ss.COMPLAINT_STEPS)
        for earlier, later in zip(chain, chain[1:], strict=False):
            if has(earlier) and has(later):
                out.append(_not_before(later, earlier, "complaint_step_order"))
                if earlier != "opened_at":  # a step is reached only after the one before it
                    out.append(
                        gxe.ExpectColumnValuesToBeNull(
                            column=later,
                            row_condition=Col(earlier).is_null(),
                            meta=_meta("complaint_step_order", ROW, later, earlier, later),
                        )
                    )
        if has("closed_at") and has("opened_at"):
            out.append(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="closed_at",
                    column_B="opened_at",
                    or_equal=False,
                    ignore_row_if="either_value_is_missing",
                    meta=_meta("closed_after_opened", ROW, "closed_at", "opened_at", "closed_at"),
                )
            )
    return out


def table_expectations(table: str, cfg: dict[str, Any]) -> list[gxe.Expectation]:
    """The table suite: run over a one-row profile of the table and this run's batches."""
    rules = cfg["tables"][table]
    out: list[gxe.Expectation] = []
    if rules["non_empty"]:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="rows_read", min_value=1, meta=_meta("table_not_empty", TABLE, "*")
            )
        )
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="raw_rows", min_value=1, meta=_meta("table_not_empty", TABLE, "*")
            )
        )
    if rules["daily"]:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="versions_updated_on_day",
                min_value=1,
                meta=_meta("empty_extract", TABLE, "*"),
            )
        )
    if rules["freshness_max_age_hours"] is not None:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="hours_since_newest_update",
                max_value=float(rules["freshness_max_age_hours"]),
                meta=_meta("freshness", TABLE, "updated_at"),
            )
        )
    if rules["volume"]:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="volume_ratio",
                max_value=float(rules["volume"]["max_factor"]),
                meta=_meta("volume", TABLE, "*"),
            )
        )
    out.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="bad_row_share",
            max_value=float(rules["max_bad_share"]),
            meta=_meta("bad_row_share", TABLE, "*"),
        )
    )
    return out


# -- the frame the row suite checks ---------------------------------------------------------------


def check_frame(
    table: str, raw: pd.DataFrame, present: Iterable[str], orphans: dict[str, set[str]]
) -> pd.DataFrame:
    """Typed contract columns, their text, and the derived columns the suite checks."""
    spec = ss.SOURCE_TABLES[table]
    present = [c for c in spec.columns if c in set(present)]
    frame = pd.DataFrame(index=raw.index)
    frame["_row_hash"] = raw["_row_hash"].astype(object)
    frame["_batch_id"] = raw["_batch_id"].astype("int64")
    for col in present:
        kind = column_kind(table, col)
        text = raw[col].astype(object).where(raw[col].notna(), None)
        if kind == "text":
            frame[col] = text
        elif kind in ("timestamp", "date"):
            # nanosecond timestamps keep GX's range checks vectorised; the few values past
            # 2262 are left out of the range checks (they parse, so staging casts them)
            values = parse_values(text, kind)
            in_ns = (values > _NS_MIN) & (values < _NS_MAX)
            frame[col] = values.where(in_ns).astype("datetime64[ns]")
            frame[f"{col}__text"] = text
        else:
            frame[col] = parse_values(text, kind)
            frame[f"{col}__text"] = text
    for col, parent in FOREIGN_KEYS.get(table, ()):
        if col in present:
            values = raw[col]
            resolved = ~values.isin(orphans.get(col, set()))
            frame[fk_column(col, parent)] = resolved.astype(object).where(values.notna(), None)
    if table == "orders" and {"gross_amount", "discount_amount", "net_amount"} <= set(present):
        diff = frame["net_amount"] - (frame["gross_amount"] - frame["discount_amount"])
        frame[NET_DIFF] = diff.round(6)
    return frame
