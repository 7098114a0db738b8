"""crm_devtools: the development tools that stand in for the outside world of crm_pipeline.

What belongs here: what a developer, the benchmark, the tests, `make run` and compose's demo
mode need and a production deployment does not: the demo CRM source (`demo`, a simulated
regional dairy, generated and advanced day by day), the local SMTP sink that keeps alert
emails as files (`smtp_sink`), and their command line (`python -m crm_devtools`).

What does not: anything the nightly pipeline runs. crm_devtools may import crm_pipeline (the
source contract, settings), never the reverse: crm_pipeline works without this package
(tests/unit/test_devtools_boundary.py checks it).
"""
