"""Settings of the demo business: its vocabulary, the parameters of the simulation, ids.

Why: every other module of the simulator reads these numbers and names; keeping them in
one place makes the business easy to read and to tune (rates are per customer-day unless
stated otherwise). The value sets the source contract fixes (channels, severities, steps)
stay in crm_pipeline.source_schema; this is what the demo adds on top.
"""

from __future__ import annotations

import datetime as dt

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
