"""One simulated day: life and churn, complaints, surveys, loyalty, interactions, campaigns.

Why: `_simulate_day` fixes the order of a day's steps (the same in generate() and advance());
the steps other than orders live here, each appending its rows to the day's buffers and
scheduling the experience effects that move a customer's churn hazard.
"""

from __future__ import annotations

import numpy as np

from crm_devtools.demo.customers import _complaint_effects, _Day, _experience, _survey_effects
from crm_devtools.demo.draws import _pick, _uniform_times
from crm_devtools.demo.orders import _Orders, _orders
from crm_devtools.demo.plans import _complaint_plan, _response_plan
from crm_devtools.demo.settings import (
    COMMENTS,
    COMPLAINT_CATEGORIES,
    COMPLAINT_OUTCOMES,
    CSAT_SHARE,
    DAY,
    GENERAL_COMPLAINT_RATE,
    HOUR,
    LEVEL_RANGE,
    LOYALTY_TIERS,
    MINUTE,
    NPS_RATE,
    NULL,
    ORDER_COMPLAINT_RATE,
    REDEEM_MIN_BALANCE,
    REDEEM_RATE,
    RETENTION_RESPONSE_EFFECT,
    SCORE_IMPACT,
    SERVICE_CALL_RATE,
    SUBSCRIBER,
    TIER_THRESHOLDS,
    VISIT_RATE,
)
from crm_pipeline import source_schema as ss


def _simulate_day(d: _Day) -> None:
    """Advance `d.pop` by one day and append the day's rows to `d.rows`.

    Order matters and is the same in generate() and advance(): fading/new experience effects
    and winback revivals from earlier days apply first, then today's churn, then the day's
    business (orders, complaints, surveys, loyalty, interactions, campaign contacts).
    """
    _life(d)
    _loyalty_signups(d)
    orders = _orders(d)
    _order_complaints(d)
    _general_complaints(d)
    _csat(d, orders)
    _nps(d)
    _loyalty(d, orders)
    _interactions(d)
    _campaign_contacts(d)


