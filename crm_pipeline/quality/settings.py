"""The validate stage's settings: include/config/validation.yaml, read and normalised.

Why a module of its own: the thresholds are read by the preflight check of every run
(`stages.check_settings`) as well as by the stage, and reading them needs neither the rules
nor Great Expectations, so a task that only checks settings does not import GX.

Grain: one dict for the whole stage, `chunk_rows`, `prescreen`, `extra_values` (allowed
values added to a contract's value set, per `table.column`) and `tables` (per source table,
the table-level rules with every default filled). docs/data_quality.md describes them.
"""

from __future__ import annotations

import os
from typing import Any

from crm_pipeline import source_schema as ss
from crm_pipeline.config import read_yaml
from crm_pipeline.errors import ConfigError


def load_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """include/config/validation.yaml (or $CRM_VALIDATION_CONFIG, see `config.config_path`),
    with per-table defaults filled."""
    return normalise_config(read_yaml("validation", path))


def normalise_config(raw: dict[str, Any]) -> dict[str, Any]:
    defaults = {
        "max_bad_share": 0.05,
        "bad_share_min_rows": 50,
        "non_empty": False,
        "daily": False,
        "freshness_max_age_hours": None,
        "settle_batches": 3,
        "volume": None,
    } | dict(raw.get("defaults") or {})
    tables = {}
    for table in ss.TABLE_ORDER:
        rules = defaults | dict((raw.get("tables") or {}).get(table) or {})
        if rules.get("volume"):
            rules["volume"] = {
                "max_factor": 10,
                "history_batches": 14,
                "min_history": 3,
                "min_baseline": 5,
            } | dict(rules["volume"])
        tables[table] = rules
    unknown = set(raw.get("tables") or {}) - set(ss.TABLE_ORDER)
    if unknown:
        raise ConfigError(f"validation config names unknown table(s): {', '.join(sorted(unknown))}")
    return {
        "chunk_rows": int(raw.get("chunk_rows") or 200_000),
        "prescreen": bool(raw.get("prescreen", True)),
        "tables": tables,
        "extra_values": {k: list(v or []) for k, v in (raw.get("extra_values") or {}).items()},
    }
