"""Late changes: what a new day changes in rows written before it.

Why: a real CRM's rows change after they were first written, and incremental extraction must
pick those changes up: on each advanced day, complaint steps and closures, refunds of older
orders, campaign responses, running campaigns and discontinued products move forward here.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from crm_devtools.demo.business import _campaign_rows, _World
from crm_devtools.demo.plans import (
    _complaint_plan,
    _complaint_refunds,
    _cut_complaints,
    _cut_contacts,
    _response_plan,
    _settle_orders,
)
from crm_devtools.demo.settings import (
    COMPLAINT_OUTCOMES,
    DAY,
    NULL,
    REFUND_LOOKBACK_DAYS,
    RESPONSE_WINDOW_DAYS,
    format_id,
)
from crm_devtools.demo.store import _column_arrays, _epoch, _id_numbers, _naive
from crm_pipeline import source_schema as ss


def _late_changes(conn, world: _World, day: int, new_refunds) -> dict[str, dict]:
    """Changes on `day` to rows written before it (key columns plus changed columns)."""
    complaints, refunds = _progress_complaints(conn, world, day)
    refunds = tuple(np.concatenate(p) for p in zip(refunds, new_refunds, strict=True))
    running = [c for c in world.campaigns if c.start_day < day <= c.end_day]
    products = world.catalogue.rows(day)
    gone = (products["discontinued_at"] >= day * DAY) & (products["launched_at"] < day * DAY)
    return {
        "complaints": complaints,
        "orders": _refund_orders(conn, world, day, *refunds),
        "campaign_contacts": _responses(conn, world, day),
        "campaigns": _campaign_rows(running, day),
        "products": {c: products[c][gone] for c in ("product_id", "discontinued_at", "updated_at")},
    }


def _progress_complaints(conn, world: _World, day: int) -> tuple[dict, tuple]:
    """Open complaints whose next steps (or closure) happen on `day`, and the refunds
    their plans hold (applied by _refund_orders when due)."""
    k = ss.complaints
    cols = _column_arrays(
        conn,
        sa.select(k.c.complaint_id, k.c.order_id, k.c.opened_at, k.c.severity)
        .where(k.c.closed_at.is_(None))
        .order_by(k.c.complaint_id),
        4,
    )
    nums, order_id, opened = _id_numbers(cols[0]), _id_numbers(cols[1]), _epoch(cols[2])
    severity = np.array([ss.SEVERITIES.index(s) for s in cols[3]], dtype=np.int64)
    offsets, outcome = _complaint_plan(world.seed, nums, severity, order_id != NULL)
    planned = {
        "complaint_id": nums,
        "order_id": order_id,
        "opened_at": opened,
        **{s: opened + offsets[:, i] for i, s in enumerate(ss.COMPLAINT_STEPS)},
        "outcome": np.array(COMPLAINT_OUTCOMES, dtype=object)[outcome],
    }
    cut = _cut_complaints(planned, (day + 1) * DAY)
    moved = cut["updated_at"] >= day * DAY
    columns = ("complaint_id", *ss.COMPLAINT_STEPS, "outcome", "updated_at")
    return {c: cut[c][moved] for c in columns}, _complaint_refunds(planned)


def _refund_orders(conn, world: _World, day: int, order_nums, times) -> dict[str, np.ndarray]:
    """Orders refunded on `day`: planned random refunds of the last two weeks' orders, and
    orders whose complaint's remedy - a refund - is carried out that day."""
    start, end = day * DAY, (day + 1) * DAY
    due = (times >= start) & (times < end)
    targets = [format_id("order_id", n) for n in order_nums[due].tolist()]
    o = ss.orders
    oid, ordered, status, updated = _column_arrays(
        conn,
        sa.select(o.c.order_id, o.c.ordered_at, o.c.status, o.c.updated_at)
        .where(
            sa.or_(
                o.c.ordered_at >= _naive(start - REFUND_LOOKBACK_DAYS * DAY),
                o.c.order_id.in_(targets),
            )
        )
        .order_by(o.c.order_id),
        4,
    )
    orders = {
        "order_id": _id_numbers(oid),
        "ordered_at": _epoch(ordered),
        "status": np.array(status, dtype=object),
        "updated_at": _epoch(updated),
    }
    settled = _settle_orders(world.seed, orders, order_nums[due], times[due], end)
    changed = settled["status"] != orders["status"]
    return {c: settled[c][changed] for c in ("order_id", "status", "updated_at")}


def _responses(conn, world: _World, day: int) -> dict[str, np.ndarray]:
    """Campaign contacts of the last two weeks whose planned response comes on `day`."""
    cc = ss.campaign_contacts
    campaign, who, contacted = _column_arrays(
        conn,
        sa.select(cc.c.campaign_id, cc.c.customer_id, cc.c.contacted_at)
        .where(
            cc.c.responded_at.is_(None),
            cc.c.contacted_at >= _naive((day - RESPONSE_WINDOW_DAYS - 1) * DAY),
        )
        .order_by(cc.c.campaign_id, cc.c.customer_id),
        3,
    )
    contacts = {
        "campaign_id": _id_numbers(campaign),
        "customer_id": _id_numbers(who),
        "contacted_at": _epoch(contacted),
    }
    contacts["responded_at"] = _response_plan(world.seed, *contacts.values())
    cut = _cut_contacts(contacts, (day + 1) * DAY)
    answered = cut["responded_at"] != NULL
    columns = ("campaign_id", "customer_id", "responded_at", "updated_at")
    return {c: cut[c][answered] for c in columns}
