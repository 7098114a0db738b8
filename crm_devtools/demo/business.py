"""One plan for the whole business: products, campaigns, acquisition volume, marketing spend.

Why: what is the same for every customer (`_World`: the catalogue with its launches and
fades, the campaign plan per quarter, the sign-up curve, the daily marketing spend) is built
once from the seed, both by generate() and by advance(), and read by every simulated day.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crm_devtools.demo.draws import _calendar, _day_number, _seconds
from crm_devtools.demo.settings import (
    _TAG_CAMPAIGNS,
    _TAG_PRODUCTS,
    _TAG_SPEND,
    CATEGORY_MIX,
    CORE_PRODUCTS,
    DAY,
    IMPORT_SHARE,
    LAUNCHES,
    NULL,
    PRICE_BASE_YEAR,
    PRICE_INFLATION,
    PRODUCT_CATEGORIES,
    TARGET_CAC,
)
from crm_pipeline import source_schema as ss

# --------------------------------------------------------------------------------------
# Products, campaigns, acquisition volume and marketing spend: one plan for the business.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    """Every product the business ever sells, with launch/discontinue days and popularity.

    Products on sale at the start of history are "launched" on its first day (the catalogue
    import), later launches ramp up over three weeks and then fade towards a floor; some are
    discontinued. Only products launched by the horizon are written.
    """

    name: np.ndarray
    category: np.ndarray  # index into PRODUCT_CATEGORIES
    price: np.ndarray  # list price in cents at PRICE_BASE_YEAR
    margin: np.ndarray
    popularity: np.ndarray
    launch_day: np.ndarray
    discontinue_day: np.ndarray  # NULL: never
    fade_days: np.ndarray  # inf for core products
    floor: np.ndarray
    months: np.ndarray  # (P, 12) bool: months a product is sold in

    @property
    def nums(self) -> np.ndarray:
        return np.arange(1, self.name.size + 1)

    def probabilities(self, day: int) -> np.ndarray:
        """(3, P) chance that a line of a subscriber / regular / occasional order is each
        product on `day`: category mix by kind, then popularity within the category."""
        _, month, doy = _calendar(day)
        age = day - self.launch_day
        on_sale = (age >= 0) & ((self.discontinue_day == NULL) | (day < self.discontinue_day))
        on_sale &= self.months[:, int(month) - 1]
        ramp = np.minimum(1.0, (age + 1) / 21.0)
        fade = self.floor + (1 - self.floor) * np.exp(-np.maximum(age - 21, 0) / self.fade_days)
        summer = 1.0 + 0.2 * (self.category == 1) * math.cos(2 * math.pi * (doy - 196) / 365.25)
        weight = np.where(on_sale, self.popularity * ramp * fade * summer, 0.0)
        per_category = np.bincount(self.category, weight, minlength=len(PRODUCT_CATEGORIES))
        share = np.divide(weight, per_category[self.category], where=weight > 0, out=weight * 0)
        mix = np.array(CATEGORY_MIX)[:, self.category] * (per_category[self.category] > 0)
        probs = mix * share
        return probs / probs.sum(axis=1, keepdims=True)

    def prices(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """(unit price, unit cost) in cents on `day`; prices rise once a year."""
        year = int(_calendar(day)[0])
        price = np.rint(self.price * (1 + PRICE_INFLATION) ** (year - PRICE_BASE_YEAR))
        return price.astype(np.int64), np.rint(price * (1 - self.margin)).astype(np.int64)

    def rows(self, horizon_day: int) -> dict[str, np.ndarray]:
        """Products table as known at the end of `horizon_day`."""
        keep = self.launch_day <= horizon_day
        disc = np.where(
            (self.discontinue_day != NULL) & (self.discontinue_day <= horizon_day),
            self.discontinue_day * DAY,
            NULL,
        )
        launched = self.launch_day * DAY
        return {
            "product_id": self.nums[keep],
            "name": self.name[keep],
            "category": np.array(PRODUCT_CATEGORIES)[self.category][keep],
            "launched_at": launched[keep],
            "discontinued_at": disc[keep],
            "updated_at": np.maximum(launched, disc)[keep],
        }


def _catalogue(seed: int, first_day: int) -> _Catalogue:
    rng = np.random.default_rng([seed, _TAG_PRODUCTS])
    specs = CORE_PRODUCTS + LAUNCHES
    n_core, n = len(CORE_PRODUCTS), len(specs)
    launch = np.full(n, first_day, dtype=np.int64)
    gaps = 40 + 55 * np.arange(len(LAUNCHES)) + rng.integers(-10, 11, len(LAUNCHES))
    launch[n_core:] = first_day + gaps
    popularity = rng.lognormal(0.0, 0.5, n)
    category = np.array([PRODUCT_CATEGORIES.index(s[1]) for s in specs])
    leaders = [int(np.flatnonzero(category == c)[0]) for c in range(len(PRODUCT_CATEGORIES))]
    popularity[leaders] *= 2.5  # the first core product of each category leads it
    popularity[n_core:] *= 1.5  # launches start strong, then fade
    discontinue = np.full(n, NULL, dtype=np.int64)
    year_round = [i for i in range(n_core) if CORE_PRODUCTS[i][3] is None and i not in leaders]
    core_out = rng.choice(year_round, size=3, replace=False)
    discontinue[core_out] = first_day + rng.integers(60, 1100, 3)
    launched_out = n_core + np.flatnonzero(rng.random(len(LAUNCHES)) < 0.4)
    discontinue[launched_out] = launch[launched_out] + rng.integers(150, 420, launched_out.size)
    fade = np.full(n, np.inf)
    fade[n_core:] = rng.uniform(60, 220, len(LAUNCHES))
    floor = np.ones(n)
    floor[n_core:] = rng.uniform(0.05, 0.3, len(LAUNCHES))
    months = np.ones((n, 12), dtype=bool)
    for i, spec in enumerate(specs):
        if spec[3]:
            months[i] = np.isin(np.arange(1, 13), spec[3])
    return _Catalogue(
        name=np.array([s[0] for s in specs], dtype=object),
        category=category,
        price=np.array([s[2] for s in specs], dtype=float),
        margin=rng.uniform(0.34, 0.5, n),
        popularity=popularity,
        launch_day=launch,
        discontinue_day=discontinue,
        fade_days=fade,
        floor=floor,
        months=months,
    )


_CAMPAIGN_SLOTS = ("acquisition", "retention", "winback", "acquisition", "retention")


def _objective_of(campaign_nums: np.ndarray) -> np.ndarray:
    """A campaign's objective from its number (numbers encode quarter and slot)."""
    slots = np.array(_CAMPAIGN_SLOTS + ("acquisition",) * (8 - len(_CAMPAIGN_SLOTS)))
    return slots[(np.asarray(campaign_nums, dtype=np.int64) - 1) % 8]


