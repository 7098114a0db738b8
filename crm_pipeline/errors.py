"""Failures that no retry can fix.

Bad source data (a table-level validation failure), a source that broke its contract (a
table or key gone), a broken configuration, a day that cannot be built, or a model that
cannot be trained or fails its health gate, a warehouse table an earlier version made that
this one cannot extend: each fails the same way on every retry. The
DAG's retry policy fails such tasks at once (and notifies), while it retries everything
else (a locked file, a dropped connection). Kept in a module of its own, light to import,
because the DAG names it at parse time.
"""


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
