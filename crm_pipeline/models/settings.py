"""The models stage's settings: include/config/models.yaml, and the model version they make.

Why it exists: every model module reads the same merged settings (the file, or a copy named
by $CRM_MODELS_CONFIG, with a run's overrides key by key), and a changed setting that
changes the scores is a new model version (so the week's training is kept per version).
Grain: one settings mapping per run; one version string per settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crm_pipeline.config import config_path, read_yaml

MODELS_FILE = config_path("models")
MODEL_VERSION = "1"


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(overrides: Mapping[str, Any] | None = None, path: Path | None = None) -> dict:
    """include/config/models.yaml (or $CRM_MODELS_CONFIG, see `config.config_path`) with
    `overrides` merged over it (key by key)."""
    return _merge(read_yaml("models", path), overrides or {})


def model_version(cfg: Mapping[str, Any]) -> str:
    """Code version plus a short hash of the settings that change the scores."""
    # the settings that change the scores: not the number of threads (same scores)
    scored = {"clv": cfg["clv"], "churn": {k: v for k, v in cfg["churn"].items() if k != "threads"}}
    settings_json = json.dumps(scored, sort_keys=True, default=str)
    return f"{MODEL_VERSION}+{hashlib.sha1(settings_json.encode()).hexdigest()[:8]}"
