"""Who orders on a simulated day, and what: orders and their lines.

Why: orders are the heart of the source (a renewal process per customer: subscribers every
7-14 days with little jitter, others on looser rhythms) and the steps after them (surveys,
loyalty points) need the day's orders, which `_orders` returns as `_Orders`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crm_devtools.demo.customers import _Day
from crm_devtools.demo.draws import _calendar, _pick
from crm_devtools.demo.settings import (
    CANCEL_SHARE,
    CHANNEL_HOURS,
    DAY,
    EXTRA_UNITS,
    FIRST_ORDER_P,
    HOUR,
    PREFERRED_STICKINESS,
    PROMO_SHARE,
    REGULAR,
    SUBSCRIBER,
)
from crm_pipeline import source_schema as ss


@dataclass
class _Orders:
    """Today's orders, for the steps that follow them (surveys, loyalty points)."""

    idx: np.ndarray
    nums: np.ndarray
    time: np.ndarray
    completed: np.ndarray
    net: np.ndarray


def _orders(d: _Day) -> _Orders:
    """Who orders today and what: a renewal process per customer (Weibull gaps; subscribers
    every 7-14 days with little jitter), at most one order per customer and day."""
    pop, tr, rng = d.pop, d.pop.traits, d.rng
    cand = np.flatnonzero(d.alive() & ~tr.never_orders)
    first = pop.n_orders[cand] == 0
    gap = np.where(first, 1, d.day - pop.last_order[cand] // DAY).astype(float)
    lam, k = tr.scale[cand], tr.shape[cand]
    hazard = 1.0 - np.exp((np.maximum(gap - 1, 0) / lam) ** k - (gap / lam) ** k)
    _, _, doy = _calendar(d.day)
    season = 1.0 + 0.15 * math.cos(2 * math.pi * (doy - 196) / 365.25)
    hazard = np.where(tr.kind[cand] == SUBSCRIBER, hazard, 1 - (1 - hazard) ** season)
    p = np.where(first, np.array(FIRST_ORDER_P)[tr.kind[cand]], np.where(gap >= 1, hazard, 0))
    idx = cand[rng.random(cand.size) < p]

    stick = rng.random(idx.size) < PREFERRED_STICKINESS
    channel = np.where(stick, tr.channel[idx], rng.integers(0, 3, idx.size))
    hours = np.array(CHANNEL_HOURS, dtype=float)[channel]
    tod = (hours[:, 0] + rng.random(idx.size) * (hours[:, 1] - hours[:, 0])) * HOUR
    signed_today = pop.created[idx] >= d.start
    after_signup = pop.created[idx] - d.start + 300 + rng.random(idx.size) * 3 * HOUR
    tod = np.where(signed_today, after_signup, tod).astype(np.int64)
    keep = tod < DAY
    idx, channel, time = idx[keep], channel[keep], d.start + tod[keep]
    order = np.argsort(time, kind="stable")
    idx, channel, time = idx[order], channel[order], time[order]
    n = idx.size
    nums = d.ids.take("order", n)
    kind = tr.kind[idx]

    # Lines: 1-5 per order, products by kind and day, quantities by category and basket.
    n_lines = 1 + np.select(
        [kind == SUBSCRIBER, kind == REGULAR],
        [rng.binomial(3, 0.55, n), rng.binomial(4, 0.3, n)],
        rng.binomial(3, 0.3, n),
    )
    line_order = np.repeat(np.arange(n), n_lines)
    starts = np.cumsum(n_lines) - n_lines
    line_no = np.arange(line_order.size) - starts[line_order] + 1
    probs = d.world.catalogue.probabilities(d.day)
    product = _pick(rng.random(line_order.size), probs[kind[line_order]])
    category = d.world.catalogue.category[product]
    extra = np.array(EXTRA_UNITS)[category] * tr.spend[idx][line_order]
    extra *= np.where(kind[line_order] == SUBSCRIBER, 1.5, 1.0)
    quantity = 1 + rng.poisson(extra)
    price, cost = d.world.catalogue.prices(d.day)
    discount_rate = np.where((kind == SUBSCRIBER) & (channel == 0), 0.05, 0.0)
    promo = np.array([0.10, 0.15, 0.20])[rng.integers(0, 3, n)]
    discount_rate = np.maximum(discount_rate, np.where(rng.random(n) < PROMO_SHARE, promo, 0))
    first_online = (pop.n_orders[idx] == 0) & (channel == 2)
    discount_rate = np.maximum(discount_rate, np.where(first_online, 0.15, 0))
    line_gross = quantity * price[product]
    line_discount = np.rint(line_gross * discount_rate[line_order]).astype(np.int64)
    line_net = line_gross - line_discount
    line_cost = quantity * cost[product]

    cancelled = rng.random(n) < CANCEL_SHARE
    cancel_time = np.minimum(time + 300 + (rng.random(n) * 2 * HOUR).astype(np.int64), d.end - 1)
    gross, discount = np.add.reduceat(line_gross, starts), np.add.reduceat(line_discount, starts)
    net = gross - discount
    d.rows.add(
        "orders",
        order_id=nums,
        customer_id=pop.num[idx],
        ordered_at=time,
        status=np.where(cancelled, "cancelled", "completed").astype(object),
        channel=np.array(ss.ORDER_CHANNELS, dtype=object)[channel],
        gross_amount=gross,
        discount_amount=discount,
        net_amount=net,
        cost_amount=np.add.reduceat(line_cost, starts),
        updated_at=np.where(cancelled, cancel_time, time),
    )
    d.rows.add(
        "order_lines",
        order_id=nums[line_order],
        line_no=line_no,
        product_id=product + 1,
        quantity=quantity,
        unit_price=price[product],
        net_amount=line_net,
        updated_at=time[line_order],
    )
    pop.n_orders[idx] += 1
    pop.last_order[idx] = time
    pop.last_order_num[idx] = nums
    pop.last_channel[idx] = channel
    pop.last_complained[idx] = False
    return _Orders(idx=idx, nums=nums, time=time, completed=~cancelled, net=net)
