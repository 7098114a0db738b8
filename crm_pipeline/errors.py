"""Failures that no retry can fix.

Bad source data (a table-level validation failure) or a model that fails its health gate
will fail the same way on every retry; the DAG's retry policy fails such tasks at once
(and notifies), while it retries everything else (a locked file, a dropped connection).
Kept in a module of its own, light to import, because the DAG names it at parse time.
"""


class PipelineStop(Exception):
    """Stop this run's stage now: retrying cannot help, a person must look."""
