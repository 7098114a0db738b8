"""The plan's KPIs after they are computed: what each KPI is, its targets, how it is judged.

What belongs here: the KPI registry (`registry`: each KPI's description as targets.yaml
gives it, read into a `KpiSpec`), the dated targets and evaluation settings (`targets`),
how a KPI value reads in words (`format`, shared with the alert email), the statistics a
value is judged with (`stats`: evidence intervals, the robust baseline), the judging of
one value (`judge`) and the stage that reads marts.kpi_daily and writes
marts.kpi_evaluation (`evaluate`). What does not: computing the KPIs (the snapshot marts:
crm_pipeline.transform.snapshots, include/sql/marts/kpi_daily.sql), who is told about a
move and how (crm_pipeline.alerts), and Airflow.

Import the modules, not this package: it re-exports nothing, so the alert email can read
`registry` and `format` without loading the stage.
"""
