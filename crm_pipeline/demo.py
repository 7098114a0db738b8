"""Demo CRM source: a regional dairy that delivers milk and yogurt to subscribers.

Why: the pipeline needs a source that behaves like a real CRM database - subscribers with
regular repeat orders, several sales channels, products that launch and fade, customers who
leave after bad experiences, and rows that change after they were first written - at any size
from a unit-test fixture to a million customers. The tables are the ones in
``crm_pipeline.source_schema`` (the source contract: docs/data_dictionary.md, "The source"); this
module only fills them.

How the simulation works
------------------------
Customers are simulated one day at a time by ``_simulate_day``. ``generate`` walks the whole
history one chunk of customers at a time (chunk ``i`` draws from
``numpy.random.default_rng([seed, i])``), so memory is bounded by a chunk, not by the base.
``advance`` rebuilds the same simulation state for the whole base from the source tables and
runs one more day with ``default_rng([seed, tag, day])``.

No per-customer state table is needed for that, because:

* per-customer traits (subscriber / regular / occasional, order rhythm, basket size, churn
  hazard and patience, mood) are a pure hash of (seed, customer number);
* things that unfold later - a complaint's steps and outcome, a random refund, a campaign
  response - are planned by a pure hash of (seed, row number) and revealed once their time
  has come: ``generate`` cuts them at the end of history, ``advance`` reveals the ones due;
* churn is a threshold rule: a customer accrues ``base_hazard * exp(experience)`` per day
  and leaves on the first day the sum passes their patience (an Exp(1) trait). Experience
  is a sum of effects of observable rows (complaints, slow complaints, survey scores,
  campaign responses), so the sum can be recomputed from the tables (``_replay_hazard``).
  A churned customer stops ordering; a winback campaign response brings a few back once.

Storage
-------
Everything is built as numpy columns in internal units - timestamps as int64 UTC epoch
seconds, money as int64 cents, ids as integers - and converted only when written (ids to
'C0000001'-style text, cents to 2-decimal numbers). For SQLite the rows go through the raw
DBAPI ``executemany`` (one transaction per chunk, WAL, synchronous=OFF) in SQLAlchemy's own
storage format ('YYYY-MM-DD HH:MM:SS.000000'), so SQLAlchemy reads them back as datetimes;
other URLs use SQLAlchemy Core executemany. Run state (seed, window, parameters, id counters)
lives in the ``demo_meta`` (key, value) table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal

import numpy as np
import sqlalchemy as sa

from crm_pipeline import source_schema as ss

__all__ = ["advance", "generate", "last_day"]

# --------------------------------------------------------------------------------------
# Vocabulary of the demo business (beyond the value sets the contract fixes).
# --------------------------------------------------------------------------------------

#: Regions and their cities; the first city of a region is its largest.
REGIONS: dict[str, tuple[str, ...]] = {
    "Central": ("Midvale", "Kingsmere", "Brookton", "Orchard Hill", "Elmstead"),
    "North": ("Northby", "Ashbridge", "Kelford", "Moorcaster"),
    "South": ("Southport", "Larkhaven", "Fernley"),
    "East": ("Eastwick", "Marlow Bay", "Thornbury", "Saltmarsh"),
    "West": ("Westerham", "Redcliffe", "Hollowford"),
}
REGION_SHARES = (0.32, 0.20, 0.18, 0.17, 0.13)
ACQUISITION_CHANNELS = ("delivery_staff", "shop", "online", "referral", "event")
GENDERS = ("female", "male", "other")
INCOME_BANDS = ("low", "middle", "high")
LOYALTY_TIERS = ("bronze", "silver", "gold")
PRODUCT_CATEGORIES = ("milk", "yogurt", "cheese", "butter", "cream", "seasonal")
COMPLAINT_CATEGORIES = (
    "late_delivery",
    "missed_delivery",
    "product_quality",
    "damaged_packaging",
    "wrong_item",
    "billing",
    "staff_behaviour",
    "website",
    "other",
)
COMPLAINT_OUTCOMES = ("refund", "replacement", "credit_note", "apology", "no_action")
MARKETING_CHANNELS = (
    "search",
    "social",
    "display",
    "print",
    "events",
    "email",
    "sms",
    "direct_mail",
)
CUSTOMER_KINDS = ("subscriber", "regular", "occasional")
SUBSCRIBER, REGULAR, OCCASIONAL = 0, 1, 2

# --------------------------------------------------------------------------------------
# Model parameters. Rates are per customer-day unless stated otherwise.
# --------------------------------------------------------------------------------------

KIND_SHARES = (0.38, 0.30, 0.32)
ANNUAL_CHURN = (0.12, 0.30, 0.55)  # base yearly churn probability by kind, before experience
FIRST_ORDER_P = (0.6, 0.3, 0.12)  # daily chance of the first order after signing up
NEVER_ORDER_SHARE = 0.03
#: Preferred order channel by kind (ORDER_CHANNELS order); an order uses it 86% of the time.
PREFERRED_CHANNEL = ((0.88, 0.06, 0.06), (0.25, 0.45, 0.30), (0.10, 0.50, 0.40))
PREFERRED_STICKINESS = 0.86
#: Acquisition channel by kind (ACQUISITION_CHANNELS order).
ACQUISITION_MIX = (
    (0.50, 0.15, 0.15, 0.15, 0.05),
    (0.20, 0.35, 0.25, 0.12, 0.08),
    (0.08, 0.40, 0.35, 0.10, 0.07),
)
LOYALTY_SHARE = (0.65, 0.45, 0.20)
TIER_THRESHOLDS = (300, 1200)  # lifetime points for silver, gold
IMPORTED_TIERS = (0.6, 0.3, 0.1)  # tiers of members imported with the existing base
#: Order hours (UTC) by channel: delivery staff deliver early in the morning.
CHANNEL_HOURS = ((5, 9), (8, 20), (6, 24))
#: Line category mix by kind (PRODUCT_CATEGORIES order).
CATEGORY_MIX = (
    (0.52, 0.24, 0.06, 0.07, 0.05, 0.06),
    (0.36, 0.30, 0.12, 0.08, 0.07, 0.07),
    (0.26, 0.30, 0.18, 0.08, 0.09, 0.09),
)
EXTRA_UNITS = (1.3, 0.8, 0.15, 0.2, 0.2, 0.3)  # mean units beyond 1 per line, by category
CANCEL_SHARE = 0.03
RANDOM_REFUND_SHARE = 0.016  # refunds without a complaint; complaints add ~0.3%
PROMO_SHARE = 0.07
CSAT_SHARE = 0.07  # share of completed orders answered with a CSAT survey
NPS_RATE = 1 / 180
ORDER_COMPLAINT_RATE = (0.005, 0.0035, 0.0045)  # per day for 3 days after an order, by channel
GENERAL_COMPLAINT_RATE = 0.00012
VISIT_RATE = 1 / 45  # delivery staff visits to their customers
SERVICE_CALL_RATE = 1 / 365
REDEEM_RATE = 0.02
REDEEM_MIN_BALANCE = 500
IMPORT_SHARE = 0.25  # customers imported in the first two weeks (the CRM's existing base)
IMPORT_DAYS = 14
TARGET_CAC = 45.0  # acquisition spend per expected new customer, currency units
PRICE_BASE_YEAR = 2020
PRICE_INFLATION = 0.03
#: Experience (log hazard multiplier) effects; every effect fades to 40% after 180 days.
SEVERITY_EFFECT = (0.5, 0.9, 1.3)
SLOW_COMPLAINT_EFFECT = 0.8  # a complaint still open 48 hours after it was opened
CLOSED_COMPLAINT_EFFECT = -0.15
LOW_SCORE_EFFECT = 0.6  # csat <= 2 or nps <= 4
HIGH_SCORE_EFFECT = -0.1  # csat 5 or nps >= 9
#: Scores with an effect: (low at most, high at least) by survey type.
SCORE_EFFECT_BOUNDS = {"csat": (2, 5), "nps": (4, 9)}
RETENTION_RESPONSE_EFFECT = -0.3
EFFECT_MEMORY_DAYS = 180
EFFECT_KEPT = 0.4
LEVEL_RANGE = (-1.0, 3.0)
SCORE_IMPACT = 0.9  # how much bad experience lowers survey scores
SLA_SECONDS = 48 * 3600
RESPONSE_SHARE = {"retention": 0.11, "winback": 0.07}
RESPONSE_WINDOW_DAYS = 14
REFUND_LOOKBACK_DAYS = 14

DAY = 86_400
HOUR = 3_600
MINUTE = 60
NULL = -1  # a missing timestamp or id in the internal columns
EPOCH = dt.date(1970, 1, 1)
_TAG = 1 << 40  # default_rng([seed, _TAG + k, ...]) streams, far from chunk indexes
_TAG_PRODUCTS, _TAG_CAMPAIGNS, _TAG_SPEND, _TAG_ADVANCE = (_TAG + k for k in range(4))
_HASH_TRAITS, _HASH_COMPLAINT, _HASH_REFUND, _HASH_RESPONSE = 1, 2, 3, 4

# Ids are numbers internally; the text form is a prefix and the zero-padded number
# ('C0000001', 'O00000001', ...); numbers beyond the width simply get longer.
ID_FORMATS = {
    "customer_id": ("C", 7),
    "order_id": ("O", 8),
    "product_id": ("P", 3),
    "response_id": ("S", 8),
    "complaint_id": ("T", 7),
    "interaction_id": ("I", 8),
    "campaign_id": ("M", 5),
    "event_id": ("L", 8),
}


def format_id(column: str, number: int) -> str:
    """The text id of `number` in an id column, e.g. format_id("order_id", 7) == "O00000007"."""
    prefix, width = ID_FORMATS[column]
    return prefix + str(number).zfill(width)


_COUNTERS = ("customer", "order", "survey", "complaint", "interaction", "loyalty_event")

FIRST_NAMES = (
    "Anna", "Ben", "Chloe", "Daniel", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack",
    "Katie", "Liam", "Maya", "Noah", "Olivia", "Peter", "Rosa", "Sam", "Tara", "Umar",
    "Vera", "Will", "Yasmin", "Zoë", "José", "Renée", "Søren", "Aoife", "Mohammed", "Priya",
    "Lukas", "Hannah", "Oscar", "Mei", "Tomás", "Ingrid", "Kwame", "Sofia", "Ravi", "Elena",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Jackson", "Clarke", "O'Brien", "D'Souza", "Müller", "Nguyen", "Kowalski",
    "García", "Okafor", "Patel", "Lindqvist", "Murphy", "Fischer", "Rossi", "Novak", "Kaur",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example")

#: Products on sale when the history starts: (name, category, list price in cents, months).
CORE_PRODUCTS = (
    ("Whole Milk 1L", "milk", 129, None),
    ("Semi-Skimmed Milk 1L", "milk", 119, None),
    ("Skimmed Milk 1L", "milk", 115, None),
    ("Organic Whole Milk 1L", "milk", 179, None),
    ("Whole Milk 2L", "milk", 229, None),
    ("Chocolate Milk 500ml", "milk", 149, None),
    ("Natural Yogurt 500g", "yogurt", 159, None),
    ("Greek Yogurt 500g", "yogurt", 249, None),
    ("Strawberry Yogurt 4x125g", "yogurt", 219, None),
    ("Vanilla Yogurt 4x125g", "yogurt", 219, None),
    ("Drinking Yogurt Blueberry 250ml", "yogurt", 99, None),
    ("Low-Fat Yogurt 500g", "yogurt", 149, None),
    ("Mature Cheddar 200g", "cheese", 349, None),
    ("Young Gouda 250g", "cheese", 399, None),
    ("Cottage Cheese 200g", "cheese", 179, None),
    ("Cream Cheese 150g", "cheese", 189, None),
    ("Salted Butter 250g", "butter", 289, None),
    ("Unsalted Butter 250g", "butter", 289, None),
    ("Spreadable Butter 250g", "butter", 259, None),
    ("Double Cream 300ml", "cream", 169, None),
    ("Sour Cream 200ml", "cream", 129, None),
    ("Whipping Cream 250ml", "cream", 159, None),
    ("Eggnog 1L", "seasonal", 349, (11, 12)),
    ("Summer Berry Kefir 500ml", "seasonal", 229, (6, 7, 8)),
)
#: New products, launched one every ~55 days in this order.
LAUNCHES = (
    ("Lactose-Free Milk 1L", "milk", 169, None),
    ("Skyr Natural 450g", "yogurt", 229, None),
    ('Yogurt "Fresh & Fruity" 6x100g', "yogurt", 279, None),
    ("Kefir Original 500ml", "yogurt", 199, None),
    ("Oat & Milk Blend 1L", "milk", 189, None),
    ("Pumpkin Spice Yogurt 500g", "seasonal", 229, (9, 10, 11)),
    ("Mango Lassi 330ml", "yogurt", 159, None),
    ("A2 Whole Milk 1L", "milk", 199, None),
    ("Pistachio Yogurt 4x125g", "yogurt", 259, None),
    ("Mozzarella 125g", "cheese", 149, None),
    ("Crème Fraîche 200ml", "cream", 179, None),
    ("Protein Yogurt Vanilla 200g", "yogurt", 179, None),
    ("Easter Quark Dessert 4x100g", "seasonal", 279, (3, 4)),
    ("Cold Brew Milk Coffee 250ml", "milk", 189, None),
    ("Garlic & Herb Butter 125g", "butter", 229, None),
    ("Halloumi 225g", "cheese", 329, None),
    ("Winter Spice Milk 1L", "seasonal", 249, (12, 1, 2)),
    ("Honey Yogurt 4x125g", "yogurt", 239, None),
    ("Smoked Cheddar 200g", "cheese", 369, None),
    ("Buttermilk 500ml", "milk", 109, None),
    ("Coconut Yogurt 400g", "yogurt", 279, None),
    ("Clotted Cream 113g", "cream", 249, None),
    ("Raspberry & Rose Yogurt 4x125g", "yogurt", 259, None),
    ("Matcha Latte Milk 250ml", "milk", 199, None),
)
#: Survey comments by sentiment; some carry <, >, & and quotes on purpose (HTML escaping).
COMMENTS = {
    "low": (
        "Milk arrived warm & the bottle was leaking.",
        "Delivery came after 9 <again>, not acceptable.",
        'Driver said "not my problem" when I asked about the missing yogurt.',
        "Price went up & quality went down.",
        "Third missed delivery this month -> thinking of cancelling.",
        "Customer service never called back.",
    ),
    "mid": (
        "Fine, but the app is clunky.",
        "Good milk; delivery times vary a lot.",
        "OK. Would like more lactose-free options.",
        "Yogurt < last year's recipe, milk still great.",
        "Usually fine.",
    ),
    "high": (
        "Best milk in town!",
        "Love the glass bottles & the friendly driver.",
        "Our driver is always on time :)",
        "The new yogurt is <3",
        'Kids call it "the good milk".',
        "Great service, thank you!",
    ),
}

# --------------------------------------------------------------------------------------
# Calendar helpers. A "day" is a day number since 1970-01-01; times are epoch seconds.
# --------------------------------------------------------------------------------------


def _day_number(date: dt.date) -> int:
    return (date - EPOCH).days


def _date_of(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


def _calendar(days: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month 1-12, day of year 0-365) of day numbers, vectorised."""
    d = np.asarray(days, dtype="int64").astype("datetime64[D]")
    years = d.astype("datetime64[Y]")
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    doy = (d - years.astype("datetime64[D]")).astype(np.int64)
    return years.astype(np.int64) + 1970, month, doy


