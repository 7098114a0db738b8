"""The analyst queries in examples/queries run on both engines and answer sensibly."""

import pytest
from factories import ROOT

QUERIES = sorted((ROOT / "examples" / "queries").glob("*.sql"))


def run(wh, name):
    with wh.begin() as conn:
        result = conn.exec_driver_sql(wh.render((ROOT / "examples" / "queries" / name).read_text()))
        return list(result.keys()), [tuple(r) for r in result.fetchall()]


@pytest.mark.parametrize("path", QUERIES, ids=[p.stem for p in QUERIES])
def test_example_query_runs(built, path):
    columns, rows = run(built, path.name)
    assert columns and all(len(r) == len(columns) for r in rows)


def test_segment_sizes_add_up_to_the_base(built):
    _, rows = run(built, "segment_sizes.sql")
    assert sum(r[1] for r in rows) == 11
    assert dict((r[0], r[1]) for r in rows)["Champions"] == 2


def test_top_customers_are_the_vip_then_key(built):
    _, rows = run(built, "top_customers.sql")
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "vip", "C05")]
