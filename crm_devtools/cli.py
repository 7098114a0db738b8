"""Command line of the development tools: prepare the demo source, generate or advance it.

Why: `make run`, `make airflow`, `make bench` and compose's demo mode need a demo source that
covers the day they build; the operator CLI (crm_pipeline.cli) is for the product and must not
depend on the simulator, so the demo has a command line of its own.

`python -m crm_devtools prepare-demo --day D`: generate the demo source if it is missing, or
advance it day by day until it covers D (a demo business that keeps living between nightly
runs, so incremental extraction has something to pull). The source URL is the one Airflow
reads (`AIRFLOW_CONN_CRM_SOURCE`), so the demo and the DAG always agree.

`python -m crm_devtools generate --url U [...]` and `advance --url U [--day D]`: the
simulator itself on any SQLAlchemy URL; each prints its row counts, one `key<TAB>count` a line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from crm_devtools import demo
from crm_pipeline.cli import env_url


def prepare_demo(day: dt.date, customers: int, days: int, seed: int) -> None:
    today = dt.datetime.now(dt.UTC).date()
    if day >= today:
        sys.exit(
            f"demo: {day} has not ended yet (UTC): the demo would write rows in the future; "
            f"the latest complete day is {today - dt.timedelta(days=1)}"
        )
    url = env_url("AIRFLOW_CONN_CRM_SOURCE")
    has_source = sa.inspect(sa.create_engine(url)).has_table("demo_meta")
    if not has_source:
        print(f"demo: generating {customers:,} customers, {days} days of history to {day} at {url}")
        counts = demo.generate(url, customers=customers, days=days, seed=seed, end_date=day)
        print("demo: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        return
    last = demo.last_day(url)
    if last >= day:
        print(f"demo: source already covers {day} (last day {last})")
        return
    while last < day:
        last += dt.timedelta(days=1)
        counts = demo.advance(url, last)
        print(
            f"demo: advanced to {last}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items() if n)
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m crm_devtools", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-demo", help="generate or advance the demo source to a day")
    p.add_argument("--day", type=dt.date.fromisoformat, required=True)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--seed", type=int, default=42)
    gen = sub.add_parser("generate", help="create and fill the demo source")
    gen.add_argument("--url", required=True)
    gen.add_argument("--customers", type=int, default=20_000)
    gen.add_argument("--days", type=int, default=730)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--end-date", type=dt.date.fromisoformat, default=None)
    gen.add_argument("--chunk-customers", type=int, default=10_000)
    adv = sub.add_parser("advance", help="simulate one more day")
    adv.add_argument("--url", required=True)
    adv.add_argument("--day", type=dt.date.fromisoformat, default=None)
    args = parser.parse_args(argv)
    if args.command == "prepare-demo":
        prepare_demo(args.day, args.customers, args.days, args.seed)
        return
    if args.command == "generate":
        counts = demo.generate(
            args.url, args.customers, args.days, args.seed, args.end_date, args.chunk_customers
        )
    else:
        counts = demo.advance(args.url, args.day)
    for key, value in counts.items():
        print(f"{key}\t{value}")


if __name__ == "__main__":
    main()
