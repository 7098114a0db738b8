"""Statistical models scored by the nightly pipeline: customer lifetime value and churn risk.

What belongs here: the models and the stage that runs them. `clv` is BG/NBD and
Gamma-Gamma in pure numpy/scipy/pandas (likelihoods, fits, P(alive), expected purchases
and value, discounted CLV, the model inputs from transactions); `churn` reads the inputs
and labels at a cut-off and holds the classifier, its calibration, the risk bands and the
reasons in words; `nightly` is the models stage (read, fit or load the week's training,
score, health gates, publish `marts.customer_clv` and `marts.customer_churn_risk`, record
`ops.model_runs`); `store` keeps the week's training in `ops.model_training`.

What does not: Airflow; table DDL (`crm_pipeline.warehouse.tables` declares the model
marts and ops tables); the SQL of the model inputs and of publishing the scores
(include/sql/models); settings and gate thresholds (include/config/models.yaml); the KPIs,
segments and tiers (`crm_pipeline.kpis`, include/sql/marts), which models read but do not
build.
"""
