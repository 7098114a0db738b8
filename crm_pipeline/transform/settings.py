"""pipeline.yaml's segment, tier and KPI settings as the snapshot SQL takes them.

The snapshot marts (crm_pipeline.transform.snapshots) are SQL with placeholders; their
business settings live in include/config/pipeline.yaml (`rfm`, `value_tiers`, `kpis`).
This module checks those settings and turns them into what the SQL reads: bound
placeholder values (`sql_params`: lookback, period, service level, pyramid cut-offs) and
the segment rules as a lookup table (`segment_lookup`, one row per R, F and days since the
first order). The models read the pyramid cut-offs too (`tier_params`), and the nightly
task checks the settings before any work (`segment_map`, `sql_params`). Grain: the
settings of one run.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import pandas as pd

from crm_pipeline.errors import ConfigError

# the column types of `segment_lookup`'s frame, loaded as the temporary table
# rfm_segment_lookup that customer_rfm.sql joins
SEGMENT_LOOKUP_TYPES = {
    "r_score": "integer",
    "f_score": "integer",
    "first_order_days": "integer",
    "segment": "varchar",
}


def segment_map(config: dict[str, Any]) -> pd.DataFrame:
    """The (R, F) cells with their named segments, as ordered candidate rules.

    A rule may require a recent first order (`first_order_within_days`: 'New' is only for
    customers whose first completed order falls in that many days ending at the date). A
    cell's candidates are the matching rules in file order, up to the first one without
    such a condition; each customer gets the first candidate they meet (`segment_lookup`).
    Every cell must reach an unconditional rule, so that every customer gets a segment.
    """
    rows = []
    for r in range(1, 6):
        for f in range(1, 6):
            unconditional = False
            for rule_no, rule in enumerate(config["rfm"]["segments"]):
                if not (rule["r"][0] <= r <= rule["r"][1] and rule["f"][0] <= f <= rule["f"][1]):
                    continue
                within = rule.get("first_order_within_days")
                if within is not None and int(within) < 1:
                    raise ConfigError(
                        f"rfm.segments {rule['segment']}: first_order_within_days must be >= 1"
                    )
                rows.append(
                    {
                        "r_score": r,
                        "f_score": f,
                        "rule_no": rule_no,
                        "segment": rule["segment"],
                        "first_order_within_days": None if within is None else int(within),
                    }
                )
                if within is None:
                    unconditional = True
                    break
            if not unconditional:
                raise ConfigError(
                    f"rfm.segments in pipeline.yaml leaves cell R={r} F={f} unnamed for some "
                    "customers (no rule without first_order_within_days covers it)"
                )
    frame = pd.DataFrame(rows)
    frame["first_order_within_days"] = frame["first_order_within_days"].astype("Int64")
    return frame


def segment_lookup(config: dict[str, Any]) -> pd.DataFrame:
    """Each customer's segment from (R, F, days since the first completed order), as rows.

    The days are capped at the longest `first_order_within_days` (a customer without a
    first completed order counts as the cap): no rule tells such customers apart. For each
    (R, F, days) the segment is the first candidate of `segment_map` the customer meets,
    so customer_rfm.sql finds it by one equality join instead of ranking candidates per
    customer and day.
    """
    cells = segment_map(config)
    cap = first_order_cap(config)
    rows = []
    for (r, f), rules in cells.groupby(["r_score", "f_score"], sort=True):
        rules = rules.sort_values("rule_no")
        for days in range(cap + 1):
            for rule in rules.itertuples():
                within = rule.first_order_within_days
                if pd.isna(within) or days < int(within):
                    rows.append(
                        {
                            "r_score": r,
                            "f_score": f,
                            "first_order_days": days,
                            "segment": rule.segment,
                        }
                    )
                    break
    return pd.DataFrame(rows)


def first_order_cap(config: dict[str, Any]) -> int:
    """The longest `first_order_within_days` of the segment rules (0 without any)."""
    return max(
        (
            int(rule["first_order_within_days"])
            for rule in config["rfm"]["segments"]
            if rule.get("first_order_within_days") is not None
        ),
        default=0,
    )


def tier_params(config: dict[str, Any]) -> dict[str, int]:
    """Cumulative integer percents for the pyramid (1/4/15/80 -> 1, 5, 20)."""
    tiers = config["value_tiers"]
    names = [t["tier"] for t in tiers]
    if names != ["vip", "key", "regular", "small"]:
        raise ConfigError(
            f"value_tiers must be vip, key, regular, small in that order, got {names}"
        )
    cumulative = list(accumulate(int(t["percent"]) for t in tiers))
    if cumulative[-1] != 100:
        raise ConfigError(f"value_tiers percents add up to {cumulative[-1]}, not 100")
    return {f"{n}_cum_pct": c for n, c in zip(names[:3], cumulative[:3], strict=True)}


def overdue_factor(config: dict[str, Any]) -> float:
    """How many usual gaps without an order make a regular buyer overdue (overdue_regulars)."""
    factor = float(config["kpis"].get("overdue_factor", 1.5))
    if not 1.0 <= factor <= 10.0:
        raise ConfigError(f"kpis.overdue_factor must be 1..10, got {factor}")
    return factor


def sql_params(config: dict[str, Any]) -> dict[str, Any]:
    """The placeholders the intermediate and snapshot SQL read, from pipeline.yaml, checked."""
    lookback = int(config["rfm"]["lookback_days"])
    if not 1 <= lookback <= 365:
        raise ConfigError(f"rfm.lookback_days must be 1..365, got {lookback}")
    return {
        "rfm_lookback_days": lookback,
        "rfm_frame_days": lookback - 1,  # a window frame of the lookback: n - 1 days before
        "period_days": 30,  # the KPIs' period: the 30 days ending at the date
        "rfm_first_order_cap": first_order_cap(config),
        "sla_hours": int(config["kpis"]["complaint_sla_hours"]),
        "response_days": int(config["kpis"]["campaign_response_days"]),
        "overdue_factor": overdue_factor(config),
        **tier_params(config),
    }
