# The two commands a new user needs, and a few more for people who run this every night.
.PHONY: run test lint backfill lock clean bench airflow airflow-stop trigger

run:            ## run crm_nightly end to end on the embedded default (venv + demo data as needed)
	bash scripts/run.sh

test:           ## install test tools and run lint + the whole test suite
	bash scripts/test.sh

lint:           ## ruff (check, format) and sqlfluff over include/sql (DuckDB lint, PostgreSQL parse)
	bash scripts/bootstrap.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check . && bash scripts/lint_sql.sh

lock:           ## re-resolve constraints.txt from requirements*.txt in a scratch venv
	bash scripts/lock.sh

airflow:        ## a local Airflow UI (scheduler, dag-processor, triggerer, api-server; LocalExecutor); Ctrl-C stops
	bash scripts/airflow.sh start

airflow-stop:   ## stop what `make airflow` started, children included
	bash scripts/airflow.sh stop

trigger:        ## a run of crm_nightly in that Airflow: make trigger DAY=YYYY-MM-DD (unpauses the DAG)
	bash scripts/airflow.sh trigger $(DAY)

clean:          ## remove the demo data, the warehouse and Airflow's local state (keeps .venv)
	rm -rf data .airflow

backfill:       ## one DAG run per day: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD
	FROM=$(FROM) TO=$(TO) bash scripts/backfill.sh

bench:          ## time a first build and a night at a scale: make bench SCALE=100000 [WAREHOUSE=postgresql://...]
	bash scripts/bootstrap.sh && .venv/bin/python -m bench.run --scale $(or $(SCALE),100000) $(if $(WAREHOUSE),--warehouse $(WAREHOUSE)) $(if $(SOURCE_CACHE),--source-cache $(SOURCE_CACHE)) --write
