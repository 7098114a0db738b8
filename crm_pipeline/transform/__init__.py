"""Building the warehouse's layers from raw: staging, the state marts, the snapshot marts.

What belongs here: the stages that turn raw source versions into the tables analysts
read, by running the SQL files under include/sql: `staging` (every source row's versions,
typed, with validity intervals), `marts` (fct_orders and dim_customer, the latest state,
rebuilt and swapped), `snapshots` (the marts kept by as_of_date: RFM segments, value tiers,
kpi_daily, segment migration, over a spine of days) and `settings` (pipeline.yaml's
segment, tier and KPI settings as the snapshot SQL takes them). What does not: extracting
and validating raw (crm_pipeline.extract, crm_pipeline.quality), judging the KPIs
(crm_pipeline.kpi), the models (crm_pipeline.models), table declarations and how to talk
to the warehouse (crm_pipeline.warehouse), and Airflow.

Import the modules, not this package: it re-exports nothing.
"""
