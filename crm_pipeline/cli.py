"""Command line for the run script and for people: summarise a run, answer a validation failure.

`python -m crm_pipeline.cli summary --day D`: where the warehouse is, its tables with
row counts, and a short analyst's summary of the day.

`python -m crm_pipeline.cli release-quarantine --day D [--table T] [--rule R]` and
`accept-batches --table T`: a data engineer's answers to a validation failure
(docs/data_quality.md).

The URL comes from the variable Airflow reads (`AIRFLOW_CONN_CRM_WAREHOUSE`), so the CLI
and the DAG always agree. The demo source has a command line of its own, with the
development tools: `python -m crm_devtools prepare-demo`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from crm_pipeline.config import normalise_url
from crm_pipeline.warehouse import Warehouse


def env_url(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        sys.exit(f"{var} is not set (scripts/airflow_env.sh sets the embedded default)")
    return normalise_url(value)


HEADLINE_KPIS = (
    "active_customers",
    "new_customers",
    "reactivated_customers",
    "churn_rate",
    "retention_rate",
    "completed_orders",
    "net_revenue",
    "repeat_purchase_rate",
    "aov",
    "csat",
    "nps",
    "complaint_sla_rate",
    "cac",
)


def summary(day: dt.date) -> None:
    """What an analyst wants to see after a run: where, how much, and the day's picture."""
    wh = Warehouse(env_url("AIRFLOW_CONN_CRM_WAREHOUSE"), lock_wait_seconds=60)
    where = wh.engine.url.database if wh.dialect == "duckdb" else wh.engine.url.render_as_string()
    print(f"\nWarehouse ({wh.dialect}): {where}")
    print(f"Tables (rows for {day} where a table is kept by day; rows in all):")
    with wh.begin() as conn:
        dated = {
            f"{schema}.{name}"
            for schema in ("marts", "ops", "quarantine")
            for name in wh.tables(conn, schema)
            if "as_of_date" in wh.columns(conn, f"{schema}.{name}")
        }
        for table, count in wh.row_counts(("marts", "ops", "quarantine")).items():
            on_day = (
                conn.exec_driver_sql(
                    wh.render(
                        f"select count(*) from {table} where as_of_date = {{{{ d }}}}", {"d": day}
                    )
                ).scalar_one()
                if table in dated
                else None
            )
            day_text = f"{on_day:>12,} on {day}" if on_day is not None else " " * 26
            print(f"  {table:<36}{day_text} {count:>14,} in all")
    with wh.begin() as conn:
        existing = set(wh.tables(conn, "marts"))

        def query(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.exec_driver_sql(wh.render(sql, {"as_of_date": day}))]

        if "customer_rfm" in existing:
            rows = query(
                "select segment, count(*) from marts.customer_rfm "
                "where as_of_date = {{ as_of_date }} group by segment order by 2 desc"
            )
            print(f"\nRFM segments on {day}: " + ", ".join(f"{s} {n:,}" for s, n in rows))
        if "customer_value_tier" in existing:
            rows = query(
                "select tier, count(*), sum(margin_12m) from marts.customer_value_tier "
                "where as_of_date = {{ as_of_date }} group by tier order by 3 desc"
            )
            print(
                "Value tiers (customers, 12-month margin): "
                + ", ".join(f"{t} {n:,} ({float(m):,.0f})" for t, n, m in rows)
            )
        if "kpi_daily" in existing:
            rows = dict(
                query(
                    "select kpi, value from marts.kpi_daily where as_of_date = "
                    "{{ as_of_date }} and dimension = 'all'"
                )
            )
            days = query("select count(distinct as_of_date) from marts.kpi_daily")[0][0]
            print(f"Headline KPIs on {day} ({days} days of history in marts.kpi_daily):")
            for kpi in HEADLINE_KPIS:
                print(f"  {kpi:<24} {_fmt(kpi, rows.get(kpi))}")
        if "model_runs" in wh.tables(conn, "ops"):
            rows = query(
                "select model, status, message from ops.model_runs where as_of_date = "
                "{{ as_of_date }} order by recorded_at desc, model"
            )
            latest = {model: (status, message) for model, status, message in reversed(rows)}
            print(
                "Models (ops.model_runs): "
                + "; ".join(
                    f"{m} {s}" + (f" ({msg[:80]})" if s not in ("published",) and msg else "")
                    for m, (s, msg) in sorted(latest.items())
                )
            )
        if "kpi_evaluation" in existing:
            rows = query(
                "select status, count(*) from marts.kpi_evaluation where as_of_date = "
                "{{ as_of_date }} group by status order by status"
            )
            print("KPI evaluation: " + ", ".join(f"{s} {n:,}" for s, n in rows))
        print(alert_email_line(wh, conn, day))


