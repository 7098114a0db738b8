"""Churn risk: features that never look past their cut-off, labels from the 90 days after it,
a time split, calibrated probabilities, and reasons that follow the model."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from business import D, business
from factories import (
    build_source,
    complaint,
    contact,
    customer,
    loyalty,
    order,
    survey,
    ts,
    upsert,
)

from crm_pipeline.errors import ConfigError
from crm_pipeline.extract import extract_table
from crm_pipeline.models.churn import classifier, inputs, reasons, score
from crm_pipeline.models.settings import load_config
from crm_pipeline.models.stage import features_at
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.staging import build_staging

CFG = load_config()["churn"]


def pull(src, wh, day, batch):
    for table in TABLE_ORDER:
        extract_table(src, wh, table, day, batch)
    build_staging(wh)


def interaction(interaction_id, customer_id, occurred_at, direction="inbound"):
    at = ts(occurred_at)
    return dict(
        interaction_id=interaction_id,
        customer_id=customer_id,
        occurred_at=at,
        channel="phone",
        direction=direction,
        updated_at=at,
    )


# Everything here happens after D: new rows, and new versions of rows that existed at D.
AFTER_D = {
    "orders": [
        order("A01", "C01", "2025-07-02"),
        order("A02", "C05", "2025-07-01 00:00"),
        order(
            "O11b",
            "C11",
            "2025-06-30 23:59",
            50.0,
            channel="online",
            status="refunded",
            updated_at="2025-07-03 10:00",
        ),
    ],
    "surveys": [
        survey("A03", "C01", "2025-07-02", "csat", 1),
        survey("A04", "C05", "2025-07-03", "nps", 0),
    ],
    "complaints": [
        complaint("A05", "C07", "2025-07-02 10:00"),
        complaint(
            "K5",
            "C11",
            "2025-06-28 12:00",
            first_response_at="2025-07-01 12:00",
            closed_at="2025-07-03 09:00",
        ),
    ],
    "campaign_contacts": [contact("X1", "C06", "2025-06-20 10:00", "2025-07-02 10:00")],
    "loyalty_events": [
        loyalty("A06", "C11", "2025-07-02", "earn", 500),
        loyalty("A07", "C01", "2025-07-01 00:00", "redeem", 50),
    ],
    "interactions": [interaction("A08", "C07", "2025-07-02 09:00")],
    "customers": [
        customer("C05", "2025-06-01", loyalty_member=True, updated_at="2025-07-02"),
        customer(
            "C06",
            "2025-06-01",
            region="north",
            acquisition_channel="online",
            updated_at="2025-07-02",
        ),
    ],
}


def test_features_at_a_cutoff_never_use_what_happened_after_it(tmp_path, warehouse):
    """Fails if any feature (SQL or the BG/NBD P(alive)) reads data from after the cut-off."""
    rows = business()
    rows["campaign_contacts"].append(contact("X1", "C06", "2025-06-20 10:00"))
    src = build_source(f"sqlite:///{tmp_path}/source.db", rows)
    pull(src, warehouse, D, "night-1")
    before = features_at(warehouse, D)
    assert before["customer_id"].tolist() == ["C01", "C05", "C06", "C07", "C11"]  # active at D

    for table, rows in AFTER_D.items():
        upsert(src, table, rows)
    pull(src, warehouse, D + dt.timedelta(days=5), "night-2")
    after = features_at(warehouse, D)
    pd.testing.assert_frame_equal(before, after)

    # the same rows are visible to a later cut-off, so the comparison above is not vacuous
    later = features_at(warehouse, D + dt.timedelta(days=5)).set_index("customer_id")
    assert later.loc["C01", "last_csat"] == 1
    assert later.loc["C05", "loyalty_member"] == 1
    assert later.loc["C06", "region"] == "north"
    assert (
        later.loc["C07", "complaints_90"]
        == before.set_index("customer_id").loc["C07", "complaints_90"] + 1
    )
    assert later.loc["C07", "inbound_contacts_90"] == 1
    assert later.loc["C11", "open_complaints"] == 0
    assert later.loc["C06", "campaign_responses_180"] == 1
    assert later.loc["C11", "orders_90"] == 1  # O11b refunded after D
    assert later.loc["C11", "points_earned_90"] == 1599


def test_steps_dated_after_the_cutoff_are_unknown_even_in_rows_written_before(tmp_path, warehouse):
    """business() has rows written before D that carry later timestamps (a first response,
    a campaign response, a survey, an order on D+1): features at D ignore those steps."""
    src = build_source(f"sqlite:///{tmp_path}/source.db", business())
    pull(src, warehouse, D, "night-1")
    f = features_at(warehouse, D).set_index("customer_id")
    assert "C13" not in f.index  # O13 is on D+1
    c11 = f.loc["C11"]
    assert c11["complaints_90"] == 1 and c11["open_complaints"] == 1
    assert c11["complaint_response_hours"] == pytest.approx(60.0)  # K5 answered after D
    assert np.isnan(c11["last_csat"])  # S5 answered after D
    assert c11["last_nps"] == 8 and c11["days_since_nps"] == 17
    assert c11["points_earned_90"] == 1099 and c11["points_redeemed_90"] == 30
    assert c11["days_since_loyalty_activity"] == 10
    assert c11["recency_days"] == 0 and c11["orders_90"] == 2
    assert c11["main_channel"] == "delivery_staff"  # one order each: ties by name
    assert f.loc["C05", "campaign_contacts_180"] == 1
    assert f.loc["C05", "campaign_responses_180"] == 0  # responded after D
    assert f.loc["C05", "last_csat"] == 4 and f.loc["C05", "days_since_csat"] == 0
    assert f.loc["C01", "complaint_response_hours"] == pytest.approx(4.0)
    assert f.loc["C01", "complaint_resolution_hours"] == pytest.approx(24.0)
    assert f.loc["C01", "campaign_responses_180"] == 1
    assert 0 < f.loc["C07", "p_alive"] <= 1 and f.loc["C07", "expected_purchases_90"] > 0


def test_labels_use_only_the_90_days_after_the_cutoff(tmp_path, warehouse):
    c = dt.date(2025, 3, 31)
    people = [f"L{i}" for i in range(1, 8)]
    known_by_may = {
        "customers": [customer(p, "2024-01-01") for p in people],
        "orders": [order(f"{p}-0", p, "2025-03-21") for p in people]
        + [
            order("L1-1", "L1", "2025-03-31 23:59"),  # at c: not after it
            order("L2-1", "L2", "2025-04-01 00:00"),  # first instant after c
            order("L5-1", "L5", "2025-05-01", status="cancelled"),
            order("L6-1", "L6", "2025-05-01"),  # refunded after c+90
            order("L7-1", "L7", "2025-05-01"),  # refunded within c+90
        ],
    }
    src = build_source(f"sqlite:///{tmp_path}/source.db", known_by_may)
    pull(src, warehouse, dt.date(2025, 5, 15), "n1")
    upsert(
        src,
        "orders",
        [order("L7-1", "L7", "2025-05-01", status="refunded", updated_at="2025-06-01 12:00")],
    )
    pull(src, warehouse, dt.date(2025, 6, 2), "n2")
    upsert(
        src,
        "orders",
        [
            order("L3-1", "L3", "2025-06-29 23:59"),  # last instant of c+90
            order("L4-1", "L4", "2025-06-30 00:00"),  # c+91: too late
            order("L6-1", "L6", "2025-05-01", status="refunded", updated_at="2025-07-15 12:00"),
        ],
    )
    pull(src, warehouse, dt.date(2025, 7, 16), "n3")

    with warehouse.begin() as conn:
        data = inputs.read_cutoff(
            warehouse, conn, c, {"vip_cum_pct": 1, "key_cum_pct": 5, "regular_cum_pct": 20}
        )
        buyers = inputs.read_labels(warehouse, conn, c)
    labels = dict(
        zip(data.features["customer_id"], inputs.label(data.features, buyers), strict=True)
    )
    assert labels == {"L1": 1, "L2": 0, "L3": 0, "L4": 1, "L5": 1, "L6": 0, "L7": 1}


def test_the_split_is_in_time_order_and_refuses_anything_else():
    d = dt.date(2026, 6, 30)
    c1, c2 = inputs.time_split(d)
    assert c1 < c2 < d
    assert c2 + dt.timedelta(days=90) == d  # validation labels end at d
    assert c1 + dt.timedelta(days=90) == c2  # training labels end where validation starts
    x, y = _synthetic(300, 1)
    with pytest.raises(ValueError, match="at least 90 days after"):
        classifier.train(x, y, x, y, c2, c1, CFG)  # validation before training
    with pytest.raises(ValueError, match="at least 90 days after"):
        classifier.train(x, y, x, y, c1, c1 + dt.timedelta(days=30), CFG)  # overlapping labels


def test_the_training_day_is_the_monday_of_the_week_whatever_the_day():
    monday = dt.date(2026, 6, 29)
    assert monday.weekday() == 0
    week = [monday + dt.timedelta(days=n) for n in range(7)]
    assert {inputs.training_day(d, 7) for d in week} == {monday}
    assert inputs.training_day(monday - dt.timedelta(days=1), 7) == monday - dt.timedelta(days=7)
    assert [inputs.training_day(d, 1) for d in week] == week  # every night: the day itself
    assert inputs.training_day(dt.date(1997, 3, 5), 14).weekday() == 0  # any era, any period
    with pytest.raises(ConfigError, match="train_every_days"):
        inputs.training_day(monday, 0)


def test_too_few_customers_or_labels_is_not_trainable():
    x, y = _synthetic(100, 1)
    c1, c2 = inputs.time_split(dt.date(2026, 6, 30))
    with pytest.raises(classifier.NotTrainable, match="min_customers"):
        classifier.train(x, y, x, y, c1, c2, CFG)
    x, y = _synthetic(600, 1)
    with pytest.raises(classifier.NotTrainable, match="min_per_class"):
        classifier.train(x, np.zeros_like(y), x, y, c1, c2, CFG)


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Churn driven by recency and complaints only; contacts are noise."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 90, n).astype(float)
    complaints = rng.poisson(0.4, n).astype(float)
    x = pd.DataFrame(
        {
            "customer_id": [f"S{seed}-{i:05d}" for i in range(n)],
            "recency_days": recency,
            "usual_gap_days": np.full(n, 10.0),
            "complaints_90": complaints,
            "complaints_365": complaints,
            "high_severity_complaints_365": np.zeros(n),
            "open_complaints": np.zeros(n),
            "complaint_response_hours": np.where(complaints > 0, 5.0, np.nan),
            "complaint_resolution_hours": np.where(complaints > 0, 30.0, np.nan),
            "inbound_contacts_90": rng.poisson(1.0, n).astype(float),
            "outbound_contacts_90": rng.poisson(1.0, n).astype(float),
            "main_channel": rng.choice(["shop", "online"], n),
            "n_channels_365": np.ones(n),
        }
    )
    logit = -3.0 + 0.07 * recency + 1.6 * complaints
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x, y


def test_calibrated_model_and_reasons_that_follow_it():
    c1, c2 = inputs.time_split(dt.date(2026, 6, 30))
    x1, y1 = _synthetic(3000, 1)
    x2, y2 = _synthetic(3000, 2)
    model = classifier.train(x1, y1, x2, y2, c1, c2, CFG)
    m = model.metrics
    assert m["train_cutoff"] == c1.isoformat() and m["valid_cutoff"] == c2.isoformat()
    assert m["calibration_method"] == "isotonic"
    assert m["auc"] > 0.8 and m["ece"] < 0.05 and m["brier"] < m["brier_base_rate"]

    people = pd.concat([x2.iloc[:200]] * 1, ignore_index=True)
    people.loc[0, ["recency_days", "complaints_90", "complaints_365"]] = [85.0, 0.0, 0.0]
    people.loc[1, ["recency_days", "complaints_90", "complaints_365"]] = [1.0, 3.0, 3.0]
    people.loc[1, ["complaint_response_hours", "complaint_resolution_hours"]] = [5.0, 96.0]
    scores, info = score.score_frame(model, people, CFG)
    assert scores["churn_probability"].between(0, 1).all()
    assert scores.loc[0, "top_reasons"].startswith("no order for 85 days (usually every 10)")
    assert scores.loc[1, "top_reasons"].startswith(
        "3 complaints in 90 days, slow resolution (96 h on average)"
    )
    assert scores.loc[0, "risk_band"] == "high"
    assert set(info["band_counts"]) == {"high", "medium", "low"}
    # noise features are (nearly) never the first reason
    assert info["first_reason_shares"].get("service_contacts", 0) < 0.1
    # the same data gives the same scores
    again, _ = score.score_frame(classifier.train(x1, y1, x2, y2, c1, c2, CFG), people, CFG)
    pd.testing.assert_frame_equal(scores, again)


def test_contributions_from_the_trees_of_a_group_equal_the_whole_classifiers():
    """contributions() evaluates only the trees that split on a group's features; the whole
    classifier's log-odds difference is the definition it must meet."""
    c1, c2 = inputs.time_split(dt.date(2026, 6, 30))
    x1, y1 = _synthetic(3000, 1)
    x2, y2 = _synthetic(3000, 2)
    model = classifier.train(x1, y1, x2, y2, c1, c2, CFG)
    people = x2.iloc[:400].reset_index(drop=True)
    got = reasons.contributions(model, people)

    x = model.encoder.transform(people)
    ref = reasons.reference_values(x)
    base = model.classifier.decision_function(x)
    per_tree = reasons._tree_features(model.classifier, list(x.columns))
    assert per_tree is not None  # the classifier's layout is the one the fast path reads
    subsets = 0
    for group, (cols, _) in reasons.REASON_GROUPS.items():
        cols = [c for c in cols if c in x.columns]
        if not cols:
            continue
        replaced = x.copy()
        for c in cols:
            if isinstance(x[c].dtype, pd.CategoricalDtype):
                value = ref[c] if isinstance(ref[c], str) else None
                replaced[c] = pd.Categorical([value] * len(x), categories=x[c].cat.categories)
            else:
                replaced[c] = ref[c]
        expected = base - model.classifier.decision_function(replaced)
        np.testing.assert_allclose(got[group].to_numpy(), expected, rtol=0, atol=1e-9)
        subsets += sum(bool(used & set(cols)) for used in per_tree) < len(per_tree)
    assert subsets >= 2  # some groups really skip trees, so the shortcut is exercised
    assert (got["recency"].abs() > 0.05).any() and (got["channel"] == 0).any()


