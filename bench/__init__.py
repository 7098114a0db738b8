"""The benchmark (`make bench SCALE=...`, docs/performance.md) and the night it times.

Not part of the product package: `bench.night` runs the DAG's stage functions in the
DAG's order outside Airflow (the benchmark times it, the kill tests kill it), and
`bench.run` generates a business, times a first build and a night, the same night
through `airflow dags test`, and the two references (the pandas + lifetimes yardstick,
and a DuckDB floor).
"""
