"""Things that unfold after a row is written: complaint steps, refunds, campaign responses.

Why: these are planned by a pure hash of (seed, row number) and revealed once their time has
come, so generate() can cut them at the end of history and advance() can reveal the ones due
without storing any plan. This module holds both halves: the plans and the reveal at a horizon.
"""

from __future__ import annotations

import numpy as np

from crm_devtools.demo.business import _objective_of
from crm_devtools.demo.draws import _normal, _pick, _uniforms
from crm_devtools.demo.settings import (
    _HASH_COMPLAINT,
    _HASH_REFUND,
    _HASH_RESPONSE,
    DAY,
    HOUR,
    MINUTE,
    NULL,
    RANDOM_REFUND_SHARE,
    RESPONSE_SHARE,
    RESPONSE_WINDOW_DAYS,
)
from crm_pipeline import source_schema as ss

# --------------------------------------------------------------------------------------
# Plans revealed over time (complaint steps, refunds, campaign responses).
# --------------------------------------------------------------------------------------

#: Median hours of each complaint step after the previous one, by severity (low, med, high).
_STEP_MEDIAN_HOURS = np.array(
    [
        [12.0, 5.0, 1.5],  # first response
        [5.0, 5.0, 3.0],  # cause found
        [3.0, 3.0, 2.0],  # remedy decided
        [7.0, 7.0, 4.0],  # remedy done
        [2.0, 2.0, 1.5],  # customer informed
        [3.0, 3.0, 2.0],  # closed
    ]
)
_OUTCOME_SHARES = (0.2, 0.3, 0.2, 0.25, 0.05)


def _complaint_plan(
    seed: int, nums: np.ndarray, severity: np.ndarray, has_order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Planned step offsets (n, 6) in seconds after opened_at, and outcome codes.

    Each step takes a lognormal time (medians above), at least a minute; 12% of complaints
    get stuck (steps after the first response take 3.5x longer), which puts a share of
    resolutions beyond the 48-hour target. Only complaints about an order end in a refund.
    """
    u = _uniforms(seed, _HASH_COMPLAINT, nums, 14)
    medians = _STEP_MEDIAN_HOURS[:, severity].T * HOUR
    z = np.column_stack([_normal(u[:, 2 * i], u[:, 2 * i + 1]) for i in range(6)])
    durations = np.maximum(medians * np.exp(0.85 * z), MINUTE)
    durations[:, 1:] *= np.where(u[:, 12] < 0.12, 3.5, 1.0)[:, None]
    outcome = _pick(u[:, 13], _OUTCOME_SHARES)
    outcome = np.where((outcome == 0) & ~has_order, 2, outcome)  # refund -> credit note
    return np.cumsum(durations.astype(np.int64), axis=1), outcome


def _refund_plan(seed: int, order_nums: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Planned time of a refund that no complaint explains (1-12 days later), else NULL."""
    u = _uniforms(seed, _HASH_REFUND, order_nums, 2)
    when = ordered + ((1.0 + 11.0 * u[:, 1]) * DAY).astype(np.int64)
    return np.where(u[:, 0] < RANDOM_REFUND_SHARE, when, NULL)


def _response_plan(
    seed: int, campaign_nums: np.ndarray, customer_nums: np.ndarray, contacted: np.ndarray
) -> np.ndarray:
    """Planned response time to a campaign contact (within 14 days), else NULL."""
    keys = np.asarray(campaign_nums, dtype=np.int64) << 32 | np.asarray(customer_nums)
    u = _uniforms(seed, _HASH_RESPONSE, keys, 2)
    winback = _objective_of(campaign_nums) == "winback"
    share = np.where(winback, RESPONSE_SHARE["winback"], RESPONSE_SHARE["retention"])
    delay = 2 * HOUR + (u[:, 1] * (RESPONSE_WINDOW_DAYS * DAY - 3 * HOUR)).astype(np.int64)
    return np.where(u[:, 0] < share, contacted + delay, NULL)


def _reveal(planned: np.ndarray, horizon: int) -> np.ndarray:
    """Hide what has not happened by `horizon` (exclusive): planned times beyond it -> NULL."""
    return np.where((planned != NULL) & (planned < horizon), planned, NULL)


# --------------------------------------------------------------------------------------
# Revealing planned changes at a horizon.
# --------------------------------------------------------------------------------------


def _cut_complaints(rows: dict[str, np.ndarray], horizon: int) -> dict[str, np.ndarray]:
    """Complaint rows as seen at `horizon`: steps not reached yet are NULL, outcome only
    once closed, updated_at is the last step reached."""
    out = dict(rows)
    updated = rows["opened_at"].copy()
    for step in ss.COMPLAINT_STEPS:
        out[step] = _reveal(rows[step], horizon)
        updated = np.maximum(updated, out[step])
    out["outcome"] = np.where(out["closed_at"] != NULL, rows["outcome"], None)
    out["updated_at"] = updated
    return out


def _cut_contacts(rows: dict[str, np.ndarray], horizon: int) -> dict[str, np.ndarray]:
    out = dict(rows)
    out["responded_at"] = _reveal(rows["responded_at"], horizon)
    out["updated_at"] = np.maximum(rows["contacted_at"], out["responded_at"])
    return out


def _complaint_refunds(complaints: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(order number, refund time) of complaints whose remedy - a refund - is planned."""
    refund = (complaints["outcome"] == "refund") & (complaints["order_id"] != NULL)
    return complaints["order_id"][refund], complaints["remedy_done_at"][refund]


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `wanted` in the unique `keys`, and whether each was found."""
    if keys.size == 0:
        return np.zeros(wanted.size, np.int64), np.zeros(wanted.size, bool)
    sorter = np.argsort(keys, kind="stable")
    at = np.minimum(np.searchsorted(keys, wanted, sorter=sorter), keys.size - 1)
    pos = sorter[at]
    return pos, keys[pos] == wanted


def _settle_orders(seed, orders, refund_orders, refund_times, horizon) -> dict[str, np.ndarray]:
    """Order rows as seen at `horizon`: completed orders whose refund (random, or the
    remedy of a complaint) has happened are refunded, updated at the refund time."""
    planned = _refund_plan(seed, orders["order_id"], orders["ordered_at"])
    pos, found = _lookup(orders["order_id"], refund_orders)
    by_complaint = np.full(planned.size, np.iinfo(np.int64).max)
    np.minimum.at(by_complaint, pos[found], refund_times[found])
    planned = np.where(planned == NULL, by_complaint, np.minimum(planned, by_complaint))
    refunded = (orders["status"] == "completed") & (planned < horizon)
    out = dict(orders)
    out["status"] = np.where(refunded, "refunded", orders["status"]).astype(object)
    out["updated_at"] = np.where(refunded, planned, orders["updated_at"])
    return out
