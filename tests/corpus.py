"""A small, clean CRM source for the validation corpus, and the nights that break it.

`base_rows(day)` is a business that passes every rule up to `day`: ten customers, orders
with lines on most days, surveys, complaints with their steps in order, interactions, a
campaign with contacts, marketing spend and loyalty events. `night_rows(day, n)` is one more
ordinary day (n orders with a line each, all updated that day). The corpus tests add one
defect to such a night and check what validation makes of it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from factories import complaint, customer, order, survey, ts

from crm_pipeline.source_schema import metadata

CUSTOMERS = [f"C{i}" for i in range(1, 11)]
PRODUCTS = ("P1", "P2", "P3")


def product(product_id: str, launched_at: str = "2024-01-01", **kw: Any) -> dict:
    row = dict(
        product_id=product_id,
        name=f"Product {product_id}",
        category="milk",
        launched_at=ts(launched_at),
        discontinued_at=None,
    )
    row.update(kw)
    row.setdefault("updated_at", row["launched_at"])
    return row


def order_line(
    order_id: str,
    line_no: int,
    product_id: str,
    updated_at: dt.datetime,
    *,
    quantity: int = 2,
    unit_price: float = 5.0,
    **kw: Any,
) -> dict:
    row = dict(
        order_id=order_id,
        line_no=line_no,
        product_id=product_id,
        quantity=quantity,
        unit_price=unit_price,
        net_amount=round(quantity * unit_price, 2),
        updated_at=updated_at,
    )
    row.update(kw)
    return row


def interaction(interaction_id: str, customer_id: str, occurred_at: str, **kw: Any) -> dict:
    row = dict(
        interaction_id=interaction_id,
        customer_id=customer_id,
        occurred_at=ts(occurred_at),
        channel="phone",
        direction="inbound",
    )
    row.update(kw)
    row.setdefault("updated_at", row["occurred_at"])
    return row


def campaign(campaign_id: str, started_at: str, ended_at: str, **kw: Any) -> dict:
    row = dict(
        campaign_id=campaign_id,
        name=f"Campaign {campaign_id}",
        channel="email",
        objective="retention",
        started_at=ts(started_at),
        ended_at=ts(ended_at),
        spend=1000.0,
    )
    row.update(kw)
    row.setdefault("updated_at", row["started_at"])
    return row


def campaign_contact(campaign_id: str, customer_id: str, contacted_at: str, **kw: Any) -> dict:
    row = dict(
        campaign_id=campaign_id,
        customer_id=customer_id,
        contacted_at=ts(contacted_at),
        responded_at=None,
    )
    row.update({k: ts(v) if k.endswith("_at") and isinstance(v, str) else v for k, v in kw.items()})
    row.setdefault("updated_at", row["responded_at"] or row["contacted_at"])
    return row


def spend(day: dt.date, amount: float = 50.0, **kw: Any) -> dict:
    row = dict(
        spend_date=day,
        channel="email",
        objective="acquisition",
        amount=amount,
        updated_at=dt.datetime.combine(day, dt.time(23, 59, 59)),
    )
    row.update(kw)
    return row


def loyalty_event(
    event_id: str,
    customer_id: str,
    occurred_at: str,
    kind: str = "earn",
    points: int = 10,
    **kw: Any,
) -> dict:
    row = dict(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=ts(occurred_at),
        kind=kind,
        points=points,
        tier=None,
    )
    row.update(kw)
    row.setdefault("updated_at", row["occurred_at"])
    return row


def with_line(o: dict, product_id: str = "P1") -> tuple[dict, dict]:
    """An order and its one line, consistent with each other."""
    qty = 2
    line = order_line(
        o["order_id"],
        1,
        product_id,
        o["updated_at"],
        quantity=qty,
        unit_price=round(o["net_amount"] / qty, 2),
    )
    return o, line


def base_rows(day: dt.date, days: int = 20) -> dict[str, list[dict]]:
    """A clean business over the `days` days up to `day`."""
    first = day - dt.timedelta(days=days - 1)
    rows: dict[str, list[dict]] = {
        t: []
        for t in (
            "customers",
            "products",
            "orders",
            "order_lines",
            "surveys",
            "complaints",
            "interactions",
            "campaigns",
            "campaign_contacts",
            "marketing_spend",
            "loyalty_events",
        )
    }
    start = first - dt.timedelta(days=30)
    rows["customers"] = [
        customer(c, f"{start + dt.timedelta(days=i)} 09:00") for i, c in enumerate(CUSTOMERS)
    ]
    rows["products"] = [product(p, f"{start}") for p in PRODUCTS]
    rows["campaigns"] = [
        campaign("M1", f"{first} 08:00", f"{day} 20:00", updated_at=ts(f"{day} 20:00"))
    ]
    n = 0
    for d in range(days):
        date = first + dt.timedelta(days=d)
        c = CUSTOMERS[d % len(CUSTOMERS)]
        for k in range(2):
            n += 1
            o = order(
                f"O{n}",
                CUSTOMERS[(d + k) % len(CUSTOMERS)],
                f"{date} {10 + k}:00",
                20.0 + k,
                discount=1.0 if k else 0.0,
            )
            o, line = with_line(o, PRODUCTS[n % 3])
            rows["orders"].append(o)
            rows["order_lines"].append(line)
        rows["surveys"].append(
            survey(f"S{d}", c, f"{date} 15:00", "csat" if d % 2 else "nps", 4 if d % 2 else 9)
        )
        rows["interactions"].append(interaction(f"I{d}", c, f"{date} 16:00"))
        rows["marketing_spend"].append(spend(date))
        rows["loyalty_events"].append(loyalty_event(f"L{d}", c, f"{date} 17:00"))
        if d % 4 == 0:
            rows["complaints"].append(
                complaint(
                    f"T{d}",
                    c,
                    f"{date} 08:00",
                    first_response_at=f"{date} 09:00",
                    cause_found_at=f"{date} 10:00",
                    remedy_decided_at=f"{date} 11:00",
                )
            )
        if d % 2 == 0 and d // 2 < len(CUSTOMERS):
            rows["campaign_contacts"].append(
                campaign_contact("M1", CUSTOMERS[d // 2], f"{date} 12:00")
            )
    return rows


def night_rows(day: dt.date, n_orders: int = 5, prefix: str = "N") -> dict[str, list[dict]]:
    """One ordinary day: `n_orders` orders with a line each, a survey and an interaction."""
    tag = f"{prefix}{day:%m%d}"
    orders, lines = [], []
    for i in range(n_orders):
        o = order(
            f"O{tag}-{i}",
            CUSTOMERS[i % len(CUSTOMERS)],
            f"{day} {8 + i % 12:02d}:{i % 60:02d}",
            10.0 + i,
        )
        o, line = with_line(o, PRODUCTS[i % 3])
        orders.append(o)
        lines.append(line)
    return {
        "orders": orders,
        "order_lines": lines,
        "surveys": [survey(f"S{tag}", "C1", f"{day} 15:00", "csat", 5)],
        "interactions": [interaction(f"I{tag}", "C2", f"{day} 16:00")],
        "marketing_spend": [spend(day)],
        "loyalty_events": [loyalty_event(f"L{tag}", "C3", f"{day} 17:00")],
    }


def add_rows(url: str, rows: dict[str, list[dict]]) -> None:
    """Insert rows into an existing source (tables as they are now, maybe altered)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table, table_rows in rows.items():
            if table_rows:
                tbl = meta.tables[table]
                conn.execute(
                    tbl.insert(), [{k: v for k, v in r.items() if k in tbl.c} for r in table_rows]
                )
    engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)
    engine.dispose()


def drop_primary_key(url: str, table: str) -> None:
    """Recreate a source table without its primary key (a source that lets duplicates in:
    a view, a replica without constraints), same columns and types, same rows."""
    contract = metadata.tables[table]
    loose = sa.Table(
        f"{table}__loose",
        sa.MetaData(),
        *[sa.Column(c.name, c.type, nullable=True) for c in contract.columns],
    )
    engine = sa.create_engine(url)
    loose.create(engine)
    engine.dispose()
    execute(
        url,
        f"insert into {table}__loose select * from {table}",
        f"drop table {table}",
        f"alter table {table}__loose rename to {table}",
    )
