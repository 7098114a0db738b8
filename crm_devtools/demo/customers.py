"""The customers of the simulation: fixed traits, evolving state, new sign-ups, a day's buffers.

Why: per-customer traits are a pure hash of (seed, customer number); the state
(`_Population`: orders, loyalty, experience, accrued churn hazard) is what one simulated day
advances; `_new_customers` draws the profiles of sign-ups. `_Day` bundles what one day reads
and writes (the population, the row buffers `_Rows`, the id counters `_Ids`).
"""

from __future__ import annotations

import math
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field, fields

import numpy as np

from crm_devtools.demo.business import _World
from crm_devtools.demo.draws import _normal, _pick, _uniforms
from crm_devtools.demo.settings import (
    _COUNTERS,
    _HASH_TRAITS,
    ACQUISITION_CHANNELS,
    ACQUISITION_MIX,
    ANNUAL_CHURN,
    CLOSED_COMPLAINT_EFFECT,
    DAY,
    EFFECT_KEPT,
    EFFECT_MEMORY_DAYS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    GENDERS,
    HIGH_SCORE_EFFECT,
    IMPORT_DAYS,
    IMPORTED_TIERS,
    INCOME_BANDS,
    KIND_SHARES,
    LAST_NAMES,
    LOW_SCORE_EFFECT,
    LOYALTY_SHARE,
    LOYALTY_TIERS,
    NEVER_ORDER_SHARE,
    NULL,
    PREFERRED_CHANNEL,
    REGION_SHARES,
    REGIONS,
    REGULAR,
    SCORE_EFFECT_BOUNDS,
    SEVERITY_EFFECT,
    SLA_SECONDS,
    SLOW_COMPLAINT_EFFECT,
    SUBSCRIBER,
)

# --------------------------------------------------------------------------------------
# Per-customer traits (hash of seed and customer number).
# --------------------------------------------------------------------------------------


@dataclass
class _Traits:
    """Latent, fixed properties of customers; one array element per customer."""

    kind: np.ndarray  # SUBSCRIBER, REGULAR, OCCASIONAL
    scale: np.ndarray  # Weibull scale of the gap between orders, days
    shape: np.ndarray  # Weibull shape: high for subscribers (regular rhythm)
    spend: np.ndarray  # basket size multiplier, mean ~1
    channel: np.ndarray  # preferred order channel (index into ORDER_CHANNELS)
    hazard: np.ndarray  # base churn hazard per day
    patience: np.ndarray  # (n, 2) Exp(1) churn thresholds: first life, after a winback
    mood: np.ndarray  # latent satisfaction, shifts survey scores
    never_orders: np.ndarray
    contact_rate: np.ndarray  # inbound interactions per day


def _traits(seed: int, nums: np.ndarray) -> _Traits:
    """Traits of customers `nums`; value-dependent churn: bigger baskets leave less."""
    u = _uniforms(seed, _HASH_TRAITS, nums, 12)
    kind = _pick(u[:, 0], KIND_SHARES)
    sub_interval = np.array([7.0, 10.0, 14.0])[_pick(u[:, 1], (0.45, 0.20, 0.35))]
    interval = np.select(
        [kind == SUBSCRIBER, kind == REGULAR],
        [sub_interval * (0.92 + 0.16 * u[:, 2]), 24.0 + 16.0 * u[:, 2]],
        60.0 + 90.0 * u[:, 2],
    )
    shape = np.array([5.0, 3.0, 1.4])[kind]
    gamma = np.array([math.gamma(1 + 1 / k) for k in (5.0, 3.0, 1.4)])[kind]
    spend = np.exp(0.35 * _normal(u[:, 3], u[:, 4]) - 0.06)
    annual = np.array(ANNUAL_CHURN)[kind]
    return _Traits(
        kind=kind,
        scale=(interval - 0.5) / gamma,
        shape=shape,
        spend=spend,
        channel=_pick(u[:, 5], np.array(PREFERRED_CHANNEL)[kind]),
        hazard=-np.log1p(-annual) / 365.0 * spend**-0.6,
        patience=-np.log(u[:, 6:8]),
        mood=0.5 * _normal(u[:, 8], u[:, 11]),
        never_orders=u[:, 9] < NEVER_ORDER_SHARE,
        contact_rate=1.0 / (60.0 + 140.0 * u[:, 10]),
    )


# --------------------------------------------------------------------------------------
# Simulation state.
# --------------------------------------------------------------------------------------


