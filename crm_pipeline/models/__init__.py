"""Statistical models scored by the nightly pipeline: customer lifetime value and churn risk.

What belongs here: the models and the stage that runs them. `clv` is BG/NBD and
Gamma-Gamma in pure numpy/scipy/pandas (likelihoods, fits, P(alive), expected purchases
and value, discounted CLV, the model inputs from transactions, the holdout, and the one
CLV pipeline the nightly publishes, `clv.score.fit_clv`); `churn` reads the inputs and
labels at a cut-off (`inputs`), holds the classifier, its calibration and the risk bands
(`classifier`) and the reasons in words (`reasons`). The stage: `settings` (models.yaml,
the model version), `training` (the week's CLV holdout and churn classifier, pure),
`gate` (every health check and the verdict per group), `publish` (the one write
transaction: `ops.model_runs`, `marts.customer_clv`, `marts.customer_churn_risk`),
`store` (the week's training kept in `ops.model_training`) and `stage` (`run_models`:
read -> compute -> write).

What does not: Airflow; table DDL (`crm_pipeline.warehouse.tables` declares the model
marts and ops tables); the SQL of the model inputs and of publishing the scores
(include/sql/models); settings and gate thresholds (include/config/models.yaml); the KPIs,
segments and tiers (`crm_pipeline.transform.snapshots`, include/sql/marts), which models read
but do not build.
"""