def test_top_reasons_are_the_largest_positive_contributions_in_order():
    features = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "recency_days": [45.0, 3.0],
            "usual_gap_days": [9.0, 9.0],
            "last_csat": [2.0, 5.0],
            "days_since_csat": [20.0, 3.0],
            "complaints_90": [2.0, 0.0],
            "complaints_365": [2.0, 0.0],
            "high_severity_complaints_365": [0.0, 0.0],
            "open_complaints": [0.0, 0.0],
            "complaint_response_hours": [3.0, np.nan],
            "complaint_resolution_hours": [80.0, np.nan],
            "loyalty_member": [0.0, 1.0],
            "points_earned_90": [0.0, 0.0],
            "points_redeemed_90": [0.0, 0.0],
            "days_since_loyalty_activity": [np.nan, np.nan],
        }
    )
    contrib = pd.DataFrame(
        {
            "recency": [1.2, -0.5],
            "csat": [0.4, -0.1],
            "complaints": [0.9, 0.01],
            "loyalty": [0.1, 0.02],
        }
    )
    assert reasons.top_reasons(features, contrib) == [
        "no order for 45 days (usually every 9); 2 complaints in 90 days, slow resolution "
        "(80 h on average); CSAT 2 last month",
        "no single factor stands out",
    ]


def test_risk_bands_and_calibration_error():
    bands = classifier.risk_band(
        np.array([0.05, 0.2, 0.49, 0.5, 0.99]), {"high": 0.5, "medium": 0.2}
    )
    assert bands.tolist() == ["low", "medium", "medium", "high", "high"]
    with pytest.raises(ValueError):
        classifier.risk_band(np.array([0.1]), {"high": 0.2, "medium": 0.3})
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    assert classifier.expected_calibration_error(y, np.full(10, 0.4)) == pytest.approx(0.0)
    assert classifier.expected_calibration_error(y, np.full(10, 0.9)) == pytest.approx(0.5)