def _experience(idx, time, delta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Experience effects plus their fading: each effect is 60% undone after 180 days."""
    idx, time = np.asarray(idx, dtype=np.int64), np.asarray(time, dtype=np.int64)
    delta = np.broadcast_to(np.asarray(delta, dtype=float), idx.shape)
    return (
        np.concatenate([idx, idx]),
        np.concatenate([time, time + EFFECT_MEMORY_DAYS * DAY]),
        np.concatenate([delta, -(1 - EFFECT_KEPT) * delta]),
    )


def _complaint_effects(idx, opened, severity, offsets) -> tuple[np.ndarray, ...]:
    """Experience effects of complaints: opening, still open after 48 h, closing."""
    closed = offsets[:, 5]
    slow = closed > SLA_SECONDS
    parts = [
        _experience(idx, opened, np.array(SEVERITY_EFFECT)[severity]),
        _experience(idx[slow], opened[slow] + SLA_SECONDS, SLOW_COMPLAINT_EFFECT),
        _experience(idx, opened + closed, CLOSED_COMPLAINT_EFFECT),
    ]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def _survey_effects(idx, time, survey_type, score) -> tuple[np.ndarray, ...]:
    """Experience effects of survey answers: bad scores raise churn, great ones lower it."""
    csat = np.asarray(survey_type) == "csat"
    (csat_low, csat_high), (nps_low, nps_high) = SCORE_EFFECT_BOUNDS.values()
    low = score <= np.where(csat, csat_low, nps_low)
    high = score >= np.where(csat, csat_high, nps_high)
    keep = low | high
    delta = np.where(low, LOW_SCORE_EFFECT, HIGH_SCORE_EFFECT)[keep]
    return _experience(np.asarray(idx)[keep], np.asarray(time)[keep], delta)


@dataclass
class _Population:
    """Simulation state of a set of customers: one chunk in generate(), the whole base in
    advance(). One array element per customer; `pending` holds experience effects and
    `revivals` winback responses timed later than the state, `contacted` who each running
    campaign has reached."""

    num: np.ndarray
    created: np.ndarray
    member: np.ndarray
    traits: _Traits
    tier: np.ndarray  # 0 none, 1 bronze, 2 silver, 3 gold
    tier_changed: np.ndarray
    earned: np.ndarray  # lifetime loyalty points
    balance: np.ndarray
    n_orders: np.ndarray
    last_order: np.ndarray
    last_order_num: np.ndarray
    last_channel: np.ndarray
    last_complained: np.ndarray  # the last order already has a complaint
    level: np.ndarray  # experience: log multiplier of the churn hazard
    cum_hazard: np.ndarray  # accrued in the current life
    segment: np.ndarray  # 0 first life, 1 after a winback
    churn_day: np.ndarray  # NULL while the customer is with us
    pending: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    )
    revivals: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    contacted: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fresh(cls, traits: _Traits, num: np.ndarray, created: np.ndarray, tier: np.ndarray):
        """State of newly acquired customers (tier 0 for non-members)."""
        n = num.size
        return cls(
            num=num,
            created=created,
            member=tier > 0,
            traits=traits,
            tier=tier.astype(np.int8),
            tier_changed=created.copy(),
            earned=np.zeros(n, np.int64),
            balance=np.zeros(n, np.int64),
            n_orders=np.zeros(n, np.int64),
            last_order=np.full(n, NULL, np.int64),
            last_order_num=np.full(n, NULL, np.int64),
            last_channel=np.zeros(n, np.int64),
            last_complained=np.zeros(n, bool),
            level=np.zeros(n),
            cum_hazard=np.zeros(n),
            segment=np.zeros(n, np.int8),
            churn_day=np.full(n, NULL, np.int64),
        )

    def __len__(self) -> int:
        return self.num.size

    def extend(self, other: _Population) -> None:
        """Append newly acquired customers (advance())."""
        offset = len(self)
        for f in fields(self):
            if f.name in ("pending", "revivals", "contacted"):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "traits":
                for t in fields(_Traits):
                    a, b = getattr(mine, t.name), getattr(theirs, t.name)
                    setattr(mine, t.name, np.concatenate([a, b]))
            else:
                setattr(self, f.name, np.concatenate([mine, theirs]))
        self.schedule(other.pending[0] + offset, *other.pending[1:])
        for key, flags in self.contacted.items():
            self.contacted[key] = np.concatenate([flags, np.zeros(len(other), bool)])

    def schedule(self, idx, time, delta) -> None:
        self.pending = tuple(
            np.concatenate([a, np.asarray(b, a.dtype)])
            for a, b in zip(self.pending, (idx, time, delta), strict=True)
        )

    def apply_experience(self, before: int) -> None:
        idx, time, delta = self.pending
        due = time < before
        np.add.at(self.level, idx[due], delta[due])
        self.pending = (idx[~due], time[~due], delta[~due])

    def due_revivals(self, before: int) -> np.ndarray:
        idx, time = self.revivals
        due = time < before
        self.revivals = (idx[~due], time[~due])
        return np.unique(idx[due])

    def customer_rows(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The state-dependent customer columns (tier, updated_at)."""
        sel = slice(None) if mask is None else mask
        tiers = np.array((None,) + LOYALTY_TIERS, dtype=object)
        return {
            "customer_id": self.num[sel],
            "loyalty_tier": tiers[self.tier[sel]],
            "updated_at": np.maximum(self.created[sel], self.tier_changed[sel]),
        }


def _ascii_word(name: str) -> str:
    """'Zoë' -> 'zoe', "O'Brien" -> 'obrien': names as they appear in e-mail addresses."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


_ASCII_FIRST = tuple(_ascii_word(n) for n in FIRST_NAMES)
_ASCII_LAST = tuple(_ascii_word(n) for n in LAST_NAMES)
_CITIES = tuple((region, city) for region, cities in REGIONS.items() for city in cities)


def _new_customers(
    world: _World, rng: np.random.Generator, nums: np.ndarray, created: np.ndarray
) -> tuple[_Population, dict[str, np.ndarray]]:
    """Profiles and fresh state for customers acquired at `created` (sorted)."""
    n = nums.size
    traits = _traits(world.seed, nums)
    kind = traits.kind
    region = _pick(rng.random(n), REGION_SHARES)
    region_names = tuple(REGIONS)
    city_probs = np.zeros((len(REGIONS), len(_CITIES)))
    for r, name in enumerate(region_names):
        members = [i for i, (reg, _) in enumerate(_CITIES) if reg == name]
        city_probs[r, members] = 1.0 / np.arange(1, len(members) + 1)
    city = _pick(rng.random(n), city_probs[region])
    acquisition = _pick(rng.random(n), np.array(ACQUISITION_MIX)[kind])
    birth_year = np.clip(np.rint(rng.normal(1974, 15, n)), 1935, 2006).astype(np.int64)
    birth_year[rng.random(n) < 0.12] = NULL
    gender = np.array(GENDERS, dtype=object)[_pick(rng.random(n), (0.52, 0.46, 0.02))]
    gender[rng.random(n) < 0.25] = None
    income = np.array(INCOME_BANDS, dtype=object)[_pick(rng.random(n), (0.3, 0.5, 0.2))]
    income[rng.random(n) < 0.45] = None
    member = rng.random(n) < np.array(LOYALTY_SHARE)[kind]
    imported = created < (world.first_day + IMPORT_DAYS) * DAY
    tier = np.where(member, np.where(imported, 1 + _pick(rng.random(n), IMPORTED_TIERS), 1), 0)
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    domain = rng.integers(0, len(EMAIL_DOMAINS), n)
    names = [f"{FIRST_NAMES[f]} {LAST_NAMES[s]}" for f, s in zip(first, last, strict=True)]
    emails = [
        f"{_ASCII_FIRST[f]}.{_ASCII_LAST[s]}{k % 1000}@{EMAIL_DOMAINS[d]}"
        for f, s, k, d in zip(first, last, nums.tolist(), domain, strict=True)
    ]
    profile = {
        "customer_id": nums,
        "created_at": created,
        "name": np.array(names, dtype=object),
        "email": np.array(emails, dtype=object),
        "city": np.array([c for _, c in _CITIES], dtype=object)[city],
        "region": np.array(region_names, dtype=object)[region],
        "acquisition_channel": np.array(ACQUISITION_CHANNELS, dtype=object)[acquisition],
        "birth_year": birth_year,
        "gender": gender,
        "income_band": income,
        "loyalty_member": member,
    }
    return _Population.fresh(traits, nums, created, tier), profile


# --------------------------------------------------------------------------------------
# Row buffers and id counters.
# --------------------------------------------------------------------------------------


class _Rows:
    """Columns of new rows per table, appended day by day and concatenated on demand."""

    def __init__(self) -> None:
        self._parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    def add(self, table: str, **columns) -> None:
        n = max(np.size(v) for v in columns.values())
        if n:
            self._parts[table].append(
                {c: v if np.size(v) == n else np.broadcast_to(v, (n,)) for c, v in columns.items()}
            )

    def table(self, table: str) -> dict[str, np.ndarray]:
        parts = self._parts[table]
        return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}

    def tables(self) -> list[str]:
        return [t for t, parts in self._parts.items() if parts]


class _Ids:
    """Running id counters (next number to hand out), kept in demo_meta between runs."""

    def __init__(self, start: dict[str, int] | None = None) -> None:
        self.next = {name: 1 for name in _COUNTERS} | (start or {})

    def take(self, name: str, n: int) -> np.ndarray:
        first = self.next[name]
        self.next[name] = first + n
        return np.arange(first, first + n, dtype=np.int64)


# --------------------------------------------------------------------------------------
# What one simulated day reads and writes.
# --------------------------------------------------------------------------------------


@dataclass
class _Day:
    """Everything one day of simulation reads and writes."""

    world: _World
    pop: _Population
    day: int
    rng: np.random.Generator
    ids: _Ids
    rows: _Rows

    @property
    def start(self) -> int:
        return self.day * DAY

    @property
    def end(self) -> int:  # exclusive
        return self.start + DAY

    def present(self) -> np.ndarray:
        return self.pop.created < self.end

    def alive(self) -> np.ndarray:
        return self.present() & (self.pop.churn_day == NULL)
