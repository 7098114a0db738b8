"""CDNOW (Fader, Hardie & Lee 2005) as a CRM source with an order database and nothing else.

The 1/10 sample in tests/data/cdnow (2,357 customers, 6,919 purchases, 1997-01-01 ..
1998-06-30; SOURCE.md says where it comes from) becomes the contract's customers,
products, orders and order lines: a customer is created on the day of their first
purchase, each purchase is a completed online order at noon with one line (the number of
CDs, the dollar value), at a 40% margin. The CRM tables beyond the order database
(surveys, complaints, interactions, campaigns, marketing spend, loyalty) are created empty,
or not at all with `crm_tables=False`: the shape of a company starting out.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from crm_pipeline.source_schema import REQUIRED_TABLES, metadata

DATA = Path(__file__).resolve().parent / "data" / "cdnow"
CALIBRATION_END = dt.date(1997, 9, 30)  # the papers' 39-week calibration period
LAST_DAY = dt.date(1998, 6, 30)


def transactions() -> list[tuple[str, dt.date, int, float]]:
    """(customer id, date, number of CDs, dollars) for every line of CDNOW_sample.txt."""
    out = []
    for line in (DATA / "CDNOW_sample.txt").read_text().splitlines():
        if line.strip():
            _, sample_id, day, cds, dollars = line.split()
            out.append(
                (
                    f"C{int(sample_id):04d}",
                    dt.datetime.strptime(day, "%Y%m%d").date(),
                    int(cds),
                    float(dollars),
                )
            )
    return out


def build(url: str, crm_tables: bool = True) -> str:
    """Write the CDNOW source at `url` (any SQLAlchemy URL); returns the URL."""
    rows = transactions()
    first: dict[str, dt.date] = {}
    for customer_id, day, _, _ in rows:
        first[customer_id] = min(day, first.get(customer_id, day))
    customers = [
        {
            "customer_id": c,
            "created_at": dt.datetime.combine(d, dt.time()),
            "name": f"CDNOW customer {c[1:]}",
            "email": f"{c.lower()}@cdnow.example",
            "city": "unknown",
            "region": "us",
            "acquisition_channel": "online",
            "birth_year": None,
            "gender": None,
            "income_band": None,
            "loyalty_member": False,
            "loyalty_tier": None,
            "updated_at": dt.datetime.combine(d, dt.time()),
        }
        for c, d in sorted(first.items())
    ]
    products = [
        {
            "product_id": "CD",
            "name": "Compact disc",
            "category": "music",
            "launched_at": dt.datetime(1990, 1, 1),
            "discontinued_at": None,
            "updated_at": dt.datetime(1990, 1, 1),
        }
    ]
    orders, lines = [], []
    for n, (customer_id, day, cds, dollars) in enumerate(rows, start=1):
        at = dt.datetime.combine(day, dt.time(12))
        order_id = f"T{n:05d}"
        orders.append(
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "ordered_at": at,
                "status": "completed",
                "channel": "online",
                "gross_amount": dollars,
                "discount_amount": 0.0,
                "net_amount": dollars,
                "cost_amount": round(dollars * 0.6, 2),
                "updated_at": at,
            }
        )
        lines.append(
            {
                "order_id": order_id,
                "line_no": 1,
                "product_id": "CD",
                "quantity": cds,
                "unit_price": round(dollars / cds, 2),
                "net_amount": dollars,
                "updated_at": at,
            }
        )
    engine = sa.create_engine(url)
    tables = [t for name, t in metadata.tables.items() if crm_tables or name in REQUIRED_TABLES]
    metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        for table, table_rows in (
            ("customers", customers),
            ("products", products),
            ("orders", orders),
            ("order_lines", lines),
        ):
            conn.execute(metadata.tables[table].insert(), table_rows)
    engine.dispose()
    return url
