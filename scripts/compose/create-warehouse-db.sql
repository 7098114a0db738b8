-- Run once by the postgres container: the warehouse lives beside Airflow's metadata.
create database crm_warehouse owner airflow;