def _life(d: _Day) -> None:
    """Experience effects due, winback revivals, today's hazard and churn."""
    pop = d.pop
    pop.apply_experience(before=d.start)
    revived = pop.due_revivals(before=d.start)
    revived = revived[(pop.churn_day[revived] != NULL) & (pop.segment[revived] == 0)]
    pop.churn_day[revived] = NULL
    pop.segment[revived] = 1
    pop.cum_hazard[revived] = 0.0
    accrue = np.flatnonzero((pop.created // DAY < d.day) & (pop.churn_day == NULL))
    level = np.clip(pop.level[accrue], *LEVEL_RANGE)
    pop.cum_hazard[accrue] += pop.traits.hazard[accrue] * np.exp(level)
    gone = accrue[pop.cum_hazard[accrue] >= pop.traits.patience[accrue, pop.segment[accrue]]]
    pop.churn_day[gone] = d.day
    calls = gone[(pop.traits.kind[gone] == SUBSCRIBER) & (d.rng.random(gone.size) < 0.5)]
    _emit_interactions(d, calls, _uniform_times(d.rng, d.day, calls.size, (8, 20)), 0, 0)


def _loyalty_signups(d: _Day) -> None:
    """Members join the programme when they sign up: at bronze, or at the tier they had
    when the existing base was imported."""
    pop = d.pop
    joined = np.flatnonzero((pop.created >= d.start) & (pop.created < d.end) & pop.member)
    tiers = np.array((None,) + LOYALTY_TIERS, dtype=object)
    _emit_loyalty(d, joined, pop.created[joined], "tier_change", 0, tiers[pop.tier[joined]])


def _order_complaints(d: _Day) -> None:
    """Complaints about a customer's last order, in the three days after it."""
    pop = d.pop
    recent = d.alive() & (pop.last_order != NULL) & ~pop.last_complained
    recent &= d.day - pop.last_order // DAY <= 2
    cand = np.flatnonzero(recent)
    rate = np.array(ORDER_COMPLAINT_RATE)[pop.last_channel[cand]]
    idx = cand[d.rng.random(cand.size) < rate]
    lo = np.maximum(d.start, pop.last_order[idx] + 30 * MINUTE)
    opened = lo + (d.rng.random(idx.size) * (d.end - lo)).astype(np.int64)
    ok = opened < d.end
    idx, opened = idx[ok], opened[ok]
    delivery = np.array((0.3, 0.2, 0.3, 0.1, 0.0, 0.1, 0, 0, 0))
    other = np.array((0.0, 0.0, 0.5, 0.15, 0.15, 0.2, 0, 0, 0))
    probs = np.where((pop.last_channel[idx] == 0)[:, None], delivery, other)
    category = _pick(d.rng.random(idx.size), probs)
    pop.last_complained[idx] = True
    _emit_complaints(d, idx, opened, pop.last_order_num[idx], category)


def _general_complaints(d: _Day) -> None:
    """Complaints not about an order (billing, staff, website, ...)."""
    cand = np.flatnonzero(d.alive() & (d.pop.n_orders > 0))
    idx = cand[d.rng.random(cand.size) < GENERAL_COMPLAINT_RATE]
    opened = _uniform_times(d.rng, d.day, idx.size, (7, 22))
    category = _pick(d.rng.random(idx.size), (0, 0, 0, 0, 0, 0.35, 0.25, 0.2, 0.2))
    _emit_complaints(d, idx, opened, np.full(idx.size, NULL), category)


def _emit_complaints(d: _Day, idx, opened, order_num, category) -> None:
    """Write complaints with their full planned steps (cut at the horizon when written),
    schedule their experience effects and log the customer's call or message."""
    if not np.size(idx):
        return
    order = np.argsort(opened, kind="stable")
    idx, opened, order_num, category = idx[order], opened[order], order_num[order], category[order]
    nums = d.ids.take("complaint", idx.size)
    severity = _pick(d.rng.random(idx.size), (0.5, 0.35, 0.15))
    offsets, outcome = _complaint_plan(d.world.seed, nums, severity, order_num != NULL)
    steps = {s: opened + offsets[:, i] for i, s in enumerate(ss.COMPLAINT_STEPS)}
    d.rows.add(
        "complaints",
        complaint_id=nums,
        customer_id=d.pop.num[idx],
        order_id=order_num,
        opened_at=opened,
        **steps,
        category=np.array(COMPLAINT_CATEGORIES, dtype=object)[category],
        severity=np.array(ss.SEVERITIES, dtype=object)[severity],
        outcome=np.array(COMPLAINT_OUTCOMES, dtype=object)[outcome],
        updated_at=steps["closed_at"],
    )
    d.pop.schedule(*_complaint_effects(idx, opened, severity, offsets))
    channel = _pick(d.rng.random(idx.size), (0.45, 0.3, 0.15, 0.07, 0.03))
    _emit_interactions(d, idx, opened, channel, 0)


def _scores(d: _Day, idx: np.ndarray, survey_type: str) -> np.ndarray:
    """Survey scores: the customer's mood, lowered by bad experience, plus noise."""
    bad = np.clip(d.pop.level[idx], 0, LEVEL_RANGE[1])
    x = d.pop.traits.mood[idx] + d.rng.normal(0, 0.9, idx.size) - SCORE_IMPACT * bad
    if survey_type == "csat":
        return np.clip(np.rint(4.2 + x), 1, 5).astype(np.int64)
    return np.clip(np.rint(8.1 + 1.9 * x), 0, 10).astype(np.int64)


def _csat(d: _Day, orders: _Orders) -> None:
    """CSAT answers to a survey sent after some completed orders, the same day."""
    asked = orders.completed & (d.rng.random(orders.idx.size) < CSAT_SHARE)
    time = orders.time + 600 + (d.rng.random(orders.idx.size) * 8 * HOUR).astype(np.int64)
    keep = asked & (time < d.end)
    _emit_surveys(d, orders.idx[keep], time[keep], "csat", orders.nums[keep])


def _nps(d: _Day) -> None:
    """NPS answers from a rolling relationship survey."""
    cand = np.flatnonzero(d.alive() & (d.pop.n_orders > 0))
    idx = cand[d.rng.random(cand.size) < NPS_RATE]
    _emit_surveys(d, idx, _uniform_times(d.rng, d.day, idx.size, (9, 21)), "nps", None)


def _emit_surveys(d: _Day, idx, time, survey_type: str, order_num) -> None:
    if not np.size(idx):
        return
    order = np.argsort(time, kind="stable")
    idx, time = idx[order], time[order]
    order_num = np.full(idx.size, NULL) if order_num is None else order_num[order]
    score = _scores(d, idx, survey_type)
    low = score <= (2 if survey_type == "csat" else 6)
    high = score >= (5 if survey_type == "csat" else 9)
    sentiment = np.where(low, "low", np.where(high, "high", "mid"))
    pick = d.rng.random(idx.size)
    comment = np.array(
        [
            COMMENTS[s][int(u * len(COMMENTS[s]) / 0.18)] if u < 0.18 else None
            for s, u in zip(sentiment, pick, strict=True)
        ],
        dtype=object,
    )
    d.rows.add(
        "surveys",
        response_id=d.ids.take("survey", idx.size),
        customer_id=d.pop.num[idx],
        responded_at=time,
        survey_type=np.full(idx.size, survey_type, dtype=object),
        score=score,
        comment=comment,
        order_id=order_num,
        updated_at=time,
    )
    d.pop.schedule(*_survey_effects(idx, time, np.full(idx.size, survey_type), score))


def _tier_of(earned: np.ndarray) -> np.ndarray:
    return 1 + np.searchsorted(TIER_THRESHOLDS, earned, side="right")


def _loyalty(d: _Day, orders: _Orders) -> None:
    """Members earn a point per currency unit of completed orders, move up tiers, and
    sometimes redeem points."""
    pop = d.pop
    earns = orders.completed & pop.member[orders.idx] & (orders.net >= 100)
    idx, time, points = orders.idx[earns], orders.time[earns], orders.net[earns] // 100
    _emit_loyalty(d, idx, time, "earn", points, None)
    pop.earned[idx] += points
    pop.balance[idx] += points
    new_tier = _tier_of(pop.earned[idx])
    up = new_tier > pop.tier[idx]
    tiers = np.array((None,) + LOYALTY_TIERS, dtype=object)
    _emit_loyalty(d, idx[up], time[up], "tier_change", 0, tiers[new_tier[up]])
    pop.tier[idx[up]] = new_tier[up]
    pop.tier_changed[idx[up]] = time[up]

    cand = np.flatnonzero(d.alive() & pop.member & (pop.balance >= REDEEM_MIN_BALANCE))
    idx = cand[d.rng.random(cand.size) < REDEEM_RATE]
    points = (pop.balance[idx] * d.rng.uniform(0.4, 1.0, idx.size) // 100 * 100).astype(np.int64)
    pop.balance[idx] -= points
    _emit_loyalty(d, idx, _uniform_times(d.rng, d.day, idx.size, (8, 22)), "redeem", points, None)


def _emit_loyalty(d: _Day, idx, time, kind: str, points, tier) -> None:
    if not np.size(idx):
        return
    n = np.size(idx)
    d.rows.add(
        "loyalty_events",
        event_id=d.ids.take("loyalty_event", n),
        customer_id=d.pop.num[idx],
        occurred_at=time,
        kind=np.full(n, kind, dtype=object),
        points=np.broadcast_to(np.asarray(points, dtype=np.int64), (n,)),
        tier=np.broadcast_to(np.asarray(tier, dtype=object), (n,)),
        updated_at=time,
    )


def _interactions(d: _Day) -> None:
    """Inbound contacts, delivery-staff visits and service calls of customers with us."""
    pop, rng = d.pop, d.rng
    alive = np.flatnonzero(d.alive())
    inbound = alive[rng.random(alive.size) < pop.traits.contact_rate[alive]]
    channel = _pick(rng.random(inbound.size), (0.35, 0.3, 0.2, 0.15, 0.0))
    _emit_interactions(d, inbound, _uniform_times(rng, d.day, inbound.size, (8, 20)), channel, 0)
    delivered = alive[pop.traits.channel[alive] == 0]
    visits = delivered[rng.random(delivered.size) < VISIT_RATE]
    _emit_interactions(d, visits, _uniform_times(rng, d.day, visits.size, (6, 12)), 4, 1)
    calls = alive[rng.random(alive.size) < SERVICE_CALL_RATE]
    _emit_interactions(d, calls, _uniform_times(rng, d.day, calls.size, (9, 18)), 0, 1)


def _emit_interactions(d: _Day, idx, time, channel, direction: int) -> None:
    if not np.size(idx):
        return
    n = np.size(idx)
    channel = np.broadcast_to(np.asarray(channel), (n,))
    order = np.argsort(time, kind="stable")
    d.rows.add(
        "interactions",
        interaction_id=d.ids.take("interaction", n),
        customer_id=d.pop.num[idx][order],
        occurred_at=np.asarray(time)[order],
        channel=np.array(ss.INTERACTION_CHANNELS, dtype=object)[channel[order]],
        direction=np.full(n, ss.DIRECTIONS[direction], dtype=object),
        updated_at=np.asarray(time)[order],
    )


def _campaign_contacts(d: _Day) -> None:
    """Retention campaigns contact recent buyers, winback campaigns lapsed ones; each
    customer at most once per campaign. Planned responses schedule their effect: a
    retention response improves experience, a winback response revives a churned customer."""
    pop = d.pop
    since = d.day - pop.last_order // DAY
    for c in d.world.campaigns:
        if c.objective == "acquisition" or not c.active(d.day):
            continue
        flags = pop.contacted.setdefault(c.num, np.zeros(len(pop), bool))
        if c.objective == "retention":
            eligible = (pop.n_orders >= 2) & (since <= 45)
        else:
            eligible = (pop.n_orders >= 1) & (since >= 60) & (since <= 400)
        cand = np.flatnonzero(d.present() & eligible & ~flags)
        idx = cand[d.rng.random(cand.size) < c.reach / c.days]
        flags[idx] = True
        contacted = _uniform_times(d.rng, d.day, idx.size, (9, 18))
        campaign = np.full(idx.size, c.num)
        responded = _response_plan(d.world.seed, campaign, pop.num[idx], contacted)
        d.rows.add(
            "campaign_contacts",
            campaign_id=campaign,
            customer_id=pop.num[idx],
            contacted_at=contacted,
            responded_at=responded,
            updated_at=np.maximum(contacted, responded),
        )
        answered = responded != NULL
        if c.objective == "retention":
            pop.schedule(
                *_experience(idx[answered], responded[answered], RETENTION_RESPONSE_EFFECT)
            )
        else:
            pop.revivals = tuple(
                np.concatenate(p)
                for p in zip(pop.revivals, (idx[answered], responded[answered]), strict=True)
            )
