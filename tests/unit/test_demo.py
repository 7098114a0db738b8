"""Tests of the demo CRM source generator (crm_devtools.demo).

Small sizes (hundreds of customers, a few months) keep them fast; the shape checks use a
fixed seed, so they are deterministic, with margins wide enough not to depend on it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from crm_devtools import cli, demo
from crm_devtools.demo.business import _campaigns, _World
from crm_devtools.demo.customers import _Ids, _traits
from crm_devtools.demo.draws import _date_of, _day_number
from crm_devtools.demo.history import _simulate_chunk
from crm_devtools.demo.replay import _load_population
from crm_devtools.demo.settings import CORE_PRODUCTS, CUSTOMER_KINDS, LOYALTY_TIERS, NULL, format_id
from crm_pipeline import source_schema as ss

END = dt.date(2025, 6, 30)
END_OF_HISTORY = pd.Timestamp(END) + pd.Timedelta(days=1)  # exclusive
TS_COLUMNS = {
    name: [c.name for c in ss.metadata.tables[name].columns if isinstance(c.type, sa.DateTime)]
    for name in ss.TABLE_ORDER
}


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _frame(path: Path, table: str) -> pd.DataFrame:
    """A table with timestamps parsed (SQLite stores SQLAlchemy's text format)."""
    with closing(sqlite3.connect(path)) as con:
        df = pd.read_sql(f"SELECT * FROM {table}", con)
    for col in TS_COLUMNS[table]:
        df[col] = pd.to_datetime(df[col], format="%Y-%m-%d %H:%M:%S.%f")
    return df


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    return {t: _frame(path, t) for t in ss.TABLE_ORDER}


def _sorted_rows(path: Path, table: str) -> list[tuple]:
    key = ", ".join(ss.SOURCE_TABLES[table].key)
    with closing(sqlite3.connect(path)) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """800 customers over 200 days, in four chunks."""
    path = tmp_path_factory.mktemp("demo") / "source.db"
    counts = demo.generate(
        _url(path), customers=800, days=200, seed=5, end_date=END, chunk_customers=200
    )
    return path, counts


@pytest.fixture(scope="module")
def tables(source) -> dict[str, pd.DataFrame]:
    return _tables(source[0])


@pytest.fixture(scope="module")
def advanced(source, tmp_path_factory) -> tuple[Path, list[dict[str, int]]]:
    """A copy of the source advanced by two days, one call at a time."""
    path = tmp_path_factory.mktemp("advanced") / "source.db"
    shutil.copy(source[0], path)
    return path, [demo.advance(_url(path)), demo.advance(_url(path))]


# --- the contract --------------------------------------------------------------------


def test_every_contract_table_has_exactly_the_contract_columns(source):
    engine = sa.create_engine(_url(source[0]))
    inspector = sa.inspect(engine)
    for name, spec in ss.SOURCE_TABLES.items():
        assert tuple(c["name"] for c in inspector.get_columns(name)) == spec.columns
    assert "demo_meta" in inspector.get_table_names()
    engine.dispose()


def test_counts_are_the_rows_written_and_every_table_has_rows(source, tables):
    path, counts = source
    assert set(counts) == set(ss.TABLE_ORDER)
    for name, df in tables.items():
        assert counts[name] == len(df) > 0, name
    # Core products plus one launch every ~55 days (37 over the default two years).
    assert len(CORE_PRODUCTS) < counts["products"] <= 40


def test_types_ids_text_amounts_numeric_timestamps_parse(source):
    """Raw SQLite storage classes, and the values SQLAlchemy reads back."""
    path = source[0]
    with closing(sqlite3.connect(path)) as con:
        for name, spec in ss.SOURCE_TABLES.items():
            for col in spec.columns:
                kinds = {k for (k,) in con.execute(f"SELECT DISTINCT typeof({col}) FROM {name}")}
                column = ss.metadata.tables[name].c[col]
                if col.endswith("_id"):
                    assert kinds <= {"text", "null"}, (name, col, kinds)
                elif isinstance(column.type, sa.Numeric):
                    assert kinds <= {"real", "integer"}, (name, col, kinds)
                elif isinstance(column.type, sa.DateTime | sa.String):
                    assert kinds <= {"text", "null"}, (name, col, kinds)
    engine = sa.create_engine(_url(path))
    with engine.connect() as conn:
        order = conn.execute(sa.select(ss.orders).limit(1)).one()
        spend = conn.execute(sa.select(ss.marketing_spend).limit(1)).one()
        customer = conn.execute(sa.select(ss.customers).limit(1)).one()
    engine.dispose()
    assert isinstance(order.ordered_at, dt.datetime) and order.ordered_at.tzinfo is None
    assert str(order.net_amount) == f"{order.net_amount:.2f}"
    assert isinstance(spend.spend_date, dt.date)
    assert isinstance(customer.loyalty_member, bool)
    assert order.order_id.startswith("O") and customer.customer_id.startswith("C")


# --- determinism ---------------------------------------------------------------------


def test_same_parameters_give_identical_tables_and_another_seed_differs(tmp_path):
    params = dict(customers=300, days=120, end_date=END, chunk_customers=150)
    paths = [tmp_path / f"{name}.db" for name in ("a", "b", "c")]
    demo.generate(_url(paths[0]), seed=11, **params)
    demo.generate(_url(paths[1]), seed=11, **params)
    demo.generate(_url(paths[2]), seed=12, **params)
    for table in ss.TABLE_ORDER:
        assert _sorted_rows(paths[0], table) == _sorted_rows(paths[1], table), table
    assert _sorted_rows(paths[0], "orders") != _sorted_rows(paths[2], "orders")


# --- realistic shape -----------------------------------------------------------------


def _kinds(customers: pd.DataFrame, seed: int) -> pd.Series:
    nums = customers["customer_id"].str[1:].astype(int).to_numpy()
    kinds = np.array(CUSTOMER_KINDS)[_traits(seed, nums).kind]
    return pd.Series(kinds, index=customers["customer_id"])


def _completed(tables) -> pd.DataFrame:
    orders = tables["orders"]
    return orders[orders.status == "completed"].sort_values(["customer_id", "ordered_at"])


def test_subscribers_reorder_every_7_to_14_days(tables):
    done = _completed(tables)
    gaps = done.groupby("customer_id").ordered_at.diff().dt.total_seconds() / 86400
    kind = done.customer_id.map(_kinds(tables["customers"], seed=5))
    assert 7 <= gaps[kind == "subscriber"].median() <= 14
    assert gaps[kind == "occasional"].median() > 40


def test_delivery_staff_is_the_largest_channel(tables):
    mix = tables["orders"].channel.value_counts()
    assert mix.idxmax() == "delivery_staff"
    assert set(mix.index) == set(ss.ORDER_CHANNELS)


def test_low_value_customers_churn_more_than_top_value(tables):
    """Churned: ordered before the last 90 days, not in them."""
    done = _completed(tables)
    cut = END_OF_HISTORY - pd.Timedelta(days=90)
    value = done[done.ordered_at < cut].groupby("customer_id").net_amount.sum()
    recent = set(done.loc[done.ordered_at >= cut, "customer_id"])
    churned = pd.Series(~value.index.isin(recent), index=value.index)
    rank = value.rank(pct=True, method="first")
    low, top = churned[rank <= 0.4].mean(), churned[rank > 0.8].mean()
    assert low > top + 0.2, (low, top)


def test_complaints_lower_later_survey_scores(tables):
    surveys = tables["surveys"].merge(
        tables["complaints"].groupby("customer_id").opened_at.min().rename("first_complaint"),
        on="customer_id",
        how="left",
    )
    after = surveys.responded_at > surveys.first_complaint  # NaT compares False
    csat = surveys.survey_type == "csat"
    assert (csat & after).sum() >= 20
    assert surveys[csat & after].score.mean() < surveys[csat & ~after].score.mean() - 0.15


def test_rates_are_in_the_expected_ranges(tables):
    orders, complaints = tables["orders"], tables["complaints"]
    status = orders.status.value_counts(normalize=True)
    assert status["completed"] > 0.9
    assert 0.01 < status["cancelled"] < 0.06 and 0.005 < status["refunded"] < 0.05
    assert 0.005 < len(complaints) / len(orders) < 0.03
    hours = (complaints.closed_at - complaints.opened_at).dt.total_seconds() / 3600
    assert 12 < hours.median() < 72 and 0.05 < (hours > 48).mean() < 0.6
    contacts = tables["campaign_contacts"]
    assert 0.03 < contacts.responded_at.notna().mean() < 0.2
    assert tables["customers"].gender.isna().any() and tables["customers"].birth_year.isna().any()
    assert set(tables["customers"].loyalty_tier.dropna()) <= set(LOYALTY_TIERS)
    assert tables["surveys"].comment.str.contains('[<>&"]', regex=True).any()


# --- integrity -----------------------------------------------------------------------


def _cents(amounts: pd.Series) -> pd.Series:
    return (amounts * 100).round().astype("int64")


def _check_integrity(t: dict[str, pd.DataFrame], end: pd.Timestamp) -> None:
    """Everything the contract and the brief promise about any state of the source."""
    for name, spec in ss.SOURCE_TABLES.items():
        df = t[name]
        assert not df.duplicated(list(spec.key)).any(), f"duplicate keys in {name}"
        for col in TS_COLUMNS[name]:
            assert not (df[col] >= end).any(), f"{name}.{col} after the end of history"
        business = [c for c in TS_COLUMNS[name] if c != "updated_at"]
        for col in business:
            assert not (df[col] > df.updated_at).any(), f"{name}.updated_at < {col}"
        if name == "marketing_spend":
            assert (pd.to_datetime(df.spend_date) < end).all()

    customers, products, orders, lines = (
        t[n] for n in ("customers", "products", "orders", "order_lines")
    )
    assert (
        _cents(orders.gross_amount) - _cents(orders.discount_amount) == _cents(orders.net_amount)
    ).all()
    assert (
        (orders[["gross_amount", "discount_amount", "net_amount", "cost_amount"]] >= 0).all().all()
    )
    assert (orders.cost_amount < orders.net_amount).mean() > 0.95
    line_sum = _cents(lines.net_amount).groupby(lines.order_id).sum()
    assert (
        line_sum.reindex(orders.order_id).to_numpy() == _cents(orders.net_amount).to_numpy()
    ).all()
    assert lines.groupby("order_id").size().between(1, 5).all()
    assert (lines.quantity > 0).all()
    assert set(orders.status) <= set(ss.ORDER_STATUSES)
    assert set(orders.channel) <= set(ss.ORDER_CHANNELS)
    assert (orders.updated_at > orders.ordered_at)[orders.status != "completed"].all()

    lp = lines.merge(orders[["order_id", "ordered_at"]], on="order_id").merge(
        products, on="product_id"
    )
    assert (lp.launched_at <= lp.ordered_at).all()
    assert not (lp.discontinued_at <= lp.ordered_at).any()

    k = t["complaints"]
    steps = ["opened_at", *ss.COMPLAINT_STEPS]
    for before, after in zip(steps, steps[1:], strict=False):
        assert not (k[after] < k[before]).any(), (before, after)
        assert not (k[after].notna() & k[before].isna()).any(), f"{after} without {before}"
    assert (k.first_response_at.isna() | (k.first_response_at > k.opened_at)).all()
    assert (k.outcome.isna() == k.closed_at.isna()).all()
    assert set(k.severity) <= set(ss.SEVERITIES)

    s = t["surveys"]
    assert set(s.survey_type) <= set(ss.SURVEY_TYPES)
    assert s[s.survey_type == "csat"].score.between(1, 5).all()
    assert s[s.survey_type == "nps"].score.between(0, 10).all()
    i = t["interactions"]
    assert set(i.channel) <= set(ss.INTERACTION_CHANNELS) and set(i.direction) <= set(ss.DIRECTIONS)
    c, cc = t["campaigns"], t["campaign_contacts"]
    assert set(c.objective) <= set(ss.CAMPAIGN_OBJECTIVES)
    assert (c.started_at < c.ended_at).all()
    window = cc.merge(c, on="campaign_id")
    assert window.contacted_at.between(window.started_at, window.ended_at).all()
    delay = (cc.responded_at - cc.contacted_at).dropna()
    assert ((delay > pd.Timedelta(0)) & (delay <= pd.Timedelta(days=14))).all()
    le = t["loyalty_events"]
    assert set(le.kind) <= set(ss.LOYALTY_KINDS)
    assert (le[le.kind != "tier_change"].points > 0).all()
    assert set(le.tier.dropna()) <= set(LOYALTY_TIERS)
    assert set(t["marketing_spend"].objective) <= set(ss.CAMPAIGN_OBJECTIVES)

    fks = [
        ("orders", "customer_id", customers.customer_id),
        ("order_lines", "order_id", orders.order_id),
        ("order_lines", "product_id", products.product_id),
        ("surveys", "customer_id", customers.customer_id),
        ("surveys", "order_id", orders.order_id),
        ("complaints", "customer_id", customers.customer_id),
        ("complaints", "order_id", orders.order_id),
        ("interactions", "customer_id", customers.customer_id),
        ("campaign_contacts", "campaign_id", c.campaign_id),
        ("campaign_contacts", "customer_id", customers.customer_id),
        ("loyalty_events", "customer_id", customers.customer_id),
    ]
    for table, col, parent in fks:
        child = t[table][col].dropna()
        assert child.isin(parent).all(), f"{table}.{col} does not resolve"
    # Nobody orders before signing up, and no timestamp is before the history starts.
    first = orders.merge(customers[["customer_id", "created_at"]], on="customer_id")
    assert (first.ordered_at > first.created_at).all()


def test_integrity_of_generated_source(tables):
    _check_integrity(tables, END_OF_HISTORY)


def test_no_timestamp_before_history_starts(tables):
    start = END_OF_HISTORY - pd.Timedelta(days=200)
    for name, df in tables.items():
        for col in TS_COLUMNS[name]:
            assert not (df[col] < start).any(), (name, col)


# --- advance() -----------------------------------------------------------------------


def test_advance_adds_the_next_day_only_and_changes_older_rows(source, advanced, tables):
    path, results = advanced
    after = _tables(path)
    assert demo.last_day(_url(path)) == END + dt.timedelta(days=2)
    days = (END + dt.timedelta(days=1), END + dt.timedelta(days=2))
    for day, counts in zip(days, results, strict=True):
        assert counts["orders.inserted"] > 0 and counts["order_lines.inserted"] > 0
        assert counts["marketing_spend.inserted"] > 0
        lo, hi = pd.Timestamp(day), pd.Timestamp(day) + pd.Timedelta(days=1)
        for name, df in after.items():
            key = list(ss.SOURCE_TABLES[name].key)
            inserted = df[~df.set_index(key).index.isin(tables[name].set_index(key).index)]
            inserted = inserted[inserted.updated_at.between(lo, hi, inclusive="left")]
            business = [c for c in TS_COLUMNS[name] if c != "updated_at"]
            if business:  # the row's first timestamp is when it came into being
                assert inserted[business[0]].between(lo, hi, inclusive="left").all(), name
        lines = after["order_lines"].merge(after["orders"], on="order_id", suffixes=("", "_o"))
        of_day = lines[lines.updated_at.between(lo, hi, inclusive="left")]
        assert of_day.ordered_at.between(lo, hi, inclusive="left").all()
        spend = after["marketing_spend"]
        assert (pd.to_datetime(spend.spend_date) == lo).sum() == counts["marketing_spend.inserted"]
    old = after["orders"][after["orders"].order_id.isin(tables["orders"].order_id)]
    assert (old[old.updated_at >= END_OF_HISTORY].status == "refunded").all()
    late = ("orders.updated", "complaints.updated", "campaign_contacts.updated")
    assert sum(c[k] for c in results for k in late) > 0
    _check_integrity(after, END_OF_HISTORY + pd.Timedelta(days=2))


def test_advance_during_a_campaign_contacts_customers_and_extends_it(tmp_path):
    """A running campaign's row shows it so far: ended_at and spend grow day by day."""
    seed, n = 5, 400
    year = (_day_number(dt.date(2025, 1, 1)), _day_number(dt.date(2025, 12, 31)))
    plan = _campaigns(seed, *year, scale=n / 20_000)
    campaign = next(c for c in plan if c.objective == "retention" and c.days >= 7)
    end = _date_of(campaign.start_day + 2)
    url, cid = _url(tmp_path / "c.db"), format_id("campaign_id", campaign.num)
    demo.generate(url, n, 150, seed, end, chunk_customers=n)

    def row():
        rows = _frame(tmp_path / "c.db", "campaigns")
        return rows[rows.campaign_id == cid].iloc[0]

    before = row()
    assert before.ended_at == pd.Timestamp(end) + pd.Timedelta(days=1, seconds=-1)
    counts = demo.advance(url)
    after = row()
    assert counts["campaigns.updated"] >= 1 and counts["campaign_contacts.inserted"] > 0
    assert after.ended_at == before.ended_at + pd.Timedelta(days=1)
    assert after.spend > before.spend and after.updated_at == after.ended_at


@pytest.mark.postgres
def test_postgres_gets_the_same_rows_as_sqlite(pg_database, tmp_path):
    """The Core (non-SQLite) write path stores exactly what the SQLite fast path stores."""
    params = dict(customers=200, days=90, seed=4, end_date=END, chunk_customers=100)
    urls = (pg_database, _url(tmp_path / "lite.db"))
    for url in urls:
        demo.generate(url, **params)
        demo.advance(url)
    for name, spec in ss.SOURCE_TABLES.items():
        table = spec.table
        found = []
        for url in urls:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                found.append(conn.execute(sa.select(table).order_by(*spec.key)).all())
            engine.dispose()
        assert found[0] == found[1], name


def test_advance_changes_only_updated_at_stamped_rows(source, advanced, tables):
    """Every row that differs from the generated one carries an updated_at after history."""
    after = _tables(advanced[0])
    for name, df in tables.items():
        key = list(ss.SOURCE_TABLES[name].key)
        merged = df.merge(after[name], on=key, suffixes=("", "_new"))
        assert len(merged) == len(df), f"rows of {name} disappeared"
        cols = [c for c in df.columns if c not in key]
        differs = np.zeros(len(merged), bool)
        for col in cols:
            a, b = merged[col], merged[f"{col}_new"]
            differs |= ~((a == b) | (a.isna() & b.isna())).to_numpy()
        assert (merged.updated_at_new[differs] >= END_OF_HISTORY).all(), name


def test_advance_is_deterministic(source, advanced, tmp_path):
    copy = tmp_path / "again.db"
    shutil.copy(source[0], copy)
    demo.advance(_url(copy))
    demo.advance(_url(copy), END + dt.timedelta(days=2))
    for table in ss.TABLE_ORDER:
        assert _sorted_rows(copy, table) == _sorted_rows(advanced[0], table), table


def test_advance_refuses_days_already_covered(advanced):
    with pytest.raises(ValueError):
        demo.advance(_url(advanced[0]), END)


def test_replayed_state_matches_the_generator(tmp_path):
    """advance() rebuilds the simulation state from the tables; it must be the state the
    generator ended with (same churned customers, same experience and hazard)."""
    seed, n, days = 9, 400, 150
    last = _day_number(END)
    demo.generate(_url(tmp_path / "s.db"), n, days, seed, END, chunk_customers=n)
    world = _World.build(seed, last - days + 1, days, n, last)
    ids = _Ids()
    pop, _ = _simulate_chunk(world, 0, ids.take("customer", n), days, ids)
    engine = sa.create_engine(_url(tmp_path / "s.db"))
    with engine.connect() as conn:
        rebuilt = _load_population(conn, world, last + 1)
    engine.dispose()
    for name in ("n_orders", "last_order", "earned", "balance", "tier", "segment", "churn_day"):
        assert (getattr(pop, name) == getattr(rebuilt, name)).all(), name
    assert np.allclose(pop.level, rebuilt.level) and np.allclose(pop.cum_hazard, rebuilt.cum_hazard)
    assert (pop.churn_day != NULL).sum() > 0
    assert sorted(pop.pending[1].tolist()) == sorted(rebuilt.pending[1].tolist())


# --- command line --------------------------------------------------------------------


def test_command_line_generate_and_advance(tmp_path, capsys):
    url = _url(tmp_path / "cli.db")
    cli.main(["generate", "--url", url, "--customers", "150", "--days", "60", "--seed", "3",
               "--end-date", "2025-01-31"])  # fmt: skip
    assert "orders\t" in capsys.readouterr().out
    cli.main(["advance", "--url", url])
    assert "orders.inserted\t" in capsys.readouterr().out
    assert demo.last_day(url) == dt.date(2025, 2, 1)
    cli.main(["advance", "--url", url, "--day", "2025-02-04"])  # three days in one call
    assert demo.last_day(url) == dt.date(2025, 2, 4)
    orders = _frame(tmp_path / "cli.db", "orders")
    assert orders.ordered_at.between("2025-02-04", "2025-02-05", inclusive="left").any()
    assert orders.ordered_at.max() < pd.Timestamp("2025-02-05")
