"""Data quality: the validate stage, between extract and stage, and the rules it judges by.

What belongs here (docs/data_quality.md): everything that decides whether the raw layer may
be staged, and nothing the other stages need. The modules import each other one way only,
from the stage down (tests/unit/test_package_imports.py):

- stage: `validate_run`, the DAG step: per table, read, judge, write; `validate_frame`.
- commands: the operator's `release_quarantine` and `accept_failed_batches` (the CLI).
- reader: what is read to be judged: pending batches, their versions in key-sorted chunks,
  foreign-key values that do not resolve, the table's one-row profile.
- quarantine: versions held from staging (`quarantine.rows`): findings, holds, the stage's
  automatic releases.
- outcome: statuses, `Failure` and its wording, what is recorded per table and run
  (`ops.dq_results`, `ops.table_status`, `ops.validated_batches`), `failed_tables`.
- prescreen: a row suite as one SQL condition, the versions a rule could flag (DuckDB).
- rules: the contract as Great Expectations suites per table, the frame a row suite checks,
  parsing text the way staging casts it. Pure.
- gx: the GX plumbing: the context, running a suite on a frame, results summed over chunks,
  the Data Docs site.
- settings: include/config/validation.yaml, read and normalised (no GX: the preflight check
  reads it too).

The package re-exports nothing: importing `crm_pipeline.quality.settings` must not import
Great Expectations, and the DAG step quiets GX's logging before GX is imported
(`stages.validate`), so importers name the module they use.
"""