def _seconds(day: int, hours: float = 0.0) -> int:
    return int(day) * DAY + int(round(hours * HOUR))


def _uniform_times(rng: np.random.Generator, day: int, n: int, hours=(0.0, 24.0)) -> np.ndarray:
    """n times on `day`, uniform between the given hours (end exclusive)."""
    lo, hi = hours
    return day * DAY + (lo * HOUR + rng.random(n) * (hi - lo) * HOUR).astype(np.int64)


# --------------------------------------------------------------------------------------
# Counter-based hashing: reproducible plans keyed by row numbers (see module docstring).
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms(seed: int, stream: int, keys: np.ndarray, n: int) -> np.ndarray:
    """A (len(keys), n) array of uniforms in (0, 1) that depends only on the arguments.

    This is what lets advance() know a customer's traits or a complaint's planned steps
    without storing them: the same (seed, stream, key) always gives the same numbers.
    """
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed & (2**63 - 1), stream], dtype=np.uint64))
        k = np.asarray(keys, dtype=np.int64).astype(np.uint64)
        x = _mix64(k * _GOLDEN ^ base[0] ^ (base[1] * _GOLDEN))
        cols = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        bits = _mix64(x[:, None] + cols[None, :]) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) / 2.0**53


def _normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Box-Muller: a standard normal from two uniforms."""
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _pick(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Categorical draw by inverse CDF; `probs` is one row per draw or one shared row."""
    cdf = np.cumsum(np.asarray(probs, dtype=float), axis=-1)
    cdf = cdf / cdf[..., -1:]
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)


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
# One simulated day.
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


