"""Rebuilding the simulation state of the whole base from the source tables (for advance()).

Why: advance() keeps no per-customer state table; traits are hashes, and churn is a threshold
rule over a sum of effects of observable rows, so the state at the start of a day can be
recomputed from the tables (`_load_population`, with `_replay_hazard` the closed form of the
daily accrual).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sqlalchemy as sa

from crm_devtools.demo.business import _objective_of, _World
from crm_devtools.demo.customers import (
    _complaint_effects,
    _experience,
    _Population,
    _survey_effects,
    _traits,
)
from crm_devtools.demo.plans import _complaint_plan, _response_plan
from crm_devtools.demo.settings import (
    DAY,
    LEVEL_RANGE,
    LOYALTY_TIERS,
    NULL,
    RESPONSE_WINDOW_DAYS,
    RETENTION_RESPONSE_EFFECT,
    SCORE_EFFECT_BOUNDS,
    format_id,
)
from crm_devtools.demo.store import _column_arrays, _epoch, _id_numbers, _naive
from crm_pipeline import source_schema as ss

# --------------------------------------------------------------------------------------
# The state at the start of a day, rebuilt from the tables (for advance()).
# --------------------------------------------------------------------------------------


def _group_cumsum(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting at each new value of the sorted `groups`."""
    total = np.cumsum(values)
    if values.size == 0:
        return total
    starts = np.r_[True, groups[1:] != groups[:-1]]
    base = (total - values)[starts]
    return total - base[np.cumsum(starts) - 1]


