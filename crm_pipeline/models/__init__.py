"""Statistical models scored by the nightly pipeline (pure numpy/scipy/pandas, no Airflow)."""