# --------------------------------------------------------------------------------------
# Storage.
# --------------------------------------------------------------------------------------

_meta_md = sa.MetaData()
demo_meta = sa.Table(
    "demo_meta",
    _meta_md,
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("value", sa.String(), nullable=False),
)
_TIME_OF_DAY: list[str] = []
_BATCH = 100_000


def _time_of_day_strings() -> list[str]:
    if not _TIME_OF_DAY:
        _TIME_OF_DAY.extend(
            f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000" for s in range(DAY)
        )
    return _TIME_OF_DAY


def _convert(column: sa.Column, values: np.ndarray, sqlite: bool) -> list:
    """Internal column -> DBAPI values (SQLite: SQLAlchemy's own storage format) or
    Python objects for SQLAlchemy Core. Text columns carry None for NULL already; every
    other column is integer-coded internally with NULL (-1) for a missing value."""
    kind = column.type
    if column.name not in ID_FORMATS and not isinstance(kind, _CODED_TYPES):
        return np.asarray(values).tolist()
    ints = np.asarray(values).astype(np.int64)
    if column.name in ID_FORMATS:
        prefix, width = ID_FORMATS[column.name]
        out = [prefix + str(v).zfill(width) for v in ints.tolist()]
    elif isinstance(kind, sa.DateTime):
        out = _timestamps(ints, sqlite)
    elif isinstance(kind, sa.Date):
        out = [_date_of(v).isoformat() if sqlite else _date_of(v) for v in ints.tolist()]
    elif isinstance(kind, sa.Numeric):  # cents
        out = (ints / 100).tolist() if sqlite else [Decimal(c).scaleb(-2) for c in ints.tolist()]
    elif isinstance(kind, sa.Boolean):
        out = ints.tolist() if sqlite else ints.astype(bool).tolist()
    else:
        out = ints.tolist()
    if column.nullable:
        for i in np.flatnonzero(ints == NULL).tolist():
            out[i] = None
    return out


