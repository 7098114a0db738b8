"""Connection URLs and the covered day: the two places Airflow's conventions bite."""

import datetime as dt
from types import SimpleNamespace

import pytest

from crm_pipeline.config import normalise_url, sqlalchemy_url
from crm_pipeline.dates import covered_day, end_of_day


def conn(**kw):
    base = dict(
        conn_id="x",
        conn_type=None,
        host=None,
        schema=None,
        login=None,
        password=None,
        port=None,
        extra_dejson={},
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_sqlite_and_duckdb_paths_stay_absolute():
    # Airflow parses AIRFLOW_CONN_X=sqlite:////abs/path/source.db into schema='/abs/path/source.db'
    assert (
        sqlalchemy_url(conn(conn_type="sqlite", schema="/abs/path/source.db"))
        == "sqlite:////abs/path/source.db"
    )
    assert (
        sqlalchemy_url(conn(conn_type="duckdb", schema="/w/wh.duckdb")) == "duckdb:////w/wh.duckdb"
    )


def test_postgres_url_gets_a_driver_and_quoted_password():
    url = sqlalchemy_url(
        conn(
            conn_type="postgres",
            host="db",
            schema="crm",
            login="etl",
            password="p@ss/word",
            port=5432,
            extra_dejson={"sslmode": "require"},
        )
    )
    assert url == "postgresql+psycopg2://etl:p%40ss%2Fword@db:5432/crm?sslmode=require"


def test_explicit_sqlalchemy_url_in_extras_wins():
    c = conn(conn_type="generic", extra_dejson={"sqlalchemy_url": "mysql+pymysql://u@h/db"})
    assert sqlalchemy_url(c) == "mysql+pymysql://u@h/db"


def test_file_connection_without_path_is_an_error():
    with pytest.raises(ValueError, match="names no database file"):
        sqlalchemy_url(conn(conn_type="sqlite"))


def test_airflow_postgres_spelling_is_normalised():
    assert normalise_url("postgres://u@h:5432/d") == "postgresql+psycopg2://u@h:5432/d"
    assert normalise_url("duckdb:////a.duckdb") == "duckdb:////a.duckdb"


def test_scheduled_and_manual_runs_cover_the_logical_date():
    utc = dt.UTC
    # the old schedule (CronDataIntervalTimetable('0 2 * * *')): 02:00 of the day
    assert covered_day(dt.datetime(2026, 11, 22, 2, tzinfo=utc)) == dt.date(2026, 11, 22)
    # scheduled (plugins/crm_timetable.py) and `airflow dags test crm_nightly 2026-11-22`:
    # midnight of that date
    assert covered_day(dt.datetime(2026, 11, 22, tzinfo=utc)) == dt.date(2026, 11, 22)
    # a logical date in another zone is read in UTC
    paris = dt.timezone(dt.timedelta(hours=1))
    assert covered_day(dt.datetime(2026, 11, 23, 0, 30, tzinfo=paris)) == dt.date(2026, 11, 22)
    # no logical date: the last complete day before the run
    assert covered_day(None, dt.datetime(2026, 11, 23, 9, tzinfo=utc)) == dt.date(2026, 11, 22)


def test_end_of_day_is_the_next_midnight():
    assert end_of_day(dt.date(2026, 2, 28)) == dt.datetime(2026, 3, 1)


def test_every_settings_file_moves_by_one_convention(tmp_path, monkeypatch):
    from crm_pipeline.alerts import load_alert_config
    from crm_pipeline.config import CONFIG_FILES, config_path, read_yaml
    from crm_pipeline.errors import ConfigError

    for name in CONFIG_FILES:
        monkeypatch.delenv(f"CRM_{name.upper()}_CONFIG", raising=False)
    monkeypatch.delenv("CRM_PIPELINE_SETTINGS", raising=False)
    monkeypatch.setenv("CRM_CONFIG_DIR", str(tmp_path))
    assert [config_path(n) for n in CONFIG_FILES] == [tmp_path / f"{n}.yaml" for n in CONFIG_FILES]
    one = tmp_path / "elsewhere.yaml"
    one.write_text("recipients: {to: [someone@example.com]}\nrules: []\n")
    monkeypatch.setenv("CRM_ALERTS_CONFIG", str(one))
    assert config_path("alerts") == one and config_path("targets") == tmp_path / "targets.yaml"
    assert load_alert_config().to == ("someone@example.com",)
    monkeypatch.setenv("CRM_PIPELINE_SETTINGS", str(one))  # the older name still counts
    assert config_path("pipeline") == one
    one.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"elsewhere.yaml: expected a mapping"):
        read_yaml("alerts")
    one.write_text("key: [unclosed\n")
    with pytest.raises(ConfigError, match=r"elsewhere.yaml: not valid YAML"):
        read_yaml("alerts")
    with pytest.raises(ValueError, match="no settings file 'model'"):
        config_path("model")
