"""The public entry points: generate() a history, advance() it by a day, last_day().

Why: generate() simulates the whole history chunk of customers by chunk (memory bounded by a
chunk, not by the base) and writes it; advance() rebuilds the state from the tables, runs one
more simulated day and applies the day's late changes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from crm_devtools.demo.business import _campaign_rows, _World
from crm_devtools.demo.crm_events import _simulate_day
from crm_devtools.demo.customers import _Day, _Ids, _new_customers, _Population, _Rows
from crm_devtools.demo.draws import _date_of, _day_number, _pick, _uniform_times
from crm_devtools.demo.drift import _late_changes
from crm_devtools.demo.plans import (
    _complaint_refunds,
    _cut_complaints,
    _cut_contacts,
    _settle_orders,
)
from crm_devtools.demo.replay import _load_population
from crm_devtools.demo.settings import _COUNTERS, _TAG_ADVANCE, DAY, HOUR, IMPORT_DAYS, IMPORT_SHARE
from crm_devtools.demo.store import _Store
from crm_pipeline import source_schema as ss

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
