"""The benchmark: a first build and a night at a given scale, with the two references.

    make bench SCALE=100000                      # DuckDB warehouse
    make bench SCALE=100000 WAREHOUSE=postgresql://postgres@127.0.0.1:5432/crm_bench
    .venv/bin/python -m bench.run --scale 2000 --quick   # the CI smoke run

In order, in a work directory (default `data/bench-<scale>`, kept for a look afterwards):

1. generates the demo business (`--scale` customers, two years) up to three days ago, or
   the Friday before when that is a weekend, so that the three nights fall in one week (not
   timed against any target: it is the data);
2. **first build**: an empty warehouse to every mart, 90 days of KPI history, models (the
   week's churn model trained), evaluation and the alert email (`bench.night`, the DAG's
   stage functions in the DAG's order, in a child process);
3. **a night**: the demo advances one day, the same night on top (its churn scores come
   from the week's model: most nights are such nights);
4. **the same night through Airflow**: the demo advances one more day, built through
   `airflow dags test` (a real DAG run, Airflow's own overhead included), judged task by
   task; then the models stage of the night again as on the night of the week that trains
   the churn model (`bench.night --only models`);
5. the **floor**: one DuckDB pass over all orders (count and sum per customer);
6. the **yardstick**: pandas RFM, tiers and KPIs for the day plus a `lifetimes` BG/NBD +
   Gamma-Gamma fit, in its own environment (`bench/.venv-yardstick`, made on first use
   from bench/yardstick-requirements.txt; never the project's lock).

Wall time per stage and in total, and the peak resident memory of the whole process tree
(the child and everything it starts, sampled every 0.1 s with psutil). Prints one table
and, with `--write`, puts it into docs/performance.md under the scale, with the date, the
machine and the commit. No assertion: figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
YARDSTICK_VENV = ROOT / "bench" / ".venv-yardstick"


@dataclass
class Measured:
    """One child process: wall seconds, peak RSS of its tree, and per-stage figures."""

    seconds: float = 0.0
    peak_mb: float = 0.0
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # secs, peak MB
    output: str = ""
    failed: str = ""  # the output's tail when the command failed


def measure(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, log: Path | None = None
) -> Measured:
    """Run a command, sampling the RSS of its whole process tree; read stage marks. Its
    output goes to `log` as it comes (`tail -f` it to follow a long run)."""
    samples: list[tuple[float, float]] = []
    started = time.time()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                samples.append((time.time(), rss / 2**20))
            except psutil.Error:
                pass
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines, marks = [], {}
    sink = log.open("w", encoding="utf-8") if log else None
    for line in proc.stdout:
        lines.append(line)
        if sink:
            sink.write(line)
            sink.flush()
        if line.startswith('{"stage"'):
            mark = json.loads(line)
            marks.setdefault(mark["stage"], {}).update(mark)
    proc.wait()
    if sink:
        sink.close()
    done.set()
    sampler.join()
    out = Measured(seconds=time.time() - started, output="".join(lines))
    if proc.returncode != 0:
        out.failed = "".join(lines[-40:])
        print(f"bench: {' '.join(cmd[:4])} failed ({proc.returncode}):\n{out.failed}", flush=True)
        if not marks:
            raise SystemExit(1)
    out.peak_mb = max((mb for _, mb in samples), default=0.0)
    for name, m in marks.items():
        end = m.get("end", out.seconds + started)
        window = [mb for t, mb in samples if m["start"] <= t <= end + 0.1]
        out.stages[name if "end" in m else f"{name} FAILED"] = (
            end - m["start"],
            max(window, default=0.0),
        )
    return out


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def generate(source: Path, customers: int, end: dt.date) -> Measured:
    code = (
        "import datetime as dt, sys; from crm_devtools import demo; "
        f"demo.generate({f'sqlite:///{source}'!r}, customers={customers}, days=730, "
        f"seed=42, end_date=dt.date.fromisoformat({end.isoformat()!r}))"
    )
    return measure(python("-c", code))


def advance(source: Path, day: dt.date) -> Measured:
    code = (
        "import datetime as dt; from crm_devtools import demo; "
        f"print(demo.advance({f'sqlite:///{source}'!r}, dt.date.fromisoformat({day.isoformat()!r})))"
    )
    return measure(python("-c", code))


def night(source: Path, warehouse: str, day: dt.date, run_id: str) -> Measured:
    return measure(
        python(
            "-m",
            "bench.night",
            f"sqlite:///{source}",
            warehouse,
            day.isoformat(),
            "--marks",
            "--run-id",
            run_id,
        ),
        log=source.parent / f"{run_id}.log",
    )


def training_night(source: Path, warehouse: str, day: dt.date) -> Measured:
    """The models stage of `day` again, as on the night that trains the week's churn model
    (once a week; `train_every_days: 1` makes this run train at the day itself)."""
    return measure(
        python(
            "-m",
            "bench.night",
            f"sqlite:///{source}",
            warehouse,
            day.isoformat(),
            "--marks",
            "--run-id",
            "bench-train",
            "--only",
            "models",
            "--models-config",
            json.dumps({"churn": {"train_every_days": 1}}),
        ),
        log=source.parent / "bench-train.log",
    )


def airflow_night(source: Path, warehouse: str, day: dt.date, work: Path) -> Measured:
    """The night through `airflow dags test`, in an Airflow home of its own."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_CRM_SOURCE": f"sqlite:///{source}",
        "AIRFLOW_CONN_CRM_WAREHOUSE": _airflow_uri(warehouse),
        "CRM_DATA_DIR": str(work),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    env.pop("AIRFLOW_CONN_SMTP_DEFAULT", None)  # no mail: the email waits in the outbox
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [airflow, "pools", "set", "crm_warehouse", "1", "bench"],
        env=env,
        check=True,
        capture_output=True,
    )
    measured = measure([airflow, "dags", "test", "crm_nightly", day.isoformat()], env=env)
    run_id = next(
        line.split("run_id=")[1].split(",")[0]
        for line in measured.output.splitlines()
        if "DagRun Finished: dag_id=crm_nightly" in line
    )
    states = subprocess.run(
        [airflow, "tasks", "states-for-dag-run", "crm_nightly", run_id, "-o", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    verdict = subprocess.run(
        python(str(ROOT / "scripts" / "task_report.py"), run_id),
        input=states.stdout,
        capture_output=True,
        text=True,
    )
    if verdict.returncode != 0:
        raise SystemExit(f"bench: the Airflow night was not a good night:\n{verdict.stderr}")
    return measured


def _airflow_uri(url: str) -> str:
    if url.startswith("duckdb:///"):
        return "duckdb:///" + url[len("duckdb:///") :]
    return url.replace("postgresql+psycopg2://", "postgresql://")


def floor(warehouse: str) -> float:
    """One pass over every order the warehouse holds: count and sum per customer."""
    from crm_pipeline.warehouse import Warehouse

    wh = Warehouse(warehouse)
    sql = (
        "select count(*) from (select customer_id, count(*), sum(net_amount) "
        "from staging.stg_orders group by customer_id) per_customer"
    )
    with wh.begin() as conn:
        started = time.perf_counter()
        conn.exec_driver_sql(sql).scalar_one()
        return time.perf_counter() - started


def yardstick(source: Path, day: dt.date) -> dict:
    py = YARDSTICK_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(YARDSTICK_VENV)], check=True)
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(ROOT / "bench" / "yardstick-requirements.txt"),
            ],
            check=True,
        )
    m = measure([str(py), str(ROOT / "bench" / "yardstick.py"), str(source), day.isoformat()])
    result = json.loads(m.output.strip().splitlines()[-1])
    result["peak_mb"] = m.peak_mb
    return result


