"""docker-compose.yaml is kept correct by checking it, since no Docker engine runs in CI."""

import re

import pytest
import yaml
from factories import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = [name for name in SERVICES if name.startswith("airflow-")]


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M).group(1)


def test_production_stack_is_complete():
    assert {"postgres", "redis"} <= set(SERVICES)
    commands = {
        SERVICES[s]["command"] if isinstance(SERVICES[s]["command"], str) else "init"
        for s in AIRFLOW_SERVICES
    }
    assert {
        "api-server",
        "scheduler",
        "dag-processor",
        "celery worker",
        "triggerer",
        "init",
    } <= commands


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_services_use_celery_redis_and_postgres(service):
    env = SERVICES[service]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW_CONN_CRM_WAREHOUSE"].startswith("postgresql://")
    assert "AIRFLOW_CONN_CRM_SOURCE" in env and "AIRFLOW_CONN_SMTP_DEFAULT" in env
    # one JWT secret for all: separate containers otherwise sign and check task tokens with
    # secrets of their own (apache/airflow#49646)
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET}"
    deps = SERVICES[service]["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1] for v in SERVICES[service]["volumes"] if v.startswith("./")}
    assert {"/opt/airflow/dags", "/opt/airflow/include", "/opt/airflow/plugins"} <= mounts


def test_mounted_and_built_files_exist():
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), volume
    assert (ROOT / "Dockerfile").exists()


def test_image_matches_the_pinned_airflow_and_installs_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FROM apache/airflow:{pinned('apache-airflow')}-python3.11" in dockerfile
    assert "-c /opt/crm/constraints.txt" in dockerfile


def test_no_secret_is_written_in_the_file_and_every_variable_is_documented():
    text = (ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))  # $${X} is escaped
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented
    for url in re.findall(r"\w+://[^\s\"']+", text):
        if "@" in url:
            credentials = url.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in credentials or "${" in credentials, url


def test_init_creates_the_pool_the_dag_uses():
    from crm_pipeline.config import WAREHOUSE_POOL

    init = " ".join(SERVICES["airflow-init"]["command"])
    assert f"airflow pools set {WAREHOUSE_POOL}" in init and "airflow db migrate" in init


def test_an_installed_package_finds_include_where_the_image_and_compose_say(tmp_path):
    """The image installs crm_pipeline into site-packages, where no include/ sits beside it:
    the settings and SQL are found through CRM_INCLUDE_DIR, which the Dockerfile sets to its
    copy and compose to the mounted one."""
    import shutil
    import subprocess
    import sys

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "crm_pipeline", site / "crm_pipeline")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --chown=airflow:root include /opt/crm/include" in dockerfile
    assert "ENV CRM_INCLUDE_DIR=/opt/crm/include" in dockerfile
    for service in AIRFLOW_SERVICES:
        assert SERVICES[service]["environment"]["CRM_INCLUDE_DIR"] == "/opt/airflow/include"
    code = (
        "from crm_pipeline import config, stages; "
        "print(config.CONFIG_DIR); print(stages.check_settings())"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "CRM_INCLUDE_DIR": str(ROOT / "include"),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == str(ROOT / "include" / "config")
    # without it, the copy looks beside itself and does not find the settings
    env.pop("CRM_INCLUDE_DIR")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode != 0 and "pipeline.yaml" in done.stderr
