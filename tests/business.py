"""The hand-made business that the KPI, RFM and tier tests work out by hand.

Its day is D = 2025-06-30; tests/unit/test_kpis.py has the worked-out numbers.
"""

import datetime as dt

from factories import (
    campaign,
    complaint,
    contact,
    customer,
    loyalty,
    order,
    spend,
    survey,
)

D = dt.date(2025, 6, 30)


def business() -> dict[str, list[dict]]:
    north = {"region": "north"}
    return {
        "customers": [
            customer("C01", "2024-01-01", **north),
            customer("C02", "2024-01-01", **north),
            customer("C03", "2024-01-01", **north),
            customer("C04", "2024-01-01", loyalty_member=True),
            customer("C05", "2025-06-01"),
            customer("C06", "2025-06-01"),
            customer("C07", "2023-06-01"),
            customer("C08", "2024-01-01"),
            customer("C09", "2024-01-01"),
            customer("C10", "2024-01-01"),
            customer("C11", "2024-01-01", loyalty_member=True, loyalty_tier="gold"),
            customer("C12", "2025-06-20"),
            customer("C13", "2025-05-01"),
        ],
        "orders": [
            order("O01a", "C01", "2025-03-10"),
            order("O01b", "C01", "2025-04-02 08:00"),  # d-89: in
            order("O02", "C02", "2025-04-01 23:59"),  # d-90: out of 'active', in 'active at d-30'
            order("O03", "C03", "2025-03-03 00:00"),  # d-119: first day of 'active at d-30'
            order("O04", "C04", "2025-03-02 23:59"),  # d-120: out
            order("O05a", "C05", "2025-06-10", 30.0),
            order("O05b", "C05", "2025-06-20", 40.0),
            order("O06a", "C06", "2025-06-05", status="refunded"),
            order("O06b", "C06", "2025-06-15", 25.0),
            order("O07a", "C07", "2024-01-15"),
            order("O07b", "C07", "2025-05-31 23:00"),
            order("O07c", "C07", "2025-06-01 00:00"),
            order("O08a", "C08", "2025-03-20"),
            order("O08b", "C08", "2025-06-12", status="refunded"),
            order("O09a", "C09", "2024-08-01"),
            order("O09b", "C09", "2025-06-25", status="cancelled"),
            order("O10a", "C10", "2024-06-30"),
            order("O10b", "C10", "2024-07-01 00:00"),  # d-365 / d-364
            order("O11a", "C11", "2025-05-01"),
            order("O11b", "C11", "2025-06-30 23:59", 50.0, channel="online"),
            order("O13", "C13", "2025-07-01 00:00"),  # the next day: not in
        ],
        "surveys": [
            survey("S1", "C01", "2025-06-05", "csat", 5),
            survey("S2", "C05", "2025-06-30 22:00", "csat", 4),
            survey("S3", "C06", "2025-06-15", "csat", 3),
            survey("S4", "C07", "2025-05-31", "csat", 1),
            survey("S5", "C11", "2025-07-01 00:30", "csat", 5),
            survey("N1", "C01", "2025-06-10", "nps", 10),
            survey("N2", "C07", "2025-06-11", "nps", 9),
            survey("N3", "C08", "2025-06-12", "nps", 6),
            survey("N4", "C11", "2025-06-13", "nps", 8),
            survey("N5", "C05", "2025-06-14", "nps", 7),
        ],
        "complaints": [
            complaint(
                "K1",
                "C01",
                "2025-06-02 10:00",
                first_response_at="2025-06-02 14:00",
                closed_at="2025-06-03 10:00",
            ),  # 4 h, 24 h
            complaint(
                "K2",
                "C05",
                "2025-06-10 08:00",
                first_response_at="2025-06-11 08:00",
                closed_at="2025-06-12 08:00",
            ),  # 24 h, exactly 48 h
            complaint(
                "K3",
                "C07",
                "2025-05-25 00:00",
                first_response_at="2025-05-25 06:00",
                closed_at="2025-06-05 00:00",
            ),  # opened before: 264 h
            complaint(
                "K4", "C08", "2025-06-20 09:00", first_response_at="2025-06-20 10:30"
            ),  # 1.5 h
            complaint(
                "K5",
                "C11",
                "2025-06-28 12:00",
                first_response_at="2025-07-01 12:00",
                updated_at="2025-06-28 12:00",
            ),  # answered after d
            complaint(
                "K6",
                "C06",
                "2025-06-15 00:00",
                first_response_at="2025-06-15 02:00",
                closed_at="2025-06-17 00:01",
            ),  # 2 h, 48 h 1 min
        ],
        "campaigns": [campaign("X1", "2025-05-30", "2025-06-30")],
        "campaign_contacts": [
            contact("X1", "C01", "2025-06-01 10:00", "2025-06-15 10:00"),  # exactly 14 days: yes
            contact("X1", "C02", "2025-06-02 10:00", "2025-06-17 10:00"),  # 15 days: no
            contact("X1", "C03", "2025-06-03 10:00"),  # no response
            contact("X1", "C04", "2025-05-31 10:00", "2025-06-01 10:00"),  # contacted before: out
            contact(
                "X1", "C05", "2025-06-25 10:00", "2025-07-01 09:00", updated_at="2025-06-25 10:00"
            ),  # responds after d
        ],
        "loyalty_events": [
            loyalty("E1", "C11", "2025-06-05", "earn", 100),
            loyalty("E2", "C11", "2025-06-20", "redeem", 30),
            loyalty("E3", "C01", "2025-06-25", "earn", 50),
            loyalty("E4", "C11", "2025-05-30", "earn", 999),
            loyalty("E5", "C11", "2025-06-30", "tier_change", 0, tier="gold"),
        ],
        "marketing_spend": [
            spend("2025-06-01", "shop", "acquisition", 100.0),
            spend("2025-06-30", "online", "acquisition", 50.0),
            spend("2025-06-10", "shop", "retention", 200.0),
            spend("2025-05-31", "shop", "acquisition", 999.0),
        ],
    }