_CAMPAIGN_CHANNELS = {
    "acquisition": ("social", "search", "print", "events", "display"),
    "retention": ("email", "sms", "direct_mail"),
    "winback": ("email", "sms", "direct_mail"),
}
_CAMPAIGN_BUDGET = {
    "acquisition": (8000, 25000),
    "retention": (2000, 6000),
    "winback": (1500, 4000),
}
_CAMPAIGN_REACH = {"acquisition": 0.0, "retention": 0.25, "winback": 0.4}


@dataclass(frozen=True)
class _Campaign:
    """One campaign; its row shows the campaign so far (ended_at and spend grow while it
    runs), so no timestamp is ever in the future."""

    num: int
    name: str
    channel: str
    objective: str
    start_day: int
    end_day: int
    budget: int  # cents
    reach: float  # share of eligible customers contacted over the campaign

    @property
    def days(self) -> int:
        return self.end_day - self.start_day + 1

    def active(self, day: int) -> bool:
        return self.start_day <= day <= self.end_day

    def daily_spend(self, day: int) -> int:
        if not self.active(day):
            return 0
        per_day = self.budget // self.days
        return per_day + (self.budget - per_day * self.days if day == self.end_day else 0)

    def row(self, horizon_day: int) -> dict:
        last = min(horizon_day, self.end_day)
        ended = (
            _seconds(self.end_day, 20)
            if horizon_day >= self.end_day
            else _seconds(horizon_day + 1) - 1
        )
        spend = sum(self.daily_spend(d) for d in range(self.start_day, last + 1))
        return {
            "campaign_id": self.num,
            "name": self.name,
            "channel": self.channel,
            "objective": self.objective,
            "started_at": _seconds(self.start_day, 8),
            "ended_at": ended,
            "spend": spend,
            "updated_at": ended,
        }


