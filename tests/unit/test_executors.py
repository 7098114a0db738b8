"""The production executor starts with the pinned dependencies.

CeleryExecutor with Redis is the production path (docker-compose.yaml); nothing else in the
suite imports it, so a dependency that breaks it (celery 5.7 removed what
apache-airflow-providers-celery 3.26.0 imports: the scheduler and `airflow celery worker`
died with ImportError) would otherwise reach an image that crash-loops.
"""

import importlib


def test_the_celery_executor_and_worker_command_import():
    executor = importlib.import_module("airflow.providers.celery.executors.celery_executor")
    assert executor.CeleryExecutor.__name__ == "CeleryExecutor"
    utils = importlib.import_module("airflow.providers.celery.executors.celery_executor_utils")
    assert utils.app.main == "airflow.providers.celery.executors.celery_executor"
    worker = importlib.import_module("airflow.providers.celery.cli.celery_command")
    assert callable(worker.worker)
