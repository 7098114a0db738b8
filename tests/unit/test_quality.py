"""The validate stage: its rules on small frames, and its bookkeeping on both engines."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from corpus import add_rows, base_rows, drop_primary_key, execute, night_rows
from factories import build_source, customer, order, upsert

from crm_pipeline.errors import DataQualityError, PipelineStop
from crm_pipeline.extract import extract_table
from crm_pipeline.quality import commands, reader, stage
from crm_pipeline.quality.commands import release_quarantine
from crm_pipeline.quality.outcome import failed_tables
from crm_pipeline.quality.rules import parse_values
from crm_pipeline.quality.settings import normalise_config
from crm_pipeline.quality.stage import validate_frame, validate_run
from crm_pipeline.source_schema import SOURCE_TABLES, TABLE_ORDER
from crm_pipeline.transform.staging import build_staging

NOW = dt.datetime(2025, 3, 11, 1, 0)
DAY = dt.date(2025, 3, 10)


def frame(table: str, *rows: dict) -> pd.DataFrame:
    """Raw text rows: every value as the extract would store it, defaults for the rest."""
    out = []
    for i, row in enumerate(rows):
        full = {c: None for c in SOURCE_TABLES[table].columns}
        full.update({k: None if v is None else str(v) for k, v in row.items()})
        full.update(_row_hash=f"h{i}", _batch_id=1)
        out.append(full)
    return pd.DataFrame(out, dtype=object)


def found(table: str, *rows: dict, **kw) -> set[tuple[str, str, str]]:
    """(row_key, rule, column) of every finding."""
    result = validate_frame(table, frame(table, *rows), NOW, **kw)
    return set(zip(result.row_key, result.rule, result.column_name, strict=True))


def an_order(order_id="O1", **kw) -> dict:
    row = dict(
        order_id=order_id,
        customer_id="C1",
        ordered_at="2025-03-10 09:00:00.000000",
        status="completed",
        channel="shop",
        gross_amount="20",
        discount_amount="0",
        net_amount="20",
        cost_amount="12",
        updated_at="2025-03-10 09:00:00.000000",
    )
    row.update(kw)
    return row


def a_complaint(complaint_id="T1", **steps) -> dict:
    row = dict(
        complaint_id=complaint_id,
        customer_id="C1",
        opened_at="2025-03-10 08:00:00",
        category="delivery",
        severity="low",
        updated_at="2025-03-10 20:00:00",
    )
    row.update(steps)
    return row


# -- rules on small frames ---------------------------------------------------------------------


def test_parsing_follows_what_the_staging_cast_accepts():
    text = pd.Series(["12.50", "-3", "1e3", "n/a", "", None, "12,5"], dtype=object)
    assert parse_values(text, "number").tolist()[:3] == [12.5, -3.0, 1000.0]
    assert parse_values(text, "number").isna().tolist() == [False] * 3 + [True] * 4
    stamps = pd.Series(
        [
            "2025-03-10 09:00:00.000000",
            "2025-03-10T09:00",
            "2025-03-10",
            "2025-02-30 10:00:00",
            "10/03/2025",
        ],
        dtype=object,
    )
    assert parse_values(stamps, "timestamp").isna().tolist() == [False, False, False, True, True]
    assert parse_values(pd.Series(["1", "0", "true", "maybe"]), "boolean").tolist() == [
        True,
        False,
        True,
        None,
    ]


def test_a_clean_order_passes_every_rule():
    assert found("orders", an_order()) == set()


def test_ranges_and_value_sets():
    assert found("orders", an_order(net_amount="-1", gross_amount="-1")) == {
        ("O1", "non_negative", "net_amount"),
        ("O1", "non_negative", "gross_amount"),
    }
    assert found("orders", an_order(status="pending")) == {("O1", "accepted_values", "status")}
    assert found("orders", an_order(channel="marketplace")) == {
        ("O1", "accepted_values", "channel")
    }
    config = normalise_config({"extra_values": {"orders.channel": ["marketplace"]}})
    assert found("orders", an_order(channel="marketplace"), config=config) == set()
    surveys = [
        dict(
            response_id=f"S{i}",
            customer_id="C1",
            responded_at="2025-03-10 10:00:00",
            survey_type=kind,
            score=str(score),
            updated_at="2025-03-10 10:00:00",
        )
        for i, (kind, score) in enumerate(
            [
                ("csat", 1),
                ("csat", 5),
                ("csat", 0),
                ("csat", 6),
                ("nps", 0),
                ("nps", 10),
                ("nps", 11),
                ("other", 3),
            ]
        )
    ]
    assert found("surveys", *surveys) == {
        ("S2", "score_range", "score"),
        ("S3", "score_range", "score"),
        ("S6", "score_range", "score"),
        ("S7", "accepted_values", "survey_type"),
    }
    events = [
        dict(
            event_id=f"L{i}",
            customer_id="C1",
            occurred_at="2025-03-10 10:00:00",
            kind=kind,
            points=str(points),
            updated_at="2025-03-10 10:00:00",
        )
        for i, (kind, points) in enumerate([("earn", 5), ("redeem", 0), ("tier_change", 0)])
    ]
    assert found("loyalty_events", *events) == {("L1", "positive", "points")}


def test_net_equals_gross_minus_discount_within_exactly_one_cent():
    orders = [
        an_order("O1", gross_amount="10.01", discount_amount="0", net_amount="10.00"),  # 0.01
        an_order("O2", gross_amount="100.11", discount_amount="0.10", net_amount="100.00"),
        an_order("O3", gross_amount="10.02", discount_amount="0", net_amount="10.00"),  # 0.02
        an_order("O4", gross_amount="25.00", discount_amount="5.00", net_amount="20.01"),
        an_order("O5", gross_amount="25.00", discount_amount="5.00", net_amount="19.98"),
    ]
    assert found("orders", *orders) == {
        ("O3", "net_equals_gross_minus_discount", "net_amount"),
        ("O5", "net_equals_gross_minus_discount", "net_amount"),
    }


def test_complaint_steps_in_process_order_with_nulls_only_at_the_end():
    complaints = [
        a_complaint(
            "T1", first_response_at="2025-03-10 09:00:00", cause_found_at="2025-03-10 10:00:00"
        ),
        a_complaint("T2", first_response_at="2025-03-10 07:00:00"),  # before opened_at
        a_complaint(
            "T3", first_response_at="2025-03-10 11:00:00", cause_found_at="2025-03-10 10:00:00"
        ),
        a_complaint("T4", cause_found_at="2025-03-10 10:00:00"),  # a gap in the chain
        a_complaint(
            "T5",
            **{
                s: f"2025-03-10 {9 + i:02d}:00:00"
                for i, s in enumerate(
                    (
                        "first_response_at",
                        "cause_found_at",
                        "remedy_decided_at",
                        "remedy_done_at",
                        "customer_informed_at",
                        "closed_at",
                    )
                )
            },
        ),
        a_complaint(
            "T6",
            **{
                s: "2025-03-10 08:00:00"
                for s in (
                    "first_response_at",
                    "cause_found_at",
                    "remedy_decided_at",
                    "remedy_done_at",
                    "customer_informed_at",
                    "closed_at",
                )
            },
        ),  # closed the moment it was opened
    ]
    assert found("complaints", *complaints) == {
        ("T2", "complaint_step_order", "first_response_at"),
        ("T3", "complaint_step_order", "cause_found_at"),
        ("T4", "complaint_step_order", "cause_found_at"),
        ("T6", "closed_after_opened", "closed_at"),
    }


def test_timestamps_not_in_the_future_of_the_run_nor_after_updated_at():
    assert found(
        "orders", an_order(ordered_at="2025-03-11 02:00:00", updated_at="2025-03-11 02:00:00")
    ) == {("O1", "not_in_future", "ordered_at"), ("O1", "not_in_future", "updated_at")}
    assert found(
        "orders", an_order(ordered_at="2025-03-10 10:00:00", updated_at="2025-03-10 09:00:00")
    ) == {("O1", "not_after_updated_at", "ordered_at")}
    # planned campaign dates may lie ahead; the period must still be in order
    campaigns = [
        dict(
            campaign_id="M1",
            name="x",
            channel="email",
            objective="retention",
            started_at="2025-04-01 00:00:00",
            ended_at="2025-03-01 00:00:00",
            spend="10",
            updated_at="2025-03-10 00:00:00",
        )
    ]
    assert found("campaigns", *campaigns) == {("M1", "period_order", "ended_at")}


def test_keys_unique_and_not_null_foreign_keys_resolve():
    lines = frame(
        "order_lines",
        dict(
            order_id="O1",
            line_no="1",
            product_id="P1",
            quantity="1",
            unit_price="2",
            net_amount="2",
            updated_at="2025-03-10 09:00:00",
        ),
        dict(
            order_id="O1",
            line_no="1",
            product_id="P1",
            quantity="2",
            unit_price="2",
            net_amount="4",
            updated_at="2025-03-10 09:00:00",
        ),
        dict(
            order_id="O2",
            line_no="1",
            product_id="P9",
            quantity="0",
            unit_price="2",
            net_amount="0",
            updated_at="2025-03-10 09:00:00",
        ),
    )
    result = validate_frame("order_lines", lines, NOW, orphans={"product_id": {"P9"}})
    assert set(zip(result.row_key, result.rule, result.value, strict=True)) == {
        ("O1|1", "unique_key", "order_id=O1, line_no=1"),
        ("O2|1", "fk_products", "P9"),
        ("O2|1", "positive", "0"),
    }
    assert ("O1", "not_null", "customer_id") in found("orders", an_order(customer_id=None))


def test_unparseable_values_are_table_level_findings():
    result = validate_frame("orders", frame("orders", an_order(net_amount="n/a")), NOW)
    assert result[["rule", "column_name", "value", "level"]].values.tolist() == [
        ["type_number", "net_amount", "n/a", "table"]
    ]


def test_key_chunks_never_split_a_key():
    blocks = [pd.DataFrame({"k": list(b)}) for b in ("aab", "bbb", "bc", "c")]
    chunks = [c.k.tolist() for c in reader.key_chunks(blocks, ("k",))]
    assert chunks == [["a", "a"], ["b", "b", "b", "b", "b"], ["c", "c"]]


# -- on the warehouse, both engines -----------------------------------------------------------


def pull(src, wh, day, run_id):
    for table in TABLE_ORDER:
        extract_table(src, wh, table, day, run_id)


def q(wh, sql):
    with wh.begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).fetchall()]


def now_of(day):
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), tzinfo=dt.UTC)


@pytest.fixture
def source(tmp_path):
    """A clean business up to DAY, plus one order in a channel the contract does not know
    and one order of a customer the source has not shown yet."""
    rows = base_rows(DAY)
    rows["orders"] += [
        order("OMKT", "C1", f"{DAY} 09:00", 15.0, channel="marketplace"),
        order("OLATE", "C99", f"{DAY} 10:00", 12.0),
    ]
    return build_source(f"sqlite:///{tmp_path}/source.db", rows)


def test_quarantine_results_status_and_an_idempotent_rerun(source, warehouse, tmp_path):
    pull(source, warehouse, DAY, "run-1")
    raw_before = q(warehouse, "select count(*) from raw.orders")
    summary = validate_run(warehouse, DAY, "run-1", now_of(DAY), docs_dir=tmp_path / "docs")
    assert set(summary) == {*TABLE_ORDER, "docs"}
    assert summary["orders"]["status"] == "quarantined"
    assert summary["orders"]["quarantined"] == 2 and summary["orders"]["rows"] == 42
    assert summary["customers"]["status"] == "passed"
    held = q(
        warehouse,
        "select table_name, row_key, rule, column_name, value, as_of_date, run_id "
        "from quarantine.rows where released_at is null order by row_key",
    )
    assert held == [
        ("orders", "OLATE", "fk_customers", "customer_id", "C99", DAY, "run-1"),
        ("orders", "OMKT", "accepted_values", "channel", "marketplace", DAY, "run-1"),
    ]
    results = q(
        warehouse,
        "select rule, column_name, level, success, unexpected_count, element_count "
        "from ops.dq_results where table_name = 'orders' and not success "
        "order by rule",
    )
    assert results == [
        ("accepted_values", "channel", "row", False, 1, 42),
        ("fk_customers", "customer_id", "row", False, 1, 42),
    ]
    assert q(
        warehouse, "select count(distinct table_name) from ops.dq_results where run_id = 'run-1'"
    ) == [(11,)]
    assert q(warehouse, "select status from ops.table_status where table_name = 'orders'") == [
        ("quarantined",)
    ]
    assert failed_tables(warehouse, DAY) == set()
    docs = Path(summary["docs"])
    assert docs.name == "index.html" and docs.exists() and "orders.rows" in docs.read_text()
    # staging leaves the held versions out, raw keeps them
    build_staging(warehouse)
    assert q(
        warehouse, "select count(*) from staging.stg_orders where order_id in ('OMKT', 'OLATE')"
    ) == [(0,)]
    assert q(warehouse, "select count(*) from raw.orders") == raw_before

    # the same run again (a retried task): same answer, nothing quarantined twice
    again = validate_run(warehouse, DAY, "run-1", now_of(DAY))
    assert again["orders"] == {
        **summary["orders"],
        "newly_quarantined": 0,
        "seconds": again["orders"]["seconds"],
    }
    assert q(warehouse, "select count(*) from quarantine.rows") == [(2,)]
    assert q(warehouse, "select count(*) from ops.dq_results where run_id = 'run-1'") == q(
        warehouse, "select count(*) from ops.dq_results"
    )
    # the same date pulled and validated again by another run (a rerun, a backfill): the
    # empty extract is no failure, the day's rows are stored already
    pull(source, warehouse, DAY, "run-1-again")
    rerun = validate_run(warehouse, DAY, "run-1-again", now_of(DAY))
    assert {rerun[t]["status"] for t in TABLE_ORDER} == {"passed"}
    assert rerun["orders"]["rows"] == 0
    # the next night with nothing new validates nothing again
    pull(source, warehouse, DAY + dt.timedelta(days=1), "run-2")
    config = normalise_config({})  # no daily/freshness rules: a quiet source is fine
    nxt = validate_run(warehouse, DAY + dt.timedelta(days=1), "run-2", now_of(DAY), config=config)
    assert nxt["orders"]["rows"] == 0 and nxt["orders"]["status"] == "passed"
    assert q(warehouse, "select count(*) from quarantine.rows") == [(2,)]


def test_release_after_a_config_fix_and_orphans_released_when_the_parent_arrives(source, warehouse):
    pull(source, warehouse, DAY, "run-1")
    validate_run(warehouse, DAY, "run-1", now_of(DAY))
    # nothing passes yet
    assert release_quarantine(warehouse, DAY, "ops-1", dt.datetime(2025, 3, 11, 9)) == 0
    # a new channel is accepted in the config: the held order is let through
    config = normalise_config({"extra_values": {"orders.channel": ["marketplace"]}})
    released_at = dt.datetime(2025, 3, 11, 9, 30)
    assert (
        release_quarantine(
            warehouse,
            DAY,
            "ops-2",
            released_at,
            table="orders",
            rule="accepted_values",
            config=config,
        )
        == 1
    )
    assert q(
        warehouse,
        "select row_key, released_at, release_run_id from quarantine.rows "
        "where released_at is not null",
    ) == [("OMKT", released_at, "ops-2")]
    # the late customer arrives the next night: the orphan is released by the validation
    day2 = DAY + dt.timedelta(days=1)
    upsert(source, "customers", [customer("C99", f"{DAY} 08:00", updated_at=f"{day2} 10:00")])
    upsert(source, "orders", night_rows(day2)["orders"])
    upsert(source, "order_lines", night_rows(day2)["order_lines"])
    pull(source, warehouse, day2, "run-2")
    summary = validate_run(warehouse, day2, "run-2", now_of(day2), config=config)
    assert summary["orders"]["released"] == 1 and summary["orders"]["status"] == "passed"
    assert q(
        warehouse,
        "select row_key, release_run_id, released_at from quarantine.rows "
        "where rule = 'fk_customers'",
    ) == [("OLATE", "run-2", now_of(day2).replace(tzinfo=None))]
    assert q(warehouse, "select count(*) from quarantine.held_rows") == [(0,)]
    build_staging(warehouse)
    assert q(
        warehouse, "select count(*) from staging.stg_orders where order_id in ('OMKT', 'OLATE')"
    ) == [(2,)]


def test_a_row_changed_while_the_run_read_is_released_the_next_night_a_wrong_clock_is_not(
    source, warehouse
):
    """Under a scheduler the run's "now" (its run_after, 01:00 here) comes before the read:
    a row changed in between is in that run's future, held, then released by the next run,
    whose start has passed it. A timestamp in 2099 stays held."""
    day2 = DAY + dt.timedelta(days=1)
    upsert(
        source,
        "orders",
        [
            order("OSOON", "C1", f"{day2} 00:30", 11.0, updated_at=f"{day2} 01:20"),
            order("O2099", "C1", f"{DAY} 11:00", 13.0, updated_at="2099-01-01 00:00"),
        ],
    )
    pull(source, warehouse, DAY, "run-1")
    validate_run(warehouse, DAY, "run-1", now_of(DAY))
    future = "select row_key from quarantine.rows where rule = 'not_in_future' "
    assert q(warehouse, future + "and released_at is null order by 1") == [("O2099",), ("OSOON",)]
    upsert(source, "orders", night_rows(day2)["orders"])
    upsert(source, "order_lines", night_rows(day2)["order_lines"])
    pull(source, warehouse, day2, "run-2")
    validate_run(warehouse, day2, "run-2", now_of(day2))
    assert q(warehouse, future + "and released_at is null") == [("O2099",)]
    assert q(warehouse, future + "and release_run_id = 'run-2'") == [("OSOON",)]
    build_staging(warehouse)
    staged = "select order_id from staging.stg_orders where order_id in ('OSOON', 'O2099')"
    assert q(warehouse, staged) == [("OSOON",)]


def test_a_table_level_failure_is_recorded_then_the_rerun_validates_the_same_batches(
    source, warehouse
):
    pull(source, warehouse, DAY, "run-1")
    # judged from the first load on (settle_batches 0), an hour's tolerance
    strict = normalise_config(
        {"tables": {"orders": {"freshness_max_age_hours": 1, "settle_batches": 0}}}
    )
    with pytest.raises(DataQualityError) as err:
        validate_run(warehouse, DAY, "run-1", now_of(DAY), config=strict)
    assert "orders.updated_at:" in str(err.value) and "(rule: freshness)" in str(err.value)
    assert isinstance(err.value, PipelineStop)  # no retry: the DAG fails the task at once
    assert failed_tables(warehouse, DAY) == {"orders"}
    assert q(warehouse, "select status from ops.table_status where table_name = 'orders'") == [
        ("stale",)
    ]
    assert q(
        warehouse, "select status, count(*) from ops.validated_batches group by status order by 1"
    ) == [("failed", 1), ("passed", 10)]
    # the row-level findings of the failed table are held already, once
    assert q(warehouse, "select count(*) from quarantine.rows") == [(2,)]
    summary = validate_run(warehouse, DAY, "run-1b", now_of(DAY))
    assert summary["orders"]["rows"] == 42 and summary["orders"]["status"] == "quarantined"
    assert summary["customers"]["rows"] == 0  # passed batches are not validated twice
    assert failed_tables(warehouse, DAY) == set()
    assert q(warehouse, "select count(*) from quarantine.rows") == [(2,)]


def test_a_first_load_is_not_refused_for_being_quiet_on_the_day(source, warehouse):
    # the source's newest order is days before the covered day: on a first load there is no
    # rhythm to judge it by yet, so daily and freshness wait for 3 incremental pulls
    late_day = DAY + dt.timedelta(days=5)
    pull(source, warehouse, late_day, "run-1")
    summary = validate_run(warehouse, late_day, "run-1", now_of(late_day))
    assert summary["orders"]["status"] in ("passed", "quarantined")
    assert failed_tables(warehouse, late_day) == set()


def test_a_run_killed_half_way_writes_nothing(source, warehouse, monkeypatch):
    pull(source, warehouse, DAY, "run-1")
    real = reader.table_profile

    def crash(conn, table, *args):
        if table == "surveys":
            raise RuntimeError("worker killed")
        return real(conn, table, *args)

    monkeypatch.setattr(stage, "table_profile", crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        validate_run(warehouse, DAY, "run-1", now_of(DAY))
    for table in ("quarantine.rows", "ops.dq_results", "ops.table_status", "ops.validated_batches"):
        assert q(warehouse, f"select count(*) from {table}") == [(0,)], table


def test_chunks_keep_every_version_of_a_key_together(tmp_path, warehouse):
    """Tiny chunks: a duplicate key is still seen when the batch is read in pieces."""
    rows = base_rows(DAY)
    src = build_source(f"sqlite:///{tmp_path}/source.db", rows)
    drop_primary_key(src, "customers")
    add_rows(src, {"customers": [customer("C5", "2025-01-01", city="Paris")]})
    pull(src, warehouse, DAY, "run-1")
    config = normalise_config({"chunk_rows": 3})
    summary = validate_run(warehouse, DAY, "run-1", now_of(DAY), config=config)
    assert summary["customers"]["quarantined"] == 2
    assert q(
        warehouse,
        "select distinct row_key, rule from quarantine.rows where table_name = 'customers'",
    ) == [("C5", "unique_key")]


def test_an_operator_accepts_a_failed_table_and_the_night_goes_on(tmp_path, warehouse):
    """Text in a numeric column stops the night; the offending versions are held, so once
    an operator accepts the batch, staging (which casts) runs on the rest."""
    rows = base_rows(DAY)
    rows["orders"].append(order("OTXT", "C1", f"{DAY} 09:00", 15.0))
    src = build_source(f"sqlite:///{tmp_path}/source.db", rows)
    execute(src, "update orders set cost_amount = 'twelve' where order_id = 'OTXT'")
    pull(src, warehouse, DAY, "run-1")
    with pytest.raises(DataQualityError, match=r"orders\.cost_amount: 1 of 41 rows do not parse"):
        validate_run(warehouse, DAY, "run-1", now_of(DAY))
    assert q(warehouse, "select row_key, rule, value from quarantine.rows") == [
        ("OTXT", "type_number", "twelve")
    ]
    assert (
        commands.accept_failed_batches(warehouse, "orders", "ops-1", dt.datetime(2025, 3, 11, 8))
        == 1
    )
    summary = validate_run(warehouse, DAY, "run-1b", now_of(DAY))
    assert summary["orders"]["rows"] == 0 and failed_tables(warehouse, DAY) == set()
    build_staging(warehouse)
    assert q(warehouse, "select count(*) from staging.stg_orders") == [(40,)]


def test_reruns_and_backfills_are_not_the_usual_volume_of_the_next_night(tmp_path, warehouse):
    """Four real nights of 20 orders make 20 the usual; three reruns of the last night and
    a backfill of two earlier days pull nothing new. The next night brings 79 orders (4x
    the usual): it passes. Were the zeros the usual, 79 would be 15.8x the floor of 5."""
    first = DAY - dt.timedelta(days=4)
    src = build_source(f"sqlite:///{tmp_path}/source.db", base_rows(first - dt.timedelta(days=1)))
    nights = [first + dt.timedelta(days=i) for i in range(4)]
    for day in nights:
        add_rows(src, night_rows(day, n_orders=20))
        pull(src, warehouse, day, f"run-{day}")
        validate_run(warehouse, day, f"run-{day}", now_of(day))
    for i in range(3):  # a rerun of the last night, three times
        pull(src, warehouse, nights[-1], f"rerun-{i}")
        validate_run(warehouse, nights[-1], f"rerun-{i}", now_of(nights[-1]))
    for day in nights[:2]:  # a backfill of earlier days
        pull(src, warehouse, day, f"backfill-{day}")
        validate_run(warehouse, day, f"backfill-{day}", now_of(day))
    nxt = nights[-1] + dt.timedelta(days=1)
    add_rows(src, night_rows(nxt, n_orders=79))
    pull(src, warehouse, nxt, "next")
    summary = validate_run(warehouse, nxt, "next", now_of(nxt))
    assert summary["orders"]["status"] == "passed", summary["orders"]
    assert failed_tables(warehouse, nxt) == set()
    # the real usual still catches a real spike: 10x more than the nights, not than zero
    spike = nxt + dt.timedelta(days=1)
    add_rows(src, night_rows(spike, n_orders=250))
    pull(src, warehouse, spike, "spike")
    with pytest.raises(
        DataQualityError,
        match=r"orders\.\*: 250 new versions.*12\.\dx the usual "
        r"\(median 20 of the last 4 nightly batches\)",
    ):
        validate_run(warehouse, spike, "spike", now_of(spike))
