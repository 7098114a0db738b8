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
helpers (tests/); the development tools (crm_devtools: the demo source, the local SMTP sink),
which may import this package but are never imported by it.
"""
