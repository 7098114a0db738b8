"""Speed and memory of each stage, measured on a generated business of a chosen size.

    .venv/bin/python scripts/benchmark.py --customers 20000 --days 730
    .venv/bin/python scripts/benchmark.py --customers 100000 --warehouse postgresql://postgres@127.0.0.1:5432/crm_bench

Runs the package's stage functions directly (what the DAG's tasks call), in one process,
and prints wall time, rows per second and the peak resident memory after each stage. No
assertion: figures, for the README and for spotting a regression by eye.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from crm_pipeline import demo
from crm_pipeline.evaluate import evaluate_range
from crm_pipeline.extract import extract_table
from crm_pipeline.kpis import build_snapshots
from crm_pipeline.models.nightly import run_models
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform import build_marts, build_staging
from crm_pipeline.validate import validate_run
from crm_pipeline.warehouse import Warehouse


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--warehouse", default=None, help="SQLAlchemy URL (default: a DuckDB file)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="crm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    day = dt.date.today() - dt.timedelta(days=1)
    source = f"sqlite:///{work}/source.db"
    wh = Warehouse(args.warehouse or f"duckdb:///{work}/warehouse.duckdb")
    rows: list[tuple[str, float, str]] = []

    def stage(name: str, fn, count=None):
        start = time.perf_counter()
        result = fn()
        secs = time.perf_counter() - start
        n = count(result) if count else None
        rate = f"{n:>12,} rows {n / secs:>10,.0f}/s" if n else ""
        rows.append((name, secs, rate))
        print(f"{name:<34} {secs:8.1f} s  {rate:<36} peak RSS {peak_rss_mb():8.0f} MB", flush=True)
        return result

    print(f"benchmark: {args.customers:,} customers, {args.days} days, in {work}, warehouse {wh}")
    stage("generate demo source", lambda: demo.generate(
        source, customers=args.customers, days=args.days, seed=42, end_date=day),
        lambda r: sum(r.values()))
    stage("extract (first, full load)", lambda: [
        extract_table(source, wh, t, day, "bench-1") for t in TABLE_ORDER],
        lambda r: sum(s["rows_read"] for s in r))
    stage("validate (Great Expectations)", lambda: validate_run(
        wh, day, "bench-1", now=dt.datetime.now(), docs_dir=work / "dq_docs"),
        lambda r: sum(v["rows"] for v in r.values() if isinstance(v, dict)))
    stage("build staging", lambda: build_staging(wh), lambda r: sum(r.values()))
    stage("build fct_orders", lambda: build_marts(wh, ("fct_orders",), day), lambda r: sum(r.values()))
    first = day - dt.timedelta(days=args.history_days - 1)
    stage(f"snapshots, {args.history_days} days history", lambda: build_snapshots(wh, first, day),
          lambda r: r["marts.kpi_daily"])
    stage("snapshots, one night", lambda: build_snapshots(wh, day, day), lambda r: r["marts.kpi_daily"])
    stage("models (CLV, churn, gate)", lambda: run_models(wh, day, "bench-1"),
          lambda r: sum(r["published"].values()))
    stage("evaluate KPIs (history)", lambda: evaluate_range(wh, first, day, "bench-1"))
    stage("build dim_customer", lambda: build_marts(wh, ("dim_customer",), day), lambda r: sum(r.values()))
    nxt = day + dt.timedelta(days=1)
    stage("demo advance one day", lambda: demo.advance(source, nxt), lambda r: sum(r.values()))
    stage("extract (incremental)", lambda: [
        extract_table(source, wh, t, nxt, "bench-2") for t in TABLE_ORDER],
        lambda r: sum(s["new_versions"] for s in r))
    print(f"\ntotal {sum(r[1] for r in rows):.1f} s, peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