def _replay_hazard(
    start: np.ndarray,
    hazard: np.ndarray,
    patience: np.ndarray,
    events: tuple[np.ndarray, np.ndarray, np.ndarray],
    through: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Closed form of the daily accrual in `_life` for one life of each customer.

    A customer accrues hazard * exp(level(day)) on each day from `start` to `through`,
    where level(day) sums the experience effects timed before that day; they churn on the
    first day the sum reaches their patience. Returns (accrued through `through` or at
    churn, churn day or NULL). Effects are (customer index, time, delta).
    """
    n = start.size
    idx, time, delta = events
    effective = time // DAY + 1  # an effect counts from the day after it happened
    keep = effective <= through
    idx, effective, delta = idx[keep], np.maximum(effective[keep], start[idx[keep]]), delta[keep]
    # Breakpoints: each customer's start (delta 0) and each effect; level = running sum.
    b_idx = np.concatenate([np.arange(n), idx])
    b_day = np.concatenate([start, effective])
    b_delta = np.concatenate([np.zeros(n), delta])
    order = np.lexsort((np.r_[np.zeros(n), np.ones(idx.size)], b_day, b_idx))
    b_idx, b_day, b_delta = b_idx[order], b_day[order], b_delta[order]
    level = _group_cumsum(b_idx, b_delta)
    last_of_day = np.r_[(b_idx[1:] != b_idx[:-1]) | (b_day[1:] != b_day[:-1]), True]
    b_idx, b_day, level = b_idx[last_of_day], b_day[last_of_day], level[last_of_day]
    next_day = np.r_[b_day[1:], 0]
    group_end = np.r_[b_idx[1:] != b_idx[:-1], True]
    next_day = np.where(group_end, through + 1, next_day)
    length = np.maximum(next_day - b_day, 0)
    rate = hazard[b_idx] * np.exp(np.clip(level, *LEVEL_RANGE))
    accrued = _group_cumsum(b_idx, rate * length)
    crossed = np.flatnonzero(accrued >= patience[b_idx])
    cum = np.zeros(n)
    cum[b_idx[group_end]] = accrued[group_end]
    churn = np.full(n, NULL, np.int64)
    who, first = np.unique(b_idx[crossed], return_index=True)
    j = crossed[first]
    before = accrued[j] - rate[j] * length[j]
    steps = np.maximum(np.ceil((patience[who] - before) / rate[j]), 1).astype(np.int64)
    churn[who] = b_day[j] + np.minimum(steps, length[j]) - 1
    cum[who] = before + rate[j] * (churn[who] - b_day[j] + 1)
    return cum, churn


def _load_population(conn, world: _World, day: int) -> _Population:
    """The simulation state at the start of `day`, rebuilt from the source tables."""
    pop, position = _load_customers(conn, world.seed)
    _load_orders(conn, pop, position, day)
    _load_loyalty(conn, pop, position)
    effects, revivals = _observed_effects(conn, world.seed, day, position)
    _replay_lives(pop, effects, revivals, day)
    cc = ss.campaign_contacts
    for campaign in world.campaigns:
        if campaign.active(day) and campaign.objective != "acquisition":
            cid = format_id("campaign_id", campaign.num)
            (who,) = _column_arrays(
                conn, sa.select(cc.c.customer_id).where(cc.c.campaign_id == cid), 1
            )
            pop.contacted[campaign.num] = np.isin(np.arange(len(pop)), position(who))
    return pop


def _load_customers(conn, seed: int) -> tuple[_Population, Callable[[Sequence], np.ndarray]]:
    """Fresh state for every customer, ordered by number, and a lookup id -> position."""
    c = ss.customers
    cid, created, member, tier = _column_arrays(
        conn, sa.select(c.c.customer_id, c.c.created_at, c.c.loyalty_member, c.c.loyalty_tier), 4
    )
    nums = _id_numbers(cid)
    order = np.argsort(nums, kind="stable")
    codes = {t: i + 1 for i, t in enumerate(LOYALTY_TIERS)}
    tier = np.array([codes.get(t, 0) for t in tier], dtype=np.int8)[order]
    nums = nums[order]
    pop = _Population.fresh(_traits(seed, nums), nums, _epoch(created)[order], tier)
    pop.member = np.array(member, dtype=bool)[order]

    def position(ids: Sequence) -> np.ndarray:
        return np.searchsorted(pop.num, _id_numbers(ids))

    return pop, position


def _load_orders(conn, pop: _Population, position: Callable, day: int) -> None:
    """Order counts and last orders; details of the last order only where a complaint
    about it is still possible (ordered in the last three days)."""
    o, k = ss.orders, ss.complaints
    who, n_orders, last = _column_arrays(
        conn,
        sa.select(o.c.customer_id, sa.func.count(), sa.func.max(o.c.ordered_at)).group_by(
            o.c.customer_id
        ),
        3,
    )
    at = position(who)
    pop.n_orders[at] = np.array(n_orders, dtype=np.int64)
    pop.last_order[at] = _epoch(last)
    since = _naive((day - 3) * DAY)
    oid, who, ordered, channel = _column_arrays(
        conn,
        sa.select(o.c.order_id, o.c.customer_id, o.c.ordered_at, o.c.channel).where(
            o.c.ordered_at >= since
        ),
        4,
    )
    # A complaint about an order is opened within three days of it, so only recent
    # complaints can be about these orders.
    (complained,) = _column_arrays(
        conn, sa.select(k.c.order_id).where(k.c.opened_at >= since, k.c.order_id.is_not(None)), 1
    )
    at = position(who)
    latest = _epoch(ordered) == pop.last_order[at]
    at = at[latest]
    nums = _id_numbers(oid)[latest]
    pop.last_order_num[at] = nums
    codes = np.array([ss.ORDER_CHANNELS.index(ch) for ch in channel], dtype=np.int64)
    pop.last_channel[at] = codes[latest]
    pop.last_complained[at] = np.isin(nums, _id_numbers(complained))


def _load_loyalty(conn, pop: _Population, position: Callable) -> None:
    """Lifetime points earned and the balance left after redemptions."""
    le = ss.loyalty_events
    who, kind, points = _column_arrays(
        conn,
        sa.select(le.c.customer_id, le.c.kind, sa.func.sum(le.c.points)).group_by(
            le.c.customer_id, le.c.kind
        ),
        3,
    )
    at, kind, points = position(who), np.array(kind), np.array(points, dtype=np.int64)
    earn, redeem = kind == "earn", kind == "redeem"
    np.add.at(pop.earned, at[earn], points[earn])
    np.add.at(pop.balance, at[earn], points[earn])
    np.subtract.at(pop.balance, at[redeem], points[redeem])


def _observed_effects(conn, seed: int, day: int, position: Callable) -> tuple[tuple, tuple]:
    """All experience effects and winback responses implied by the rows (and by the plans
    of complaints and contacts still unfolding). Only rows that can carry an effect are
    read: surveys with a very low or very high score, contacts that were answered or may
    still be."""
    k = ss.complaints
    cnum, who, opened, severity, order_id = _column_arrays(
        conn,
        sa.select(
            k.c.complaint_id, k.c.customer_id, k.c.opened_at, k.c.severity, k.c.order_id
        ).order_by(k.c.complaint_id),
        5,
    )
    sev = np.array([ss.SEVERITIES.index(s) for s in severity], dtype=np.int64)
    has_order = np.array([o is not None for o in order_id], dtype=bool)
    offsets, _ = _complaint_plan(seed, _id_numbers(cnum), sev, has_order)
    parts = [_complaint_effects(position(who), _epoch(opened), sev, offsets)]

    s = ss.surveys
    telling = sa.or_(
        *[
            sa.and_(s.c.survey_type == kind, sa.or_(s.c.score <= low, s.c.score >= high))
            for kind, (low, high) in SCORE_EFFECT_BOUNDS.items()
        ]
    )
    who, responded, survey_type, score = _column_arrays(
        conn,
        sa.select(s.c.customer_id, s.c.responded_at, s.c.survey_type, s.c.score)
        .where(telling)
        .order_by(s.c.response_id),
        4,
    )
    parts.append(
        _survey_effects(
            position(who), _epoch(responded), np.array(survey_type), np.array(score, dtype=np.int64)
        )
    )

    cc = ss.campaign_contacts
    may_answer = cc.c.contacted_at >= _naive((day - RESPONSE_WINDOW_DAYS - 1) * DAY)
    campaign, who, contacted = _column_arrays(
        conn,
        sa.select(cc.c.campaign_id, cc.c.customer_id, cc.c.contacted_at)
        .where(sa.or_(cc.c.responded_at.is_not(None), may_answer))
        .order_by(cc.c.campaign_id, cc.c.customer_id),
        3,
    )
    campaign_nums, at = _id_numbers(campaign), position(who)
    answered = _response_plan(seed, campaign_nums, _id_numbers(who), _epoch(contacted))
    winback = _objective_of(campaign_nums) == "winback"
    got = answered != NULL
    parts.append(
        _experience(at[got & ~winback], answered[got & ~winback], RETENTION_RESPONSE_EFFECT)
    )
    effects = tuple(np.concatenate(p) for p in zip(*parts, strict=True))
    revivals = (at[got & winback], answered[got & winback])
    return effects, revivals


def _replay_lives(pop: _Population, effects, revivals, day: int) -> None:
    """Set level, accrued hazard, churn and segment as _simulate_day left them after
    `day - 1`, and queue the effects and revivals that are still to come."""
    through = day - 1
    idx, time, delta = effects
    applied = time < through * DAY  # step `through` applied effects timed before it
    pop.level = np.bincount(idx[applied], delta[applied], minlength=len(pop)).astype(float)
    pop.pending = (idx[~applied], time[~applied], delta[~applied])
    start = pop.created // DAY + 1
    tr = pop.traits
    cum, churn = _replay_hazard(start, tr.hazard, tr.patience[:, 0], effects, through)
    # A winback response revives a churned customer on the next day, once.
    r_idx, r_time = revivals
    r_day = r_time // DAY
    order = np.lexsort((r_time, r_idx))
    r_idx, r_day = r_idx[order], r_day[order]
    usable = (churn[r_idx] != NULL) & (r_day >= churn[r_idx]) & (r_day + 1 <= through)
    who, first = np.unique(r_idx[usable], return_index=True)
    revive_day = r_day[usable][first] + 1
    pop.segment[who] = 1
    if who.size:
        sub = np.full(len(pop), False)
        sub[who] = True
        start2 = np.full(len(pop), through + 1)
        start2[who] = revive_day
        cum2, churn2 = _replay_hazard(start2, tr.hazard, tr.patience[:, 1], effects, through)
        cum[who], churn[who] = cum2[who], churn2[who]
    pop.cum_hazard, pop.churn_day = cum, churn
    pending = r_day + 1 > through
    pop.revivals = (r_idx[pending], r_time[order][pending])