def _campaigns(seed: int, first_day: int, through_day: int, scale: float) -> list[_Campaign]:
    """Campaigns starting between first_day and through_day: three to five per quarter.

    Each quarter is planned from its own generator, so the plan for a quarter does not
    depend on the window; campaign numbers encode quarter and slot and are stable too.
    """
    out = []
    y0, m0, _ = _calendar(first_day)
    y1, m1, _ = _calendar(through_day)
    for q in range(int(y0) * 4 + (int(m0) - 1) // 3, int(y1) * 4 + (int(m1) - 1) // 3 + 1):
        rng = np.random.default_rng([seed, _TAG_CAMPAIGNS, q])
        year, quarter = divmod(q, 4)
        q_start = _day_number(dt.date(year, 3 * quarter + 1, 1))
        n_slots = 3 + int(rng.integers(0, 3))
        for slot, objective in enumerate(_CAMPAIGN_SLOTS[:n_slots]):
            channels = _CAMPAIGN_CHANNELS[objective]
            channel = channels[int(rng.integers(len(channels)))]
            long = objective == "acquisition"
            duration = int(rng.integers(14, 36) if long else rng.integers(7, 22))
            start = q_start + int(rng.integers(0, 90 - duration))
            lo, hi = _CAMPAIGN_BUDGET[objective]
            budget = int(rng.uniform(lo, hi) * scale * 100)
            if not first_day <= start <= through_day:
                continue
            out.append(
                _Campaign(
                    num=(q - 8000) * 8 + slot + 1,
                    name=f"{year} Q{quarter + 1} {objective.title()} - {channel}",
                    channel=channel,
                    objective=objective,
                    start_day=start,
                    end_day=start + duration - 1,
                    budget=budget,
                    reach=_CAMPAIGN_REACH[objective],
                )
            )
    return out


@dataclass(frozen=True)
class _World:
    """What is the same for every customer: parameters, catalogue, campaign plan."""

    seed: int
    first_day: int
    base_days: int  # the history length generate() was asked for
    customers: int  # the base size generate() was asked for
    catalogue: _Catalogue
    campaigns: tuple[_Campaign, ...]

    @classmethod
    def build(cls, seed, first_day, base_days, customers, through_day) -> _World:
        scale = customers / 20_000
        return cls(
            seed=seed,
            first_day=first_day,
            base_days=base_days,
            customers=customers,
            catalogue=_catalogue(seed, first_day),
            campaigns=tuple(_campaigns(seed, first_day, through_day, scale)),
        )

    def acquisition_weight(self, days: np.ndarray) -> np.ndarray:
        """Relative number of sign-ups per day: growth, spring/autumn peaks, weekends."""
        days = np.asarray(days)
        _, _, doy = _calendar(days)
        growth = 1.0 + 0.7 * (days - self.first_day) / self.base_days
        season = (
            1.0
            + 0.2 * np.cos(2 * np.pi * (doy - 110) / 365.25)
            + 0.1 * np.cos(2 * np.pi * (doy - 255) / 182.6)
        )
        weekday = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.15, 0.75])[(days + 3) % 7]
        return growth * season * weekday

    def expected_signups(self, day: int) -> float:
        """Expected organic sign-ups on `day` (continues past the generated history)."""
        history = np.arange(self.first_day, self.first_day + self.base_days)
        total = self.acquisition_weight(history).sum()
        organic = self.customers * (1 - IMPORT_SHARE)
        return float(organic * self.acquisition_weight(np.array([day]))[0] / total)

    def marketing_spend(self, day: int) -> dict[str, np.ndarray]:
        """The marketing_spend rows of one day: always-on acquisition spend sized to the
        expected sign-ups (CAC about TARGET_CAC), small always-on retention, and campaigns."""
        rng = np.random.default_rng([self.seed, _TAG_SPEND, day])
        weekend = (day + 3) % 7 >= 5
        acquisition = {"search": 0.35, "social": 0.30, "display": 0.15, "print": 0.10}
        acquisition["events"] = 0.25 if weekend else 0.04
        budget = self.expected_signups(day) * TARGET_CAC * 0.75 * 100
        amounts: dict[tuple[str, str], float] = defaultdict(float)
        for channel, share in acquisition.items():
            amounts[channel, "acquisition"] += budget * share * rng.lognormal(0, 0.25)
        for channel, per_customer in (("email", 0.0015), ("sms", 0.0008)):
            amounts[channel, "retention"] += (
                self.customers * per_customer * 100 * rng.lognormal(0, 0.2)
            )
        for c in self.campaigns:
            amounts[c.channel, c.objective] += c.daily_spend(day)
        keys = sorted(k for k, v in amounts.items() if round(v) > 0)
        return {
            "spend_date": np.full(len(keys), day),
            "channel": np.array([k[0] for k in keys], dtype=object),
            "objective": np.array([k[1] for k in keys], dtype=object),
            "amount": np.array([round(amounts[k]) for k in keys], dtype=np.int64),
            "updated_at": np.full(len(keys), _seconds(day + 1) - 1),
        }


def _campaign_rows(campaigns: Sequence[_Campaign], horizon_day: int) -> dict[str, np.ndarray]:
    rows = [c.row(horizon_day) for c in campaigns if c.start_day <= horizon_day]
    columns = ss.SOURCE_TABLES["campaigns"].columns
    return {c: np.array([r[c] for r in rows], dtype=object) for c in columns}