def model_fits(warehouse: str, day: dt.date) -> dict[str, float]:
    """Fit seconds of BG/NBD and Gamma-Gamma at the day (ops.model_runs)."""
    from crm_pipeline.warehouse import Warehouse

    wh = Warehouse(warehouse)
    with wh.begin() as conn:
        rows = conn.exec_driver_sql(
            "select model, fit_seconds, n_customers from ops.model_runs "
            f"where as_of_date = date '{day:%Y-%m-%d}' order by recorded_at"
        ).fetchall()
    return {m: (float(s), int(n)) for m, s, n in rows}


def table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"| {a:<{width}} | {b:>10} | {c:>12} |" for a, b, c in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=100_000, help="customers")
    parser.add_argument("--warehouse", default=None, help="SQLAlchemy URL (default DuckDB file)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--quick", action="store_true", help="no Airflow night, no yardstick (the CI smoke run)"
    )
    parser.add_argument("--write", action="store_true", help="record into docs/performance.md")
    parser.add_argument(
        "--source-cache",
        default=None,
        help="keep the generated source here and copy it on the next run of "
        "the same scale and day (saves minutes at 1 M; not timed)",
    )
    args = parser.parse_args()
    work = Path(args.workdir or ROOT / "data" / f"bench-{args.scale}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    warehouse = args.warehouse or f"duckdb:///{work}/warehouse.duckdb"
    if args.warehouse and "postgresql" in args.warehouse:
        _fresh_pg(args.warehouse)
    today = dt.datetime.now(dt.UTC).date()
    first_day = today - dt.timedelta(days=3)
    while first_day.weekday() > 4:  # all three nights in one week: the later two only score
        first_day -= dt.timedelta(days=1)  # with the churn model the first build trained
    next_day, airflow_day = (first_day + dt.timedelta(days=n) for n in (1, 2))
    source = work / "source.db"
    print(
        f"bench: {args.scale:,} customers, warehouse {warehouse.split('@')[-1]}, in {work}",
        flush=True,
    )

    rows: list[tuple[str, str, str]] = [("what", "seconds", "peak MB")]
    cached = (
        Path(args.source_cache) / f"source-{args.scale}-{first_day}.db"
        if args.source_cache
        else None
    )
    if cached is not None and cached.exists():
        print(f"bench: source copied from {cached}", flush=True)
        shutil.copyfile(cached, source)
        rows.append((f"generate the demo ({args.scale:,} customers, 730 days)", "cached", ""))
    else:
        gen = generate(source, args.scale, first_day)
        rows.append(
            (
                f"generate the demo ({args.scale:,} customers, 730 days)",
                f"{gen.seconds:.1f}",
                f"{gen.peak_mb:,.0f}",
            )
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, cached)
    counts = _source_rows(source)
    print(f"bench: source has {counts:,} rows", flush=True)

    first = night(source, warehouse, first_day, "bench-first")
    for name, (secs, mb) in first.stages.items():
        rows.append((f"first build: {name}", f"{secs:.1f}", f"{mb:,.0f}"))
    rows.append(("**first build, total**", f"**{first.seconds:.1f}**", f"**{first.peak_mb:,.0f}**"))
    if first.failed:
        return _stop(args, counts, warehouse, rows)
    advance(source, next_day)
    nightly = night(source, warehouse, next_day, "bench-night")
    for name, (secs, mb) in nightly.stages.items():
        rows.append((f"night: {name}", f"{secs:.1f}", f"{mb:,.0f}"))
    rows.append(("**night, total**", f"**{nightly.seconds:.1f}**", f"**{nightly.peak_mb:,.0f}**"))
    if nightly.failed:
        return _stop(args, counts, warehouse, rows)
    fits = model_fits(warehouse, next_day)
    for model in ("bgnbd", "gamma_gamma"):
        if model in fits:
            rows.append(
                (f"night: {model} fit ({fits[model][1]:,} customers)", f"{fits[model][0]:.3f}", "")
            )
    if not args.quick:
        advance(source, airflow_day)
        af = airflow_night(source, warehouse, airflow_day, work)
        rows.append(
            (
                "**night through `airflow dags test`**",
                f"**{af.seconds:.1f}**",
                f"**{af.peak_mb:,.0f}**",
            )
        )
    # the night above scored with the week's churn model, trained by the first build (same
    # week); once a week a night trains it: that night's models stage, measured apart
    trains = training_night(source, warehouse, next_day)
    rows.append(
        (
            "night that trains the week's churn model: models",
            f"{trains.stages['models'][0]:.1f}",
            f"{trains.stages['models'][1]:,.0f}",
        )
    )
    fl = floor(warehouse)
    rows.append(("floor: one pass over all orders (count, sum per customer)", f"{fl:.2f}", ""))
    compute = nightly.stages["snapshots"][0] + nightly.stages["models"][0]
    rows.append(("pipeline night snapshots + models / floor", f"{compute / fl:.0f}x", ""))
    if not args.quick:
        ys = yardstick(source, next_day)
        rows.append(("yardstick: pandas load", f"{ys['load_seconds']:.1f}", ""))
        rows.append(
            (
                "yardstick: pandas RFM, tiers, KPIs of the day",
                f"{ys['rfm_tiers_kpis_seconds']:.1f}",
                "",
            )
        )
        rows.append(
            (
                "yardstick: lifetimes summary + BG/NBD + Gamma-Gamma",
                f"{ys['lifetimes_summary_seconds'] + ys['lifetimes_fit_seconds']:.1f}",
                "",
            )
        )
        rows.append(
            ("**yardstick, total**", f"**{ys['total_seconds']:.1f}**", f"**{ys['peak_mb']:,.0f}**")
        )
        fit = sum(fits.get(m, (0.0, 0))[0] for m in ("bgnbd", "gamma_gamma"))
        rows.append(
            (
                "yardstick lifetimes fit / pipeline fit",
                f"{ys['lifetimes_fit_seconds'] / max(fit, 1e-3):.0f}x",
                "",
            )
        )
        rows.append(
            (
                "yardstick total / pipeline night snapshots + models",
                f"{ys['total_seconds'] / compute:.1f}x",
                "",
            )
        )
    text = table(rows)
    print("\n" + text)
    if args.write:
        _record(args.scale, counts, warehouse, text)


def _stop(
    args: argparse.Namespace, counts: int, warehouse: str, rows: list[tuple[str, str, str]]
) -> None:
    """A night failed: the figures measured so far are printed (and recorded), then exit 1."""
    text = table(rows)
    print("\n" + text + "\n\nbench: stopped, a night failed (its log is in the work directory)")
    if args.write:
        _record(args.scale, counts, warehouse, text)
    raise SystemExit(1)


def _source_rows(source: Path) -> int:
    import sqlite3

    from crm_pipeline.source_schema import TABLE_ORDER

    with sqlite3.connect(source) as conn:
        return sum(conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLE_ORDER)


def _fresh_pg(url: str) -> None:
    import sqlalchemy as sa

    from crm_pipeline.config import normalise_url

    target = sa.engine.make_url(normalise_url(url))
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"drop database if exists {target.database} with (force)")
        conn.exec_driver_sql(f"create database {target.database}")
    admin.dispose()


def _record(scale: int, source_rows: int, warehouse: str, text: str) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    engine = "PostgreSQL" if "postgresql" in warehouse else "DuckDB"
    memory = psutil.virtual_memory().total / 2**30
    head = (
        f"## {scale:,} customers, {engine} warehouse\n\n"
        f"{dt.date.today()}, commit {commit}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"{platform.python_version()}; source {source_rows:,} rows.\n\n"
        "| what | seconds | peak MB |\n|---|---:|---:|\n"
    )
    section = head + text.split("\n", 1)[1] + "\n"
    doc = ROOT / "docs" / "performance.md"
    current = doc.read_text() if doc.exists() else "# Performance\n\n"
    marker = f"## {scale:,} customers, {engine} warehouse\n"
    if marker in current:
        start = current.index(marker)
        end = current.find("\n## ", start + 1)
        current = current[:start] + section + ("" if end < 0 else "\n" + current[end + 1 :])
    else:
        current = current.rstrip("\n") + "\n\n" + section
    doc.write_text(current)
    print(f"bench: recorded in {doc}")


if __name__ == "__main__":
    main()
