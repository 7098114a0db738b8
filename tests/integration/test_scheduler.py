"""crm_nightly as Airflow is really run: `make airflow` (scheduler, dag-processor, triggerer,
api-server; metadata in PostgreSQL), a run triggered through the REST API (`make trigger`),
on the LocalExecutor and on the CeleryExecutor with a real `airflow celery worker` (broker:
a Redis database of this test's own; results in PostgreSQL).

Each run must succeed task by task, show the day it builds as its logical date and data
interval, run every mapped extract in a process of its own (not in the scheduler), keep
warehouse writers one at a time (the `crm_warehouse` pool has one slot on DuckDB), leave
marts equal to what `airflow dags test` builds from the same source for the same day, and
stop with every child process when asked. Everything runs on the local PostgreSQL and
Redis: with CI=true, an unreachable server fails the test (tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import _admin_engine
from factories import ROOT

from crm_devtools import demo
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse.tables import PUBLIC_MARTS

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
# the latest complete day: unpausing (which `make trigger` does) then starts no second run
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
# every public mart but the alert state, which follows the mail actually sent (the
# reference run has no SMTP connection: its email waits)
MARTS = tuple(t for t in PUBLIC_MARTS if t != "marts.alerts")
REDIS_DB = 11  # this test's own Redis database, emptied before and after
WORKER_MARK = "crm-test-celery-worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marts(url: str) -> dict[str, list[tuple]]:
    """Every public mart's rows, without the audit column naming the run that wrote them."""
    wh = Warehouse(url)
    out = {}
    with wh.begin() as conn:
        for table in MARTS:
            cols = [c for c in wh.columns(conn, table) if c != "run_id"]
            rows = conn.exec_driver_sql(f"select {', '.join(cols)} from {table}").fetchall()
            out[table] = sorted(map(tuple, rows), key=repr)
    wh.engine.dispose()
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scheduled-source")
    url = f"sqlite:///{tmp}/source.db"
    # 800 customers over 400 days: every model trains and publishes (as in test_nightly_dag)
    demo.generate(url, customers=800, days=400, seed=7, end_date=DAY)
    return url


