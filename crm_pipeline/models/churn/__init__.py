"""Churn risk: who among today's active customers will not buy in the next 90 days.

What belongs here, one module per concern: `inputs` reads a cut-off's population,
features and labels from the warehouse and fixes the cut-offs (the training day, the time
split); `classifier` trains, calibrates, validates and scores the scikit-learn model and
sets the risk bands; `reasons` says in words why a customer's risk is high; `score` puts
them together into the rows of a day (probability, band, reasons). What does
not: the nightly stage that runs them and its gate (crm_pipeline.models.stage, .gate),
keeping the week's model (crm_pipeline.models.store), the purchase model behind the
P(alive) feature (crm_pipeline.models.clv), the SQL (include/sql/models).
"""
