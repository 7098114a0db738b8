"""Great Expectations plumbing of the validate stage: the GX context, running a suite on a
frame, results summed over chunks, and the Data Docs site.

Why a module of its own: this is the part that speaks GX's API (contexts, datasources,
validation definitions, result formats, stores, site builders), which changes with GX
versions; it knows neither the rules (`quality.rules`) nor the warehouse (the stage).

Grain:

* `GxEngine`: one ephemeral context per process (`gx_engine()`). A suite is built once per
  process and signature (its name and expectations), since suites depend on the table, the
  columns the source had and the config only (the run's `now` is a suite parameter). A run of
  a suite on one frame is a cheap BOOLEAN_ONLY pass, then, for the expectations that failed, a
  result_format COMPLETE pass keyed by `_row_hash`;
* `Agg`: one expectation's outcome summed over the chunks of a table, and `suite_result`
  the suite's result rebuilt from them, as Data Docs shows it;
* `DataDocs`: the site of one validation run: results go to a file-backed store under
  `docs_dir/_results` (so the site keeps every run), the HTML is built into `docs_dir`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.execution_engine import pandas_execution_engine

RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["_row_hash"],
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}
DOCS_SITE = "crm_data_quality"
HISTORY_STORE = "crm_dq_history"


@dataclass
class Suite:
    """A suite ready to run: its display name, expectations and validation definition."""

    name: str
    vd: gx.ValidationDefinition
    rechecks: dict[tuple[int, ...], gx.ValidationDefinition] = field(default_factory=dict)

    @property
    def expectations(self) -> list[gxe.Expectation]:
        return list(self.vd.suite.expectations)


class GxEngine:
    """The process's ephemeral GX context: suites and validation definitions built in code.

    Suites depend on the table, the columns the source had and the config only (the run's
    `now` is a suite parameter), so they are built once per process and reused."""

    def __init__(self) -> None:
        # GX fingerprints every in-memory batch below this size by hashing all its values
        # (a fifth of validation's time); a chunk is named by its extract batches instead
        pandas_execution_engine.HASH_THRESHOLD = 0
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.datasource = self.context.data_sources.add_pandas("crm_raw")
        self.suites: dict[str, Suite] = {}

    def _definition(
        self, name: str, expectations: list[gxe.Expectation]
    ) -> gx.ValidationDefinition:
        suite = self.context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = self.datasource.add_dataframe_asset(name).add_batch_definition_whole_dataframe(
            "chunk"
        )
        return self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )

    def suite(self, name: str, expectations: list[gxe.Expectation]) -> Suite:
        signature = name + repr([e.configuration.to_json_dict() for e in expectations])
        if signature not in self.suites:
            internal = f"{name}#{len(self.suites)}"
            self.suites[signature] = Suite(name, self._definition(internal, expectations))
        return self.suites[signature]

    def run(
        self, suite: Suite, frame: pd.DataFrame, params: dict[str, Any]
    ) -> tuple[list[ExpectationValidationResult], dict[str, Any]]:
        """Results in the suite's order. A cheap pass first; the expectations that failed are
        run again with result_format COMPLETE, which lists every unexpected row."""
        batch = {"dataframe": frame}
        res = suite.vd.run(
            batch_parameters=batch, expectation_parameters=params, result_format="BOOLEAN_ONLY"
        )
        expectations = suite.expectations
        by_id = {r.expectation_config.id: r for r in res.results}
        results = [by_id[e.id] for e in expectations]
        failed = tuple(i for i, r in enumerate(results) if not r.success)
        if failed:
            if failed not in suite.rechecks:
                copies = []
                for i in failed:
                    copy = expectations[i].configuration.to_domain_obj()
                    copy.id = None
                    copies.append(copy)
                suite.rechecks[failed] = self._definition(
                    f"{suite.vd.name}~{len(suite.rechecks)}", copies
                )
            recheck = suite.rechecks[failed]
            detail = recheck.run(
                batch_parameters=batch, expectation_parameters=params, result_format=RESULT_FORMAT
            )
            by_id = {r.expectation_config.id: r for r in detail.results}
            for i, e in zip(failed, recheck.suite.expectations, strict=True):
                results[i] = by_id[e.id]
        return results, dict(res.meta)


_ENGINE: GxEngine | None = None


def gx_engine() -> GxEngine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = GxEngine()
    return _ENGINE


class DataDocs:
    """Data Docs of one validation: results go to a file-backed store under docs_dir/_results
    (so the site keeps every run) and the HTML site is built into docs_dir."""

    def __init__(self, docs_dir: str | os.PathLike):
        self.dir = Path(docs_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.context = gx.get_context(mode="ephemeral")
        self.context.add_store(
            HISTORY_STORE,
            {
                "class_name": "ValidationResultsStore",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(self.dir / "_results"),
                },
            },
        )
        self.context.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(self.dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "site_section_builders": {
                    "validations": {"source_store_name": HISTORY_STORE},
                    "profiling": {"source_store_name": HISTORY_STORE},
                },
            },
        )
        self.keys: list[Any] = []

    def store(
        self,
        result: ExpectationSuiteValidationResult,
        expectations: list[gxe.Expectation],
        run_id: str,
        now: dt.datetime,
        batch_name: str,
    ) -> None:
        self.context.suites.add(
            gx.ExpectationSuite(name=result.suite_name, expectations=expectations)
        )
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
            run_id=RunIdentifier(run_name=run_id, run_time=now.replace(tzinfo=dt.UTC)),
            batch_identifier=batch_name,
        )
        result.meta = {
            **(result.meta or {}),
            "run_id": key.run_id,
            "validation_time": key.run_id.run_time,
        }
        self.context.stores[HISTORY_STORE].set(key, result)
        self.keys += [key, ExpectationSuiteIdentifier(name=result.suite_name)]

    def build(self) -> str:
        self.context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=self.keys)
        return str(self.dir / "index.html")


@dataclass
class Agg:
    """One expectation's outcome summed over the chunks of a table."""

    expectation: gxe.Expectation
    element_count: int = 0
    unexpected_count: int = 0
    success: bool = True
    partial: list[Any] = field(default_factory=list)
    observed: Any = None
    exception: str | None = None
    last: ExpectationValidationResult | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.expectation.meta or {}

    def add(self, res: ExpectationValidationResult, rows: int) -> None:
        self.last = res
        info = res.exception_info or {}
        if info.get("raised_exception"):
            self.success = False
            self.exception = str(info.get("exception_message"))
            return
        result = res.result or {}
        if res.success and not result:  # the cheap pass: nothing unexpected in these rows
            self.element_count += rows
            return
        self.success = self.success and bool(res.success)
        # every version of the chunk, as the cheap pass counts (GX counts only the rows of a
        # row_condition here): the sum does not depend on how the versions were cut
        self.element_count += rows if "element_count" in result else 0
        self.unexpected_count += int(result.get("unexpected_count") or 0)
        if "observed_value" in result:
            self.observed = result["observed_value"]
        room = 20 - len(self.partial)
        if room > 0:
            self.partial.extend((result.get("partial_unexpected_list") or [])[:room])

    def to_result(self) -> ExpectationValidationResult:
        result: dict[str, Any] = {}
        if self.last is not None and self.last.result:
            result = {
                k: v
                for k, v in self.last.result.items()
                if k
                not in (
                    "unexpected_list",
                    "unexpected_index_list",
                    "partial_unexpected_index_list",
                    "partial_unexpected_counts",
                )
            }
        if "element_count" in result or (self.last is not None and not self.last.result):
            n = max(self.element_count, 1)
            result.update(
                element_count=self.element_count,
                unexpected_count=self.unexpected_count,
                unexpected_percent=100.0 * self.unexpected_count / n,
                partial_unexpected_list=self.partial,
            )
        return ExpectationValidationResult(
            success=self.success and self.exception is None,
            expectation_config=self.expectation.configuration,
            result=result,
            exception_info={
                "raised_exception": self.exception is not None,
                "exception_message": self.exception,
                "exception_traceback": None,
            },
        )


def suite_result(
    name: str, aggs: list[Agg], meta: dict[str, Any]
) -> ExpectationSuiteValidationResult:
    results = [a.to_result() for a in aggs]
    ok = sum(r.success for r in results)
    return ExpectationSuiteValidationResult(
        success=ok == len(results),
        results=results,
        suite_name=name,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(results) - ok,
            "success_percent": 100.0 * ok / len(results) if results else None,
        },
        meta=meta,
    )