_CODED_TYPES = (sa.DateTime, sa.Date, sa.Numeric, sa.Integer, sa.Boolean)


def _timestamps(sec: np.ndarray, sqlite: bool) -> list:
    """Epoch seconds -> naive UTC datetimes, or for SQLite the text SQLAlchemy stores."""
    if not sqlite:
        return sec.astype("datetime64[s]").astype(object).tolist()
    valid = sec != NULL
    if not valid.any():
        return [None] * sec.size
    sec = np.where(valid, sec, sec[valid][0])  # NULLs are patched back by the caller
    days = sec // DAY
    lo = int(days.min())
    dates = [_date_of(lo + i).isoformat() for i in range(int(days.max()) - lo + 1)]
    tod = _time_of_day_strings()
    pairs = zip((days - lo).tolist(), (sec - days * DAY).tolist(), strict=True)
    return [dates[a] + tod[b] for a, b in pairs]


class _Store:
    """The source database: schema reset, bulk inserts, updates and demo_meta."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    def reset(self) -> None:
        with self.engine.begin() as conn:
            _meta_md.drop_all(conn)
            ss.metadata.drop_all(conn)
            ss.metadata.create_all(conn)
            _meta_md.create_all(conn)

    def _rows(self, table: str, columns: dict[str, np.ndarray], sqlite: bool) -> tuple:
        t = ss.metadata.tables[table]
        names = [c for c in ss.SOURCE_TABLES[table].columns if c in columns]
        return names, [_convert(t.c[c], columns[c], sqlite) for c in names]

    def bulk_insert(self, tables: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
        """Insert many rows in one transaction: raw executemany for SQLite, Core otherwise."""
        counts = {}
        if self.sqlite:
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=OFF")
                for table, columns in tables.items():
                    names = [c for c in ss.SOURCE_TABLES[table].columns if c in columns]
                    marks = ", ".join("?" * len(names))
                    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
                    n = len(columns[names[0]])
                    for lo in range(0, n, _BATCH):  # batches bound the Python objects alive
                        batch = {c: columns[c][lo : lo + _BATCH] for c in names}
                        _, cols = self._rows(table, batch, sqlite=True)
                        cur.executemany(sql, zip(*cols, strict=True))
                    counts[table] = n
                raw.commit()
            finally:
                raw.close()
            return counts
        with self.engine.begin() as conn:
            for table, columns in tables.items():
                counts[table] = self.insert(conn, table, columns)
        return counts

    def insert(self, conn, table: str, columns: dict[str, np.ndarray]) -> int:
        """SQLAlchemy Core executemany, in batches."""
        n = len(next(iter(columns.values())))
        for lo in range(0, n, _BATCH):
            batch = {c: v[lo : lo + _BATCH] for c, v in columns.items()}
            names, cols = self._rows(table, batch, sqlite=False)
            rows = [dict(zip(names, r, strict=True)) for r in zip(*cols, strict=True)]
            conn.execute(ss.metadata.tables[table].insert(), rows)
        return n

    def update(self, conn, table: str, columns: dict[str, np.ndarray]) -> int:
        """Update rows by key; `columns` holds the key columns and the new values."""
        t = ss.metadata.tables[table]
        names, cols = self._rows(table, columns, sqlite=False)
        if not cols or not cols[0]:
            return 0
        key = ss.SOURCE_TABLES[table].key
        stmt = (
            t.update()
            .where(*[t.c[k] == sa.bindparam(f"k_{k}") for k in key])
            .values({c: sa.bindparam(f"v_{c}") for c in names if c not in key})
        )
        params = [
            {(f"k_{n}" if n in key else f"v_{n}"): v for n, v in zip(names, r, strict=True)}
            for r in zip(*cols, strict=True)
        ]
        conn.execute(stmt, params)
        return len(params)

    def add_indexes(self) -> None:
        """updated_at indexes for incremental extraction, and the lookups advance() does.
        Created after the bulk load (faster) and outside the shared schema metadata."""
        ddl = [f"CREATE INDEX ix_{t}_updated_at ON {t} (updated_at)" for t in ss.TABLE_ORDER]
        ddl += [
            "CREATE INDEX ix_orders_customer ON orders (customer_id, ordered_at)",
            "CREATE INDEX ix_orders_ordered_at ON orders (ordered_at)",
            "CREATE INDEX ix_complaints_customer ON complaints (customer_id)",
            "CREATE INDEX ix_contacts_contacted_at ON campaign_contacts (contacted_at)",
        ]
        with self.engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)

    def read_meta(self, conn) -> dict[str, str]:
        try:
            return dict(conn.execute(sa.select(demo_meta.c.key, demo_meta.c.value)).all())
        except sa.exc.DBAPIError as exc:
            raise RuntimeError("no demo data here: run generate() first") from exc

    def write_meta(self, conn, meta: dict[str, object]) -> None:
        conn.execute(demo_meta.delete())
        conn.execute(demo_meta.insert(), [{"key": k, "value": str(v)} for k, v in meta.items()])


# --------------------------------------------------------------------------------------
# generate()
# --------------------------------------------------------------------------------------


def _default_end() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _chunk_signups(world: _World, rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Sign-up times of a chunk: a quarter imported in the first two weeks, the rest
    spread over history by the acquisition curve. Sorted."""
    history = np.arange(world.first_day, world.first_day + days)
    weight = world.acquisition_weight(history)
    imported = rng.random(n) < IMPORT_SHARE
    day = np.where(
        imported,
        world.first_day + rng.integers(0, min(IMPORT_DAYS, days), n),
        history[_pick(rng.random(n), weight)],
    )
    hours = np.where(imported, rng.random(n) * 24, 7 + rng.random(n) * 14)
    return np.sort(day * DAY + (hours * HOUR).astype(np.int64))


