"""crm_pipeline: what the nightly CRM pipeline does, as plain Python, free of Airflow.

What belongs here: the work of every DAG task as functions over a source URL and a
`Warehouse` (extraction, validation, staging, the marts, the models, the evaluation, the
alerts and their emails), the source contract (`source_schema`), names and settings
(`config`), the day a run covers (`dates`) and the failures no retry can fix (`errors`).
`stages` is the one entry point the DAG calls, one function per task. Two subpackages:
`warehouse` (the engine, frames in and out, every declared table) and `models` (CLV and
churn risk).

What does not: Airflow (operators, notifiers, the timetable, assets, the task context:
dags/ and plugins/); SQL (include/sql, one statement per table); business settings
(include/config); table DDL outside `warehouse.tables`; the benchmark (bench/) and test
helpers (tests/); the local SMTP sink (crm_devtools.smtp_sink). The demo source (`demo`) is
a development tool, not the product: it is still here, used by `make run`, the benchmark
and the tests, and by the CLI's `prepare-demo` only.
"""
