"""The CRM source contract (docs/data_dictionary.md, "The source") as SQLAlchemy Core tables.

One definition serves three readers: the demo generator creates these tables, the
extractor knows each table's key and columns from them, and validation checks types and
value sets against them. Every table carries `updated_at` (UTC) for incremental pulls.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
)

metadata = MetaData()

MONEY = Numeric(14, 2)


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(), nullable=nullable)


def _txt(name: str, nullable: bool = False, primary_key: bool = False) -> Column:
    return Column(name, String(), nullable=nullable, primary_key=primary_key)


customers = Table(
    "customers",
    metadata,
    _txt("customer_id", primary_key=True),
    _ts("created_at"),
    _txt("name"),
    _txt("email"),
    _txt("city"),
    _txt("region"),
    _txt("acquisition_channel"),
    Column("birth_year", Integer, nullable=True),
    _txt("gender", nullable=True),
    _txt("income_band", nullable=True),
    Column("loyalty_member", Boolean, nullable=False),
    _txt("loyalty_tier", nullable=True),
    _ts("updated_at"),
)

products = Table(
    "products",
    metadata,
    _txt("product_id", primary_key=True),
    _txt("name"),
    _txt("category"),
    _ts("launched_at"),
    _ts("discontinued_at", nullable=True),
    _ts("updated_at"),
)

orders = Table(
    "orders",
    metadata,
    _txt("order_id", primary_key=True),
    _txt("customer_id"),
    _ts("ordered_at"),
    _txt("status"),
    _txt("channel"),
    Column("gross_amount", MONEY, nullable=False),
    Column("discount_amount", MONEY, nullable=False),
    Column("net_amount", MONEY, nullable=False),
    Column("cost_amount", MONEY, nullable=False),
    _ts("updated_at"),
)

order_lines = Table(
    "order_lines",
    metadata,
    _txt("order_id", primary_key=True),
    Column("line_no", Integer, primary_key=True),
    _txt("product_id"),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", MONEY, nullable=False),
    Column("net_amount", MONEY, nullable=False),
    _ts("updated_at"),
)

surveys = Table(
    "surveys",
    metadata,
    _txt("response_id", primary_key=True),
    _txt("customer_id"),
    _ts("responded_at"),
    _txt("survey_type"),
    Column("score", Integer, nullable=False),
    _txt("comment", nullable=True),
    _txt("order_id", nullable=True),
    _ts("updated_at"),
)

COMPLAINT_STEPS = (
    "first_response_at",
    "cause_found_at",
    "remedy_decided_at",
    "remedy_done_at",
    "customer_informed_at",
    "closed_at",
)

complaints = Table(
    "complaints",
    metadata,
    _txt("complaint_id", primary_key=True),
    _txt("customer_id"),
    _txt("order_id", nullable=True),
    _ts("opened_at"),
    *[_ts(step, nullable=True) for step in COMPLAINT_STEPS],
    _txt("category"),
    _txt("severity"),
    _txt("outcome", nullable=True),
    _ts("updated_at"),
)

interactions = Table(
    "interactions",
    metadata,
    _txt("interaction_id", primary_key=True),
    _txt("customer_id"),
    _ts("occurred_at"),
    _txt("channel"),
    _txt("direction"),
    _ts("updated_at"),
)

campaigns = Table(
    "campaigns",
    metadata,
    _txt("campaign_id", primary_key=True),
    _txt("name"),
    _txt("channel"),
    _txt("objective"),
    _ts("started_at"),
    _ts("ended_at"),
    Column("spend", MONEY, nullable=False),
    _ts("updated_at"),
)

campaign_contacts = Table(
    "campaign_contacts",
    metadata,
    _txt("campaign_id", primary_key=True),
    _txt("customer_id", primary_key=True),
    _ts("contacted_at"),
    _ts("responded_at", nullable=True),
    _ts("updated_at"),
)

marketing_spend = Table(
    "marketing_spend",
    metadata,
    Column("spend_date", Date, primary_key=True),
    _txt("channel", primary_key=True),
    _txt("objective", primary_key=True),
    Column("amount", MONEY, nullable=False),
    _ts("updated_at"),
)

loyalty_events = Table(
    "loyalty_events",
    metadata,
    _txt("event_id", primary_key=True),
    _txt("customer_id"),
    _ts("occurred_at"),
    _txt("kind"),
    Column("points", Integer, nullable=False),
    _txt("tier", nullable=True),
    _ts("updated_at"),
)

# Value sets the contract names; validation and the generator both use them.
ORDER_STATUSES = ("completed", "cancelled", "refunded")
ORDER_CHANNELS = ("delivery_staff", "shop", "online")
SURVEY_TYPES = ("csat", "nps")
SEVERITIES = ("low", "medium", "high")
INTERACTION_CHANNELS = ("phone", "email", "chat", "social", "visit")
DIRECTIONS = ("inbound", "outbound")
CAMPAIGN_OBJECTIVES = ("acquisition", "retention", "winback")
LOYALTY_KINDS = ("earn", "redeem", "tier_change")


@dataclass(frozen=True)
class SourceTable:
    """What the pipeline needs to know to pull one source table incrementally."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def table(self) -> Table:
        return metadata.tables[self.name]


# Parents before children: the order staging and validation walk the tables in.
TABLE_ORDER = (
    "customers",
    "products",
    "orders",
    "order_lines",
    "surveys",
    "complaints",
    "interactions",
    "campaigns",
    "campaign_contacts",
    "marketing_spend",
    "loyalty_events",
)

# The order database every mart stands on. The CRM tables beyond it (surveys, complaints,
# interactions, campaigns, marketing spend, loyalty) are optional: a company starting out
# may not have them yet, so a source without one is read as having it empty (its KPIs are
# null and its churn features left out) until the table appears.
REQUIRED_TABLES = ("customers", "products", "orders", "order_lines")
OPTIONAL_TABLES = tuple(t for t in TABLE_ORDER if t not in REQUIRED_TABLES)

SOURCE_TABLES: dict[str, SourceTable] = {
    name: SourceTable(
        name=name,
        key=tuple(c.name for c in metadata.tables[name].primary_key.columns),
        columns=tuple(c.name for c in metadata.tables[name].columns),
    )
    for name in TABLE_ORDER
}
