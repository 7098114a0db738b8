"""Data quality: the rules the raw layer is judged by, and the machinery that runs them.

What belongs here (docs/data_quality.md): everything the validate stage needs between
extract and stage, and nothing the other stages need.

- settings: include/config/validation.yaml, read and normalised (no GX: the preflight
  check reads it too).
- rules: the contract as Great Expectations suites per table, the frame a row suite checks,
  parsing text the way staging casts it. Pure.
- prescreen: a row suite as one SQL condition, the versions a rule could flag (DuckDB).
- gx: the GX plumbing: the context, running a suite on a frame, results summed over chunks,
  the Data Docs site.

The package re-exports nothing: importing `crm_pipeline.quality.settings` must not import
Great Expectations, so importers name the module they use.
"""