def alert_email_line(wh: Warehouse, conn, day: dt.date) -> str:
    """Whether the day's run has an alert email, and the true reason when it has none."""
    ops = set(wh.tables(conn, "ops"))
    if "alert_runs" not in ops:
        return f"Alert email for {day}: none (no alert run yet in this warehouse)."

    def one(sql: str):
        return conn.exec_driver_sql(wh.render(sql, {"d": day})).fetchone()

    mail = (
        one(
            "select subject, state from ops.alert_outbox where as_of_date = {{ d }} "
            "order by message_id"
        )
        if "alert_outbox" in ops
        else None
    )
    if mail is not None:
        return f"Alert email for {day} ({mail[1]} in ops.alert_outbox): {mail[0]}"
    later = one("select max(as_of_date) from ops.alert_runs where as_of_date > {{ d }}")[0]
    if later is not None:
        return (
            f"Alert email for {day}: none: {later} was already alerted, and alert state "
            "moves forward only, so a run for an earlier day (a backfill) sends nothing."
        )
    ran = one("select count(*) from ops.alert_runs where as_of_date = {{ d }}")[0]
    if not ran:
        return f"Alert email for {day}: none: the alert step has not run for this day."
    return (
        f"Alert email for {day}: none: nothing new, worse, escalated, due a reminder or resolved."
    )


def _fmt(kpi: str, value: float | None) -> str:
    if value is None:
        return "n/a (no data, or nothing to divide by)"
    if kpi.endswith("_rate"):
        return f"{value:.1%}"
    if kpi in ("csat", "nps"):
        return f"{value:.1f}"
    if kpi in ("active_customers", "new_customers", "reactivated_customers", "completed_orders"):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def release(day: dt.date, table: str | None, rule: str | None) -> None:
    """Re-validate held rows and release those that pass now (a person's action: wall clock)."""
    from crm_pipeline.quality.commands import release_quarantine

    wh = Warehouse(env_url("AIRFLOW_CONN_CRM_WAREHOUSE"), lock_wait_seconds=60)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    released = release_quarantine(
        wh, day, f"manual_release__{now:%Y%m%dT%H%M%S}", now, table=table, rule=rule
    )
    print(f"released {released:,} quarantined row version(s); the next run's staging picks them up")


def accept(table: str) -> None:
    """Accept a table's failed batches as they are (their bad rows stay held)."""
    from crm_pipeline.quality.commands import accept_failed_batches

    wh = Warehouse(env_url("AIRFLOW_CONN_CRM_WAREHOUSE"), lock_wait_seconds=60)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    accepted = accept_failed_batches(wh, table, f"manual_accept__{now:%Y%m%dT%H%M%S}", now)
    print(f"accepted {accepted} failed batch(es) of {table}; rerun the date to build the marts")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crm-pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="print the warehouse tables and the day's headline figures")
    s.add_argument("--day", type=dt.date.fromisoformat, required=True)
    r = sub.add_parser("release-quarantine", help="re-validate held rows, release those that pass")
    r.add_argument("--day", type=dt.date.fromisoformat, required=True)
    r.add_argument("--table")
    r.add_argument("--rule")
    a = sub.add_parser("accept-batches", help="accept a table's failed batches as they are")
    a.add_argument("--table", required=True)
    args = parser.parse_args(argv)
    if args.command == "release-quarantine":
        release(args.day, args.table, args.rule)
    elif args.command == "accept-batches":
        accept(args.table)
    else:
        summary(args.day)


if __name__ == "__main__":
    main()
