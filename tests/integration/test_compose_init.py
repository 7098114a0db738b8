"""The compose stack's init step (scripts/compose/airflow-init.sh), run for real on a checkout.

No container engine runs here, so the script runs as the airflow-init container would run it,
minus the image's /entrypoint: the same variables docker-compose.yaml and .env.example give it,
paths under a scratch directory, Airflow's metadata in SQLite. It must migrate, set the pool,
write a passwords file with which a real `airflow api-server` (SimpleAuthManager, as in the
stack) lets the .env user log in, generate the demo source, and say where to log in; and it
must refuse a bad Fernet key, and a demo switch on a source that is not the demo's file.
"""

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from factories import ROOT

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "scripts/compose/airflow-init.sh"
COMPOSE_ENV = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["x-airflow-common"][
    "environment"
]
PASSWORD = 'pa"ss w$rd\\'  # JSON and the shell must both leave it as it is


def init_env(tmp: Path, **overrides: str) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp),
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(tmp / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp / "no-dags"),
        "AIRFLOW__CORE__AUTH_MANAGER": COMPOSE_ENV["AIRFLOW__CORE__AUTH_MANAGER"],
        # as compose resolves "${AIRFLOW_ADMIN_USER:-admin}:admin" with .env.example's user
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "auth/passwords.json"),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": base64.urlsafe_b64encode(os.urandom(64)).decode(),
        "AIRFLOW_ADMIN_PASSWORD": PASSWORD,
        "CRM_DATA_DIR": str(tmp / "data"),
        "CRM_DEMO_SOURCE": "true",
        "AIRFLOW_CONN_CRM_SOURCE": f"sqlite:///{tmp}/data/demo/source.db",
        "CRM_DEMO_CUSTOMERS": "200",
        "CRM_DEMO_DAYS": "60",
    }
    env.update(overrides)
    return env


def run_init(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, cwd=cwd, timeout=300
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login(port: int, user: str, password: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token",
        method="POST",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["access_token"]
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_init_migrates_sets_the_pool_writes_the_login_and_makes_the_demo(tmp_path):
    env = init_env(tmp_path)
    done = run_init(env, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Airflow UI:      http://localhost:8080  (user 'admin'" in done.stdout
    assert "http://localhost:8025" in done.stdout

    passwords = tmp_path / "auth/passwords.json"
    assert json.loads(passwords.read_text()) == {"admin": PASSWORD}
    assert passwords.stat().st_mode & 0o077 == 0  # readable by its owner only
    with sqlite3.connect(tmp_path / "home/airflow.db") as db:
        assert db.execute("select slots from slot_pool where pool = 'crm_warehouse'").fetchone()
    with sqlite3.connect(tmp_path / "data/demo/source.db") as db:
        assert db.execute("select count(*) from customers").fetchone()[0] == 200

    # the api-server of the stack's kind lets the .env user in with the .env password
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "airflow", *f"api-server -H 127.0.0.1 -p {port} -w 1".split()],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "api-server did not answer in 90 s"
                time.sleep(0.5)
        assert login(port, "admin", PASSWORD) == 201
        assert login(port, "admin", "not-the-password") == 401
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
    # it kept the password from .env (a user missing from the file gets a generated one)
    assert json.loads(passwords.read_text()) == {"admin": PASSWORD}

    # run again (a changed .env, or a later day for the demo): the new password replaces it
    done = run_init({**env, "AIRFLOW_ADMIN_PASSWORD": "changed"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(passwords.read_text()) == {"admin": "changed"}
    assert "demo: source already covers" in done.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"AIRFLOW__CORE__FERNET_KEY": "change-me"},
            "AIRFLOW_FERNET_KEY in .env is not a Fernet key",
        ),
        (
            {"AIRFLOW_CONN_CRM_SOURCE": "postgresql://crm_reader:pw@crm-db:5432/crm"},
            "CRM_DEMO_SOURCE=true generates a business into the source",
        ),
        ({"AIRFLOW_ADMIN_PASSWORD": ""}, "set AIRFLOW_ADMIN_PASSWORD in .env"),
    ],
)
def test_init_refuses_before_touching_anything(tmp_path, overrides, message):
    done = run_init(init_env(tmp_path, **overrides), tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert "crm-db" not in done.stderr  # a source URL (and its password) is never printed
    assert not (tmp_path / "home/airflow.db").exists()
    assert not (tmp_path / "auth/passwords.json").exists()