def _settle(rows: _Rows, seed: int, horizon: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """The new rows of a chunk (or of an advanced day) as seen at `horizon`, and the
    refunds their complaints plan (order number, time) - advance() also applies those to
    older orders."""
    out = {t: rows.table(t) for t in rows.tables()}
    refunds = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if "complaints" in out:
        refunds = _complaint_refunds(out["complaints"])
        out["complaints"] = _cut_complaints(out["complaints"], horizon)
    if "orders" in out:
        out["orders"] = _settle_orders(seed, out["orders"], *refunds, horizon)
    if "campaign_contacts" in out:
        out["campaign_contacts"] = _cut_contacts(out["campaign_contacts"], horizon)
    return out, refunds


def _simulate_chunk(world, chunk_index, nums, days, ids) -> tuple[_Population, dict]:
    """Simulate one chunk of customers over the whole history; returns the final state and
    all rows of the chunk (settled at the end of history)."""
    rng = np.random.default_rng([world.seed, chunk_index])
    created = _chunk_signups(world, rng, nums.size, days)
    pop, profile = _new_customers(world, rng, nums, created)
    rows = _Rows()
    for day in range(world.first_day, world.first_day + days):
        _simulate_day(_Day(world, pop, day, rng, ids, rows))
    tables, _ = _settle(rows, world.seed, (world.first_day + days) * DAY)
    tables["customers"] = profile | pop.customer_rows()
    return pop, tables


def generate(
    url: str,
    customers: int = 20_000,
    days: int = 730,
    seed: int = 42,
    end_date: dt.date | None = None,
    chunk_customers: int = 10_000,
) -> dict[str, int]:
    """Create every source table at `url` (any SQLAlchemy URL; SQLite file by default) and
    fill it with `days` days of history ending at end_date (inclusive; default: yesterday
    UTC). Drops and recreates the tables. Returns row counts per table.

    Customers are simulated chunk by chunk (`chunk_customers` at a time, each chunk from
    default_rng([seed, chunk_index])) and written per chunk, so memory stays bounded.
    """
    if customers < 1 or days < 1 or chunk_customers < 1:
        raise ValueError("customers, days and chunk_customers must be positive")
    end_date = end_date or _default_end()
    last = _day_number(end_date)
    first = last - days + 1
    world = _World.build(seed, first, days, customers, last)
    store = _Store(url)
    try:
        store.reset()
        counts = dict.fromkeys(ss.TABLE_ORDER, 0)
        spend = [world.marketing_spend(day) for day in range(first, last + 1)]
        shared = {
            "products": world.catalogue.rows(last),
            "campaigns": _campaign_rows(world.campaigns, last),
            "marketing_spend": {k: np.concatenate([s[k] for s in spend]) for k in spend[0]},
        }
        counts |= store.bulk_insert(shared)
        ids = _Ids()
        for chunk_index, start in enumerate(range(0, customers, chunk_customers)):
            nums = ids.take("customer", min(chunk_customers, customers - start))
            _, tables = _simulate_chunk(world, chunk_index, nums, days, ids)
            ordered = {t: tables[t] for t in ss.TABLE_ORDER if t in tables}
            for table, n in store.bulk_insert(ordered).items():
                counts[table] += n
        store.add_indexes()
        meta = {
            "version": 1,
            "seed": seed,
            "customers": customers,
            "days": days,
            "chunk_customers": chunk_customers,
            "first_day": _date_of(first).isoformat(),
            "last_day": _date_of(last).isoformat(),
        } | {f"next_{k}": v for k, v in ids.next.items()}
        with store.engine.begin() as conn:
            store.write_meta(conn, meta)
        if store.sqlite:
            with store.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return counts


def _campaign_rows(campaigns: Sequence[_Campaign], horizon_day: int) -> dict[str, np.ndarray]:
    rows = [c.row(horizon_day) for c in campaigns if c.start_day <= horizon_day]
    columns = ss.SOURCE_TABLES["campaigns"].columns
    return {c: np.array([r[c] for r in rows], dtype=object) for c in columns}


def last_day(url: str) -> dt.date:
    """The last day the demo source covers."""
    store = _Store(url)
    try:
        with store.engine.connect() as conn:
            return dt.date.fromisoformat(store.read_meta(conn)["last_day"])
    finally:
        store.close()


# --------------------------------------------------------------------------------------
# advance(): rebuild the state from the tables, simulate one day, reveal late changes.
# --------------------------------------------------------------------------------------


def _column_arrays(conn, stmt, n_columns: int) -> list[list]:
    rows = conn.execute(stmt).all()
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n_columns)]