@pytest.fixture(scope="module")
def dags_test_marts(source, tmp_path_factory):
    """The reference: `airflow dags test` (scripts/dag_run.sh, what `make run` calls) on the
    same source and day, in an Airflow home and a warehouse of its own."""
    tmp = tmp_path_factory.mktemp("dags-test")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "CRM_DATA_DIR": str(tmp),
        "AIRFLOW_CONN_CRM_SOURCE": source,
        "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp}/warehouse.duckdb",
        "AIRFLOW_CONN_SMTP_DEFAULT": "",
        "CRM_DATA_ENGINEERS": "",
    }
    env.pop("AIRFLOW_CONN_SMTP_DEFAULT")
    bin_env = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    subprocess.run(["airflow", "db", "migrate"], env=bin_env, check=True, capture_output=True)
    subprocess.run(
        ["airflow", "pools", "set", "crm_warehouse", "1", "one writer"],
        env=bin_env,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        ["bash", "scripts/dag_run.sh", str(DAY), str(tmp / "run.log")],
        env=bin_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return marts(env["AIRFLOW_CONN_CRM_WAREHOUSE"])


class LocalAirflow:
    """`bash scripts/airflow.sh start` in the background, and the REST API it serves."""

    def __init__(self, tmp: Path, source: str, metadata_url: str, extra_env: dict):
        self.port = free_port()
        self.home = tmp / "airflow"
        self.warehouse = f"duckdb:///{tmp}/warehouse.duckdb"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "CRM_DATA_DIR": str(tmp),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW_CONN_CRM_SOURCE": source,
            "AIRFLOW_CONN_CRM_WAREHOUSE": self.warehouse,
            "CRM_DATA_ENGINEERS": "data-team@example.com",
            "CRM_AIRFLOW_PORT": str(self.port),
            "CRM_AIRFLOW_LOG_PORT": str(free_port()),
            "CRM_AIRFLOW_TRIGGER_LOG_PORT": str(free_port()),
            "CRM_SMTP_SINK_PORT": str(free_port()),
            "CRM_AIRFLOW_GRACE": "20",
            **extra_env,
        }
        for var in ("AIRFLOW_CONN_SMTP_DEFAULT", "CRM_SMTP_SINK_DIR"):
            self.env.pop(var, None)  # the script's defaults: its own SMTP sink
        self.log = open(tmp / "make-airflow.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["bash", "scripts/airflow.sh", "start"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.tmp = tmp
        self._token = None

    def wait_up(self, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            if "Airflow is up" in self.output():
                return
            time.sleep(1)
        pytest.fail(f"make airflow did not come up in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / "make-airflow.log").read_text()

    def api(self, path: str):
        if self._token is None:
            passwords = json.loads(
                (self.home / "simple_auth_manager_passwords.json.generated").read_text()
            )
            body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
            req = urllib.request.Request(
                f"http://localhost:{self.port}/auth/token",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            self._token = json.load(urllib.request.urlopen(req))["access_token"]
        req = urllib.request.Request(
            f"http://localhost:{self.port}/api/v2{path}",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        return json.load(urllib.request.urlopen(req))

    def script(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "scripts/airflow.sh", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def wait_for_run(self, run_id: str, timeout=600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api(f"/dags/crm_nightly/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            assert self.proc.poll() is None, self.output()
            time.sleep(3)
        pytest.fail(f"{run_id} not done in {timeout}s: {run['state']}")

    def groups(self) -> dict[str, int]:
        pids = self.home / "services" / "pids"
        return dict((n, int(p)) for n, p in (ln.split() for ln in pids.read_text().splitlines()))


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def metadata_db(pg_server):
    """Airflow's metadata in a PostgreSQL database of this test's own."""
    name = f"crm_test_airflow_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"create database {name}")
    url = sa.engine.make_url(admin.url).set(database=name, drivername="postgresql+psycopg2")
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
        )
        conn.exec_driver_sql(f"drop database if exists {name}")


@pytest.fixture
def redis_db():
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")
        pytest.skip(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()


def celery_env(metadata_url: str, broker: str) -> dict:
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url.replace("+psycopg2", ""),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # the test starts the worker itself, with a mark only its tasks carry
        "CRM_AIRFLOW_SERVICES": "scheduler,dag-processor,triggerer,api-server",
    }


def start_worker(airflow: LocalAirflow) -> subprocess.Popen:
    """`airflow celery worker`, whose processes report a hostname no other process has: the
    task instances' hostname then proves where each task ran."""
    marker = airflow.tmp / "worker_mark"
    marker.mkdir()
    (marker / "crm_worker_mark.py").write_text(f"def hostname():\n    return {WORKER_MARK!r}\n")
    env = {
        **airflow.env,
        "PATH": f"{Path(sys.executable).parent}:{airflow.env['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(marker), airflow.env.get("PYTHONPATH")])),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "crm_worker_mark.hostname",
    }
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    for var in ("AIRFLOW__API__BASE_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        env[var] = f"http://localhost:{airflow.port}" + (
            "/execution/" if "EXECUTION" in var else ""
        )
    env.update(
        {
            "AIRFLOW__API_AUTH__JWT_SECRET": (airflow.home / "services" / "jwt_secret")
            .read_text()
            .strip(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                airflow.home / "simple_auth_manager_passwords.json.generated"
            ),
        }
    )
    log = open(airflow.tmp / "celery-worker.log", "w")  # noqa: SIM115 - lives with the worker
    return subprocess.Popen(
        ["airflow", "celery", "worker", "--concurrency", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_night(airflow: LocalAirflow) -> tuple[dict, list[dict]]:
    """`make trigger DAY=...` (REST API), then the run and its task instances once done."""
    airflow.wait_up()
    triggered = airflow.script("trigger", str(DAY))
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    run_id = f"manual__{DAY}"
    assert run_id in triggered.stdout
    run = airflow.wait_for_run(run_id)
    tis = airflow.api(f"/dags/crm_nightly/dagRuns/{run_id}/taskInstances?limit=100")[
        "task_instances"
    ]
    return run, tis


def check_night(run: dict, tis: list[dict], scheduler_pid: int) -> None:
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
    assert run["state"] == "success", states
    assert states.pop(("watcher", -1)) == "skipped"
    assert set(states.values()) == {"success"}, states
    # the day it builds, as the UI shows it
    assert run["logical_date"].startswith(f"{DAY}T00:00:00")
    assert run["data_interval_start"].startswith(f"{DAY}T00:00:00")
    assert run["data_interval_end"].startswith(f"{DAY + dt.timedelta(days=1)}T00:00:00")
    # every mapped extract in a process of its own, none in the scheduler
    extracts = [t for t in tis if t["task_id"] == "extract.extract_table"]
    assert len(extracts) == len(TABLE_ORDER)
    pids = [t["pid"] for t in extracts]
    assert None not in pids and len(set(pids)) == len(pids) and scheduler_pid not in pids
    # the one-slot pool: no two warehouse writers overlap in time
    writers = sorted(
        (t["start_date"], t["end_date"], t["task_id"], t["map_index"])
        for t in tis
        if t["pool"] == "crm_warehouse"
    )
    assert len(writers) == len(tis) - 2  # all but check_run and the watcher
    for before, after in zip(writers, writers[1:], strict=False):
        assert before[1] <= after[0], f"{before[2:]} and {after[2:]} wrote at once"


def stop(airflow: LocalAirflow, ctrl_c: bool = False) -> None:
    """`make airflow-stop`, or Ctrl-C in the terminal of `make airflow`: every service's
    whole process group gone, `start` ends with 0."""
    groups = airflow.groups()
    if ctrl_c:
        airflow.proc.send_signal(signal.SIGINT)
    else:
        stopped = airflow.script("stop")
        assert stopped.returncode == 0, stopped.stderr
    assert airflow.proc.wait(timeout=90) == 0, airflow.output()
    left = {name: pgid for name, pgid in groups.items() if alive(pgid)}
    assert left == {}, f"processes left after make airflow-stop: {left}"
    assert not (airflow.home / "services" / "pids").exists()


def kill(airflow: LocalAirflow) -> None:
    if airflow.proc.poll() is None:
        airflow.script("stop")
    for pgid in airflow.groups().values() if (airflow.home / "services" / "pids").exists() else ():
        if alive(pgid):
            os.killpg(pgid, 9)
    airflow.log.close()


def test_local_executor_scheduled_run_equals_dags_test(
    source, dags_test_marts, metadata_db, tmp_path
):
    airflow = LocalAirflow(
        tmp_path, source, metadata_db, {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    )
    try:
        run, tis = run_night(airflow)
        check_night(run, tis, airflow.groups()["scheduler"])
        assert {t["hostname"] for t in tis if t["pid"]} <= {socket.gethostname(), socket.getfqdn()}
        # the UI reads task logs: a mapped extract's log names its table
        extract = next(t for t in tis if t["task_id"] == "extract.extract_table")
        log = airflow.api(
            f"/dags/crm_nightly/dagRuns/manual__{DAY}/taskInstances/"
            f"extract.extract_table/logs/1?map_index={extract['map_index']}"
        )
        assert f"extracted {extract['rendered_map_index']}" in json.dumps(log)
        # one asset event per public mart, with the day, as a consumer DAG and the UI see it
        events = airflow.api(f"/assets/events?source_run_id=manual__{DAY}&limit=100")
        named = {e["name"]: e["extra"] for e in events["asset_events"]}
        assert sorted(named) == sorted(f"crm_warehouse.{t}" for t in PUBLIC_MARTS)
        assert {(x["as_of_date"], x["published"]) for x in named.values()} == {(str(DAY), True)}
        stop(airflow)
    finally:
        kill(airflow)
    assert marts(airflow.warehouse) == dags_test_marts


def test_celery_executor_runs_every_task_on_the_worker(
    source, dags_test_marts, metadata_db, redis_db, tmp_path
):
    airflow = LocalAirflow(tmp_path, source, metadata_db, celery_env(metadata_db, redis_db))
    worker = None
    try:
        airflow.wait_up()
        worker = start_worker(airflow)
        run, tis = run_night(airflow)
        check_night(run, tis, airflow.groups()["scheduler"])
        # run by the worker: its hostname, and queued through Celery
        assert {t["hostname"] for t in tis if t["pid"]} == {WORKER_MARK}
        assert {t["queue"] for t in tis if t["pid"]} == {"default"}
        stop(airflow, ctrl_c=True)
    finally:
        if worker is not None:
            os.killpg(worker.pid, 15)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, 9)
        kill(airflow)
    assert marts(airflow.warehouse) == dags_test_marts
