"""Failures that no retry can fix.

Bad source data (a table-level validation failure), a source that broke its contract (a
table or key gone), a broken configuration, a day that cannot be built, or a model that
cannot be trained or fails its health gate, a warehouse table an earlier version made that
this one cannot extend: each fails the same way on every retry. The
DAG's retry policy fails such tasks at once (and notifies), while it retries everything
else (a locked file, a dropped connection). Kept in a module of its own, light to import,
because the DAG names it at parse time.

Every such failure is a class here, so a reader sees in one place what stops a night;
anything else (a locked warehouse file, a dropped connection, an SMTP server away) is
retried by the DAG. Argument checks of the statistics functions (models/clv) stay
ValueErrors, as in any numerical library: the models stage checks its inputs before them.
"""

from __future__ import annotations

from typing import Any


class PipelineStop(Exception):
    """Stop this run's stage now: retrying cannot help, a person must look."""


class ConfigError(PipelineStop, ValueError):
    """A setting in include/config (or the environment) is missing or inconsistent.

    Also a ValueError, so code that validated settings with ValueError keeps working."""


class RunDateError(PipelineStop):
    """The run covers a day this pipeline cannot build (one that has not ended yet)."""


class SchemaMismatchError(PipelineStop, RuntimeError):
    """A warehouse table lacks a column that cannot be added to the rows already in it (not
    null, a key): a person migrates it (docs/operations.md, "Upgrading between versions").

    Also a RuntimeError, as it was before it became a stop."""


class SourceSchemaError(PipelineStop):
    """The source table is missing or has lost its key or `updated_at`: a broken source
    contract, which no retry mends."""


class DataQualityError(PipelineStop):
    """Table-level data-quality failures; the message names table, column, rule and rows.

    A PipelineStop: the same data fails the same way on every retry, so the DAG's retry
    policy fails the task at once; a person must look (then rerun, release or accept).
    `failures` are `quality.outcome.Failure`s (table, column, rule, detail)."""

    def __init__(self, failures: list[Any], summary: dict[str, Any] | None = None):
        self.failures = failures
        self.summary = summary or {}
        tables = sorted({f.table for f in failures})
        lines = [f.message() for f in failures]
        head = (
            f"data quality: {len(failures)} table-level failure(s) in {', '.join(tables)}; "
            "marts not rebuilt"
        )
        super().__init__(head + "\n" + "\n".join(f"  - {line}" for line in lines))


class ModelGateError(PipelineStop):
    """A model-health check failed: the night's scores were recorded but not published."""

    def __init__(self, message: str, failures: list[str], result: dict[str, Any]):
        super().__init__(message)
        self.failures = failures
        self.result = result


class MissingInputError(PipelineStop):
    """A table a step reads was never built (a step run out of order, by hand): running the
    step again changes nothing until the step before it has run."""