def _epoch(values: Sequence) -> np.ndarray:
    """datetimes (or None) -> epoch seconds (NULL)."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    arr = np.array(values, dtype="datetime64[s]")
    return np.where(np.isnat(arr), NULL, arr.astype(np.int64))


def _naive(seconds: int) -> dt.datetime:
    """Epoch seconds -> naive UTC datetime, for query bounds."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(seconds))


def _id_numbers(values: Sequence) -> np.ndarray:
    return np.array([NULL if v is None else int(v[1:]) for v in values], dtype=np.int64)


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


def _advance_one(store: _Store, day: int) -> dict[str, int]:
    with store.engine.begin() as conn:
        meta = store.read_meta(conn)
        seed = int(meta["seed"])
        first = _day_number(dt.date.fromisoformat(meta["first_day"]))
        world = _World.build(seed, first, int(meta["days"]), int(meta["customers"]), day)
        ids = _Ids({k: int(meta[f"next_{k}"]) for k in _COUNTERS})
        pop = _load_population(conn, world, day)
        existing = len(pop)
        rng = np.random.default_rng([seed, _TAG_ADVANCE, day])
        n_new = int(rng.poisson(world.expected_signups(day)))
        created = np.sort(_uniform_times(rng, day, n_new, (7, 21)))
        new_pop, profile = _new_customers(world, rng, ids.take("customer", n_new), created)
        pop.extend(new_pop)
        rows = _Rows()
        _simulate_day(_Day(world, pop, day, rng, ids, rows))
        new, new_refunds = _settle(rows, seed, (day + 1) * DAY)
        tier_moved = np.zeros(len(pop), bool)
        tier_moved[:existing] = pop.tier_changed[:existing] >= day * DAY
        new["customers"] = profile | pop.customer_rows(np.arange(len(pop)) >= existing)
        new["products"] = _launched_today(world, day)
        new["campaigns"] = _campaign_rows(
            [cp for cp in world.campaigns if cp.start_day == day], day
        )
        new["marketing_spend"] = world.marketing_spend(day)
        changes = _late_changes(conn, world, day, new_refunds)
        changes["customers"] = pop.customer_rows(tier_moved)
        counts = {}
        for table in ss.TABLE_ORDER:
            counts[f"{table}.inserted"] = (
                store.insert(conn, table, new[table]) if table in new else 0
            )
        for table in ss.TABLE_ORDER:
            counts[f"{table}.updated"] = (
                store.update(conn, table, changes[table]) if table in changes else 0
            )
        meta |= {"last_day": _date_of(day).isoformat()} | {
            f"next_{k}": v for k, v in ids.next.items()
        }
        store.write_meta(conn, meta)
    return counts


