"""Hand-made source databases: name the rows a test is about, the rest gets defaults.

A test writes only the columns that matter to it (`order("O1", "C1", "2025-03-01")`),
so the expected values worked out by hand in the test stay readable.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crm_pipeline.source_schema import metadata

ROOT = Path(__file__).resolve().parent.parent


def ts(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value if " " in value or "T" in value else value + " 12:00")


def _stamps(kw: dict[str, Any]) -> dict[str, Any]:
    """Timestamps may be given as text; the source wants datetimes."""
    return {k: ts(v) if k.endswith("_at") and isinstance(v, str) else v for k, v in kw.items()}


def customer(customer_id: str, created_at: str = "2024-01-01", **kw: Any) -> dict:
    row = dict(
        customer_id=customer_id,
        created_at=ts(created_at),
        name=f"Name {customer_id}",
        email=f"{customer_id.lower()}@example.com",
        city="Lyon",
        region="south",
        acquisition_channel="shop",
        birth_year=1980,
        gender=None,
        income_band=None,
        loyalty_member=False,
        loyalty_tier=None,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["created_at"])
    return row


def order(
    order_id: str,
    customer_id: str,
    ordered_at: str,
    net: float = 20.0,
    *,
    status: str = "completed",
    channel: str = "delivery_staff",
    discount: float = 0.0,
    cost: float | None = None,
    **kw: Any,
) -> dict:
    row = dict(
        order_id=order_id,
        customer_id=customer_id,
        ordered_at=ts(ordered_at),
        status=status,
        channel=channel,
        gross_amount=round(net + discount, 2),
        discount_amount=discount,
        net_amount=net,
        cost_amount=round(net * 0.6, 2) if cost is None else cost,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["ordered_at"])
    return row


def survey(
    response_id: str, customer_id: str, responded_at: str, survey_type: str, score: int, **kw: Any
) -> dict:
    row = dict(
        response_id=response_id,
        customer_id=customer_id,
        responded_at=ts(responded_at),
        survey_type=survey_type,
        score=score,
        comment=None,
        order_id=None,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["responded_at"])
    return row


def complaint(complaint_id: str, customer_id: str, opened_at: str, **kw: Any) -> dict:
    row = dict(
        complaint_id=complaint_id,
        customer_id=customer_id,
        order_id=None,
        opened_at=ts(opened_at),
        first_response_at=None,
        cause_found_at=None,
        remedy_decided_at=None,
        remedy_done_at=None,
        customer_informed_at=None,
        closed_at=None,
        category="delivery",
        severity="low",
        outcome=None,
    )
    row.update(_stamps(kw))
    stamps = [v for k, v in row.items() if k.endswith("_at") and v is not None]
    row.setdefault("updated_at", max(stamps))
    return row


def build_source(url: str, rows: dict[str, list[dict]]) -> str:
    """Create every contract table at `url` and insert the given rows."""
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table, table_rows in rows.items():
            if table_rows:
                conn.execute(metadata.tables[table].insert(), table_rows)
    engine.dispose()
    return url


def upsert(url: str, table: str, rows: list[dict]) -> None:
    """Insert or replace rows (a late change in the source), by primary key."""
    engine = sa.create_engine(url)
    tbl = metadata.tables[table]
    with engine.begin() as conn:
        for row in rows:
            cond = sa.and_(*(c == row[c.name] for c in tbl.primary_key.columns))
            conn.execute(tbl.delete().where(cond))
            conn.execute(tbl.insert(), [row])
    engine.dispose()


def campaign(
    campaign_id: str, started_at: str, ended_at: str, objective: str = "retention", **kw: Any
) -> dict:
    row = dict(
        campaign_id=campaign_id,
        name=f"Campaign {campaign_id}",
        channel="email",
        objective=objective,
        started_at=ts(started_at),
        ended_at=ts(ended_at),
        spend=100.0,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["started_at"])
    return row


def contact(
    campaign_id: str,
    customer_id: str,
    contacted_at: str,
    responded_at: str | None = None,
    **kw: Any,
) -> dict:
    row = dict(
        campaign_id=campaign_id,
        customer_id=customer_id,
        contacted_at=ts(contacted_at),
        responded_at=ts(responded_at) if responded_at else None,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["responded_at"] or row["contacted_at"])
    return row


def loyalty(
    event_id: str, customer_id: str, occurred_at: str, kind: str, points: int, **kw: Any
) -> dict:
    row = dict(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=ts(occurred_at),
        kind=kind,
        points=points,
        tier=None,
    )
    row.update(_stamps(kw))
    row.setdefault("updated_at", row["occurred_at"])
    return row


def spend(spend_date: str, channel: str, objective: str, amount: float, **kw: Any) -> dict:
    day = dt.date.fromisoformat(spend_date)
    row = dict(
        spend_date=day,
        channel=channel,
        objective=objective,
        amount=amount,
        updated_at=dt.datetime.combine(day, dt.time(23)),
    )
    row.update(_stamps(kw))
    return row


def kpi_history(
    kpi: str,
    dimension: str,
    value: str,
    level: float,
    n: int,
    days: dict[dt.date, float | None] | None = None,
    *,
    start: dt.date,
    end: dt.date,
) -> list[dict]:
    """Daily kpi_daily rows at a flat `level` on `n` observations, with the given values on
    the given days (None: no value that day); for evaluation and alert tests."""
    out, day = [], start
    while day <= end:
        v = (days or {}).get(day, level)
        out.append(
            {
                "as_of_date": day,
                "kpi": kpi,
                "dimension": dimension,
                "dimension_value": value,
                "value": v,
                "numerator": None if v is None else v * n,
                "denominator": float(n),
            }
        )
        day += dt.timedelta(days=1)
    return out