def _launched_today(world: _World, day: int) -> dict[str, np.ndarray]:
    rows = world.catalogue.rows(day)
    keep = rows["launched_at"] >= day * DAY
    return {c: v[keep] for c, v in rows.items()}


def advance(url: str, day: dt.date | None = None) -> dict[str, int]:
    """Advance the demo business by one day (default: the day after the last one).

    Adds the day's new customers, orders and lines, surveys, complaints, interactions,
    campaign contacts, loyalty events and marketing spend, and applies the day's late
    changes to older rows (refunds, complaint steps and closures, campaign responses,
    running campaigns, discontinued products, tier moves). Every new or changed row has
    updated_at within that day. Deterministic: the same database, seed and day give the
    same rows. A `day` further ahead advances through every day up to it. Returns counts
    '<table>.inserted' and '<table>.updated'.
    """
    store = _Store(url)
    try:
        with store.engine.connect() as conn:
            current = dt.date.fromisoformat(store.read_meta(conn)["last_day"])
        target = day or current + dt.timedelta(days=1)
        if target <= current:
            raise ValueError(f"the source already covers {target} (last day {current})")
        totals: dict[str, int] = {}
        for n in range(_day_number(current) + 1, _day_number(target) + 1):
            for key, value in _advance_one(store, n).items():
                totals[key] = totals.get(key, 0) + value
        return totals
    finally:
        store.close()


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m crm_pipeline.demo", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="create and fill the demo source")
    gen.add_argument("--url", required=True)
    gen.add_argument("--customers", type=int, default=20_000)
    gen.add_argument("--days", type=int, default=730)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--end-date", type=dt.date.fromisoformat, default=None)
    gen.add_argument("--chunk-customers", type=int, default=10_000)
    adv = sub.add_parser("advance", help="simulate one more day")
    adv.add_argument("--url", required=True)
    adv.add_argument("--day", type=dt.date.fromisoformat, default=None)
    args = parser.parse_args(argv)
    if args.command == "generate":
        counts = generate(
            args.url, args.customers, args.days, args.seed, args.end_date, args.chunk_customers
        )
    else:
        counts = advance(args.url, args.day)
    for key, value in counts.items():
        print(f"{key}\t{value}")


if __name__ == "__main__":
    main()
